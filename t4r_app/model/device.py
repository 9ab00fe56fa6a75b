"""Where a model runs: the GPU when this machine has one, else the CPU."""

from __future__ import annotations

import torch


def default_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``: the one place that decides where a model runs."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (where its inputs must go)."""
    return next(model.parameters()).device
