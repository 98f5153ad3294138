"""`recover`: a clean file, a torn tail at every cut (and its truncation), damage that is
reported and never truncated, garbage lengths at the tail; on paths and file objects. Then
what is not a torn tail (docs/format/framing.md, "Recovery"): valid frames after the bad
point (a corrupted length), a tail longer than one frame for a deframer without checksums
(the README's stream read with the wrong deframer), and adversarial tails (bounded work)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamdb.errors import CorruptionError
from streamdb.framing import (
    MAX_FRAME_LEN,
    ChecksumDeframer,
    ChecksumFramer,
    ChecksumMismatch,
    DefaultDeframer,
    FrameTooLarge,
    FramingError,
    Recovery,
    StreamReader,
    StreamWriter,
    TailNotTorn,
    XxHash64,
    recover,
)
from streamdb.framing.recover import (
    CANDIDATE_WORK,
    READ_SIZE,
    SCAN_WORK_MAX,
    SCAN_WORK_PER_BYTE,
    UNCHECKED_TAIL,
    _candidates,
)
from tests.framing.helpers import BY_NAME, CODECS, Codec, read_stream, ref_frame, ref_stream

PAYLOADS = [b"a", b"bb-bb", b"", b"ccc-ccc-ccc"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_clean_file_on_a_path_and_on_a_file_object(tmp_path: Path) -> None:
    codec = BY_NAME["xxh3"]
    wire = ref_stream(codec, PAYLOADS)[0]
    path = write(tmp_path / "log", wire)
    expected = Recovery(frames=4, good_offset=len(wire), size=len(wire), torn=False,
                        error=None, truncated=False)
    assert recover(path, codec.make_deframer()) == expected
    assert recover(str(path), codec.make_deframer(), truncate=True) == expected
    with open(path, "rb") as f:
        f.seek(0, io.SEEK_END)  # recover reads from the start wherever the file is
        assert recover(f, codec.make_deframer()) == expected
    assert recover(io.BytesIO(wire), codec.make_deframer()) == expected
    assert expected.clean
    assert path.read_bytes() == wire


def test_an_empty_file_is_clean(tmp_path: Path) -> None:
    result = recover(write(tmp_path / "log", b""))
    assert result == Recovery(0, 0, 0, False, None, False)
    assert result.clean


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_a_torn_tail_at_every_cut(codec: Codec, tmp_path: Path) -> None:
    wire, bounds = ref_stream(codec, PAYLOADS)
    path = tmp_path / "log"
    for cut in range(len(wire) + 1):
        complete = sum(1 for b in bounds[1:] if b <= cut)
        last = max(b for b in bounds if b <= cut)
        torn = cut not in bounds
        result = recover(io.BytesIO(wire[:cut]), codec.make_deframer())
        assert result == Recovery(complete, last, cut, torn, None, False), cut
        assert result.clean is not torn

        write(path, wire[:cut])
        repaired = recover(path, codec.make_deframer(), truncate=True)
        assert repaired == Recovery(complete, last, cut, torn, None, torn), cut
        assert path.read_bytes() == wire[:last]
        again = recover(path, codec.make_deframer())
        assert again == Recovery(complete, last, last, False, None, False), cut
        with open(path, "rb") as f:
            assert read_stream(f, codec.make_deframer()) == (PAYLOADS[:complete], None)


def test_truncate_through_a_writable_file_object(tmp_path: Path) -> None:
    codec = BY_NAME["crc32"]
    wire = ref_stream(codec, PAYLOADS)[0]
    path = write(tmp_path / "log", wire + wire[:6])
    with open(path, "r+b") as f:
        result = recover(f, codec.make_deframer(), truncate=True)
    assert (result.torn, result.truncated, result.good_offset) == (True, True, len(wire))
    assert path.read_bytes() == wire


@pytest.mark.parametrize("name", ["xxh3", "crc32", "crc16", "custom1", "custom3"])
@pytest.mark.parametrize("truncate", [False, True])
def test_a_checksum_mismatch_in_the_middle_is_reported_never_truncated(
        name: str, truncate: bool, tmp_path: Path) -> None:
    codec = BY_NAME[name]
    wire, bounds = ref_stream(codec, PAYLOADS)
    bad = bytearray(wire)
    bad[bounds[1] + 4 + codec.width + 2] ^= 0x01  # inside frame 2's payload
    data = bytes(bad + wire[:5])  # and a torn tail after it, which stays too
    path = write(tmp_path / "log", data)
    result = recover(path, codec.make_deframer(), truncate=truncate)
    assert (result.frames, result.good_offset, result.size) == (1, bounds[1], len(data))
    assert not result.torn and not result.truncated and not result.clean
    assert isinstance(result.error, ChecksumMismatch)
    start = bounds[1] + 4 + codec.width
    assert (result.error.offset, result.error.expected, result.error.computed) == (
        bounds[1], int.from_bytes(data[bounds[1] + 4 : start], "little"),
        codec.checksum_of(data[start : bounds[2]]))
    assert path.read_bytes() == data
    with open(path, "r+b") as f:
        again = recover(f, codec.make_deframer(), truncate=truncate)
    assert isinstance(again.error, ChecksumMismatch)
    assert again.error.offset == bounds[1]
    assert (again.frames, again.good_offset, again.torn, again.truncated) == (
        1, bounds[1], False, False)
    assert path.read_bytes() == data


def test_flatstream_rs_bit_flip_in_frame_two_of_three(tmp_path: Path) -> None:
    """flatstream-rs tests/recovery_tests.rs (recovery_errors_on_corrupted_payload)."""
    codec = BY_NAME["xxh3"]
    wire, bounds = ref_stream(codec, [b"good frame", b"doomed frame", b"valid suffix"])
    bad = bytearray(wire)
    bad[bounds[1] + 4 + 8 + 2] ^= 0x01
    path = write(tmp_path / "log", bytes(bad))
    result = recover(path, codec.make_deframer(), truncate=True)
    assert isinstance(result.error, ChecksumMismatch)
    assert (result.frames, result.good_offset, result.torn, result.truncated) == (
        1, bounds[1], False, False)
    assert path.read_bytes() == bytes(bad)


@pytest.mark.parametrize(("tail", "note"), [
    (bytes([7, 0, 0, 0]) + b"x", "flatstream-rs recover_file doc example"),
    (bytes([42, 0, 0, 0]), "recover_file_is_absolute_regardless_of_initial_cursor"),
    (bytes([9, 0, 0, 0]) + b"xy", "recovery_is_exact_under_one_byte_reads"),
    (bytes([200, 0, 0, 0, 0xAB, 0xCD]), "recovery_then_resume_append_roundtrips_byte_exact"),
    (struct.pack("<I", 1 << 30) + b"junk", "within the limit, past the end of the file"),
    (b"\xff\xff", "a torn length"),
])
def test_a_garbage_length_running_past_the_end_is_a_torn_tail(
        tail: bytes, note: str, tmp_path: Path) -> None:
    """docs/format/framing.md: a length within the limit that claims more than is left is a
    torn tail (a length above the limit is damage: see the next test)."""
    wire = ref_stream(BY_NAME["default"], [b"frame one", b"frame two"])[0]
    path = write(tmp_path / "log", wire + tail)
    result = recover(path, truncate=True)
    assert result == Recovery(2, len(wire), len(wire) + len(tail), True, None, True), note
    assert path.read_bytes() == wire
    # Append after the repair, as a journal would, and read everything back.
    with open(path, "ab") as f:
        f.write(bytes.fromhex("07000000") + b"after-1")
    reader = StreamReader(io.BytesIO(path.read_bytes()))
    assert [bytes(p) for p in reader] == [b"frame one", b"frame two", b"after-1"]
    assert recover(path).clean


def test_a_length_above_the_limit_that_fits_in_the_file_is_damage(tmp_path: Path) -> None:
    """As flatstream-rs's recovery_errors_on_configured_bound_mismatch: a frame larger than
    the reader's bound is not a torn tail."""
    wire, bounds = ref_stream(BY_NAME["default"], [b"ok", b"sixteen byte body"])
    path = write(tmp_path / "log", wire)
    result = recover(path, DefaultDeframer(max_frame_len=8), truncate=True)
    assert isinstance(result.error, FrameTooLarge)
    assert (result.error.length, result.error.limit, result.error.offset) == (17, 8, bounds[1])
    assert (result.frames, result.good_offset, result.torn, result.truncated) == (
        1, bounds[1], False, False)
    assert path.read_bytes() == wire


