"""Hostile input: property-based tests (hypothesis) and a short atheris run.

Every parser that reads user files must answer arbitrary input with a result or the
project's own error (a counted reject for records), never another exception, a hang or an
allocation sized by a number in the input. tests/fuzz/fuzz_records.py is the atheris
harness; ``make fuzz`` runs it for longer.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_codec import _reference
from tfrecord import example_pb2

from t4r_app.config import AppConfig, leaf_paths, load_config
from t4r_app.data.example_codec import OK, STATUS_REASONS, decode_examples, encode_examples
from t4r_app.data.records import SessionRecordReader
from t4r_app.data.sources import SessionSource, Shard, parse_titles
from t4r_app.data.tfrecord_framing import (
    CORRUPT_HEADER,
    MAX_RECORD_BYTES,
    NOT_TFRECORD,
    TRUNCATED_RECORD,
    masked_crc32c,
    read_framed_records,
    write_framed_record,
)
from t4r_app.errors import BadRecordError, ConfigError, InputError, PredictInputError
from t4r_app.serve.predict import parse_session_line, read_sessions

FUZZ_DIR = Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))
from fuzz_records import check as fuzz_check  # noqa: E402

# Modest example counts and no per-example deadline: the file stays well under a minute on a
# busy machine, and the first numba call (loading the cached kernels) does not count as slow.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64 = st.integers(-(2**63), 2**63 - 1)
INT64_EDGES = st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, -(2**63), -(2**63) + 1, 2**62, -(2**62)])
HUGE_INTS = st.integers(min_value=-(10**30), max_value=10**30) | st.sampled_from([2**64, -(2**64) - 1, 10**4000])

decode_examples([_reference(1, [2], [3])])  # load the kernels once, outside any example


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _shard(payloads) -> bytes:
    stream = io.BytesIO()
    for payload in payloads:
        write_framed_record(stream, payload)
    return stream.getvalue()


def _read(data: bytes, policy: str):
    """Stream ``data`` as one shard through the reader; (stats, interactions)."""
    source = SessionSource("test", [Shard("t.tfrecord", lambda: io.BytesIO(data))], None, None)
    reader = SessionRecordReader(source, policy, None)
    interactions = sum(len(batch) for batch in reader)
    return reader.stats, interactions


def _check_accounting(stats) -> None:
    assert stats.records_read == stats.records_kept + sum(stats.records_rejected.values())
    assert stats.shards_read + sum(stats.shards_rejected.values()) == 1


sessions = st.lists(
    st.tuples(INT64 | INT64_EDGES, st.lists(st.tuples(INT64 | INT64_EDGES, INT64 | INT64_EDGES), max_size=12)),
    max_size=6,
)


def _columns(records) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(users, offsets, movies, timestamps) of drawn ``sessions``, as encode_examples takes them."""
    users = np.array([u for u, _ in records], dtype=np.int64)
    offsets = np.cumsum([0] + [len(p) for _, p in records])
    movies = np.array([m for _, pairs in records for m, _ in pairs], dtype=np.int64)
    times = np.array([t for _, pairs in records for _, t in pairs], dtype=np.int64)
    return users, offsets, movies, times


# ---------------------------------------------------------------- TFRecord framing


@FAST
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\x1f\x8b" + b"\x00" * 30)
def test_any_bytes_frame_to_records_or_a_problem(data):
    fuzz_check(data)  # the atheris harness's invariants: framing, decoder and reader accounting


@FAST
@given(sessions, st.data())
def test_every_truncation_of_a_valid_shard_is_a_counted_reject(records, data):
    users, offsets, movies, times = _columns(records)
    content = _shard(encode_examples(users, offsets, movies, times))
    for cut in sorted({data.draw(st.integers(0, len(content)), label="cut") for _ in range(8)} | {len(content)}):
        piece = content[:cut]
        framed = list(read_framed_records(io.BytesIO(piece)))
        whole = [r for r in framed if r.problem is None]
        assert all(r.payload is not None for r in whole)
        assert [r.problem for r in framed[len(whole):]] in ([], [TRUNCATED_RECORD])
        stats, _ = _read(piece, "skip")
        _check_accounting(stats)
        if framed and framed[-1].problem:
            assert stats.records_rejected[TRUNCATED_RECORD] == 1
            with pytest.raises(BadRecordError):
                _read(piece, "fail")


