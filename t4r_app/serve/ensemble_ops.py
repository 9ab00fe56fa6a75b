"""The two merlin-systems operators of the serving ensemble, and a python-backend-only runtime.

Both keep their state as files next to the exported ensemble (``save_artifacts`` /
``load_artifacts``) rather than in the pickle: merlin-systems 23.08 pickles operators into
``ensemble.pkl``, where a TorchScript module cannot go and where a workflow would keep the
fit-time paths of its category files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from merlin.dag import BaseOperator, ColumnSelector, DataFormats
from merlin.dtypes import float32, int64
from merlin.schema import ColumnSchema, Schema
from merlin.systems.dag.ops.workflow import TransformWorkflow
from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime
from merlin.table import TensorTable

from t4r_app.serve.recommender import TopKScorer
from workflow.columns import ITEM_LIST

REQUEST_COLUMN = "movieIndices"
VALUES_INPUT, OFFSETS_INPUT = f"{REQUEST_COLUMN}__values", f"{REQUEST_COLUMN}__offsets"
MOVIE_IDS, SCORES = "movie_ids", "scores"
NO_MOVIE = -1  # fills an answer row where leaving seen movies out leaves fewer than k
EXCLUDE_SEEN_PARAMETER = "exclude_seen"  # in the ensemble's config.pbtxt, for clients to read
WORKFLOW_DIR = "serving_workflow"
MODEL_FILE = "bert4rec_traced.pt"
CATALOGUE_FILE = "catalogue.npz"
# What one request may carry. Scoring holds a (sessions x catalogue) score table and its sort,
# so sessions are capped (1,024 x 27k movies of MovieLens-20M is about 0.2 GB per table); the
# flat values are capped so that decoding and the seen-movie rule stay bounded (8 MB of INT64).
# One session may be that long: only its last max_seq_length - 1 movies are scored, all of them
# count as seen. TritonRecommender splits larger batches into requests that fit.
MAX_SESSIONS_PER_REQUEST = 1024
MAX_MOVIES_PER_REQUEST = 1_000_000


class PythonBackendRuntime(TritonExecutorRuntime):
    """Exports every operator into the one python-backend ``executor_model``.

    The default runtime swaps in Triton-specific operators that call separate models,
    PyTorch on the libtorch backend among them; a server with only the python backend
    (the CPU target) cannot load those.
    """

    def __init__(self):
        super().__init__()
        self.op_table = {}


class ServingWorkflow(TransformWorkflow):
    """TransformWorkflow whose NVTabular workflow travels as files beside the ensemble."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state["workflow"] = None
        return state

    def save_artifacts(self, artifact_path: str) -> None:
        self.workflow.save(str(Path(artifact_path) / WORKFLOW_DIR))

    def load_artifacts(self, artifact_path: str | None = None) -> None:
        # merlin's Graph calls load_artifacts() with no path when it is built: nothing to load then.
        if artifact_path and (Path(artifact_path) / WORKFLOW_DIR).is_dir():
            import nvtabular as nvt

            self.workflow = nvt.Workflow.load(str(Path(artifact_path) / WORKFLOW_DIR))


