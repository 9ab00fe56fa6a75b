"""The NVTabular workflows: interactions -> encoded, ordered sequences -> split examples."""

from __future__ import annotations

from pathlib import Path

from merlin.schema import Schema

import nvtabular as nvt
from nvtabular import ops
from workflow.columns import EVENT_ORDER, ITEM_LIST, RAW_MOVIE, SESSION, TIME_LIST, TIMESTAMP, USER
from workflow.ops import DropConsecutiveDuplicates, SplitExamples
from workflow.splits import SplitRule


def sequence_key(sequence_by: str) -> str:
    return USER if sequence_by == "user" else SESSION


def build_sequence_workflow(sequence_by: str, drop_consecutive_duplicates: bool, fit_dir: Path) -> nvt.Workflow:
    """Encode movies, group interactions into time-ordered sequences, clean them.

    The input must be shuffled by ``sequence_key(sequence_by)`` (Groupby never moves rows
    between partitions).
    """
    items = (
        [RAW_MOVIE]
        >> ops.Categorify(out_path=str(fit_dir))  # writes fit_dir/categories/
        >> ops.Rename(name="item_id")
        >> ops.TagAsItemID()
    )
    key = sequence_key(sequence_by)
    aggregations = {"item_id": ["list"], TIMESTAMP: ["list"]}
    if sequence_by == "record":
        aggregations[USER] = ["first"]
    users = [USER] >> ops.TagAsUserID()
    context = [TIMESTAMP, EVENT_ORDER] + ([SESSION] if sequence_by == "record" else [])
    grouped = (items + users + context) >> ops.Groupby(
        groupby_cols=[key],
        sort_cols=[TIMESTAMP, EVENT_ORDER],  # two sort keys: pandas sorts them stably, ties resolved
        aggs=aggregations,
        name_sep="-",
    )
    cleaned = grouped >> DropConsecutiveDuplicates(enabled=drop_consecutive_duplicates)
    if sequence_by == "record":
        cleaned = cleaned[[SESSION, ITEM_LIST, TIME_LIST]] + (
            cleaned[[f"{USER}-first"]] >> ops.Rename(name=USER)
        )
    return nvt.Workflow(cleaned)


def build_split_workflow(sequences_schema: Schema, rule: SplitRule, role: str, min_sequence_length: int) -> nvt.Workflow:
    """A stateless workflow that keeps each sequence's ``role`` example."""
    selected = sequences_schema.column_names >> SplitExamples(rule, role, min_sequence_length)
    split_workflow = nvt.Workflow(selected)
    split_workflow.fit_schema(sequences_schema)
    return split_workflow
