"""Serving: the exported ensemble in-process, and a real tritonserver answering it over HTTP and gRPC.

The module's server serves a run whose rule leaves a session's own movies out (as training
records it on data where nobody watches a movie twice), so every comparison with the
in-process answers runs with the exclusion on; the CLI export test serves one that keeps them.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch
import tritonclient.grpc.model_config_pb2 as model_config
import tritonclient.http as httpclient
from google.protobuf import text_format
from conftest import shared
from test_client_imports import heavy_modules_after
from test_predict import with_seen_rule

from t4r_app.cli import main
from t4r_app.data.item_sequences import read_split
from t4r_app.errors import ServeError, TitleError
from t4r_app.model.architecture import max_sequence_length
from t4r_app.model.inference import next_item_scores
from t4r_app.model.saved_run import load_run
from t4r_app.serve.ensemble_ops import EncodeMovies
from t4r_app.serve.export import etl_workflow_dir, export_run, load_exported, serving_workflow, trace_model
from t4r_app.serve.contract import (
    CATALOGUE_MODEL,
    ENSEMBLE_NAME,
    MAX_MOVIES_PER_REQUEST,
    MAX_SESSIONS_PER_REQUEST,
    encode_request,
    recommend_one,
)
from t4r_app.serve.recommender import Recommender
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, check_repository, find_tritonserver, free_port

pytestmark = pytest.mark.slow  # tritonserver, and a model exported for it

TOP_K = 10
# Bounds for hostile requests, loose enough for a busy 2-core machine: each answer or error
# within this many seconds, and the server (tritonserver and its python stub) within this memory.
HOSTILE_SECONDS = 120.0
SERVER_RSS_BOUND_MB = 2048.0
SERVER_RSS_GROWTH_BOUND_MB = 512.0


@pytest.fixture(scope="module")
def strict_run(tiny_run, tmp_path_factory):
    return shared(with_seen_rule(tiny_run, tmp_path_factory.mktemp("strict") / "run", exclude_seen=True))


@pytest.fixture(scope="module")
def repository(strict_run, tmp_path_factory):
    # no exclude_seen given: the export bakes in the run's rule
    return export_run(strict_run, tmp_path_factory.mktemp("serving") / "repo", target="cpu", top_k=TOP_K)


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def in_process(strict_run):
    return Recommender(load_run(strict_run))


@pytest.fixture(scope="module")
def raw_sessions(tiny_data):
    mapping = pd.read_parquet(tiny_data / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    sessions = []
    for split in ("valid", "test"):
        items = read_split(tiny_data, split).items
        sessions += [[int(movie_of[i]) for i in items.row(r)] for r in range(len(items))]
    return sessions


def _assert_same(answers, expected):
    for got, want in zip(answers, expected):
        assert got.movies == want.movies
        assert np.allclose(got.scores, want.scores, atol=1e-4)
        assert got.fallback == want.fallback and got.unknown_movies == want.unknown_movies
        assert got.exclude_seen is want.exclude_seen is True


def test_traced_model_equals_the_eager_model_for_any_batch(tiny_run, tiny_data):
    run = load_run(tiny_run)
    length = run.session_length
    run.model.train()  # tracing must put it in eval mode itself (dropout off)
    traced = trace_model(run.model, length)
    assert not run.model.training
    items = read_split(tiny_data, "test").items
    for start, stop in ((0, 1), (3, 10), (0, 100)):
        batch = items.padded(start, stop, length)
        with torch.no_grad():
            assert np.allclose(traced(torch.as_tensor(batch)).numpy(), next_item_scores(run.model, batch), atol=1e-5)


def test_exported_graph_runs_in_process(repository, in_process, raw_sessions):
    info = json.loads((repository / "t4r_export.json").read_text())
    assert info["top_k"] == TOP_K and info["exclude_seen"] is True
    assert 'key: "exclude_seen"' in (repository / ENSEMBLE_NAME / "config.pbtxt").read_text()
    sessions = raw_sessions[:50] + [[], [10**9], raw_sessions[0] * 5]
    output = load_exported(repository).transform(pd.DataFrame({"movieIndices": sessions}))
    expected = in_process.recommend(sessions, top_k=TOP_K)
    for row, want in enumerate(expected):
        assert list(output["movie_ids"].iloc[row]) == want.movies
        assert np.allclose(output["scores"].iloc[row], want.scores, atol=1e-4)


def test_the_served_lookup_encodes_exactly_as_the_fitted_workflow(strict_run):
    workflow = serving_workflow(etl_workflow_dir(load_run(strict_run)))
    lookup = EncodeMovies(workflow).lookup
    rng = np.random.default_rng(0)
    known = lookup.movies
    sessions = [rng.choice(known, int(rng.integers(1, 30))).tolist() for _ in range(200)]
    sessions += [[int(known.min()) - 1, int(known.max()) + 1, -5, 0, 2**62], known.tolist()]  # unknown ids too
    sessions += [rng.integers(-10, int(known.max()) + 10, 50).tolist() for _ in range(20)]
    expected = workflow.transform(pd.DataFrame({"movieIndices": sessions}))["item_id-list"]
    for session, want in zip(sessions, expected):
        assert lookup.encode(np.array(session, dtype=np.int64)).tolist() == list(want)
    assert lookup.unknown_item not in lookup.items


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_triton_answers_exactly_what_predict_answers(server, tiny_run, in_process, raw_sessions, transport):
    address = server.http_url if transport == "http" else server.grpc_url
    client = TritonRecommender(address, tiny_run, transport)
    try:
        assert client.served_top_k() == TOP_K
        assert len(raw_sessions) >= 300
        answers = []
        for start in range(0, len(raw_sessions), 100):  # several sessions per request
            answers += client.recommend(raw_sessions[start : start + 100], top_k=TOP_K)
    finally:
        client.close()
    _assert_same(answers, in_process.recommend(raw_sessions, top_k=TOP_K))
    assert not any(set(answer.movies) & set(session) for answer, session in zip(answers, raw_sessions))


def test_awkward_sessions_in_one_batch_get_the_documented_answers(server, tiny_run, in_process, raw_sessions):
    long_session = raw_sessions[0] * 10
    # Movies older than the model's window still count as seen: put the best answers for the
    # recent movies before them, where the model does not see them.
    recent = next(session for session in raw_sessions if len(session) >= 19)
    best_for_recent = in_process.recommend([recent], top_k=5)[0].movies
    old_and_recent = best_for_recent + recent
    all_but_three = sorted(in_process.title_of_movie)[3:]  # fewer unseen movies left than asked for
    mixed = [raw_sessions[1], [], [10**9, -1], raw_sessions[2] + [10**9], long_session, raw_sessions[3]]
    mixed += [old_and_recent, all_but_three]
    client = TritonRecommender(server.http_url, tiny_run)
    try:
        answers = client.recommend(mixed, top_k=5)
    finally:
        client.close()
    _assert_same(answers, in_process.recommend(mixed, top_k=5))
    assert answers[1].fallback == "most_popular" and answers[2].fallback == "most_popular"
    assert answers[3].unknown_movies == [10**9]
    assert not set(answers[6].movies) & set(old_and_recent)
    assert sorted(answers[7].movies) == sorted(in_process.title_of_movie)[:3]


# Asks the server with its address alone, as a machine without the run would, in a fresh
# interpreter: what it answers and predict writes, and the catalogue note.
SERVER_ONLY_CLIENT = """
import contextlib, json, sys
from t4r_app.cli import main
from t4r_app.serve.triton_client import TritonRecommender
address, transport, sessions_path, output = sys.argv[1:5]
sessions = json.loads(open(sessions_path).read())
client = TritonRecommender(address, None, transport)
answers = [answer.to_json() for answer in client.recommend(sessions, top_k=%d)]
client.close()
with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the answers alone
    predicted = main(["predict", "--server", address, "--transport", transport, "--input", sessions_path + "l",
                      "--output", output, "--top-k", "%d"])
