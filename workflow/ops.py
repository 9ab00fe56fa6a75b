"""Custom NVTabular operators for session sequences.

Both take every column of the frame. SplitExamples drops rows, and NVTabular joins sibling
branches side by side, so a branch that lost rows alone would misalign the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from merlin.dag import ColumnSelector
from merlin.schema import Tags

import nvtabular as nvt
from workflow.columns import ITEM_LIST, TIME_LIST
from workflow.list_columns import count_per_row, from_flat, gather_slices, offsets_of, to_flat
from workflow.splits import SplitRule, example_bounds


def _as_pandas(df):
    # The ETL runs on CPU (Dataset(cpu=True)); a cudf frame is moved over rather than failing.
    return df if isinstance(df, pd.DataFrame) else df.to_pandas()


def _read_lists(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, timestamps, offsets) of the two list columns, which have the same length row by row."""
    items, offsets = to_flat(df[ITEM_LIST])
    times, _ = to_flat(df[TIME_LIST])
    return items, times, offsets


def _write_lists(out: pd.DataFrame, items: np.ndarray, times: np.ndarray, offsets: np.ndarray) -> pd.DataFrame:
    out[ITEM_LIST] = from_flat(items, offsets, index=out.index)
    out[TIME_LIST] = from_flat(times, offsets, index=out.index)
    return out


class DropConsecutiveDuplicates(nvt.ops.Operator):
    """Collapse back-to-back repeats of a movie (when enabled), keeping the first timestamp.

    It also reserves the [MASK] id in the item column's schema: the id one past the last
    movie, so an item embedding table built from the schema has a row for it.
    """

    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled = enabled

    def transform(self, col_selector: ColumnSelector, df):
        df = _as_pandas(df)
        items, times, offsets = _read_lists(df)
        if self.enabled and len(items):
            keep = np.ones(len(items), dtype=bool)
            keep[1:] = items[1:] != items[:-1]
            keep[offsets[:-1][np.diff(offsets) > 0]] = True  # a row's first item is never a repeat
            offsets = offsets_of(count_per_row(keep, offsets))
            items, times = items[keep], times[keep]
        return _write_lists(df[col_selector.names].copy(), items, times, offsets)

    def _compute_properties(self, col_schema, input_schema):
        col_schema = super()._compute_properties(col_schema, input_schema)
        if col_schema.name != ITEM_LIST:
            return col_schema
        properties = dict(col_schema.properties)
        domain = dict(properties.get("domain", {}))
        if "max" in domain:
            mask_id = int(domain["max"]) + 1
            properties["domain"] = {**domain, "max": mask_id}
            properties["mask_id"] = mask_id
            sizes = dict(properties.get("embedding_sizes", {}))
            if "cardinality" in sizes:
                properties["embedding_sizes"] = {**sizes, "cardinality": mask_id + 1}
        return col_schema.with_properties(properties)

    def _compute_tags(self, col_schema, input_schema):
        col_schema = super()._compute_tags(col_schema, input_schema)
        if col_schema.name in (ITEM_LIST, TIME_LIST):
            col_schema = col_schema.with_tags([Tags.LIST])
        return col_schema


class SplitExamples(nvt.ops.Operator):
    """Keep the ``role`` example of every sequence that has one (see workflow.splits).

    ``min_sequence_length`` applies to training only: a shorter sequence is not trained on, but
    its validation and test examples are kept, so evaluation covers every user with a target.
    """

    def __init__(self, rule: SplitRule, role: str, min_sequence_length: int):
        super().__init__()
        self.rule = rule
        self.role = role
        self.min_sequence_length = min_sequence_length

    def transform(self, col_selector: ColumnSelector, df):
        df = _as_pandas(df)
        items, times, offsets = _read_lists(df)
        keep, start, stop = example_bounds(self.rule, self.role, times, offsets)
        if self.role == "train":
            keep &= np.diff(offsets) >= self.min_sequence_length
        rows = np.flatnonzero(keep)
        row_starts = offsets[:-1][rows]
        kept_items, new_offsets = gather_slices(items, row_starts, start[rows], stop[rows])
        kept_times, _ = gather_slices(times, row_starts, start[rows], stop[rows])
        return _write_lists(df[col_selector.names].iloc[rows].reset_index(drop=True), kept_items, kept_times, new_offsets)

    def _compute_properties(self, col_schema, input_schema):
        col_schema = super()._compute_properties(col_schema, input_schema)
        if col_schema.name not in (ITEM_LIST, TIME_LIST):
            return col_schema
        properties = {**col_schema.properties, "value_count": {"min": 0, "max": self.rule.max_length}}
        return col_schema.with_properties(properties)

    def _compute_shape(self, col_schema, input_schema):
        if col_schema.name in (ITEM_LIST, TIME_LIST):
            return col_schema.with_shape((None, (0, self.rule.max_length)))
        return super()._compute_shape(col_schema, input_schema)
