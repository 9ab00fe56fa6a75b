"""Export a run as a Triton model repository: the NVTabular serving workflow, then the model.

The request carries raw movie ids (``movieIndices``, one list per session, many sessions
per request); the response carries the top-k raw movie ids (``movie_ids``) and their
scores (``scores``). The serving workflow is the fitted Categorify of the ETL (raw ids to
item ids, unknown ids to OOV); the model is traced in eval mode in T4R's inference mode (for
BERT4Rec, [MASK] appended after each session's last item). ``TopKRanker`` cuts each session to
what the model reads (``LoadedRun.session_length``), as in ``predict``, and sees the whole
session for the seen-movie rule.

The run's seen-movie rule (or the ``exclude_seen`` given to ``export_run``) is baked into the
ensemble and written to the model's config as the ``exclude_seen`` parameter. The movies a
session may hold, with their titles, are served by a second, small model beside it
(``movie_catalogue``, reading its own ``movies.json``): a client that has only the server's
address reads titles and unknown ids from it.

Both targets put every step in Triton's python backend (one ``executor_model``), so they run
on a tritonserver that has nothing else, such as the one in the nvidia-pytriton wheel. Target
``cpu`` asks for a CPU instance. Target ``gpu`` asks for a GPU instance (KIND_GPU) and carries
the run's model files beside the ensemble: a trace fixes the device it was made on (its
``arange`` and ``zeros`` are pinned to the CPU), so the GPU instance traces the model again on
its own GPU when it loads (``place_on_device``). The CPU trace stays in the repository for
``load_exported`` on any machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import tritonclient.grpc.model_config_pb2 as model_config
from google.protobuf import text_format
from merlin.dag import postorder_iter_nodes
from merlin.dtypes import int64
from merlin.schema import ColumnSchema, Schema
from merlin.systems.dag.ensemble import Ensemble

import nvtabular as nvt
from nvtabular import ops
from t4r_app.atomic import building
from t4r_app.errors import ExportError, RunError, ServeError
from t4r_app.model.architecture import max_sequence_length, vocabulary_size
from t4r_app.model.device import default_device, model_device
from t4r_app.model.item_features import FEATURES_FILE
from t4r_app.model.saved_run import CONFIG, ETL_WORKFLOW, MODEL_DIR, RUN_INFO, SCHEMA, WEIGHTS, LoadedRun, load_run
from t4r_app.model.title_embedding import TitledItemEmbedding
from t4r_app.serve.ensemble_ops import EncodeMovies, PredictTopK, PythonBackendRuntime
from t4r_app.serve.contract import (
    CATALOGUE_FILE,
    CATALOGUE_MODEL,
    CATALOGUE_MOVIES,
    CATALOGUE_TITLES,
    ENSEMBLE_NAME,
    EXCLUDE_SEEN_PARAMETER,
    REQUEST_COLUMN,
)
from t4r_app.serve.recommender import ItemCatalogue, run_exclude_seen, run_scorable
from t4r_app.serve.run_movies import RunMovies, read_run_movies
from workflow.columns import ITEM_LIST, RAW_MOVIE

EXPORT_INFO = "t4r_export.json"
TARGETS = ("cpu", "gpu")
INSTANCE_KINDS = {"cpu": model_config.ModelInstanceGroup.Kind.KIND_CPU, "gpu": model_config.ModelInstanceGroup.Kind.KIND_GPU}
RUN_COPY = "run"  # beside the ensemble's artifacts: what a GPU instance traces the model from
# Triton's python backend runs the executor_model/1/model.py that export writes: one import of this module.
ENTRY_MODULE = "t4r_app.serve.triton_entry"
CATALOGUE_MODULE = "t4r_app.serve.catalogue_model"
REQUESTS_PER_PASS = 64  # the most requests the server merges into one pass of the model


class NextItemLogits(torch.nn.Module):
    """The model (BERT4Rec or SASRec) in inference mode as a plain tensor-in, tensor-out module that tracing accepts."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.model({ITEM_LIST: item_ids}, training=False, testing=False)


def request_schema() -> Schema:
    return Schema([ColumnSchema(REQUEST_COLUMN, dtype=int64, is_list=True, is_ragged=True)])


def default_target() -> str:
    return "gpu" if default_device() == "cuda" else "cpu"


def gpu_problem() -> str | None:
    """Why this environment's torch cannot run the model on a GPU, or None when it can.

    The python backend's stub imports this same environment, so what torch sees here is what
    a GPU instance of the served model will see.
    """
    if default_device() == "cuda":
        return None
    if torch.version.cuda is None:
        return f"this environment's torch ({torch.__version__}) is a CPU-only build; a GPU server needs a CUDA build of torch"
    return (
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check the driver (nvidia-smi) "
        "and CUDA_VISIBLE_DEVICES"
    )


def target_warning(target: str) -> str | None:
    """What to tell whoever exports for a GPU on a machine without one (the export itself needs no GPU)."""
    problem = gpu_problem() if target == "gpu" else None
    if problem is None:
        return None
    return (
        f"the gpu target was exported, but it will not load here: {problem}. Serve it where tritonserver "
        "and torch see a GPU, or export with --target cpu to serve on this machine"
    )


