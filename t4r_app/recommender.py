"""Top-k next movies for raw sessions: raw movie ids in, raw ids, scores and titles out.

The documented behaviour for awkward sessions, shared by ``predict`` and ``recommend``:

* movie ids the model never saw are left out of the session and listed in ``unknown_movies``;
* a session with no known movie (empty, or all unknown) gets the most popular movies, with
  ``fallback: most_popular`` and popularity shares as scores;
* a session longer than the model's window keeps its most recent ``max_seq_length - 1``
  movies, the position [MASK] takes after them being the last one seen in training.

Scores are the model's softmax probabilities over movies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from t4r_app.evaluation import movie_ids
from t4r_app.model import max_sequence_length, vocabulary_size
from t4r_app.run_files import ITEM_MAPPING, MODEL_DIR, LoadedRun
from t4r_app.scoring import score_batch
from t4r_app.sequences_io import ItemSequences

FALLBACK = "most_popular"


@dataclass
class Recommendation:
    session_id: object
    movies: list[int]
    scores: list[float]
    titles: list[str]
    unknown_movies: list[int] = field(default_factory=list)
    fallback: str | None = None

    def to_json(self) -> dict:
        line = {"session_id": self.session_id, "movieIndices": self.movies, "scores": self.scores, "titles": self.titles}
        if self.unknown_movies:
            line["unknown_movies"] = self.unknown_movies
        if self.fallback:
            line["fallback"] = self.fallback
        return line


class Recommender:
    def __init__(self, run: LoadedRun):
        self.model = run.model
        self.max_length = max_sequence_length(run.schema)
        vocabulary = vocabulary_size(run.schema)
        mapping = pd.read_parquet(Path(run.run_dir) / MODEL_DIR / ITEM_MAPPING)
        self.item_of_movie = dict(zip(mapping["movie_index"].tolist(), mapping["item_id"].tolist()))
        self.movie_of_item = np.full(vocabulary, -1, dtype=np.int64)
        self.movie_of_item[mapping["item_id"].to_numpy()] = mapping["movie_index"].to_numpy()
        self.title_of_item = np.full(vocabulary, "", dtype=object)
        self.title_of_item[mapping["item_id"].to_numpy()] = mapping["title"].fillna("").to_numpy()
        self.movies = movie_ids(vocabulary)
        popularity = np.zeros(vocabulary)
        popularity[mapping["item_id"].to_numpy()] = mapping["interactions"].to_numpy()
        self.popularity = popularity / max(popularity.sum(), 1.0)

    def encode(self, movies: list[int]) -> tuple[list[int], list[int]]:
        """(item ids of the known movies, the unknown movie ids), order kept."""
        items, unknown = [], []
        for movie in movies:
            item = self.item_of_movie.get(movie)
            if item is None:
                unknown.append(movie)
            else:
                items.append(item)
        return items, unknown

    def recommend(
        self,
        sessions: list[list[int]],
        session_ids: list | None = None,
        top_k: int = 10,
        exclude_seen: bool = False,
        batch_size: int = 256,
    ) -> list[Recommendation]:
        session_ids = session_ids if session_ids is not None else list(range(len(sessions)))
        encoded = [self.encode(movies) for movies in sessions]
        known = [index for index, (items, _) in enumerate(encoded) if items]
        scores = np.zeros((len(sessions), len(self.popularity)))
        if known:
            items = ItemSequences.from_lists([encoded[index][0] for index in known])
            for start in range(0, len(known), batch_size):
                logits = score_batch(self.model, items.padded(start, start + batch_size, self.max_length - 1))
                scores[known[start : start + batch_size]] = _softmax_over(logits, self.movies)
        fallback = np.setdiff1d(np.arange(len(sessions)), known)
        scores[fallback] = self.popularity
        results = []
        for index, (items, unknown) in enumerate(encoded):
            row = scores[index].copy()
            allowed = np.zeros(len(row), dtype=bool)
            allowed[self.movies] = True
            if exclude_seen:
                allowed[items] = False
            candidates = np.flatnonzero(allowed)
            order = candidates[np.argsort(-row[candidates], kind="stable")[:top_k]]
            results.append(
                Recommendation(
                    session_id=session_ids[index],
                    movies=self.movie_of_item[order].tolist(),
                    scores=[float(s) for s in row[order]],
                    titles=self.title_of_item[order].tolist(),
                    unknown_movies=unknown,
                    fallback=None if items else FALLBACK,
                )
            )
        return results


def _softmax_over(logits: np.ndarray, columns: np.ndarray) -> np.ndarray:
    chosen = logits[:, columns].astype(np.float64)
    chosen = np.exp(chosen - chosen.max(axis=1, keepdims=True))
    probabilities = np.zeros_like(logits, dtype=np.float64)
    probabilities[:, columns] = chosen / chosen.sum(axis=1, keepdims=True)
    return probabilities
