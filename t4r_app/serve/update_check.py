"""Before and after a daily update: the served model and its successor on the newest sessions.

``evaluate`` scores one run on the data it was trained on (``evaluate --against`` calls this too). After an update the question is
another one: on the users who came back since the old data, does the new model answer
better than the one being served? Both models answer the same raw sessions through
``Recommender`` (as ``predict`` and the server do), so the old model meets the new movies as
movies it does not know, exactly as it would in production.

The newest sessions are the new data's test rows of users whose history grew since the old
data (a user absent there, or with another test sequence): their target is an interaction
the old model never saw. Ranked over all movies with the run's seen-movie rule, top ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from t4r_app.data.item_sequences import read_split
from t4r_app.evaluate.metrics import ndcg_per_row
from t4r_app.model.saved_run import ITEM_MAPPING

CHUNK = 512  # sessions answered at a time


@dataclass(frozen=True)
class UpdateQuality:
    k: int
    newest_rows: int  # test rows of users whose history grew
    test_rows: int
    new_movie_targets: int  # newest rows whose target the old data did not have
    old_hr: float
    old_ndcg: float
    new_hr: float
    new_ndcg: float
    old_hr_new_movies: float  # on the rows whose target is a new movie (0 for the old model: it cannot name them)
    new_hr_new_movies: float


def _raw_sessions(data_dir: Path) -> tuple[np.ndarray, list[list[int]]]:
    """Each test row's user and its whole sequence as raw movie ids (the target last)."""
    mapping = pd.read_parquet(data_dir / ITEM_MAPPING)
    movie_of_item = dict(zip(mapping["item_id"].tolist(), mapping["movie_index"].tolist()))
    test = read_split(data_dir, "test")
    return test.users, [[movie_of_item[item] for item in test.items.row(i)] for i in range(len(test.users))]


def _came_back(old_data: Path, users: np.ndarray, sessions: list[list[int]]) -> np.ndarray:
    """Mask over the new data's test rows (``users``, ``sessions``): the user's test sequence is
    not the one in ``old_data``."""
    old_users, old_sessions = _raw_sessions(old_data)
    before = {int(user): session for user, session in zip(old_users, old_sessions)}
    return np.array([before.get(int(user)) != session for user, session in zip(users, sessions)], dtype=bool)


def _hits(recommender, sessions: list[list[int]], k: int) -> np.ndarray:
    """The 1-based rank of each session's target in the model's top k, 0 where it is not there."""
    ranks = np.zeros(len(sessions), dtype=np.int64)
    for start in range(0, len(sessions), CHUNK):
        chunk = sessions[start : start + CHUNK]
        answers = recommender.recommend([session[:-1] for session in chunk], top_k=k)
        for offset, (session, answer) in enumerate(zip(chunk, answers)):
            if session[-1] in answer.movies:
                ranks[start + offset] = answer.movies.index(session[-1]) + 1
    return ranks


def compare_update(old_run: str | Path, new_run: str | Path, old_data: str | Path, new_data: str | Path,
                   k: int = 10) -> UpdateQuality:
    """The old and the new run's HR@k and NDCG@k on ``new_data``'s newest test rows; see the module doc."""
    from t4r_app.model.saved_run import load_run
    from t4r_app.serve.recommender import Recommender

    old_data, new_data = Path(old_data), Path(new_data)
    users, sessions = _raw_sessions(new_data)
    newest = _came_back(old_data, users, sessions)
    chosen = [session for session, keep in zip(sessions, newest) if keep]
    known_before = set(pd.read_parquet(old_data / ITEM_MAPPING)["movie_index"].tolist())
    new_target = np.array([session[-1] not in known_before for session in chosen], dtype=bool)
    ranks = {name: _hits(Recommender(load_run(run)), chosen, k) for name, run in (("old", old_run), ("new", new_run))}

    def hr(name: str, rows: np.ndarray | None = None) -> float:
        values = ranks[name] if rows is None else ranks[name][rows]
        return round(float((values > 0).mean()), 4) if len(values) else 0.0

    def ndcg(name: str) -> float:
        values = np.where(ranks[name] > 0, ranks[name], k + 1)  # a miss ranks below the top k
        return round(float(ndcg_per_row(values, k).mean()), 4) if len(values) else 0.0

    return UpdateQuality(
        k=k,
        newest_rows=len(chosen),
        test_rows=len(sessions),
        new_movie_targets=int(new_target.sum()),
        old_hr=hr("old"),
        old_ndcg=ndcg("old"),
        new_hr=hr("new"),
        new_ndcg=ndcg("new"),
        old_hr_new_movies=hr("old", new_target),
        new_hr_new_movies=hr("new", new_target),
    )


def format_update_quality(quality: UpdateQuality) -> str:
    k = quality.k
    return "\n".join([
        f"newest sessions  {quality.newest_rows:,} of {quality.test_rows:,} test users came back since the old data "
        f"({quality.new_movie_targets:,} of them to a new movie)",
        f"served model     HR@{k} {quality.old_hr:.4f}  NDCG@{k} {quality.old_ndcg:.4f}  new-movie HR@{k} {quality.old_hr_new_movies:.4f}",
        f"updated model    HR@{k} {quality.new_hr:.4f}  NDCG@{k} {quality.new_ndcg:.4f}  new-movie HR@{k} {quality.new_hr_new_movies:.4f}",
    ])
