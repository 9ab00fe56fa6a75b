"""DATA_DIR/stats.json: the counts of one preprocess run, from records read to examples written.

``PreprocessStats`` is built from typed parts and turned into stats.json (and back) here only,
so the file's keys are spelled once. stats.json is also preprocess's completion mark (see
``t4r_app.data.preprocess``), which is why it is written atomically.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from t4r_app.atomic import partial_sibling
from t4r_app.data.records import ReadStats
from t4r_app.errors import PreprocessError
from workflow.columns import FIRST_MOVIE_ID, NULL_ID, OOV_ID, PADDING_ID

STATS_FILE = "stats.json"


@dataclass(frozen=True)
class RepeatStats:
    """Interactions that repeat a movie earlier in their own sequence (serve.exclude_seen=auto reads ``share``)."""

    interactions: int
    share: float


@dataclass(frozen=True)
class DroppedInteractions:
    consecutive_duplicates: int  # gone from sequences/
    # In sequences shorter than preprocess.min_sequence_length: not trained on, but still in
    # validation and test wherever the sequence has a target there.
    short_sequences: int


@dataclass(frozen=True)
class SequenceCounts:
    """What grouping the interactions into sequences kept, and what the minimum length keeps for training."""

    interactions_dropped: DroppedInteractions
    interactions: int  # in the sequences trained on (at least min_sequence_length)
    repeats: RepeatStats | None  # None: a DATA_DIR from before repeats were measured
    sequences: int  # trained on
    sequences_dropped_short: int  # not trained on (too short), still evaluated where they have a target
    users: int
    # One interaction: no input to predict from, so neither trained on nor evaluated.
    sequences_one_interaction: int = 0


@dataclass(frozen=True)
class ItemIds:
    """The reserved item ids and the range the movies got."""

    padding: int
    null: int
    out_of_vocabulary: int
    first_movie: int
    last_movie: int
    mask: int

    @classmethod
    def for_movies(cls, movie_count: int) -> "ItemIds":
        return cls(
            padding=PADDING_ID,
            null=NULL_ID,
            out_of_vocabulary=OOV_ID,
            first_movie=FIRST_MOVIE_ID,
            last_movie=FIRST_MOVIE_ID + movie_count - 1,
            mask=FIRST_MOVIE_ID + movie_count,
        )


@dataclass(frozen=True)
class SplitRuleStats:
    """The split rule and the temporal cut-offs it used (None under leave_one_out)."""

    rule: str
    valid_cutoff: int | None
    test_cutoff: int | None

    @classmethod
    def from_json(cls, data: dict) -> "SplitRuleStats":
        # stats.json written before the split rule had its own name says "protocol".
        rule = data["rule"] if "rule" in data else data["protocol"]
        return cls(rule, data["valid_cutoff"], data["test_cutoff"])


@dataclass(frozen=True)
class LengthSummary:
    min: int
    median: float
    max: int

    @classmethod
    def of(cls, lengths: np.ndarray) -> "LengthSummary":
        if len(lengths) == 0:
            return cls(0, 0, 0)
        return cls(int(lengths.min()), float(np.median(lengths)), int(lengths.max()))


@dataclass(frozen=True)
class SplitStats:
    """The examples one role (train, valid or test) holds."""

    sequences: int
    interactions: int
    length: LengthSummary


@dataclass
class PreprocessStats:
    """The counts from records read (``read``) to sequences kept (``kept``) to examples per role (``splits``)."""

    input: str
    read: ReadStats
    kept: SequenceCounts
    items: int
    item_ids: ItemIds
    split: SplitRuleStats
    splits: dict[str, SplitStats]
    items_titles_only: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    # With --vocabulary-from: movies the previous vocabulary did not hold (ids after its last); None without.
    items_new: int | None = None

    def to_json(self) -> dict:
        """stats.json's content: ``read`` and ``kept`` are flat at the top level, as they always were."""
        kept = self.kept
        data: dict = {"input": self.input, **self.read.as_dict()}
        data["interactions_dropped"] = asdict(kept.interactions_dropped)
        data["interactions"] = kept.interactions
        if kept.repeats is not None:
            data["repeats"] = asdict(kept.repeats)
        data.update(
            sequences=kept.sequences,
            sequences_dropped_short=kept.sequences_dropped_short,
            sequences_one_interaction=kept.sequences_one_interaction,
            users=kept.users,
            items=self.items,
            item_ids=asdict(self.item_ids),
            split=asdict(self.split),
            splits={role: asdict(split) for role, split in self.splits.items()},
            items_titles_only=self.items_titles_only,
            timings_s=dict(self.timings_s),
        )
        if self.items_new is not None:
            data["items_new"] = self.items_new
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PreprocessStats":
        read = ReadStats(
            shards_read=data["shards_read"],
            shards_rejected=Counter(data["shards_rejected"]),
            records_read=data["records_read"],
            records_kept=data["records_kept"],
            records_rejected=Counter(data["records_rejected"]),
            interactions=data["interactions_read"],
        )
        return cls(
            input=data["input"],
            read=read,
            kept=SequenceCounts(
                interactions_dropped=DroppedInteractions(**data["interactions_dropped"]),
                interactions=data["interactions"],
                repeats=RepeatStats(**data["repeats"]) if "repeats" in data else None,
                sequences=data["sequences"],
                sequences_dropped_short=data["sequences_dropped_short"],
                users=data["users"],
                sequences_one_interaction=data.get("sequences_one_interaction", 0),
            ),
            items=data["items"],
            item_ids=ItemIds(**data["item_ids"]),
            split=SplitRuleStats.from_json(data["split"]),
            splits={
                role: SplitStats(split["sequences"], split["interactions"], LengthSummary(**split["length"]))
                for role, split in data["splits"].items()
            },
            items_titles_only=data.get("items_titles_only", 0),
            timings_s=data.get("timings_s", {}),
            items_new=data.get("items_new"),
        )

    def write(self, data_dir: Path) -> Path:
        """DATA_DIR/stats.json, renamed into place so that it is either absent or whole."""
        path = Path(data_dir) / STATS_FILE
        temporary = partial_sibling(path)
        temporary.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(temporary, path)
        return path


def check_complete(data_dir: str | Path) -> None:
    """Refuse a DATA_DIR that a killed (or failed) preprocess left half-written."""
    data_dir = Path(data_dir)
    if not (data_dir / STATS_FILE).is_file():
        raise PreprocessError(
            f"{data_dir} looks half-written (no {STATS_FILE}, which preprocess writes last): "
            "the preprocess run that wrote it did not finish; run `t4r-app preprocess` again into it"
        )


def load_preprocess_stats(data_dir: str | Path) -> PreprocessStats:
    """The stats.json a finished preprocess left in ``data_dir``."""
    return PreprocessStats.from_json(json.loads((Path(data_dir) / STATS_FILE).read_text()))
