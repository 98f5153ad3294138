"""`recover`: a clean file, a torn tail at every cut (and its truncation), damage that is
reported and never truncated, garbage lengths at the tail; on paths and file objects."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from streamdb.framing import (
    ChecksumMismatch,
    DefaultDeframer,
    FrameTooLarge,
    Recovery,
    StreamReader,
    recover,
)
from streamdb.framing.recover import READ_SIZE
from tests.framing.helpers import BY_NAME, CODECS, Codec, read_stream, ref_stream

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
    (struct.pack("<I", 0xFFFFFFFF), "above the limit, and past the end of the file"),
    (struct.pack("<I", 0xFFFFFFFF) + b"junk", "above the limit, and past the end of the file"),
    (struct.pack("<I", 1 << 30) + b"junk", "within the limit, past the end of the file"),
    (b"\xff\xff", "a torn length"),
])
def test_a_garbage_length_running_past_the_end_is_a_torn_tail(
        tail: bytes, note: str, tmp_path: Path) -> None:
    """docs/format/framing.md: a length that claims more than is left is a torn tail (unlike
    flatstream-rs, whose recovery calls a complete u32::MAX length an invalid frame)."""
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
