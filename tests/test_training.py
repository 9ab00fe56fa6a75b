"""Training through T4R's Trainer on tiny generated data: files, loss, resume, determinism, errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import FOUR_EPOCHS, tiny_config
from transformers import TrainerCallback

from t4r_app.errors import TrainingError
from t4r_app.model.saved_run import MODEL_DIR, WEIGHTS, load_run
from t4r_app.train.trainer import train


def _log(run_dir):
    with open(run_dir / "training_log.csv") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_its_files_and_the_loss_falls(tiny_run):
    for name in ("config.yaml", "run.json", "metrics.json", "training_log.csv", "training_curves.png"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / MODEL_DIR / WEIGHTS).is_file()
    rows = _log(tiny_run)
    losses = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(r["valid_ndcg@10"] for r in rows)  # validated every epoch
    elapsed = [float(r["elapsed_s"]) for r in rows]  # seconds of training when each row was logged
    assert elapsed == sorted(elapsed) and 0 < elapsed[-1] <= json.loads((tiny_run / "metrics.json").read_text())["train_seconds"]
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    best = max(float(r["valid_ndcg@10"]) for r in rows)
    assert metrics["best_valid_ndcg"] == pytest.approx(best)
    # The learned seen-item weight is the saved model's, and training moved it from its start at 0.
    head = load_run(tiny_run).model.heads[0].prediction_task_dict["next-item"]
    assert metrics["learned"]["seen_item_weight"] == pytest.approx(float(head.seen_weight), abs=1e-4)
    assert metrics["learned"]["seen_item_weight"] != 0


def test_saved_model_reloads_with_the_same_weights(tiny_run):
    run = load_run(tiny_run)
    saved = torch.load(tiny_run / MODEL_DIR / WEIGHTS)
    assert all(torch.equal(saved[name], value) for name, value in run.model.state_dict().items())
    assert not run.model.training


class _StopAfter(TrainerCallback):
    """Interrupts training after an epoch, as a crash after the checkpoint would."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch >= self.epochs:
            control.should_training_stop = True


def _final_weights(run_dir):
    return torch.load(run_dir / MODEL_DIR / WEIGHTS)


def test_same_seed_same_run_and_resume_continues_exactly(tiny_data, four_epoch_run, tmp_path):
    config = tiny_config(*FOUR_EPOCHS)
    again = train(config, tiny_data, tmp_path / "b", progress=False)
    assert again.best_valid_ndcg == json.loads((four_epoch_run / "metrics.json").read_text())["best_valid_ndcg"]
    assert [r["valid_ndcg@10"] for r in _log(four_epoch_run)] == [r["valid_ndcg@10"] for r in _log(tmp_path / "b")]

    interrupted = train(config, tiny_data, tmp_path / "c", progress=False, callbacks=[_StopAfter(2)])
    assert interrupted.epochs_run == 2
    resumed = train(config, tiny_data, tmp_path / "c", resume=True, progress=False)
    assert resumed.epochs_run == 4
    assert [r["valid_ndcg@10"] for r in _log(tmp_path / "c")] == [r["valid_ndcg@10"] for r in _log(four_epoch_run)]
    a, c = _final_weights(four_epoch_run), _final_weights(tmp_path / "c")
    assert all(torch.allclose(a[name], c[name], atol=1e-6) for name in a)


def test_early_stopping_stops_and_keeps_the_best_epoch(tiny_data, tmp_path):
    # A learning rate this high makes validation worse, so patience runs out quickly.
    config = tiny_config(
        "train.epochs=30", "train.patience=2", "train.min_epochs=3", "train.learning_rate=0.5", "train.warmup_steps=0"
    )
    result = train(config, tiny_data, tmp_path / "run", progress=False)
    assert result.stopped_early and result.epochs_run < 30
    rows = _log(tmp_path / "run")
    scores = [float(r["valid_ndcg@10"]) for r in rows]
    best = scores.index(max(scores))
    assert len(scores) - 1 - best == 2 or result.epochs_run == config.train.min_epochs  # patience ran out...
    assert result.epochs_run >= config.train.min_epochs  # ...but never before min_epochs
    assert result.best_epoch == float(rows[best]["epoch"])


def test_min_epochs_carries_training_past_a_plateau_and_the_budget_stops_it(tiny_data, tmp_path):
    config = tiny_config("train.epochs=12", "train.patience=1", "train.min_epochs=6",
                         "train.learning_rate=0.5", "train.warmup_steps=0")
    assert train(config, tiny_data, tmp_path / "patient", progress=False).epochs_run >= 6
    budget = tiny_config("train.epochs=50", "train.patience=0", "train.time_budget_s=0.01")
    result = train(budget, tiny_data, tmp_path / "budget", progress=False)
    assert result.epochs_run == 1 and result.stopped_early  # the first validation is past the budget


def test_refuses_to_overwrite_a_run_or_resume_nothing(tiny_data, tiny_run_copy, tmp_path):
    with pytest.raises(TrainingError, match="already holds a run"):
        train(tiny_config(), tiny_data, tiny_run_copy, progress=False)  # a copy: a failure would overwrite it
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(tiny_config(), tiny_data, tmp_path / "new", resume=True, progress=False)
    with pytest.raises(TrainingError, match="output of `t4r-app preprocess`"):
        train(tiny_config(), tmp_path, tmp_path / "other", progress=False)
