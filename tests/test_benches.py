"""The benchmarks' own plumbing: they run, say what they skip, and summarise seeds honestly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.bench_quality import compared_with_default, data_name, data_overrides, markdown, summary, training_overrides, variant_row
from bench.readme_tables import with_tables

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a fresh interpreter
def test_quality_bench_says_where_video_games_is_expected(tmp_path):
    missing = tmp_path / "nowhere" / "recommandation.zip"
    done = subprocess.run([sys.executable, "-m", "bench.bench_quality", "--dataset", "video-games", "--input", str(missing)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and f"expected at {missing}" in done.stdout


@pytest.mark.slow  # a fresh interpreter
def test_quality_bench_refuses_to_write_a_partial_run_over_the_full_file():
    done = subprocess.run([sys.executable, "-m", "bench.bench_quality", "--only", "sasrec"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "own --output" in done.stderr


def test_seed_summary_keeps_mean_spread_and_every_value():
    values = summary([{"ndcg": 0.10}, {"ndcg": 0.12}, {"ndcg": 0.14}])["ndcg"]
    assert values == {"mean": 0.12, "sd": 0.02, "values": [0.10, 0.12, 0.14]}
    assert summary([{"ndcg": 0.1}])["ndcg"]["sd"] == 0.0


KEYS = [f"{split}_{protocol}_{metric}" for split in ("valid", "test") for protocol in ("full", "full_unseen")
        for metric in ("ndcg@10", "hr@10")]


def _row(name, overrides, valid_values, baseline=0.05):
    runs = [{"values": {"train_seconds": 5, "epochs_run": 3, "best_epoch": 2, **{key: value for key in KEYS}},
             "baselines": {"markov": {key: baseline for key in KEYS}}} for value in valid_values]
    return variant_row(name, overrides, [1, 2, 3], runs)


def test_the_readme_table_shows_each_row_as_mean_and_spread():
    report = {"data": "d", "seeds": [1, 2, 3], "budget_seconds": 5.0, "commit": "abc1234",
              "variants": [_row("default (bert4rec)", [], [0.11, 0.12, 0.13])]}
    table = markdown(report)
    assert "commit abc1234" in table and "| default (bert4rec) | 3 (2) | 5 | 0.1200 ± 0.0100 |" in table
    assert "| markov | | | 0.0500 ± 0.0000 |" in table


def test_rows_are_judged_on_validation_by_more_than_one_standard_deviation():
    default = _row("default (bert4rec)", [], [0.11, 0.12, 0.13])
    assert compared_with_default(_row("a", [], [0.12, 0.125, 0.13]), default) == "+0.0050 (not distinguishable)"
    assert compared_with_default(_row("b", [], [0.14, 0.14, 0.14]), default) == "+0.0200 (better)"
    assert compared_with_default(_row("c", [], [0.09, 0.10, 0.11]), default) == "-0.0200 (worse)"


def test_a_row_on_other_data_shows_its_own_baselines_and_is_not_judged_against_the_default():
    temporal = ["split.rule=temporal"]
    report = {"data": "d", "seeds": [1, 2, 3], "budget_seconds": None, "fixed_epochs": 7, "commit": "abc1234",
              "machine": {"cpus": 2, "jobs": 2, "torch_threads_per_job": 1},
              "variants": [_row("default (bert4rec)", [], [0.11, 0.12, 0.13]), _row("temporal", temporal, [0.2] * 3, 0.07)]}
    table = markdown(report)
    assert "7 epochs of training each (best validation kept), 2 job(s) of 1 torch thread on 2 cores, commit abc1234." in table
    assert "| temporal | 3 (2) | 5 | 0.2000 ± 0.0000 | other data |" in table
    assert "| markov (split.rule=temporal) | | | 0.0700 ± 0.0000 |" in table
    assert data_overrides(["model.x=1", "split.rule=temporal", "preprocess.max_seq_length=200"]) == (
        "preprocess.max_seq_length=200", "split.rule=temporal")
    assert data_name(("split.rule=temporal",)) == "data-rule-temporal" and data_name(()) == "data"
    assert training_overrides(600, None) == ["train.time_budget_s=600"]
    assert "train.min_epochs=7" in training_overrides(600, 7)


def test_the_readme_tables_are_the_result_files_rendered():
    readme = (ROOT / "README.md").read_text()
    text, changed = with_tables(readme)
    assert "<!-- bench-table: " in readme and changed == [], f"run `python -m bench.readme_tables`: {changed}"


@pytest.mark.slow  # a fresh interpreter with torch and T4R
@pytest.mark.parametrize("sampled", [0, 64])
def test_catalogue_step_reports_rate_and_memory(sampled):
    done = subprocess.run([sys.executable, "-m", "bench.catalogue_step", "--catalogue", "3000", "--sampled", str(sampled),
                           "--steps", "2", "--warmup", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["catalogue"] == 3000 and row["windows_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert ("sampled" in row["loss"]) == bool(sampled)


def test_every_user_check_builds_one_session_per_user_from_the_interactions(tiny_data):
    from bench.every_user_check import ndcg_at_k, user_sessions
    from t4r_app.data.item_sequences import read_split

    sessions, targets, single = user_sessions(tiny_data)
    # Every user with two interactions or more is a test row; the generator gives some users one.
    assert len(sessions) == len(targets) == len(read_split(tiny_data, "test").users) and len(sessions) + single == 400
    assert all(len(session) >= 1 for session in sessions)
    assert ndcg_at_k([[5, 7], [1, 2], [3]], np.array([5, 2, 9])) == pytest.approx((1.0 + 1 / np.log2(3)) / 3)


def test_perf_analyzer_runs_here_and_reads_requests_of_real_sessions(tmp_path):
    """The tool bench-serve measures with: its libraries are found and its input is the ensemble's ragged pair."""
    from bench import perf_analyzer

    env = {"LD_LIBRARY_PATH": str(perf_analyzer.library_dir(tmp_path))}
    done = subprocess.run([str(perf_analyzer.binary()), "--help"], capture_output=True, text=True, env=env)
    assert "--concurrency-range" in done.stdout + done.stderr, done.stderr[-500:]
    data = json.loads(perf_analyzer.write_input_data([[[5, 6, 7]], [[1], [2, 3]]], tmp_path / "input.json").read_text())
    first, second = data["data"]
    assert first["movieIndices__values"] == {"content": [5, 6, 7], "shape": [3]}
    assert second["movieIndices__offsets"] == {"content": [0, 1, 3], "shape": [3]}
