"""An independent recomputation of a run's test NDCG@10 over every user, through ``predict``.

``evaluate`` builds its test rows with the split machinery (``workflow.splits``, the parquet
splits). This check does not: it reads the checked interactions ``preprocess`` wrote
(``DATA_DIR/interactions/``), orders each user's by time, takes the last movie as the target and
everything before it as the session, answers every session with ``t4r-app predict`` (seen
movies kept, as in evaluate's ``full`` ranking) and scores the answers itself. Users with one
interaction have no session and are counted apart. On leave-one-out data with
``preprocess.sequence_by=user`` both should agree to rounding (ties are broken differently).

    python -m bench.every_user_check --run RUN_DIR [--data DATA_DIR]

Prints both figures and the users each covers. Not a test: it runs a whole prediction.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

TOP_K = 10


def user_sessions(data_dir: Path) -> tuple[list[list[int]], np.ndarray, int]:
    """(sessions of raw movie ids, their targets, users with one interaction) from the interactions."""
    interactions = pd.read_parquet(data_dir / "interactions")
    interactions = interactions.sort_values(["user_index", "timestamp", "event_order"], kind="stable")
    sessions, targets, single = [], [], 0
    for movies in interactions.groupby("user_index", sort=True)["movie_index"]:
        movies = movies[1].to_numpy()
        if len(movies) < 2:
            single += 1
            continue
        sessions.append(movies[:-1].tolist())
        targets.append(int(movies[-1]))
    return sessions, np.array(targets), single


def ndcg_at_k(answers: list[list[int]], targets: np.ndarray, k: int = TOP_K) -> float:
    gains = [1.0 / np.log2(answer.index(target) + 2) if target in answer[:k] else 0.0 for answer, target in zip(answers, targets)]
    return float(np.mean(gains))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="the run's DATA_DIR (default: from run.json)")
    args = parser.parse_args()
    data_dir = args.data or Path(json.loads((args.run / "run.json").read_text())["data_dir"])
    sessions, targets, single = user_sessions(data_dir)
    with tempfile.TemporaryDirectory() as work:
        source, output = Path(work) / "sessions.jsonl", Path(work) / "answers.jsonl"
        source.write_text("".join(json.dumps({"session_id": i, "movieIndices": s}) + "\n" for i, s in enumerate(sessions)))
        subprocess.run([sys.executable, "-m", "t4r_app", "predict", "--run", str(args.run), "--input", str(source),
                        "--output", str(output), "--top-k", str(TOP_K), "--keep-seen", "--quiet"], check=True)
        answers = [json.loads(line)["movieIndices"] for line in output.read_text().splitlines()]
    evaluated = json.loads((args.run / "eval.json").read_text())["test"]["model"]["full"]
    print(f"every user through predict: test NDCG@{TOP_K} {ndcg_at_k(answers, targets):.4f} over {len(targets):,} users "
          f"({single:,} with one interaction: no session)")
    print(f"evaluate (eval.json):        test NDCG@{TOP_K} {evaluated[f'ndcg@{TOP_K}']:.4f} over {evaluated['count']:,} users")


if __name__ == "__main__":
    main()
