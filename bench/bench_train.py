"""Training benchmark: BERT4Rec throughput at max_seq_length 50 and 200, and time to early stopping.

On one generated set of about 1M interactions (25,000 users, 2,000 movies), preprocessed
twice (sequences of at most 50 and at most 200 items):

* throughput: one epoch at each length, timed per optimiser step by a Trainer callback,
  leaving out the first steps (warm-up) and validation; sequences/s = steps x batch / time;
* loaders side by side at length 200: the same model stepping on T4R's merlin loader (every
  batch padded to the window) and on the project's window loader (padded per batch);
* a torch.profiler breakdown of a default training step at each length;
* early stopping: the demo configuration at length 50 until validation NDCG@10 stops
  improving (its patience, 10 validations; at most --max-epochs), then the test metrics of the
  model and the baselines;
* catalogue scaling: the default model's training steps on the same generated short windows
  at 2k, 25k, 50k, 250k and 1M movies, full softmax and sampled softmax side by side, each
  in its own process (``bench/catalogue_step.py``) for its windows/s and peak resident memory;
  the rate at each size is also given as a share of the 2k full-softmax rate.
  ``--catalogue-only`` runs just this part.

Writes JSON (see --output). Not a test: run on an idle machine; check threads in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from bench.common import commit, write_report
from t4r_app.config import load_config
from t4r_app.input_layout.synthetic import GenerationSpec, generate_dataset
from t4r_app.evaluate.protocol import evaluate_run
from t4r_app.pipeline import run_pipeline
from t4r_app.train.trainer import train

USERS, MOVIES = 25_000, 2_000
WARMUP_STEPS = 10
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step, validation excluded."""

    def __init__(self):
        self.durations: list[float] = []
        self._started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._started)


def throughput(raw: Path, data_dir: Path, run_dir: Path, max_length: int) -> dict:
    """Preprocess ``raw`` at ``max_length`` into ``data_dir`` and train one epoch on it, timed."""
    # preprocess reads only the preprocess/split/dask keys, none of which demo.yaml sets
    config = load_config(DEMO_CONFIG, ["train.epochs=1", f"preprocess.max_seq_length={max_length}"])
    timer = StepTimer()
    run_pipeline(config, raw, data_dir, run_dir, evaluate=False, progress=False, callbacks=[timer])
    timed = timer.durations[WARMUP_STEPS:-1]  # the last step may be a short batch
    seconds = sum(timed)
    return {
        "max_seq_length": max_length,
        "batch_size": config.train.batch_size,
        "timed_steps": len(timed),
        "sequences_per_s": round(len(timed) * config.train.batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / len(timed), 2),
    }


def loader_comparison(data_dir: Path, max_length: int, steps: int = 12) -> dict:
    """Training steps per second of one model on T4R's merlin loader (every batch padded to the
    window, last window only) against the project's window loader (padded per batch), interleaved.

    Both feed the same model and optimiser; only the batches differ, so the ratio is the
    loader's effect on the step (padding), measured side by side in one process.
    """
    from transformers4rec.torch.utils.data_utils import T4RecDataLoader

    from t4r_app.model.architecture import build_model, item_schema
    from t4r_app.model.saved_run import load_schema
    from t4r_app.train.trainer import training_loader
    from t4r_app.data.split_views import training_histories

    config = load_config(DEFAULT_CONFIG, [f"preprocess.max_seq_length={max_length}"])
    schema = item_schema(load_schema(data_dir / "train"))
    merlin = T4RecDataLoader.parse("merlin").from_schema(
        schema, str(data_dir / "train"), config.train.batch_size, max_sequence_length=max_length, shuffle=True
    )
    loaders = {"merlin_padded_to_window": merlin, "windows_padded_per_batch": training_loader(config, training_histories(data_dir), max_length)}
    torch.manual_seed(0)
    model = build_model(schema, config.model).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    batches = {name: [batch for _, batch in zip(range(steps + 2), loader)] for name, loader in loaders.items()}
    seconds = {name: 0.0 for name in loaders}
    sequences = {name: 0 for name in loaders}
    columns = {name: [] for name in loaders}
    for step in range(steps + 2):
        for name in loaders:
            inputs, _ = batches[name][step]
            started = time.perf_counter()
            model(inputs, training=True)["loss"].backward()
            optimiser.step()
            optimiser.zero_grad()
            if step >= 2:  # the first steps warm up allocators and kernels
                seconds[name] += time.perf_counter() - started
                sequences[name] += len(inputs["item_id-list"])
                columns[name].append(inputs["item_id-list"].shape[1])
    result = {
        name: {"sequences_per_s": round(sequences[name] / seconds[name], 1), "mean_batch_columns": round(sum(columns[name]) / len(columns[name]), 1)}
        for name in loaders
    }
    result["speedup"] = round(result["windows_padded_per_batch"]["sequences_per_s"] / result["merlin_padded_to_window"]["sequences_per_s"], 2)
    return {"max_seq_length": max_length, **result}


