"""ETL benchmark: generate N interactions, run `t4r-app preprocess` on them, record time and memory.

Each preprocess runs in its own process; peak RSS is sampled over that process and its
children (dask workers included). Writes JSON (see --output). Not a test: run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil

MEAN_INTERACTIONS_PER_USER = 40
MOVIES = 20_000


def _run_with_peak_rss(command: list[str]) -> tuple[float, float]:
    """Run command; return (wall seconds, peak RSS in MiB over the process tree)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return time.perf_counter() - started, peak / 2**20


def bench_size(interactions: int, work: Path) -> dict:
    raw, data = work / f"raw-{interactions}", work / f"data-{interactions}"
    users = interactions // MEAN_INTERACTIONS_PER_USER
    app = [sys.executable, "-m", "t4r_app"]
    generate_s, _ = _run_with_peak_rss(
        [*app, "generate", "--output", str(raw), "--users", str(users), "--movies", str(MOVIES), "--seed", "1"]
    )
    wall, peak_mib = _run_with_peak_rss([*app, "preprocess", "--input", str(raw), "--output", str(data)])
    stats = json.loads((data / "stats.json").read_text())
    return {
        "interactions": stats["interactions_read"],
        "records": stats["records_read"],
        "users": stats["users"],
        "generate_s": round(generate_s, 2),
        "preprocess_wall_s": round(wall, 2),
        "interactions_per_s": round(stats["interactions_read"] / wall),
        "peak_rss_mib": round(peak_mib),
        "stage_timings_s": stats["timings_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work", default="bench/work", help="scratch folder for generated data")
    parser.add_argument("--output", default="bench/results/etl.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for size in args.sizes:
        print(f"benchmarking {size:,} interactions ...", flush=True)
        results[str(size)] = bench_size(size, work)
        print(json.dumps(results[str(size)], indent=2), flush=True)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "sizes": results,
    }
    if len(args.sizes) >= 2:
        small, large = results[str(args.sizes[0])], results[str(args.sizes[-1])]
        report["time_ratio_largest_over_smallest"] = round(large["preprocess_wall_s"] / small["preprocess_wall_s"], 2)
        report["size_ratio"] = args.sizes[-1] / args.sizes[0]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
