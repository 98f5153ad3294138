"""Frame checksums: the algorithms flatstream-rs names, and the protocol for others.

| flatstream-rs name | class | algorithm | width | check value of b"123456789" |
|---|---|---|---|---|
| XxHash64 | `XxHash64` | XXH3-64, seed 0 | 8 | 0x72DCB18B67A17DFF |
| Crc32 | `Crc32` | CRC-32/ISO-HDLC (zlib) | 4 | 0xCBF43926 |
| Crc16 | `Crc16` | CRC-16/XMODEM (poly 0x1021, init 0) | 2 | 0x31C3 |

A checksum is stored little-endian in exactly `size` bytes after the frame's length.
"""

from __future__ import annotations

import binascii
import zlib
from collections.abc import Callable
from typing import Protocol

import xxhash


class Checksum(Protocol):
    """A frame checksum: `size` bytes (0 to 8) of `compute(payload)`, which must return an
    int in [0, 2**(8*size)). Implement this for a custom algorithm. The built-in ones also
    have `function`, the C function that `compute` calls, which readers call directly
(not Crc16: `binascii.crc_hqx` takes its initial value positionally after the data)."""

    name: str
    size: int

    def compute(self, data: bytes | bytearray | memoryview) -> int: ...


class XxHash64:
    """XXH3-64 (flatstream-rs calls it XxHash64), 8 bytes."""

    name = "xxh3"
    size = 8
    function: Callable[[bytes | bytearray | memoryview], int] = staticmethod(
        xxhash.xxh3_64_intdigest)

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        return xxhash.xxh3_64_intdigest(data)


class Crc32:
    """CRC-32/ISO-HDLC, the zlib CRC, 4 bytes."""

    name = "crc32"
    size = 4
    function: Callable[[bytes | bytearray | memoryview], int] = staticmethod(zlib.crc32)

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        return zlib.crc32(data)


class Crc16:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0), 2 bytes. Not crcmod's crc-16."""

    name = "crc16"
    size = 2

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        return binascii.crc_hqx(data, 0)


def check_checksum(checksum: Checksum) -> Checksum:
    """`checksum` if its size is 0..8 bytes; InvalidArgumentError otherwise."""
    from streamdb.errors import InvalidArgumentError

    size = getattr(checksum, "size", None)
    if not isinstance(size, int) or not 0 <= size <= 8 or not callable(
            getattr(checksum, "compute", None)):
        raise InvalidArgumentError(
            f"a checksum has a size of 0 to 8 bytes and a compute() method: {checksum!r}")
    return checksum
