"""The inputs of the framing harness (fuzz/fuzz_framing.py): a control byte choosing the
deframer and limits, then the stream (`Case`); streams generated in each framing
(`generated`); and the structure-aware mutations, a plug-in of the shared mutator
(`FramedStream`): hostile lengths at frame boundaries, valid re-framings, edited payloads."""

from __future__ import annotations

import dataclasses
import functools
import random
import struct
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import Mutator, Part  # noqa: E402

import streamdb.framing as fr  # noqa: E402

KINDS = ("default", "xxh3", "crc32", "crc16", "custom3")
SMALL = 0x08
SMALL_LIMIT = 64  # bytes: the small max_frame_len and TLV max_value_len
MAX_INPUT = 64 << 10  # mutations stay below this


class Adler24:
    """A custom 3-byte checksum whose values are wider than 3 bytes (stored mod 2**24)."""

    name = "adler24"
    size = 3

    def compute(self, data: bytes | bytearray | memoryview) -> int:
        return zlib.adler32(data)


# -- the input --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    small: bool
    stream: bytes

    @classmethod
    def decode(cls, data: bytes) -> Case:
        control = data[0] if data else 0
        return cls(KINDS[(control & 0x07) % len(KINDS)], bool(control & SMALL), data[1:])

    def encode(self) -> bytes:
        return bytes([KINDS.index(self.kind) | (SMALL if self.small else 0)]) + self.stream

    @property
    def limit(self) -> int:
        return SMALL_LIMIT if self.small else fr.MAX_FRAME_LEN

    @property
    def tlv_limit(self) -> int:
        return SMALL_LIMIT if self.small else 16 << 20

    def checksum(self) -> fr.Checksum | None:
        return {"default": None, "xxh3": fr.XxHash64(), "crc32": fr.Crc32(),
                "crc16": fr.Crc16(), "custom3": Adler24()}[self.kind]

    def deframer(self) -> fr.DefaultDeframer:
        checksum = self.checksum()
        if checksum is None:
            return fr.DefaultDeframer(self.limit)
        return fr.ChecksumDeframer(checksum, self.limit)

    def framer(self) -> fr.Framer:
        checksum = self.checksum()
        framer: fr.Framer = fr.DefaultFramer() if checksum is None else fr.ChecksumFramer(checksum)
        return fr.BoundedFramer(framer, SMALL_LIMIT) if self.small else framer

    @property
    def header_size(self) -> int:
        checksum = self.checksum()
        return 4 + (checksum.size if checksum is not None else 0)

    def describe(self) -> str:
        return f"{self.kind}{'/small' if self.small else ''}, {len(self.stream)}-byte stream"


# -- generating streams -----------------------------------------------------------------------


def random_payload(rng: random.Random, small: bool) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        n = 0
    elif roll < 0.6:
        n = rng.randint(1, 16)
    elif roll < 0.92 or small:
        n = rng.randint(17, SMALL_LIMIT if small else 300)
    else:
        n = rng.randint(300, 3000)
    if small and rng.random() < 0.05:
        n = SMALL_LIMIT + rng.choice([0, 0, 1])  # at the limit, or just past it
    if rng.random() < 0.3:
        return bytes([rng.randrange(256)]) * n
    return rng.randbytes(n)


def frame_all(kind: str, payloads: Sequence[bytes]) -> bytes:
    case = Case(kind, False, b"")  # frame past the small limit too: hostile lengths
    framer = case.framer()
    return b"".join(framer.header(p) + p for p in payloads)


def tlv_all(rng: random.Random, values: Sequence[bytes]) -> bytes:
    return b"".join(fr.encode_tlv(rng.randrange(256), v) for v in values)


def generated(rng: random.Random) -> bytes:
    """A plausible input: a stream of random payloads in one of the framings (sometimes TLV
    records), now and then torn or ending in a hostile length."""
    kind = rng.choice(KINDS)
    small = rng.random() < 0.35
    payloads = [random_payload(rng, small) for _ in range(rng.choice([0, 1, 2, 3, 5, 10, 30]))]
    stream = tlv_all(rng, payloads) if rng.random() < 0.2 else frame_all(kind, payloads)
    roll = rng.random()
    if roll < 0.2 and stream:
        stream = stream[: rng.randrange(len(stream))]
    elif roll < 0.3:
        stream += struct.pack("<I", rng.choice(INTERESTING_LENGTHS)) + rng.randbytes(
            rng.randint(0, 12))
    return Case(kind, small, stream).encode()


