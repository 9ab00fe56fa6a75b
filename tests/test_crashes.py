"""Crashes leave nothing half-done: real CLI processes killed with SIGKILL mid-way.

Each test starts ``python -m t4r_app ...``, waits for a file that shows the stage was reached
(Categorify's vocabulary during the ETL's Dask stage, a checkpoint being written, the export's
temporary sibling), kills the process with SIGKILL, and checks what the next command does:
it refuses the partial output with a message that says how to recover, and the recovery
(``preprocess`` again, ``train --resume``, ``export`` again) gives what an uninterrupted run gives.
"""

from __future__ import annotations

import csv
import json
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import FOUR_EPOCHS, TINY_MODEL, read_split, run, tiny_config

from t4r_app.input_layout.synthetic import GenerationSpec, generate_dataset
from t4r_app.errors import PreprocessError, RunError, TrainingError
from t4r_app.model.saved_run import MODEL_DIR, load_run
from t4r_app.serve.export import EXPORT_INFO, export_run, load_exported
from t4r_app.serve.triton_server import check_repository
from t4r_app.train.trainer import CHECKPOINT_COMPLETE, train

pytestmark = pytest.mark.slow  # subprocesses killed mid-stage, dask clusters

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 120
SETTINGS = ["max_seq_length=20", "preprocess.partitions=2"]


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "t4r_app", *args], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def _kill_when(process: subprocess.Popen, reached, poll_s: float = 0.005) -> None:
    """SIGKILL ``process`` (and its process group) as soon as ``reached()`` is true."""
    deadline = time.monotonic() + WAIT_S
    while not reached():
        if process.poll() is not None:
            raise AssertionError(f"finished before the stage was reached: {process.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the stage was not reached in time")
        time.sleep(poll_s)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _validation_ndcgs(run_dir: Path) -> list[str]:
    with open(run_dir / "training_log.csv") as handle:
        return [row["valid_ndcg@10"] for row in csv.DictReader(handle)]


