"""Shared test helpers: shards written with the reference `tfrecord` package, and a preprocess runner.

Shards are written with the `tfrecord` package's writer and protobuf classes, not with this
project's codec, so the reader is checked against an independent implementation.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from tfrecord.writer import TFRecordWriter

warnings.filterwarnings("ignore", message="Initializing an NVTabular Dataset in CPU mode")

from t4r_app.config import load_config  # noqa: E402
from t4r_app.data.preprocess import preprocess  # noqa: E402


def session(user: int, movies: list[int], times: list[int]) -> dict:
    return {"userIndex": ([user], "int"), "movieIndices": (movies, "int"), "timestamps": (times, "int")}


def write_shard(path: Path, records: list[dict]) -> Path:
    """Write records given as {feature: (values, 'int'|'float'|'byte')} with the reference writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    for record in records:
        writer.write(record)
    writer.close()
    return path


def write_titles(path: Path, movies) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({str(m): f"Movie {m} (1999)" for m in movies}))
    return path


def run(input_path, output_dir, *overrides: str, titles: str | None = None):
    config = load_config(None, list(overrides))
    return preprocess(config, str(input_path), output_dir, titles_path=titles)


def read_split(data_dir: Path, name: str) -> pd.DataFrame:
    """A split (or sequences/) as a frame with plain Python lists, ordered by its key."""
    files = sorted((Path(data_dir) / name).glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    for column in frame.columns:
        if column.endswith("-list"):
            frame[column] = frame[column].map(list)
    key = "session_index" if "session_index" in frame else "user_index"
    return frame.sort_values(key).reset_index(drop=True)


# ---------------------------------------------------------------- shared fixtures stay as made

# Session fixtures' folders, each with its fingerprint when it was made. Tests run as root here,
# so read-only permissions would not stop a write: instead every test is checked afterwards.
_SHARED: dict[Path, list] = {}


def _fingerprint(folder: Path) -> list:
    return sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*") if f.is_file())


def shared(folder: Path) -> Path:
    """Mark a session fixture's folder as shared: a test that changes anything in it fails."""
    _SHARED[Path(folder)] = _fingerprint(Path(folder))
    return folder


def changed_shared_folders() -> list[Path]:
    """The shared folders changed since they were made or last blamed (each blamed once)."""
    changed = [folder for folder, before in _SHARED.items() if _fingerprint(folder) != before]
    for folder in changed:
        _SHARED[folder] = _fingerprint(folder)  # blame this test, not every test after it
    return changed


@pytest.fixture(autouse=True)
def _shared_fixtures_stay_unchanged():
    yield
    changed = changed_shared_folders()
    if changed:
        pytest.fail(f"this test wrote into shared fixture folders {[str(f) for f in changed]}: "
                    "copy them first (tiny_run_copy) or write under tmp_path")


def movie_of_item(data_dir: Path) -> dict[int, int]:
    mapping = pd.read_parquet(Path(data_dir) / "item_mapping.parquet")
    return dict(zip(mapping["item_id"], mapping["movie_index"]))


def decoded(data_dir: Path, name: str) -> dict[int, list[int]]:
    """{user (or session): [raw movie ids]} of a split."""
    lookup = movie_of_item(data_dir)
    frame = read_split(data_dir, name)
    key = "session_index" if "session_index" in frame else "user_index"
    return {int(k): [lookup[i] for i in items] for k, items in zip(frame[key], frame["item_id-list"])}


@pytest.fixture
def fixture_dataset(tmp_path: Path) -> Path:
    """Two users' records spread over shards out of order, with timestamp ties.

    user 7, time-ordered: 10@100 14@150 11@200 12@300 13@300 15@400
      (12 and 13 tie at 300: 12 comes first in reading order)
    user 3, time-ordered: 30@50 31@60 32@60 33@60 34@70 35@80
      (31, 32 in shard 0 record 1; 33 in shard 10 record 0: shard 0 is read first)
    """
    root = tmp_path / "raw" / "recommendation"
    dataset = root / "dataset"
    write_shard(
        dataset / "data-0.tfrecord",
        [session(7, [12, 13], [300, 300]), session(3, [31, 32, 30], [60, 60, 50])],
    )
    write_shard(
        dataset / "data-10.tfrecord",
        [session(3, [33, 35, 34], [60, 80, 70]), session(7, [15], [400])],
    )
    write_shard(dataset / "data-2.tfrecord", [session(7, [10, 14, 11], [100, 150, 200])])
    write_titles(root / "movie_title_by_index.json", range(10, 40))
    return root.parent


# ---------------------------------------------------------------- model fixtures

TINY_MODEL = [
    "model.d_model=32",
    "model.intermediate_size=64",
    "train.batch_size=64",
    "train.eval_batch_size=256",
    "train.warmup_steps=5",
    "train.learning_rate=0.003",
]


def tiny_config(*overrides: str):
    return load_config(None, [*TINY_MODEL, "train.epochs=3", *overrides])


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A generated set of 400 users and 60 movies, preprocessed with sequences of at most 20
    (shared: tests read it, never write into it)."""
    from t4r_app.input_layout.synthetic import GenerationSpec
    from t4r_app.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("tiny")
    spec = GenerationSpec(users=400, movies=60, seed=3, mean_interactions=25)
    data_dir = run_pipeline(load_config(None, ["max_seq_length=20"]), root / "raw", root / "data", None, generate=spec).data_dir
    shared(root)  # the raw input and the data
    return data_dir


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A 3-epoch run on tiny_data (shared: tests read it, never write into it; a test that
    writes into a run takes ``tiny_run_copy``)."""
    from t4r_app.train.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), tiny_data, run_dir, progress=False)
    return shared(run_dir)


