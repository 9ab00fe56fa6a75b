"""Batch prediction and evaluation at catalogue size: peak memory against the number of sessions.

Trains a one-epoch model on a generated catalogue of ``--items`` movies (the serving benches'
setup), writes parquet files of generated sessions (raw ids of that catalogue, lengths 1 to 60,
popular movies more often), then runs ``t4r-app predict`` on each size in ``--sessions`` and
``t4r-app evaluate`` on the run's test split, each in its own process, and records wall time,
sessions/s and the process's peak resident memory. Memory that follows the chunk, not the
data, shows as the same peak at 100k and at 1M sessions.

Writes one JSON (see --output). Not a test: minutes to tens of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import commit, write_report
from bench.serve_setup import prepare

WRITE_CHUNK = 100_000  # sessions generated and written at a time


def write_sessions(path: Path, count: int, movies: np.ndarray, weights: np.ndarray, seed: int = 0) -> Path:
    """``count`` sessions of raw movie ids, written ``WRITE_CHUNK`` at a time (the generator stays small too)."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("session_id", pa.int64()), ("movieIndices", pa.list_(pa.int64()))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, count, WRITE_CHUNK):
            size = min(WRITE_CHUNK, count - start)
            lengths = rng.integers(1, 61, size)
            flat = rng.choice(movies, int(lengths.sum()), p=weights)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
            writer.write_table(pa.table({"session_id": np.arange(start, start + size), "movieIndices": column}, schema=schema))
    return path


def run_measured(command: list[str]) -> dict:
    """Run ``command`` in its own process: wall seconds, exit code and its peak RSS (MB)."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest of the waited-for children: measured one at a
    # time, in a fresh python each (see main), it is this command's own peak.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1), "stdout_tail": done.stdout.strip().splitlines()[-3:]}


def measure_one(command: list[str]) -> dict:
    """``run_measured`` in a fresh interpreter, so that RUSAGE_CHILDREN holds that command alone."""
    probe = f"import json, sys; from bench.bench_predict import run_measured; print(json.dumps(run_measured({command!r})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=50_000, help="catalogue size (default: 50000)")
    parser.add_argument("--sessions", default="100000,1000000", help="session counts to predict, comma-separated")
    parser.add_argument("--work", default="bench/work/predict")
    parser.add_argument("--output", default="bench/results/predict.json")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run_dir, _ = prepare(work, args.items)
    mapping = pd.read_parquet(run_dir.parent / "data" / "item_mapping.parquet")
    watched = mapping[mapping["interactions"] > 0]
    weights = watched["interactions"].to_numpy(dtype=float)
    report: dict = {
        "commit": commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "movies": args.items,
        "predict": [],
    }
    app = [sys.executable, "-m", "t4r_app"]
    for count in (int(size) for size in args.sessions.split(",")):
        sessions = write_sessions(work / f"sessions_{count}.parquet", count, watched["movie_index"].to_numpy(), weights / weights.sum())
        output = work / f"predictions_{count}.jsonl"
        measured = measure_one([*app, "predict", "--run", str(run_dir), "--input", str(sessions), "--output", str(output), "--quiet"])
        lines = sum(1 for _ in open(output))
        measured.update(sessions=count, answered=lines, sessions_per_s=round(count / measured["seconds"], 1))
        report["predict"].append(measured)
        print("predict:", json.dumps(measured), flush=True)
        output.unlink()
        sessions.unlink()
    report["evaluate"] = measure_one([*app, "evaluate", "--run", str(run_dir), "--quiet"])
    print("evaluate:", json.dumps(report["evaluate"]), flush=True)
    write_report(report, args.output)


def markdown(report: dict) -> str:
    """The README's batch table: sessions, time, throughput and peak memory per command."""
    lines = [
        f"{report['movies']:,} movies, {report['machine']['cpus']} cores, commit {report['commit']}.",
        "",
        "| command | sessions | seconds | sessions/s | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for row in report["predict"]:
        lines.append(f"| predict | {row['sessions']:,} | {row['seconds']:,.0f} | {row['sessions_per_s']:,.0f} | {row['peak_rss_mb']:,.0f} |")
    evaluated = report["evaluate"]
    lines.append(f"| evaluate (test split) | | {evaluated['seconds']:,.0f} | | {evaluated['peak_rss_mb']:,.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
