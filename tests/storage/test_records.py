"""Log operations round-trip, and truncated or hostile ones are CorruptionError, never an
allocation from a bad length or another exception."""

from __future__ import annotations

import dataclasses
import struct
import uuid

import pytest

from streamdb.errors import CorruptionError
from streamdb.storage.records import (
    OP_BIND,
    OP_CREATE,
    OP_PRUNE,
    OP_UNBIND,
    OP_VERSION,
    Op,
    Version,
    decode_op,
    encode_op,
)

DOC = uuid.UUID(int=0x1234)
INLINE = Version(1, 7, 5, 1.5, 2.5, 1, 262144, (), (0xABCDEF,), b"hello")
PAGED = Version(3, 9, 300_000, 1.0, 2.0, 2, 262144, ((10, 37),), (1, 2), None)

OPS = [
    Op(OP_VERSION, DOC, version=INLINE),
    Op(OP_VERSION, DOC, version=PAGED),
    Op(OP_BIND, DOC, path=b"/a/b"),
    Op(OP_UNBIND, path="/é".encode()),
    Op(OP_PRUNE, DOC, keep=2),
    Op(OP_CREATE, DOC, path=b"/new/doc", version=INLINE),
    Op(OP_CREATE, DOC, path=b"/" * 1024, version=PAGED),
]


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"kind{op.kind}")
def test_round_trip(op: Op) -> None:
    decoded = decode_op(encode_op(op))
    assert decoded.kind == op.kind and decoded.path == op.path and decoded.keep == op.keep
    assert decoded.version == op.version
    if op.kind != OP_UNBIND:
        assert decoded.doc_id == op.doc_id


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"kind{op.kind}")
def test_every_truncation_is_corruption(op: Op) -> None:
    raw = encode_op(op)
    for n in range(len(raw)):
        if op.kind in (OP_BIND, OP_UNBIND) and n >= 17:
            continue  # a shorter path is still a path: the record's length delimits it
        with pytest.raises(CorruptionError):
            decode_op(raw[:n])


def test_create_with_a_path_length_past_the_record_is_corruption() -> None:
    raw = bytearray(encode_op(OPS[5]))
    struct.pack_into("<H", raw, 17, 0xFFFF)
    with pytest.raises(CorruptionError):
        decode_op(bytes(raw))


def test_trailing_bytes_and_unknown_kinds_are_corruption() -> None:
    with pytest.raises(CorruptionError):
        decode_op(encode_op(OPS[5]) + b"\x00")
    with pytest.raises(CorruptionError):
        decode_op(bytes([99]) + bytes(16))


def test_chunk_flags_other_than_raw_are_corruption() -> None:
    """A chunk's flags reach a one-byte field of its associated data: any bit but RAW is
    damage, refused when the record is decoded (a fuzzer found a u16 value reaching it)."""
    compressed = dataclasses.replace(INLINE, codec=3, table=((5, 1, 0),))
    assert decode_op(encode_op(Op(OP_VERSION, DOC, version=compressed))).version == compressed
    for flags in (2, 0x100, 0xFFFF):
        bad = dataclasses.replace(compressed, table=((5, flags, 0),))
        with pytest.raises(CorruptionError, match="chunk table"):
            decode_op(encode_op(Op(OP_VERSION, DOC, version=bad)))
