"""Stream session records out of TFRecord shards, check each one, and apply the bad-record policy.

Every record read ends up either kept or rejected with a reason, so that
``records_read == records_kept + sum(records_rejected.values())`` always holds.
"""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from t4r_app.data.example_codec import OK, STATUS_REASONS, decode_examples
from t4r_app.data.sources import SessionSource, Shard
from t4r_app.data.tfrecord_framing import NOT_TFRECORD, FramedRecord, read_framed_records
from t4r_app.errors import BadRecordError

# Payloads decoded per numba call: large enough to amortise the call, small enough to stay
# a few megabytes.
DECODE_BATCH_RECORDS = 8192

EMPTY_SHARD = "empty_shard"


@dataclass
class ReadStats:
    shards_read: int = 0
    shards_rejected: Counter = field(default_factory=Counter)
    records_read: int = 0
    records_kept: int = 0
    records_rejected: Counter = field(default_factory=Counter)
    interactions: int = 0

    def as_dict(self) -> dict:
        return {
            "shards_read": self.shards_read,
            "shards_rejected": dict(sorted(self.shards_rejected.items())),
            "records_read": self.records_read,
            "records_kept": self.records_kept,
            "records_rejected": dict(sorted(self.records_rejected.items())),
            "interactions_read": self.interactions,
        }


@dataclass
class InteractionBatch:
    """Interactions of the kept records of one decode batch, in reading order."""

    user_index: np.ndarray
    session_index: np.ndarray
    movie_index: np.ndarray
    timestamp: np.ndarray
    event_order: np.ndarray

    def __len__(self) -> int:
        return len(self.movie_index)


