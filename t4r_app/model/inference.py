"""Next-movie scores from a trained model: [MASK] goes after each session's last item."""

from __future__ import annotations

import numpy as np
import torch

from workflow.columns import ITEM_LIST


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_batch(model: torch.nn.Module, padded_items: np.ndarray) -> np.ndarray:
    """Scores over the whole vocabulary for a right-padded batch of sessions.

    This is T4R's inference mode: the masking appends [MASK] at the first padded position
    and the head reads the hidden state there. The caller leaves room for it (sessions of at
    most max_seq_length - 1 items), so [MASK] sits at a position seen in training.
    """
    model.eval()
    inputs = {ITEM_LIST: torch.as_tensor(padded_items, device=model_device(model))}
    scores = model(inputs, training=False, testing=False)
    return scores.float().cpu().numpy()
