"""The metric functions against hand-computed values, the paired bootstrap, and the baselines on a hand-made split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t4r_app.data.item_sequences import ItemSequences
from t4r_app.evaluate.baselines import Markov, MostPopular
from t4r_app.evaluate.metrics import (
    RankingMetrics,
    ndcg_per_row,
    paired_bootstrap,
    ranking_metrics,
    sampled_ranks,
    target_ranks,
)


def test_ranks_are_one_based_and_ties_count_against_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0], [0.0, 0.2, 0.1, 0.3]])
    assert target_ranks(scores, np.array([1, 0, 3])).tolist() == [1, 4, 1]
    assert target_ranks(scores, np.array([2, 3, 0])).tolist() == [3, 4, 4]


def test_metrics_match_hand_computed_values():
    metrics = ranking_metrics(np.array([1, 3, 12]), [1, 5, 10])
    assert metrics.hr[1] == pytest.approx(1 / 3)
    assert metrics.hr[5] == pytest.approx(2 / 3) and metrics.hr[10] == pytest.approx(2 / 3)
    assert metrics.ndcg[5] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert metrics.mrr == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)
    assert metrics.count == 3


def test_hit_ratio_never_falls_as_k_grows():
    ranks = np.random.default_rng(0).integers(1, 50, 1000)
    metrics = ranking_metrics(ranks, [1, 5, 10, 20])
    assert metrics.hr[1] <= metrics.hr[5] <= metrics.hr[10] <= metrics.hr[20] <= 1
    assert metrics.ndcg[1] <= metrics.ndcg[5] <= metrics.ndcg[10] <= metrics.ndcg[20]


def test_sampled_rank_counts_only_the_negatives():
    scores = np.array([[0.0, 0.9, 0.8, 0.7, 0.1]])
    assert sampled_ranks(scores, np.array([3]), np.array([[1, 4]])).tolist() == [2]


def test_markov_counts_transitions_within_rows_only():
    train = ItemSequences.from_lists([[3, 4, 5], [5, 3, 4], [6]])
    markov = Markov(train, vocabulary=8)
    sessions = ItemSequences.from_lists([[9 - 6, 3], [7, 5], []])  # last items 3, 5 and none
    scores = markov.score(sessions, slice(0, 3))
    assert np.argmax(scores[0]) == 4 and scores[0, 4] >= 2  # 3 -> 4 twice
    assert np.argmax(scores[1]) == 3  # 5 -> 3 once; 5 is a row end in row 0, not followed by 5 of row 1
    assert scores[1, 5] < 1 and scores[2].max() < 1  # no transition: popularity tie-break only


def test_most_popular_ranks_by_training_count():
    train = ItemSequences.from_lists([[3, 4, 4], [4, 5, 5, 5]])
    scores = MostPopular(train, vocabulary=7).score(train, slice(0, 2))
    assert scores.shape == (2, 7)
    assert list(np.argsort(-scores[0])[:3]) == [5, 4, 3]


def test_per_row_ndcg_averages_to_the_metric():
    ranks = np.array([1, 3, 12, 10, 11])
    assert ndcg_per_row(ranks, 10).tolist() == pytest.approx([1, 0.5, 0, 1 / math.log2(11), 0])
    assert ndcg_per_row(ranks, 10).mean() == pytest.approx(ranking_metrics(ranks, [10]).ndcg[10])


def test_paired_bootstrap_of_identical_scorers_is_exactly_zero():
    values = ndcg_per_row(np.random.default_rng(0).integers(1, 30, 500), 10)
    assert paired_bootstrap(values, values.copy(), resamples=1000, seed=3) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_interval_is_fixed_and_separates_a_clearly_better_scorer():
    rng = np.random.default_rng(1)
    baseline = ndcg_per_row(rng.integers(1, 40, 800), 10)
    better = ndcg_per_row(np.maximum(1, rng.integers(1, 40, 800) // 4), 10)
    difference, low, high = paired_bootstrap(better, baseline, resamples=1000, seed=0)
    assert difference == pytest.approx(better.mean() - baseline.mean())
    assert 0 < low < difference < high
    assert paired_bootstrap(better, baseline, resamples=1000, seed=0) == (difference, low, high)  # fixed seed
    # the same rows compared with noise that averages out: the interval straddles 0
    noise = rng.normal(0, 0.1, 800)
    _, low, high = paired_bootstrap(baseline + noise - noise.mean(), baseline, resamples=1000, seed=0)
    assert low < 0 < high
    with pytest.raises(ValueError, match="no rows to compare"):
        paired_bootstrap(np.zeros(0), np.zeros(0))


def test_metrics_keep_eval_json_keys_and_read_back():
    metrics = ranking_metrics(np.array([1, 3, 12]), [10, 1])
    saved = metrics.to_json()
    assert list(saved) == ["hr@1", "ndcg@1", "hr@10", "ndcg@10", "mrr", "count"]
    assert saved["hr@10"] == pytest.approx(2 / 3) and saved["count"] == 3
    assert RankingMetrics.from_json(saved) == metrics
