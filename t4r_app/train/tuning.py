"""Grid search of the mask probability (and optionally the forced-last-item share) on validation.

Each setting is a full training run with early stopping under ``OUTPUT/trials/``; only
validation NDCG@10 decides, so the test split stays unseen. Writes ``OUTPUT/tune.csv``,
``OUTPUT/tune.png`` and ``OUTPUT/best_config.yaml`` (the input config with the winner).
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

from t4r_app.config import AppConfig, save_config
from t4r_app.errors import TrainingError
from t4r_app.model.saved_run import CHECKPOINTS
from t4r_app.plotting import pyplot
from t4r_app.train.trainer import last_complete_checkpoint, train

CSV_FILE = "tune.csv"
PLOT_FILE = "tune.png"
BEST_CONFIG = "best_config.yaml"


@dataclass
class Trial:
    mask_probability: float
    last_item_mask_share: float
    valid_ndcg_at_10: float
    best_epoch: float
    train_seconds: float
    run_dir: str


def format_trials(trials: list[Trial], best: AppConfig, output: str | Path) -> str:
    """What ``tune`` prints: every trial, then the winner and where the files are."""
    lines = ["mask_probability  last_item_share  valid NDCG@10  best epoch"]
    lines += [f"{t.mask_probability:16g}  {t.last_item_mask_share:15g}  {t.valid_ndcg_at_10:13.4f}  {t.best_epoch:10g}"
              for t in trials]
    lines.append(
        f"best: mask_probability={best.model.mask_probability:g} last_item_mask_share={best.model.last_item_mask_share:g}; "
        f"wrote {Path(output) / CSV_FILE} and {Path(output) / BEST_CONFIG}"
    )
    return "\n".join(lines)


def grid(config: AppConfig) -> list[tuple[float, float]]:
    shares = config.tune.last_item_mask_shares or [config.model.last_item_mask_share]
    return [(p, s) for p in config.tune.mask_probabilities for s in shares]


def tune(config: AppConfig, data_dir: str | Path, output: str | Path, progress: bool = True) -> tuple[list[Trial], AppConfig]:
    if config.model.architecture != "bert4rec":
        raise TrainingError(
            f"tune searches BERT4Rec's mask probability and last-item share; model.architecture="
            f"{config.model.architecture} has no masking to tune: train it directly"
        )
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    trials: list[Trial] = []
    settings = grid(config)
    for index, (probability, share) in enumerate(settings, start=1):
        run_dir = output / "trials" / f"mask{probability:g}_last{share:g}"
        print(f"tune: trial {index}/{len(settings)}: mask_probability={probability:g} last_item_mask_share={share:g}")
        resume = last_complete_checkpoint(run_dir / CHECKPOINTS) is not None
        result = train(_with_masking(config, probability, share), data_dir, run_dir, resume=resume, progress=progress)
        trials.append(
            Trial(probability, share, round(result.best_valid_ndcg, 6), result.best_epoch, result.train_seconds, str(run_dir))
        )
        _write_csv(trials, output / CSV_FILE)
    best = max(trials, key=lambda trial: trial.valid_ndcg_at_10)
    best_config = _with_masking(config, best.mask_probability, best.last_item_mask_share)
    save_config(best_config, output / BEST_CONFIG)
    _plot(trials, output / PLOT_FILE)
    return trials, best_config


def _with_masking(config: AppConfig, mask_probability: float, last_item_mask_share: float) -> AppConfig:
    """A copy of ``config`` with these masking settings."""
    changed = copy.deepcopy(config)
    changed.model.mask_probability = mask_probability
    changed.model.last_item_mask_share = last_item_mask_share
    return changed


def _write_csv(trials: list[Trial], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(Trial.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(trial.__dict__ for trial in trials)


def _plot(trials: list[Trial], path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.8))
    for share in sorted({t.last_item_mask_share for t in trials}):
        points = sorted((t.mask_probability, t.valid_ndcg_at_10) for t in trials if t.last_item_mask_share == share)
        axis.plot(*zip(*points), marker="o", label=f"last-item share {share:g}")
    axis.set_xlabel("mask probability")
    axis.set_ylabel("validation NDCG@10")
    axis.legend(fontsize=8)
    axis.set_title("Mask probability grid (validation)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
