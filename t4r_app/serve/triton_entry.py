"""The model Triton runs for the ensemble: merlin's executor, fed every waiting request at once.

Triton's dynamic batcher (``dynamic_batching`` in the exported config) hands the python backend
the requests that queued while it was busy. Each is checked first: merlin-systems 23.08
converts a request before it looks for errors, so a request whose offsets do not fit its
values would fail with an empty message; here it gets an error that says what is wrong, alone.
The sound ones are merged into one ragged batch, run through the ensemble's graph once (one
forward pass of the model for all their sessions) and split back, one answer per request.

A request's tensors have a leading batch dimension of 1 where the export batches requests
(``[1, movies]`` values, ``[1, sessions + 1]`` offsets; answers ``[1, sessions, k]``) and none in
repositories exported before it; both are served. On a GPU instance (the gpu target's KIND_GPU
instance group) the model step moves to that instance's GPU when the model loads; where it
cannot, loading fails with a message that says why. Importable only inside Triton's python backend.
"""

import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime
from merlin.systems.triton.models.executor_model import TritonPythonModel as MerlinExecutorModel
from merlin.systems.triton.models.executor_model import _parse_model_repository
from merlin.table import TensorTable

from t4r_app.serve.export import RUN_COPY, place_on_device
from t4r_app.serve.contract import MOVIE_IDS, OFFSETS_INPUT, SCORES, VALUES_INPUT, merge_requests, request_problem


class TritonPythonModel(MerlinExecutorModel):
    def initialize(self, args):
        super().initialize(args)
        ensemble_path = (
            Path(_parse_model_repository(args["model_repository"])) / args["model_name"] / str(args["model_version"]) / "ensemble"
        )
        # Only gpu exports carry the run files to trace from; a cpu export (or one from before
        # the gpu target) that Triton gives a GPU instance keeps its model on the CPU, as it always did.
        if "GPU" in args.get("model_instance_kind", "").upper() and (ensemble_path / RUN_COPY).is_dir():
            device = f"cuda:{args.get('model_instance_device_id', 0)}"
            place_on_device(self.ensemble, ensemble_path, device)
            print(f"t4r-app: {args['model_name']} scores on {device}", flush=True)

    def execute(self, requests):
        responses = [None] * len(requests)
        sound = []  # (position, values, offsets, batched) of the requests that pass the check
        for position, request in enumerate(requests):
            values, offsets = (_tensor(request, name) for name in (VALUES_INPUT, OFFSETS_INPUT))
            problem = request_problem(values, offsets)
            if problem:
                responses[position] = _error(problem)
            else:  # sound: 1-D, or one batch row, which the answer keeps
                sound.append((position, values.reshape(-1), offsets.reshape(-1), values.ndim == 2))
        if sound:
            for position, response in zip((s[0] for s in sound), self._answer([s[1:] for s in sound])):
                responses[position] = response
        return responses

    def _answer(self, requests: list[tuple[np.ndarray, np.ndarray, bool]]) -> list:
        """One pass of the graph over every session of ``requests``; one response per request."""
        values, offsets, counts = merge_requests([(values, offsets) for values, offsets, _ in requests])
        table = TensorTable({VALUES_INPUT: values, OFFSETS_INPUT: offsets})
        try:
            outputs = self.ensemble.transform(table, runtime=TritonExecutorRuntime())
        except Exception:  # every request of the pass gets the reason; the server keeps answering
            return [_error(traceback.format_exc())] * len(requests)
        movies, scores = np.asarray(outputs[MOVIE_IDS].values), np.asarray(outputs[SCORES].values)
        responses, start = [], 0
        for (_, _, batched), count in zip(requests, counts):
            shape = (1, count, movies.shape[-1]) if batched else (count, movies.shape[-1])
            answer = [pb_utils.Tensor(MOVIE_IDS, movies[start : start + count].reshape(shape)),
                      pb_utils.Tensor(SCORES, scores[start : start + count].reshape(shape))]  # fmt: skip
            responses.append(pb_utils.InferenceResponse(output_tensors=answer))
            start += count
        return responses


def _tensor(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
