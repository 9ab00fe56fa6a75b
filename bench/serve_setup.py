"""A trained run and real sessions at a chosen catalogue size, for the serving benchmarks.

Serving speed depends on the catalogue (the head's width, top-k over every movie) and the
model's shape, not on how well the model learned: one epoch on generated data is enough.
The demo's generator and config are used; users grow with the catalogue so that most movies
are watched, with 3,000 users at least.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from t4r_app.config import load_config
from t4r_app.data.item_sequences import read_split
from t4r_app.input_layout.synthetic import GenerationSpec
from t4r_app.pipeline import run_pipeline

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def prepare(work: Path, movies: int = 500) -> tuple[Path, list[list[int]]]:
    """(run directory, the test split's sessions as raw movie ids) for a generated catalogue of ``movies``."""
    config = load_config(DEMO_CONFIG, ["train.epochs=1", "train.min_epochs=1"])
    spec = GenerationSpec(users=max(3000, movies // 5), movies=movies, seed=7)
    result = run_pipeline(config, work / "raw", work / "data", work / "run", generate=spec, evaluate=False, progress=False)
    mapping = pd.read_parquet(result.data_dir / "item_mapping.parquet")
    movie_of = dict(zip(mapping["item_id"], mapping["movie_index"]))
    items = read_split(result.data_dir, "test").items
    sessions = [[int(movie_of[i]) for i in items.row(r)] for r in range(len(items))]
    return result.run_dir, sessions