print(json.dumps({"answers": answers, "note": client.catalogue_note, "predict_exit": predicted}))
""" % (TOP_K, TOP_K)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_client_with_only_the_servers_address_answers_as_with_the_run(
    server, strict_run, in_process, raw_sessions, tmp_path, transport
):
    address = server.http_url if transport == "http" else server.grpc_url
    sessions = raw_sessions[:50] + [[], [10**9, -1], raw_sessions[2] + [10**9]]
    (tmp_path / "s.json").write_text(json.dumps(sessions))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"session_id": i, "movieIndices": s}) + "\n" for i, s in enumerate(sessions)))
    arguments = [address, transport, str(tmp_path / "s.json"), str(tmp_path / "p.jsonl")]
    heavy, printed = heavy_modules_after(SERVER_ONLY_CLIENT, arguments)
    assert heavy == []  # neither torch nor Merlin: the client needs only the server
    remote = json.loads(printed)
    assert remote["note"] == ""  # the ensemble carries its catalogue: nothing is missing
    assert remote["predict_exit"] == 0  # `t4r-app predict --server` without --run
    client = TritonRecommender(address, strict_run, transport)
    try:
        with_run = [answer.to_json() for answer in client.recommend(sessions, top_k=TOP_K)]
    finally:
        client.close()
    assert remote["answers"] == with_run  # ids, scores, titles, unknown ids, fallback, seen rule
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == with_run
    expected = in_process.recommend(sessions, top_k=TOP_K)
    assert [answer["titles"] for answer in remote["answers"]] == [want.titles for want in expected]
    assert remote["answers"][50]["fallback"] == remote["answers"][51]["fallback"] == "most_popular"
    assert remote["answers"][51]["unknown_movies"] == [10**9, -1] and remote["answers"][52]["unknown_movies"] == [10**9]


def _raw_request(server, inputs):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return client.infer(ENSEMBLE_NAME, inputs)
    finally:
        client.close()


def _input(name, array, datatype, rows=1):
    """``array`` as the one batch row a request carries (``rows`` copies of it, to send too many)."""
    array = np.repeat(array[None], rows, axis=0)
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _still_answers(server, tiny_run, in_process, session):
    client = TritonRecommender(server.grpc_url, tiny_run, "grpc")
    try:
        assert client.recommend([session], top_k=3)[0].movies == in_process.recommend([session], top_k=3)[0].movies
    finally:
        client.close()


OFFSETS_MUST_FIT = "must start at 0, never decrease and end at the number of values"


@pytest.mark.parametrize(
    "case, message",
    [
        ("wrong_dtype", "FP32"),
        ("missing_input", "movieIndices__offsets"),
        ("offsets_past_the_values", f"{OFFSETS_MUST_FIT} \\(2\\)"),
        ("negative_offsets", OFFSETS_MUST_FIT),
        ("negative_first_offset", OFFSETS_MUST_FIT),
        ("huge_offsets", OFFSETS_MUST_FIT),
        ("ten_thousand_sessions", f"at most {MAX_SESSIONS_PER_REQUEST} sessions, got 10000: split them"),
        ("too_many_movies", f"at most {MAX_MOVIES_PER_REQUEST} movies in all its sessions, got {MAX_MOVIES_PER_REQUEST + 1}"),
        ("two_batch_rows", "carries its sessions as one batch row"),
    ],
)
def test_bad_requests_get_errors_and_the_server_stays_up(server, tiny_run, in_process, raw_sessions, case, message):
    values, offsets = encode_request(raw_sessions[:3])
    if case == "wrong_dtype":
        inputs = [_input("movieIndices__values", values.astype(np.float32), "FP32"), _input("movieIndices__offsets", offsets, "INT32")]
    elif case == "missing_input":
        inputs = [_input("movieIndices__values", values, "INT64")]
    elif case == "two_batch_rows":
        inputs = [_input("movieIndices__values", values, "INT64", rows=2), _input("movieIndices__offsets", offsets, "INT32", rows=2)]
    else:
        if case == "offsets_past_the_values":
            values = values[:2]
        elif case == "negative_offsets":
            offsets = -offsets
        elif case == "negative_first_offset":
            offsets = offsets.copy()
            offsets[0] = np.iinfo(np.int32).min
        elif case == "huge_offsets":
            offsets = offsets.copy()
            offsets[1:] = np.iinfo(np.int32).max  # never decreasing, but far past the values
        elif case == "ten_thousand_sessions":
            values, offsets = encode_request([raw_sessions[i % len(raw_sessions)] for i in range(10_000)])
        elif case == "too_many_movies":  # one session over the limit
            values, offsets = encode_request([np.resize(np.asarray(raw_sessions[0], np.int64), MAX_MOVIES_PER_REQUEST + 1)])
        inputs = [_input("movieIndices__values", values, "INT64"), _input("movieIndices__offsets", offsets, "INT32")]
    started = time.monotonic()
    with pytest.raises(httpclient.InferenceServerException, match=message):
        _raw_request(server, inputs)
    assert time.monotonic() - started < HOSTILE_SECONDS
    assert server.ready()
    _still_answers(server, tiny_run, in_process, raw_sessions[4])


def test_requests_merged_by_the_server_get_each_its_own_answer(server, tiny_run, in_process, raw_sessions):
    """Eight clients at once: the dynamic batcher merges waiting requests into one pass, and
    every request still gets exactly its own sessions' answers (one bad request among them alone refused)."""
    from bench.common import run_concurrently

    requests = [raw_sessions[i : i + 1 + i % 3] for i in range(0, 160)]
    answers: dict[int, list] = {}
    refused = []

    def client(worker: int) -> None:
        recommender = TritonRecommender(server.http_url, tiny_run, "http")
        try:
            for index in range(worker, len(requests), 8):
                answers[index] = recommender.recommend(requests[index], top_k=TOP_K)
            values, offsets = encode_request(raw_sessions[:2])
            offsets = offsets.copy()
            offsets[-1] += 3  # past the values
            try:
                _raw_request(server, [_input("movieIndices__values", values, "INT64"), _input("movieIndices__offsets", offsets, "INT32")])
            except httpclient.InferenceServerException as error:
                refused.append(str(error))
        finally:
            recommender.close()

    stats = httpclient.InferenceServerClient(server.http_url)
    before = stats.get_inference_statistics(ENSEMBLE_NAME)["model_stats"][0]
    run_concurrently(client, 8)
    after = stats.get_inference_statistics(ENSEMBLE_NAME)["model_stats"][0]
    stats.close()
    for index, request in enumerate(requests):
        _assert_same(answers[index], in_process.recommend(request, top_k=TOP_K))
    assert len(refused) == 8 and all(OFFSETS_MUST_FIT in message for message in refused)
    passes = after["execution_count"] - before["execution_count"]
    assert passes < after["inference_count"] - before["inference_count"]  # some requests shared a pass


