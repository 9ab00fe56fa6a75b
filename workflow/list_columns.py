"""Flat (values, offsets) views of list columns, so list work is vectorised numpy, not Python loops."""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_flat(column: pd.Series, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Return (values, offsets) of an object column of lists or arrays; row i is values[o[i]:o[i+1]]."""
    lengths = column.map(len).to_numpy(dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=dtype), offsets
    values = np.concatenate([np.asarray(row, dtype=dtype) for row in column.to_numpy()])
    return values, offsets


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
    new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    within = np.arange(new_offsets[-1], dtype=np.int64) - np.repeat(new_offsets[:-1], lengths)
    source = np.repeat(row_starts + starts, lengths) + within
    return values[source], new_offsets


def count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many values of each row are True in ``mask``."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.bincount(rows[mask], minlength=len(offsets) - 1)
