"""The wire format byte for byte (docs/format/framing.md), and the codec's EOF, limit and
checksum rules: golden vectors written out in hex, a truncation sweep at every offset,
hostile lengths, corrupted checksums, and input fed in pieces of every size."""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
from collections.abc import Callable

import pytest

from streamdb.errors import CorruptionError, InvalidArgumentError
from streamdb.framing import (
    MAX_FRAME_LEN,
    BoundedFramer,
    ChecksumDeframer,
    ChecksumFramer,
    ChecksumMismatch,
    Crc16,
    Crc32,
    DefaultDeframer,
    DefaultFramer,
    FrameDecoder,
    FrameTooLarge,
    FramingError,
    StreamReader,
    StreamWriter,
    UnexpectedEof,
    XxHash64,
)
from tests.framing.helpers import (
    BY_NAME,
    CHECKSUMMED,
    CODECS,
    Codec,
    LowBytesOfCrc32,
    ShortReads,
    byte_by_byte,
    decode_pieces,
    random_pieces,
    read_stream,
    ref_stream,
)

CHECK = b"123456789"
CHECK_HEX = "313233343536373839"
# The FlatBuffer of flatstream-rs's medium corpus (tests/generate_corpus.rs): a root offset
# of 4, then a vector of 1024 zero bytes.
MEDIUM = bytes.fromhex("04000000" "00040000") + bytes(1024)
MEDIUM_HEX = "04000000" "00040000" + "00" * 1024

# (codec, payloads, the stream in hex). Checksums are the standard check values of
# "123456789", the known values for "abc" (CRC-32 0x352441C2, CRC-16/XMODEM 0x9DD6,
# XXH3-64 0x78AF5F94892F3950) and the empty input (0, 0, 0x2D06800538D394C2), stored
# little-endian; the custom checksums store the low 1 or 3 bytes of the CRC-32.
GOLDEN: list[tuple[str, tuple[bytes, ...], str]] = [
    # DefaultFramer
    ("default", (b"abc",), "03000000" "616263"),  # flatstream-rs corpus/default_small.hex
    ("default", (b"\x01\x02\x03",), "03000000" "010203"),  # flatstream-rs WIRE_FORMAT_SPEC §13
    ("default", (b"",), "00000000"),
    ("default", (CHECK,), "09000000" + CHECK_HEX),
    ("default", (b"", b"a", b"bc"), "00000000" "01000000" "61" "02000000" "6263"),
    ("default", (MEDIUM,), "08040000" + MEDIUM_HEX),  # corpus/default_medium.hex
    # CRC-32
    # The example of docs/design.md, section 6, and of corpus/crc32_small.hex
    ("crc32", (b"abc",), "03000000" "c2412435" "616263"),
    ("crc32", (CHECK,), "09000000" "2639f4cb" + CHECK_HEX),
    ("crc32", (b"",), "00000000" "00000000"),
    ("crc32", (b"abc", CHECK, b""),
     "03000000" "c2412435" "616263" "09000000" "2639f4cb" + CHECK_HEX + "00000000" "00000000"),
    ("crc32", (MEDIUM,), "08040000" "ad5f4f07" + MEDIUM_HEX),  # corpus/crc32_medium.hex
    # CRC-16/XMODEM
    ("crc16", (b"abc",), "03000000" "d69d" "616263"),  # corpus/crc16_small.hex
    ("crc16", (CHECK,), "09000000" "c331" + CHECK_HEX),
    ("crc16", (b"",), "00000000" "0000"),
    ("crc16", (CHECK, b"abc"), "09000000" "c331" + CHECK_HEX + "03000000" "d69d" "616263"),
    ("crc16", (MEDIUM,), "08040000" "bf62" + MEDIUM_HEX),  # corpus/crc16_medium.hex
    # XXH3-64
    ("xxh3", (b"abc",), "03000000" "50392f89945faf78" "616263"),  # corpus/xxhash64_small.hex
    ("xxh3", (CHECK,), "09000000" "ff7da1678bb1dc72" + CHECK_HEX),
    ("xxh3", (b"",), "00000000" "c294d3380580062d"),  # corpus/xxhash64_empty.hex
    ("xxh3", (b"", b"abc"), "00000000" "c294d3380580062d" "03000000" "50392f89945faf78" "616263"),
    ("xxh3", (MEDIUM,), "08040000" "a5b57e09b9b71bd3" + MEDIUM_HEX),  # corpus/xxhash64_medium
    # custom checksums of 1, 3 and 0 bytes: exactly that many bytes are stored
    ("custom1", (b"abc",), "03000000" "c2" "616263"),
    ("custom1", (CHECK,), "09000000" "26" + CHECK_HEX),
    ("custom1", (b"", b"abc"), "00000000" "00" "03000000" "c2" "616263"),
    ("custom3", (b"abc",), "03000000" "c24124" "616263"),
    ("custom3", (CHECK,), "09000000" "2639f4" + CHECK_HEX),
    ("custom3", (b"", CHECK), "00000000" "000000" "09000000" "2639f4" + CHECK_HEX),
    ("custom0", (b"abc",), "03000000" "616263"),
    ("custom0", (b"", CHECK), "00000000" "09000000" + CHECK_HEX),
]
GOLDEN_PARAMS = [
    pytest.param(BY_NAME[name], payloads, bytes.fromhex(hexed), id=f"{name}-{i}")
    for i, (name, payloads, hexed) in enumerate(GOLDEN)
]
SMALL = 256 << 10  # a "small" tracemalloc peak: far below any size read from a hostile length