def test_the_load_bench_traffic_is_answered_as_it_expects(server, raw_sessions):
    """bench-load's requests (1 or 64 sessions, HTTP or gRPC, some malformed) against the server's shapes."""
    from bench.bench_load import Traffic

    traffic = Traffic(server, raw_sessions, malformed=0.4, seed=3)
    try:
        records = [traffic.one() for _ in range(40)]
    finally:
        traffic.close()
    assert all(record["ok"] for record in records), [record["error"] for record in records if not record["ok"]][:3]
    assert {"valid"} < {record["kind"] for record in records}


EXTREME_IDS = [2**63 - 1, -(2**63), 2**62, -(2**40), -1, 10**12]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_ids_far_outside_the_catalogue_are_unknown_movies(server, tiny_run, in_process, raw_sessions, transport):
    sessions = [EXTREME_IDS, [2**63 - 1], [-(2**63)], raw_sessions[5] + EXTREME_IDS, EXTREME_IDS + raw_sessions[6]]
    client = TritonRecommender(server.http_url if transport == "http" else server.grpc_url, tiny_run, transport)
    started = time.monotonic()
    try:
        answers = client.recommend(sessions, top_k=TOP_K)
    finally:
        client.close()
    assert time.monotonic() - started < HOSTILE_SECONDS
    _assert_same(answers, in_process.recommend(sessions, top_k=TOP_K))
    assert [answer.fallback for answer in answers] == ["most_popular"] * 3 + [None, None]
    assert answers[0].unknown_movies == EXTREME_IDS and answers[3].unknown_movies == EXTREME_IDS
    # unknown ids in front of a session do not change its answer
    assert answers[4].movies == in_process.recommend([raw_sessions[6]], top_k=TOP_K)[0].movies
    assert server.ready()


