"""What the serving ensemble and its clients agree on, light enough for a client that only talks to a server.

Stdlib and numpy only (plus the project's error classes and title rule): the ensemble's name and tensors, the
request limits, the parameters export writes into the model's config for clients to read, the
``Recommendation`` every path answers with, and the one rule for unknown movies:

* movie ids the model never saw are left out of the session and listed in ``unknown_movies``;
* a session with no known movie (empty, or all unknown) is answered by popularity, with
  ``fallback: most_popular``.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from t4r_app.errors import SessionError, TitleError
from t4r_app.serve.titles import find_movie

ENSEMBLE_NAME = "executor_model"
REQUEST_COLUMN = "movieIndices"
VALUES_INPUT, OFFSETS_INPUT = f"{REQUEST_COLUMN}__values", f"{REQUEST_COLUMN}__offsets"
MOVIE_IDS, SCORES = "movie_ids", "scores"
NO_MOVIE = -1  # fills an answer row where leaving seen movies out leaves fewer than k
# Parameters of the ensemble's config.pbtxt, written at export for clients to read from the server.
EXCLUDE_SEEN_PARAMETER = "exclude_seen"  # JSON bool: the seen-movie rule baked into the ensemble
# Exports from before the catalogue model carried the catalogue in this parameter: JSON {raw movie id: title}.
MOVIE_TITLES_PARAMETER = "movie_titles"
# The served catalogue: a model beside the ensemble, answering every movie a session may hold
# and its title (no inputs), read from its own file in the repository.
CATALOGUE_MODEL = "movie_catalogue"
CATALOGUE_MOVIES, CATALOGUE_TITLES = "movie_ids", "titles"
CATALOGUE_FILE = "movies.json"
# What one request may carry. Requests are answered together (the server's dynamic batcher
# merges those that wait), 256 sessions scored at a time against the catalogue; the caps keep
# one request's decoding, seen-movie rule and answer bounded (8 MB of INT64 values at most).
# One session may be that long: only its latest movies are scored (the model's inference length), all of them
# count as seen. TritonRecommender splits larger batches into requests that fit.
MAX_SESSIONS_PER_REQUEST = 1024
MAX_MOVIES_PER_REQUEST = 1_000_000

FALLBACK = "most_popular"


@dataclass
class Recommendation:
    session_id: object
    movies: list[int]
    scores: list[float]
    titles: list[str]
    unknown_movies: list[int] = field(default_factory=list)
    fallback: str | None = None
    exclude_seen: bool = False  # whether the session's own movies were left out

    def to_json(self) -> dict:
        line = {
            "session_id": self.session_id,
            "movieIndices": self.movies,
            "scores": self.scores,
            "titles": self.titles,
            "exclude_seen": self.exclude_seen,
        }
        if self.unknown_movies:
            line["unknown_movies"] = self.unknown_movies
        if self.fallback:
            line["fallback"] = self.fallback
        return line


def format_sessions(rows: Iterable[dict]) -> str:
    """Answers as ``Recommendation.to_json`` writes them (predictions lines), one block per session."""
    lines = []
    for row in rows:
        note = f" ({row['fallback']})" if row.get("fallback") else ""
        lines.append(f"session {row['session_id']}{note}")
        for rank, (movie, title, score) in enumerate(zip(row["movieIndices"], row["titles"], row["scores"]), start=1):
            lines.append(f"  {rank:>2}. {title:<40} movie {movie:<7} score {score:.4f}")
    return "\n".join(lines)


def format_ranking(result: Recommendation) -> str:
    """One session's answer as the ranked table ``recommend`` prints."""
    lines = [f"{'rank':>4}  {'title':<44} {'movie':>7}  score"]
    for rank, (movie, title, score) in enumerate(zip(result.movies, result.titles, result.scores), start=1):
        lines.append(f"{rank:>4}  {title[:44]:<44} {movie:>7}  {score:.4f}")
    return "\n".join(lines)


def split_session(session: Iterable[int], known: Container[int] | None) -> tuple[list[int], list[int]]:
    """(the session's known movies, its unknown movie ids), order kept; ``known`` None: every id is known
    (a client without the catalogue, which cannot tell)."""
    if known is None:
        return list(session), []
    kept, unknown = [], []
    for movie in session:
        (kept if movie in known else unknown).append(movie)
    return kept, unknown


def fallback_for(known_movies: Sequence[int]) -> str | None:
    """How a session whose known movies are ``known_movies`` is answered: by popularity when there are none."""
    return None if len(known_movies) else FALLBACK


