"""Load benchmark: sustained mixed traffic through the real tritonserver, for minutes.

Reuses bench_serve's setup (generated data of --items movies, a one-epoch model, a cpu export), starts
tritonserver on free local ports and drives it from client threads, each holding one
tritonclient HTTP and one gRPC client (tritonclient's own clients; see the README for why
not locust). Every request picks, at random: HTTP or gRPC (half each), one session or 64
(three in four carry one), and with probability --malformed a bad request instead (offsets
past the values, negative offsets, wrong dtype, more sessions than a request may carry).
Valid requests must be answered with a (sessions, k) table; bad ones must be refused.

Concurrency: --concurrency N, or 0 (default) for a short ramp over 1, 2, 4, 8 threads that keeps
the smallest one within 5% of the best throughput. Recorded per --window seconds: throughput,
p50/p99 of valid requests, errors, server RSS (tritonserver plus its python stubs). The server's
Prometheus endpoint is scraped before and after the run; its success/failure counts for the
ensemble must match the client's. Writes JSON (see --output). Not a test: run on an idle machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.bench_serve import TOP_K  # run as `python -m bench.bench_load` from the repository root
from bench.common import commit, run_concurrently, write_report
from bench.serve_setup import prepare
from t4r_app.serve.export import export_run
from t4r_app.serve.contract import (
    ENSEMBLE_NAME,
    MAX_SESSIONS_PER_REQUEST,
    MOVIE_IDS,
    OFFSETS_INPUT,
    SCORES,
    VALUES_INPUT,
    encode_request,
)
from t4r_app.serve.triton_server import TritonServer, free_port
from t4r_app.serve.versions import add_version, switch

BIG_REQUEST = 64
MALFORMED_KINDS = ("offsets_past_values", "negative_offsets", "wrong_dtype", "too_many_sessions")
RSS_GROWTH_BOUND_MB = 200  # the stated bound: server RSS may grow at most this much over the run


def scrape(metrics_url: str) -> dict[str, float]:
    """The ensemble's request counters from Triton's Prometheus endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts = {}
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count"):
        # one series per loaded version: summed (a version unloaded by a switch takes its series with it)
        values = re.findall(rf'^{name}{{[^}}]*model="{ENSEMBLE_NAME}"[^}}]*}} (\S+)$', text, re.MULTILINE)
        counts[name] = sum(float(value) for value in values)
    return counts


class Traffic:
    """One client thread's requests: a mix of transports, sizes and malformed requests."""

    def __init__(self, server: TritonServer, sessions: list[list[int]], malformed: float, seed: int):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.modules = {"http": httpclient, "grpc": grpcclient}
        self.clients = {
            "http": httpclient.InferenceServerClient(server.http_url, network_timeout=120.0, connection_timeout=120.0),
            "grpc": grpcclient.InferenceServerClient(server.grpc_url),
        }
        self.sessions = sessions
        self.malformed = malformed
        self.random = random.Random(seed)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()  # let the clients go in this thread: the HTTP one's pool is tied to it

    def _inputs(self, transport: str, values: np.ndarray, offsets: np.ndarray, values_type: str = "INT64"):
        module = self.modules[transport]
        values, offsets = values[None], offsets[None]  # one batch row a request: the ensemble batches requests
        tensors = [module.InferInput(VALUES_INPUT, list(values.shape), values_type), module.InferInput(OFFSETS_INPUT, list(offsets.shape), "INT32")]
        tensors[0].set_data_from_numpy(values)
        tensors[1].set_data_from_numpy(offsets)
        return tensors

    def one(self) -> dict:
        """Send one request; what it was, how long it took and whether it went as it should."""
        transport = self.random.choice(("http", "grpc"))
        size = BIG_REQUEST if self.random.random() < 0.25 else 1
        start = self.random.randrange(len(self.sessions) - size)
        values, offsets = encode_request(self.sessions[start : start + size])
        kind = "valid"
        if self.random.random() < self.malformed:
            kind = self.random.choice(MALFORMED_KINDS)
            if kind == "offsets_past_values":
                offsets = offsets.copy()
                offsets[-1] += 5
            elif kind == "negative_offsets":
                offsets = offsets.copy()
                offsets[1:] = -offsets[1:] - 1
            elif kind == "too_many_sessions":
                values, offsets = encode_request([[1]] * (MAX_SESSIONS_PER_REQUEST + 1))
        dtype = "FP32" if kind == "wrong_dtype" else "INT64"
        inputs = self._inputs(transport, values.astype(np.float32) if kind == "wrong_dtype" else values, offsets, dtype)
        started = time.perf_counter()
        error = None
        try:
            result = self.clients[transport].infer(ENSEMBLE_NAME, inputs)
            movies, scores = result.as_numpy(MOVIE_IDS), result.as_numpy(SCORES)
            answer_shape = (1, size, TOP_K)  # one batch row a request: the ensemble batches requests
            ok = kind == "valid" and movies.shape == answer_shape and scores.shape == answer_shape
            if not ok:
                error = f"answered {kind} request with shape {movies.shape}"
        except Exception as failure:  # tritonclient raises its own exception type per transport
            ok = kind != "valid"
            error = None if ok else str(failure)[:300]
        return {"end": time.perf_counter(), "latency": time.perf_counter() - started, "kind": kind, "transport": transport, "sessions": size, "ok": ok, "error": error}