def test_frames_across_read_boundaries(tmp_path: Path) -> None:
    codec = BY_NAME["crc32"]
    payloads = [b"small", bytes(range(256)) * (READ_SIZE // 256 + 100), b"", b"after"]
    wire, bounds = ref_stream(codec, payloads)
    for cut in (len(wire), bounds[2] - 1, bounds[1] + READ_SIZE // 2, READ_SIZE, 3):
        path = write(tmp_path / "log", wire[:cut])
        complete = sum(1 for b in bounds[1:] if b <= cut)
        last = max(b for b in bounds if b <= cut)
        result = recover(path, codec.make_deframer(), truncate=True)
        assert (result.frames, result.good_offset, result.torn) == (
            complete, last, cut not in bounds), cut
        assert path.stat().st_size == last


# -- what is not a torn tail ---------------------------------------------------------------

N = 200
NUMBERED = [b"payload-%04d" % i for i in range(N)]
STRONG = ["xxh3", "crc32", "crc16"]  # the built-in checksums


def refused(path: Path, deframer: DefaultDeframer | None, truncate: bool) -> TailNotTorn:
    """The TailNotTorn that recover raises on `path`, which it must leave as it was."""
    before = path.read_bytes()
    with pytest.raises(TailNotTorn) as caught:
        recover(path, deframer, truncate=truncate)
    assert path.read_bytes() == before
    return caught.value


@pytest.mark.parametrize("truncate", [False, True])
def test_the_readme_stream_read_with_the_default_deframer_is_refused(
        truncate: bool, tmp_path: Path) -> None:
    """The README's example: 1,000 XXH3 frames (24,000 bytes) read with the default deframer.
    Its first "frame" is 16 bytes, then payload text claims 1.7 GB: a 23,984-byte "torn tail"
    that used to be cut to 16 bytes. More than one frame of the stream: refused."""
    path = tmp_path / "t.bin"
    with open(path, "wb") as f, StreamWriter(f, ChecksumFramer(XxHash64())) as out:
        out.write_many([b"payload-%04d" % i for i in range(1000)])
    assert path.stat().st_size == 24_000
    error = refused(path, None, truncate)
    assert (error.offset, error.tail, error.frame_offset) == (16, 23_984, None)
    assert isinstance(error, CorruptionError) and isinstance(error, FramingError)
    # With the deframer that matches the writer's framer, as the README shows it:
    assert recover(path, ChecksumDeframer(XxHash64()), truncate=truncate) == Recovery(
        1000, 24_000, 24_000, False, None, False)


LENGTH_BYTE_EDITS = [(0, 0x00), (0, 0xFF), (1, 0x01), (1, 0xFF), (2, 0x40), (3, 0x01),
                     (3, 0x7F), (3, 0xFF)]  # (byte of the length, new value)


@pytest.mark.parametrize("name", STRONG)
@pytest.mark.parametrize("truncate", [False, True])
def test_one_corrupted_length_byte_is_never_cut(name: str, truncate: bool,
                                                tmp_path: Path) -> None:
    """One length byte of frame k of 200 set to another value: a length past the end with
    valid frames after it raises TailNotTorn naming frame k and frame k + 1; inside the file
    it is a checksum mismatch at frame k; above the limit, FrameTooLarge. Nothing is cut,
    except for the last frame, where a length past the end is a torn frame."""
    codec = BY_NAME[name]
    hs = 4 + codec.width
    wire, bounds = ref_stream(codec, NUMBERED)
    path = tmp_path / "log"
    seen = set()
    for k in (0, 1, 57, N - 3, N - 2, N - 1):
        for at, value in LENGTH_BYTE_EDITS:
            bad = bytearray(wire)
            bad[bounds[k] + at] = value
            data = bytes(bad)
            write(path, data)
            n = struct.unpack_from("<I", data, bounds[k])[0]
            case = (k, at, value, n)
            if n > MAX_FRAME_LEN:
                result = recover(path, codec.make_deframer(), truncate=truncate)
                assert isinstance(result.error, FrameTooLarge), case
                assert result.error.offset == bounds[k], case
                kind = "too large"
            elif bounds[k] + hs + n > len(data) and k == N - 1:
                result = recover(path, codec.make_deframer(), truncate=truncate)
                assert result == Recovery(k, bounds[k], len(data), True, None, truncate), case
                assert path.read_bytes() == (wire[: bounds[k]] if truncate else data), case
                seen.add("last frame")
                continue
            elif bounds[k] + hs + n > len(data):
                error = refused(path, codec.make_deframer(), truncate)
                assert (error.offset, error.frame_offset, error.tail) == (
                    bounds[k], bounds[k + 1], len(data) - bounds[k]), case
                seen.add("past the end")
                continue
            else:
                result = recover(path, codec.make_deframer(), truncate=truncate)
                assert isinstance(result.error, ChecksumMismatch), case
                assert result.error.offset == bounds[k], case
                kind = "inside"
            assert (result.frames, result.good_offset, result.torn, result.truncated) == (
                k, bounds[k], False, False), case
            assert path.read_bytes() == data, case
            seen.add(kind)
    assert seen == {"too large", "past the end", "inside", "last frame"}


@pytest.mark.parametrize("name", STRONG)
@pytest.mark.parametrize("truncate", [False, True])
def test_damage_in_the_middle_is_reported_never_cut(name: str, truncate: bool,
                                                    tmp_path: Path) -> None:
    """A flipped payload or checksum byte in frame 57 is a ChecksumMismatch there, as
    before; a length above max_frame_len is FrameTooLarge even when it runs past the end of
    the file (no writer wrote it: damage, not a torn frame). Nothing is cut."""
    codec = BY_NAME[name]
    hs = 4 + codec.width
    wire, bounds = ref_stream(codec, NUMBERED)
    at = bounds[57]
    path = tmp_path / "log"
    for where, error_type in ((at + hs + 3, ChecksumMismatch), (at + 4, ChecksumMismatch)):
        bad = bytearray(wire)
        bad[where] ^= 0x10
        write(path, bytes(bad))
        result = recover(path, codec.make_deframer(), truncate=truncate)
        assert isinstance(result.error, error_type) and result.error.offset == at
        assert (result.frames, result.good_offset, result.torn, result.truncated) == (
            57, at, False, False)
        assert path.read_bytes() == bytes(bad)
    for length, limit in ((0xFFFF_FFFF, MAX_FRAME_LEN), (MAX_FRAME_LEN + 1, MAX_FRAME_LEN),
                          (100_000, 1000)):
        data = wire[:at] + struct.pack("<I", length) + wire[at + 4 :]
        write(path, data)
        result = recover(path, codec.make_deframer(limit), truncate=truncate)
        assert isinstance(result.error, FrameTooLarge)
        assert (result.error.offset, result.error.length, result.error.limit) == (
            at, length, limit)
        assert (result.frames, result.good_offset, result.torn, result.truncated) == (
            57, at, False, False)
        assert path.read_bytes() == data


LAST = b"the last frame: " + struct.pack("<40I", *range(0, 4000, 100)) + b"-" * 200


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_a_torn_last_frame_is_cut_but_not_when_valid_frames_follow_it(
        codec: Codec, tmp_path: Path) -> None:
    """Every cut inside the last frame (also followed by zero fill, as a crash can leave)
    is a torn tail: cut to the last good frame, and the file reads back cleanly. The same
    torn frame followed by valid frames (written after it without a repair) is corruption
    for a checksummed deframer: raised, nothing cut."""
    payloads = [*NUMBERED[:30], bytes(range(256)), LAST]
    wire, bounds = ref_stream(codec, payloads)
    hs = 4 + codec.width
    last = bounds[-2]
    after = b"".join(ref_frame(codec, b"written after-%d" % i) for i in range(4))
    path = tmp_path / "log"
    for cut in range(last + 1, len(wire)):
        tails = [wire[:cut]]
        if last + hs <= cut < len(wire) - 64:  # zero fill shorter than what is missing
            tails.append(wire[:cut] + bytes(64))
        for data in tails:
            file = io.BytesIO(data)
            result = recover(file, codec.make_deframer(), truncate=True)
            assert result == Recovery(len(payloads) - 1, last, len(data), True, None,
                                      True), (cut, len(data))
            assert file.getvalue() == wire[:last]
            assert read_stream(file.getvalue(), codec.make_deframer()) == (payloads[:-1], None)
        if codec.width and last + hs <= cut < len(wire) - len(after):
            data = wire[:cut] + after
            for truncate in (False, True):
                file = io.BytesIO(data)
                with pytest.raises(TailNotTorn) as caught:
                    recover(file, codec.make_deframer(), truncate=truncate)
                assert (caught.value.offset, caught.value.frame_offset) == (last, cut), cut
                assert file.getvalue() == data
    for cut in (last + 1, last + hs + 1, len(wire) - 1):  # and on a path, fsynced
        write(path, wire[:cut])
        assert recover(path, codec.make_deframer(), truncate=True).truncated
        with open(path, "rb") as f:
            assert read_stream(f, codec.make_deframer()) == (payloads[:-1], None)
    if codec.width:
        write(path, wire[: last + hs + 10] + after)
        assert refused(path, codec.make_deframer(), True).frame_offset == last + hs + 10
    else:  # no checksum: frames cannot be told from junk, only the size rule refuses
        write(path, wire[: last + hs + 10] + after)
        assert recover(path, codec.make_deframer(), truncate=True).truncated
        # More than one frame's worth: the torn frame takes the first bytes of it as its
        # payload (nothing to check them by), and the rest is refused.
        many = after * (2 * UNCHECKED_TAIL // len(after))
        write(path, wire[: last + hs + 10] + many)
        error = refused(path, codec.make_deframer(), True)
        assert error.frame_offset is None and error.offset >= last


@pytest.mark.parametrize("name", ["default", "custom0"])
def test_without_checksums_a_tail_longer_than_one_frame_of_the_stream_is_refused(
        name: str, tmp_path: Path) -> None:
    """A deframer that cannot check frames cuts a tail of at most max(UNCHECKED_TAIL, the
    largest frame decoded before it, header included) bytes, and refuses a longer one."""
    codec = BY_NAME[name]
    hs = 4 + codec.width
    path = tmp_path / "log"
    for largest in (100, 10_000):
        payloads = [b"x" * largest, b"small", bytes(range(256)) * 100]
        wire, bounds = ref_stream(codec, payloads)
        limit = max(UNCHECKED_TAIL, hs + largest)
        for tail in (1, hs, limit - 1, limit, limit + 1, 20_000):
            data = wire[: bounds[2] + tail]
            write(path, data)
            if tail <= limit:
                assert recover(path, codec.make_deframer(), truncate=True) == Recovery(
                    2, bounds[2], len(data), True, None, True), (largest, tail)
                assert path.read_bytes() == wire[: bounds[2]]
            else:
                for truncate in (False, True):
                    error = refused(path, codec.make_deframer(), truncate)
                    assert (error.offset, error.tail, error.frame_offset) == (
                        bounds[2], tail, None)


class CountingCrc32:
    """CRC-32, counting the bytes it hashes."""

    name = "counting-crc32"
    size = 4

    def __init__(self) -> None:
        self.hashed = 0

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        self.hashed += memoryview(data).nbytes
        return zlib.crc32(data)


def hostile(junk: bytes, after: bytes = b"") -> tuple[bytes, int]:
    """Ten good CRC-32 frames, a header claiming 1 GiB (so the decoding stops there, as at
    a torn frame), `junk`, then `after`. Also returns where the header is."""
    good = ref_stream(BY_NAME["crc32"], NUMBERED[:10])[0]
    return good + struct.pack("<II", 1 << 30, 0) + junk + after, len(good)


def quadratic_junk(size: int) -> bytes:
    """At every fourth offset, a length that just fits in what is left after it: checking
    every candidate would hash O(size**2) bytes."""
    junk = bytearray(size)
    for i in range(0, size - 8, 4):
        struct.pack_into("<I", junk, i, size - i - 8 - 1)
    return bytes(junk)


@pytest.mark.parametrize("truncate", [False, True])
def test_adversarial_tails_cost_bounded_work_and_never_cut_good_data(
        truncate: bool, tmp_path: Path) -> None:
    """Many tiny plausible lengths: searched in full, then cut as torn, or, with valid frames
    after them, raised. Lengths that just fit at every fourth offset: the search stops at its
    work limit (bytes hashed counted) and refuses, nothing cut. A megabyte of zero fill: cut,
    quickly."""
    path = tmp_path / "log"
    tiny = b"\x01\x00\x00\x00" * 15_000  # lengths 1 and 256 at three offsets in four
    after = b"".join(ref_frame(BY_NAME["crc32"], p) for p in NUMBERED[:3])
    cases: list[tuple[bytes, bytes, str]] = [
        (tiny, b"", "torn"), (tiny, after, "corrupt"),
        (quadratic_junk(1 << 20), b"", "refused"), (quadratic_junk(1 << 20), after, "refused"),
        (bytes(1 << 20), b"", "torn"), (bytes(1 << 20), after, "corrupt"),
    ]
    for junk, tail_frames, expected in cases:
        data, bad = hostile(junk, tail_frames)
        write(path, data)
        checksum = CountingCrc32()
        began = time.perf_counter()
        if expected == "torn":
            result = recover(path, ChecksumDeframer(checksum), truncate=truncate)
            assert (result.frames, result.good_offset, result.torn) == (10, bad, True)
            assert path.read_bytes() == (data[:bad] if truncate else data)
        else:
            error = refused(path, ChecksumDeframer(checksum), truncate)
            assert (error.offset, error.tail) == (bad, len(data) - bad)
            assert error.frame_offset == (
                None if expected == "refused" else len(data) - len(tail_frames))
        assert time.perf_counter() - began < 20  # about a second at most on a slow machine
        tail = len(data) - bad
        budget = min(SCAN_WORK_MAX, SCAN_WORK_PER_BYTE * tail)
        searched = checksum.hashed - 10 * 12 - (len(after) if expected == "corrupt" else 0)
        assert searched <= budget - CANDIDATE_WORK, (expected, searched, budget)


@given(codec=st.sampled_from([BY_NAME[name] for name in STRONG]),
       payloads=st.lists(st.binary(min_size=1, max_size=40).filter(any), min_size=3,
                         max_size=25),
       data=st.data())
def test_one_damaged_byte_before_the_last_two_frames_is_never_cut(
        codec: Codec, payloads: list[bytes], data: st.DataObject) -> None:
    """Any byte of any frame but the last two, set to any other value: recover reports the
    damage at that frame or raises, and never truncates (with CRC-16, two frames after the
    damage suffice to prove it)."""
    wire, bounds = ref_stream(codec, payloads)
    at = data.draw(st.integers(0, bounds[-3] - 1), label="at")
    value = data.draw(st.integers(0, 255).filter(lambda v: v != wire[at]), label="value")
    k = max(i for i, b in enumerate(bounds) if b <= at)  # the damaged frame
    bad = bytearray(wire)
    bad[at] = value
    file = io.BytesIO(bytes(bad))
    try:
        result = recover(file, codec.make_deframer(), truncate=True)
    except TailNotTorn as error:
        assert error.offset == bounds[k] and error.frame_offset == bounds[k + 1]
    else:
        assert result.error is not None and not result.truncated
        assert (result.frames, result.good_offset, result.error.offset) == (k, bounds[k],
                                                                            bounds[k])
    assert file.getvalue() == bytes(bad)


@given(data=st.binary(max_size=300).map(lambda b: bytes(x if x < 3 else 0 for x in b))
       | st.binary(max_size=300),
       hs=st.sampled_from([5, 6, 7, 8, 11, 12]),
       limit=st.sampled_from([0, 10, 100, MAX_FRAME_LEN]),
       chunk=st.sampled_from([1, 4, 7, 64, 1 << 16]))
def test_the_candidate_filter_is_its_definition(data: bytes, hs: int, limit: int,
                                                chunk: int) -> None:
    """numpy's candidates (every alignment, chunk edges, zero fill) against the definition:
    offsets p > 0 whose length is at most the limit and fits, and whose header is not all
    zero bytes."""
    last = len(data) - hs
    expected = [p for p in range(1, last + 1)
                if struct.unpack_from("<I", data, p)[0] <= min(limit, last - p)
                and any(data[p : p + hs])]
    assert list(_candidates(data, hs, limit, chunk)) == expected