def traced_peak(action: Callable[[], object]) -> tuple[int, Exception | None]:
    """The peak of traced allocations while `action` runs, and what it raised."""
    error: Exception | None = None
    tracemalloc.start()
    try:
        action()
    except Exception as exc:
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, error


# --- checksum identities ----------------------------------------------------------------


def test_check_values_of_the_builtin_checksums() -> None:
    assert XxHash64().compute(CHECK) == 0x72DCB18B67A17DFF
    assert Crc32().compute(CHECK) == 0xCBF43926
    assert Crc16().compute(CHECK) == 0x31C3
    assert (XxHash64().size, Crc32().size, Crc16().size) == (8, 4, 2)
    # The C functions readers call directly agree with compute().
    assert XxHash64.function(CHECK) == 0x72DCB18B67A17DFF
    assert Crc32.function(CHECK) == 0xCBF43926


def test_crc16_is_xmodem_not_crcmod_crc16() -> None:
    # CRC-16/ARC (crcmod's "crc-16") of the check input is 0xBB3D; XMODEM's is 0x31C3.
    assert Crc16().compute(CHECK) != 0xBB3D
    assert Crc16().compute(b"abc") == 0x9DD6


# --- golden vectors ---------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "payloads", "wire"), GOLDEN_PARAMS)
def test_reference_encoder_agrees_with_the_golden_vector(
        codec: Codec, payloads: tuple[bytes, ...], wire: bytes) -> None:
    """The helpers' reference encoder is itself pinned to the hand-written bytes."""
    assert ref_stream(codec, payloads)[0] == wire


@pytest.mark.parametrize(("codec", "payloads", "wire"), GOLDEN_PARAMS)
def test_framer_makes_the_golden_vector(
        codec: Codec, payloads: tuple[bytes, ...], wire: bytes) -> None:
    framer = codec.framer()
    assert isinstance(framer, DefaultFramer)
    assert b"".join(framer.frame(p) for p in payloads) == wire
    for kind in (bytes, bytearray, memoryview):
        assert b"".join(framer.header(kind(p)) + p for p in payloads) == wire
    assert all(len(framer.header(p)) == framer.header_size == 4 + codec.width
               for p in payloads)


@pytest.mark.parametrize(("codec", "payloads", "wire"), GOLDEN_PARAMS)
@pytest.mark.parametrize("buffer_size", [0, 1, 64 << 10])
def test_writer_makes_the_golden_vector(
        codec: Codec, payloads: tuple[bytes, ...], wire: bytes, buffer_size: int) -> None:
    one, many = io.BytesIO(), io.BytesIO()
    with StreamWriter(one, codec.framer(), buffer_size=buffer_size) as w:
        for payload in payloads:
            w.write(payload)
    with StreamWriter(many, codec.framer(), buffer_size=buffer_size) as w:
        assert w.write_many(payloads) == len(payloads)
    assert one.getvalue() == wire
    assert many.getvalue() == wire


