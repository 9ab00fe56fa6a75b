"""Every kind of bad input: 'fail' names the file, the record and the problem; 'skip' counts it."""

from __future__ import annotations

import gzip
import struct
import zipfile

import pytest
from conftest import decoded, run, session, write_shard, write_titles
from tfrecord import example_pb2
from tfrecord.writer import TFRecordWriter

from t4r_app.errors import BadRecordError, InputError

GOOD = [session(1, [1, 2, 3, 4, 5], [10, 20, 30, 40, 50]), session(2, [5, 4, 3, 2, 1], [1, 2, 3, 4, 5])]


def _dataset(tmp_path, bad_records, extra_shards=None):
    root = tmp_path / "raw"
    write_shard(root / "dataset" / "data-0.tfrecord", GOOD[:1] + bad_records + GOOD[1:])
    for name, content in (extra_shards or {}).items():
        (root / "dataset" / name).write_bytes(content)
    write_titles(root / "movie_title_by_index.json", range(10))
    return root


def _fails_then_counted(root, out, message: str) -> dict:
    """The input stops an on_bad_record=fail run with ``message``; the stats of the skip run that counts it."""
    with pytest.raises(BadRecordError, match=message):
        run(root, out)
    return run(root, out, "on_bad_record=skip").stats.to_json()


