"""Honest baselines, fitted on the training split only and scored like the model.

* MostPopular: every session gets the movies ranked by training interactions.
* Markov: first-order next-movie transition counts from consecutive training items,
  with popularity as a tiny tie-breaker (and as the whole answer after an unseen movie).
* RepeatRecent (where people come back to what they watched): the movies of the session
  first, by a count in which each watch weighs less the longer ago it was (RECENCY_DECAY per
  later item), so "watched most and most recently" wins; then every other movie in Markov's
  order. Where training histories hardly repeat a movie it would only add a bad first guess
  to Markov, so evaluation leaves it out and says so (``repeat_baseline_note``).
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


class RepeatRecent:
    name = "repeat_recent"
    # A watch 7 items back counts half as much as the latest one (0.9 ** 6.6 = 0.5): a middle
    # ground between "most" and "most recently", fixed by principle rather than fitted to a split.
    RECENCY_DECAY = 0.9

    def __init__(self, train: ItemSequences, vocabulary: int):
        self.markov = Markov(train, vocabulary)

    def score(self, sessions: ItemSequences, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(sessions))
        markov = self.markov.score(sessions, rows)
        scores = markov / (markov.max(axis=1, keepdims=True) + 1.0)  # every row's Markov part below 1
        out_rows, items = sessions.cells(start, stop)
        ages = sessions.offsets[start + out_rows + 1] - 1 - np.arange(sessions.offsets[start], sessions.offsets[stop])
        recency = np.zeros_like(scores)
        np.add.at(recency, (out_rows, items), self.RECENCY_DECAY ** ages)
        scores[out_rows, items] += 1.0  # any watched movie above every other
        return scores + recency


def repeat_baseline_note(share: float, threshold: float) -> tuple[bool, str]:
    """(include RepeatRecent?, why): only where at least ``threshold`` of training interactions repeat a movie."""
    measured = f"{share:.2%} of training interactions repeat a movie earlier in their history"
    if share < threshold:
        return False, f"{RepeatRecent.name} left out: {measured} (below {threshold:.0%}); there it would be Markov with a wrong first guess"
    return True, f"{RepeatRecent.name} included: {measured} (at least {threshold:.0%})"


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
