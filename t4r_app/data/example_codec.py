"""Decode and encode the sessions' ``tf.train.Example`` payloads in batches.

The pure-Python protobuf runtime that this stack pins (3.20.3 has no C extension for
Python 3.11) parses one 20-item Example in about 75 µs, which alone would take minutes
on a MovieLens-sized set. These numba kernels walk the protobuf wire format for the three
features the product reads and handle a whole batch of payloads in one call. They accept
every valid encoding (packed or unpacked int64 lists, any feature order, unknown fields)
and tests cross-check them against the reference protobuf classes.

Wire format followed (field numbers from tensorflow/core/example/{example,feature}.proto)::

    Example  { 1: Features }
    Features { 1: repeated MapEntry { 1: string key, 2: Feature value } }
    Feature  { oneof: 1 BytesList, 2 FloatList, 3 Int64List }
    Int64List{ 1: repeated int64 value }   (packed or not)
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from workflow.list_columns import offsets_of

# Status of one decoded payload. The names are the reasons counted in stats.json.
OK = 0
STATUS_REASONS = {
    1: "malformed_example",
    2: "missing_userIndex",
    3: "missing_movieIndices",
    4: "missing_timestamps",
    5: "wrong_feature_type",
    6: "userIndex_not_scalar",
    7: "length_mismatch",
    8: "duplicate_feature",
}
_MALFORMED, _NO_USER, _NO_MOVIES, _NO_TIMES, _WRONG_TYPE, _USER_NOT_SCALAR, _LEN_MISMATCH, _DUPLICATE = range(1, 9)

_USER_KEY = np.frombuffer(b"userIndex", dtype=np.uint8)
_MOVIES_KEY = np.frombuffer(b"movieIndices", dtype=np.uint8)
_TIMES_KEY = np.frombuffer(b"timestamps", dtype=np.uint8)


@dataclass
class DecodedBatch:
    """Flat columns of a decoded batch. Only records with ``status == OK`` own values."""

    status: np.ndarray  # int8 per record
    user: np.ndarray  # int64 per record
    length: np.ndarray  # int64 per record: number of (movie, timestamp) pairs, 0 when not OK
    movies: np.ndarray  # int64, concatenated over OK records
    timestamps: np.ndarray  # int64, concatenated over OK records


@numba.njit(cache=True)
def _read_varint(buf, pos, end):
    """Return (value as uint64, new position); new position -1 when malformed."""
    result = np.uint64(0)
    shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        if shift == 63 and byte > 1:
            return result, -1
        result |= np.uint64(byte & 0x7F) << np.uint64(shift)
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            return result, -1
    return result, -1


@numba.njit(cache=True)
def _fits(size, pos, end):
    """Whether a declared length ``size`` (uint64) fits in buf[pos:end].

    Compared unsigned, before any conversion: a 10-byte varint such as 2**64 - 11 would
    otherwise become a negative int64 and move the position backwards (an endless loop).
    """
    return pos >= 0 and pos <= end and size <= np.uint64(end - pos)


@numba.njit(cache=True)
def _read_tag(buf, pos, end):
    """Return (field number, wire type, new position) of a field's tag; new position -1 when malformed."""
    tag, pos = _read_varint(buf, pos, end)
    return tag >> np.uint64(3), np.int64(tag & np.uint64(7)), pos


# What a search for a field returns instead of its body's bounds: nothing more to read, or
# a malformed message. Both are negative, so ``start < 0`` tests for either.
_NONE_LEFT, _BROKEN = -1, -2


@numba.njit(cache=True)
def _read_length(buf, pos, end):
    """Read a length prefix; return (body_start, body_stop), both _BROKEN when malformed."""
    size, pos = _read_varint(buf, pos, end)
    if not _fits(size, pos, end):
        return _BROKEN, _BROKEN
    return pos, pos + np.int64(size)


@numba.njit(cache=True)
def _skip_field(buf, pos, end, wire_type):
    if wire_type == 0:
        _, pos = _read_varint(buf, pos, end)
        return pos
    if wire_type == 1:
        return pos + 8 if pos + 8 <= end else -1
    if wire_type == 5:
        return pos + 4 if pos + 4 <= end else -1
    if wire_type == 2:
        return _read_length(buf, pos, end)[1]
    return -1


