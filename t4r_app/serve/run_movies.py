"""A run's movie mapping (``model/item_mapping.parquet``): the one place serve/ reads it.

Export, the in-process recommender and a client given ``--run`` all build their lookups from
``RunMovies``, so they agree on which movies a session may hold and what they are called.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from t4r_app.errors import RunError
from t4r_app.model.item_features import FEATURES_FILE, ItemFeatures
from t4r_app.model.saved_run import ITEM_MAPPING, MODEL_DIR, LoadedRun, scorable_rows


@dataclass
class RunMovies:
    mapping: pd.DataFrame  # every row: item_id, movie_index, title, interactions
    known: pd.DataFrame  # the rows a session may hold and the model may recommend

    def title_of_movie(self) -> dict[int, str]:
        """Raw movie id to title ("" where the data has none), of the known movies."""
        return dict(zip(self.known["movie_index"].tolist(), self.known["title"].fillna("").tolist()))

    def item_of_movie(self) -> dict[int, int]:
        """Raw movie id to the model's item id, of the known movies."""
        return dict(zip(self.known["movie_index"].tolist(), self.known["item_id"].tolist()))


def read_run_movies(run: LoadedRun | str | Path) -> RunMovies:
    """The movies of a loaded run (its features already read) or of a run directory.

    Movies only in the titles file are known for a model with title features alone
    (``item_features.scorable``); runs from before titles know every movie of the mapping.
    """
    if isinstance(run, LoadedRun):
        run_dir, features = Path(run.run_dir), run.features
    else:
        run_dir = Path(run)
        features = ItemFeatures.load(run_dir / MODEL_DIR / FEATURES_FILE)
    path = run_dir / MODEL_DIR / ITEM_MAPPING
    if not path.is_file():
        raise RunError(f"{run_dir} has no movie mapping ({path}): give the RUN_DIR the model (or server) came from")
    mapping = pd.read_parquet(path)
    return RunMovies(mapping, scorable_rows(mapping, features))