def _timed_answers(server, tiny_run, sessions, transport="http"):
    """The server's answers, seconds taken, and the server's memory (MB) before and after."""
    client = TritonRecommender(server.http_url if transport == "http" else server.grpc_url, tiny_run, transport)
    rss_before, started = server.rss_mb(), time.monotonic()
    try:
        answers = client.recommend(sessions, top_k=TOP_K)
    finally:
        client.close()
    return answers, time.monotonic() - started, rss_before, server.rss_mb()


def _assert_memory_bounded(rss_before, rss_after):
    assert rss_before > 0  # /proc is readable: the bound below is checked, not skipped
    assert rss_after < SERVER_RSS_BOUND_MB, f"server RSS {rss_after} MB"
    assert rss_after - rss_before < SERVER_RSS_GROWTH_BOUND_MB, f"server RSS grew {rss_before} -> {rss_after} MB"


def test_ten_thousand_sessions_are_split_over_requests_and_answered(server, tiny_run, in_process, raw_sessions):
    sessions = [raw_sessions[i % len(raw_sessions)] for i in range(10_000)]
    sessions[9_999] = EXTREME_IDS
    answers, seconds, rss_before, rss_after = _timed_answers(server, tiny_run, sessions)
    assert seconds < HOSTILE_SECONDS and len(answers) == 10_000
    _assert_memory_bounded(rss_before, rss_after)
    _assert_same(answers, in_process.recommend(sessions, top_k=TOP_K))
    _still_answers(server, tiny_run, in_process, raw_sessions[4])


