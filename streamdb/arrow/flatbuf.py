"""A small FlatBuffers reader and builder: just what the Arrow IPC metadata needs.

FlatBuffers in brief (the binary format of flatbuffers.dev, "internals"): a buffer starts
with a u32 offset to the root table. A table starts with an i32 `soffset`: its vtable lies
at `table - soffset`. A vtable is u16 vtable size, u16 table size, then one u16 per field
id: the field's offset from the table start, 0 when absent (the default applies). Offsets
to strings, vectors and tables are u32, relative to where they are stored, and point
forward. A vector is a u32 count then its elements; a string is a u32 length, the bytes
and a NUL. A union is two fields: a u8 type (id n) and an offset (id n + 1).

`Table` reads with every position checked against the buffer before use: a bad offset is
`ArrowFormatError`, never an IndexError or an allocation sized by the input. `Builder`
writes front to back (children after their parents, so every offset points forward),
scalars naturally aligned from the buffer's start and the whole padded to 8 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamdb.errors import ArrowFormatError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_VT = struct.Struct("<HH")
_SCALARS = {c: struct.Struct("<" + c) for c in "bBhHiIqQ?"}
MAX_DEPTH = 64  # nesting of tables this reader follows


class Table:
    """A table in `buf` at `pos`, its vtable checked and read once. O(1) per field."""

    __slots__ = ("_offs", "buf", "pos", "size")

    def __init__(self, buf: bytes, pos: int) -> None:
        n = len(buf)
        if not 0 <= pos <= n - 4 or pos % 4:
            raise ArrowFormatError(f"flatbuffer table at {pos} lies outside the buffer")
        vt: int = pos - _I32.unpack_from(buf, pos)[0]
        if not 0 <= vt <= n - 4 or vt % 2:
            raise ArrowFormatError(f"flatbuffer vtable at {vt} lies outside the buffer")
        vt_len, size = _VT.unpack_from(buf, vt)
        if vt_len < 4 or vt_len % 2 or vt + vt_len > n or size < 4 or pos + size > n:
            raise ArrowFormatError(f"flatbuffer vtable at {vt} is malformed")
        self.buf, self.pos, self.size = buf, pos, size
        self._offs: tuple[int, ...] = struct.unpack_from(f"<{(vt_len - 4) // 2}H", buf, vt + 4)

    def _at(self, i: int, width: int) -> int:
        """The absolute position of field `i` (`width` bytes), or 0 when absent."""
        offs = self._offs
        if i >= len(offs) or not offs[i]:
            return 0
        off = offs[i]
        if off + width > self.size:
            raise ArrowFormatError(f"flatbuffer field {i} lies outside its table")
        return self.pos + off

    def has(self, i: int) -> bool:
        return self._at(i, 1) != 0

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        """Field `i`, a little-endian integer (or bool) of struct format `fmt`."""
        f = _SCALARS[fmt]
        p = self._at(i, f.size)
        return int(f.unpack_from(self.buf, p)[0]) if p else default

    def _target(self, i: int) -> int:
        p = self._at(i, 4)
        if not p:
            return 0
        target: int = p + _U32.unpack_from(self.buf, p)[0]
        if target > len(self.buf) - 4:
            raise ArrowFormatError(f"flatbuffer offset of field {i} points outside the buffer")
        return target

    def table(self, i: int) -> Table | None:
        target = self._target(i)
        return Table(self.buf, target) if target else None

    def _vector(self, i: int, width: int) -> tuple[int, int]:
        """(first element's position, count) of vector field `i`; (0, 0) when absent."""
        v = self._target(i)
        if not v:
            return 0, 0
        count = _U32.unpack_from(self.buf, v)[0]
        if count * width > len(self.buf) - v - 4:
            raise ArrowFormatError(f"flatbuffer vector of field {i} runs past the buffer")
        return v + 4, count

    def string(self, i: int, errors: str = "strict") -> str | None:
        """String field `i`; with errors="surrogateescape", bytes that are not UTF-8 come
        back as surrogates (and the builder writes them back as they were)."""
        start, n = self._vector(i, 1)
        if not start:
            return None
        try:
            return self.buf[start : start + n].decode("utf-8", errors)
        except UnicodeDecodeError as exc:
            raise ArrowFormatError(f"flatbuffer string of field {i} is not UTF-8") from exc

    def tables(self, i: int) -> list[Table]:
        start, n = self._vector(i, 4)
        buf = self.buf
        out = []
        for k in range(n):
            p = start + 4 * k
            target = p + _U32.unpack_from(buf, p)[0]
            out.append(Table(buf, target))
        return out

    def structs(self, i: int, fmt: struct.Struct) -> list[tuple[int, ...]]:
        """Vector field `i` of structs laid out as `fmt` (little-endian, no padding)."""
        start, n = self._vector(i, fmt.size)
        if not n:
            return []
        return list(fmt.iter_unpack(self.buf[start : start + n * fmt.size]))

    def scalars(self, i: int, fmt: str) -> list[int]:
        size = struct.calcsize(fmt)
        start, n = self._vector(i, size)
        return list(struct.unpack_from(f"<{n}{fmt}", self.buf, start)) if n else []

    def union(self, i: int) -> tuple[int, Table | None]:
        """(type, table) of the union whose type is field `i` and value field `i + 1`."""
        kind = self.scalar(i, "B")
        return kind, (self.table(i + 1) if kind else None)


def root(buf: bytes) -> Table:
    """The root table of a flatbuffer."""
    if len(buf) < 8:
        raise ArrowFormatError("flatbuffer shorter than 8 bytes")
    return Table(buf, _U32.unpack_from(buf, 0)[0])


# -- building -------------------------------------------------------------------------------


@dataclass
class T:
    """A table to build: `fields[i]` is field i's value or None (absent). A value is a
    scalar as `(fmt, value)`, or a child: `T`, `str`, `bytes` (a string), `Tables`,
    `Structs` or `Scalars`."""

    fields: Sequence[object]


@dataclass
class Tables:
    items: Sequence[T]


@dataclass
class Structs:
    fmt: struct.Struct  # little-endian, fields naturally aligned, size a multiple of 8
    items: Sequence[tuple[int, ...]]


@dataclass
class Scalars:
    fmt: str
    items: Sequence[int]


@dataclass
class _Pending:
    at: int  # where the u32 offset goes
    child: object


@dataclass
class Builder:
    out: bytearray = field(default_factory=bytearray)

    def _align(self, n: int, rem: int = 0) -> None:
        """Pad until len(out) % n == rem."""
        self.out += bytes((rem - len(self.out)) % n)

    def finish(self, table: T) -> bytes:
        """The flatbuffer whose root is `table`, padded to a multiple of 8 bytes."""
        self.out += bytes(4)
        pending = [_Pending(0, table)]
        while pending:
            later: list[_Pending] = []
            for p in pending:
                pos, children = self._write(p.child)
                _U32.pack_into(self.out, p.at, pos - p.at)
                later += children
            pending = later
        self._align(8)
        return bytes(self.out)

    def _write(self, obj: object) -> tuple[int, list[_Pending]]:
        if isinstance(obj, T):
            return self._table(obj)
        if isinstance(obj, str | bytes):
            data = obj.encode("utf-8", "surrogateescape") if isinstance(obj, str) else obj
            self._align(4)
            pos = len(self.out)
            self.out += _U32.pack(len(data)) + data + b"\x00"
            return pos, []
        if isinstance(obj, Tables):
            self._align(4)
            pos = len(self.out)
            self.out += _U32.pack(len(obj.items)) + bytes(4 * len(obj.items))
            return pos, [_Pending(pos + 4 + 4 * k, t) for k, t in enumerate(obj.items)]
        if isinstance(obj, Structs):
            self._align(8, 4)  # the elements 8-aligned
            pos = len(self.out)
            self.out += _U32.pack(len(obj.items))
            for item in obj.items:
                self.out += obj.fmt.pack(*item)
            return pos, []
        if isinstance(obj, Scalars):
            size = struct.calcsize(obj.fmt)
            self._align(max(size, 4), (4 if size == 8 else 0))
            pos = len(self.out)
            self.out += _U32.pack(len(obj.items)) + struct.pack(
                f"<{len(obj.items)}{obj.fmt}", *obj.items)
            return pos, []
        raise TypeError(f"cannot build {type(obj).__name__}")

    def _table(self, t: T) -> tuple[int, list[_Pending]]:
        # Inline layout: soffset, then fields by size (8, 4, 2, 1) so each is aligned when
        # the table starts at 4 mod 8. Children (offsets) take 4 bytes.
        slots = []
        for i, value in enumerate(t.fields):
            if value is None:
                continue
            if isinstance(value, tuple):
                fmt, v = value
                slots.append((struct.calcsize(fmt), i, fmt, v))
            else:
                slots.append((4, i, None, value))
        slots.sort(key=lambda s: -s[0])
        offsets = [0] * len(t.fields)
        at = 4
        for size, i, _fmt, _v in slots:
            offsets[i] = at
            at += size
        table_size = at
        vt = _U16.pack(4 + 2 * len(t.fields)) + _U16.pack(table_size) + b"".join(
            _U16.pack(o) for o in offsets)
        self._align(2)
        vt_pos = len(self.out)
        self.out += vt
        self._align(8, 4)
        pos = len(self.out)
        self.out += _I32.pack(pos - vt_pos) + bytes(table_size - 4)
        children = []
        for _size, i, fmt, v in slots:
            if fmt is None:
                children.append(_Pending(pos + offsets[i], v))
            else:
                struct.pack_into("<" + fmt, self.out, pos + offsets[i], v)
        return pos, children
