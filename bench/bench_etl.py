"""ETL benchmark: generate N interactions, run `t4r-app preprocess` on them, record time and memory.

Each preprocess runs in its own process; peak RSS is sampled over that process and its
children (dask workers included). Writes JSON (see --output). Not a test: run on an idle machine.

With --cluster N, each size is preprocessed on a `dask scheduler` and N `dask worker` processes
started for it (fresh ones per size, so no size inherits another's memory), through
`dask.scheduler_address`; the peak RSS of each worker process is recorded apart from the client's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.common import write_report
from tests.dask_processes import (
    dask_processes,  # shared with tests/test_distributed.py: run as `python -m bench.bench_etl`
)

MEAN_INTERACTIONS_PER_USER = 40
MOVIES = 20_000


def _rss(process: psutil.Process, tree: bool) -> int:
    try:
        members = [process, *process.children(recursive=True)] if tree else [process]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def _run_with_peak_rss(command: list[str], workers: dict[str, int] | None = None) -> tuple[float, float, dict[str, float]]:
    """Run command; return (wall seconds, peak RSS in MiB over its process tree, {worker: peak RSS in MiB}).

    workers, {name: pid}, are processes outside the command's tree (a cluster's), sampled alongside.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    others = {name: psutil.Process(pid) for name, pid in (workers or {}).items()}
    peak, peaks = 0, dict.fromkeys(others, 0)
    while process.poll() is None:
        peak = max(peak, _rss(watched, tree=True))
        for name, other in others.items():
            peaks[name] = max(peaks[name], _rss(other, tree=False))
        time.sleep(0.2)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return time.perf_counter() - started, peak / 2**20, {name: round(rss / 2**20) for name, rss in peaks.items()}


def bench_size(interactions: int, work: Path, cluster_workers: int = 0, worker_memory: str = "4GB") -> dict:
    raw, data = work / f"raw-{interactions}", work / f"data-{interactions}"
    users = interactions // MEAN_INTERACTIONS_PER_USER
    app = [sys.executable, "-m", "t4r_app"]
    generate_s, _, _ = _run_with_peak_rss(
        [*app, "generate", "--output", str(raw), "--users", str(users), "--movies", str(MOVIES), "--seed", "1"]
    )
    preprocess = [*app, "preprocess", "--input", str(raw), "--output", str(data)]
    cluster = None
    if cluster_workers:
        wall, peak_mib, cluster = _preprocess_on_cluster(preprocess, cluster_workers, worker_memory, work / f"dask-{interactions}")
    else:
        wall, peak_mib, _ = _run_with_peak_rss(preprocess)
    stats = json.loads((data / "stats.json").read_text())
    result = {
        "interactions": stats["interactions_read"],
        "records": stats["records_read"],
        "users": stats["users"],
        "generate_s": round(generate_s, 2),
        "preprocess_wall_s": round(wall, 2),
        "interactions_per_s": round(stats["interactions_read"] / wall),
        # On a cluster, the client alone: it reads the records and gathers the stats.
        "client_peak_rss_mib" if cluster else "peak_rss_mib": round(peak_mib),
        "stage_timings_s": stats["timings_s"],
    }
    if cluster:
        result["cluster"] = cluster
    return result


def _preprocess_on_cluster(command: list[str], n_workers: int, memory_limit: str, work: Path) -> tuple[float, float, dict]:
    """Run preprocess on a fresh scheduler and n_workers; return (wall s, client peak MiB, the workers' figures)."""
    with dask_processes(n_workers, work, memory_limit=memory_limit) as cluster:
        pids = cluster.worker_pids()
        wall, peak_mib, worker_peaks = _run_with_peak_rss([*command, f"dask.scheduler_address={cluster.address}"], pids)
        # A worker the nanny restarted (memory limit) has a new pid: its peak would be understated.
        restarted = sorted(name for name, pid in cluster.worker_pids().items() if pids.get(name) != pid)
        tasks = cluster.tasks_executed()
    return wall, peak_mib, {
        "workers": n_workers,
        "threads_per_worker": 1,
        "memory_limit_per_worker": memory_limit,
        "worker_peak_rss_mib": worker_peaks,
        "max_worker_peak_rss_mib": max(worker_peaks.values()),
        "tasks_per_worker": tasks,
        "workers_restarted": restarted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", default="bench/work", help="scratch folder for generated data")
    parser.add_argument("--output", help="default bench/results/etl.json, or etl-cluster.json with --cluster")
    parser.add_argument("--cluster", type=int, default=0, metavar="N", help="run on a scheduler and N worker processes")
    parser.add_argument("--worker-memory", default="4GB", help="--memory-limit of each worker with --cluster")
    args = parser.parse_args()
    args.output = args.output or f"bench/results/etl{'-cluster' if args.cluster else ''}.json"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in args.sizes:
        print(f"benchmarking {size:,} interactions ...", flush=True)
        results[str(size)] = bench_size(size, work, args.cluster, args.worker_memory)
        print(json.dumps(results[str(size)], indent=2), flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "sizes": results,
    }
    if len(args.sizes) >= 2:
        small, large = results[str(args.sizes[0])], results[str(args.sizes[-1])]
        report["time_ratio_largest_over_smallest"] = round(large["preprocess_wall_s"] / small["preprocess_wall_s"], 2)
        report["size_ratio"] = args.sizes[-1] / args.sizes[0]
    write_report(report, args.output)


if __name__ == "__main__":
    main()
