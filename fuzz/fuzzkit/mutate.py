"""The shared mutator: byte-level mutations that every harness uses, and the plug-in
interface through which a harness adds what its format knows (which part of an input to
edit, the offsets worth hitting, its structure-aware mutations).

A round of `Mutator.mutate` either edits the input as a whole (`Format.whole`: a control
byte, options, swapping files) or picks one part of it (`Format.part`: a file of a disk
image, the stream after a control byte) and applies one mutation, drawn by weight from the
shared ones below and the part's own, to that part's bytes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

Op = Callable[["Mutator", bytearray], bytearray]
Points = Callable[[bytes | bytearray], Sequence[int]]


@dataclasses.dataclass(frozen=True)
class Part:
    """One region of an input: its bytes, the whole input with them replaced (`put`), the
    format's own mutations for it (weight, op), and the offsets its positions favour."""

    data: bytes
    put: Callable[[bytes], bytes] = bytes
    ops: Sequence[tuple[float, Op]] = ()
    points: Points | None = None
    shared: float = 1.0  # weight factor of the shared mutations


class Format:
    """A harness's mutation plug-in. This base knows no structure: the whole input is one
    part and only the shared mutations apply."""

    rounds: Sequence[int] = (1, 1, 1, 2, 2, 3)  # mutations per input, drawn from these
    max_size: int = 1 << 20  # inputs are cut to this

    def whole(self, m: Mutator, data: bytes) -> bytes | None:
        """A mutation of the input as a whole, or None to mutate one of its parts."""
        return None

    def part(self, m: Mutator, data: bytes) -> Part:
        """The part of `data` this round mutates (drawing from `m.rng` as it likes)."""
        return Part(data)


class Mutator:
    """Seeded mutations of a harness's inputs. `partner()` supplies another input of the
    pool for splices (its part, as `Format.part` picks it)."""

    def __init__(self, rng: random.Random, fmt: Format, partner: Callable[[], bytes]) -> None:
        self.rng = rng
        self.fmt = fmt
        self.partner = partner
        self.points: Points | None = None

    def mutate(self, data: bytes) -> bytes:
        rng, fmt = self.rng, self.fmt
        out = data
        for _ in range(rng.choice(fmt.rounds)):
            whole = fmt.whole(self, out)
            if whole is not None:
                out = whole
                continue
            part = fmt.part(self, out)
            self.points = part.points
            ops = [(w * part.shared, op) for w, op in SHARED] + list(part.ops)
            op = rng.choices([op for _, op in ops], [w for w, _ in ops])[0]
            out = part.put(bytes(op(self, bytearray(part.data))[: fmt.max_size]))
        self.points = None
        return out[: fmt.max_size]

    # -- helpers for the mutations -----------------------------------------------------------

    def partner_part(self) -> bytes:
        saved = self.points
        try:
            return self.fmt.part(self, self.partner()).data
        finally:
            self.points = saved

    def position(self, buf: bytes | bytearray, bias: float = 0.65) -> int:
        """An offset in `buf` (or its end): one the part favours most of the time."""
        if self.points is not None and self.rng.random() < bias:
            points = [p for p in self.points(buf) if 0 <= p <= len(buf)]
            if points:
                return self.rng.choice(points)
        return self.rng.randrange(len(buf) + 1)

    def span(self, buf: bytes | bytearray) -> tuple[int, int]:
        """A range of `buf`, starting at a favoured offset most of the time."""
        start = min(self.position(buf), max(0, len(buf) - 1))
        n = self.rng.choice([1, 4, 8, 16, 40, self.rng.randint(1, 64), self.rng.randint(1, 1024)])
        return start, min(len(buf), start + n)

    def flip(self, buf: bytearray, lo: int, hi: int, bits: int) -> None:
        """Flip `bits` random bits in buf[lo:hi]."""
        hi = min(hi, len(buf))
        for _ in range(bits if hi > lo else 0):
            buf[self.rng.randrange(lo, hi)] ^= 1 << self.rng.randrange(8)

    def put_int(self, buf: bytearray, at: int, size: int, values: Sequence[int], *,
                big_endian: float = 0.0) -> None:
        """Write one of `values` (wrapped to the width) as a `size`-byte integer at `at`,
        little-endian (big-endian with probability `big_endian`)."""
        if at < 0 or at + size > len(buf) or not values:
            return
        bits = 8 * size
        value = self.rng.choice(values) % (1 << bits)
        big = size > 1 and self.rng.random() < big_endian
        buf[at : at + size] = value.to_bytes(size, "big" if big else "little")

    def current(self, buf: bytes | bytearray, at: int, size: int) -> int:
        return int.from_bytes(buf[at : at + size], "little")


