"""The benchmarks' own plumbing: they run, say what they skip, and summarise seeds honestly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_quality import markdown, summary, variant_row

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


def test_the_readme_table_shows_each_row_as_mean_and_spread():
    keys = [f"{split}_{protocol}_{metric}" for split in ("valid", "test") for protocol in ("full", "full_unseen")
            for metric in ("ndcg@10", "hr@10")]
    runs = [{"values": {"train_seconds": 5, "epochs_run": 3, "best_epoch": 2, **{key: 0.1 + seed / 100 for key in keys}},
             "baselines": {"markov": {key: 0.05 for key in keys}}} for seed in (1, 2, 3)]
    report = {"data": "d", "seeds": [1, 2, 3], "budget_seconds": 5.0, "commit": "abc1234",
              "variants": [variant_row("default (bert4rec)", [], [1, 2, 3], runs)]}
    table = markdown(report)
    assert "commit abc1234" in table and "| default (bert4rec) | 3 (2) | 5 | 0.1200 ± 0.0100 |" in table
    assert "| markov | | | 0.0500 ± 0.0000 |" in table


@pytest.mark.slow  # a fresh interpreter with torch and T4R
@pytest.mark.parametrize("sampled", [0, 64])
def test_catalogue_step_reports_rate_and_memory(sampled):
    done = subprocess.run([sys.executable, "-m", "bench.catalogue_step", "--catalogue", "3000", "--sampled", str(sampled),
                           "--steps", "2", "--warmup", "1"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["catalogue"] == 3000 and row["windows_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert ("sampled" in row["loss"]) == bool(sampled)
