"""Shared pieces of the framing tests: custom checksums, the codecs under test, a reference
encoder written from docs/format/framing.md with struct/zlib/xxhash only (independent of
`streamdb.framing`'s framers), and sources that return short reads."""

from __future__ import annotations

import binascii
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import xxhash

from streamdb.framing import (
    MAX_FRAME_LEN,
    ChecksumDeframer,
    ChecksumFramer,
    Crc16,
    Crc32,
    DefaultDeframer,
    DefaultFramer,
    XxHash64,
)
from streamdb.framing.frames import Framer

Bytes = bytes | bytearray | memoryview


class LowBytesOfCrc32:
    """A custom checksum: the low `size` bytes of the CRC-32 (so its values are known from
    CRC-32's). With `wide`, `compute` returns the whole CRC-32 and leaves the reduction to
    the framing code (stored modulo 2^(8*size), as frames.py documents)."""

    def __init__(self, size: int, *, wide: bool = False) -> None:
        self.name = f"crc32-low{size}"
        self.size = size
        self._mask = (1 << 8 * size) - 1 if not wide else 0xFFFFFFFF

    def compute(self, data: Bytes) -> int:
        return zlib.crc32(data) & self._mask


def _crc16(data: Bytes) -> int:
    return binascii.crc_hqx(data, 0)


@dataclass(frozen=True)
class Codec:
    """A framer/deframer pair and, for the reference encoder, its checksum width and
    function (None: no checksum field)."""

    name: str
    framer: Callable[[], Framer]
    deframer: Callable[[int], DefaultDeframer]  # max_frame_len -> deframer
    width: int
    checksum: Callable[[Bytes], int] | None

    def make_deframer(self, max_frame_len: int = MAX_FRAME_LEN) -> DefaultDeframer:
        return self.deframer(max_frame_len)

    def checksum_of(self, payload: Bytes) -> int:
        """The value stored for `payload` (0 for no checksum)."""
        if self.checksum is None:
            return 0
        return self.checksum(payload) & ((1 << 8 * self.width) - 1)

    def __repr__(self) -> str:
        return self.name


def _low(size: int) -> Codec:
    return Codec(
        f"custom{size}",
        lambda: ChecksumFramer(LowBytesOfCrc32(size)),
        lambda m: ChecksumDeframer(LowBytesOfCrc32(size), m),
        size,
        zlib.crc32,
    )


CODECS: list[Codec] = [
    Codec("default", DefaultFramer, DefaultDeframer, 0, None),
    Codec("xxh3", lambda: ChecksumFramer(XxHash64()),
          lambda m: ChecksumDeframer(XxHash64(), m), 8, xxhash.xxh3_64_intdigest),
    Codec("crc32", lambda: ChecksumFramer(Crc32()),
          lambda m: ChecksumDeframer(Crc32(), m), 4, zlib.crc32),
    Codec("crc16", lambda: ChecksumFramer(Crc16()),
          lambda m: ChecksumDeframer(Crc16(), m), 2, _crc16),
    _low(1),
    _low(3),
    _low(0),
]
BY_NAME = {codec.name: codec for codec in CODECS}
CHECKSUMMED = [codec for codec in CODECS if codec.width]


def ref_frame(codec: Codec, payload: Bytes) -> bytes:
    """One frame, from the byte table: u32 LE length, `width` checksum bytes LE, payload."""
    data = bytes(payload)
    return (struct.pack("<I", len(data)) + codec.checksum_of(data).to_bytes(codec.width, "little")
            + data)


def ref_stream(codec: Codec, payloads: Sequence[Bytes]) -> tuple[bytes, list[int]]:
    """The frames back to back, and the frame boundaries (0, end of frame 1, ...)."""
    out = bytearray()
    bounds = [0]
    for payload in payloads:
        out += ref_frame(codec, payload)
        bounds.append(len(out))
    return bytes(out), bounds


class ShortReads:
    """A binary source whose `read(n)` returns 1..`most` bytes (seeded), never more than
    asked for, and b"" only at the end. Records what was asked."""

    def __init__(self, data: bytes, most: int = 7, seed: int = 0) -> None:
        self._data = data
        self._pos = 0
        self._most = most
        self._rng = random.Random(seed)
        self.asked: list[int] = []

    def read(self, n: int) -> bytes:
        self.asked.append(n)
        assert n > 0, "a reader must ask for at least one byte"
        take = min(n, self._rng.randint(1, self._most))
        piece = self._data[self._pos : self._pos + take]
        self._pos += len(piece)
        return piece


def random_pieces(data: bytes, rng: random.Random, most: int = 9) -> list[bytes]:
    """`data` cut into pieces of 0..`most` bytes (empty pieces included)."""
    pieces = []
    pos = 0
    while pos < len(data):
        take = rng.randint(0, most)
        pieces.append(data[pos : pos + take])
        pos += take
    return pieces


def decode_pieces(deframer: DefaultDeframer,
                  pieces: Sequence[Bytes]) -> tuple[list[bytes], Exception | None]:
    """Feed `pieces` to a FrameDecoder, taking payloads as they complete, then `end()`.
    The payloads, and the documented error that stopped it, if any."""
    from streamdb.errors import StreamDbError
    from streamdb.framing import FrameDecoder

    decoder = FrameDecoder(deframer)
    views: list[memoryview] = []
    try:
        for piece in pieces:
            decoder.feed(piece)
            while (payload := decoder.next_payload()) is not None:
                views.append(payload)
        decoder.end()
    except StreamDbError as exc:
        return [bytes(v) for v in views], exc
    return [bytes(v) for v in views], None


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def read_stream(source: object, deframer: DefaultDeframer, *, mode: str = "messages",
                read_size: int = 1 << 20) -> tuple[list[bytes], Exception | None]:
    """Read `source` with a StreamReader in `mode` (messages, read_message, process_all):
    the payloads that came out, and the documented error that stopped it, if any."""
    from streamdb.errors import StreamDbError
    from streamdb.framing import StreamReader

    reader = StreamReader(source, deframer, read_size=read_size)
    out: list[bytes] = []
    try:
        if mode == "messages":
            out.extend(bytes(p) for p in reader.messages())
        elif mode == "read_message":
            while (payload := reader.read_message()) is not None:
                out.append(bytes(payload))
        else:
            assert mode == "process_all"
            count = reader.process_all(lambda p: out.append(bytes(p)))
            assert count == len(out)
    except StreamDbError as exc:
        return out, exc
    return out, None