def _digests(data_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(data_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("interactions", "sequences", "train", "valid", "test", "categories")
        for p in sorted((data_dir / folder).rglob("*.parquet"))
    } | {"item_mapping.parquet": hashlib.sha256((data_dir / "item_mapping.parquet").read_bytes()).hexdigest()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crash_raw")
    generate_dataset(GenerationSpec(users=200, movies=40, seed=11, shards=2, mean_interactions=15), root)
    return root


def test_preprocess_killed_in_the_dask_stage_is_refused_and_a_rerun_is_identical(raw, tmp_path):
    data = tmp_path / "data"
    process = _start("preprocess", "--input", str(raw), "--output", str(data), *SETTINGS)
    _kill_when(process, lambda: (data / "categories").is_dir())  # Categorify is fitting on Dask
    assert not (data / "stats.json").exists()

    with pytest.raises(TrainingError, match="looks half-written .*run `t4r-app preprocess` again"):
        train(tiny_config(), data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

    rerun = run(raw, data, *SETTINGS)
    fresh = run(raw, tmp_path / "fresh", *SETTINGS)
    assert _digests(data) == _digests(tmp_path / "fresh")
    assert len(_digests(data)) > 6
    assert {k: v for k, v in rerun.stats.to_json().items() if k != "timings_s"} == {
        k: v for k, v in fresh.stats.to_json().items() if k != "timings_s"
    }


def test_train_killed_while_checkpointing_refuses_and_resumes_to_the_same_metrics(tiny_data, four_epoch_run, tmp_path):
    overrides = FOUR_EPOCHS
    straight = json.loads((four_epoch_run / "metrics.json").read_text())
    steps = len(list((four_epoch_run / "checkpoints").glob("checkpoint-*")))
    assert steps == 4
    epoch = min(int(p.name.split("-")[1]) for p in (four_epoch_run / "checkpoints").glob("checkpoint-*"))

    run_dir = tmp_path / "killed"
    second = run_dir / "checkpoints" / f"checkpoint-{2 * epoch}"
    process = _start("train", "--data", str(tiny_data), "--output", str(run_dir), "--quiet",
                     *TINY_MODEL, *overrides)
    _kill_when(process, second.is_dir)  # the Trainer has begun writing the second checkpoint
    # Whether the kill came during the write or just after it, make the second checkpoint torn:
    # no completion mark, and a truncated RNG state, as a kill inside torch.save leaves it.
    (second / CHECKPOINT_COMPLETE).unlink(missing_ok=True)
    if (second / "rng_state.pth").exists():
        (second / "rng_state.pth").write_bytes((second / "rng_state.pth").read_bytes()[:10])
    assert (run_dir / "checkpoints" / f"checkpoint-{epoch}" / CHECKPOINT_COMPLETE).is_file()

    for use in (lambda: load_run(run_dir), lambda: export_run(run_dir, tmp_path / "repo", target="cpu")):
        with pytest.raises(RunError, match="training did not finish.*--resume"):
            use()
    with pytest.raises(TrainingError, match="already holds a run: pass --resume"):
        train(tiny_config(*overrides), tiny_data, run_dir, progress=False)

    resumed = train(tiny_config(*overrides), tiny_data, run_dir, resume=True, progress=False)
    assert resumed.epochs_run == 4
    assert resumed.best_valid_ndcg == straight["best_valid_ndcg"]
    assert resumed.best_epoch == straight["best_epoch"]
    assert _validation_ndcgs(run_dir) == _validation_ndcgs(four_epoch_run)
    load_run(run_dir)  # complete now


def test_export_killed_midway_leaves_the_previous_repository_or_none(tiny_run, tmp_path):
    from t4r_app.errors import ServeError
    from t4r_app.serve.triton_server import check_repository

    repository = tmp_path / "repo"

    def partial_sibling_exists():
        return any(tmp_path.glob(".repo.partial-*"))

    # A first export killed mid-way leaves no repository at OUTPUT, which serve refuses.
    process = _start("export", "--run", str(tiny_run), "--output", str(repository), "--target", "cpu")
    _kill_when(process, partial_sibling_exists)
    assert not repository.exists()
    with pytest.raises(ServeError, match="not found.*t4r-app export"):
        check_repository(repository)

    # An export that replaces one and is killed leaves the previous one whole.
    export_run(tiny_run, repository, target="cpu", top_k=5)
    assert not partial_sibling_exists()  # the killed run's leftover went with the next export
    before = (repository / EXPORT_INFO).read_text()
    process = _start("export", "--run", str(tiny_run), "--output", str(repository), "--target", "cpu", "--top-k", "7")
    _kill_when(process, partial_sibling_exists)
    assert (repository / EXPORT_INFO).read_text() == before
    check_repository(repository)

    export_run(tiny_run, repository, target="cpu", top_k=7)
    assert '"top_k": 7' in (repository / EXPORT_INFO).read_text()
    assert not partial_sibling_exists() and not list(tmp_path.glob(".repo.old-*"))
    # Renamed into place, the repository runs (its workflow re-points its files where it is loaded).
    movies = pd.read_parquet(tiny_run / MODEL_DIR / "item_mapping.parquet")["movie_index"].tolist()
    output = load_exported(repository).transform(pd.DataFrame({"movieIndices": [movies[:5], movies[3:9]]}))
    assert [len(ids) for ids in output["movie_ids"]] == [7, 7]


def test_a_new_version_killed_midway_leaves_the_served_one_whole(tiny_run, tmp_path):
    from t4r_app.serve.versions import add_version, versions

    repository = export_run(tiny_run, tmp_path / "repo", target="cpu", top_k=5)
    before = (repository / EXPORT_INFO).read_text()
    process = _start("export", "--run", str(tiny_run), "--into", str(repository))
    _kill_when(process, lambda: any(tmp_path.glob(".repo.next-*/.export.partial-*")))  # while the new version is built
    assert versions(repository) == [1] and (repository / EXPORT_INFO).read_text() == before
    check_repository(repository)
    assert add_version(tiny_run, repository) == 2 and not list(tmp_path.glob(".repo.next-*"))


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_update_killed_in_preprocess_or_train_leaves_yesterdays_data_and_run_whole(raw, tmp_path):
    from t4r_app.config import load_config
    from t4r_app.data.preprocess import preprocess

    day1, old_run, day2, new_run = tmp_path / "day1", tmp_path / "run1", tmp_path / "day2", tmp_path / "run2"
    run(raw, day1, *SETTINGS)
    train(tiny_config("train.epochs=1"), day1, old_run, progress=False)
    data_before, run_before = _tree_digest(day1), _tree_digest(old_run)

    process = _start("preprocess", "--input", str(raw), "--output", str(day2), "--vocabulary-from", str(day1), *SETTINGS)
    _kill_when(process, lambda: (day2 / "categories").is_dir())  # the new vocabulary is being fitted
    assert _tree_digest(day1) == data_before
    preprocess(load_config(None, SETTINGS), str(raw), day2, vocabulary_from=day1)

    process = _start("train", "--data", str(day2), "--output", str(new_run), "--init-from", str(old_run), "--quiet",
                     *TINY_MODEL, "train.epochs=3")
    _kill_when(process, lambda: any((new_run / "checkpoints").glob("checkpoint-*")))  # warm-started and training
    assert _tree_digest(old_run) == run_before
    load_run(old_run)

    # In place, a kill would leave neither day: refused before anything is written.
    with pytest.raises(PreprocessError, match="is the --output folder"):
        preprocess(load_config(None, SETTINGS), str(raw), day1, vocabulary_from=day1)
    with pytest.raises(TrainingError, match="is the --output run"):
        train(tiny_config("train.epochs=1"), day2, old_run, progress=False, init_from=old_run)
    assert _tree_digest(day1) == data_before and _tree_digest(old_run) == run_before


def test_import_killed_midway_is_refused_by_preprocess(tmp_path):
    from t4r_app.data.sources import IMPORT_INCOMPLETE, InputError

    lines = [f"{user}\t{movie}\t5\t{1000 + user * 100 + i}" for user in range(1, 400) for i, movie in enumerate(range(1, 30))]
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text("\n".join(lines) + "\n")
    output = tmp_path / "raw"
    process = _start("import", "--input", str(tmp_path / "ml" / "u.data"), "--output", str(output))
    _kill_when(process, (output / IMPORT_INCOMPLETE).is_file)
    for given in (output, output / "recommendation", output / "recommandation.zip"):
        with pytest.raises(InputError, match="half-written.*run the import again"):
            run(given, tmp_path / "data")
    assert not (tmp_path / "data" / "stats.json").exists()


def test_a_dask_worker_killed_during_preprocess_completes_identically_or_fails_clearly(raw, tmp_path):
    import distributed

    single = run(raw, tmp_path / "single", *SETTINGS)
    output = tmp_path / "cluster"
    killed = []

    def kill_a_worker():
        deadline = time.monotonic() + WAIT_S
        while not (output / "categories").is_dir() and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            client = distributed.default_client()
            pid = sorted(client.run(os.getpid).values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except Exception as error:  # the run may have ended already
            killed.append(error)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    try:
        result = run(raw, output, *SETTINGS, "dask.n_workers=2")
    except PreprocessError as error:
        assert "worker" in str(error) and "run `t4r-app preprocess` again" in str(error)
        assert not (output / "stats.json").exists()
        print(f"the run failed clearly: {error}")
    else:
        print("the run completed after the worker was killed")
        assert _digests(output) == _digests(single.output_dir)
        assert read_split(output, "train").equals(read_split(single.output_dir, "train"))
        assert {k: v for k, v in result.stats.to_json().items() if k != "timings_s"} == {
            k: v for k, v in single.stats.to_json().items() if k != "timings_s"
        }
    killer.join(timeout=WAIT_S)
    assert killed and isinstance(killed[0], int), killed


def test_a_run_killed_in_its_first_checkpoint_starts_again_and_cannot_be_resumed(tiny_data, tmp_path):
    from t4r_app.train.trainer import MARKS_CHECKPOINTS, last_complete_checkpoint

    run_dir = tmp_path / "run"
    torn = run_dir / "checkpoints" / "checkpoint-7"
    torn.mkdir(parents=True)
    (run_dir / "checkpoints" / MARKS_CHECKPOINTS).touch()
    (torn / "trainer_state.json").write_text("{")
    assert last_complete_checkpoint(run_dir / "checkpoints") is None
    with pytest.raises(TrainingError, match="no checkpoint to continue from .*without --resume"):
        train(tiny_config(), tiny_data, run_dir, resume=True, progress=False)


def test_a_cluster_that_gives_up_on_a_dead_worker_is_a_clear_error():
    from distributed import KilledWorker

    from t4r_app.config import DaskConfig
    from t4r_app.data.preprocess import dask_client

    with pytest.raises(PreprocessError, match="a Dask worker died during the run .*run `t4r-app preprocess` again"):
        with dask_client(DaskConfig(n_workers=1)):
            raise KilledWorker("task", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)
