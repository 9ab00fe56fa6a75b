"""Mask-probability grid search on a 2-point grid, through the command line."""

from __future__ import annotations

import csv

from conftest import TINY_MODEL

from t4r_app.cli import main
from t4r_app.config import load_config


def test_two_point_grid_picks_the_best_on_validation(tiny_data, tmp_path, capsys):
    overrides = [*TINY_MODEL, "train.epochs=2", "tune.mask_probabilities=[0.15, 0.4]"]
    assert main(["tune", "--data", str(tiny_data), "--output", str(tmp_path), "--quiet", *overrides]) == 0
    with open(tmp_path / "tune.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert [float(t["mask_probability"]) for t in trials] == [0.15, 0.4]
    best = max(trials, key=lambda t: float(t["valid_ndcg_at_10"]))
    chosen = load_config(tmp_path / "best_config.yaml")
    assert chosen.model.mask_probability == float(best["mask_probability"])
    assert chosen.model.d_model == 32  # the rest of the config is kept
    assert (tmp_path / "tune.png").stat().st_size > 1000
    for trial in trials:  # each trial is a complete run, trained with its own setting
        assert load_config(f"{trial['run_dir']}/config.yaml").model.mask_probability == float(trial["mask_probability"])
    assert "best: mask_probability=" in capsys.readouterr().out


def test_tune_refuses_sasrec_which_has_no_masking(tiny_data, tmp_path, capsys):
    code = main(["tune", "--data", str(tiny_data), "--output", str(tmp_path), "--quiet", "model.architecture=sasrec"])
    assert code == 1
    assert "model.architecture=sasrec has no masking to tune" in capsys.readouterr().err
    assert not (tmp_path / "trials").exists()
