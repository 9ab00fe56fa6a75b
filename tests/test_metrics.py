"""The metric functions against hand-computed values, and the baselines on a hand-made split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from t4r_app.baselines import Markov, MostPopular
from t4r_app.metrics import ranking_metrics, sampled_ranks, target_ranks
from t4r_app.sequences_io import ItemSequences


def test_ranks_are_one_based_and_ties_count_against_the_target():
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0], [0.0, 0.2, 0.1, 0.3]])
    assert target_ranks(scores, np.array([1, 0, 3])).tolist() == [1, 4, 1]
    assert target_ranks(scores, np.array([2, 3, 0])).tolist() == [3, 4, 4]


def test_metrics_match_hand_computed_values():
    metrics = ranking_metrics(np.array([1, 3, 12]), [1, 5, 10])
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@5"] == pytest.approx(2 / 3) and metrics["hr@10"] == pytest.approx(2 / 3)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)
    assert metrics["count"] == 3


def test_hit_ratio_never_falls_as_k_grows():
    ranks = np.random.default_rng(0).integers(1, 50, 1000)
    metrics = ranking_metrics(ranks, [1, 5, 10, 20])
    assert metrics["hr@1"] <= metrics["hr@5"] <= metrics["hr@10"] <= metrics["hr@20"] <= 1
    assert metrics["ndcg@1"] <= metrics["ndcg@5"] <= metrics["ndcg@10"] <= metrics["ndcg@20"]


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
