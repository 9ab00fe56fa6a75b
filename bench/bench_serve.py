"""Serving benchmark: single-session requests through the real tritonserver, against in-process predict.

Trains a small model on the demo's generated data (serving speed does not depend on how well
it is trained), exports it, starts tritonserver on free local ports, then sends one-session
HTTP requests for --seconds at concurrency 1 and 8 (a client per thread), recording every
latency. The same sessions are also answered in-process, one at a time, so the ratio shows
what Triton adds. Writes JSON (see --output). Not a test: run on an idle machine.
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
import pandas as pd
import torch

from bench.common import run_concurrently, write_report
from t4r_app.config import load_config
from t4r_app.data.item_sequences import read_split
from t4r_app.data.synthetic import GenerationSpec
from t4r_app.model.saved_run import load_run
from t4r_app.pipeline import run_pipeline
from t4r_app.serve.export import export_run
from t4r_app.serve.recommender import Recommender
from t4r_app.serve.triton_client import TritonRecommender
from t4r_app.serve.triton_server import TritonServer, free_port

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
TOP_K = 10


def prepare(work: Path) -> tuple[Path, list[list[int]]]:
    config = load_config(DEMO_CONFIG, ["train.epochs=3"])
    spec = GenerationSpec(users=3000, movies=500, seed=7)
    result = run_pipeline(config, work / "raw", work / "data", work / "run", generate=spec, evaluate=False, progress=False)
    mapping = pd.read_parquet(result.data_dir / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    items = read_split(result.data_dir, "test").items
    sessions = [[int(movie_of[i]) for i in items.row(r)] for r in range(len(items))]
    return result.run_dir, sessions


def summarise(latencies: list[float], failures: int, seconds: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failed": failures,
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def load_test(address: str, run_dir: Path, sessions: list[list[int]], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        client = TritonRecommender(address, run_dir, "http")
        mine, index = [], offset
        try:
            while time.perf_counter() < deadline:
                session = sessions[index % len(sessions)]
                index += concurrency
                started = time.perf_counter()
                try:
                    client.recommend([session], top_k=TOP_K)
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
    return {"concurrency": concurrency, **summarise(latencies, failures[0], time.perf_counter() - started)}


def in_process(run_dir: Path, sessions: list[list[int]], count: int) -> dict:
    recommender = Recommender(load_run(run_dir))
    recommender.recommend(sessions[:5], top_k=TOP_K)  # warm-up
    latencies = []
    for session in sessions[:count]:
        started = time.perf_counter()
        recommender.recommend([session], top_k=TOP_K)
        latencies.append(time.perf_counter() - started)
    return summarise(latencies, 0, sum(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="bench/work/serve")
    parser.add_argument("--output", default="bench/results/serve.json")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each load test")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    run_dir, sessions = prepare(work)
    repository = export_run(run_dir, work / "triton", target="cpu", top_k=TOP_K)
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
        "sessions": len(sessions),
        "top_k": TOP_K,
        "seconds_per_test": args.seconds,
    }
    report["in_process"] = in_process(run_dir, sessions, 500)
    print("in-process:", json.dumps(report["in_process"]), flush=True)
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()) as server:
        load_test(server.http_url, run_dir, sessions, 1, 3.0)  # warm-up
        report["triton"] = []
        for concurrency in (1, 8):
            report["triton"].append(load_test(server.http_url, run_dir, sessions, concurrency, args.seconds))
            print("triton:", json.dumps(report["triton"][-1]), flush=True)
    single = report["triton"][0]
    report["p50_ratio_triton_over_in_process"] = round(single["p50_ms"] / report["in_process"]["p50_ms"], 2)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
