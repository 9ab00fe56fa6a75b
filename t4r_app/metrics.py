"""Ranking metrics as pure functions of scores and targets.

Training, evaluation, baselines, tuning and benchmarks all use these. Ranks are 1-based and
ties count against the target (an item scoring the same as the target ranks above it), so
a model or baseline with constant scores can never look better than it is.
"""

from __future__ import annotations

import numpy as np

EXCLUDED = -np.inf


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of ``targets[i]`` among ``scores[i]`` (columns are item ids)."""
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores >= target_scores[:, None]).sum(axis=1)


def sampled_ranks(scores: np.ndarray, targets: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Rank of each target among itself and its row of sampled negative item ids."""
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    negative_scores = scores[rows[:, None], negatives]
    return 1 + (negative_scores >= target_scores[:, None]).sum(axis=1)


def ranking_metrics(ranks: np.ndarray, top_ks: list[int]) -> dict[str, float]:
    """HR@k (hit ratio; equals recall with one target), NDCG@k and MRR from target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        raise ValueError("no targets to evaluate")
    metrics: dict[str, float] = {}
    for k in sorted(top_ks):
        hit = ranks <= k
        metrics[f"hr@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    metrics["mrr"] = float((1.0 / ranks).mean())
    metrics["count"] = int(len(ranks))
    return metrics
