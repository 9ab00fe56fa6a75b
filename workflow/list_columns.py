"""Flat (values, offsets) views of list columns, so list work is vectorised numpy, not Python loops.

Row i of a flat pair is ``values[offsets[i]:offsets[i + 1]]``; merlin and Triton pass ragged
lists the same way. Light on purpose (numpy and pandas only), so a client that only talks to
a server can use it without NVTabular or torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def offsets_of(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """int64 row offsets of rows with these lengths: 0, then their running total."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def to_flat(rows: pd.Series | Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, offsets) of rows of integers: a column of lists or arrays, or a list of lists."""
    rows = rows.to_numpy() if isinstance(rows, pd.Series) else rows
    offsets = offsets_of([len(row) for row in rows])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    return np.concatenate([np.asarray(row, dtype=np.int64) for row in rows]), offsets


def from_flat(values: np.ndarray, offsets: np.ndarray, index=None) -> pd.Series:
    """Build an object column whose rows are numpy arrays (what merlin's parquet reader yields)."""
    cells = np.empty(len(offsets) - 1, dtype=object)
    for row, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
        cells[row] = values[start:stop]
    return pd.Series(cells, index=index)


def gather_slices(
    values: np.ndarray, row_starts: np.ndarray, starts: np.ndarray, stops: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate values[row_starts[i] + starts[i] : row_starts[i] + stops[i]] over i.

    Returns the gathered values and their offsets.
    """
    lengths = np.maximum(stops - starts, 0)
    new_offsets = offsets_of(lengths)
    within = np.arange(new_offsets[-1], dtype=np.int64) - np.repeat(new_offsets[:-1], lengths)
    source = np.repeat(row_starts + starts, lengths) + within
    return values[source], new_offsets


def count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many values of each row are True in ``mask``."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.bincount(rows[mask], minlength=len(offsets) - 1)
