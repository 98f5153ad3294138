"""Framers and deframers: the wire format of flatstream-rs, sans-IO.

A frame is `[u32 payload length, LE][checksum, `size` bytes LE][payload]`; frames lie back
to back and nothing on the wire names the checksum (docs/format/framing.md). A framer
makes the bytes before a payload (`header`), so a writer can send the payload itself
without copying it; a deframer finds frames in a buffer (`frame_at`) and `FrameDecoder`
turns any sequence of fed pieces into payloads.

Differences from flatstream-rs, on purpose: an input that ends inside a frame's length
is `UnexpectedEof` (flatstream-rs takes it for a clean end), the maximum frame length
applies to every deframer (`max_frame_len`, default 2 GiB) and is checked before any buffer
is sized, and a custom checksum of k bytes stores exactly k bytes (flatstream-rs stores 8
for sizes other than 0, 2, 4 and 8). A checksum value is stored modulo 2^(8k), as
flatstream-rs's integer casts do.
"""

from __future__ import annotations

import struct
from typing import Protocol

from streamdb.errors import ChecksumMismatch, FrameTooLarge, InvalidArgumentError
from streamdb.framing.buffer import InputBuffer
from streamdb.framing.checksums import Checksum, check_checksum

MAX_FRAME_LEN = 2 << 30  # the default read limit, as flatstream-rs: 2 GiB
LENGTH = struct.Struct("<I")
LENGTH_MAX = 0xFFFFFFFF
_HEADERS = {0: LENGTH, 2: struct.Struct("<IH"), 4: struct.Struct("<II"), 8: struct.Struct("<IQ")}


class Framer(Protocol):
    """Makes the bytes that precede a payload on the wire."""

    header_size: int

    def header(self, payload: bytes | bytearray | memoryview) -> bytes: ...


class DefaultFramer:
    """`[u32 length][payload]`."""

    header_size = 4
    checksum: Checksum | None = None

    def header(self, payload: bytes | bytearray | memoryview) -> bytes:
        """The length of `payload`, packed. Raises FrameTooLarge past 4 GiB - 1. O(1)."""
        n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        if n > LENGTH_MAX:
            raise FrameTooLarge(n, LENGTH_MAX)
        return LENGTH.pack(n)

    def frame(self, payload: bytes | bytearray | memoryview) -> bytes:
        """The whole frame (a copy of the payload). O(len(payload))."""
        return self.header(payload) + bytes(payload)


class ChecksumFramer(DefaultFramer):
    """`[u32 length][checksum][payload]`, the checksum of the payload in `checksum.size`
    bytes. O(len(payload)) per header (the checksum)."""

    def __init__(self, checksum: Checksum) -> None:
        self.checksum = check_checksum(checksum)
        self.header_size = 4 + checksum.size
        self._struct = _HEADERS.get(checksum.size)
        self._compute = getattr(checksum, "function", checksum.compute)
        self._mask = (1 << 8 * checksum.size) - 1  # a value is stored in `size` bytes

    def header(self, payload: bytes | bytearray | memoryview) -> bytes:
        n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        if n > LENGTH_MAX:
            raise FrameTooLarge(n, LENGTH_MAX)
        value: int = self._compute(payload) & self._mask
        if self._struct is not None:
            return self._struct.pack(n, value) if self.header_size > 4 else LENGTH.pack(n)
        return LENGTH.pack(n) + value.to_bytes(self.header_size - 4, "little")


class BoundedFramer:
    """Another framer, refusing payloads longer than `max_len` (FrameTooLarge) before
    anything is written."""

    def __init__(self, inner: Framer, max_len: int) -> None:
        if not 0 <= max_len <= LENGTH_MAX:
            raise InvalidArgumentError(f"max_len must be 0..{LENGTH_MAX}: {max_len}")
        self.inner = inner
        self.max_len = max_len
        self.header_size = inner.header_size
        self.checksum: Checksum | None = getattr(inner, "checksum", None)

    def header(self, payload: bytes | bytearray | memoryview) -> bytes:
        n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        if n > self.max_len:
            raise FrameTooLarge(n, self.max_len)
        return self.inner.header(payload)


