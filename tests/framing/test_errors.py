"""The framing errors' place in the error tree (streamdb/errors.py)."""

from __future__ import annotations

import pytest

import streamdb.framing
from streamdb import errors
from streamdb.framing import (
    ChecksumMismatch,
    FrameTooLarge,
    FramingError,
    TailNotTorn,
    UnexpectedEof,
)


@pytest.mark.parametrize("error", [
    UnexpectedEof("the input ends inside a frame", offset=3),
    FrameTooLarge(10, 5, offset=8),
])
def test_framing_errors_are_stream_db_errors_never_eof_error(error: Exception) -> None:
    assert isinstance(error, FramingError)
    assert isinstance(error, errors.StreamDbError)
    assert not isinstance(error, EOFError)
    assert not isinstance(error, errors.CorruptionError)
    with pytest.raises(FramingError):
        raise error


def test_checksum_mismatch_is_corruption_with_its_values() -> None:
    error = ChecksumMismatch("bad", offset=12, expected=0xCBF43926, computed=0x31C3)
    assert isinstance(error, errors.CorruptionError)
    assert isinstance(error, errors.StreamDbError)
    assert not isinstance(error, FramingError)
    assert (error.offset, error.expected, error.computed) == (12, 0xCBF43926, 0x31C3)
    assert "offset 12" in str(error)


def test_error_fields_and_messages() -> None:
    too_large = FrameTooLarge(10, 5, offset=8)
    assert (too_large.length, too_large.limit, too_large.offset) == (10, 5, 8)
    assert "10" in str(too_large) and "5" in str(too_large)
    eof = UnexpectedEof("torn", offset=3)
    assert eof.offset == 3 and "offset 3" in str(eof)
    assert UnexpectedEof("torn").offset is None


def test_the_framing_package_exports_the_same_classes() -> None:
    assert streamdb.framing.UnexpectedEof is errors.UnexpectedEof
    assert streamdb.framing.FrameTooLarge is errors.FrameTooLarge
    assert streamdb.framing.FramingError is errors.FramingError
    assert streamdb.framing.ChecksumMismatch is errors.ChecksumMismatch
    assert streamdb.framing.TailNotTorn is errors.TailNotTorn


def test_tail_not_torn_is_framing_and_corruption_with_its_offsets() -> None:
    error = TailNotTorn("valid frames follow", offset=240, tail=23_760, frame_offset=264)
    assert isinstance(error, FramingError) and isinstance(error, errors.CorruptionError)
    assert isinstance(error, errors.StreamDbError) and not isinstance(error, EOFError)
    assert (error.offset, error.tail, error.frame_offset) == (240, 23_760, 264)
    assert "offset 240" in str(error)
    refused = TailNotTorn("more than one frame", offset=16, tail=23_984)
    assert refused.frame_offset is None
    with pytest.raises(errors.CorruptionError):
        raise refused
