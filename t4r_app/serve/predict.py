"""Batch prediction: sessions from JSON lines or parquet in, top-k recommendations as JSON lines out.

Input rows are ``{"session_id": ..., "movieIndices": [raw movie ids, oldest first]}``;
``session_id`` is optional (the line number, or the parquet row, is used). See ``contract`` and
``recommender`` for how unknown ids, empty and over-long sessions are handled.

Streamed: sessions are read, answered and written CHUNK_SESSIONS at a time, so memory follows
the chunk (and the ranker's batch x catalogue scores), never the number of sessions. The
answers go to a temporary sibling of the output that replaces it only when every session is
written: a bad line found late leaves no half-written file behind.

Light at import: answering in this process loads the run (torch, Transformers4Rec) only when
asked to, so ``predict --server`` without ``--run`` needs neither.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from t4r_app.atomic import leftovers, partial_sibling
from t4r_app.errors import PredictInputError, RunError
from t4r_app.serve.contract import SessionRecommender

SESSION_ID = "session_id"
MOVIES = "movieIndices"
CHUNK_SESSIONS = 4096  # read, answered and written at a time


@dataclass
class PredictSummary:
    sessions: int
    unknown_movies: int
    fallbacks: int
    output: Path
    exclude_seen: bool  # whether the sessions' own movies were left out
    catalogue_note: str = ""  # what the answers lack (titles, unknown ids) when no catalogue was at hand
    seconds: float = 0.0  # reading, answering and writing, the model's loading left out

    @property
    def sessions_per_second(self) -> float:
        return self.sessions / self.seconds if self.seconds else 0.0

    def describe(self, top_k: int) -> str:
        """What ``predict`` prints (the seen-movie rule and the catalogue note are the CLI's)."""
        return (
            f"wrote top-{top_k} for {self.sessions:,} sessions to {self.output} in {self.seconds:.1f} s "
            f"({self.sessions_per_second:,.0f} sessions/s; {self.unknown_movies:,} unknown movie ids left out, "
            f"{self.fallbacks:,} sessions answered by popularity because no movie was known)"
        )


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _movie_list(value, where: str) -> list[int]:
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or any(isinstance(m, bool) or not isinstance(m, int) for m in value):
        raise PredictInputError(f"{where}: '{MOVIES}' must be a list of integer movie ids, got {_short(value)}")
    return value


def read_sessions(path: str | Path) -> tuple[list, list[list[int]]]:
    """(session ids, sessions) of a whole .jsonl/.json-lines file or parquet file or folder."""
    ids: list = []
    sessions: list[list[int]] = []
    for chunk_ids, chunk_sessions in iter_sessions(path):
        ids += chunk_ids
        sessions += chunk_sessions
    return ids, sessions


def checked_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise PredictInputError(f"sessions file not found: {path}")
    return path


def iter_sessions(path: str | Path, chunk: int = CHUNK_SESSIONS) -> Iterator[tuple[list, list[list[int]]]]:
    """(session ids, sessions), ``chunk`` sessions at a time, from JSON lines or parquet."""
    path = checked_path(path)
    if path.suffix == ".parquet" or path.is_dir():
        yield from _parquet_sessions(path, chunk)
        return
    ids, sessions = [], []
    number = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                session_id, movies = parse_session_line(line, number, f"{path}, line {number}")
                ids.append(session_id)
                sessions.append(movies)
                if len(sessions) == chunk:
                    yield ids, sessions
                    ids, sessions = [], []
    except UnicodeDecodeError as error:
        raise PredictInputError(f"{path}, after line {number}: not UTF-8 text ({error.reason})") from None
    if sessions:
        yield ids, sessions


def _parquet_sessions(path: Path, chunk: int) -> Iterator[tuple[list, list[list[int]]]]:
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, format="parquet")
        names = dataset.schema.names
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise PredictInputError(f"{path}: not a readable parquet file ({str(error)[:300]})") from None
    if MOVIES not in names:
        raise PredictInputError(f"{path}: no '{MOVIES}' column (columns: {', '.join(names)})")
    columns = [MOVIES] + ([SESSION_ID] if SESSION_ID in names else [])
    row = 0
    try:
        for batch in dataset.to_batches(columns=columns, batch_size=chunk):
            movies = batch.column(MOVIES).to_pylist()
            ids = batch.column(SESSION_ID).to_pylist() if SESSION_ID in columns else list(range(row, row + len(movies)))
            yield ids, [_movie_list(value, f"{path}, row {row + offset}") for offset, value in enumerate(movies)]
            row += len(movies)
    except (OSError, ValueError) as error:
        raise PredictInputError(f"{path}, after row {row}: not a readable parquet file ({str(error)[:300]})") from None


