"""The batch Example codec and the TFRecord framing against the reference protobuf classes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tfrecord import example_pb2

from t4r_app.data.example_codec import OK, STATUS_REASONS, decode_examples, encode_examples
from t4r_app.data.tfrecord_framing import (
    DATA_CRC_MISMATCH,
    NOT_TFRECORD,
    TRUNCATED_RECORD,
    read_framed_records,
    write_framed_record,
)


def _reference(user, movies, times, extra=False) -> bytes:
    example = example_pb2.Example()
    features = example.features.feature
    if extra:  # unrelated features must be skipped, and any feature order must work
        features["a_bytes"].bytes_list.value.append(b"x" * 300)
        features["timestamps"].int64_list.value.extend(times)
        features["z_float"].float_list.value.extend([0.5, 1.5])
    features["userIndex"].int64_list.value.append(user)
    features["movieIndices"].int64_list.value.extend(movies)
    if not extra:
        features["timestamps"].int64_list.value.extend(times)
    return example.SerializeToString()


def test_decode_matches_protobuf_on_random_records():
    rng = np.random.default_rng(1)
    records = []
    for i in range(300):
        n = int(rng.integers(0, 60))
        movies = rng.integers(-(2**62), 2**62, n).tolist() if i % 7 == 0 else rng.integers(0, 50_000, n).tolist()
        records.append((int(rng.integers(0, 2**40)), movies, rng.integers(0, 2**33, n).tolist()))
    batch = decode_examples([_reference(*r, extra=i % 3 == 0) for i, r in enumerate(records)])
    assert (batch.status == OK).all()
    assert batch.user.tolist() == [r[0] for r in records]
    assert batch.movies.tolist() == [m for r in records for m in r[1]]
    assert batch.timestamps.tolist() == [t for r in records for t in r[2]]
    assert batch.length.tolist() == [len(r[1]) for r in records]


def test_unpacked_int64_lists_decode():
    # Int64List.value written field by field (wire type 0) instead of packed: still valid protobuf.
    int64_list = b"".join(b"\x08" + bytes([v]) for v in (3, 4, 5))
    feature = b"\x1a" + bytes([len(int64_list)]) + int64_list

    def entry(key: bytes, body: bytes) -> bytes:
        content = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(body)]) + body
        return b"\x0a" + bytes([len(content)]) + content

    user = b"\x1a\x03\x0a\x01\x09"
    features = entry(b"userIndex", user) + entry(b"movieIndices", feature) + entry(b"timestamps", feature)
    batch = decode_examples([b"\x0a" + bytes([len(features)]) + features])
    assert batch.status.tolist() == [OK] and batch.user.tolist() == [9]
    assert batch.movies.tolist() == [3, 4, 5] == batch.timestamps.tolist()
    parsed = example_pb2.Example.FromString(b"\x0a" + bytes([len(features)]) + features)
    assert list(parsed.features.feature["movieIndices"].int64_list.value) == [3, 4, 5]


def test_encode_is_byte_identical_to_protobuf():
    users = np.array([5, 2**40, 0])
    offsets = np.array([0, 3, 3, 5])
    movies = np.array([1, 300, -2, 7, 8])
    times = np.array([10, 20, 2**40, 0, 1])
    encoded = encode_examples(users, offsets, movies, times)
    assert encoded[0] == _reference(5, [1, 300, -2], [10, 20, 2**40])
    for payload, (start, stop), user in zip(encoded, zip(offsets[:-1], offsets[1:]), users):
        parsed = example_pb2.Example.FromString(payload).features.feature
        assert list(parsed["userIndex"].int64_list.value) == [user]
        assert list(parsed["movieIndices"].int64_list.value) == movies[start:stop].tolist()


def test_bad_payloads_get_a_status_not_an_exception():
    good = _reference(1, [2], [3])
    truncated = good[:-2]
    batch = decode_examples([good, truncated, b"", b"\xff\xff\xff"])
    reasons = [STATUS_REASONS.get(int(s), "ok") for s in batch.status]
    assert reasons == ["ok", "malformed_example", "missing_userIndex", "malformed_example"]
    assert batch.movies.tolist() == [2]


def test_framing_round_trip_and_problems():
    stream = io.BytesIO()
    for payload in (b"first", b"second", b""):
        write_framed_record(stream, payload)
    content = stream.getvalue()
    records = list(read_framed_records(io.BytesIO(content)))
    assert [r.payload for r in records] == [b"first", b"second", b""]
    assert [r.problem for r in records] == [None, None, None]
    assert records[1].offset == 12 + 5 + 4

    flipped = bytearray(content)
    flipped[12] ^= 1
    assert [r.problem for r in read_framed_records(io.BytesIO(bytes(flipped)))] == [DATA_CRC_MISMATCH, None, None]
    assert [r.problem for r in read_framed_records(io.BytesIO(content[:-3]))] == [None, None, TRUNCATED_RECORD]
    assert [r.problem for r in read_framed_records(io.BytesIO(b"PAR1" + content))] == [NOT_TFRECORD]


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_single_batches(count):
    batch = decode_examples([_reference(4, [1, 2], [3, 4])] * count)
    assert len(batch.status) == count and len(batch.movies) == 2 * count
