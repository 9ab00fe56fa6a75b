"""The next-item output layer: the hidden state times the (tied) item table, plus a bias per
item, a seen-item term, and a training loss whose cost need not follow the catalogue.

On top of ``NextItemPredictionTask``:

* **transform** (``model.output_transform``): dense + GELU + LayerNorm before scoring, the
  BERT4Rec reference's head;
* **output bias** (``model.output_bias``): one learned bias per item id, the reference's.
  ``popularity`` starts it at the log of each item's training frequency, so the untrained
  model already ranks like MostPopular and training spends its epochs on order, not on
  learning the popularity plateau first;
* **seen-item weight** (``model.seen_item_weight``): one learned scalar added to the score of
  every item the session already holds at that point. It lets the data decide how likely a
  repeat is: on MovieLens (nobody rates a movie twice) it learns a large negative value; on
  data with re-watching it learns a positive one. Without it a transformer with tied
  embeddings ranks the session's own movies first, since its hidden state resembles them.
  It is added only at the (row, item) pairs that were seen (a window's worth per row), never
  through a (rows x catalogue) mask;
* **sampled training loss** (``model.sampled_softmax`` > 0): one draw of that many items per
  step, shared by every target of the batch (``head_sampling.SharedNegatives``), scored with
  the same bias and seen-item term as the full ranking; softmax with logQ correction, or gBCE
  (``model.loss``). The step then costs (targets x sample), not (targets x catalogue).
  Evaluation and inference always score the whole catalogue.

With title features the item matrix is ``TitledItemEmbedding.vectors()`` (ids plus projected
titles) instead of the id table; items the model may not recommend (``item_features.scorable``)
score -inf in the full ranking and are never drawn as negatives.

"Already holds" means what the model may see for that prediction: for a masked position of
BERT4Rec, the window's unmasked items; for SASRec's position j, items 0..j; at inference,
the whole session. The target itself is never counted (it is masked, or in the future),
though the same item elsewhere in the window is.
"""

from __future__ import annotations

import torch
import transformers4rec.torch as tr
from transformers4rec.torch.masking import MaskedLanguageModeling

