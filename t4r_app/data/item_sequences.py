"""A split's item sequences as flat numpy arrays, and the padded batches the model reads.

Also how often sequences come back to a movie they already hold, and the seen-movie rule that
follows from it (``resolve_exclude_seen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from t4r_app.config import AppConfig, load_config
from t4r_app.data.parquet_parts import read_parquet_columns
from t4r_app.data.preprocess_stats import PreprocessStats, RepeatStats, load_preprocess_stats
from workflow.columns import ITEM_LIST, PADDING_ID, USER
from workflow.list_columns import offsets_of, to_flat

SEQUENCES_DIR = "sequences"
# serve.exclude_seen=auto leaves a session's own movies out when fewer interactions than this
# share repeat a movie of their own sequence: then a seen movie is (almost) never the answer.
REPEAT_SHARE_THRESHOLD = 0.01


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
        return cls(*to_flat(rows))

    def row(self, index: int) -> np.ndarray:
        return self.values[self.offsets[index] : self.offsets[index + 1]]

    def cells(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(row - start, item) of every item in rows [start, stop): where those sessions' own
        movies sit in a (rows, vocabulary) score matrix, to leave them out in one assignment."""
        stop = min(stop, len(self))
        rows = np.repeat(np.arange(stop - start), self.lengths[start:stop])
        return rows, self.values[self.offsets[start] : self.offsets[stop]]

    def repeated(self) -> np.ndarray:
        """Per value: whether its item already occurred earlier in the same row."""
        rows = np.repeat(np.arange(len(self)), self.lengths)
        key = rows * (int(self.values.max(initial=0)) + 1) + self.values
        order = np.argsort(key, kind="stable")  # stable: within a key, earlier positions first
        flags = np.zeros(len(self.values), dtype=bool)
        flags[order[1:]] = key[order[1:]] == key[order[:-1]]
        return flags

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
    users = table[USER].to_numpy().astype(np.int64)
    return SplitData(users, list_sequences(table[ITEM_LIST]))


def list_sequences(column: pa.ChunkedArray) -> ItemSequences:
    """A parquet list column (item or timestamp lists) as flat values and offsets."""
    chunks = [chunk for chunk in column.chunks if not pa.types.is_null(chunk.type) and len(chunk)]
    if not chunks:
        return ItemSequences(np.zeros(0, np.int64), np.zeros(1, np.int64))
    lists = pa.concat_arrays(chunks)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = offsets_of(lengths)
    values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    return ItemSequences(values, offsets)


def repeat_stats(sequences: ItemSequences, keep: np.ndarray | None = None) -> RepeatStats:
    """How many interactions (of the rows in ``keep``) repeat a movie earlier in their own row."""
    counted = np.ones(len(sequences.values), dtype=bool) if keep is None else np.repeat(keep, sequences.lengths)
    repeats = int((sequences.repeated() & counted).sum())
    total = int(counted.sum())
    return RepeatStats(interactions=repeats, share=repeats / total if total else 0.0)


def preprocess_settings(data_dir: str | Path) -> tuple[PreprocessStats, int]:
    """(stats.json, min_sequence_length) of a preprocessed DATA_DIR."""
    data_dir = Path(data_dir)
    return load_preprocess_stats(data_dir), load_config(data_dir / "config.yaml").preprocess.min_sequence_length


def measured_repeats(data_dir: str | Path) -> RepeatStats:
    """``repeats`` of stats.json, measured from ``sequences/`` when an older preprocess left it out."""
    stats, min_length = preprocess_settings(data_dir)
    if stats.kept.repeats is not None:
        return stats.kept.repeats
    sequences = list_sequences(read_parquet_columns(Path(data_dir) / SEQUENCES_DIR, [ITEM_LIST])[ITEM_LIST])
    return repeat_stats(sequences, sequences.lengths >= min_length)


def resolve_exclude_seen(config: AppConfig, data_dir: str | Path) -> tuple[bool, str]:
    """The run's seen-movie rule from ``serve.exclude_seen`` and the data: (exclude?, why).

    ``auto`` leaves the session's own movies out of recommendations when fewer than
    REPEAT_SHARE_THRESHOLD of the interactions repeat a movie of their own sequence (as on
    MovieLens, where nobody rates a movie twice), and keeps them otherwise.
    """
    setting = config.serve.exclude_seen
    share = measured_repeats(data_dir).share
    measured = f"{share:.2%} of interactions repeat a movie earlier in their sequence"
    if setting != "auto":
        return bool(setting), f"serve.exclude_seen={str(bool(setting)).lower()} in the config ({measured})"
    exclude = share < REPEAT_SHARE_THRESHOLD
    verdict = "below" if exclude else "not below"
    effect = "left out" if exclude else "kept"
    return exclude, f"serve.exclude_seen=auto: {measured}, {verdict} {REPEAT_SHARE_THRESHOLD:.0%}, so seen movies are {effect}"
