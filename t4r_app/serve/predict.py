"""Batch prediction: sessions from JSON lines or parquet in, top-k recommendations as JSON lines out.

Input rows are ``{"session_id": ..., "movieIndices": [raw movie ids, oldest first]}``;
``session_id`` is optional (the line number is used). See ``protocol`` and ``recommender`` for
how unknown ids, empty and over-long sessions are handled.

Light at import: answering in this process loads the run (torch, Transformers4Rec) only when
asked to, so ``predict --server`` without ``--run`` needs neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from t4r_app.errors import PredictInputError, RunError
from t4r_app.serve.protocol import SessionRecommender

SESSION_ID = "session_id"
MOVIES = "movieIndices"


@dataclass
class PredictSummary:
    sessions: int
    unknown_movies: int
    fallbacks: int
    output: Path
    exclude_seen: bool  # whether the sessions' own movies were left out
    catalogue_note: str = ""  # what the answers lack (titles, unknown ids) when no catalogue was at hand


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
    """(session ids, sessions) from a .jsonl/.json-lines file or a parquet file or folder."""
    path = Path(path)
    if not path.exists():
        raise PredictInputError(f"sessions file not found: {path}")
    if path.suffix == ".parquet" or path.is_dir():
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise PredictInputError(f"{path}: not a readable parquet file ({str(error)[:300]})") from None
        if MOVIES not in frame:
            raise PredictInputError(f"{path}: no '{MOVIES}' column (columns: {', '.join(frame.columns)})")
        ids = frame[SESSION_ID].tolist() if SESSION_ID in frame else list(range(len(frame)))
        sessions = [_movie_list(v, f"{path}, row {i}") for i, v in enumerate(frame[MOVIES])]
        return [i.item() if hasattr(i, "item") else i for i in ids], sessions
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
    except UnicodeDecodeError as error:
        raise PredictInputError(f"{path}, after line {number}: not UTF-8 text ({error.reason})") from None
    return ids, sessions


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
    run_dir: str | Path | None, server: str | None = None, protocol: str | None = None
) -> SessionRecommender:
    """A client of the Triton server at ``server`` (titles and known movies from ``run_dir`` when
    given, else from the server), or without ``server`` the run's model in this process."""
    if server:
        from t4r_app.serve.triton_client import TritonRecommender

        return TritonRecommender(server, run_dir, protocol)
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
    protocol: str | None = None,
) -> PredictSummary:
    """Top-k per session into ``output_path``; ``exclude_seen`` None follows the run's rule
    (or, with ``server``, the served ensemble's). ``run_dir`` may be None with ``server``."""
    ids, sessions = read_sessions(input_path)
    recommender = make_recommender(run_dir, server, protocol)
    results = recommender.recommend(sessions, ids, top_k=top_k, exclude_seen=exclude_seen)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "w") as handle:
        for result in results:
            handle.write(json.dumps(result.to_json()) + "\n")
    return PredictSummary(
        sessions=len(results),
        unknown_movies=sum(len(r.unknown_movies) for r in results),
        fallbacks=sum(r.fallback is not None for r in results),
        output=output_path,
        exclude_seen=results[0].exclude_seen if results else bool(exclude_seen),
        catalogue_note=recommender.catalogue_note,
    )
