"""What each role may see of the preprocessed sequences: one owner, so the model and the baselines cannot drift apart.

* ``training_histories``: each sequence's whole training part, uncapped, with the withheld
  movies taken out. Training cuts its windows from these, the baselines are fitted on them,
  and popularity (negatives, the output bias, the rare slice) is counted from them.
* ``withheld_movies``: the movies ``train.withhold_movies`` keeps out of training (cold start).
* ``known_histories``: per validation or test row, everything its sequence (the user's whole
  history; one session with ``sequence_by=record``) held before that row's target, training
  interactions and inputs alike. The ``full_unseen`` ranking leaves these
  out, for the model and every baseline the same, so a filtered score never depends on how
  much of the history the model's window holds.

``train/``, ``valid/`` and ``test/`` keep only a window of each sequence; the whole sequences
are in ``sequences/``, and the split rule (with the cut-offs ``preprocess`` recorded in
``stats.json``) says where each role ends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from t4r_app.data.item_sequences import SEQUENCES_DIR, ItemSequences, list_sequences, preprocess_settings
from t4r_app.data.parquet_parts import read_parquet_columns
from workflow.columns import ITEM_LIST, SESSION, TIME_LIST, USER
from workflow.list_columns import count_per_row, gather_slices, offsets_of
from workflow.splits import SplitRule, example_bounds

UNCAPPED = np.iinfo(np.int64).max


def _sequences_and_rule(data_dir: Path, key: str | None = None):
    """(items, times, the ``key`` column or None, the uncapped split rule) of a preprocessed DATA_DIR."""
    stats, _ = preprocess_settings(data_dir)
    split = stats.split
    columns = [ITEM_LIST, TIME_LIST] + ([key] if key else [])
    table = read_parquet_columns(data_dir / SEQUENCES_DIR, columns)
    items, times = list_sequences(table[ITEM_LIST]), list_sequences(table[TIME_LIST])
    keys = table[key].to_numpy().astype(np.int64) if key else None
    return items, times, keys, SplitRule(split.rule, UNCAPPED, split.valid_cutoff, split.test_cutoff)


def sequence_key_column(data_dir: Path) -> str:
    """What identifies a sequence: the session with ``preprocess.sequence_by=record``, else the user."""
    return SESSION if SESSION in pq.read_schema(next((data_dir / SEQUENCES_DIR).glob("*.parquet"))).names else USER


def training_histories(data_dir: str | Path, withheld: np.ndarray | None = None) -> ItemSequences:
    """Each sequence's whole training part, uncapped: what the train role may see.

    ``withheld`` item ids (train.withhold_movies) are taken out of every history.
    """
    data_dir = Path(data_dir)
    _, min_sequence_length = preprocess_settings(data_dir)
    items, times, _, rule = _sequences_and_rule(data_dir)
    keep, start, stop = example_bounds(rule, "train", times.values, times.offsets)
    # The length filter preprocess used, so the histories match its splits' rows.
    keep &= items.lengths >= min_sequence_length
    rows = np.flatnonzero(keep)
    values, offsets = gather_slices(items.values, items.offsets[:-1][rows], start[rows], stop[rows])
    if withheld is not None and len(withheld):
        keep = ~np.isin(values, withheld)
        values, offsets = values[keep], offsets_of(count_per_row(keep, offsets))
    return ItemSequences(values, offsets)


def known_histories(data_dir: str | Path, split: str) -> ItemSequences:
    """Row i: every item the sequence of row i of ``DATA_DIR/<split>/`` (as ``read_split`` reads
    it) held before its target, oldest first.

    A sequence is a user's whole history (``preprocess.sequence_by=user``, the default), or one
    session with ``sequence_by=record``, where sessions stand alone.
    """
    data_dir = Path(data_dir)
    key = sequence_key_column(data_dir)
    wanted = read_parquet_columns(data_dir / split, [key])[key].to_numpy().astype(np.int64)
    items, times, owners, rule = _sequences_and_rule(data_dir, key)
    keep, _, stop = example_bounds(rule, split, times.values, times.offsets)
    order = np.argsort(owners, kind="stable")
    if len(owners) and (np.diff(owners[order]) == 0).any():
        raise ValueError(f"{data_dir / SEQUENCES_DIR}: a {key} owns more than one sequence; rerun `t4r-app preprocess`")
    found = np.searchsorted(owners[order], wanted).clip(max=max(len(owners) - 1, 0))
    rows = order[found] if len(owners) else found
    missing = ~keep[rows] | (owners[rows] != wanted) if len(owners) else np.ones(len(wanted), dtype=bool)
    if missing.any():
        raise ValueError(
            f"{data_dir}: {int(missing.sum())} {split} row(s) ({key} {wanted[missing][:5].tolist()}) have no {split} "
            f"example in {SEQUENCES_DIR}/; the data dir is inconsistent, rerun `t4r-app preprocess`"
        )
    # The target sits at stop - 1: everything before it is known.
    values, offsets = gather_slices(items.values, items.offsets[:-1][rows], np.zeros(len(rows), np.int64), stop[rows] - 1)
    return ItemSequences(values, offsets)


def withheld_movies(data_dir: str | Path, share: float, seed: int) -> np.ndarray:
    """The item ids of ``share`` of the movies with interactions, drawn with ``seed`` (train.withhold_movies)."""
    if share <= 0:
        return np.zeros(0, dtype=np.int64)
    mapping = pd.read_parquet(Path(data_dir) / "item_mapping.parquet", columns=["item_id", "interactions"])
    movies = np.sort(mapping.loc[mapping["interactions"] > 0, "item_id"].to_numpy(dtype=np.int64))
    count = int(round(share * len(movies)))
    return np.sort(np.random.default_rng(seed).choice(movies, size=count, replace=False))
