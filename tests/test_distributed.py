"""The workflow on a 2-worker dask.distributed LocalCluster gives the single-process output."""

from __future__ import annotations

import hashlib

from conftest import read_split, run
from t4r_app.synthetic import GenerationSpec, generate_dataset


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_two_worker_cluster_matches_single_process(tmp_path):
    generate_dataset(GenerationSpec(users=600, movies=150, seed=5, shards=3), tmp_path / "raw")
    settings = ["preprocess.partitions=3", "drop_consecutive_duplicates=true"]
    single = run(tmp_path / "raw", tmp_path / "single", *settings)
    cluster = run(tmp_path / "raw", tmp_path / "cluster", *settings, "dask.n_workers=2")
    for name in ("sequences", "train", "valid", "test"):
        assert len(_digests(tmp_path / "single" / name)) == 3
        assert _digests(tmp_path / "single" / name) == _digests(tmp_path / "cluster" / name), name
        assert read_split(tmp_path / "single", name).equals(read_split(tmp_path / "cluster", name))
    single.stats.pop("timings_s")
    cluster.stats.pop("timings_s")
    assert single.stats == cluster.stats