from t4r_app.model.head_sampling import SampledLoss, SharedNegatives, is_member
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
        sampled_loss: SampledLoss | None = None,
        **kwargs,
    ):
        super().__init__(weight_tying=True, target_dim=vocabulary, **kwargs)
        dense = torch.nn.Linear(d_model, d_model)
        norm = torch.nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.vocabulary = vocabulary
        self.transform = torch.nn.Sequential(dense, torch.nn.GELU(), norm) if transform else torch.nn.Identity()
        self.output_bias = torch.nn.Parameter(torch.zeros(vocabulary)) if bias else None
        self.seen_weight = torch.nn.Parameter(torch.zeros(())) if seen_item_weight else None
        # Items that may never be recommended (item_features.scorable) score -inf, in training too.
        # Ids rather than a mask: filling a few thousand columns by index costs a fraction of
        # reading a (rows x vocabulary) boolean mask.
        unscorable = None if scorable is None else torch.nonzero(~torch.as_tensor(scorable, dtype=torch.bool)).squeeze(1)
        self.register_buffer("unscorable", unscorable if unscorable is not None and len(unscorable) else None, persistent=False)
        # Only training draws negatives; a model rebuilt for scoring has none.
        self.sampled_loss = sampled_loss

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
            if bidirectional:  # every unmasked item of the window is context, before or after
                visible = (item_ids != self.padding_idx) & ~self.masking.mask_schema
                cutoff = torch.full_like(positions, item_ids.size(1))
            else:  # position j has seen items 0..j
                visible, cutoff = item_ids != self.padding_idx, positions
            seen = self._seen_keys(item_ids, visible, rows, cutoff)
            states = self.transform(hidden[rows, positions])
            if training and self.sampled_loss is not None:
                return self._sampled(states, targets, seen)
            logits = self._logits(states, seen)
            return {"loss": self.loss(logits, targets), "labels": targets, "predictions": logits}
        present = item_ids != self.padding_idx
        rows = torch.arange(item_ids.size(0), device=item_ids.device)
        # BERT4Rec reads the [MASK] T4R appended after the session; SASRec the last item.
        positions = present.sum(dim=1) - (0 if bidirectional else 1)
        cutoff = torch.full_like(positions, item_ids.size(1))
        logits = self._logits(self.transform(hidden[rows, positions]), self._seen_keys(item_ids, present, rows, cutoff))
        if top_k is None:
            return logits
        return torch.topk(logits, k=top_k, dim=-1)

    def _seen_keys(self, item_ids, visible, rows, cutoff) -> torch.Tensor | None:
        if self.seen_weight is None:
            return None
        return seen_keys(item_ids, visible, rows, cutoff, self.vocabulary, self.padding_idx)

    def _logits(self, states: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """(targets, vocabulary) scores: bias and seen weight added in place, unscorable items -inf."""
        vectors = item_vectors(self.item_embedding_table)
        if self.output_bias is not None:
            logits = torch.addmm(self.output_bias, states, vectors.t())
        else:
            logits = states @ vectors.t()
        # In place is safe for autograd: the matrix product's gradient needs its inputs, not its output.
        # (No test of how many pairs there are, and expand_as rather than a count: a traced model
        # for serving must not bake one batch's numbers in.)
        if seen is not None:
            rows, items = seen // self.vocabulary, seen % self.vocabulary
            logits.index_put_((rows, items), self.seen_weight.expand_as(items), accumulate=True)
        if self.unscorable is not None:
            logits.index_fill_(1, self.unscorable, float("-inf"))
        return logits

    def _sampled(self, states: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None) -> dict:
        """The loss over each target and one shared draw of negatives, scored as ``_logits`` would."""
        sampling = self.sampled_loss
        negatives = sampling.negatives.draw()
        vectors = item_vectors(self.item_embedding_table)
        positive = (states * vectors[targets]).sum(dim=1)
        negative = states @ vectors[negatives].t()
        if self.output_bias is not None:
            positive = positive + self.output_bias[targets]
            negative = negative + self.output_bias[negatives]
        if seen is not None:
            rows = torch.arange(len(targets), device=targets.device)
            target_seen = is_member(rows * self.vocabulary + targets, seen)
            positive = positive + self.seen_weight * target_seen
            seen_rows, seen_items = seen // self.vocabulary, seen % self.vocabulary
            column = torch.searchsorted(negatives, seen_items).clamp(max=len(negatives) - 1)
            hit = negatives[column] == seen_items
            negative = negative.index_put((seen_rows[hit], column[hit]), self.seen_weight.expand_as(column[hit]), accumulate=True)
        loss, logits = sampling.loss(positive, negative, targets, negatives)
        return {"loss": loss, "labels": targets, "predictions": logits}


def seen_keys(
    item_ids: torch.Tensor,
    visible: torch.Tensor,
    rows: torch.Tensor,
    cutoff: torch.Tensor,
    vocabulary: int,
    padding_idx: int,
) -> torch.Tensor:
    """Sorted, distinct ``target * vocabulary + item`` for every item visible to a target.

    Target t reads row ``rows[t]`` and sees its visible items at positions <= ``cutoff[t]``.
    A window is much shorter than the catalogue, so this is at most (targets x window)
    numbers where a (targets x vocabulary) mask would be catalogue-sized.
    """
    positions = torch.arange(item_ids.size(1), device=item_ids.device)
    window = item_ids[rows]
    counted = visible[rows] & (positions.unsqueeze(0) <= cutoff.unsqueeze(1)) & (window != padding_idx)
    targets, columns = counted.nonzero(as_tuple=True)
    return torch.unique(targets * vocabulary + window[targets, columns])


def learned_scalars(model: torch.nn.Module) -> dict[str, float]:
    """What a trained head learned that explains its behaviour, for metrics.json.

    ``seen_item_weight``: what a movie already in the session adds to its score (negative:
    repeats are unlikely; positive: people come back). ``output_bias_mean``/``_sd``: the
    per-item bias, whose spread says how much of the ranking is popularity. Every other
    one-number parameter of the model is listed under its own name.
    """
    learned = {}
    for name, parameter in model.named_parameters():
        if parameter.numel() == 1:
            key = "seen_item_weight" if name.endswith("seen_weight") else name
            learned[key] = round(float(parameter.detach()), 4)
        elif name.endswith("output_bias"):
            bias = parameter.detach().float()
            finite = bias[torch.isfinite(bias)]
            learned["output_bias_mean"] = round(float(finite.mean()), 4)
            learned["output_bias_sd"] = round(float(finite.std()), 4)
    return learned