@numba.njit(cache=True)
def _key_equals(buf, start, stop, key):
    if stop - start != key.shape[0]:
        return False
    for i in range(key.shape[0]):
        if buf[start + i] != key[i]:
            return False
    return True


@numba.njit(cache=True)
def _store_varint(buf, pos, end, out, index):
    """Decode the varint at ``pos`` into out[index]; return the new position, -1 when malformed."""
    value, pos = _read_varint(buf, pos, end)
    if pos >= 0:
        out[index] = np.int64(value)
    return pos


@numba.njit(cache=True)
def _read_int64_values(buf, pos, end, out, cursor):
    """Decode an Int64List body into out[cursor:]; return the count, -1 when malformed."""
    count = 0
    while pos < end:
        field, wire, pos = _read_tag(buf, pos, end)
        if pos < 0:
            return -1
        if field == 1 and wire == 2:  # packed
            pos, packed_end = _read_length(buf, pos, end)
            while 0 <= pos < packed_end:
                pos = _store_varint(buf, pos, packed_end, out, cursor + count)
                count += 1
        elif field == 1 and wire == 0:  # one value per field
            pos = _store_varint(buf, pos, end, out, cursor + count)
            count += 1
        else:
            pos = _skip_field(buf, pos, end, wire)
        if pos < 0:
            return -1
    return count


@numba.njit(cache=True)
def _read_int64_list(buf, pos, end, out, cursor):
    """Decode a Feature message spanning buf[pos:end] into out[cursor:].

    Returns (values written, status) where status is OK, wrong type or malformed.
    """
    count = -1
    while pos < end:
        field, wire, pos = _read_tag(buf, pos, end)
        if pos < 0:
            return 0, _MALFORMED
        if wire == 2 and (field == 1 or field == 2):  # bytes_list or float_list
            return 0, _WRONG_TYPE
        if field == 3 and wire == 2:
            pos, list_end = _read_length(buf, pos, end)
            if pos >= 0:
                count = _read_int64_values(buf, pos, list_end, out, cursor)
                pos = list_end if count >= 0 else -1
        else:
            pos = _skip_field(buf, pos, end, wire)
        if pos < 0:
            return 0, _MALFORMED
    if count < 0:
        return 0, _WRONG_TYPE
    return count, OK


@numba.njit(cache=True)
def _next_field_one(buf, pos, end):
    """Find the next length-delimited field number 1 in buf[pos:end], skipping other fields.

    Returns (body_start, body_stop); body_start is _NONE_LEFT at the end, _BROKEN if malformed.
    Example.features, Features.feature entries and MapEntry.key are all field 1.
    """
    while pos < end:
        field, wire, pos = _read_tag(buf, pos, end)
        if pos < 0:
            return _BROKEN, _BROKEN
        if field == 1 and wire == 2:
            return _read_length(buf, pos, end)
        pos = _skip_field(buf, pos, end, wire)
        if pos < 0:
            return _BROKEN, _BROKEN
    return _NONE_LEFT, _NONE_LEFT


@numba.njit(cache=True)
def _map_entry(buf, pos, end):
    """Return (key_start, key_stop, value_start, value_stop) of a MapEntry; key_start < 0 if broken."""
    key_start = key_stop = -1
    value_start = value_stop = end  # an absent value is an empty Feature
    while pos < end:
        field, wire, pos = _read_tag(buf, pos, end)
        if pos < 0:
            return _BROKEN, _BROKEN, 0, 0
        if (field == 1 or field == 2) and wire == 2:
            body_start, pos = _read_length(buf, pos, end)
            if field == 1:
                key_start, key_stop = body_start, pos
            else:
                value_start, value_stop = body_start, pos
        else:
            pos = _skip_field(buf, pos, end, wire)
        if pos < 0:
            return _BROKEN, _BROKEN, 0, 0
    return key_start, key_stop, value_start, value_stop


