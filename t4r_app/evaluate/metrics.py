"""Ranking metrics as pure functions of scores and targets.

``evaluate.protocol`` ranks the model and every baseline with these (``evaluate``, and the
validation verdicts ``train`` prints). Training's own metrics are
Transformers4Rec's, which ``tests/test_evaluation.py`` checks against these. Ranks are 1-based
and ties count against the target (an item scoring the same as the target ranks above it), so
a model or baseline with constant scores can never look better than it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


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


def ndcg_per_row(ranks: np.ndarray, k: int) -> np.ndarray:
    """Each row's NDCG@k: 1 / log2(rank + 1) when the one target is in the top k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


_AT_K = re.compile(r"(?P<name>hr|ndcg)@(?P<k>\d+)")  # eval.json's metric keys: hr@10, ndcg@10


@dataclass(frozen=True)
class RankingMetrics:
    """HR@k (hit ratio; equals recall with one target) and NDCG@k by k, MRR, and how many targets."""

    hr: dict[int, float]
    ndcg: dict[int, float]
    mrr: float
    count: int

    def to_json(self) -> dict[str, float]:
        """``{"hr@1": ..., "ndcg@1": ..., ..., "mrr": ..., "count": ...}``, k ascending."""
        data: dict[str, float] = {}
        for k in sorted(self.hr.keys() | self.ndcg.keys()):
            if k in self.hr:
                data[f"hr@{k}"] = self.hr[k]
            if k in self.ndcg:
                data[f"ndcg@{k}"] = self.ndcg[k]
        data["mrr"] = self.mrr
        data["count"] = self.count
        return data

    @classmethod
    def from_json(cls, data: dict[str, float]) -> "RankingMetrics":
        by_k: dict[str, dict[int, float]] = {"hr": {}, "ndcg": {}}
        for key, value in data.items():
            if match := _AT_K.fullmatch(key):
                by_k[match["name"]][int(match["k"])] = value
        return cls(by_k["hr"], by_k["ndcg"], data["mrr"], data["count"])


def ranking_metrics(ranks: np.ndarray, top_ks: list[int]) -> RankingMetrics:
    """HR@k, NDCG@k and MRR from target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        raise ValueError("no targets to evaluate")
    ks = sorted(top_ks)
    return RankingMetrics(
        hr={k: float((ranks <= k).mean()) for k in ks},
        ndcg={k: float(ndcg_per_row(ranks, k).mean()) for k in ks},
        mrr=float((1.0 / ranks).mean()),
        count=int(len(ranks)),
    )


def paired_bootstrap(
    values: np.ndarray, baseline: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean difference, low, high): ``values - baseline`` per row, with a percentile interval.

    Paired: each resample draws evaluation rows with replacement and takes both scorers'
    values of the same rows, so the interval reflects how the two differ on the same sessions.
    """
    difference = np.asarray(values, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(difference) == 0:
        raise ValueError("no rows to compare")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # Resamples in blocks, so the index matrix stays near 8M entries whatever the row count.
    block = max(1, 8_000_000 // len(difference))
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        means[start : start + count] = difference[rng.integers(0, len(difference), (count, len(difference)))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(difference.mean()), float(low), float(high)