@pytest.mark.parametrize(("codec", "payloads", "wire"), GOLDEN_PARAMS)
def test_decoder_and_reader_read_the_golden_vector(
        codec: Codec, payloads: tuple[bytes, ...], wire: bytes) -> None:
    expected = list(payloads)
    assert decode_pieces(codec.make_deframer(), [wire]) == (expected, None)
    assert decode_pieces(codec.make_deframer(), byte_by_byte(wire)) == (expected, None)
    for mode in ("messages", "read_message", "process_all"):
        for read_size in (1, 1 << 20):
            got = read_stream(io.BytesIO(wire), codec.make_deframer(), mode=mode,
                              read_size=read_size)
            assert got == (expected, None), (mode, read_size)


def test_a_custom_checksum_is_stored_modulo_its_width() -> None:
    """frames.py: a value wider than `size` bytes is stored modulo 2^(8*size), and a
    reader computes it the same way."""
    for size, stored in ((1, "c2"), (3, "c24124"), (2, "c241")):
        framer = ChecksumFramer(LowBytesOfCrc32(size, wide=True))
        wire = bytes.fromhex("03000000" + stored + "616263")
        assert framer.frame(b"abc") == wire
        deframer = ChecksumDeframer(LowBytesOfCrc32(size, wide=True))
        assert decode_pieces(deframer, [wire]) == ([b"abc"], None)
        assert read_stream(io.BytesIO(wire * 3), ChecksumDeframer(
            LowBytesOfCrc32(size, wide=True))) == ([b"abc"] * 3, None)


@pytest.mark.parametrize("name", ["xxh3", "crc32", "crc16"])
def test_a_checksummed_stream_read_without_its_checksum_fails(name: str) -> None:
    """As flatstream-rs's tests/wire_format_corpus.rs: the plain deframer cannot read a
    checksummed stream (it takes checksum bytes for payload and loses the frame grid)."""
    wire = ref_stream(BY_NAME[name], [b"abc"])[0]
    _, exc = decode_pieces(DefaultDeframer(), [wire])
    assert isinstance(exc, FramingError)


# --- truncation -------------------------------------------------------------------------

SWEEP = [b"a", b"bb-bb", b"", b"ccc-ccc-ccc"]  # flatstream-rs recovery sweep, plus an empty one


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_truncation_at_every_offset(codec: Codec) -> None:
    wire, bounds = ref_stream(codec, SWEEP)
    for cut in range(len(wire) + 1):
        torn = wire[:cut]
        complete = sum(1 for b in bounds[1:] if b <= cut)
        last = max(b for b in bounds if b <= cut)
        attempts = [
            decode_pieces(codec.make_deframer(), [torn]),
            decode_pieces(codec.make_deframer(), byte_by_byte(torn)),
            read_stream(io.BytesIO(torn), codec.make_deframer()),
            read_stream(io.BytesIO(torn), codec.make_deframer(), mode="read_message",
                        read_size=1),
            read_stream(ShortReads(torn, seed=cut), codec.make_deframer(), mode="process_all"),
        ]
        for payloads, exc in attempts:
            assert payloads == SWEEP[:complete], cut
            if cut in bounds:
                assert exc is None, cut
            else:
                assert isinstance(exc, UnexpectedEof), (cut, exc)
                assert exc.offset == last, cut


def test_a_torn_length_is_unexpected_eof_not_a_clean_end() -> None:
    """The documented difference from flatstream-rs (which ends cleanly there)."""
    for tail in (b"\x05", b"\x05\x00", b"\x05\x00\x00"):
        wire = bytes.fromhex("03000000616263") + tail
        payloads, exc = decode_pieces(DefaultDeframer(), [wire])
        assert payloads == [b"abc"]
        assert isinstance(exc, UnexpectedEof) and exc.offset == 7
        with pytest.raises(UnexpectedEof):
            list(StreamReader(io.BytesIO(wire)).messages())


def test_reading_past_the_end_keeps_returning_none() -> None:
    reader = StreamReader(io.BytesIO(bytes.fromhex("03000000616263")))
    first = reader.read_message()
    assert first is not None and bytes(first) == b"abc"
    assert reader.read_message() is None
    assert reader.read_message() is None
    assert list(reader.messages()) == []