@numba.njit(cache=True)
def _read_entry(buf, start, end, counts, movies, movie_cursor, times, time_cursor, scratch):
    """Read one Features map entry into its output if it is one of the three features; its status."""
    key_start, key_stop, value_start, value_stop = _map_entry(buf, start, end)
    if key_start == _BROKEN:
        return _MALFORMED
    if _key_equals(buf, key_start, key_stop, _USER_KEY):
        which, out, cursor = 0, scratch, 0
    elif _key_equals(buf, key_start, key_stop, _MOVIES_KEY):
        which, out, cursor = 1, movies, movie_cursor
    elif _key_equals(buf, key_start, key_stop, _TIMES_KEY):
        which, out, cursor = 2, times, time_cursor
    else:
        return OK
    if counts[which] >= 0:
        return _DUPLICATE
    counts[which], status = _read_int64_list(buf, value_start, value_stop, out, cursor)
    return status


@numba.njit(cache=True)
def _decode_one(buf, start, end, movies, movie_cursor, times, time_cursor, scratch):
    """Return (status, user, n_movies, n_timestamps) for the payload buf[start:end].

    Every ``features`` field of the Example is read, as protobuf merges repeated ones.
    """
    counts = np.full(3, -1, dtype=np.int64)  # values of userIndex, movieIndices, timestamps
    features_start, features_stop = _next_field_one(buf, start, end)
    while features_start >= 0:
        entry_start, entry_stop = _next_field_one(buf, features_start, features_stop)
        while entry_start >= 0:
            status = _read_entry(buf, entry_start, entry_stop, counts, movies, movie_cursor, times, time_cursor, scratch)
            if status != OK:
                return status, 0, 0, 0
            entry_start, entry_stop = _next_field_one(buf, entry_stop, features_stop)
        if entry_start == _BROKEN:
            return _MALFORMED, 0, 0, 0
        features_start, features_stop = _next_field_one(buf, features_stop, end)
    if features_start == _BROKEN:
        return _MALFORMED, 0, 0, 0
    for which, missing in ((0, _NO_USER), (1, _NO_MOVIES), (2, _NO_TIMES)):
        if counts[which] < 0:
            return missing, 0, 0, 0
    if counts[0] != 1:
        return _USER_NOT_SCALAR, 0, 0, 0
    if counts[1] != counts[2]:
        return _LEN_MISMATCH, 0, 0, 0
    return OK, scratch[0], counts[1], counts[2]


@numba.njit(cache=True)
def _decode_batch(buf, offsets, status, users, lengths, movies, times):
    # Every varint takes at least one byte, so a payload of n bytes holds at most n values:
    # the flat outputs sized to the buffer can never overflow.
    scratch = np.empty(buf.shape[0] + 1, dtype=np.int64)
    movie_cursor = 0
    time_cursor = 0
    for i in range(offsets.shape[0] - 1):
        record_status, user, n_movies, n_times = _decode_one(
            buf, offsets[i], offsets[i + 1], movies, movie_cursor, times, time_cursor, scratch
        )
        status[i] = record_status
        users[i] = user
        if record_status == OK:
            lengths[i] = n_movies
            movie_cursor += n_movies
            time_cursor += n_times
        else:
            lengths[i] = 0
    return movie_cursor