class SessionRecordReader:
    """Reads every shard of a source in order and yields interaction batches."""

    def __init__(self, source: SessionSource, on_bad_record: str, known_movies: np.ndarray | None):
        self.source = source
        self.on_bad_record = on_bad_record
        # Sorted ids of the movies that have a title; None disables that check.
        self.known_movies = known_movies
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[InteractionBatch]:
        for shard in self.source.shards:
            yield from self._read_shard(shard)

    def _reject(self, shard: Shard, record: FramedRecord | None, reason: str, detail: str) -> None:
        where = f"{shard.name}: record {record.number} (byte {record.offset})" if record else shard.name
        if self.on_bad_record == "fail":
            raise BadRecordError(
                f"{where}: {reason}: {detail}. Set on_bad_record=skip to drop and count such records."
            )

    def _read_shard(self, shard: Shard) -> Iterator[InteractionBatch]:
        pending: list[FramedRecord] = []
        records_in_shard = 0
        try:
            stream = shard.open()
        except OSError as error:
            raise BadRecordError(f"{shard.name}: cannot open: {error}") from error
        with stream:
            try:
                for record in read_framed_records(stream):
                    if record.problem == NOT_TFRECORD:
                        # Nothing in this file frames as a TFRecord: a shard-level problem.
                        self._reject(shard, None, NOT_TFRECORD, _FRAMING_DETAIL[NOT_TFRECORD])
                        self.stats.shards_rejected[NOT_TFRECORD] += 1
                        return
                    records_in_shard += 1
                    if record.problem is not None:
                        yield from self._flush(shard, pending)
                        pending = []
                        self.stats.records_read += 1
                        self._reject(shard, record, record.problem, _FRAMING_DETAIL[record.problem])
                        self.stats.records_rejected[record.problem] += 1
                        continue
                    pending.append(record)
                    if len(pending) >= DECODE_BATCH_RECORDS:
                        yield from self._flush(shard, pending)
                        pending = []
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # broken gzip stream or zip member
                yield from self._flush(shard, pending)
                pending = []
                self.stats.records_read += 1
                self._reject(shard, None, "corrupt_compression", str(error))
                self.stats.records_rejected["corrupt_compression"] += 1
                records_in_shard += 1
        yield from self._flush(shard, pending)
        if records_in_shard == 0:
            self._reject(shard, None, EMPTY_SHARD, "the shard holds no record")
            self.stats.shards_rejected[EMPTY_SHARD] += 1
        else:
            self.stats.shards_read += 1

    def _flush(self, shard: Shard, records: list[FramedRecord]) -> Iterator[InteractionBatch]:
        if not records:
            return
        first_index = self.stats.records_read
        decoded = decode_examples([r.payload for r in records])
        reasons = self._record_reasons(decoded)
        bad = np.flatnonzero(reasons != "")
        if len(bad) and self.on_bad_record == "fail":
            first = int(bad[0])
            self._reject(shard, records[first], str(reasons[first]), self._describe(decoded, first, reasons[first]))
        self.stats.records_read += len(records)
        self.stats.records_rejected.update(reasons[bad].tolist())
        keep = reasons == ""
        self.stats.records_kept += int(keep.sum())
        lengths = np.where(keep, decoded.length, 0)
        value_keep = np.repeat(keep, decoded.length)
        kept_values = int(lengths.sum())
        session_index = np.repeat(first_index + np.arange(len(records), dtype=np.int64), lengths)
        batch = InteractionBatch(
            user_index=np.repeat(decoded.user, lengths),
            session_index=session_index,
            movie_index=decoded.movies[value_keep],
            timestamp=decoded.timestamps[value_keep],
            event_order=self.stats.interactions + np.arange(kept_values, dtype=np.int64),
        )
        self.stats.interactions += kept_values
        if kept_values:
            yield batch

    def _record_reasons(self, decoded) -> np.ndarray:
        """The rejection reason of each record, '' for a good one; the first failed check wins."""
        n = len(decoded.status)
        reasons = np.full(n, "", dtype=object)
        lengths = decoded.length
        owner = np.repeat(np.arange(n), lengths)

        def any_per_record(value_mask: np.ndarray) -> np.ndarray:
            return np.bincount(owner[value_mask], minlength=n) > 0

        checks = [
            (decoded.status != OK, None),
            ((decoded.status == OK) & (lengths == 0), "empty_session"),
            (decoded.user < 0, "negative_user_index"),
            (any_per_record(decoded.movies < 0), "negative_movie_index"),
            (any_per_record(decoded.timestamps < 0), "negative_timestamp"),
        ]
        if self.known_movies is not None:
            known = np.isin(decoded.movies, self.known_movies)
            checks.append((any_per_record(~known), "movie_without_title"))
        for mask, reason in checks:
            fresh = mask & (reasons == "")
            if reason is None:
                reasons[fresh] = [STATUS_REASONS[int(s)] for s in decoded.status[fresh]]
            else:
                reasons[fresh] = reason
        return reasons

    def _describe(self, decoded, index: int, reason: str) -> str:
        start = int(decoded.length[:index].sum())
        movies = decoded.movies[start : start + decoded.length[index]]
        if reason == "negative_movie_index":
            return f"movieIndices holds {int(movies[movies < 0][0])}"
        if reason == "movie_without_title":
            unknown = movies[~np.isin(movies, self.known_movies)].tolist()
            return f"movieIndices holds {unknown[0]}, which has no title in the titles file"
        if reason == "negative_timestamp":
            times = decoded.timestamps[start : start + decoded.length[index]]
            return f"timestamps holds {int(times[times < 0][0])}"
        if reason == "negative_user_index":
            return f"userIndex is {int(decoded.user[index])}"
        return _DECODE_DETAIL.get(reason, reason)


_FRAMING_DETAIL = {
    "truncated_record": "the file ends inside this record (truncated shard)",
    "corrupt_header": "the record's length header fails its CRC check; the rest of the file is unreadable",
    "data_crc_mismatch": "the record's payload fails its CRC32C check",
    "not_tfrecord": "the file does not start with a valid TFRecord header",
}

_DECODE_DETAIL = {
    "malformed_example": "the payload is not a valid tf.train.Example",
    "missing_userIndex": "the Example has no 'userIndex' feature",
    "missing_movieIndices": "the Example has no 'movieIndices' feature",
    "missing_timestamps": "the Example has no 'timestamps' feature",
    "wrong_feature_type": "a feature is not an int64 list",
    "userIndex_not_scalar": "'userIndex' must hold exactly one value",
    "length_mismatch": "'movieIndices' and 'timestamps' have different lengths",
    "duplicate_feature": "a feature appears twice in the Example",
    "empty_session": "'movieIndices' is empty",
}
