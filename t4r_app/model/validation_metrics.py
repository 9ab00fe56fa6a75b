"""The Trainer's validation NDCG@k and HR@k, from the target's rank alone.

T4R's ``NDCGAt``/``RecallAt`` turn every target into a one-hot row over the catalogue and each
take a top-k of the scores: per validation batch, two (rows x catalogue) float tables and
three sorts, which at tens of thousands of items cost more than the model. With one target
per row the target's rank says everything: these count the items scored at least as high
as the target (ties against it, as ``evaluate/metrics.py`` counts them), over the whole
catalogue only for the rows whose target can be in the top k. The
classes keep T4R's names, so the Trainer logs the same ``ndcg_at_10``/``recall_at_10`` keys.
"""

from __future__ import annotations

import torch
from transformers4rec.torch.ranking_metric import RankingMetric


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, depth: int) -> torch.Tensor:
    """0-based rank of each row's target (how many other items score at least as high), exact
    below ``depth``; ``depth`` for every target ranked lower.

    Only the rows whose target reaches the ``depth``-th best score are counted over the whole
    catalogue; for the others one top-k says enough.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))
    deepest = torch.topk(scores, min(depth, scores.size(1)), dim=1).values[:, -1:]
    ranks = torch.full_like(targets, depth)
    near = torch.nonzero((target_scores >= deepest).squeeze(1)).squeeze(1)
    if near.numel():
        ranks[near] = (scores[near] >= target_scores[near]).sum(dim=1) - 1
    return ranks.clamp(max=depth)


class _TargetRankMetric(RankingMetric):
    # One update per batch (torchmetrics would otherwise run it twice inside forward).
    full_state_update = False

    def update(self, preds: torch.Tensor, target: torch.Tensor, **kwargs):  # type: ignore[override]
        scores = preds.reshape(-1, preds.size(-1))
        ranks = target_ranks(scores, target.reshape(-1).long().to(scores.device), max(self.top_ks))
        cutoffs = torch.as_tensor(self.top_ks, device=scores.device)
        self.metric_mean.append(self._from_ranks(ranks.unsqueeze(1), cutoffs))

    def _metric(self, ks, preds, target):  # the abstract one-hot path, never used here
        raise NotImplementedError

    def _from_ranks(self, ranks: torch.Tensor, cutoffs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NDCGAt(_TargetRankMetric):
    def _from_ranks(self, ranks, cutoffs):
        gain = 1.0 / torch.log2(ranks.float() + 2.0)
        return torch.where(ranks < cutoffs, gain, torch.zeros_like(gain))


class RecallAt(_TargetRankMetric):
    def _from_ranks(self, ranks, cutoffs):
        return (ranks < cutoffs).float()
