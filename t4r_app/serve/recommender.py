"""Top-k next movies for raw sessions: raw movie ids in, raw ids, scores and titles out.

The documented behaviour for awkward sessions, shared by ``predict``, ``recommend`` and the
Triton ensemble (which uses ``TopKRanker`` too):

* movie ids the model never saw are left out of the session (and listed in ``unknown_movies``
  where the answer has room for it);
* a session with no known movie (empty, or all unknown) gets the most popular movies, with
  ``fallback: most_popular`` and popularity shares as scores (these two rules are
  ``contract.split_session`` and ``contract.fallback_for``, which the Triton client applies too);
* a session longer than the model reads keeps its most recent ``LoadedRun.session_length``
  movies (BERT4Rec: the window less the position [MASK] takes after them).

Whether a session's own movies are left out is the run's rule (``run_exclude_seen``: decided
from ``serve.exclude_seen`` and the data when the model was saved); a caller may override it.

Scores are the model's softmax probabilities over movies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from t4r_app.data.item_sequences import ItemSequences
from t4r_app.model.architecture import vocabulary_size
from t4r_app.model.inference import next_item_scores
from t4r_app.model.saved_run import LoadedRun
from t4r_app.serve.contract import Recommendation, fallback_for, split_session
from t4r_app.serve.run_movies import read_run_movies
from workflow.columns import EXCLUDED, movie_ids

LogitsFunction = Callable[[np.ndarray], np.ndarray]
"""Scores over every item id for a right-padded (sessions, length) batch of item ids (numpy or torch, on the CPU)."""


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
        session_length: int,
        popularity: np.ndarray,
        scorable: np.ndarray | None = None,
        batch_size: int = 256,
    ):
        self.logits = logits
        self.session_length = session_length  # the model reads this many latest items (model.inference_length)
        # A movie the model may not score (only in the titles file, without title features)
        # is neither recommended nor read from a session: as if the catalogue did not hold it.
        self.is_movie = np.zeros(len(popularity), dtype=bool)
        self.is_movie[movie_ids(len(popularity))] = True
        if scorable is not None:
            self.is_movie &= scorable
        self.not_movies = torch.as_tensor(np.flatnonzero(~self.is_movie))
        # A session with no known movie is answered by popularity, over the movies only.
        self.popularity_scores = torch.as_tensor(popularity, dtype=torch.float32).unsqueeze(0)
        self.popularity_scores.index_fill_(1, self.not_movies, EXCLUDED)
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
        # float32 torch, with non-movies left out by index (a boolean mask over 50k columns costs
        # as much as the softmax): at 50k movies and 64 sessions, the float64 numpy softmax,
        # masking and partition this replaces cost 5x the model's forward pass.
        known = [index for index, items in enumerate(sessions) if len(items)]
        if len(known) == len(sessions):
            scores = self._probabilities(sessions)
        else:  # a session with no known movie is answered by popularity
            scores = self.popularity_scores.expand(len(sessions), -1).clone()
            if known:
                scores[known] = self._probabilities([sessions[index] for index in known])
        if exclude_seen:
            rows, items = ItemSequences.from_lists(sessions).cells(0, len(sessions))
            scores[torch.as_tensor(rows), torch.as_tensor(items)] = EXCLUDED
        order = top_k_order(scores, top_k)
        chosen = scores.gather(1, order)
        allowed = chosen > EXCLUDED
        return [o[a].numpy() for o, a in zip(order, allowed)], [c[a].numpy() for c, a in zip(chosen, allowed)]

    def _probabilities(self, sessions: list[np.ndarray]) -> torch.Tensor:
        """Softmax over the movies for sessions that hold a known movie; EXCLUDED where an id is not a movie."""
        encoded = ItemSequences.from_lists(sessions)
        logits = torch.as_tensor(self.logits(encoded.padded(0, len(sessions), self.session_length))).float()
        probabilities = logits.index_fill_(1, self.not_movies, EXCLUDED).softmax(dim=1)
        return probabilities.index_fill_(1, self.not_movies, EXCLUDED)


def top_k_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per row the columns of the ``k`` highest scores, highest first, equal scores in column order.

    The same as a stable descending argsort's first ``k`` columns, without sorting the whole row.
    ``topk`` of k + 1 finds the k highest; where the (k+1)-th ties with the k-th, which tied
    columns make the cut is decided in column order, on those rows only.
    """
    rows, columns = scores.shape
    k = min(k, columns)
    if k == 0:
        return torch.zeros((rows, 0), dtype=torch.long)
    values, indices = torch.topk(scores, min(k + 1, columns), dim=1)
    order = indices[:, :k].sort(dim=1).values  # the chosen columns, ascending
    if k < columns:
        crowded = values[:, k] == values[:, k - 1]
        if crowded.any():
            order[crowded] = _first_columns_at_or_above(scores[crowded], values[crowded, k - 1 : k], k)
    ranked = torch.sort(scores.gather(1, order), dim=1, descending=True, stable=True).indices
    return order.gather(1, ranked)


def _first_columns_at_or_above(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Per row the columns above ``kth``, then the first columns equal to it, up to ``k`` in all, ascending."""
    above = scores > kth
    at = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    return (above | (at & (at.cumsum(dim=1) <= room))).nonzero()[:, 1].reshape(len(scores), k)


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
            run.session_length,
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

