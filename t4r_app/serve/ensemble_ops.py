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
from merlin.dag import BaseOperator, ColumnSelector, DataFormats, postorder_iter_nodes
from merlin.dtypes import float32, int64
from merlin.schema import ColumnSchema, Schema
from merlin.systems.dag.ops.workflow import TransformWorkflow
from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime
from merlin.table import TensorTable
from nvtabular import ops

from t4r_app.serve.contract import MOVIE_IDS, NO_MOVIE, REQUEST_COLUMN, SCORES
from t4r_app.serve.recommender import TopKRanker
from workflow.columns import ITEM_LIST, RAW_MOVIE

WORKFLOW_DIR = "serving_workflow"
MODEL_FILE = "model_traced.pt"
OLD_MODEL_FILE = "bert4rec_traced.pt"  # what repositories exported before the neutral name hold
CATALOGUE_FILE = "catalogue.npz"


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
    """TransformWorkflow whose NVTabular workflow travels as files beside the ensemble.

    ``EncodeMovies`` builds on it; repositories exported before it pickled this class itself."""

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


class EncodeMovies(ServingWorkflow):
    """The serving workflow's raw-id-to-item-id mapping, applied as a vectorised lookup.

    The fitted NVTabular workflow stays the one definition of the mapping: it travels beside
    the ensemble, and ``MovieLookup.from_workflow`` runs it once, when the operator is built or
    loaded, over every movie its Categorify knows and one it does not. A request then costs a
    binary search instead of the workflow's pandas transform (4 ms for one session at 1.7k
    movies, 14 ms at 50k, measured by bench_serve's breakdown).
    """

    def __init__(self, workflow=None):
        super().__init__(workflow)
        self.lookup = None if workflow is None else MovieLookup.from_workflow(workflow)

    def __getstate__(self):
        state = super().__getstate__()
        state["lookup"] = None
        return state

    def load_artifacts(self, artifact_path: str | None = None) -> None:
        super().load_artifacts(artifact_path)
        if self.workflow is not None:
            self.lookup = MovieLookup.from_workflow(self.workflow)

    @property
    def supported_formats(self) -> DataFormats:
        return DataFormats.NUMPY_TENSOR_TABLE

    def transform(self, col_selector: ColumnSelector, transformable):
        column = transformable[REQUEST_COLUMN]
        return TensorTable(
            {
                f"{ITEM_LIST}__values": self.lookup.encode(np.asarray(column.values)),
                f"{ITEM_LIST}__offsets": np.asarray(column.offsets),
            }
        )


class MovieLookup:
    """Raw movie ids to item ids as the fitted workflow maps them, by binary search."""

    def __init__(self, movies: np.ndarray, items: np.ndarray, unknown_item: int):
        order = np.argsort(movies)
        self.movies, self.items, self.unknown_item = movies[order], items[order], unknown_item

    @classmethod
    def from_workflow(cls, workflow) -> "MovieLookup":
        """Every movie the workflow's Categorify knows, and one it does not, through the workflow itself."""
        categorify = next(node.op for node in postorder_iter_nodes(workflow.output_node) if isinstance(node.op, ops.Categorify))
        movies = pd.read_parquet(categorify.categories[RAW_MOVIE], columns=[RAW_MOVIE])[RAW_MOVIE].dropna()
        movies = movies.to_numpy(dtype=np.int64)
        if not len(movies):
            raise ValueError("the serving workflow's Categorify knows no movie: preprocess and train again")
        unseen = int(movies.max(initial=0)) + 1
        encoded = workflow.transform(pd.DataFrame({REQUEST_COLUMN: [movies.tolist(), [unseen]]}))[ITEM_LIST]
        return cls(movies, np.asarray(encoded.iloc[0], dtype=np.int64), int(encoded.iloc[1][0]))

    def encode(self, movies: np.ndarray) -> np.ndarray:
        movies = movies.astype(np.int64, copy=False)
        at = np.searchsorted(self.movies, movies).clip(max=len(self.movies) - 1)
        return np.where(self.movies[at] == movies, self.items[at], self.unknown_item)


class PredictTopK(BaseOperator):
    """Encoded sessions (``item_id-list``) in; top-k raw movie ids and scores out.

    The model is the run's, traced; unknown, empty and long sessions follow the same
    rules as ``t4r-app predict`` because both go through ``TopKRanker``. ``exclude_seen``
    (baked in at export) leaves each session's own movies out; where that leaves fewer than
    ``top_k`` movies, the row ends in NO_MOVIE ids with score 0.
    """

    def __init__(
        self,
        traced_model=None,
        movie_of_item=None,
        popularity=None,
        max_length: int = 0,
        session_length: int = 0,
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
        self.session_length = session_length  # the traced model's width (model.inference_length)
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
        # Ensembles exported before session_length were all traced one short of the window.
        session_length = getattr(self, "session_length", 0) or self.max_length - 1
        ranker = TopKRanker(self._logits, session_length, self.popularity, getattr(self, "scorable", None))
        # Ensembles exported before the field existed ranked every movie.
        orders, scores, _ = ranker.top_k(sessions, self.top_k, getattr(self, "exclude_seen", False))
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
        traced = next((Path(artifact_path) / name for name in (MODEL_FILE, OLD_MODEL_FILE)
                       if artifact_path and (Path(artifact_path) / name).is_file()), None)
        if traced is not None:
            self.traced_model = torch.jit.load(str(traced), map_location="cpu").eval()
            self.device = "cpu"
            catalogue = np.load(Path(artifact_path) / CATALOGUE_FILE)
            self.movie_of_item, self.popularity = catalogue["movie_of_item"], catalogue["popularity"]
            # Repositories exported before titles have no scorable array: every movie is scored.
            self.scorable = catalogue["scorable"] if "scorable" in catalogue else None


def _sessions(transformable) -> list[np.ndarray]:
    if isinstance(transformable, pd.DataFrame):
        return [np.asarray(row, dtype=np.int64) for row in transformable[ITEM_LIST]]
    column = transformable[ITEM_LIST]
    values, offsets = np.asarray(column.values), np.asarray(column.offsets)
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
