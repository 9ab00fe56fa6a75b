"""Next-movie scores from a trained model, for a batch of sessions."""

from __future__ import annotations

import numpy as np
import torch

from t4r_app.model.device import model_device
from workflow.columns import ITEM_LIST


@torch.no_grad()
def next_item_scores(model: torch.nn.Module, padded_items: np.ndarray) -> np.ndarray:
    """Scores over the whole vocabulary for a right-padded batch of sessions.

    This is T4R's inference mode: BERT4Rec's masking appends [MASK] at the first padded
    position and the head reads the hidden state there (SASRec's reads the last item). The
    caller leaves room for it (sessions of at most max_seq_length - 1 items), so [MASK] sits
    at a position seen in training.
    """
    model.eval()
    inputs = {ITEM_LIST: torch.as_tensor(padded_items, device=model_device(model))}
    scores = model(inputs, training=False, testing=False)
    return scores.float().cpu().numpy()
