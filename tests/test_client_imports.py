"""A client that only talks to a server loads neither torch nor Merlin: checked in a fresh interpreter.

``tests/test_serving.py`` checks the same while the client asks a real server
(``test_a_client_with_only_the_servers_address_answers_as_with_the_run``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

HEAVY = ("torch", "nvtabular", "merlin", "transformers4rec", "numba")
ROOT = Path(__file__).resolve().parent.parent

# Prints the heavy modules loaded by the end of the snippet it is appended to.
REPORT_HEAVY = f"""
import json, sys
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))))
"""


def heavy_modules_after(snippet: str, arguments: Sequence[str] = (), timeout: float = 300.0) -> tuple[list[str], str]:
    """(heavy top-level modules loaded, everything the snippet printed before) after running
    ``snippet`` with ``arguments`` (its sys.argv[1:]) in a fresh interpreter of this environment."""
    finished = subprocess.run(
        [sys.executable, "-c", snippet + REPORT_HEAVY, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    *printed, last = finished.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed)


def test_the_report_sees_a_heavy_import():
    """The check below can fail: importing the in-process recommender is reported."""
    heavy, _ = heavy_modules_after("import t4r_app.serve.recommender")
    assert "torch" in heavy and "merlin" in heavy


def test_the_client_predict_and_cli_modules_load_nothing_heavy():
    snippet = "import t4r_app.serve.triton_client, t4r_app.serve.predict, t4r_app.serve.contract, t4r_app.cli"
    heavy, _ = heavy_modules_after(snippet)
    assert heavy == []
