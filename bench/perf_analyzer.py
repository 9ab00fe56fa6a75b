"""Triton's own load generator, ``perf_analyzer`` (shipped in the tritonclient wheel), run on real sessions.

The binary needs two shared libraries the wheel does not carry under the names it asks for:
``libb64.so.0d`` (in the nvidia-pytriton wheel, under a hashed name) and ``libcudart.so.12``
(the nvidia-cuda-runtime-cu12 wheel, which `make setup` installs; loaded even for CPU-only
serving). Both are linked into a folder under the work directory that LD_LIBRARY_PATH names.

Requests come from an ``--input-data`` file of real sessions in the ragged values/offsets
pair the ensemble takes, so perf_analyzer sends what the project's own clients send.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from t4r_app.serve.contract import ENSEMBLE_NAME, OFFSETS_INPUT, VALUES_INPUT, encode_request

# perf_analyzer's CSV columns (microseconds) under the names this bench reports (milliseconds).
COLUMNS = {
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
}


def binary() -> Path:
    found = shutil.which("perf_analyzer", path=str(Path(sys.executable).parent))
    if not found:
        raise RuntimeError("perf_analyzer is not in this environment (it comes with the tritonclient wheel)")
    return Path(found)


def library_dir(work: Path) -> Path:
    """A folder holding the two libraries under the names perf_analyzer links against."""
    # nvidia-pytriton's libraries and nvidia-cuda-runtime-cu12's sit in the same site-packages
    # (found without importing pytriton, whose own dependencies are not installed).
    site = Path(importlib.util.find_spec("pytriton").submodule_search_locations[0]).parent
    found = {
        "libb64.so.0d": next(iter(sorted((site / "nvidia_pytriton.libs").glob("libb64*.so.0d"))), None),
        "libcudart.so.12": next(iter(sorted(site.glob("nvidia/cuda_runtime/lib/libcudart.so.12"))), None),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise RuntimeError(f"perf_analyzer needs {', '.join(missing)}: run `make setup` (nvidia-pytriton, nvidia-cuda-runtime-cu12)")
    folder = work / "perf_analyzer_libs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    return folder


def write_input_data(requests: list[list[list[int]]], path: Path) -> Path:
    """perf_analyzer's JSON input: one entry per request, each a batch of sessions."""
    entries = []
    for sessions in requests:
        values, offsets = encode_request(sessions)
        entries.append(
            {
                VALUES_INPUT: {"content": values.tolist(), "shape": [len(values)]},
                OFFSETS_INPUT: {"content": offsets.tolist(), "shape": [len(offsets)]},
            }
        )
    path.write_text(json.dumps({"data": entries}))
    return path


def measure(
    work: Path, address: str, transport: str, input_data: Path, concurrency: int, interval_ms: int = 5000, timeout: float = 300
) -> dict:
    """One perf_analyzer run at ``concurrency``: throughput, latency percentiles and its server-side split (ms)."""
    report = work / f"perf_{transport}_{input_data.stem}_c{concurrency}.csv"
    command = [
        str(binary()),
        "-m", ENSEMBLE_NAME,
        "-u", address,
        "-i", transport,
        "--input-data", str(input_data),
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(interval_ms),
        "--max-trials", "10",
        "--stability-percentage", "25",  # a shared 2-core machine does not hold 10%
        "-f", str(report),
    ]  # fmt: skip
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join([str(library_dir(work)), os.environ.get("LD_LIBRARY_PATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0 or not report.is_file():
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    row = next(csv.DictReader(report.open()))
    result = {"concurrency": concurrency, "requests_per_s": round(float(row["Inferences/Second"]), 1)}
    result.update({name: round(float(row[column]) / 1000, 3) for column, name in COLUMNS.items() if column in row})
    result["stable"] = "Failed to obtain stable measurement" not in done.stdout + done.stderr
    return result