def profile_step(data_dir: Path, max_length: int, steps: int = 4, top: int = 10) -> dict:
    """Where a default training step's time goes: torch.profiler's top operators by own CPU time."""
    from torch.profiler import ProfilerActivity, profile

    from t4r_app.model.architecture import build_model, item_schema
    from t4r_app.model.saved_run import load_schema
    from t4r_app.train.trainer import training_loader
    from t4r_app.data.split_views import training_histories

    config = load_config(DEFAULT_CONFIG, [f"preprocess.max_seq_length={max_length}"])
    schema = item_schema(load_schema(data_dir / "train"))
    torch.manual_seed(0)
    model = build_model(schema, config.model).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    batches = [batch for _, batch in zip(range(steps + 1), training_loader(config, training_histories(data_dir), max_length))]

    def step(inputs):
        model(inputs, training=True)["loss"].backward()
        optimiser.step()
        optimiser.zero_grad()

    step(batches[0][0])
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for inputs, _ in batches[1:]:
            step(inputs)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    return {
        "max_seq_length": max_length,
        "ms_per_step": round(total / 1000 / steps, 1),
        "top_operators": [
            {"name": event.key, "share": round(event.self_cpu_time_total / total, 3), "calls_per_step": event.count // steps}
            for event in events[:top]
        ],
    }


def time_to_early_stop(data_dir: Path, run_dir: Path, max_epochs: int) -> dict:
    config = load_config(DEMO_CONFIG, [f"train.epochs={max_epochs}"])
    started = time.perf_counter()
    result = train(config, data_dir, run_dir, progress=True)
    wall = time.perf_counter() - started
    results = evaluate_run(run_dir, progress=False).to_json()  # eval.json's structure
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


CATALOGUES = (2_000, 25_000, 50_000, 250_000, 1_000_000)
SAMPLED_NEGATIVES = 2_048  # the auto choice for large catalogues (model/auto_settings.py)


def catalogue_scaling(steps: int) -> dict:
    """Windows/s and peak RSS per (catalogue, loss), one process each, in one run."""
    import subprocess
    import sys

    rows = []
    for catalogue in CATALOGUES:
        for sampled in (0, SAMPLED_NEGATIVES):
            command = [sys.executable, "-m", "bench.catalogue_step", "--catalogue", str(catalogue), "--sampled", str(sampled),
                       "--steps", str(steps)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
            if done.returncode != 0:
                rows.append({"catalogue": catalogue, "sampled": sampled, "failed": done.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    baseline = next(row["windows_per_s"] for row in rows if row.get("catalogue") == CATALOGUES[0] and "full" in row.get("loss", ""))
    for row in rows:
        if "windows_per_s" in row:
            row["share_of_2k_full_rate"] = round(row["windows_per_s"] / baseline, 2)
    return {"commit": commit(), "torch_threads": 1, "batch_size": 128, "steps_timed": steps, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="bench/work/train", help="scratch folder for data and runs")
    parser.add_argument("--output", default="bench/results/train.json")
    parser.add_argument("--max-epochs", type=int, default=40, help="cap on the early-stopping run")
    parser.add_argument("--skip-early-stop", action="store_true", help="throughput only")
    parser.add_argument("--catalogue-only", action="store_true",
                        help="only the catalogue-scaling part, written to bench/results/train-catalogue.json")
    parser.add_argument("--catalogue-steps", type=int, default=30, help="timed steps per catalogue size and loss")
    args = parser.parse_args()
    if args.catalogue_only:
        write_report(catalogue_scaling(args.catalogue_steps), Path(args.output).with_name("train-catalogue.json"))
        return
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
        report["throughput"].append(throughput(work / "raw", data_dirs[max_length], work / f"throughput-{max_length}", max_length))
        print(json.dumps(report["throughput"][-1]), flush=True)
    report["loader_comparison"] = loader_comparison(data_dirs[200], 200)
    print(json.dumps(report["loader_comparison"]), flush=True)
    report["profile"] = [profile_step(data_dirs[length], length) for length in (50, 200)]
    print(json.dumps(report["profile"]), flush=True)
    short, long = report["throughput"]
    report["throughput_ratio_50_over_200"] = round(short["sequences_per_s"] / long["sequences_per_s"], 2)
    report["catalogue_scaling"] = catalogue_scaling(args.catalogue_steps)
    if not args.skip_early_stop:
        report["early_stopping"] = time_to_early_stop(data_dirs[50], work / "early-stop", args.max_epochs)
        print(json.dumps(report["early_stopping"]), flush=True)
    write_report(report, args.output)


if __name__ == "__main__":
    main()
