"""BERT4Rec's masking: T4R's masked-item modelling (``MaskedLanguageModeling``), extended in three ways.

* **Exact-count masking** (the reference implementation's rule): each training window masks
  ``round(n * p)`` of its ``n`` items, instead of T4R's independent draws plus one.
* **Forced last-item masking** (the seed's future work; RecBole's ``ft_ratio``): for a
  configurable share of training sequences only the last item is masked, so training also
  sees the exact situation of inference, where [MASK] follows the whole history.
* **Padding is hidden from attention.** T4R hands BERT nothing but the embeddings, so every
  position, padding included, is attended to. The masking is the one block that sees the
  item ids before the Transformer runs, and T4R forwards its ``transformer_arguments``
  to the Transformer, so it passes an ``attention_mask`` that covers only real items and
  [MASK]. Predictions then do not depend on how much padding follows a session.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers4rec.torch.masking import MaskedLanguageModeling, MaskingInfo


class Bert4RecMasking(MaskedLanguageModeling):
    def __init__(
        self,
        hidden_size: int,
        padding_idx: int = 0,
        mlm_probability: float = 0.2,
        last_item_share: float = 0.0,
        exact_count: bool = True,
        max_predictions: int = 0,
    ):
        super().__init__(
            hidden_size=hidden_size,
            padding_idx=padding_idx,
            eval_on_last_item_seq_only=True,
            mlm_probability=mlm_probability,
        )
        self.last_item_share = last_item_share
        self.exact_count = exact_count
        self.max_predictions = max_predictions
        self.attention_mask: torch.Tensor | None = None

    def _compute_masked_targets(
        self, item_ids: torch.Tensor, training: bool = False, testing: bool = False
    ) -> MaskingInfo:
        if training and self.exact_count:
            info = self._mask_exact_count(item_ids)
        else:
            info = super()._compute_masked_targets(item_ids, training=training, testing=testing)
        present = item_ids != self.padding_idx
        if not training and not testing:
            # Inference appends [MASK] after the last item: one more position to attend to.
            present = torch.cat([present, torch.zeros_like(present[:, :1])], dim=1) | info.schema
        self.attention_mask = present.to(torch.long)
        if training and self.last_item_share > 0:
            info = self._force_last_item(item_ids, present, info)
        return info

    def _mask_exact_count(self, item_ids: torch.Tensor) -> MaskingInfo:
        """Mask exactly ``round(n * p)`` of a window's ``n`` items (at least 1, at most n - 1).

        T4R draws each position independently and then adds one more, so short windows get
        far more than the asked share masked; this is the BERT4Rec reference's rule.
        """
        present = item_ids != self.padding_idx
        lengths = present.sum(dim=1)
        counts = torch.round(lengths * self.mlm_probability).long().clamp(min=1)
        if self.max_predictions:
            counts = counts.clamp(max=self.max_predictions)
        counts = torch.minimum(counts, lengths - 1).clamp(min=1)
        draws = torch.rand(item_ids.shape, device=item_ids.device).masked_fill(~present, 2.0)
        ranks = draws.argsort(dim=1).argsort(dim=1)
        chosen = (ranks < counts.unsqueeze(1)) & present
        targets = torch.where(chosen, item_ids, torch.full_like(item_ids, self.padding_idx))
        return MaskingInfo(chosen, targets)

    def _force_last_item(self, item_ids: torch.Tensor, present: torch.Tensor, info: MaskingInfo) -> MaskingInfo:
        rows = torch.arange(item_ids.size(0), device=item_ids.device)
        last = present.sum(dim=1) - 1
        last_only = torch.full_like(item_ids, self.padding_idx)
        last_only[rows, last] = item_ids[rows, last]
        chosen = torch.rand(item_ids.size(0), device=item_ids.device) < self.last_item_share
        targets = torch.where(chosen.unsqueeze(1), last_only, info.targets)
        return MaskingInfo(targets != self.padding_idx, targets)

    def transformer_optional_arguments(self) -> dict[str, Any]:
        return {"attention_mask": self.attention_mask}
