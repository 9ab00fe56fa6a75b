"""The gpu export target: its structure and its refusals everywhere, its answers where there is a GPU.

On a machine without CUDA the GPU tests are skipped and the refusals are checked instead, against
the real tritonserver, which sees no GPU there either. On a GPU machine it is the other way round:
the gpu repository's answers, in process and from tritonserver, must be predict's.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc.model_config_pb2 as model_config
from google.protobuf import text_format
from merlin.dag import postorder_iter_nodes

from t4r_app.cli import main
from t4r_app.data.item_sequences import read_split
from t4r_app.errors import ServeError
from t4r_app.model.saved_run import load_run
from t4r_app.serve.ensemble_ops import MODEL_FILE, PredictTopK
from t4r_app.serve.export import EXPORT_INFO, RUN_COPY, TARGETS, export_run, load_exported, retrace
from t4r_app.serve.contract import ENSEMBLE_NAME
from t4r_app.serve.recommender import Recommender
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import NO_GPU_IN_TRITON, TritonServer, find_tritonserver, free_port

pytestmark = pytest.mark.slow  # two exports, and tritonserver
TOP_K = 10
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build of torch")
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without a GPU")
Kind = model_config.ModelInstanceGroup.Kind


@pytest.fixture(scope="module")
def repositories(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    return {target: export_run(tiny_run, root / target, target=target, top_k=TOP_K) for target in TARGETS}


@pytest.fixture(scope="module")
def sessions(tiny_data):
    mapping = pd.read_parquet(tiny_data / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    items = read_split(tiny_data, "test").items
    raw = [[int(movie_of[i]) for i in items.row(r)] for r in range(len(items))]
    return raw[:80] + [[], [10**9], raw[0] * 5]


def _config(repository) -> model_config.ModelConfig:
    return text_format.Parse((repository / ENSEMBLE_NAME / "config.pbtxt").read_text(), model_config.ModelConfig())


def _artifacts(repository):
    return repository / ENSEMBLE_NAME / "1" / "ensemble"


def _ports() -> dict:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


def _assert_same_ranking(movies, scores, want, atol=1e-4):
    """Equal answers, except that GPU kernels may order movies whose scores tie to float precision otherwise."""
    assert np.allclose(scores, want.scores, atol=atol)
    for rank, (movie, expected) in enumerate(zip(movies, want.movies)):
        if movie != expected:
            assert abs(scores[rank] - want.scores[rank]) <= atol, f"rank {rank}: {movie} instead of {expected}"


def test_gpu_export_asks_for_a_gpu_instance_and_is_otherwise_the_cpu_export(repositories):
    gpu, cpu = _config(repositories["gpu"]), _config(repositories["cpu"])
    assert [group.kind for group in gpu.instance_group] == [Kind.KIND_GPU]
    assert [group.kind for group in cpu.instance_group] == [Kind.KIND_CPU]
    del gpu.instance_group[:], cpu.instance_group[:]
    assert gpu == cpu  # backend, inputs, outputs, parameters
    assert gpu.backend == "python"
    model_files = [(repositories[target] / ENSEMBLE_NAME / "1" / "model.py").read_text() for target in TARGETS]
    assert model_files[0] == model_files[1] and "t4r_app.serve.triton_entry" in model_files[0]
    for target in TARGETS:
        assert json.loads((repositories[target] / EXPORT_INFO).read_text())["target"] == target


def test_gpu_export_carries_the_run_files_beside_the_same_artifacts(repositories, tiny_run):
    gpu, cpu = _artifacts(repositories["gpu"]), _artifacts(repositories["cpu"])
    assert sorted(path.name for path in gpu.iterdir()) == sorted([RUN_COPY, *(path.name for path in cpu.iterdir())])
    assert (gpu / MODEL_FILE).is_file() and not (cpu / RUN_COPY).exists()
    carried = sorted(str(path.relative_to(gpu / RUN_COPY)) for path in (gpu / RUN_COPY).rglob("*") if path.is_file())
    features = ["model/item_features.npz"] if (tiny_run / "model" / "item_features.npz").is_file() else []
    assert carried == sorted(["config.yaml", "model/schema.pbtxt", "model/weights.pt", "run.json", *features])


def test_gpu_export_holds_the_same_graph_and_answers_the_same_on_the_cpu(repositories, sessions):
    frame = pd.DataFrame({"movieIndices": sessions})
    ensembles = {target: load_exported(repositories[target]) for target in TARGETS}
    steps = {
        target: [type(node.op).__name__ for node in postorder_iter_nodes(ensemble.graph.output_node, flatten_subgraphs=True)]
        for target, ensemble in ensembles.items()
    }
    assert steps["gpu"] == steps["cpu"] and "PredictTopK" in steps["gpu"]
    outputs = {target: ensemble.transform(frame) for target, ensemble in ensembles.items()}
    for column in ("movie_ids", "scores"):
        assert np.array_equal(np.stack(outputs["gpu"][column]), np.stack(outputs["cpu"][column]))


def test_the_carried_run_files_rebuild_the_exported_model(repositories, tiny_run, tiny_data):
    """What a GPU instance does when it loads, here on the CPU: rebuild and trace from the run files."""
    artifacts = _artifacts(repositories["gpu"])
    retraced = retrace(artifacts, "cpu")
    saved = torch.jit.load(str(artifacts / MODEL_FILE), map_location="cpu")
    length = load_run(tiny_run, device="cpu").session_length
    batch = torch.as_tensor(read_split(tiny_data, "test").items.padded(0, 60, length))
    with torch.no_grad():
        assert np.allclose(retraced(batch).numpy(), saved(batch).numpy(), atol=1e-6)
    with pytest.raises(ServeError, match="exported with --target cpu.*export again with --target gpu"):
        retrace(_artifacts(repositories["cpu"]), "cpu")


def test_an_export_without_a_target_answers_on_the_machine_it_was_made_on(tiny_run, sessions, tmp_path):
    repository = export_run(tiny_run, tmp_path / "default", top_k=TOP_K)  # no --target: this machine's
    output = load_exported(repository).transform(pd.DataFrame({"movieIndices": sessions[:20]}))
    expected = Recommender(load_run(tiny_run)).recommend(sessions[:20], top_k=TOP_K)
    assert [list(row)[: len(want.movies)] for row, want in zip(output["movie_ids"], expected)] == [
        want.movies for want in expected
    ]


@without_cuda
def test_without_a_gpu_the_gpu_target_exports_with_a_warning_and_will_not_serve(repositories, tiny_run, tmp_path, capsys):
    repository = tmp_path / "gpu"
    assert main(["export", "--run", str(tiny_run), "--output", str(repository), "--target", "gpu"]) == 0
    printed = capsys.readouterr()
    assert "target gpu" in printed.out
    assert "warning: the gpu target was exported, but it will not load here" in printed.err
    assert "export with --target cpu to serve on this machine" in printed.err
    with pytest.raises(ServeError, match="the gpu target cannot put its model on cuda: .*torch"):
        load_exported(repository, device="cuda")
    ports = [str(free_port()) for _ in range(3)]
    assert main(["serve", "--repository", str(repository), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]) == 1
    refused = capsys.readouterr().err
    assert "was exported with --target gpu and its model needs a GPU, but this environment's torch" in refused
    assert "or export again with --target cpu" in refused


@without_cuda
def test_tritonserver_itself_refuses_the_gpu_instance_with_the_same_advice(repositories):
    """Past serve's own check (as where torch has CUDA but the server sees no GPU): the real server's refusal."""
    server = TritonServer(repositories["gpu"], **_ports())
    server.launch(find_tritonserver())
    try:
        with pytest.raises(ServeError) as refused:
            server.wait_ready(timeout=120)
    finally:
        server.stop()
    message = str(refused.value)
    assert message.startswith(f"{repositories['gpu'].resolve()} was exported with --target gpu and its model needs a GPU, but tritonserver sees no GPU")
    assert NO_GPU_IN_TRITON in message


@needs_cuda
def test_gpu_graph_in_process_answers_what_predict_answers(repositories, tiny_run, sessions):
    ensemble = load_exported(repositories["gpu"], device="cuda")
    predict = [node.op for node in postorder_iter_nodes(ensemble.graph.output_node) if isinstance(node.op, PredictTopK)]
    assert predict and predict[0].device == "cuda"
    assert next(predict[0].traced_model.parameters()).is_cuda
    output = ensemble.transform(pd.DataFrame({"movieIndices": sessions}))
    expected = Recommender(load_run(tiny_run)).recommend(sessions, top_k=TOP_K)
    for row, want in enumerate(expected):
        _assert_same_ranking(list(output["movie_ids"].iloc[row]), list(output["scores"].iloc[row]), want)


@needs_cuda
def test_tritonserver_scores_the_gpu_target_on_the_gpu(repositories, tiny_run, sessions):
    with TritonServer(repositories["gpu"], **_ports()) as server:
        client = TritonRecommender(server.http_url, tiny_run)
        try:
            answers = client.recommend(sessions, top_k=TOP_K)
        finally:
            client.close()
        log = server.log_path.read_text(errors="replace")
    assert f"{ENSEMBLE_NAME}_0_0 (GPU device" in log
    expected = Recommender(load_run(tiny_run)).recommend(sessions, top_k=TOP_K)
    for got, want in zip(answers, expected):
        assert got.fallback == want.fallback and got.unknown_movies == want.unknown_movies
        _assert_same_ranking(got.movies, got.scores, want)


def test_a_repository_with_the_old_traced_file_name_still_loads(repositories, tiny_run, tiny_data, tmp_path):
    """Exports from before the neutral name hold bert4rec_traced.pt and no session_length: same answers."""
    import shutil

    from t4r_app.serve.ensemble_ops import OLD_MODEL_FILE

    old = shutil.copytree(_artifacts(repositories["cpu"]), tmp_path / "artifacts")
    (old / MODEL_FILE).rename(old / OLD_MODEL_FILE)
    current, renamed = PredictTopK(), PredictTopK(max_length=load_run(tiny_run).session_length + 1, top_k=TOP_K)
    current.load_artifacts(str(_artifacts(repositories["cpu"])))
    renamed.load_artifacts(str(old))
    batch = read_split(tiny_data, "test").items.padded(0, 30, load_run(tiny_run).session_length)
    assert renamed.traced_model is not None and np.array_equal(renamed._logits(batch), current._logits(batch))
