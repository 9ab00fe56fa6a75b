"""A split's item sequences as flat numpy arrays, and the padded batches the model reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from t4r_app.preprocess import read_parquet_columns
from workflow.ops import ITEM_LIST
from workflow.sequences import PADDING_ID, USER



@dataclass
class ItemSequences:
    """Row i is ``values[offsets[i]:offsets[i + 1]]``, oldest item first."""

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, rows: list) -> "ItemSequences":
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(row) for row in rows], out=offsets[1:])
        values = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows]) if offsets[-1] else np.zeros(0, np.int64)
        return cls(values, offsets)

    def row(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def split_last(self) -> tuple["ItemSequences", np.ndarray]:
        """(every row without its last item, the last items): the evaluation inputs and targets."""
        if len(self) and self.lengths.min() < 1:
            raise ValueError("cannot take the last item of an empty sequence")
        last = self.offsets[1:] - 1
        keep = np.ones(len(self.values), dtype=bool)
        keep[last] = False
        return ItemSequences(self.values[keep], self.offsets - np.arange(len(self.offsets))), self.values[last]

    def padded(self, start: int, stop: int, length: int) -> np.ndarray:
        """Rows [start, stop) as a right-padded matrix holding each row's last ``length`` items."""
        stop = min(stop, len(self))
        batch = np.full((stop - start, length), PADDING_ID, dtype=np.int64)
        for out, index in enumerate(range(start, stop)):
            recent = self.row(index)[-length:] if length else self.row(index)[:0]
            batch[out, : len(recent)] = recent
        return batch


@dataclass
class SplitData:
    users: np.ndarray
    items: ItemSequences


def read_split(data_dir: str | Path, name: str) -> SplitData:
    """Read ``DATA_DIR/<name>/*.parquet`` (train, valid or test) in file order."""
    directory = Path(data_dir) / name
    if not any(directory.glob("*.parquet")):
        raise FileNotFoundError(f"no parquet files in {directory}: run `t4r-app preprocess` first")
    table = read_parquet_columns(directory, [USER, ITEM_LIST])
    column = table[ITEM_LIST]
    chunks = [chunk for chunk in column.chunks if not pa.types.is_null(chunk.type) and len(chunk)]
    if not chunks:
        return SplitData(np.zeros(0, np.int64), ItemSequences(np.zeros(0, np.int64), np.zeros(1, np.int64)))
    lists = pa.concat_arrays(chunks)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    users = table[USER].to_numpy().astype(np.int64)
    return SplitData(users, ItemSequences(values, offsets))
