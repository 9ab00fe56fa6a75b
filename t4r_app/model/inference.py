"""Next-movie scores from a trained model, for a batch of sessions."""

from __future__ import annotations

import numpy as np
import torch

from t4r_app.config import ModelConfig
from t4r_app.model.device import model_device
from workflow.columns import ITEM_LIST


def inference_length(model: ModelConfig, window: int) -> int:
    """How many of a session's latest items the model reads at inference, for a ``window``
    (``max_seq_length``) it was trained on. A masked model (BERT4Rec) appends [MASK] after the
    session, so the session gets one position less and [MASK] stays at a position seen in
    training; a causal one (SASRec) reads the last item itself, so the whole window. Every
    caller that pads sessions for the model (evaluate, predict, the served ensemble, the trace)
    takes its width from here."""
    return window - 1 if model.architecture == "bert4rec" else window


@torch.no_grad()
def next_item_scores(model: torch.nn.Module, padded_items: np.ndarray) -> np.ndarray:
    """Scores over the whole vocabulary for a right-padded batch of sessions.

    This is T4R's inference mode: BERT4Rec's masking appends [MASK] at the first padded
    position and the head reads the hidden state there (SASRec's reads the last item). The
    caller pads to ``inference_length`` items.
    """
    model.eval()
    inputs = {ITEM_LIST: torch.as_tensor(padded_items, device=model_device(model))}
    scores = model(inputs, training=False, testing=False)
    return scores.float().cpu().numpy()
