"""The workflow on a dask.distributed cluster gives the single-process output, byte for byte.

Two clusters: a 2-worker LocalCluster the run starts itself (`dask.n_workers=2`), and a
`dask scheduler` with two `dask worker` processes started as a user starts them, reached with
`dask.scheduler_address=tcp://...`.
"""

from __future__ import annotations

import hashlib

import pytest
from conftest import read_split, run
from dask_processes import dask_processes

from t4r_app.input_layout.synthetic import GenerationSpec, generate_dataset

pytestmark = pytest.mark.slow  # dask clusters: a LocalCluster and `dask scheduler` / `dask worker` processes

SETTINGS = ["preprocess.partitions=3", "drop_consecutive_duplicates=true"]


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def _assert_same_outputs(single, other) -> None:
    """Every parquet file of sequences/ and the splits identical, and the same stats but for timings."""
    for name in ("sequences", "train", "valid", "test"):
        assert len(_digests(single.output_dir / name)) == 3
        assert _digests(single.output_dir / name) == _digests(other.output_dir / name), name
        assert read_split(single.output_dir, name).equals(read_split(other.output_dir, name))
    single_stats = {k: v for k, v in single.stats.to_json().items() if k != "timings_s"}
    other_stats = {k: v for k, v in other.stats.to_json().items() if k != "timings_s"}
    assert single_stats == other_stats


def _generate(root):
    generate_dataset(GenerationSpec(users=600, movies=150, seed=5, shards=3), root / "raw")


def test_two_worker_cluster_matches_single_process(tmp_path):
    _generate(tmp_path)
    single = run(tmp_path / "raw", tmp_path / "single", *SETTINGS)
    cluster = run(tmp_path / "raw", tmp_path / "cluster", *SETTINGS, "dask.n_workers=2")
    _assert_same_outputs(single, cluster)


@pytest.fixture
def scheduler_and_two_workers(tmp_path):
    with dask_processes(2, tmp_path / "dask", memory_limit="2GB") as processes:
        yield processes


def test_existing_cluster_matches_single_process(tmp_path, monkeypatch, scheduler_and_two_workers):
    _generate(tmp_path)
    # Relative paths, as typed on a command line: the workers run in folders of their own, so
    # this proves the client hands them paths that do not depend on its working directory.
    monkeypatch.chdir(tmp_path)
    single = run("raw", "single", *SETTINGS)
    address = scheduler_and_two_workers.address
    assert address.startswith("tcp://127.0.0.1:")
    cluster = run("raw", "cluster", *SETTINGS, f"dask.scheduler_address={address}")
    _assert_same_outputs(single, cluster)
    tasks = scheduler_and_two_workers.tasks_executed()
    assert len(tasks) == 2 and all(count > 0 for count in tasks.values()), tasks