def encode_request(sessions: Sequence[Sequence[int]], batched: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A batch of sessions as merlin's ragged pair: flat INT64 values and INT32 row offsets.

    ``batched``: with the leading batch dimension of 1 that an ensemble batching requests on the
    server takes (values ``[1, movies]``, offsets ``[1, sessions + 1]``).
    """
    # Imported here, where a request is built: importing the contract stays numpy-light.
    from workflow.list_columns import to_flat

    values, offsets = to_flat(sessions)
    offsets = offsets.astype(np.int32)
    return (values[None], offsets[None]) if batched else (values, offsets)


def merge_requests(requests: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Checked ragged pairs of several requests as one (values one after another, offsets shifted
    onto them), and how many sessions each request brought, to split the answers back."""
    values = np.concatenate([values for values, _ in requests])
    starts = np.cumsum([0] + [len(values) for values, _ in requests[:-1]])
    offsets = np.concatenate([[0]] + [start + offsets[1:].astype(np.int64) for start, (_, offsets) in zip(starts, requests)])
    return values, offsets, [len(offsets) - 1 for _, offsets in requests]


def request_batches(sessions: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """(start, stop) runs of sessions that each fit in one request (the server's limits)."""
    batches, start, movies = [], 0, 0
    for index, session in enumerate(sessions):
        full = index - start >= MAX_SESSIONS_PER_REQUEST or movies + len(session) > MAX_MOVIES_PER_REQUEST
        if full and index > start:  # a single session over the movie limit goes alone; the server says why
            batches.append((start, index))
            start, movies = index, 0
        movies += len(session)
    if len(sessions) > start or not batches:
        batches.append((start, len(sessions)))
    return batches


def request_problem(values: np.ndarray | None, offsets: np.ndarray | None) -> str | None:
    """What is wrong with a request's ragged ``movieIndices`` pair (1-D, or one batch row of an
    ensemble that batches requests), or None when it is sound."""
    if values is None or offsets is None:
        return f"the request needs both {VALUES_INPUT} and {OFFSETS_INPUT}"
    if values.ndim == 2 and offsets.ndim == 2:  # an ensemble that batches requests: one batch row each
        if values.shape[0] != 1 or offsets.shape[0] != 1:
            return (
                f"a request carries its sessions as one batch row: {VALUES_INPUT} [1, movies] and {OFFSETS_INPUT} "
                f"[1, sessions + 1], got {list(values.shape)} and {list(offsets.shape)}"
            )
        values, offsets = values[0], offsets[0]
    if values.ndim != 1:
        return f"{VALUES_INPUT} must be one-dimensional (every session's movies, one after another), got shape {values.shape}"
    if offsets.ndim != 1 or len(offsets) < 2:
        return f"{OFFSETS_INPUT} must hold one more entry than there are sessions (at least 2), got shape {offsets.shape}"
    if len(offsets) - 1 > MAX_SESSIONS_PER_REQUEST:
        return (
            f"a request may carry at most {MAX_SESSIONS_PER_REQUEST} sessions, got {len(offsets) - 1}: "
            "split them over several requests"
        )
    if len(values) > MAX_MOVIES_PER_REQUEST:
        return (
            f"a request may carry at most {MAX_MOVIES_PER_REQUEST} movies in all its sessions, got {len(values)}: "
            "split them over several requests (only a session's last movies are scored anyway)"
        )
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != len(values):
        return (
            f"{OFFSETS_INPUT} must start at 0, never decrease and end at the number of values "
            f"({len(values)}); got {offsets.tolist()[:8]}{'...' if len(offsets) > 8 else ''}"
        )
    return None


def decode_movie_titles(parameters: dict) -> dict[int, str] | None:
    """{raw movie id: title} from a served model config's ``parameters`` (as JSON), where exports from
    before the catalogue model kept it; None for ensembles exported before either."""
    parameter = parameters.get(MOVIE_TITLES_PARAMETER)
    if parameter is None:
        return None
    return {int(movie): title for movie, title in json.loads(parameter["string_value"]).items()}


def decode_exclude_seen(parameters: dict) -> bool:
    """The served seen-movie rule; ensembles exported before the rule existed rank every movie."""
    return json.loads(parameters.get(EXCLUDE_SEEN_PARAMETER, {}).get("string_value", "false"))


class SessionRecommender(Protocol):
    """What ``Recommender`` (in process) and ``TritonRecommender`` (a server) both offer."""

    title_of_movie: dict[int, str]
    catalogue_note: str

    def recommend(
        self, sessions: list[list[int]], session_ids: list | None = None, top_k: int = 10, exclude_seen: bool | None = None
    ) -> list[Recommendation]: ...


def recommend_one(
    recommender: SessionRecommender,
    session: list[int],
    top_k: int = 10,
    exclude_seen: bool | None = None,
    titles: Sequence[str] = (),
) -> Recommendation:
    """The answer for one session given on the command line (``t4r-app recommend``): movie ids, then
    movies found by ``titles``. A session that is empty, or whose movies are all unknown, is an
    error here rather than a popularity answer: whoever typed it should know."""
    if titles and not recommender.title_of_movie:
        raise TitleError(f"--titles needs the movies' titles, and none are at hand: {recommender.catalogue_note}")
    session = list(session) + [find_movie(title, recommender.title_of_movie) for title in titles]
    if not session:
        raise SessionError("the session is empty: give --session 12,45,7 or --titles 'Title (Year)' ...")
    result = recommender.recommend([session], top_k=top_k, exclude_seen=exclude_seen)[0]
    if result.unknown_movies and result.fallback:
        unknown = ", ".join(map(str, result.unknown_movies))
        raise SessionError(f"none of the session's movies is known to the model (unknown ids: {unknown})")
    return result