# --- hostile lengths --------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@pytest.mark.parametrize("length", [0xFFFFFFFF, MAX_FRAME_LEN + 1])
def test_a_hostile_length_alone_is_frame_too_large_before_any_allocation(
        codec: Codec, length: int) -> None:
    decoder = FrameDecoder(codec.make_deframer())
    header = struct.pack("<I", length)

    def feed() -> None:
        decoder.feed(header)
        decoder.next_payload()

    peak, exc = traced_peak(feed)
    assert isinstance(exc, FrameTooLarge)
    assert (exc.length, exc.limit, exc.offset) == (length, MAX_FRAME_LEN, 0)
    assert peak < SMALL

    # Byte by byte: nothing until the fourth byte, then the error at once.
    decoder = FrameDecoder(codec.make_deframer())
    for b in header[:3]:
        decoder.feed(bytes([b]))
        assert decoder.next_payload() is None
    decoder.feed(header[3:])
    with pytest.raises(FrameTooLarge):
        decoder.next_payload()


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_a_length_just_above_max_frame_len_is_refused(codec: Codec) -> None:
    limit = 64 << 20
    good, bounds = ref_stream(codec, [b"one", b"", b"three"])
    over = good + struct.pack("<I", limit + 1) + b"\x00" * 16
    at = good + struct.pack("<I", limit) + b"\x00" * 16

    payloads, exc = decode_pieces(codec.make_deframer(limit), [over])
    assert payloads == [b"one", b"", b"three"]
    assert isinstance(exc, FrameTooLarge)
    assert (exc.length, exc.limit, exc.offset) == (limit + 1, limit, bounds[-1])
    # Exactly the limit is allowed: the frame is just incomplete.
    payloads, exc = decode_pieces(codec.make_deframer(limit), [at])
    assert payloads == [b"one", b"", b"three"]
    assert isinstance(exc, UnexpectedEof) and exc.offset == bounds[-1]

    for source in (io.BytesIO(over), ShortReads(over, most=3)):
        reader = StreamReader(source, codec.make_deframer(limit), read_size=1)
        got: list[bytes] = []

        def read_all(r: StreamReader = reader, out: list[bytes] = got) -> None:
            out.extend(bytes(p) for p in r.messages())

        peak, exc = traced_peak(read_all)
        assert got == [b"one", b"", b"three"]
        assert isinstance(exc, FrameTooLarge) and exc.offset == bounds[-1]
        assert peak < SMALL


@pytest.mark.parametrize("read_size", [1, 4, 1 << 20])
def test_a_reader_refuses_a_hostile_length_before_reading_the_frame(read_size: int) -> None:
    wire = bytes.fromhex("03000000616263") + b"\xff\xff\xff\xff" + b"junk"
    reader = StreamReader(io.BytesIO(wire), read_size=read_size)
    first = reader.read_message()
    assert first is not None and bytes(first) == b"abc"
    peak, exc = traced_peak(reader.read_message)
    assert isinstance(exc, FrameTooLarge)
    assert (exc.length, exc.offset) == (0xFFFFFFFF, 7)
    assert peak < SMALL
    # The same through messages(), whose inline loop sees the length in its buffer.
    payloads, exc = read_stream(io.BytesIO(wire * 2), DefaultDeframer(), read_size=read_size)
    assert payloads == [b"abc"]
    assert isinstance(exc, FrameTooLarge) and exc.offset == 7


# --- checksum corruption ----------------------------------------------------------------

CORRUPT = [b"first", b"", b"third frame", bytes(range(256)) * 2]


@pytest.mark.parametrize("codec", CHECKSUMMED, ids=repr)
@pytest.mark.parametrize("where", ["checksum", "payload"])
def test_a_corrupt_frame_is_checksum_mismatch_with_its_offset_and_values(
        codec: Codec, where: str) -> None:
    wire, bounds = ref_stream(codec, CORRUPT)
    for i, payload in enumerate(CORRUPT):
        if where == "payload" and not payload:
            assert codec.checksum_of(b"") == int.from_bytes(
                wire[bounds[i] + 4 : bounds[i] + 4 + codec.width], "little")
            continue  # an empty payload has no byte to flip
        bad = bytearray(wire)
        start = bounds[i] + 4 + codec.width
        at = bounds[i] + 4 if where == "checksum" else start + len(payload) // 2
        bad[at] ^= 0x5A
        stored = int.from_bytes(bad[bounds[i] + 4 : start], "little")
        computed = codec.checksum_of(bad[start : start + len(payload)])
        assert stored != computed
        data = bytes(bad)
        attempts = [
            decode_pieces(codec.make_deframer(), [data]),
            decode_pieces(codec.make_deframer(), byte_by_byte(data)),
            read_stream(io.BytesIO(data), codec.make_deframer()),
            read_stream(io.BytesIO(data), codec.make_deframer(), mode="read_message",
                        read_size=1),
            read_stream(ShortReads(data, most=5, seed=i), codec.make_deframer(),
                        mode="process_all", read_size=3),
        ]
        for k, (payloads, exc) in enumerate(attempts):
            assert payloads == CORRUPT[:i], (i, k)
            assert isinstance(exc, ChecksumMismatch), (i, k, exc)
            assert isinstance(exc, CorruptionError)
            assert (exc.offset, exc.expected, exc.computed) == (bounds[i], stored, computed), (
                i, k)