def test_hundred_thousand_movies_in_one_session_are_answered(server, tiny_run, in_process, raw_sessions):
    # only the last max_seq_length - 1 movies are scored; every one of them counts as seen
    recent = next(session for session in raw_sessions if len(session) >= 10)
    older = [movie for movie in sorted(in_process.title_of_movie) if movie not in recent][:20]
    long_session = list(np.resize(np.asarray(older + [10**9], dtype=np.int64), 100_000 - len(recent)).tolist()) + recent
    sessions = [long_session, raw_sessions[1]]
    answers, seconds, rss_before, rss_after = _timed_answers(server, tiny_run, sessions, "grpc")
    assert seconds < HOSTILE_SECONDS
    _assert_memory_bounded(rss_before, rss_after)
    _assert_same(answers, in_process.recommend(sessions, top_k=TOP_K))
    assert not set(answers[0].movies) & set(older)
    assert answers[0].unknown_movies.count(10**9) > 4000
    _still_answers(server, tiny_run, in_process, raw_sessions[4])


def test_cli_talks_to_the_server(server, strict_run, in_process, raw_sessions, tmp_path, capsys):
    source = tmp_path / "s.jsonl"
    source.write_text("".join(json.dumps({"session_id": i, "movieIndices": s}) + "\n" for i, s in enumerate(raw_sessions[:20])))
    assert main(["predict", "--run", str(strict_run), "--input", str(source), "--output", str(tmp_path / "remote.jsonl"), "--server", server.grpc_url, "--transport", "grpc"]) == 0
    assert "left out of its recommendations (the server's rule, set at export)" in capsys.readouterr().out
    assert main(["predict", "--run", str(strict_run), "--input", str(source), "--output", str(tmp_path / "local.jsonl")]) == 0
    remote = [json.loads(line) for line in (tmp_path / "remote.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    for key in ("movieIndices", "titles", "exclude_seen"):
        assert [r[key] for r in remote] == [r[key] for r in local]
    session = ",".join(map(str, raw_sessions[0]))
    capsys.readouterr()
    assert main(["recommend", "--run", str(strict_run), "--session", session, "--top-k", "3", "--server", server.http_url, "--exclude-seen"]) == 0
    remote_table = capsys.readouterr().out
    assert main(["recommend", "--run", str(strict_run), "--session", session, "--top-k", "3"]) == 0
    assert capsys.readouterr().out == remote_table
    # a request cannot change the rule baked into the ensemble: asking for the other one is refused
    assert main(["recommend", "--run", str(strict_run), "--session", session, "--server", server.http_url, "--keep-seen"]) == 1
    assert "--keep-seen cannot be applied with --server: the ensemble at" in capsys.readouterr().err


def test_server_start_errors_are_clear(repository, tmp_path):
    assert find_tritonserver().path.is_file()
    with pytest.raises(ServeError, match="model repository not found"):
        TritonServer(tmp_path / "nowhere").start()
    with pytest.raises(ServeError, match="is not an exported repository"):
        TritonServer(tmp_path).start()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"http port {port} on 127.0.0.1 is not free"):
            TritonServer(repository, http_port=port, grpc_port=free_port(), metrics_port=free_port()).start()


OLD_EXECUTOR = "from t4r_app.triton_model import TritonPythonModel  # noqa: F401\n"


def test_a_repository_of_the_earlier_layout_is_refused_with_what_to_do(repository, strict_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(repository, old)
    check_repository(old)  # a copy of a current export passes
    model_py = old / ENSEMBLE_NAME / "1" / "model.py"
    current = model_py.read_text()
    model_py.write_text(OLD_EXECUTOR)  # what the layout before the stage packages wrote
    expected = (
        f"{re.escape(str(old))} was exported by an earlier version of t4r-app: it needs t4r_app.triton_model, .*"
        f"Export it again: t4r-app export --run {re.escape(str(strict_run.resolve()))} --output {re.escape(str(old))}"
    )
    with pytest.raises(ServeError, match=expected):
        TritonServer(old, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()).start()
    # its pickled operators name a module that is gone too, even where model.py is the current one
    model_py.write_text(current)
    pickled = old / ENSEMBLE_NAME / "1" / "ensemble" / "ensemble.pkl"
    pickled.write_bytes(b"ct4r_app.serving_ops\nPredictTopK\n.")  # a pickle of the old operator class
    with pytest.raises(ModuleNotFoundError, match="t4r_app.serving_ops"):
        pickle.loads(pickled.read_bytes())
    with pytest.raises(ServeError, match="it needs t4r_app.serving_ops, which"):
        check_repository(old)


def test_export_and_serve_through_the_cli(tiny_run, raw_sessions, tmp_path, capsys):
    repository = tmp_path / "repo"
    assert main(["export", "--run", str(tiny_run), "--output", str(repository), "--top-k", "3"]) == 0
    assert "are kept in its recommendations (the run's rule, see run.json)" in capsys.readouterr().out
    sessions = tmp_path / "s.jsonl"
    sessions.write_text("".join(json.dumps({"session_id": f"u{i}", "movieIndices": s}) + "\n" for i, s in enumerate(raw_sessions[:2])))
    ports = [str(free_port()) for _ in range(3)]
    command = ["serve", "--repository", str(repository), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    capsys.readouterr()
    assert main([*command, "--try-sessions", str(sessions), "--run", str(tiny_run)]) == 0
    printed = capsys.readouterr().out
    assert "recommendations from tritonserver" in printed and "session u1" in printed and "   3. " in printed
    assert main(["export", "--run", str(tiny_run), "--output", str(tmp_path / "strict"), "--exclude-seen"]) == 0
    assert json.loads((tmp_path / "strict" / "t4r_export.json").read_text())["exclude_seen"] is True
    assert "stopping tritonserver" in printed
    assert main(["serve", "--repository", str(tmp_path / "missing")]) == 1
    assert "model repository not found" in capsys.readouterr().err


def _without_the_catalogue(repository):
    """The repository as an export from before the catalogue was served."""
    shutil.rmtree(repository / CATALOGUE_MODEL)
    return repository


def test_sasrec_is_served_exactly_as_it_answers_in_process(tiny_data, tiny_run, raw_sessions, tmp_path):
    """The causal architecture goes through the same export and server: no [MASK] is appended.

    Served from a repository without the catalogue (as exported before it existed), which a
    client given only the server's address answers with raw ids and a note that says so."""
    from conftest import tiny_config

    from t4r_app.train.trainer import train

    run_dir = tmp_path / "sasrec"
    train(tiny_config("model.architecture=sasrec"), tiny_data, run_dir, progress=False)
    # exported as before the server batched requests too: tensors without a batch dimension
    repository = export_run(run_dir, tmp_path / "repo", target="cpu", top_k=TOP_K, dynamic_batching=False)
    repository = _without_the_catalogue(repository)
    in_process = Recommender(load_run(run_dir))
    sessions = raw_sessions[:60] + [[], raw_sessions[0] * 5]
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as running:
        client = TritonRecommender(running.http_url, run_dir)
        bare = TritonRecommender(running.http_url)
        try:
            answers = client.recommend(sessions, top_k=TOP_K)
            bare_answers = bare.recommend(sessions + [[10**9]], top_k=TOP_K)
            with pytest.raises(TitleError, match="--titles needs the movies' titles.*pass --run RUN_DIR .* or export it again"):
                recommend_one(bare, [], titles=["anything"])
        finally:
            client.close()
            bare.close()
    assert client.catalogue_note == "" and "exported before t4r-app served its movie titles" in bare.catalogue_note
    assert [a.movies for a in bare_answers[:-1]] == [a.movies for a in answers]
    assert [a.scores for a in bare_answers[:-1]] == [a.scores for a in answers]
    assert all(title == "" for a in bare_answers for title in a.titles) and bare.title_of_movie == {}
    # unknown ids cannot be told without the catalogue: none is listed, only an empty session is a fallback
    assert all(a.unknown_movies == [] for a in bare_answers) and bare_answers[-1].fallback is None
    assert bare_answers[60].fallback == answers[60].fallback == "most_popular"
    expected = in_process.recommend(sessions, top_k=TOP_K)
    for got, want in zip(answers, expected):
        assert got.movies == want.movies and np.allclose(got.scores, want.scores, atol=1e-4)
    # and the answers are the causal model's own: the last item's state, not a [MASK] position
    # (the whole window: no position is kept for a [MASK], which BERT4Rec's one less is for)
    run = load_run(run_dir)
    assert run.session_length == max_sequence_length(run.schema) == load_run(tiny_run).session_length + 1
    batch = read_split(tiny_data, "test").items.padded(0, 8, run.session_length)
    with torch.no_grad():
        last_state = run.model({"item_id-list": torch.as_tensor(batch)}, training=False, testing=False)
    assert np.allclose(last_state.numpy(), next_item_scores(run.model, batch), atol=1e-6)
