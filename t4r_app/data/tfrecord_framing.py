"""TFRecord container framing: length header, masked CRC32C checksums, payload.

Each record on disk is::

    uint64 length | uint32 masked_crc32c(length bytes) | payload | uint32 masked_crc32c(payload)

all little-endian. The reader checks both checksums and reports every problem as a
``FramedRecord.problem`` instead of raising, so the caller can apply its bad-record policy
with the file name and record number at hand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import crc32c

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_CRC_MASK_DELTA = 0xA282EAD8
# A payload larger than this is taken as a corrupt header, not a real record: an Example
# with 3 features of even 10M values stays far below it, and it stops one bad header from
# allocating gigabytes.
MAX_RECORD_BYTES = 1 << 30
# Bodies longer than this are read piece by piece, so that memory grows with the bytes
# actually there, not with the length a header declares (a buffered ``read(n)`` allocates n).
READ_CHUNK_BYTES = 1 << 20

# Problems a framed record can have. After any but a payload checksum mismatch the rest of
# the file cannot be trusted, so reading stops there.
NOT_TFRECORD = "not_tfrecord"
CORRUPT_HEADER = "corrupt_header"
TRUNCATED_RECORD = "truncated_record"
DATA_CRC_MISMATCH = "data_crc_mismatch"


def masked_crc32c(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


@dataclass(frozen=True)
class FramedRecord:
    number: int  # 0-based position of the record in its file
    offset: int  # byte offset of the record's header in the (decompressed) stream
    payload: bytes | None
    problem: str | None = None


def read_framed_records(stream: BinaryIO) -> Iterator[FramedRecord]:
    """Yield every record of a TFRecord stream, checking the framing and both checksums.

    A record with a bad payload checksum is yielded with ``problem`` set and reading goes on,
    since its length was verified. A bad header or a short read ends the stream with one
    record carrying the problem.
    """
    number = 0
    offset = 0
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            yield FramedRecord(number, offset, None, TRUNCATED_RECORD)
            return
        length, length_crc = _HEADER.unpack(header)
        if masked_crc32c(header[:8]) != length_crc or length > MAX_RECORD_BYTES:
            yield FramedRecord(number, offset, None, NOT_TFRECORD if number == 0 else CORRUPT_HEADER)
            return
        body = _read_up_to(stream, length + _FOOTER.size)
        if len(body) < length + _FOOTER.size:
            yield FramedRecord(number, offset, None, TRUNCATED_RECORD)
            return
        payload = body[:length]
        (payload_crc,) = _FOOTER.unpack(body[length:])
        problem = None if masked_crc32c(payload) == payload_crc else DATA_CRC_MISMATCH
        yield FramedRecord(number, offset, payload, problem)
        number += 1
        offset += _HEADER.size + length + _FOOTER.size


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes or until the end of the stream, in chunks of READ_CHUNK_BYTES."""
    if size <= READ_CHUNK_BYTES:
        return stream.read(size)
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(min(left, READ_CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_framed_record(stream: BinaryIO, payload: bytes) -> None:
    length_bytes = struct.pack("<Q", len(payload))
    stream.write(length_bytes)
    stream.write(struct.pack("<I", masked_crc32c(length_bytes)))
    stream.write(payload)
    stream.write(struct.pack("<I", masked_crc32c(payload)))
