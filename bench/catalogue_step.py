"""One training configuration's step rate and peak memory at one catalogue size (``bench_train``'s worker).

Run in its own process per (catalogue, loss), so that the peak resident memory it reports
is that configuration's alone. Every size steps through the same generated windows: the
same lengths and positions, with item ids spread over the catalogue, so only the head's
cost changes between sizes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from merlin.schema import ColumnSchema, Schema, Tags

from t4r_app.config import load_config
from t4r_app.model.architecture import build_model
from t4r_app.model.item_features import ItemFeatures
from workflow.columns import FIRST_MOVIE_ID, ITEM_LIST, PADDING_ID

WINDOW = 50
BASE_ITEMS = 2_000  # the windows are drawn over this many items, then spread over the catalogue


def generated_windows(batches: int, batch_size: int, seed: int = 0) -> list[torch.Tensor]:
    """Right-padded batches of short windows (median about 6 items, as in real short-history data)."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, BASE_ITEMS + 1)
    popularity /= popularity.sum()
    result = []
    for _ in range(batches):
        lengths = np.clip(rng.geometric(1 / 8, batch_size) + 2, 3, WINDOW)
        batch = np.full((batch_size, lengths.max()), PADDING_ID, dtype=np.int64)
        for row, length in enumerate(lengths):
            batch[row, :length] = 1 + rng.choice(BASE_ITEMS, size=length, p=popularity)  # 0 pads
        result.append(torch.as_tensor(batch))
    return result


def catalogue_schema(vocabulary: int) -> Schema:
    return Schema([
        ColumnSchema(
            ITEM_LIST,
            tags=[Tags.ITEM, Tags.ID, Tags.CATEGORICAL, Tags.LIST],
            dtype=np.int64,
            is_list=True,
            is_ragged=True,
            properties={"domain": {"min": 0, "max": vocabulary - 1, "name": ITEM_LIST}, "value_count": {"min": 0, "max": WINDOW}},
        )
    ])


def spread(batch: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """Base item b (1..BASE_ITEMS) becomes a movie id spread evenly over the catalogue's movies."""
    movies = vocabulary - 1 - FIRST_MOVIE_ID
    return torch.where(batch != PADDING_ID, FIRST_MOVIE_ID + (batch - 1) * movies // BASE_ITEMS, batch)


def measure(catalogue: int, sampled: int, steps: int, warmup: int) -> dict:
    torch.set_num_threads(1)
    vocabulary = catalogue + FIRST_MOVIE_ID + 1  # reserved ids before the movies, [MASK] after
    config = load_config(None, [f"model.sampled_softmax={sampled}"])
    counts = np.zeros(vocabulary, dtype=np.int64)
    counts[FIRST_MOVIE_ID:-1] = np.random.default_rng(1).integers(1, 100, catalogue)
    features = ItemFeatures(counts > 0, np.ones(vocabulary, dtype=bool), None, counts)
    torch.manual_seed(0)
    model = build_model(catalogue_schema(vocabulary), config.model, [10], features).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.train.learning_rate)
    batches = generated_windows(steps + warmup, config.train.batch_size)
    seconds = 0.0
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        model({ITEM_LIST: spread(batch, vocabulary)}, training=True)["loss"].backward()
        optimiser.step()
        optimiser.zero_grad()
        if step >= warmup:
            seconds += time.perf_counter() - started
    return {
        "catalogue": catalogue,
        "loss": f"sampled softmax, {sampled} shared negatives" if sampled else "full softmax",
        "windows_per_s": round(steps * config.train.batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / steps, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--catalogue", type=int, required=True, help="movies in the catalogue")
    parser.add_argument("--sampled", type=int, default=0, help="shared negatives a step; 0 = full softmax")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.catalogue, args.sampled, args.steps, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
