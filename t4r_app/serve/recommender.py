"""Top-k next movies for raw sessions: raw movie ids in, raw ids, scores and titles out.

The documented behaviour for awkward sessions, shared by ``predict``, ``recommend`` and the
Triton ensemble (which uses ``TopKRanker`` too):

* movie ids the model never saw are left out of the session (and listed in ``unknown_movies``
  where the answer has room for it);
* a session with no known movie (empty, or all unknown) gets the most popular movies, with
  ``fallback: most_popular`` and popularity shares as scores (these two rules are
  ``protocol.split_session`` and ``protocol.fallback_for``, which the Triton client applies too);
* a session longer than the model's window keeps its most recent ``max_seq_length - 1``
  movies, the position [MASK] takes after them being the last one seen in training.

Whether a session's own movies are left out is the run's rule (``run_exclude_seen``: decided
from ``serve.exclude_seen`` and the data when the model was saved); a caller may override it.

Scores are the model's softmax probabilities over movies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from t4r_app.data.item_sequences import ItemSequences
from t4r_app.model.architecture import max_sequence_length, vocabulary_size
from t4r_app.model.inference import next_item_scores
from t4r_app.model.saved_run import LoadedRun
from t4r_app.serve.protocol import Recommendation, fallback_for, split_session
from t4r_app.serve.run_movies import read_run_movies
from workflow.columns import EXCLUDED, movie_ids

LogitsFunction = Callable[[np.ndarray], np.ndarray]
"""Scores over every item id for a right-padded (sessions, length) batch of item ids."""


@dataclass
class ItemCatalogue:
    """What maps the model's item ids back to movies: raw ids, titles, popularity."""

    movie_of_item: np.ndarray
    title_of_item: np.ndarray
    popularity: np.ndarray  # share of training interactions per item id
    scorable: np.ndarray | None = None  # the model's item_features.scorable; None: every movie

    @classmethod
    def from_mapping(cls, mapping: pd.DataFrame, vocabulary: int, scorable: np.ndarray | None = None) -> "ItemCatalogue":
        items = mapping["item_id"].to_numpy()
        movie_of_item = np.full(vocabulary, -1, dtype=np.int64)
        movie_of_item[items] = mapping["movie_index"].to_numpy()
        title_of_item = np.full(vocabulary, "", dtype=object)
        title_of_item[items] = mapping["title"].fillna("").to_numpy()
        popularity = np.zeros(vocabulary)
        popularity[items] = mapping["interactions"].to_numpy()
        return cls(movie_of_item, title_of_item, popularity / max(popularity.sum(), 1.0), scorable)


class TopKRanker:
    """Encoded sessions in, top-k (item ids, scores, fallback flags) out."""

    def __init__(
        self,
        logits: LogitsFunction,
        max_length: int,
        popularity: np.ndarray,
        scorable: np.ndarray | None = None,
        batch_size: int = 256,
    ):
        self.logits = logits
        self.max_length = max_length
        self.popularity = popularity
        # A movie the model may not score (only in the titles file, without title features)
        # is neither recommended nor read from a session: as if the catalogue did not hold it.
        self.is_movie = np.zeros(len(popularity), dtype=bool)
        self.is_movie[movie_ids(len(popularity))] = True
        if scorable is not None:
            self.is_movie &= scorable
        self.movies = np.flatnonzero(self.is_movie)
        self.batch_size = batch_size

    def top_k(
        self, sessions: list[np.ndarray], top_k: int, exclude_seen: bool = False
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per session the best ``top_k`` movies and their scores, fewer when ``exclude_seen``
        leaves fewer movies than that; and whether the session was answered by popularity.

        ``batch_size`` sessions at a time: memory follows the batch (batch x catalogue scores),
        never the number of sessions.
        """
        # Ids below the first movie are padding, null or out-of-vocabulary: not movies.
        sessions = [np.asarray(items, dtype=np.int64) for items in sessions]
        sessions = [items[self.is_movie[np.clip(items, 0, len(self.is_movie) - 1)]] for items in sessions]
        orders: list[np.ndarray] = []
        best: list[np.ndarray] = []
        for start in range(0, len(sessions), self.batch_size):
            batch_orders, batch_best = self._batch_top_k(sessions[start : start + self.batch_size], top_k, exclude_seen)
            orders += batch_orders
            best += batch_best
        fallback = np.array([len(items) == 0 for items in sessions], dtype=bool)
        return orders, best, fallback

    def _batch_top_k(self, sessions: list[np.ndarray], top_k: int, exclude_seen: bool) -> tuple[list, list]:
        scores = np.tile(self.popularity, (len(sessions), 1))
        known = np.flatnonzero([len(items) > 0 for items in sessions])
        if len(known):
            encoded = ItemSequences.from_lists([sessions[index] for index in known])
            scores[known] = _softmax_over(self.logits(encoded.padded(0, len(known), self.max_length - 1)), self.movies)
        scores[:, ~self.is_movie] = EXCLUDED
        if exclude_seen:
            scores[ItemSequences.from_lists(sessions).cells(0, len(sessions))] = EXCLUDED
        order = top_k_order(scores, top_k)
        chosen = np.take_along_axis(scores, order, axis=1)
        allowed = chosen > EXCLUDED
        return [o[a] for o, a in zip(order, allowed)], [c[a] for c, a in zip(chosen, allowed)]


def top_k_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row the columns of the ``k`` highest scores, highest first, equal scores in column order.

    The same as ``np.argsort(-scores, kind="stable")[:, :k]``, without sorting the whole row:
    the k-th highest value is found by partition, the columns above it are kept, and ties at it
    are filled in column order; only those k are sorted.
    """
    rows, columns = scores.shape
    k = min(k, columns)
    if k == 0:
        return np.zeros((rows, 0), dtype=np.int64)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    above = scores > kth
    at = scores == kth
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= room))
    candidates = np.nonzero(chosen)[1].reshape(rows, k)  # row-major: each row's columns ascending
    ranked = np.argsort(-np.take_along_axis(scores, candidates, axis=1), axis=1, kind="stable")
    return np.take_along_axis(candidates, ranked, axis=1)


