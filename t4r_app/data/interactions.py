"""Stage 1: stream checked records into interaction parquet parts of bounded size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from t4r_app.data.records import InteractionBatch, ReadStats, SessionRecordReader
from t4r_app.data.sources import SessionSource
from workflow.columns import INTERACTION_COLUMNS


def titled_movie_ids(titles: dict[int, str] | None) -> np.ndarray | None:
    """The sorted movie ids that have a title; None without a titles file.

    Ids, not a dense mask by id: a titles file may name movie 10**15, which must not allocate a petabyte.
    """
    if titles is None:
        return None
    return np.array(sorted(titles), dtype=np.int64)


class _PartWriter:
    def __init__(self, directory: Path, rows_per_part: int):
        self.directory = directory
        self.rows_per_part = rows_per_part
        self.pending: list[InteractionBatch] = []
        self.pending_rows = 0
        self.parts = 0

    def add(self, batch: InteractionBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += len(batch)
        if self.pending_rows >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.table(
            {name: np.concatenate([getattr(b, name) for b in self.pending]) for name in INTERACTION_COLUMNS}
        )
        pq.write_table(table, self.directory / f"part-{self.parts:05d}.parquet")
        self.parts += 1
        self.pending, self.pending_rows = [], 0


def write_interactions(
    source: SessionSource,
    titles: dict[int, str] | None,
    on_bad_record: str,
    rows_per_part: int,
    output_dir: Path,
) -> ReadStats:
    """Read every shard of ``source`` into ``output_dir/part-*.parquet``; return the counts."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    reader = SessionRecordReader(source, on_bad_record, titled_movie_ids(titles))
    writer = _PartWriter(output_dir, rows_per_part)
    with tqdm(desc="read records", unit=" records", unit_scale=True) as progress:
        seen = 0
        for batch in reader:
            writer.add(batch)
            progress.update(reader.stats.records_read - seen)
            seen = reader.stats.records_read
        progress.update(reader.stats.records_read - seen)
    writer.flush()
    return reader.stats