def interesting(size: int, current: int = 0, extra: Sequence[int] = ()) -> list[int]:
    """Values worth writing into a `size`-byte field holding `current`: the edges of the
    width, small numbers, powers of two, the neighbours of the current value, and `extra`."""
    top = (1 << 8 * size) - 1
    values = {0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 1 << 16, 1 << 31, 1 << 32,
              1 << 62, 1 << 63, top, top - 1, top >> 1, (top >> 1) + 1, current, current + 1,
              current - 1, current + 2, current - 2, current * 2, current // 2, *extra}
    return sorted({v for v in values if 0 <= v <= top} | {v % (top + 1) for v in values if v < 0})


# -- the shared mutations ------------------------------------------------------------------


def flip_bits(m: Mutator, buf: bytearray) -> bytearray:
    if not buf:
        return bytearray([m.rng.randrange(256)])
    for _ in range(m.rng.choice([1, 1, 2, 3, 8])):
        buf[min(m.position(buf), len(buf) - 1)] ^= 1 << m.rng.randrange(8)
    return buf


def set_bytes(m: Mutator, buf: bytearray) -> bytearray:
    if not buf:
        return buf
    at = min(m.position(buf), len(buf) - 1)
    value = m.rng.choice([0, 0xFF, 0x7F, 0x80, 1, m.rng.randrange(256)])
    n = m.rng.choice([1, 1, 2, 4, 8, 40])
    buf[at : at + n] = bytes([value]) * len(buf[at : at + n])
    return buf


def truncate(m: Mutator, buf: bytearray) -> bytearray:
    """Cut at a favoured offset (give or take a few bytes), anywhere, or near the end."""
    roll = m.rng.random()
    if roll < 0.6:
        at = m.position(buf, bias=1.0) + m.rng.choice([-8, -2, -1, 0, 0, 1, 2, 3, 5, 9])
    elif roll < 0.8:
        at = m.rng.randrange(len(buf) + 1)
    else:
        at = len(buf) - m.rng.randint(1, 64)
    return buf[: max(0, at)]


def insert_bytes(m: Mutator, buf: bytearray) -> bytearray:
    at = m.position(buf)
    n = m.rng.choice([1, 2, 4, 8, m.rng.randint(1, 16)])
    fill = m.rng.choice([m.rng.randbytes(n), bytes(n), b"\xff" * n])
    return buf[:at] + fill + buf[at:]


def delete_range(m: Mutator, buf: bytearray) -> bytearray:
    start, end = m.span(buf)
    del buf[start:end]
    return buf


def duplicate_range(m: Mutator, buf: bytearray) -> bytearray:
    if not buf:
        return buf
    start, end = m.span(buf)
    at = m.position(buf) if m.rng.random() < 0.5 else end
    return buf[:at] + buf[start:end] * m.rng.choice([1, 1, 2, 4]) + buf[at:]


def zero_range(m: Mutator, buf: bytearray) -> bytearray:
    start, end = m.span(buf)
    buf[start:end] = bytes(end - start)
    return buf


def splice(m: Mutator, buf: bytearray) -> bytearray:
    """Another input's bytes: overwriting a piece in place, or as the new tail."""
    source = m.partner_part()
    if not source:
        return buf
    at = m.position(buf)
    start = m.rng.randrange(len(source))
    if m.rng.random() < 0.5:
        piece = source[start : start + m.rng.choice([4, 8, 40, 64, 512, len(source)])]
        buf[at : at + len(piece)] = piece
        return buf
    return buf[:at] + source[start:]


SHARED: list[tuple[float, Op]] = [
    (3, flip_bits), (2, set_bytes), (2, truncate), (1, insert_bytes), (1, delete_range),
    (1, duplicate_range), (0.5, zero_range), (1.5, splice),
]