def run_scorable(run: LoadedRun) -> np.ndarray | None:
    """Which item ids the run's model may recommend; None (every movie) for runs from before titles."""
    return None if run.features is None else run.features.scorable


def run_exclude_seen(run: LoadedRun) -> bool:
    """The run's seen-movie rule, decided from the data when training saved the model
    (run.json); runs from before the rule existed keep seen movies, as they always did."""
    return run.info.exclude_seen


class Recommender:
    """The trained model of a run, answering raw sessions in this process."""

    catalogue_note = ""  # the run has every title and knows every movie: nothing to tell

    def __init__(self, run: LoadedRun):
        movies = read_run_movies(run)
        self.catalogue = ItemCatalogue.from_mapping(movies.mapping, vocabulary_size(run.schema), run_scorable(run))
        self.item_of_movie = movies.item_of_movie()
        self.title_of_movie = movies.title_of_movie()
        self.exclude_seen = run_exclude_seen(run)
        model = run.model
        self.ranker = TopKRanker(
            lambda batch: next_item_scores(model, batch),
            max_sequence_length(run.schema),
            self.catalogue.popularity,
            self.catalogue.scorable,
        )

    def encode(self, movies: list[int]) -> tuple[list[int], list[int]]:
        """(item ids of the known movies, the unknown movie ids), order kept."""
        known, unknown = split_session(movies, self.item_of_movie)
        return [self.item_of_movie[movie] for movie in known], unknown

    def recommend(
        self,
        sessions: list[list[int]],
        session_ids: list | None = None,
        top_k: int = 10,
        exclude_seen: bool | None = None,
    ) -> list[Recommendation]:
        """Top-k for raw sessions; ``exclude_seen`` None follows the run's rule."""
        exclude_seen = self.exclude_seen if exclude_seen is None else exclude_seen
        session_ids = session_ids if session_ids is not None else list(range(len(sessions)))
        encoded = [self.encode(movies) for movies in sessions]
        orders, scores, _ = self.ranker.top_k([items for items, _ in encoded], top_k, exclude_seen)
        return [
            Recommendation(
                session_id=session_ids[index],
                movies=self.catalogue.movie_of_item[orders[index]].tolist(),
                scores=[float(s) for s in scores[index]],
                titles=self.catalogue.title_of_item[orders[index]].tolist(),
                unknown_movies=encoded[index][1],
                fallback=fallback_for(encoded[index][0]),
                exclude_seen=exclude_seen,
            )
            for index in range(len(sessions))
        ]


def _softmax_over(logits: np.ndarray, columns: np.ndarray) -> np.ndarray:
    chosen = logits[:, columns].astype(np.float64)
    chosen = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    probabilities = np.zeros_like(logits, dtype=np.float64)
    probabilities[:, columns] = chosen / chosen.sum(axis=1, keepdims=True)
    return probabilities
