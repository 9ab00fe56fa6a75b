"""Training against a sample of the catalogue: one draw of negatives per step, and its loss.

A full softmax scores every target against every item: (targets x catalogue) numbers, their
softmax and their gradient on each step, which at tens of thousands of items is most of the
step. Here each step draws one set of items, shared by every target of the batch (so the
scores are one (targets x sample) matrix product, as in T4R's and RecTools' sampled losses),
and the loss is one of:

* ``softmax``: cross-entropy over the target and the sample, every score corrected by
  ``-log(expected draws of that item)`` (logQ), so the sampled loss estimates the full one
  whatever the sampler; a draw that happens to be the target itself is left out;
* ``gbce`` (Petrov & Macdonald 2023, gSASRec): binary cross-entropy with the positive's
  probability raised to ``beta``, which undoes the overconfidence that sampling negatives
  teaches; beta follows from the sampling rate and the calibration ``t`` (1: plain BCE
  calibrated to the full softmax, 0: plain BCE). Its derivation assumes uniform draws.

Negatives are drawn from the items the model may recommend: ``uniform``, or in proportion
to training frequency (``popularity``: the items a popularity-biased model confuses with
the target most often). The sample is drawn with replacement and made distinct.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def is_member(values: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """Bool per value: it occurs in ``sorted_set`` (ascending)."""
    if not sorted_set.numel():
        return torch.zeros_like(values, dtype=torch.bool)
    index = torch.searchsorted(sorted_set, values).clamp(max=len(sorted_set) - 1)
    return sorted_set[index] == values


class SharedNegatives(torch.nn.Module):
    """Draws ``count`` items per step from the candidate ids, uniformly or by training frequency.

    ``counts`` holds every id's training interactions (vocabulary-long).
    """

    def __init__(self, candidates: np.ndarray, counts: np.ndarray, count: int, by_popularity: bool):
        super().__init__()
        candidates = np.asarray(candidates, dtype=np.int64)
        # +1: an item never trained on can still be drawn (and so pushed down) now and then.
        weights = (np.asarray(counts, dtype=np.float64)[candidates] + 1.0) if by_popularity else np.ones(len(candidates))
        probabilities = weights / weights.sum()
        self.count = count
        self.by_popularity = by_popularity
        self.register_buffer("candidates", torch.as_tensor(candidates), persistent=False)
        self.register_buffer("probabilities", torch.as_tensor(probabilities, dtype=torch.float32), persistent=False)
        # log of the expected number of draws of each id (0 for ids that are never drawn)
        expected = np.zeros(len(counts))
        expected[candidates] = count * probabilities
        log_expected = np.log(np.where(expected > 0, expected, 1.0))
        self.register_buffer("log_expected", torch.as_tensor(log_expected, dtype=torch.float32), persistent=False)

    def draw(self) -> torch.Tensor:
        """Distinct item ids, ascending."""
        if self.by_popularity:
            picks = torch.multinomial(self.probabilities, self.count, replacement=True)
        else:
            picks = torch.randint(len(self.candidates), (self.count,), device=self.candidates.device)
        return torch.unique(self.candidates[picks])


class SampledLoss(torch.nn.Module):
    """The loss of ``model.loss`` over one draw of ``negatives``; a module, so the draws follow the model's device."""

    def __init__(self, negatives: SharedNegatives, kind: str = "softmax", gbce_t: float = 0.75):
        super().__init__()
        self.negatives = negatives
        self.kind = kind  # softmax | gbce
        self.gbce_t = gbce_t

    def loss(self, positive: torch.Tensor, negative: torch.Tensor, targets: torch.Tensor, negative_ids: torch.Tensor):
        """(loss, logits with the positive first) from positive (targets,) and negative (targets, sample) scores."""
        accidental = negative_ids.unsqueeze(0) == targets.unsqueeze(1)
        if self.kind == "gbce":
            beta = self._gbce_beta(len(negative_ids))
            negative = negative.masked_fill(accidental, float("-inf"))
            per_target = -beta * F.logsigmoid(positive) - F.logsigmoid(-negative).sum(dim=1)
            logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
            return (per_target / logits.size(1)).mean(), logits
        log_expected = self.negatives.log_expected
        positive = positive - log_expected[targets]
        negative = (negative - log_expected[negative_ids]).masked_fill(accidental, float("-inf"))
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        zeros = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
        return F.cross_entropy(logits, zeros), logits

    def _gbce_beta(self, drawn: int) -> float:
        """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha the share of negatives sampled."""
        alpha = drawn / max(len(self.negatives.candidates) - 1, 1)
        return alpha * (self.gbce_t * (1 - 1 / alpha) + 1 / alpha)