def decode_examples(payloads: list[bytes]) -> DecodedBatch:
    """Decode a batch of serialized ``tf.train.Example`` payloads."""
    offsets = offsets_of([len(p) for p in payloads])
    buf = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    n = len(payloads)
    status = np.zeros(n, dtype=np.int8)
    users = np.zeros(n, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    movies = np.empty(buf.shape[0], dtype=np.int64)
    times = np.empty(buf.shape[0], dtype=np.int64)
    total = _decode_batch(buf, offsets, status, users, lengths, movies, times)
    return DecodedBatch(status, users, lengths, movies[:total].copy(), times[:total].copy())


@numba.njit(cache=True)
def _varint_size(value):
    unsigned = np.uint64(value)
    size = 1
    while unsigned >= np.uint64(0x80):
        unsigned >>= np.uint64(7)
        size += 1
    return size


@numba.njit(cache=True)
def _write_varint(out, pos, value):
    unsigned = np.uint64(value)
    while unsigned >= np.uint64(0x80):
        out[pos] = np.uint8((unsigned & np.uint64(0x7F)) | np.uint64(0x80))
        unsigned >>= np.uint64(7)
        pos += 1
    out[pos] = np.uint8(unsigned)
    return pos + 1


@numba.njit(cache=True)
def _packed_size(values, start, stop):
    size = 0
    for i in range(start, stop):
        size += _varint_size(values[i])
    return size


@numba.njit(cache=True)
def _value_sizes(packed):
    """Bytes of the Int64List and of the Feature around ``packed`` bytes of values, tags and lengths included."""
    int64_list = 1 + _varint_size(packed) + packed
    feature = 1 + _varint_size(int64_list) + int64_list
    return int64_list, feature


@numba.njit(cache=True)
def _entry_body_size(key_length, packed):
    feature = _value_sizes(packed)[1]
    return 1 + 1 + key_length + 1 + _varint_size(feature) + feature


@numba.njit(cache=True)
def _entry_size(key_length, packed):
    """Bytes one map entry takes inside Features, its own tag and length included."""
    body = _entry_body_size(key_length, packed)
    return 1 + _varint_size(body) + body


@numba.njit(cache=True)
def _write_entry(out, pos, key, values, start, stop, packed):
    int64_list, feature = _value_sizes(packed)
    entry = _entry_body_size(key.shape[0], packed)
    out[pos] = 0x0A  # Features.feature: field 1, length-delimited
    pos = _write_varint(out, pos + 1, entry)
    out[pos] = 0x0A  # MapEntry.key
    out[pos + 1] = key.shape[0]
    pos += 2
    for i in range(key.shape[0]):
        out[pos + i] = key[i]
    pos += key.shape[0]
    out[pos] = 0x12  # MapEntry.value
    pos = _write_varint(out, pos + 1, feature)
    out[pos] = 0x1A  # Feature.int64_list: field 3
    pos = _write_varint(out, pos + 1, int64_list)
    out[pos] = 0x0A  # Int64List.value, packed
    pos = _write_varint(out, pos + 1, packed)
    for i in range(start, stop):
        pos = _write_varint(out, pos, values[i])
    return pos


@numba.njit(cache=True)
def _encode_batch(users, offsets, movies, times):
    n = users.shape[0]
    features_sizes = np.zeros(n, dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    for i in range(n):
        features = (
            _entry_size(_USER_KEY.shape[0], _varint_size(users[i]))
            + _entry_size(_MOVIES_KEY.shape[0], _packed_size(movies, offsets[i], offsets[i + 1]))
            + _entry_size(_TIMES_KEY.shape[0], _packed_size(times, offsets[i], offsets[i + 1]))
        )
        features_sizes[i] = features
        sizes[i] = 1 + _varint_size(features) + features
    record_offsets = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        record_offsets[i + 1] = record_offsets[i] + sizes[i]
    out = np.empty(record_offsets[n], dtype=np.uint8)
    user_value = np.empty(1, dtype=np.int64)
    for i in range(n):
        pos = record_offsets[i]
        out[pos] = 0x0A  # Example.features
        pos = _write_varint(out, pos + 1, features_sizes[i])
        user_value[0] = users[i]
        pos = _write_entry(out, pos, _USER_KEY, user_value, 0, 1, _varint_size(users[i]))
        packed = _packed_size(movies, offsets[i], offsets[i + 1])
        pos = _write_entry(out, pos, _MOVIES_KEY, movies, offsets[i], offsets[i + 1], packed)
        packed = _packed_size(times, offsets[i], offsets[i + 1])
        pos = _write_entry(out, pos, _TIMES_KEY, times, offsets[i], offsets[i + 1], packed)
    return out, record_offsets


def encode_examples(
    users: np.ndarray, offsets: np.ndarray, movies: np.ndarray, timestamps: np.ndarray
) -> list[bytes]:
    """Serialize records ``i`` = (users[i], movies[offsets[i]:offsets[i+1]], timestamps[...])."""
    buffer, record_offsets = _encode_batch(
        np.ascontiguousarray(users, dtype=np.int64),
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(movies, dtype=np.int64),
        np.ascontiguousarray(timestamps, dtype=np.int64),
    )
    data = buffer.tobytes()
    return [data[record_offsets[i] : record_offsets[i + 1]] for i in range(len(users))]