def test_a_stream_cannot_go_on_after_a_checksum_mismatch() -> None:
    codec = BY_NAME["crc32"]
    wire = bytearray(ref_stream(codec, [b"abc", b"def"])[0])
    wire[4] ^= 1
    decoder = FrameDecoder(codec.make_deframer())
    decoder.feed(bytes(wire))
    for _ in range(2):
        with pytest.raises(ChecksumMismatch):
            decoder.next_payload()


# --- pieces of any size -----------------------------------------------------------------

PIECES = [b"", b"x", bytes(range(256)) * 20, b"tail", b"", b"\x00" * 12_000]


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_the_same_payloads_whatever_the_pieces(codec: Codec) -> None:
    wire = ref_stream(codec, PIECES)[0]
    expected = (PIECES, None)
    assert decode_pieces(codec.make_deframer(), [wire]) == expected
    assert decode_pieces(codec.make_deframer(), byte_by_byte(wire)) == expected
    for seed in range(5):
        pieces = random_pieces(wire, random.Random(seed), most=[3, 17, 5000, 40_000][seed % 4])
        assert decode_pieces(codec.make_deframer(), pieces) == expected, seed
    assert read_stream(io.BytesIO(wire), codec.make_deframer(), read_size=1) == expected
    for most in (1, 7, 4096):
        for mode in ("messages", "read_message", "process_all"):
            source = ShortReads(wire, most=most, seed=most)
            assert read_stream(source, codec.make_deframer(), mode=mode) == expected, (
                most, mode)


def test_decoder_payloads_are_read_only_views_that_stay_valid() -> None:
    codec = BY_NAME["xxh3"]
    wire = ref_stream(codec, PIECES)[0]
    decoder = FrameDecoder(codec.make_deframer())
    views: list[memoryview] = []
    for piece in random_pieces(wire, random.Random(7), most=40):
        decoder.feed(bytearray(piece))  # a mutable piece the caller may reuse
        while (view := decoder.next_payload()) is not None:
            views.append(view)
    decoder.end()
    assert decoder.frames == len(PIECES)
    assert all(isinstance(v, memoryview) and v.readonly for v in views)
    assert [bytes(v) for v in views] == PIECES


# --- framer and deframer arguments ------------------------------------------------------


class _BadSize:
    name = "bad"

    def __init__(self, size: object) -> None:
        self.size = size

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        return 0


@pytest.mark.parametrize("size", [-1, 9, 1.5, None])
def test_a_checksum_size_outside_0_to_8_is_refused(size: object) -> None:
    with pytest.raises(InvalidArgumentError):
        ChecksumFramer(_BadSize(size))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        ChecksumDeframer(_BadSize(size))  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [-1, 1 << 32])
def test_limits_outside_the_u32_range_are_refused(limit: int) -> None:
    with pytest.raises(InvalidArgumentError):
        DefaultDeframer(limit)
    with pytest.raises(InvalidArgumentError):
        BoundedFramer(DefaultFramer(), limit)


def test_bounded_framer_checks_the_byte_length() -> None:
    framer = BoundedFramer(ChecksumFramer(Crc32()), 6)
    assert framer.header_size == 8
    assert framer.header(b"abc") == bytes.fromhex("03000000c2412435")
    assert framer.header(b"x" * 6) == ChecksumFramer(Crc32()).header(b"x" * 6)
    with pytest.raises(FrameTooLarge) as info:
        framer.header(b"x" * 7)
    assert (info.value.length, info.value.limit) == (7, 6)
    # A memoryview of 4 two-byte items is 8 bytes, not 4.
    with pytest.raises(FrameTooLarge):
        framer.header(memoryview(b"12345678").cast("H"))


def test_a_framer_counts_bytes_of_a_memoryview_of_wider_items() -> None:
    view = memoryview(bytes.fromhex("010002000300")).cast("H")
    assert DefaultFramer().header(view) == bytes.fromhex("06000000")
    assert ChecksumFramer(Crc16()).header(view)[:4] == bytes.fromhex("06000000")