FOUR_EPOCHS = ["train.epochs=4", "train.patience=0", "train.keep_checkpoints=4"]


@pytest.fixture(scope="session")
def four_epoch_run(tiny_data, tmp_path_factory) -> Path:
    """Four epochs on tiny_data, every checkpoint kept: the uninterrupted run that the resume and
    the kill tests compare with (shared: read, never written)."""
    from t4r_app.train.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / "four_epochs"
    train(tiny_config(*FOUR_EPOCHS), tiny_data, run_dir, progress=False)
    return shared(run_dir)


@pytest.fixture
def tiny_run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """This test's own copy of tiny_run, to write into (evaluate writes eval.json, report.md)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "tiny_run"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The demo end to end: `make demo`'s data (3,000 users, 500 movies, seed 7) and config,
    without the zip and the evaluation (the tests evaluate it themselves)."""
    from t4r_app.input_layout.synthetic import GenerationSpec
    from t4r_app.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("demo")
    config = load_config(Path(__file__).parent.parent / "configs" / "demo.yaml")
    spec = GenerationSpec(users=3000, movies=500, seed=7)
    run_dir = run_pipeline(config, root / "raw", root / "data", root / "run", generate=spec, evaluate=False, progress=False).run_dir
    shared(root)
    return run_dir


# ---------------------------------------------------------------- the daily update's second day

NEW_MOVIES = [1000, 1001, 1002]


@pytest.fixture(scope="session")
def day2_raw(tiny_data, tmp_path_factory):
    """tiny_data's records plus a day of 60 new users who watch three new movies, most of all 1000; each
    user's test target is the new movie 1001."""
    raw = tmp_path_factory.mktemp("day2") / "raw"
    shutil.copytree(tiny_data.parent / "raw", raw)
    records = [session(5000 + user, [1000, 1001, 1000, 1002, 1000, 1001], [10**9 + i for i in range(6)]) for user in range(60)]
    write_shard(raw / "recommendation" / "dataset" / "data-4.tfrecord", records)
    titles_path = raw / "recommendation" / "movie_title_by_index.json"
    titles = json.loads(titles_path.read_text())
    titles.update({str(movie): f"A New Movie {movie} (2026)" for movie in NEW_MOVIES})
    titles_path.write_text(json.dumps(titles))
    return shared(raw)


@pytest.fixture(scope="session")
def day2_data(day2_raw, tiny_data, tmp_path_factory):
    return shared(preprocess(load_config(None, ["max_seq_length=20"]), str(day2_raw), tmp_path_factory.mktemp("day2") / "data",
                             vocabulary_from=tiny_data).output_dir)


@pytest.fixture(scope="session")
def day2_run(tiny_run, day2_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("day2") / "run"
    from t4r_app.train.trainer import train

    train(tiny_config("train.epochs=6"), day2_data, run_dir, progress=False, init_from=tiny_run)
    return shared(run_dir)
