"""The next-item output layer: T4R's tied full softmax plus what BERT4Rec's reference had, and a seen-item term.

On top of ``NextItemPredictionTask`` (hidden state times the item embedding table):

* **transform** (``model.output_transform``): dense + GELU + LayerNorm before scoring, the
  BERT4Rec reference's head;
* **output bias** (``model.output_bias``): one learned bias per item id, also the reference's;
* **sampled softmax** (``model.sampled_softmax``, for large catalogues): training scores the
  target against that many log-uniformly drawn items instead of all of them (T4R's sampler);
* **seen-item weight** (``model.seen_item_weight``): one learned scalar added to the score of
  every movie the session already holds at that point. It lets the data decide how likely a
  repeat is: on MovieLens (nobody rates a movie twice) it learns a large negative value; on
  data with re-watching it learns a positive one. Without it a transformer with tied
  embeddings ranks the session's own movies first, since its hidden state resembles them.

With title features the item matrix is ``TitledItemEmbedding.vectors()`` (ids plus projected
titles) instead of the id table; items the model may not recommend (``item_features.scorable``)
score -inf.

"Already holds" means what the model may see for that prediction: for a masked position of
BERT4Rec, the window's unmasked items; for SASRec's position j, items 0..j; at inference,
the whole session. The target itself is never counted (it is masked, or in the future).
"""

from __future__ import annotations

import torch
import transformers4rec.torch as tr
from transformers4rec.torch.masking import MaskedLanguageModeling

from t4r_app.model.title_embedding import item_vectors


class NextItemHead(tr.NextItemPredictionTask):
    def __init__(
        self,
        d_model: int,
        vocabulary: int,
        transform: bool,
        bias: bool,
        seen_item_weight: bool,
        layer_norm_eps: float = 1e-12,
        scorable=None,
        **kwargs,
    ):
        super().__init__(weight_tying=True, target_dim=vocabulary, **kwargs)
        dense = torch.nn.Linear(d_model, d_model)
        norm = torch.nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.transform = torch.nn.Sequential(dense, torch.nn.GELU(), norm) if transform else torch.nn.Identity()
        self.output_bias = torch.nn.Parameter(torch.zeros(vocabulary)) if bias else None
        self.seen_weight = torch.nn.Parameter(torch.zeros(())) if seen_item_weight else None
        # Items that may never be recommended (item_features.scorable) score -inf, in training too.
        unscorable = None if scorable is None else ~torch.as_tensor(scorable, dtype=torch.bool)
        self.register_buffer("unscorable", unscorable if unscorable is not None and unscorable.any() else None, persistent=False)

    def forward(self, inputs, targets=None, training=False, testing=False, top_k=None, **kwargs):
        if isinstance(inputs, (tuple, list)):
            inputs = inputs[0]
        hidden = inputs.float()
        item_ids = self.embeddings.item_seq
        bidirectional = isinstance(self.masking, MaskedLanguageModeling)
        if training or testing:
            labels = self.masking.masked_targets
            rows, positions = (labels != self.padding_idx).nonzero(as_tuple=True)
            targets = labels[rows, positions]
            if training and self.sampled_softmax:
                # T4R's sampled softmax (log-uniform negatives, logQ-corrected) scores only a
                # sample of the catalogue; the bias and the seen weight are left out of it.
                logits, sampled_targets = self.pre(self.transform(hidden[rows, positions]), targets=targets, training=True)
                return {"loss": self.loss(logits, sampled_targets), "labels": targets, "predictions": logits}
            if bidirectional:  # every unmasked item of the window is context, before or after
                visible = (item_ids != self.padding_idx) & ~self.masking.mask_schema
                cutoff = torch.full_like(positions, item_ids.size(1))
            else:  # position j has seen items 0..j
                visible, cutoff = None, positions
            logits = self._logits(hidden[rows, positions], item_ids, rows, cutoff, visible)
            return {"loss": self.loss(logits, targets), "labels": targets, "predictions": logits}
        present = item_ids != self.padding_idx
        rows = torch.arange(item_ids.size(0), device=item_ids.device)
        # BERT4Rec reads the [MASK] T4R appended after the session; SASRec the last item.
        positions = present.sum(dim=1) - (0 if bidirectional else 1)
        cutoff = torch.full_like(positions, item_ids.size(1))
        logits = self._logits(hidden[rows, positions], item_ids, rows, cutoff, present)
        if top_k is None:
            return logits
        return torch.topk(logits, k=top_k, dim=-1)

    def _logits(self, hidden, item_ids, rows, cutoff, visible) -> torch.Tensor:
        """Scores over every id for hidden states of ``rows``; items seen up to ``cutoff`` get the seen weight.

        ``visible`` None means causal: every non-padding item at or before the position counts.
        """
        logits = self.transform(hidden) @ item_vectors(self.item_embedding_table).t()
        if self.output_bias is not None:
            logits = logits + self.output_bias
        if self.seen_weight is not None:
            if visible is None:
                visible = item_ids != self.padding_idx
            seen = seen_items(item_ids, visible, rows, cutoff, logits.size(1), self.padding_idx)
            logits = torch.where(seen, logits + self.seen_weight, logits)
        if self.unscorable is not None:
            logits = logits.masked_fill(self.unscorable, float("-inf"))
        return logits


def seen_items(
    item_ids: torch.Tensor,
    visible: torch.Tensor,
    rows: torch.Tensor,
    cutoff: torch.Tensor,
    vocabulary: int,
    padding_idx: int,
) -> torch.Tensor:
    """(targets, vocabulary) bool: True where the item is visible in ``rows`` at a position <= ``cutoff``.

    Built by scattering each target's (at most window-long) item list, not by comparing a
    (targets, vocabulary) table of positions: windows are much shorter than catalogues.
    """
    positions = torch.arange(item_ids.size(1), device=item_ids.device)
    counted = visible[rows] & (positions.unsqueeze(0) <= cutoff.unsqueeze(1))
    columns = torch.where(counted, item_ids[rows], torch.full_like(item_ids[rows], padding_idx))
    seen = torch.zeros((rows.size(0), vocabulary), dtype=torch.bool, device=item_ids.device)
    seen.scatter_(1, columns, torch.ones_like(columns, dtype=torch.bool))
    seen[:, padding_idx] = False
    return seen