def etl_workflow_dir(run: LoadedRun) -> Path:
    saved = Path(run.run_dir) / MODEL_DIR / ETL_WORKFLOW
    if saved.is_dir():
        return saved
    fallback = Path(run.info.data_dir) / "workflow"
    if fallback.is_dir():
        return fallback
    raise RunError(f"{run.run_dir} has no NVTabular workflow ({saved}) and {fallback} is gone: preprocess and train again")


def serving_workflow(etl_dir: Path) -> nvt.Workflow:
    """Raw movie id lists in, encoded ``item_id-list`` out, whole: a long session's older movies
    still count as seen; ``TopKRanker`` keeps the model's window of the recent ones."""
    etl = nvt.Workflow.load(str(etl_dir))
    categorify = next(node.op for node in postorder_iter_nodes(etl.output_node) if isinstance(node.op, ops.Categorify))
    graph = [REQUEST_COLUMN] >> ops.Rename(name=RAW_MOVIE) >> categorify >> ops.Rename(name=ITEM_LIST)
    workflow = nvt.Workflow(graph)
    workflow.fit_schema(request_schema())
    return workflow


def trace_model(model: torch.nn.Module, session_length: int) -> torch.jit.ScriptModule:
    """Trace ``model`` on the device its weights are on, which the trace then keeps (changed in
    place: title features are baked into a projected matrix first)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, TitledItemEmbedding):
            module.bake()
    example = torch.zeros((2, session_length), dtype=torch.long, device=model_device(model))
    example[:, :3] = torch.tensor([3, 4, 5])
    with torch.no_grad():
        return torch.jit.trace(NextItemLogits(model).eval(), example, strict=False, check_trace=False)


def build_ensemble(run: LoadedRun, top_k: int, exclude_seen: bool = False, movies: RunMovies | None = None) -> Ensemble:
    movies = read_run_movies(run) if movies is None else movies
    catalogue = ItemCatalogue.from_mapping(movies.mapping, vocabulary_size(run.schema), run_scorable(run))
    workflow = serving_workflow(etl_workflow_dir(run))
    predict = PredictTopK(
        traced_model=trace_model(run.model, run.session_length),
        movie_of_item=catalogue.movie_of_item,
        popularity=catalogue.popularity,
        max_length=max_sequence_length(run.schema),
        session_length=run.session_length,
        top_k=top_k,
        exclude_seen=exclude_seen,
        scorable=catalogue.scorable,
    )
    graph = [REQUEST_COLUMN] >> EncodeMovies(workflow) >> predict
    return Ensemble(graph, request_schema())


def export_run(
    run_dir: str | Path,
    output: str | Path,
    target: str | None = None,
    top_k: int = 10,
    exclude_seen: bool | None = None,
    instances: int = 1,
    dynamic_batching: bool = True,
) -> Path:
    """Write the Triton model repository for ``run_dir`` into ``output`` (replaced if present).

    ``exclude_seen`` None bakes in the run's seen-movie rule; True or False overrides it.
    ``instances``: python-backend processes answering requests side by side (each holds the model).
    ``dynamic_batching``: the server merges the requests that wait while the model is busy into
    one pass (False only to measure what that gains).
    """
    target = target or default_target()
    if target not in TARGETS:
        raise ExportError(f"unknown target '{target}': use one of {', '.join(TARGETS)}")
    run = load_run(run_dir, device="cpu")
    movies = read_run_movies(run)
    vocabulary_movies = len(movies.mapping)
    if not 1 <= top_k <= vocabulary_movies:
        raise ExportError(f"--top-k must be between 1 and the number of movies ({vocabulary_movies}), got {top_k}")
    if instances < 1:
        raise ExportError(f"--instances must be at least 1, got {instances}")
    # Written into a temporary sibling and renamed into place at the end: an export killed at any
    # moment leaves the previous repository (or none) at OUTPUT, never a half-written one.
    with building(output) as partial:
        _write_repository(run, movies, Path(run_dir), partial, target, top_k, exclude_seen, instances, dynamic_batching)
    return Path(output)


def _write_repository(
    run: LoadedRun,
    movies: RunMovies,
    run_dir: Path,
    output: Path,
    target: str,
    top_k: int,
    exclude_seen: bool | None,
    instances: int,
    dynamic_batching: bool,
) -> None:
    exclude_seen = run_exclude_seen(run) if exclude_seen is None else exclude_seen
    executor_config, _ = build_ensemble(run, top_k, exclude_seen, movies).export(
        str(output), runtime=PythonBackendRuntime(), name=ENSEMBLE_NAME
    )
    # The rule also goes into the model's config, where a client can read it from the server.
    executor_config.parameters[EXCLUDE_SEEN_PARAMETER].string_value = json.dumps(exclude_seen)
    # Explicit for cpu too: merlin writes KIND_AUTO, which Triton turns into GPU instances where it sees a GPU.
    del executor_config.instance_group[:]
    executor_config.instance_group.add(kind=INSTANCE_KINDS[target], count=instances)
    if dynamic_batching:
        batch_requests(executor_config)
    if target == "gpu":
        copy_run_model(Path(run_dir), output / ENSEMBLE_NAME / "1" / "ensemble" / RUN_COPY)
    (output / ENSEMBLE_NAME / "config.pbtxt").write_text(text_format.MessageToString(executor_config))
    # Our executor checks each request before merlin's runs it (see t4r_app/serve/triton_entry.py).
    (output / ENSEMBLE_NAME / "1" / "model.py").write_text(f"from {ENTRY_MODULE} import TritonPythonModel  # noqa: F401\n")
    write_catalogue_model(movies.title_of_movie(), output / CATALOGUE_MODEL)
    info = {"run_dir": str(Path(run_dir).resolve()), "target": target, "top_k": top_k, "model": ENSEMBLE_NAME,
            "max_seq_length": max_sequence_length(run.schema), "exclude_seen": exclude_seen, "instances": instances,
            "dynamic_batching": dynamic_batching}
    (output / EXPORT_INFO).write_text(json.dumps(info, indent=2))


def batch_requests(config: model_config.ModelConfig) -> None:
    """Let Triton hand the model every request that waited while it was busy (``triton_entry``
    merges them into one pass). Each request becomes one batch row of ragged length, so its
    tensors take a leading dimension of 1. No queue delay: a lone request goes at once, and
    under load the queue that builds while the model runs is the batch."""
    config.max_batch_size = REQUESTS_PER_PASS
    for tensor in config.input:
        tensor.allow_ragged_batch = True
    config.dynamic_batching.max_queue_delay_microseconds = 0


def write_catalogue_model(title_of_movie: dict[int, str], folder: Path) -> None:
    """The ``movie_catalogue`` model: every movie a session may hold and its title, from a file of its own."""
    config = model_config.ModelConfig(name=CATALOGUE_MODEL, backend="python", max_batch_size=0)
    config.output.add(name=CATALOGUE_MOVIES, data_type=model_config.TYPE_INT64, dims=[-1])
    config.output.add(name=CATALOGUE_TITLES, data_type=model_config.TYPE_STRING, dims=[-1])
    config.instance_group.add(kind=model_config.ModelInstanceGroup.Kind.KIND_CPU)
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    (folder / "1" / "model.py").write_text(f"from {CATALOGUE_MODULE} import TritonPythonModel  # noqa: F401\n")
    catalogue = {"movie_ids": list(title_of_movie), "titles": list(title_of_movie.values())}
    (folder / "1" / CATALOGUE_FILE).write_text(json.dumps(catalogue, ensure_ascii=False), encoding="utf-8")


def copy_run_model(run_dir: Path, destination: Path) -> None:
    """The files ``load_run`` rebuilds the model from, and nothing else of the run."""
    (destination / MODEL_DIR).mkdir(parents=True)
    for name in (RUN_INFO, CONFIG):
        shutil.copyfile(run_dir / name, destination / name)
    for name in (WEIGHTS, SCHEMA, FEATURES_FILE):
        if (run_dir / MODEL_DIR / name).is_file():  # runs without titles have no features file
            shutil.copyfile(run_dir / MODEL_DIR / name, destination / MODEL_DIR / name)


def retrace(artifact_path: str | Path, device: str) -> torch.jit.ScriptModule:
    """The model of a gpu export, rebuilt from its run files and traced on ``device``."""
    run_copy = Path(artifact_path) / RUN_COPY
    if not run_copy.is_dir():
        raise ServeError(
            f"{artifact_path} holds no run files ({RUN_COPY}/): it was exported with --target cpu, "
            "whose model runs on the CPU only; export again with --target gpu"
        )
    run = load_run(run_copy, device=device)
    return trace_model(run.model, run.session_length)


def place_on_device(ensemble: Ensemble, artifact_path: str | Path, device: str) -> None:
    """Run the model step of ``ensemble`` on ``device`` (``cuda:N``); a clear error where it cannot."""
    if device == "cpu":
        return
    problem = gpu_problem()
    if problem:
        raise ServeError(f"the gpu target cannot put its model on {device}: {problem}; or export with --target cpu")
    traced = retrace(artifact_path, device)
    for node in postorder_iter_nodes(ensemble.graph.output_node, flatten_subgraphs=True):
        if isinstance(node.op, PredictTopK):
            node.op.use_model(traced, device)


def load_exported(repository: str | Path, device: str = "cpu") -> Ensemble:
    """The exported graph with its artifacts, to run in this process (what Triton's executor does);
    ``device`` ``cuda`` (or ``cuda:N``) runs a gpu export's model step there, as its GPU instance does."""
    path = Path(repository) / ENSEMBLE_NAME / "1" / "ensemble"
    ensemble = Ensemble.load(str(path))
    for node in postorder_iter_nodes(ensemble.graph.output_node, flatten_subgraphs=True):
        node.op.load_artifacts(str(path))
    place_on_device(ensemble, path, device)
    return ensemble