class PredictTopK(BaseOperator):
    """Encoded sessions (``item_id-list``) in; top-k raw movie ids and scores out.

    The model is the traced BERT4Rec; unknown, empty and long sessions follow the same
    rules as ``t4r-app predict`` because both go through ``TopKScorer``. ``exclude_seen``
    (baked in at export) leaves each session's own movies out; where that leaves fewer than
    ``top_k`` movies, the row ends in NO_MOVIE ids with score 0.
    """

    def __init__(
        self,
        traced_model=None,
        movie_of_item=None,
        popularity=None,
        max_length: int = 0,
        top_k: int = 10,
        exclude_seen: bool = False,
        scorable=None,
    ):
        super().__init__()
        self.traced_model = traced_model
        self.movie_of_item = movie_of_item
        self.popularity = popularity
        self.scorable = scorable
        self.max_length = max_length
        self.top_k = top_k
        self.exclude_seen = exclude_seen
        self.device = "cpu"  # where traced_model's weights and trace are; set on a GPU instance by use_model

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(traced_model=None, movie_of_item=None, popularity=None, scorable=None)
        return state

    def compute_output_schema(self, input_schema: Schema, col_selector: ColumnSelector, prev_output_schema=None) -> Schema:
        return Schema(
            [
                ColumnSchema(MOVIE_IDS, dtype=int64, dims=(None, self.top_k)),
                ColumnSchema(SCORES, dtype=float32, dims=(None, self.top_k)),
            ]
        )

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE | DataFormats.PANDAS_DATAFRAME

    def transform(self, col_selector: ColumnSelector, transformable):
        sessions = _sessions(transformable)
        scorer = TopKScorer(self._logits, self.max_length, self.popularity, getattr(self, "scorable", None))
        # Ensembles exported before the field existed ranked every movie.
        orders, scores, _ = scorer.top_k(sessions, self.top_k, getattr(self, "exclude_seen", False))
        movies = np.full((len(sessions), self.top_k), NO_MOVIE, dtype=np.int64)
        best = np.zeros((len(sessions), self.top_k), dtype=np.float32)
        for row, (order, row_scores) in enumerate(zip(orders, scores)):
            movies[row, : len(order)] = self.movie_of_item[order]
            best[row, : len(order)] = row_scores
        return TensorTable({MOVIE_IDS: movies, SCORES: best})

    def use_model(self, traced_model: torch.jit.ScriptModule, device: str) -> None:
        """Score with ``traced_model``, traced on ``device`` (a trace runs only where it was traced)."""
        self.traced_model, self.device = traced_model, device

    @torch.no_grad()
    def _logits(self, padded: np.ndarray) -> np.ndarray:
        # Ensembles pickled before the field existed run on the CPU.
        device = getattr(self, "device", "cpu")
        return self.traced_model(torch.as_tensor(padded, device=device)).float().cpu().numpy()

    def save_artifacts(self, artifact_path: str) -> None:
        torch.jit.save(self.traced_model, str(Path(artifact_path) / MODEL_FILE))
        arrays = {"movie_of_item": self.movie_of_item, "popularity": self.popularity}
        if self.scorable is not None:
            arrays["scorable"] = self.scorable
        np.savez(Path(artifact_path) / CATALOGUE_FILE, **arrays)

    def load_artifacts(self, artifact_path: str | None = None) -> None:
        if artifact_path and (Path(artifact_path) / MODEL_FILE).is_file():
            self.traced_model = torch.jit.load(str(Path(artifact_path) / MODEL_FILE), map_location="cpu").eval()
            self.device = "cpu"
            catalogue = np.load(Path(artifact_path) / CATALOGUE_FILE)
            self.movie_of_item, self.popularity = catalogue["movie_of_item"], catalogue["popularity"]
            # Repositories exported before titles have no scorable array: every movie is scored.
            self.scorable = catalogue["scorable"] if "scorable" in catalogue else None


def request_problem(values: np.ndarray | None, offsets: np.ndarray | None) -> str | None:
    """What is wrong with a request's ragged ``movieIndices`` pair, or None when it is sound."""
    if values is None or offsets is None:
        return f"the request needs both {VALUES_INPUT} and {OFFSETS_INPUT}"
    if values.ndim != 1:
        return f"{VALUES_INPUT} must be one-dimensional (every session's movies, one after another), got shape {values.shape}"
    if offsets.ndim != 1 or len(offsets) < 2:
        return f"{OFFSETS_INPUT} must hold one more entry than there are sessions (at least 2), got shape {offsets.shape}"
    if len(offsets) - 1 > MAX_SESSIONS_PER_REQUEST:
        return (
            f"a request may carry at most {MAX_SESSIONS_PER_REQUEST} sessions, got {len(offsets) - 1}: "
            "split them over several requests"
        )
    if len(values) > MAX_MOVIES_PER_REQUEST:
        return (
            f"a request may carry at most {MAX_MOVIES_PER_REQUEST} movies in all its sessions, got {len(values)}: "
            "split them over several requests (only a session's last movies are scored anyway)"
        )
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(values):
        return (
            f"{OFFSETS_INPUT} must start at 0, never decrease and end at the number of values "
            f"({len(values)}); got {offsets.tolist()[:8]}{'...' if len(offsets) > 8 else ''}"
        )
    return None


def _sessions(transformable) -> list[np.ndarray]:
    if isinstance(transformable, pd.DataFrame):
        return [np.asarray(row, dtype=np.int64) for row in transformable[ITEM_LIST]]
    column = transformable[ITEM_LIST]
    values, offsets = np.asarray(column.values), np.asarray(column.offsets)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
