"""Training benchmark: BERT4Rec throughput at max_seq_length 50 and 200, and time to early stopping.

On one generated set of about 1M interactions (25,000 users, 2,000 movies), preprocessed
twice (sequences of at most 50 and at most 200 items):

* throughput: one epoch at each length, timed per optimiser step by a Trainer callback,
  leaving out the first steps (warm-up) and validation; sequences/s = steps x batch / time;
* early stopping: the demo configuration at length 50 until validation NDCG@10 stops
  improving (its patience, 10 validations; at most --max-epochs), then the test metrics of the
  model and the baselines.

Writes JSON (see --output). Not a test: run on an idle machine; check threads in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from t4r_app.config import load_config  # noqa: E402
from t4r_app.evaluation import evaluate_run  # noqa: E402
from t4r_app.preprocess import preprocess  # noqa: E402
from t4r_app.synthetic import GenerationSpec, generate_dataset  # noqa: E402
from t4r_app.training import train  # noqa: E402

USERS, MOVIES = 25_000, 2_000
WARMUP_STEPS = 10
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step, validation excluded."""

    def __init__(self):
        self.durations: list[float] = []
        self._started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._started)


def throughput(data_dir: Path, run_dir: Path, max_length: int) -> dict:
    config = load_config(DEMO_CONFIG, ["train.epochs=1"])
    timer = StepTimer()
    train(config, data_dir, run_dir, progress=False, callbacks=[timer])
    timed = timer.durations[WARMUP_STEPS:-1]  # the last step may be a short batch
    seconds = sum(timed)
    return {
        "max_seq_length": max_length,
        "batch_size": config.train.batch_size,
        "timed_steps": len(timed),
        "sequences_per_s": round(len(timed) * config.train.batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / len(timed), 2),
    }


def time_to_early_stop(data_dir: Path, run_dir: Path, max_epochs: int) -> dict:
    config = load_config(DEMO_CONFIG, [f"train.epochs={max_epochs}"])
    started = time.perf_counter()
    result = train(config, data_dir, run_dir, progress=True)
    wall = time.perf_counter() - started
    results = evaluate_run(run_dir, progress=False)
    test = results["test"]
    return {
        "wall_s": round(wall, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "patience": config.train.patience,
        "best_valid_ndcg@10": round(result.best_valid_ndcg, 4),
        "test_ndcg@10": {
            "bert4rec": round(test["model"]["full"]["ndcg@10"], 4),
            "markov": round(test["baselines"]["markov"]["full"]["ndcg@10"], 4),
            "most_popular": round(test["baselines"]["most_popular"]["full"]["ndcg@10"], 4),
        },
        "test_hr@10": {
            "bert4rec": round(test["model"]["full"]["hr@10"], 4),
            "markov": round(test["baselines"]["markov"]["full"]["hr@10"], 4),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="bench/work/train", help="scratch folder for data and runs")
    parser.add_argument("--output", default="bench/results/train.json")
    parser.add_argument("--max-epochs", type=int, default=40, help="cap on the early-stopping run")
    parser.add_argument("--skip-early-stop", action="store_true", help="throughput only")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    generation = generate_dataset(GenerationSpec(users=USERS, movies=MOVIES, seed=1), work / "raw")
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "data": {"users": USERS, "movies": MOVIES, "interactions": generation.interactions},
        "throughput": [],
    }
    data_dirs = {}
    for max_length in (50, 200):
        data_dirs[max_length] = work / f"data-{max_length}"
        preprocess(load_config(None, [f"preprocess.max_seq_length={max_length}"]), str(work / "raw"), data_dirs[max_length])
        report["throughput"].append(throughput(data_dirs[max_length], work / f"throughput-{max_length}", max_length))
        print(json.dumps(report["throughput"][-1]), flush=True)
    short, long = report["throughput"]
    report["throughput_ratio_50_over_200"] = round(short["sequences_per_s"] / long["sequences_per_s"], 2)
    if not args.skip_early_stop:
        report["early_stopping"] = time_to_early_stop(data_dirs[50], work / "early-stop", args.max_epochs)
        print(json.dumps(report["early_stopping"]), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
