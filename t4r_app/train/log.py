"""The training log (CSV, rewritten from the Trainer's history) and the training curves plot."""

from __future__ import annotations

import csv
import time
from pathlib import Path

from transformers import TrainerCallback

from t4r_app.model.architecture import trainer_metric
from t4r_app.model.saved_run import MONITOR_METRIC
from t4r_app.plotting import pyplot

LOG_FILE = "training_log.csv"
CURVES_FILE = "training_curves.png"
COLUMNS = ["epoch", "step", "train_loss", "learning_rate", "valid_loss", "valid_ndcg@10", "valid_hr@10", "elapsed_s"]
ELAPSED = "elapsed_s"  # seconds of training when the entry was logged (TrainingLog adds it)
_SOURCES = {
    "train_loss": "loss",
    "learning_rate": "learning_rate",
    "valid_loss": "eval_/loss",
    "valid_ndcg@10": MONITOR_METRIC,
    "valid_hr@10": trainer_metric("recall"),
    ELAPSED: ELAPSED,
}


def history_rows(log_history: list[dict]) -> list[dict]:
    """One row per logged step, joining the training-loss and validation entries of that step."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "step" not in entry or not any(source in entry for source in _SOURCES.values() if source != ELAPSED):
            continue
        row = rows.setdefault(entry["step"], {column: "" for column in COLUMNS})
        row["step"] = entry["step"]
        row["epoch"] = round(float(entry.get("epoch", 0.0)), 3)
        for column, source in _SOURCES.items():
            if source in entry:
                row[column] = entry[source]
    return [rows[step] for step in sorted(rows)]


def write_log(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(rows: list[dict], path: Path, label: str = "model") -> None:
    plt = pyplot()
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    train = [(r["epoch"], r["train_loss"]) for r in rows if r["train_loss"] != ""]
    valid = [(r["epoch"], r["valid_ndcg@10"]) for r in rows if r["valid_ndcg@10"] != ""]
    if train:
        loss_axis.plot(*zip(*train), color="tab:blue", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    ndcg_axis = loss_axis.twinx()
    if valid:
        ndcg_axis.plot(*zip(*valid), color="tab:orange", marker=".", label="validation NDCG@10")
    ndcg_axis.set_ylabel("validation NDCG@10", color="tab:orange")
    figure.suptitle(f"{label} training")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class TrainingLog(TrainerCallback):
    """Keeps RUN_DIR/training_log.csv current after every log, and plots the curves at the end.

    Each logged entry gets the seconds of training so far (``elapsed_s``), written into the
    Trainer's history itself so that checkpoints keep it: a resumed run counts on from there.
    The time to reach a validation score is read from this column (the warm-start benchmark).
    """

    def __init__(self, run_dir: Path, label: str = "model"):
        self.run_dir = Path(run_dir)
        self.label = label  # the plot's title: the architecture's name (architecture.model_label)
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        earlier = [entry[ELAPSED] for entry in state.log_history if ELAPSED in entry]
        self.started = time.perf_counter() - (earlier[-1] if earlier else 0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history:
            state.log_history[-1][ELAPSED] = round(time.perf_counter() - self.started, 2)
        write_log(history_rows(state.log_history), self.run_dir / LOG_FILE)

    def on_train_end(self, args, state, control, **kwargs):
        rows = history_rows(state.log_history)
        write_log(rows, self.run_dir / LOG_FILE)
        plot_curves(rows, self.run_dir / CURVES_FILE, self.label)


class TrainingProgress(TrainerCallback):
    """One progress bar over the optimiser steps and one line per validation.

    It replaces the Trainer's own bar, which prints every log as a raw dictionary.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", disable=not self.enabled)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.bar.set_postfix_str(f"loss {logs['loss']:.3f}")
        if MONITOR_METRIC in logs and self.enabled:
            best = max(entry[MONITOR_METRIC] for entry in state.log_history if MONITOR_METRIC in entry)
            self.bar.write(
                f"epoch {state.epoch:g}: validation NDCG@10 {logs[MONITOR_METRIC]:.4f} "
                f"HR@10 {logs.get(trainer_metric('recall'), float('nan')):.4f} (best {best:.4f})"
            )

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()