def drive(server: TritonServer, sessions, concurrency: int, seconds: float, malformed: float, seed: int = 0) -> list[dict]:
    records: list[dict] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        traffic = Traffic(server, sessions, malformed, seed * 1000 + index)
        mine = []
        try:
            while time.perf_counter() < deadline:
                mine.append(traffic.one())
        finally:
            traffic.close()
            with lock:
                records.extend(mine)

    run_concurrently(worker, concurrency)
    return records


def summarise(records: list[dict], seconds: float) -> dict:
    valid = [r for r in records if r["kind"] == "valid"]
    ms = np.array([r["latency"] for r in valid if r["ok"]]) * 1000
    summary = {
        "requests": len(records),
        "valid": len(valid),
        "valid_failed": sum(not r["ok"] for r in valid),
        "malformed": len(records) - len(valid),
        "malformed_answered": sum(not r["ok"] for r in records if r["kind"] != "valid"),
        "requests_per_s": round(len(records) / seconds, 1),
        "sessions_per_s": round(sum(r["sessions"] for r in valid if r["ok"]) / seconds, 1),
    }
    if len(ms):
        summary.update({f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 99)})
    return summary


def switch_version(server: TritonServer, run_dir: Path, repository: Path, after: float, record: dict) -> None:
    """``after`` seconds into the run: the run written as the next version and the server switched to it.

    Its answers equal the old version's (the same run): this measures what the switch costs the
    traffic (failures, latency), not whether answers change; ``tests/test_model_versions.py`` does that."""
    if after <= 0:
        return
    time.sleep(after)
    record["started"] = time.perf_counter()
    try:
        record["version"] = add_version(run_dir, repository)
        record["written"] = time.perf_counter()
        switch(server.http_url, repository)
        record["switched"] = time.perf_counter()
    except Exception as error:  # reported, and the run fails
        record["error"] = str(error)[:500]


def around_the_switch(records: list[dict], started: float, switched: dict, margin: float = 10.0) -> dict:
    """Valid requests' latency in the ``margin`` seconds before the switch began, while the new version
    was written and loaded, and in the ``margin`` seconds after it served (by when each request ended)."""
    if "error" in switched or "switched" not in switched:
        return {"error": switched.get("error", "the switch did not finish within the run")}
    spans = {
        "before": (switched["started"] - margin, switched["started"]),
        "writing": (switched["started"], switched["written"]),
        "loading": (switched["written"], switched["switched"]),
        "after": (switched["switched"], switched["switched"] + margin),
    }
    result = {
        "version": switched["version"],
        "began_s": round(switched["started"] - started, 1),
        "written_after_s": round(switched["written"] - switched["started"], 1),
        "serving_after_s": round(switched["switched"] - switched["started"], 1),
    }
    for name, (low, high) in spans.items():
        inside = [record for record in records if low < record["end"] <= high]
        result[name] = summarise(inside, max(high - low, 1e-9))
    return result


