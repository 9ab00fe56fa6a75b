"""The model Triton runs for the ensemble: merlin's executor, with each request checked first.

merlin-systems 23.08 converts a request before it looks for errors, so a request whose
offsets do not fit its values fails with an empty message. Checking first turns that into
an error that says what is wrong. On a GPU instance (the gpu target's KIND_GPU instance
group) the model step moves to that instance's GPU when the model loads; where it cannot,
loading fails with a message that says why. Importable only inside Triton's python backend.
"""

from pathlib import Path

import triton_python_backend_utils as pb_utils
from merlin.systems.triton.models.executor_model import TritonPythonModel as MerlinExecutorModel
from merlin.systems.triton.models.executor_model import _parse_model_repository
from merlin.systems.triton.utils import triton_error_handling, triton_multi_request

from t4r_app.serve.export import RUN_COPY, place_on_device
from t4r_app.serve.protocol import OFFSETS_INPUT, VALUES_INPUT, request_problem


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

    @triton_multi_request
    @triton_error_handling
    def execute(self, request):
        values = pb_utils.get_input_tensor_by_name(request, VALUES_INPUT)
        offsets = pb_utils.get_input_tensor_by_name(request, OFFSETS_INPUT)
        problem = request_problem(
            None if values is None else values.as_numpy(), None if offsets is None else offsets.as_numpy()
        )
        if problem:
            raise ValueError(problem)
        return super().execute(request)