def parse_session_line(line: str, number: int, where: str) -> tuple[object, list[int]]:
    """(session id, raw movie ids) of one JSON line; the id defaults to the line number.

    Any JSON value is kept as the id; movie ids may be any integer (ids the run does not
    know, however large, are left out and listed as unknown).
    """
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise PredictInputError(f"{where}: not valid JSON ({error.msg})") from None
    except (ValueError, RecursionError) as error:  # a number of over 4300 digits; nesting too deep
        raise PredictInputError(f"{where}: not usable JSON ({str(error)[:200]})") from None
    if not isinstance(row, dict) or MOVIES not in row:
        raise PredictInputError(f"{where}: expected an object with '{MOVIES}'")
    return row.get(SESSION_ID, number), _movie_list(row[MOVIES], where)


def make_recommender(
    run_dir: str | Path | None, server: str | None = None, transport: str | None = None
) -> SessionRecommender:
    """A client of the Triton server at ``server`` (titles and known movies from ``run_dir`` when
    given, else from the server), or without ``server`` the run's model in this process."""
    if server:
        from t4r_app.serve.triton_client import TritonRecommender

        return TritonRecommender(server, run_dir, transport)
    if run_dir is None:
        raise RunError("nothing to answer with: give --run RUN_DIR (the model in this process) or --server HOST:PORT")
    from t4r_app.model.saved_run import load_run
    from t4r_app.serve.recommender import Recommender

    return Recommender(load_run(run_dir))


def predict(
    run_dir: str | Path | None,
    input_path: str | Path,
    output_path: str | Path,
    top_k: int = 10,
    exclude_seen: bool | None = None,
    server: str | None = None,
    transport: str | None = None,
    progress: bool = False,
    chunk: int = CHUNK_SESSIONS,
) -> PredictSummary:
    """Top-k per session into ``output_path``, ``chunk`` sessions at a time; ``exclude_seen`` None
    follows the run's rule (or, with ``server``, the served ensemble's). ``run_dir`` may be None
    with ``server``. The output appears only once every session is answered."""
    from tqdm.auto import tqdm

    checked_path(input_path)  # before the model loads: a typo should not cost its loading
    recommender = make_recommender(run_dir, server, transport)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in leftovers(output_path):
        stale.unlink(missing_ok=True)
    partial = partial_sibling(output_path)
    sessions = unknown = fallbacks = 0
    seen_rule = bool(exclude_seen)
    started = time.perf_counter()
    try:
        with open(partial, "w") as handle, tqdm(desc="predict", unit=" sessions", disable=not progress) as bar:
            for ids, chunk_sessions in iter_sessions(input_path, chunk):
                results = recommender.recommend(chunk_sessions, ids, top_k=top_k, exclude_seen=exclude_seen)
                handle.writelines(json.dumps(result.to_json()) + "\n" for result in results)
                sessions += len(results)
                unknown += sum(len(result.unknown_movies) for result in results)
                fallbacks += sum(result.fallback is not None for result in results)
                seen_rule = results[0].exclude_seen if results else seen_rule
                bar.update(len(results))
        os.replace(partial, output_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return PredictSummary(
        sessions=sessions,
        unknown_movies=unknown,
        fallbacks=fallbacks,
        output=output_path,
        exclude_seen=seen_rule,
        catalogue_note=recommender.catalogue_note,
        seconds=round(time.perf_counter() - started, 3),
    )
