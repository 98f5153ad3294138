"""TLV records `[tag u8][len u32 LE][value]`: golden bytes, a decoder resumable at any
byte, the value limit checked before anything is sized, torn tails, bad tags."""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamdb.errors import InvalidArgumentError
from streamdb.framing import FrameTooLarge, Tlv, TlvDecoder, TlvEncoder, UnexpectedEof, encode_tlv
from streamdb.framing.tlv import MAX_VALUE_LEN
from tests.framing.helpers import byte_by_byte, random_pieces

RECORDS = [(1, b"abc"), (255, b""), (0, b"\x00" * 300), (0x7F, b"123456789")]
# Written out from the layout: tag, u32 LE length, value.
STREAM_HEX = ("01" "03000000" "616263"
              "ff" "00000000"
              "00" "2c010000" + "00" * 300 +
              "7f" "09000000" "313233343536373839")
STREAM = bytes.fromhex(STREAM_HEX)


def decode(pieces: list[bytes], decoder: TlvDecoder | None = None) -> list[tuple[int, bytes]]:
    decoder = decoder or TlvDecoder()
    records: list[Tlv] = []
    for piece in pieces:
        decoder.feed(piece)
        records.extend(decoder.records())
    decoder.end()
    assert all(r.value.readonly for r in records)
    return [(r.tag, bytes(r.value)) for r in records]


def test_encode_golden_bytes() -> None:
    assert encode_tlv(1, b"abc") == bytes.fromhex("01" "03000000" "616263")
    assert encode_tlv(255, b"") == bytes.fromhex("ff" "00000000")
    assert TlvEncoder().encode(0x7F, memoryview(b"123456789")) == bytes.fromhex(
        "7f" "09000000" "313233343536373839")
    assert b"".join(encode_tlv(tag, value) for tag, value in RECORDS) == STREAM
    out = bytearray(b"prefix")
    encoder = TlvEncoder()
    for tag, value in RECORDS:
        encoder.encode_into(out, tag, bytearray(value))
    assert bytes(out) == b"prefix" + STREAM
    # A value's length is its byte length, whatever its items.
    wide = memoryview(bytes.fromhex("01000200")).cast("H")
    assert encode_tlv(2, wide) == bytes.fromhex("02" "04000000" "01000200")


@pytest.mark.parametrize("tag", [-1, 256, 1 << 40])
def test_a_tag_outside_0_to_255_is_invalid(tag: int) -> None:
    with pytest.raises(InvalidArgumentError):
        encode_tlv(tag, b"x")
    with pytest.raises(InvalidArgumentError):
        TlvEncoder().encode(tag, b"x")
    out = bytearray(b"kept")
    with pytest.raises(InvalidArgumentError):
        TlvEncoder().encode_into(out, tag, b"x")
    assert out == b"kept"


def test_encoder_max_value_len() -> None:
    encoder = TlvEncoder(max_value_len=4)
    assert encoder.encode(1, b"four") == bytes.fromhex("01" "04000000") + b"four"
    out = bytearray()
    with pytest.raises(FrameTooLarge) as info:
        encoder.encode_into(out, 1, b"fives")
    assert (info.value.length, info.value.limit) == (5, 4)
    assert out == b""


def test_decoder_is_resumable_at_every_byte() -> None:
    assert decode([STREAM]) == RECORDS
    assert decode(byte_by_byte(STREAM)) == RECORDS
    for seed in range(10):
        assert decode(random_pieces(STREAM, random.Random(seed), most=[2, 11, 400][seed % 3])) \
            == RECORDS, seed


def test_decoder_byte_by_byte_gives_each_record_when_its_last_byte_arrives() -> None:
    decoder = TlvDecoder()
    ends = []
    pos = 0
    for _, value in RECORDS:
        pos += 5 + len(value)
        ends.append(pos)
    for i, piece in enumerate(byte_by_byte(STREAM), start=1):
        decoder.feed(piece)
        record = decoder.next_record()
        assert (record is not None) == (i in ends), i
    assert decoder.next_record() is None
    decoder.end()


def test_record_values_stay_valid_after_later_feeds() -> None:
    decoder = TlvDecoder()
    kept: list[Tlv] = []
    for piece in random_pieces(STREAM * 3, random.Random(3), most=13):
        decoder.feed(bytearray(piece))
        kept.extend(decoder.records())
    decoder.end()
    assert [(r.tag, bytes(r.value)) for r in kept] == RECORDS * 3


@pytest.mark.parametrize("length", [0xFFFFFFFF, MAX_VALUE_LEN + 1])
def test_max_value_len_is_enforced_before_allocation(length: int) -> None:
    header = b"\x05" + struct.pack("<I", length)
    decoder = TlvDecoder()
    decoder.feed(STREAM)
    assert [r.tag for r in decoder.records()] == [t for t, _ in RECORDS]
    for b in header[:4]:
        decoder.feed(bytes([b]))
        assert decoder.next_record() is None
    tracemalloc.start()
    try:
        decoder.feed(header[4:])
        with pytest.raises(FrameTooLarge) as info:
            decoder.next_record()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (info.value.length, info.value.limit, info.value.offset) == (
        length, MAX_VALUE_LEN, len(STREAM))
    assert peak < 256 << 10


def test_a_custom_max_value_len() -> None:
    decoder = TlvDecoder(max_value_len=3)
    decoder.feed(bytes.fromhex("01" "03000000" "616263"))
    record = decoder.next_record()
    assert record is not None and (record.tag, bytes(record.value)) == (1, b"abc")
    decoder.feed(bytes.fromhex("02" "04000000"))
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_record()
    assert (info.value.length, info.value.limit, info.value.offset) == (4, 3, 8)


def test_a_torn_tail_at_every_cut_is_unexpected_eof_at_end() -> None:
    bounds = [0]
    for _, value in RECORDS:
        bounds.append(bounds[-1] + 5 + len(value))
    for cut in range(len(STREAM) + 1):
        complete = sum(1 for b in bounds[1:] if b <= cut)
        decoder = TlvDecoder()
        decoder.feed(STREAM[:cut])
        got = [(r.tag, bytes(r.value)) for r in decoder.records()]
        assert got == RECORDS[:complete], cut
        if cut in bounds:
            decoder.end()
        else:
            with pytest.raises(UnexpectedEof) as info:
                decoder.end()
            assert info.value.offset == bounds[complete], cut


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=20),
       st.integers(0, 2**32 - 1))
def test_round_trip(records: list[tuple[int, bytes]], seed: int) -> None:
    stream = b"".join(encode_tlv(tag, value) for tag, value in records)
    assert len(stream) == sum(5 + len(v) for _, v in records)
    assert decode(random_pieces(stream, random.Random(seed), most=23)) == records