def test_truncation_at_every_byte_of_a_small_shard():
    content = _shard([_reference(1, [2, 3], [4, 5]), _reference(6, [7], [8], extra=True)])
    for cut in range(len(content) + 1):
        stats, _ = _read(content[:cut], "skip")
        _check_accounting(stats)
        assert stats.records_kept + stats.records_rejected[TRUNCATED_RECORD] >= (cut > 0)


@FAST
@given(st.integers(2**20, MAX_RECORD_BYTES), st.binary(max_size=64), st.booleans())
def test_huge_declared_length_is_refused_without_allocating_it(length, tail, first):
    header = struct.pack("<Q", length)
    frame = header + struct.pack("<I", masked_crc32c(header)) + tail
    data = (_shard([b"ok"]) if not first else b"") + frame
    tracemalloc.start()
    try:
        # BufferedReader is what open() returns; its read(n) would allocate n bytes up front.
        framed = list(read_framed_records(io.BufferedReader(io.BytesIO(data))))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert framed[-1].problem == TRUNCATED_RECORD
    assert peak < 8 << 20, f"{peak:,} bytes allocated for a {len(data)}-byte stream"


@FAST
@given(st.integers(MAX_RECORD_BYTES + 1, 2**64 - 1), st.booleans())
def test_length_beyond_the_limit_is_a_bad_header(length, first):
    header = struct.pack("<Q", length)
    data = (b"" if first else _shard([b"ok"])) + header + struct.pack("<I", masked_crc32c(header)) + b"x" * 16
    assert list(read_framed_records(io.BytesIO(data)))[-1].problem == (NOT_TFRECORD if first else CORRUPT_HEADER)


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=512))
def test_corrupt_gzip_shards_are_counted(data):
    compressed = bytearray(gzip.compress(_shard([_reference(1, [2], [3])] * 4) + data))
    for position in range(10, len(compressed), max(1, len(compressed) // 12)):
        broken = bytes(compressed[:position]) + bytes([compressed[position] ^ 0x5A]) + bytes(compressed[position + 1 :])
        stats, _ = _read(broken, "skip")
        _check_accounting(stats)


def test_fuzz_regressions_and_corpus_replay():
    """Every seed and every input that once crashed or hung the harness (see tests/fuzz/crashes)."""
    files = sorted((FUZZ_DIR / "corpus").iterdir()) + sorted((FUZZ_DIR / "crashes").iterdir())
    assert len(files) >= 10
    for path in files:
        fuzz_check(path.read_bytes())


def test_negative_wrapping_length_varint_is_malformed_not_a_hang():
    # A length of 2**64 - 11 read as int64 is -11: it used to send the decoder back to the tag, forever.
    for size in (2**64 - 11, 2**64 - 1, 2**63, 2**63 - 1):
        for prefix in (b"\x12", b"\x0a", b"\x0a\x0d\x0a\x0b\x0a\x09userIndex\x12"):
            assert decode_examples([prefix + _varint(size)]).status.tolist() != [OK]


# ---------------------------------------------------------------- Example decoder


@FAST
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_any_payloads_decode_to_a_status(payloads):
    batch = decode_examples(payloads)
    assert set(batch.status.tolist()) <= {OK, *STATUS_REASONS}
    assert int(batch.length.sum()) == len(batch.movies) == len(batch.timestamps)
    assert (batch.length[batch.status != OK] == 0).all()


@FAST
@given(sessions)
def test_int64_extremes_round_trip_and_match_protobuf(records):
    users, offsets, movies, times = _columns(records)
    payloads = encode_examples(users, offsets, movies, times)
    batch = decode_examples(payloads)
    assert (batch.status == OK).all()
    assert batch.user.tolist() == users.tolist()
    assert batch.movies.tolist() == movies.tolist() and batch.timestamps.tolist() == times.tolist()
    for (user, pairs), payload in zip(records, payloads):
        parsed = example_pb2.Example.FromString(payload).features.feature
        assert list(parsed["userIndex"].int64_list.value) == [user]
        assert list(parsed["movieIndices"].int64_list.value) == [m for m, _ in pairs]
        assert list(parsed["timestamps"].int64_list.value) == [t for _, t in pairs]


feature_values = st.one_of(
    st.tuples(st.just("int64"), st.lists(INT64 | INT64_EDGES, max_size=6)),
    st.tuples(st.just("float"), st.lists(st.floats(width=32, allow_nan=False), max_size=3)),
    st.tuples(st.just("bytes"), st.lists(st.binary(max_size=20), max_size=3)),
)
feature_keys = st.sampled_from(["userIndex", "movieIndices", "timestamps", "other", ""]) | st.text(max_size=12)


@FAST
@given(st.dictionaries(feature_keys, feature_values, max_size=5))
def test_decoder_agrees_with_protobuf_on_any_example(features):
    example_proto = example_pb2.Example()
    for key, (kind, values) in features.items():
        getattr(example_proto.features.feature[key], f"{kind}_list").value.extend(values)
    batch = decode_examples([example_proto.SerializeToString()])
    parsed = {k: features[k] for k in ("userIndex", "movieIndices", "timestamps") if k in features}
    valid = (
        len(parsed) == 3
        and all(kind == "int64" for kind, _ in parsed.values())
        and len(parsed["userIndex"][1]) == 1
        and len(parsed["movieIndices"][1]) == len(parsed["timestamps"][1])
    )
    assert (batch.status[0] == OK) == valid
    if valid:
        assert batch.user.tolist() == parsed["userIndex"][1]
        assert batch.movies.tolist() == parsed["movieIndices"][1]
        assert batch.timestamps.tolist() == parsed["timestamps"][1]


@FAST
@given(st.integers(1, 5), st.integers(1, 3000), st.sampled_from([b"\x0a", b"\x12", b"\x2a"]))
def test_repeated_and_deeply_nested_fields(repeats, depth, tag):
    good = _reference(1, [2, 3], [4, 5])
    # Repeating Example.features merges them in protobuf: the same keys twice are a duplicate.
    merged = decode_examples([good * repeats]).status.tolist()
    assert (merged == [OK]) if repeats == 1 else (STATUS_REASONS[merged[0]] == "duplicate_feature")
    # Thousands of nested length-delimited fields: the decoder does not recurse, so no stack to exhaust.
    body = b""
    for _ in range(depth):
        body = tag + _varint(len(body)) + body
    assert decode_examples([body, body + good]).status.tolist()[0] != OK


@FAST
@given(st.binary(min_size=1, max_size=40), st.integers(0, 10**6), st.sampled_from(["flip", "insert", "delete"]))
def test_mutated_valid_payloads_never_break_the_batch(noise, where, how):
    good = _reference(2**63 - 1, [-(2**63), 0, 7], [1, 2, 3], extra=True)
    position = where % (len(good) + 1)
    if how == "flip":
        position = min(position, len(good) - 1)
        mutated = good[:position] + bytes([good[position] ^ noise[0]]) + good[position + 1 :]
    elif how == "insert":
        mutated = good[:position] + noise + good[position:]
    else:
        mutated = good[:position] + good[position + len(noise) :]
    batch = decode_examples([good, mutated, good])
    assert batch.status[0] == OK and batch.status[2] == OK
    assert batch.movies[:3].tolist() == [-(2**63), 0, 7] and batch.movies[-3:].tolist() == [-(2**63), 0, 7]


# ---------------------------------------------------------------- titles files

json_scalars = st.none() | st.booleans() | HUGE_INTS | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _dumps(value) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@FAST
@given(st.binary(max_size=400) | json_values.map(_dumps))
@example(b"[" * 100_000)
@example(b'{"' + b"9" * 5000 + b'": "x"}')
@example(b'{"1": ' + b"7" * 5000 + b"}")
@example(b'{"100000000000000000000000": "far"}')
@example(b'{"\xd9\xa1\xd9\xa2": "arabic-indic digits"}')
def test_titles_file_parses_or_names_the_problem(raw):
    try:
        titles = parse_titles(raw, "titles.json")
    except InputError as error:
        assert "titles.json" in str(error)
        return
    assert all(isinstance(k, int) and 0 <= k < 2**63 and isinstance(v, str) for k, v in titles.items())


def test_gigantic_titles_key_does_not_allocate_a_dense_mask():
    from t4r_app.data.interactions import titled_movie_ids

    titles = parse_titles(b'{"0": "a", "9000000000000000000": "b"}', "titles.json")
    assert titled_movie_ids(titles).tolist() == [0, 9000000000000000000]


# ---------------------------------------------------------------- predict's session input

session_rows = st.dictionaries(
    st.sampled_from(["session_id", "movieIndices", "other"]) | st.text(max_size=5), json_values, max_size=4
) | st.fixed_dictionaries({"movieIndices": st.lists(HUGE_INTS | INT64_EDGES, max_size=8)}, optional={"session_id": json_values})


@FAST
@given(session_rows.map(lambda row: _dumps(row).decode("utf-8", "surrogatepass")) | st.text(max_size=200))
@example("[" * 100_000)
@example('{"movieIndices": [' + "1" * 5000 + "]}")
@example('{"movieIndices": [1.5]}')
@example('{"movieIndices": "12"}')
@example('{"movieIndices": [true]}')
@example('{"movieIndices": [' + "3," * 200_000 + "4]}")
def test_session_line_parses_or_names_the_line(line):
    try:
        session_id, movies = parse_session_line(line, 7, "s.jsonl, line 7")
    except PredictInputError as error:
        assert "s.jsonl, line 7" in str(error) and len(str(error)) < 1000
        return
    assert isinstance(movies, list) and all(type(m) is int for m in movies)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([".jsonl", ".parquet"]))
@example(b'{"movieIndices": [1]}\n\xff\xfe\n', ".jsonl")
@example(b"PAR1garbagePAR1", ".parquet")
def test_sessions_file_reads_or_names_the_file(raw, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"s{suffix}"
        path.write_bytes(raw)
        try:
            ids, sessions_read = read_sessions(path)
        except PredictInputError as error:
            assert str(path) in str(error)
            return
        assert len(ids) == len(sessions_read)


def test_parquet_sessions_of_the_wrong_type_are_named():
    import pandas as pd

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.parquet"
        pd.DataFrame({"movieIndices": [["a", "b"], ["c"]]}).to_parquet(path)
        with pytest.raises(PredictInputError, match="row 0: 'movieIndices' must be a list of integer"):
            read_sessions(path)


# ---------------------------------------------------------------- configuration

LEAVES = sorted(leaf_paths())
override_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from([".nan", ".inf", "-.inf", "1.0e400", "9" * 5000, "[", "{a: [", "!!python/object:os.system x",
                     "2147483648", "-1", "1e400", "null", "ünïcødé", "[1, [2, [3]]]", "&a [*a]"]),
    HUGE_INTS.map(str),
)


def _load(overrides=None, path=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # retired keys warn
        return load_config(path, overrides)


@FAST
@given(st.sampled_from(LEAVES) | st.text(max_size=20), override_values)
@example("dask.memory_limit", "9" * 5000)  # found in CI: YAML reads it as an int Python refuses to build
def test_config_override_loads_or_names_the_key(key, value):
    try:
        config = _load([f"{key}={value}"])
    except ConfigError as error:
        assert str(error)
        return
    assert isinstance(config, AppConfig)
    assert 0 <= config.seed < 2**32


@FAST
@given(st.binary(max_size=400) | json_values.map(lambda v: {"train": v, "seed": v}).map(_dumps))
@example(b"[" * 100_000)
@example(b"a: &a [*a, *a]\n")
@example(b"seed: 99999999999999999999999\n")
@example(b"seed: " + b"9" * 5000 + b"\n")
@example(b"train:\n  learning_rate: .nan\n")
@example(b"model: {d_model: 1.0e400}\n")
@example(b"\xff\xfe\x00s\x00e")
def test_config_file_loads_or_names_the_problem(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.yaml"
        path.write_bytes(raw)
        try:
            config = _load(path=path)
        except ConfigError as error:
            assert str(error)
            return
        assert isinstance(config, AppConfig)


# ---------------------------------------------------------------- atheris, briefly

def test_short_atheris_run_finds_nothing(tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ_DIR / "corpus", corpus)
    command = [
        sys.executable, str(FUZZ_DIR / "fuzz_records.py"), str(corpus), str(FUZZ_DIR / "crashes"),
        "-runs=3000", "-max_total_time=20", "-max_len=4096", "-timeout=10", "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("timeout-*")) + list(tmp_path.glob("oom-*"))
    assert result.returncode == 0 and not crashes, result.stderr[-3000:]
    assert "Done" in result.stderr