class DefaultDeframer:
    """Reads `[u32 length][payload]` frames of at most `max_frame_len` bytes."""

    checksum: Checksum | None = None

    def __init__(self, max_frame_len: int = MAX_FRAME_LEN) -> None:
        if not 0 <= max_frame_len <= LENGTH_MAX:
            raise InvalidArgumentError(f"max_frame_len must be 0..{LENGTH_MAX}")
        self.max_frame_len = max_frame_len
        self.header_size = 4
        self.size = 0

    def frame_at(self, buf: memoryview, pos: int, base: int = 0) -> tuple[int, int] | None:
        """(payload start, payload end) of the frame at `buf[pos:]`, verified; None when
        the buffer ends before it does. `base` is the stream offset of buf[0], for errors.
        Raises FrameTooLarge (as soon as the length is there), ChecksumMismatch."""
        if len(buf) - pos < 4:
            return None
        n = LENGTH.unpack_from(buf, pos)[0]
        if n > self.max_frame_len:
            raise FrameTooLarge(n, self.max_frame_len, offset=base + pos)
        start = pos + self.header_size
        if start + n > len(buf):
            return None
        if self.size:
            self.verify(buf, pos, start, start + n, base)
        return start, start + n

    def needed(self, buf: memoryview, pos: int) -> int:
        """Bytes from `pos` the next frame needs in all (its header's, while unknown)."""
        if len(buf) - pos < 4:
            return self.header_size
        length: int = LENGTH.unpack_from(buf, pos)[0]
        return self.header_size + length

    def verify(self, buf: memoryview, pos: int, start: int, stop: int, base: int) -> None:
        """Raise ChecksumMismatch unless the frame at `pos` carries its payload's checksum."""
        assert self.checksum is not None
        expected = int.from_bytes(buf[pos + 4 : start], "little")
        computed = self.checksum.compute(buf[start:stop]) & ((1 << 8 * self.size) - 1)
        if computed != expected:
            raise ChecksumMismatch(
                f"frame payload fails its {self.checksum.name} checksum: stored "
                f"{expected:#x}, computed {computed:#x}", offset=base + pos,
                expected=expected, computed=computed)


class ChecksumDeframer(DefaultDeframer):
    """Reads `[u32 length][checksum][payload]` frames, verifying each payload."""

    def __init__(self, checksum: Checksum, max_frame_len: int = MAX_FRAME_LEN) -> None:
        super().__init__(max_frame_len)
        self.checksum = check_checksum(checksum)
        self.size = checksum.size
        self.header_size = 4 + checksum.size


Deframer = DefaultDeframer  # ChecksumDeframer is one too


class FrameDecoder:
    """Sans-IO frame decoding: `feed(bytes)` any pieces, then `next_payload()` until it
    returns None (more input needed); `end()` when the input is over. Payloads are
    read-only memoryviews that stay valid (their buffer is never reused)."""

    def __init__(self, deframer: DefaultDeframer | None = None) -> None:
        self.deframer = deframer or DefaultDeframer()
        self.buffer = InputBuffer()
        self.frames = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer.feed(data)

    def next_payload(self) -> memoryview | None:
        """The next payload, or None until more is fed. Raises FrameTooLarge,
        ChecksumMismatch (the stream cannot go on after either)."""
        b, d = self.buffer, self.deframer
        found = d.frame_at(b.view, b.pos, b.base)
        if found is None:  # the frame continues in pieces not joined yet, or not fed
            if not b.ensure(4):
                return None
            d.frame_at(b.view, b.pos, b.base)  # the length is readable: checks the limit
            if not b.ensure(d.needed(b.view, b.pos)):
                return None
            found = d.frame_at(b.view, b.pos, b.base)
            assert found is not None
        start, stop = found
        b.pos = stop
        self.frames += 1
        return b.view[start:stop].toreadonly()

    def end(self) -> None:
        """The input is over: UnexpectedEof if it stopped inside a frame."""
        self.buffer.end("frame")