INTERESTING_LENGTHS = (
    0, 1, 2, 3, 4, 7, 8, 63, SMALL_LIMIT, SMALL_LIMIT + 1, 255, 256, 4095, 4096, 65535, 65536,
    (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 16 << 20, (16 << 20) + 1, (1 << 30),
    fr.MAX_FRAME_LEN - 1, fr.MAX_FRAME_LEN, fr.MAX_FRAME_LEN + 1, 0x7FFFFFFF, 0xFFFFFFFE,
    0xFFFFFFFF,
)


def frame_offsets(stream: bytes, header_size: int) -> list[int]:
    """Where frames start, walking the lengths (stops at the first that does not fit)."""
    out, pos = [], 0
    while pos + 4 <= len(stream):
        out.append(pos)
        n = struct.unpack_from("<I", stream, pos)[0]
        if pos + header_size + n > len(stream):
            break
        pos += header_size + n
    return out


def lenient_frames(case: Case) -> tuple[list[bytes], bytes]:
    """The payloads of the whole frames from the start, checksums unchecked, and the rest."""
    s, hs = case.stream, case.header_size
    payloads, pos = [], 0
    while pos + 4 <= len(s):
        n = struct.unpack_from("<I", s, pos)[0]
        if pos + hs + n > len(s):
            break
        payloads.append(s[pos + hs : pos + hs + n])
        pos += hs + n
    return payloads, s[pos:]


# -- the mutation plug-in -----------------------------------------------------------------------


def set_length(case: Case, m: Mutator, buf: bytearray) -> bytearray:
    """A hostile length at a frame boundary: near the limits, near what is left, huge."""
    at = m.position(buf, bias=0.7)
    left = len(buf) - at - case.header_size
    value = m.rng.choice([*INTERESTING_LENGTHS, left - 1, left, left + 1,
                          m.rng.randrange(1 << 32)])
    packed = struct.pack("<I", value % (1 << 32))
    if at + 4 > len(buf):
        return buf[:at] + packed
    buf[at : at + 4] = packed
    return buf


def repair(case: Case, m: Mutator, buf: bytearray) -> bytearray:
    """Re-frame the whole frames with valid checksums (what a payload flip broke)."""
    payloads, rest = lenient_frames(dataclasses.replace(case, stream=bytes(buf)))
    return bytearray(frame_all(case.kind, payloads) + rest)


def edit_payloads(case: Case, m: Mutator, buf: bytearray) -> bytearray:
    """Insert, drop, change or shuffle whole frames, re-framed validly."""
    payloads, rest = lenient_frames(dataclasses.replace(case, stream=bytes(buf)))
    rng = m.rng
    roll = rng.random()
    if roll < 0.3 or not payloads:
        payloads.insert(rng.randrange(len(payloads) + 1), random_payload(rng, case.small))
    elif roll < 0.5:
        del payloads[rng.randrange(len(payloads))]
    elif roll < 0.7:
        i = rng.randrange(len(payloads))
        p = bytearray(payloads[i])
        m.flip(p, 0, len(p), 1)
        payloads[i] = bytes(p)
    else:
        rng.shuffle(payloads)
    return bytearray(frame_all(case.kind, payloads) + (rest if rng.random() < 0.5 else b""))


def append(case: Case, m: Mutator, buf: bytearray) -> bytearray:
    extra = [random_payload(m.rng, case.small) for _ in range(m.rng.randint(1, 3))]
    return buf + frame_all(case.kind, extra)


class FramedStream(fuzzkit.Format):
    """A control byte and a stream: the control bits change now and then (another deframer
    or limit on the same stream); otherwise the stream is mutated, at frame boundaries most
    of the time, with hostile lengths and valid re-framings besides the shared mutations."""

    max_size = MAX_INPUT

    def whole(self, m: Mutator, data: bytes) -> bytes | None:
        if m.rng.random() >= 0.08:
            return None
        control = (data[0] if data else 0) ^ (1 << m.rng.randrange(4))
        return bytes([control]) + data[1:]

    def part(self, m: Mutator, data: bytes) -> Part:
        case = Case.decode(data)
        control = data[:1] or b"\x00"
        ops = [(4, set_length), (2, repair), (1.5, edit_payloads), (1, append)]
        return Part(case.stream, lambda stream: control + stream,
                    [(w, functools.partial(op, case)) for w, op in ops],
                    lambda buf: frame_offsets(bytes(buf), case.header_size))
