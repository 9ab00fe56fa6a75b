"""What the model knows about each item id besides the id: training counts, titles, and which it may recommend.

Built once at training from the data dir and saved with the model (``model/item_features.npz``),
so prediction and export rebuild the same model without the data dir or the title encoder.

* ``trained``: the item has interactions in the training histories. With
  ``title_embeddings=feature`` only these items use their id embedding; any other item (seen
  only in validation or test, withheld by ``train.withhold_movies``, or only in the titles
  file) is its title alone, instead of an id vector that training only ever pushed down.
* ``scorable``: the item may be recommended. A movie that is only in the titles file (no
  interaction anywhere) is scorable with ``feature`` when it has a usable title, and never
  otherwise: with ``off``/``init`` such movies stay out of every ranking, as before titles.
* ``titles``: the unit title vectors (``feature`` only; ``init`` uses them once, at the start).
* ``counts``: training interactions per id, for what training starts from and samples by
  (``model.output_bias=popularity``, ``model.negative_sampler=popularity``); not saved, since
  a trained model no longer needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from t4r_app.config import ModelConfig
from t4r_app.data.item_sequences import ItemSequences
from t4r_app.data.title_vectors import TitleVectors, load_title_vectors
from workflow.columns import FIRST_MOVIE_ID

FEATURES_FILE = "item_features.npz"


@dataclass
class ItemFeatures:
    trained: np.ndarray  # (vocabulary,) bool
    scorable: np.ndarray  # (vocabulary,) bool
    titles: TitleVectors | None = None
    counts: np.ndarray | None = None  # (vocabulary,) int64, at training only

    def save(self, path: Path) -> None:
        arrays = {"trained": self.trained, "scorable": self.scorable}
        if self.titles is not None:
            arrays |= {"title_vectors": self.titles.vectors, "has_title": self.titles.has_title}
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> "ItemFeatures | None":
        """The saved features; None for runs trained before they existed."""
        if not Path(path).is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            titles = TitleVectors(saved["title_vectors"], saved["has_title"]) if "title_vectors" in saved else None
            return cls(saved["trained"], saved["scorable"], titles)


def build_item_features(
    model: ModelConfig, data_dir: str | Path, vocabulary: int, histories: ItemSequences, progress: bool = True
) -> ItemFeatures:
    data_dir = Path(data_dir)
    counts = np.bincount(histories.values, minlength=vocabulary)[:vocabulary].astype(np.int64)
    counts[:FIRST_MOVIE_ID] = 0
    trained = counts > 0
    mapping = pd.read_parquet(data_dir / "item_mapping.parquet", columns=["item_id", "interactions"])
    titles_only = mapping.loc[mapping["interactions"] == 0, "item_id"].to_numpy(dtype=np.int64)
    scorable = np.ones(vocabulary, dtype=bool)
    scorable[titles_only] = False
    titles = None
    if model.title_embeddings != "off":
        titles = load_title_vectors(data_dir, vocabulary, progress)
        if model.title_embeddings == "feature":
            scorable[titles_only] = titles.has_title[titles_only]
    return ItemFeatures(trained, scorable, titles, counts)  # padding, null and OOV are never trained items


def features_for_saving(model: ModelConfig, features: ItemFeatures) -> ItemFeatures:
    """What the trained model still needs: ``init`` used the titles once; ``feature`` reads them always."""
    if model.title_embeddings == "feature":
        return features
    return ItemFeatures(features.trained, features.scorable, None)
