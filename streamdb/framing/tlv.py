"""TLV records (Lightstream): `[tag u8][length u32 LE][value]`, back to back.

`TlvEncoder` makes them; `TlvDecoder` is sans-IO and resumable: feed pieces of any size,
take records as they complete. Values longer than `max_value_len` are FrameTooLarge,
raised as soon as the length is read, before anything is sized from it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from streamdb.errors import FrameTooLarge, InvalidArgumentError
from streamdb.framing.buffer import InputBuffer

TLV_HEADER = struct.Struct("<BI")
MAX_VALUE_LEN = 16 << 20


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: memoryview


class TlvEncoder:
    def __init__(self, max_value_len: int = 0xFFFFFFFF) -> None:
        self.max_value_len = max_value_len

    def encode(self, tag: int, value: bytes | bytearray | memoryview) -> bytes:
        """One record. Raises InvalidArgumentError for a tag outside 0..255, FrameTooLarge
        for a value past `max_value_len`. O(len(value))."""
        return self._header(tag, value) + bytes(value)

    def encode_into(self, out: bytearray, tag: int, value: bytes | bytearray | memoryview) -> None:
        """Append one record to `out`."""
        out += self._header(tag, value)
        out += value

    def _header(self, tag: int, value: bytes | bytearray | memoryview) -> bytes:
        if not 0 <= tag <= 255:
            raise InvalidArgumentError(f"a TLV tag is 0..255: {tag}")
        n = memoryview(value).nbytes
        if n > self.max_value_len:
            raise FrameTooLarge(n, self.max_value_len)
        return TLV_HEADER.pack(tag, n)


def encode_tlv(tag: int, value: bytes | bytearray | memoryview) -> bytes:
    return TlvEncoder().encode(tag, value)


class TlvDecoder:
    """`feed(bytes)`, then `next_record()` until None; `end()` when the input is over
    (UnexpectedEof inside a record)."""

    def __init__(self, max_value_len: int = MAX_VALUE_LEN) -> None:
        self.max_value_len = max_value_len
        self.buffer = InputBuffer()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer.feed(data)

    def next_record(self) -> Tlv | None:
        b = self.buffer
        if not b.ensure(TLV_HEADER.size):
            return None
        tag, n = TLV_HEADER.unpack_from(b.view, b.pos)
        if n > self.max_value_len:
            raise FrameTooLarge(n, self.max_value_len, offset=b.offset)
        if not b.ensure(TLV_HEADER.size + n):
            return None
        start = b.pos + TLV_HEADER.size
        b.pos = start + n
        return Tlv(tag, b.view[start : start + n].toreadonly())

    def records(self) -> Iterator[Tlv]:
        """The records complete so far."""
        while (record := self.next_record()) is not None:
            yield record

    def end(self) -> None:
        self.buffer.end("TLV record")