def choose_concurrency(server, sessions, malformed: float, seconds: float) -> tuple[int, list[dict]]:
    ramp = []
    for concurrency in (1, 2, 4, 8):
        ramp.append({"concurrency": concurrency, **summarise(drive(server, sessions, concurrency, seconds, malformed, seed=99), seconds)})
        print("ramp:", json.dumps(ramp[-1]), flush=True)
    best = max(step["sessions_per_s"] for step in ramp)
    return next(step["concurrency"] for step in ramp if step["sessions_per_s"] >= 0.95 * best), ramp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="bench/work/load")
    parser.add_argument("--output", default="bench/results/load.json")
    parser.add_argument("--items", type=int, default=50_000, help="catalogue size (default: 50000, the seed's is 40,858)")
    parser.add_argument("--seconds", type=float, default=300.0, help="duration of the sustained run")
    parser.add_argument("--concurrency", type=int, default=0, help="client threads; 0: choose by a short ramp")
    parser.add_argument("--ramp-seconds", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per reported window")
    parser.add_argument("--malformed", type=float, default=0.05, help="share of malformed requests")
    parser.add_argument("--reuse", action="store_true", help="reuse the trained run in --work if it is there")
    parser.add_argument("--switch-after", type=float, default=0.0,
                        help="seconds into the run at which a new model version is written and the server switched to it "
                             "(export --into --server); 0: no switch")  # fmt: skip
    args = parser.parse_args()
    work = Path(args.work)
    size_file = work / "movies.txt"  # the catalogue size the run in --work was made for
    reusable = args.reuse and (work / "run").is_dir() and (work / "sessions.json").is_file()
    if not (reusable and size_file.is_file() and size_file.read_text() == str(args.items)):
        shutil.rmtree(work, ignore_errors=True)
        run_dir, sessions = prepare(work, args.items)
        (work / "sessions.json").write_text(json.dumps(sessions))
        size_file.write_text(str(args.items))
    run_dir, sessions = work / "run", json.loads((work / "sessions.json").read_text())
    shutil.rmtree(work / "triton", ignore_errors=True)
    repository = export_run(run_dir, work / "triton", target="cpu", top_k=TOP_K)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    metrics_url = f"http://127.0.0.1:{ports['metrics_port']}/metrics"
    report: dict = {
        "commit": commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "movies": args.items,
        "load_tool": "tritonclient HTTP + gRPC clients, one of each per thread",
        "mix": {"one_session": 0.75, f"{BIG_REQUEST}_sessions": 0.25, "http": 0.5, "grpc": 0.5, "malformed": args.malformed, "malformed_kinds": MALFORMED_KINDS},
        "top_k": TOP_K,
        "rss_growth_bound_mb": RSS_GROWTH_BOUND_MB,
    }
    with TritonServer(repository, **ports) as server:
        report["server_rss_mb_after_start"] = server.rss_mb()
        drive(server, sessions, 2, 5.0, args.malformed, seed=7)  # warm-up
        concurrency = args.concurrency
        if concurrency <= 0:
            concurrency, report["ramp"] = choose_concurrency(server, sessions, args.malformed, args.ramp_seconds)
        report["concurrency"] = concurrency
        time.sleep(1.0)  # let the counters settle before the first scrape
        before, rss_start = scrape(metrics_url), server.rss_mb()
        rss_samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample_rss() -> None:
            while not stop.wait(args.window):
                rss_samples.append((time.perf_counter(), server.rss_mb()))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        switched: dict = {}
        switcher = threading.Thread(target=switch_version, args=(server, run_dir, repository, args.switch_after, switched))
        started = time.perf_counter()
        sampler.start()
        if args.switch_after > 0:
            switched["at"] = started
            switcher.start()
        records = drive(server, sessions, concurrency, args.seconds, args.malformed, seed=1)
        elapsed = time.perf_counter() - started
        if args.switch_after > 0:
            switcher.join()
        stop.set()
        sampler.join()
        time.sleep(1.0)
        after, rss_end = scrape(metrics_url), server.rss_mb()
        still_ready = server.ready()
    count = max(1, int(round(elapsed / args.window)))
    by_window: list[list[dict]] = [[] for _ in range(count)]
    for record in records:  # requests that end after the last full window count in it
        by_window[min(int((record["end"] - started) // args.window), count - 1)].append(record)
    windows = []
    for index, inside in enumerate(by_window):
        low, high = started + index * args.window, started + (index + 1) * args.window
        rss = [value for at, value in rss_samples if low < at <= high + 0.5]
        span = args.window if index < count - 1 else elapsed - index * args.window
        windows.append({"from_s": round(index * args.window), **summarise(inside, span), "server_rss_mb": rss[-1] if rss else None})
        print("window:", json.dumps(windows[-1]), flush=True)
    client = summarise(records, elapsed)
    delta = {name: after[name] - before[name] for name in before}
    reached_model = [r for r in records if r["kind"] != "wrong_dtype"]  # Triton refuses a wrong dtype before the model
    report.update(
        seconds=round(elapsed, 1),
        overall=client,
        by_transport={p: summarise([r for r in records if r["transport"] == p], elapsed) for p in ("http", "grpc")},
        by_size={str(s): summarise([r for r in records if r["sessions"] == s and r["kind"] == "valid"], elapsed) for s in (1, BIG_REQUEST)},
        malformed_by_kind={k: sum(r["kind"] == k for r in records) for k in MALFORMED_KINDS},
        failure_examples=sorted({r["error"] for r in records if r["error"]})[:5],
        windows=windows,
        server_rss_mb={"start": rss_start, "end": rss_end, "growth": round(rss_end - rss_start, 1), "max_during": max([v for _, v in rss_samples], default=None)},
        server_still_ready=still_ready,
        metrics={
            "before": before,
            "after": after,
            "delta": delta,
            "client_valid_answered": client["valid"] - client["valid_failed"],
            "client_refused_by_the_model_check": sum(r["kind"] != "valid" and r["ok"] for r in reached_model),
            "client_refused_by_triton_before_the_model": sum(r["kind"] == "wrong_dtype" and r["ok"] for r in records),
        },
    )
    if args.switch_after > 0:
        report["switch"] = around_the_switch(records, started, switched)
        print("switch:", json.dumps(report["switch"]), flush=True)
    metrics = report["metrics"]
    # Triton counts a request the python backend answers with an error (merlin's executor returns
    # the error as a response) as a success, and one it refuses itself (wrong dtype) not at all.
    metrics["success_reconciles"] = delta["nv_inference_request_success"] == (
        metrics["client_valid_answered"] + metrics["client_refused_by_the_model_check"]
    )
    metrics["failure_reconciles"] = delta["nv_inference_request_failure"] == client["valid_failed"]
    if args.switch_after > 0:  # the old version's counters were unloaded with it: the counts cannot add up
        metrics["success_reconciles"] = None
    report["rss_within_bound"] = report["server_rss_mb"]["growth"] <= RSS_GROWTH_BOUND_MB
    report["passed"] = bool(
        client["valid_failed"] == 0
        and client["malformed_answered"] == 0
        and still_ready
        and metrics["success_reconciles"] is not False
        and metrics["failure_reconciles"]
        and report["rss_within_bound"]
        and report.get("switch", {}).get("error") is None
    )
    print(json.dumps({k: report[k] for k in ("concurrency", "seconds", "overall", "server_rss_mb", "passed")}), flush=True)
    print("metrics:", json.dumps(metrics), flush=True)
    write_report(report, args.output)
    gc.collect()  # closed HTTP clients in reference cycles: collect them now, not while the interpreter exits
    if not report["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
