"""Serving benchmark, per catalogue size: in-process answers, the real tritonserver, and perf_analyzer, side by side.

For each ``--items`` size: trains a one-epoch model on generated data of that many movies
(serving speed depends on the catalogue and the model's shape, not on how well it learned),
exports it for ``--target``, and measures

* in process (``Recommender``, what ``predict`` runs): one-session latency, 64-session throughput;
* the breakdown inside the served graph, run in this process on the exported ensemble: the
  NVTabular id lookup, the model, the ranking (softmax, seen movies, top-k) and merlin's own
  executor around them, for requests of 1 and 64 sessions;
* through tritonserver with the project's client (``TritonRecommender``, which also fills in
  titles): one-session requests over HTTP and gRPC at concurrency 1 and 8, and 64-session
  requests, each for ``--seconds``; Triton's statistics give the server's share of the
  one-session HTTP latency (queue, the python backend's input and output copies, execution);
  then the same run exported without dynamic batching, one-session requests at concurrency 1 and 8;
* ``perf_analyzer`` (Triton's own load generator) on the same sessions, one-session requests
  at concurrency 1 and 8 and 64-session requests at concurrency 1, over HTTP;
* the server's resident memory (tritonserver and its python stub) when loaded and after the load.

Writes one JSON (see --output). Not a test: run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch
from merlin.dag import postorder_iter_nodes
from merlin.systems.dag.runtimes.triton import TritonExecutorRuntime
from merlin.table import TensorTable

from bench import perf_analyzer
from bench.common import commit, run_concurrently, write_report
from bench.serve_setup import prepare
from t4r_app.data.item_sequences import ItemSequences
from t4r_app.model.saved_run import load_run
from t4r_app.serve.ensemble_ops import EncodeMovies, PredictTopK, _sessions
from t4r_app.serve.export import TARGETS, export_run, load_exported
from t4r_app.serve.contract import ENSEMBLE_NAME, OFFSETS_INPUT, VALUES_INPUT, encode_request
from t4r_app.serve.recommender import Recommender, TopKRanker
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, free_port

TOP_K = 10
BIG_REQUEST = 64
# (transport, sessions per request, concurrency) of the project-client load tests
CLIENT_TESTS = (("http", 1, 1), ("grpc", 1, 1), ("http", 1, 8), ("http", BIG_REQUEST, 1), ("http", BIG_REQUEST, 2))
PERF_TESTS = ((1, 1), (1, 8), (BIG_REQUEST, 1))  # (sessions per request, concurrency), HTTP


def summarise(latencies: list[float], failures: int, seconds: float, sessions_per_request: int = 1) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failed": failures,
        "requests_per_s": round(len(latencies) / seconds, 1),
        "sessions_per_s": round(len(latencies) * sessions_per_request / seconds, 1),
        "mean_ms": round(float(ms.mean()), 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def requests_of(sessions: list[list[int]], size: int) -> list[list[list[int]]]:
    return [sessions[start : start + size] for start in range(0, len(sessions) - size + 1, size)]


def load_test(server: TritonServer, run_dir: Path, sessions, transport: str, size: int, concurrency: int, seconds: float) -> dict:
    """``concurrency`` clients sending ``size``-session requests for ``seconds``, every latency recorded."""
    requests = requests_of(sessions, size)
    address = server.http_url if transport == "http" else server.grpc_url
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        client = TritonRecommender(address, run_dir, transport)
        client.recommend(requests[0], top_k=TOP_K)  # reads the catalogue once, outside the timings
        mine, index = [], offset
        try:
            while time.perf_counter() < deadline:
                request = requests[index % len(requests)]
                index += concurrency
                started = time.perf_counter()
                try:
                    client.recommend(request, top_k=TOP_K)
                    mine.append(time.perf_counter() - started)
                except Exception:
                    with lock:
                        failures[0] += 1
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    started = time.perf_counter()
    run_concurrently(worker, concurrency)
    summary = summarise(latencies, failures[0], time.perf_counter() - started, size)
    return {"transport": transport, "sessions_per_request": size, "concurrency": concurrency, **summary}


def in_process(run_dir: Path, sessions: list[list[int]], seconds: float) -> dict:
    """``Recommender`` (what ``predict`` and ``recommend`` run): one session at a time, then 64 at a time."""
    recommender = Recommender(load_run(run_dir))
    result = {}
    for size in (1, BIG_REQUEST):
        requests = requests_of(sessions, size)
        recommender.recommend(requests[0], top_k=TOP_K)  # warm-up
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            request = requests[len(latencies) % len(requests)]
            started = time.perf_counter()
            recommender.recommend(request, top_k=TOP_K)
            latencies.append(time.perf_counter() - started)
        result[f"sessions_{size}"] = summarise(latencies, 0, sum(latencies), size)
    return result


def _median_ms(step, count: int) -> float:
    times = []
    for index in range(count):
        started = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 3)


def breakdown(repository: Path, sessions: list[list[int]], device: str) -> dict:
    """Median ms per request of each step of the served graph, run here on the exported ensemble."""
    ensemble = load_exported(repository, device=device)
    ops = {type(node.op): node.op for node in postorder_iter_nodes(ensemble.graph.output_node, flatten_subgraphs=True)}
    encode, predict = ops[EncodeMovies], ops[PredictTopK]
    ranker = TopKRanker(predict._logits, predict.session_length, predict.popularity, predict.scorable)
    result = {}
    for size in (1, BIG_REQUEST):
        requests = requests_of(sessions, size)[: 300 if size == 1 else 40]
        count = len(requests)
        tables = [TensorTable(dict(zip((VALUES_INPUT, OFFSETS_INPUT), encode_request(request)))) for request in requests]
        encoded = [encode.transform(None, table) for table in tables]
        items = [_sessions(table) for table in encoded]
        padded = [ItemSequences.from_lists(rows).padded(0, len(rows), predict.session_length) for rows in items]
        steps = {
            "graph_ms": lambda i: ensemble.transform(tables[i], runtime=TritonExecutorRuntime()),
            "encode_ms": lambda i: encode.transform(None, tables[i]),
            "predict_step_ms": lambda i: predict.transform(None, encoded[i]),
            "model_ms": lambda i: predict._logits(padded[i]),
            "rank_with_model_ms": lambda i: ranker.top_k(items[i], TOP_K, predict.exclude_seen),
        }
        timings = {name: _median_ms(step, count) for name, step in steps.items()}
        timings["rank_ms"] = round(timings["rank_with_model_ms"] - timings["model_ms"], 3)
        timings["executor_overhead_ms"] = round(timings["graph_ms"] - timings["encode_ms"] - timings["predict_step_ms"], 3)
        result[f"sessions_{size}"] = timings
    return result


def server_statistics(server: TritonServer) -> dict:
    """Triton's cumulative counters for the ensemble: request count and nanoseconds per phase."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(ENSEMBLE_NAME)["model_stats"][0]["inference_stats"]
    finally:
        client.close()
    return {phase: (int(stats[phase]["count"]), int(stats[phase]["ns"])) for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output")}


def server_share(before: dict, after: dict, client_mean_ms: float) -> dict:
    """Per request, in ms: the server's phases between two statistics snapshots, and what is left for HTTP and the client."""
    requests = max(after["success"][0] - before["success"][0], 1)
    share = {f"server_{phase}_ms": round((after[phase][1] - before[phase][1]) / requests / 1e6, 3) for phase in ("queue", "compute_input", "compute_infer", "compute_output")}
    share["server_total_ms"] = round((after["success"][1] - before["success"][1]) / requests / 1e6, 3)
    share["client_and_transport_ms"] = round(client_mean_ms - share["server_total_ms"], 3)
    return share


def through_triton(work: Path, repository: Path, run_dir: Path, sessions, seconds: float) -> dict:
    result: dict = {"client": []}
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        result["server_rss_mb_loaded"] = server.rss_mb()
        load_test(server, run_dir, sessions, "http", 1, 1, 3.0)  # warm-up
        for transport, size, concurrency in CLIENT_TESTS:
            before = server_statistics(server)
            test = load_test(server, run_dir, sessions, transport, size, concurrency, seconds)
            if (transport, size, concurrency) == ("http", 1, 1):
                result["one_session_http_split"] = server_share(before, server_statistics(server), test["mean_ms"])
            result["client"].append(test)
            print("  triton:", json.dumps(test), flush=True)
        result["perf_analyzer"] = []
        for size, concurrency in PERF_TESTS:
            data = perf_analyzer.write_input_data(requests_of(sessions, size)[:500], work / f"perf_input_{size}.json")
            try:
                measured = perf_analyzer.measure(work, server.http_url, "http", data, concurrency)
                measured.update(sessions_per_request=size, sessions_per_s=round(measured["requests_per_s"] * size, 1))
            except RuntimeError as error:  # no stable window on a busy machine: say so, measure the rest
                measured = {"concurrency": concurrency, "sessions_per_request": size, "error": str(error)[-300:]}
            result["perf_analyzer"].append(measured)
            print("  perf_analyzer:", json.dumps(measured), flush=True)
        result["server_rss_mb_after"] = server.rss_mb()
    return result


def without_dynamic_batching(work: Path, run_dir: Path, sessions, target: str, seconds: float, instances: int) -> list[dict]:
    """One-session HTTP requests at concurrency 1 and 8 against the same run exported without
    dynamic batching: what merging waiting requests gains (or costs)."""
    repository = export_run(run_dir, work / "triton-unbatched", target=target, top_k=TOP_K, instances=instances, dynamic_batching=False)
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        load_test(server, run_dir, sessions, "http", 1, 1, 3.0)  # warm-up
        tests = [load_test(server, run_dir, sessions, "http", 1, concurrency, seconds) for concurrency in (1, 8)]
    for test in tests:
        print("  triton without dynamic batching:", json.dumps(test), flush=True)
    return tests


def measure_catalogue(movies: int, work: Path, target: str, seconds: float, instances: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    run_dir, sessions = prepare(work, movies)
    repository = export_run(run_dir, work / "triton", target=target, top_k=TOP_K, instances=instances)
    device = "cuda" if target == "gpu" else "cpu"
    entry: dict = {"movies": movies, "test_sessions": len(sessions)}
    entry["in_process"] = in_process(run_dir, sessions, seconds)
    print(f"{movies} movies, in process:", json.dumps(entry["in_process"]), flush=True)
    entry["breakdown"] = breakdown(repository, sessions, device)
    print(f"{movies} movies, breakdown:", json.dumps(entry["breakdown"]), flush=True)
    entry["triton"] = through_triton(work, repository, run_dir, sessions, seconds)
    entry["without_dynamic_batching"] = without_dynamic_batching(work, run_dir, sessions, target, seconds, instances)
    one = next(t for t in entry["triton"]["client"] if (t["transport"], t["sessions_per_request"], t["concurrency"]) == ("http", 1, 1))
    entry["p50_ratio_triton_http_over_in_process"] = round(one["p50_ms"] / entry["in_process"]["sessions_1"]["p50_ms"], 2)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1682,50000", help="catalogue sizes to measure, comma-separated (default: 1682,50000)")
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="export target (gpu needs a GPU here)")
    parser.add_argument("--instances", type=int, default=1, help="python-backend instances of the served model (default: 1)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each load test (default: 20)")
    parser.add_argument("--work", default="bench/work/serve")
    parser.add_argument("--output", default="bench/results/serve.json")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    report: dict = {
        "commit": commit(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "target": args.target,
        "instances": args.instances,
        "top_k": TOP_K,
        "seconds_per_test": args.seconds,
        "catalogues": [],
    }
    for movies in (int(size) for size in args.items.split(",")):
        report["catalogues"].append(measure_catalogue(movies, work / str(movies), args.target, args.seconds, args.instances))
        write_report(report, args.output)  # after each size: a long run keeps what it has measured


def _transport(test: dict) -> str:
    """http or grpc; result files written before the word was settled call it "protocol"."""
    return test["transport"] if "transport" in test else test["protocol"]


def _row(path: str, result: dict) -> str:
    if "error" in result:
        return f"| {path} | {result['sessions_per_request']} | {result['concurrency']} | no stable measurement | | |"
    return (
        f"| {path} | {result['sessions_per_request']} | {result['concurrency']} | {result['sessions_per_s']:,.0f} "
        f"| {result['p50_ms']:.1f} | {result['p99_ms']:.1f} |"
    )


def markdown(report: dict) -> str:
    """The README's serving tables: per catalogue, every path's throughput and latency, then where the time goes."""
    lines = [
        f"Target {report['target']}, top {report['top_k']}, {report['seconds_per_test']:.0f} s per load test, "
        f"{report['machine']['cpus']} cores, commit {report['commit']}.",
        "",
    ]
    for entry in report["catalogues"]:
        triton = entry["triton"]
        lines += [
            f"**{entry['movies']:,} movies** (server RSS {triton['server_rss_mb_loaded']:,.0f} MB loaded, "
            f"{triton['server_rss_mb_after']:,.0f} MB after the load; Triton HTTP p50 / in-process p50 = "
            f"{entry['p50_ratio_triton_http_over_in_process']}):",
            "",
            "| path | sessions a request | concurrency | sessions/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for size, result in entry["in_process"].items():
            lines.append(_row("in process (`Recommender`)", {"sessions_per_request": int(size.split("_")[1]), "concurrency": 1, **result}))
        lines += [_row(f"Triton, project client, {_transport(t).upper()}", t) for t in triton["client"]]
        lines += [_row("Triton, perf_analyzer, HTTP", t) for t in triton["perf_analyzer"]]
        lines += [_row("Triton without dynamic batching, project client, HTTP", t) for t in entry.get("without_dynamic_batching", [])]
        split, steps = triton["one_session_http_split"], entry["breakdown"]
        lines += [
            "",
            "| where the time goes (median ms a request) | 1 session | 64 sessions |",
            "|---|---|---|",
        ]
        for name, label in (
            ("encode_ms", "raw ids to item ids (the workflow's lookup)"),
            ("model_ms", "the traced model"),
            ("rank_ms", "softmax, seen movies, top-k"),
            ("executor_overhead_ms", "merlin's executor around them"),
            ("graph_ms", "the whole graph, in this process"),
        ):
            lines.append(f"| {label} | {steps['sessions_1'][name]:.2f} | {steps['sessions_64'][name]:.2f} |")
        lines += [
            "",
            f"One-session HTTP requests at concurrency 1, from Triton's statistics (mean ms): queue "
            f"{split['server_queue_ms']:.2f}, input copy {split['server_compute_input_ms']:.2f}, python backend "
            f"{split['server_compute_infer_ms']:.2f}, output copy {split['server_compute_output_ms']:.2f}; the client "
            f"and HTTP add {split['client_and_transport_ms']:.2f}.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    main()
