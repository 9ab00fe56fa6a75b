"""Coverage-guided fuzzer (atheris / libFuzzer) for the TFRecord framing and the Example decoder.

Each input is read as a shard: framed with ``read_framed_records``, its payloads (and the raw
input itself, as one payload) decoded with ``decode_examples``, and the whole shard streamed
through ``SessionRecordReader`` with ``on_bad_record`` skip and fail. ``check`` raises
AssertionError when an invariant breaks; any other exception or a hang is a finding too.

    python tests/fuzz/fuzz_records.py CORPUS_DIR [libFuzzer flags: -runs=N -max_total_time=S ...]

By default numba's JIT is turned off so that atheris sees (and is guided by) the decoder's
branches; FUZZ_JIT=1 fuzzes the compiled kernels instead (same code, no coverage feedback).
``make fuzz`` runs it for 5 minutes; tests/test_fuzz_properties.py runs a short session and
replays tests/fuzz/corpus and tests/fuzz/crashes through ``check``.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

if __name__ == "__main__" and os.environ.get("FUZZ_JIT") != "1":
    os.environ["NUMBA_DISABLE_JIT"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

FRAMING_PROBLEMS = {"not_tfrecord", "corrupt_header", "truncated_record", "data_crc_mismatch"}


def _modules():
    from t4r_app.data import example_codec, records, sources, tfrecord_framing

    return example_codec, records, sources, tfrecord_framing


def check(data: bytes) -> None:
    example_codec, records, sources, framing = _modules()

    framed = list(framing.read_framed_records(io.BytesIO(data)))
    for index, record in enumerate(framed):
        assert record.number == index
        assert record.problem is None or record.problem in FRAMING_PROBLEMS, record.problem
        if record.problem not in (None, framing.DATA_CRC_MISMATCH):
            assert index == len(framed) - 1, "reading must stop after a framing problem"
            assert record.payload is None
        else:
            assert record.payload is not None and len(record.payload) <= len(data)

    payloads = [r.payload for r in framed if r.payload is not None] + [data]
    batch = example_codec.decode_examples(payloads)
    assert len(batch.status) == len(payloads)
    assert set(batch.status.tolist()) <= {example_codec.OK, *example_codec.STATUS_REASONS}
    ok = batch.status == example_codec.OK
    assert (batch.length[~ok] == 0).all() and (batch.length >= 0).all()
    assert int(batch.length.sum()) == len(batch.movies) == len(batch.timestamps)
    assert len(batch.movies) <= sum(len(p) for p in payloads)

    shard = sources.Shard("fuzz.tfrecord", lambda: io.BytesIO(data))
    source = sources.SessionSource("fuzz", [shard], None, None)
    reader = records.SessionRecordReader(source, "skip", None)
    interactions = sum(len(b) for b in reader)
    stats = reader.stats
    assert stats.records_read == stats.records_kept + sum(stats.records_rejected.values())
    assert stats.interactions == interactions
    assert stats.shards_read + sum(stats.shards_rejected.values()) == 1
    try:
        for _ in records.SessionRecordReader(source, "fail", None):
            pass
    except records.BadRecordError:
        pass


def main() -> None:
    import atheris

    if os.environ.get("NUMBA_DISABLE_JIT") != "1":
        import importlib

        importlib.import_module("t4r_app.data.example_codec")  # numba cannot compile instrumented bytecode
    with atheris.instrument_imports(include=["t4r_app"]):
        _modules()
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