def _raw_frame(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + TFRecordWriter.masked_crc(length) + payload + TFRecordWriter.masked_crc(payload)


BAD_RECORDS = {
    "missing_timestamps": {"userIndex": ([3], "int"), "movieIndices": ([1, 2], "int")},
    "missing_movieIndices": {"userIndex": ([3], "int"), "timestamps": ([1, 2], "int")},
    "missing_userIndex": {"movieIndices": ([1], "int"), "timestamps": ([1], "int")},
    "length_mismatch": session(3, [1, 2, 3], [1, 2]),
    "negative_movie_index": session(3, [1, -4], [1, 2]),
    "negative_user_index": session(-3, [1], [1]),
    "negative_timestamp": session(3, [1], [-1]),
    "movie_without_title": session(3, [1, 42], [1, 2]),
    "wrong_feature_type": {"userIndex": ([3], "int"), "movieIndices": ([1.0], "float"), "timestamps": ([1], "int")},
    "userIndex_not_scalar": {"userIndex": ([3, 4], "int"), "movieIndices": ([1], "int"), "timestamps": ([1], "int")},
    "empty_session": session(3, [], []),
}


@pytest.mark.parametrize("reason", sorted(BAD_RECORDS))
def test_bad_record_fails_with_file_record_and_reason(tmp_path, reason):
    root = _dataset(tmp_path, [BAD_RECORDS[reason]])
    with pytest.raises(BadRecordError) as error:
        run(root, tmp_path / "out")
    message = str(error.value)
    assert "data-0.tfrecord: record 1 " in message and reason in message


@pytest.mark.parametrize("reason", sorted(BAD_RECORDS))
def test_bad_record_is_skipped_and_counted(tmp_path, reason):
    root = _dataset(tmp_path, [BAD_RECORDS[reason]])
    stats = run(root, tmp_path / "out", "on_bad_record=skip").stats.to_json()
    assert stats["records_rejected"] == {reason: 1}
    assert stats["records_read"] == 3 and stats["records_kept"] == 2
    assert decoded(tmp_path / "out", "test") == {1: [1, 2, 3, 4, 5], 2: [5, 4, 3, 2, 1]}


def test_undecodable_payload_is_a_malformed_example(tmp_path):
    root = tmp_path / "raw"
    good = example_pb2.Example()
    for key, (values, _) in GOOD[0].items():
        good.features.feature[key].int64_list.value.extend(values)
    content = _raw_frame(good.SerializeToString()) + _raw_frame(b"\x0a\x09not proto")
    (root / "dataset").mkdir(parents=True)
    (root / "dataset" / "data-0.tfrecord").write_bytes(content)
    write_titles(root / "movie_title_by_index.json", range(10))
    stats = _fails_then_counted(root, tmp_path / "out", r"record 1 .*malformed_example")
    assert stats["records_rejected"] == {"malformed_example": 1}


def _shard_bytes(tmp_path):
    path = write_shard(tmp_path / "scratch" / "x.tfrecord", GOOD)
    return path.read_bytes()


def test_truncated_shard(tmp_path):
    content = _shard_bytes(tmp_path)
    root = _dataset(tmp_path, [], {"data-1.tfrecord": content[:-7]})
    stats = _fails_then_counted(root, tmp_path / "out", r"data-1.tfrecord: record 1 .*truncated_record")
    assert stats["records_rejected"] == {"truncated_record": 1}
    assert stats["records_read"] == 4 and stats["records_kept"] == 3


def test_crc_mismatch(tmp_path):
    content = bytearray(_shard_bytes(tmp_path))
    content[20] ^= 0xFF  # inside the first payload
    root = _dataset(tmp_path, [], {"data-1.tfrecord": bytes(content)})
    stats = _fails_then_counted(root, tmp_path / "out", r"data-1.tfrecord: record 0 .*data_crc_mismatch")
    assert stats["records_rejected"] == {"data_crc_mismatch": 1}
    assert stats["records_kept"] == 3  # reading went on after the bad record


def test_file_that_is_not_a_tfrecord(tmp_path):
    root = _dataset(tmp_path, [], {"data-1.tfrecord": b"user,movie,timestamp\n1,2,3\n" * 10})
    stats = _fails_then_counted(root, tmp_path / "out", r"data-1.tfrecord: not_tfrecord")
    assert stats["shards_rejected"] == {"not_tfrecord": 1} and stats["shards_read"] == 1


def test_empty_shard(tmp_path):
    root = _dataset(tmp_path, [], {"data-1.tfrecord": b""})
    stats = _fails_then_counted(root, tmp_path / "out", r"data-1.tfrecord: empty_shard")
    assert stats["shards_rejected"] == {"empty_shard": 1}


def test_gzip_shards_are_read(tmp_path):
    root = _dataset(tmp_path, [], {"data-1.tfrecord.gz": gzip.compress(_shard_bytes(tmp_path))})
    stats = run(root, tmp_path / "out").stats.to_json()
    assert stats["records_kept"] == 4 and stats["shards_read"] == 2


def test_truncated_gzip_is_counted(tmp_path):
    root = _dataset(tmp_path, [], {"data-1.tfrecord.gz": gzip.compress(_shard_bytes(tmp_path))[:-20]})
    stats = _fails_then_counted(root, tmp_path / "out", "data-1.tfrecord.gz")
    assert stats["records_read"] == stats["records_kept"] + sum(stats["records_rejected"].values())
    assert sum(stats["records_rejected"].values()) >= 1


def test_zip_without_dataset_folder(tmp_path):
    archive = tmp_path / "recommandation.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("recommendation/movie_title_by_index.json", "{}")
        handle.writestr("recommendation/readme.txt", "hello")
    with pytest.raises(InputError, match=r"no dataset/\*.tfrecord files inside the zip.*recommendation"):
        run(archive, tmp_path / "out")


def test_missing_input_and_empty_glob(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        run(tmp_path / "nope.zip", tmp_path / "out")
    with pytest.raises(InputError, match="matches no file"):
        run(str(tmp_path / "*.tfrecord"), tmp_path / "out")


def test_glob_input_with_explicit_titles(tmp_path):
    root = _dataset(tmp_path, [])
    titles = write_titles(tmp_path / "elsewhere" / "titles.json", range(10))
    stats = run(str(root / "dataset" / "data-*.tfrecord"), tmp_path / "out", titles=str(titles)).stats.to_json()
    assert stats["records_kept"] == 2


def test_invalid_titles_file(tmp_path):
    root = _dataset(tmp_path, [])
    (root / "movie_title_by_index.json").write_text('{"zero": "Pulp Fiction (1994)"}')
    with pytest.raises(InputError, match=r"movie_title_by_index.json: key 'zero' is not an integer"):
        run(root, tmp_path / "out")


def test_all_records_rejected_is_a_clear_error(tmp_path):
    root = tmp_path / "raw"
    write_shard(root / "dataset" / "data-0.tfrecord", [BAD_RECORDS["length_mismatch"]])
    write_titles(root / "movie_title_by_index.json", range(10))
    from t4r_app.errors import PreprocessError

    with pytest.raises(PreprocessError, match=r"no interaction left after reading 1 records.*length_mismatch"):
        run(root, tmp_path / "out", "on_bad_record=skip")
