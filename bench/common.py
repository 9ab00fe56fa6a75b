"""What every benchmark does the same way: write its JSON report, run workers side by side."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def write_report(report: dict, output: str | Path) -> None:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"wrote {output}")


def run_concurrently(worker: Callable[[int], None], count: int) -> None:
    """``worker(0)`` ... ``worker(count - 1)`` in threads at once; returns when all have finished."""
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def commit() -> str:
    """The measured code: HEAD, marked dirty when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT).stdout
    return f"{head or 'unknown'}{'-dirty' if dirty.strip() else ''}"
