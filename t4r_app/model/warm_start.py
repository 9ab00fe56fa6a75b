"""Starting a model from an earlier run's weights (``train --init-from``): the daily update.

The new data must number movies as the old run did (``preprocess --vocabulary-from``), so an
old item id still means the same movie; it may hold more of them. Every weight whose shape did
not change is copied. A weight indexed by item id (the item table, the output bias) grows:

* ids the old run had keep their rows, and the [MASK] row (always the last id) moves to the
  new last id;
* rows of movies the old run never had keep the fresh model's start, which already knows
  what there is to know about them: the log-popularity bias, the title vectors with
  ``title_embeddings=init``, the title term with ``feature``. With titles ``off`` a fresh row
  is random, so a new movie's row starts at the mean of the old movies' rows instead.

The optimizer starts fresh; the architecture and its sizes must match (``check_compatible``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from t4r_app.config import ModelConfig
from t4r_app.errors import TrainingError
from workflow.columns import FIRST_MOVIE_ID

# What must be the same for the old weights to fit the new model (everything else may change).
MUST_MATCH = ("architecture", "d_model", "n_layers", "n_heads", "intermediate_size", "output_transform", "title_embeddings")


def check_compatible(old: ModelConfig, new: ModelConfig, old_run: Path) -> None:
    old_values, new_values = asdict(old), asdict(new)
    different = [f"model.{key}: {old_values[key]!r} there, {new_values[key]!r} here" for key in MUST_MATCH
                 if old_values[key] != new_values[key]]
    if different:
        raise TrainingError(f"--init-from {old_run}: its model does not fit this config ({'; '.join(different)})")


def check_same_movies(old_mapping: pd.DataFrame, new_mapping: pd.DataFrame, old_run: Path) -> None:
    """Every item id of the old run must still mean the same movie."""
    old_movies = old_mapping.set_index("item_id")["movie_index"]
    new_movies = new_mapping.set_index("item_id")["movie_index"].reindex(old_movies.index)
    moved = int((new_movies != old_movies).sum())
    if moved:
        raise TrainingError(
            f"--init-from {old_run}: {moved:,} of its {len(old_movies):,} item ids mean another movie (or none) in this "
            "data; preprocess the new data with --vocabulary-from the run's DATA_DIR so that ids stay the same"
        )


def warm_start(model: torch.nn.Module, old_state: dict[str, torch.Tensor], old_vocabulary: int, new_vocabulary: int,
               title_embeddings: str) -> dict[str, int]:
    """Load ``old_state`` into ``model`` as the module doc says; returns what was done, counted."""
    state = model.state_dict()
    grown = 0
    for name, value in state.items():
        old = old_state.get(name)
        if old is None:
            raise TrainingError(
                f"--init-from: the old run has no weight {name}: its model settings differ (model.output_bias, "
                "model.seen_item_weight...; compare the two config.yaml files) or another version trained it"
            )
        if old.shape == value.shape:
            value.copy_(old)
        elif value.shape[0] == new_vocabulary and old.shape[0] == old_vocabulary and old.shape[1:] == value.shape[1:]:
            _grow(value, old, title_embeddings)
            grown += 1
        else:
            raise TrainingError(f"--init-from: {name} is {tuple(old.shape)} there and {tuple(value.shape)} here")
    model.load_state_dict(state)
    return {"weights": len(state), "grown_by_item_id": grown, "new_item_ids": new_vocabulary - old_vocabulary}


def _grow(value: torch.Tensor, old: torch.Tensor, title_embeddings: str) -> None:
    kept = old.shape[0] - 1  # every id but [MASK]
    value[:kept] = old[:kept]
    value[-1] = old[-1]  # [MASK]
    if value.dim() == 2 and title_embeddings == "off":
        value[kept:-1] = old[FIRST_MOVIE_ID:kept].mean(dim=0)
