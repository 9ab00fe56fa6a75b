"""Which slice of each time-ordered sequence forms the train, valid and test example.

An example is a slice ``[start, stop)`` of a sequence. For ``valid`` and ``test`` the last
item of the slice is the target and the items before it are the input; a model sees the
target only as a [MASK]. ``train`` slices never reach the valid or test targets. Every slice
keeps at most ``max_length`` items, the most recent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workflow.list_columns import count_per_row

ROLES = ("train", "valid", "test")
SPLIT_RULES = ("leave_one_out", "temporal")
# A training example needs one item to mask and one to see; an evaluation example needs one
# input item before its target.
MIN_EXAMPLE_LENGTH = 2


@dataclass(frozen=True)
class SplitRule:
    name: str  # one of SPLIT_RULES
    max_length: int
    valid_cutoff: int | None = None  # temporal only: first Unix second of the validation period
    test_cutoff: int | None = None  # temporal only: first Unix second of the test period

    def __post_init__(self) -> None:
        if self.name not in SPLIT_RULES:
            raise ValueError(f"unknown split rule {self.name!r}; use one of {SPLIT_RULES}")
        if self.name == "temporal" and (self.valid_cutoff is None or self.test_cutoff is None):
            raise ValueError("the temporal split rule needs valid_cutoff and test_cutoff")


def example_bounds(
    rule: SplitRule, role: str, timestamps: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (keep, start, stop) per sequence for ``role``; positions are within each row."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
    lengths = np.diff(offsets)
    if rule.name == "leave_one_out":
        stop = lengths - {"train": 2, "valid": 1, "test": 0}[role]
        keep = np.ones(len(lengths), dtype=bool)
    elif role == "train":
        stop = count_per_row(timestamps < rule.valid_cutoff, offsets)
        keep = np.ones(len(lengths), dtype=bool)
    else:
        cutoff = rule.valid_cutoff if role == "valid" else rule.test_cutoff
        before = count_per_row(timestamps < cutoff, offsets)
        has_target = before < lengths
        keep = has_target
        if role == "valid":
            target_position = offsets[:-1] + np.minimum(before, np.maximum(lengths - 1, 0))
            target_time = timestamps[target_position] if len(timestamps) else np.zeros(0, np.int64)
            keep = has_target & (target_time < rule.test_cutoff)
        stop = before + 1
    start = np.maximum(stop - rule.max_length, 0)
    keep = keep & (stop - start >= MIN_EXAMPLE_LENGTH)
    return keep, start, stop
