"""Honest baselines, fitted on the training split only and scored like the model.

* MostPopular: every session gets the movies ranked by training interactions.
* Markov: first-order next-movie transition counts from consecutive training items,
  with popularity as a tiny tie-breaker (and as the whole answer after an unseen movie).
* TitlePopularity (when the run uses titles): MostPopular, where a movie without training
  interactions gets the mean popularity of the movies with the most similar titles: the
  simplest answer to cold start that titles allow.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from t4r_app.data.item_sequences import ItemSequences
from t4r_app.data.title_vectors import TitleVectors

TIE_BREAK = 1e-6


def item_counts(sequences: ItemSequences, vocabulary: int) -> np.ndarray:
    return np.bincount(sequences.values, minlength=vocabulary).astype(np.float64)


class MostPopular:
    name = "most_popular"

    def __init__(self, train: ItemSequences, vocabulary: int):
        counts = item_counts(train, vocabulary)
        self.scores = counts / max(counts.max(), 1.0)

    def score(self, sessions: ItemSequences, rows: slice) -> np.ndarray:
        count = len(range(*rows.indices(len(sessions))))
        return np.broadcast_to(self.scores, (count, len(self.scores))).copy()


class Markov:
    name = "markov"

    def __init__(self, train: ItemSequences, vocabulary: int):
        inside = np.ones(len(train.values), dtype=bool)
        inside[train.offsets[1:] - 1] = False  # a row's last item has no successor in that row
        sources = np.flatnonzero(inside)
        transitions = sp.coo_matrix(
            (np.ones(len(sources)), (train.values[sources], train.values[sources + 1])),
            shape=(vocabulary, vocabulary),
        )
        self.transitions = transitions.tocsr()
        counts = item_counts(train, vocabulary)
        self.popularity = TIE_BREAK * counts / max(counts.max(), 1.0)

    def score(self, sessions: ItemSequences, rows: slice) -> np.ndarray:
        indices = np.arange(*rows.indices(len(sessions)))
        scores = np.tile(self.popularity, (len(indices), 1))
        nonempty = np.flatnonzero(sessions.lengths[indices] > 0)
        if len(nonempty):
            last = sessions.values[sessions.offsets[indices[nonempty] + 1] - 1]
            scores[nonempty] += self.transitions[last].toarray()
        return scores


class TitlePopularity(MostPopular):
    name = "title_popularity"
    chunk = 1024  # cold movies compared at a time: bounds the similarity block's memory

    def __init__(self, train: ItemSequences, vocabulary: int, titles: TitleVectors, neighbours: int = 10):
        super().__init__(train, vocabulary)
        counts = item_counts(train, vocabulary)
        cold = np.flatnonzero((counts == 0) & titles.has_title)
        warm = np.flatnonzero((counts > 0) & titles.has_title)
        k = min(neighbours, len(warm))
        for start in range(0, len(cold) if k else 0, self.chunk):
            rows = cold[start : start + self.chunk]
            similarity = titles.vectors[rows] @ titles.vectors[warm].T
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            self.scores[rows] = self.scores[warm][nearest].mean(axis=1)
