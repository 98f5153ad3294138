"""The inputs of the Arrow IPC harness (fuzz/fuzz_arrow.py): random tables of every type the
model has, written by our writer (`generated`); the structure of an IPC stream or file as
far as it parses (`parse`: messages, their integer fields and buffers, a file's footer); and
the structure-aware mutations, a plug-in of the shared mutator (`IpcBytes`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import io
import math
import random
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
from fuzzkit import Mutator, Part  # noqa: E402
from fuzzkit.mutate import Op, flip_bits, insert_bytes, set_bytes, splice  # noqa: E402

from streamdb import StreamDbError, arrow  # noqa: E402
from streamdb.arrow import flatbuf as fb  # noqa: E402
from streamdb.arrow import metadata as md  # noqa: E402
from streamdb.arrow import types as t  # noqa: E402
from streamdb.arrow.writer import MAGIC  # noqa: E402

MAX_INPUT = 256 << 10  # mutations stay below this
# -- generating tables --------------------------------------------------------------------------


def _field_name(rng: random.Random, i: int) -> str:
    return rng.choice([f"c{i}", f"c{i}", "", "x", "日本", f"col {i}"])


def random_type(rng: random.Random, depth: int = 0, *, in_dictionary: bool = False
                ) -> t.DataType:
    """A random type: every type the model has, nested up to two levels."""
    if depth < 2 and not in_dictionary and rng.random() < 0.3:
        kind = rng.choice(["list", "large_list", "fixed_size_list", "struct", "map",
                           "dictionary", "dictionary"])
        if kind == "dictionary":
            index = t.IntType(rng.choice([8, 16, 32, 64]), rng.random() < 0.7)
            value = rng.choice([t.Utf8Type(), t.IntType(64), t.BinaryType(), t.LargeUtf8Type(),
                                t.FloatType(t.DOUBLE), t.FixedSizeBinaryType(3)])
            return t.DictionaryType(index, value, rng.random() < 0.2)
        child = t.Field("item", random_type(rng, depth + 1), rng.random() < 0.8)
        if kind == "list":
            return t.ListType(child)
        if kind == "large_list":
            return t.LargeListType(child)
        if kind == "fixed_size_list":
            return t.FixedSizeListType(child, rng.choice([1, 2, 3]))
        if kind == "struct":  # unique names: struct values are dicts by field name
            names = dict.fromkeys(_field_name(rng, i) for i in range(rng.randint(0, 3)))
            return t.StructType(tuple(t.Field(name, random_type(rng, depth + 1))
                                      for name in names))
        return t.map_(rng.choice([t.Utf8Type(), t.IntType(32)]), random_type(rng, depth + 1))
    return rng.choice([
        t.IntType(8), t.IntType(16), t.IntType(32), t.IntType(64), t.IntType(8, False),
        t.IntType(16, False), t.IntType(32, False), t.IntType(64, False), t.FloatType(t.HALF),
        t.FloatType(t.SINGLE), t.FloatType(t.DOUBLE), t.BoolType(), t.Utf8Type(),
        t.LargeUtf8Type(), t.BinaryType(), t.LargeBinaryType(), t.FixedSizeBinaryType(4),
        t.DecimalType(rng.choice([5, 18, 38]), rng.choice([0, 2, 5])),
        t.DecimalType(rng.choice([40, 76]), rng.choice([0, 3]), 256), t.DateType(t.DAY),
        t.DateType(t.MILLI), t.TimeType(rng.randrange(4)),
        t.TimestampType(rng.randrange(4), rng.choice([None, "UTC", "+05:30",
                                                      "Europe/Paris"])),
        t.DurationType(rng.randrange(4)), t.IntervalType(rng.randrange(3)), t.NullType()])


def random_value(rng: random.Random, ty: t.DataType) -> Any:
    if isinstance(ty, t.NullType):
        return None
    if isinstance(ty, t.DictionaryType):
        return random_value(random.Random(rng.randrange(5)), ty.value)  # few distinct values
    if isinstance(ty, t.IntType):
        lo, hi = (-(1 << (ty.bits - 1)), (1 << (ty.bits - 1)) - 1) if ty.signed else (
            0, (1 << ty.bits) - 1)
        return rng.choice([lo, hi, 0, 1, rng.randint(lo, hi), rng.randint(-5, 5) % (hi + 1)])
    if isinstance(ty, t.FloatType):
        return rng.choice([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf,
                           round(rng.uniform(-1000, 1000), 2)])
    if isinstance(ty, t.BoolType):
        return rng.random() < 0.5
    if isinstance(ty, t.Utf8Type):
        return "".join(rng.choice("abcxyzé日\u00a0 ") for _ in range(rng.choice([0, 1, 3, 9])))
    if isinstance(ty, t.BinaryType):
        return rng.randbytes(rng.choice([0, 1, 4, 17]))
    if isinstance(ty, t.FixedSizeBinaryType):
        return rng.randbytes(ty.width)
    if isinstance(ty, t.DecimalType):
        digits = rng.randint(1, ty.precision)
        unscaled = rng.randint(-(10**digits - 1), 10**digits - 1)
        return decimal.Decimal(unscaled).scaleb(-ty.scale)
    if isinstance(ty, t.DateType):
        return dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-200_000, 200_000))
    if isinstance(ty, t.TimeType):
        return rng.randrange(86_400 * 10 ** (3 * ty.unit))
    if isinstance(ty, t.TimestampType | t.DurationType):
        return rng.randint(-(10**9), 10**9) * 10 ** (3 * ty.unit) + rng.randrange(1000)
    if isinstance(ty, t.IntervalType):
        if ty.unit == t.YEAR_MONTH:
            return rng.randint(-1000, 1000)
        if ty.unit == t.DAY_TIME:
            return (rng.randint(-1000, 1000), rng.randint(-10**8, 10**8))
        return (rng.randint(-100, 100), rng.randint(-1000, 1000), rng.randint(-10**15, 10**15))
    if isinstance(ty, t.MapType):
        entries = ty.value.type
        assert isinstance(entries, t.StructType)
        key, item = entries.fields
        return [(random_value(rng, key.type), random_values(rng, item.type, 1)[0])
                for _ in range(rng.randint(0, 3))]
    if isinstance(ty, t.FixedSizeListType):
        return random_values(rng, ty.value.type, ty.size)
    if isinstance(ty, t.ListType):
        return random_values(rng, ty.value.type, rng.randint(0, 3))
    if isinstance(ty, t.StructType):
        return {f.name: random_values(rng, f.type, 1)[0] for f in ty.fields}
    raise AssertionError(f"no values for {ty}")


def random_values(rng: random.Random, ty: t.DataType, n: int) -> list[Any]:
    nulls = rng.choice([0.0, 0.0, 0.2, 0.9])
    return [None if rng.random() < nulls else random_value(rng, ty) for _ in range(n)]


def random_table(rng: random.Random, *, columns: int | None = None,
                 batches: int | None = None) -> arrow.Table:
    """A random table of our model: a few columns, a few batches (some empty)."""
    fields = [t.Field(_field_name(rng, i), random_type(rng), rng.random() < 0.9)
              for i in range(columns if columns is not None else rng.randint(0, 4))]
    metadata = (("origin", "fuzz"),) if rng.random() < 0.2 else ()
    schema = t.Schema(tuple(fields), metadata)
    out = []
    for _ in range(batches if batches is not None else rng.choice([0, 1, 1, 2, 3])):
        n = rng.choice([0, 1, 3, 8, 9, 30])
        columns_ = [arrow.array(random_values(rng, f.type, n), f.type) for f in fields]
        out.append(arrow.RecordBatch(schema, columns_, n))
    return arrow.Table(schema, out)


def write_table(table: arrow.Table, fmt: str, compression: str | None = None,
                alignment: int = 64) -> bytes:
    """`table` written by our writer; a file that would need a replaced dictionary is
    written as a stream."""
    sink = io.BytesIO()
    try:
        arrow.write_ipc(sink, table, format=fmt, compression=compression, alignment=alignment,
                        schema=table.schema)
    except StreamDbError:
        if fmt != "file":
            raise
        return write_table(table, "stream", compression, alignment)
    return sink.getvalue()


def generated(rng: random.Random) -> bytes:
    """A plausible input: a random table written by our writer in either format, with a
    random codec and alignment, now and then torn."""
    table = random_table(rng)
    data = write_table(table, rng.choice(["stream", "file"]),
                       rng.choice([None, None, "lz4", "zstd"]), rng.choice([8, 64]))
    if rng.random() < 0.15 and data:
        data = data[: rng.randrange(len(data))]
    return data


# -- the structure of an input, for mutations ------------------------------------------------


@dataclasses.dataclass
class Message:
    start: int  # where its length prefix starts
    meta: int  # where the flatbuffer starts
    meta_len: int
    body: int  # where the body starts
    body_len: int
    ints: list[tuple[int, int]]  # (absolute position, width) of integer fields worth changing
    buffers: list[tuple[int, int]]  # (offset in the body, length) of its buffers

    @property
    def end(self) -> int:
        return self.body + self.body_len


def _message_ints(meta: bytes, base: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The integer fields of a message flatbuffer at `base`: body length, batch length, the
    field nodes' and buffers' int64s, dictionary id; and the buffers."""
    ints: list[tuple[int, int]] = []
    buffers: list[tuple[int, int]] = []
    try:
        msg = fb.root(meta)
        if (p := msg._at(3, 8)):
            ints.append((base + p, 8))
        kind, header = msg.union(1)
        if header is None:
            return ints, buffers
        if kind == md.DICTIONARY_BATCH:
            if (p := header._at(0, 8)):
                ints.append((base + p, 8))
            header = header.table(1)
            if header is None:
                return ints, buffers
        if kind in (md.DICTIONARY_BATCH, md.RECORD_BATCH):
            if (p := header._at(0, 8)):
                ints.append((base + p, 8))
            for field_id in (1, 2):
                start, n = header._vector(field_id, 16)
                ints += [(base + start + 8 * k, 8) for k in range(min(2 * n, 256))]
            buffers = [(off, n) for off, n in header.structs(2, md.BUFFER)]
        else:  # a schema: the int32s of its field tables (widths, sizes, bits)
            for k in range(0, len(meta) - 3, 4):
                value = struct.unpack_from("<i", meta, k)[0]
                if 0 <= value < 4096:
                    ints.append((base + k, 4))
    except StreamDbError:
        pass
    return ints, buffers


def parse(data: bytes) -> tuple[list[Message], tuple[int, int] | None]:
    """The messages of a stream (or of the stream inside a file), as far as they parse, and
    a file's footer (start, length)."""
    out: list[Message] = []
    pos = 8 if data[:6] == MAGIC else 0
    while pos + 8 <= len(data) and len(out) < 64:
        n = struct.unpack_from("<i", data, pos)[0]
        meta = pos + 4
        if n == -1:
            n = struct.unpack_from("<i", data, pos + 4)[0]
            meta += 4
        if n <= 0 or meta + n > len(data):
            break
        raw = data[meta : meta + n]
        try:
            body_len = fb.root(raw).scalar(3, "q", 0)
        except StreamDbError:
            body_len = 0
        if not 0 <= body_len <= len(data) - meta - n:
            body_len = max(0, len(data) - meta - n)
        ints, buffers = _message_ints(raw, meta)
        out.append(Message(pos, meta, n, meta + n, body_len, ints, buffers))
        pos = meta + n + body_len
    footer = None
    if data[:6] == MAGIC and len(data) >= 18 and data[-6:] == MAGIC:
        n = struct.unpack_from("<i", data, len(data) - 10)[0]
        if 0 < n <= len(data) - 18:
            footer = (len(data) - 10 - n, n)
    return out, footer


def interesting_ints(current: int, rng: random.Random, size: int) -> list[int]:
    return [0, 1, -1, 7, 8, 9, 63, 64, 65, 255, 4096, current - 1, current + 1, current * 2,
            current + 8, current - 8, size, size - current, size + 1, (1 << 31) - 1, 1 << 31,
            1 << 32, (1 << 32) + 1, 1 << 40, (1 << 62), (1 << 63) - 1, -(1 << 63),
            -(1 << 31), rng.randrange(1 << 16), rng.randrange(1 << 63)]


# -- the mutation plug-in -------------------------------------------------------------------


def boundaries(data: bytes | bytearray) -> list[int]:
    """Message boundaries, and a file's footer and its length."""
    messages, footer = parse(bytes(data))
    points = [m.start for m in messages] + [m.end for m in messages]
    if footer is not None:
        points += [footer[0], len(data) - 10]
    return points


def pick_region(m: Mutator, data: bytes) -> tuple[int, int] | None:
    """The flatbuffer of a random message, or the footer."""
    messages, footer = parse(data)
    regions = [(m.meta, m.meta_len) for m in messages]
    if footer is not None:
        regions += [footer] * max(1, len(regions) // 3)
    return m.rng.choice(regions) if regions else None


def flip_metadata(m: Mutator, data: bytes) -> bytes:
    region = pick_region(m, data)
    if region is None:
        return bytes(flip_bits(m, bytearray(data)))
    start, n = region
    buf = bytearray(data)
    for _ in range(m.rng.choice([1, 1, 2, 3])):
        at = start + m.rng.randrange(n)
        if m.rng.random() < 0.7:
            buf[at] ^= 1 << m.rng.randrange(8)
        else:
            buf[at] = m.rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, m.rng.randrange(256)])
    return bytes(buf)


def set_int(m: Mutator, data: bytes) -> bytes:
    """An int32 or int64 of the metadata (a length, offset, count, width) set to an
    interesting value: the known fields of a message, or any aligned word."""
    messages, footer = parse(data)
    rng = m.rng
    candidates = [x for msg in messages for x in msg.ints]
    if footer is not None:
        start, n = footer
        candidates += [(start + k, rng.choice([4, 8])) for k in range(0, n - 7, 8)]
    if not candidates or rng.random() < 0.2:
        region = pick_region(m, data)
        if region is None:
            return bytes(set_bytes(m, bytearray(data)))
        start, n = region
        width = rng.choice([4, 8])
        if n < width:
            return data
        candidates = [(start + rng.randrange(0, n - width + 1, width), width)]
    at, width = rng.choice(candidates)
    if not 0 <= at <= len(data) - width:
        return data
    fmt = "<q" if width == 8 else "<i"
    current = struct.unpack_from(fmt, data, at)[0]
    value = rng.choice(interesting_ints(current, rng, len(data)))
    bits = 8 * width
    value = (value + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))
    buf = bytearray(data)
    struct.pack_into(fmt, buf, at, value)
    return bytes(buf)


def set_prefix(m: Mutator, data: bytes) -> bytes:
    """A message's metadata length (or the footer's) set to a hostile value."""
    messages, footer = parse(data)
    rng = m.rng
    spots = [m.meta - 4 for m in messages]
    if footer is not None:
        spots.append(len(data) - 10)
    if not spots:
        return bytes(insert_bytes(m, bytearray(data)))
    at = rng.choice(spots)
    current = struct.unpack_from("<i", data, at)[0]
    value = rng.choice([0, -1, -2, 1, 4, 7, 8, current - 8, current + 8, current - 1,
                        len(data), (1 << 31) - 1, -(1 << 31), (64 << 20) + 1])
    buf = bytearray(data)
    struct.pack_into("<i", buf, at, (value + (1 << 31)) % (1 << 32) - (1 << 31))
    return bytes(buf)


def set_buffer_prefix(m: Mutator, data: bytes) -> bytes:
    """The int64 at a buffer's start (a compressed buffer's uncompressed length)."""
    messages, _ = parse(data)
    spots = [msg.body + off for msg in messages for off, n in msg.buffers
             if n >= 8 and 0 <= msg.body + off <= len(data) - 8]
    if not spots:
        return flip_body(m, data)
    at = m.rng.choice(spots)
    current = struct.unpack_from("<q", data, at)[0]
    value = m.rng.choice([-1, -2, 0, 1, current - 1, current + 1, current * 2,
                             1 << 34, (1 << 34) + 1, 1 << 31, (1 << 63) - 1])
    buf = bytearray(data)
    struct.pack_into("<q", buf, at, (value + (1 << 63)) % (1 << 64) - (1 << 63))
    return bytes(buf)


def flip_body(m: Mutator, data: bytes) -> bytes:
    messages, _ = parse(data)
    bodies = [m for m in messages if m.body_len]
    if not bodies:
        return bytes(flip_bits(m, bytearray(data)))
    msg = m.rng.choice(bodies)
    buf = bytearray(data)
    for _ in range(m.rng.choice([1, 2, 8])):
        at = msg.body + m.rng.randrange(msg.body_len)
        if at < len(buf):
            buf[at] = m.rng.randrange(256) if m.rng.random() < 0.5 else (
                buf[at] ^ (1 << m.rng.randrange(8)))
    return bytes(buf)


def edit_messages(m: Mutator, data: bytes) -> bytes:
    """Drop, repeat, swap or borrow whole messages (the footer is left as it was)."""
    messages, footer = parse(data)
    rng = m.rng
    if not messages:
        return bytes(splice(m, bytearray(data)))
    head = data[: messages[0].start]
    tail = data[messages[-1].end :]
    parts = [data[m.start : m.end] for m in messages]
    roll = rng.random()
    if roll < 0.3 and len(parts) > 1:
        del parts[rng.randrange(len(parts))]
    elif roll < 0.55:
        i = rng.randrange(len(parts))
        parts.insert(rng.randrange(len(parts) + 1), parts[i])
    elif roll < 0.75 and len(parts) > 1:
        i, j = rng.sample(range(len(parts)), 2)
        parts[i], parts[j] = parts[j], parts[i]
    else:
        other = m.partner()
        theirs, _ = parse(other)
        if theirs:
            msg = rng.choice(theirs)
            parts.insert(rng.randrange(len(parts) + 1), other[msg.start : msg.end])
    if rng.random() < 0.2:
        tail = b"" if footer is None else tail
    return head + b"".join(parts) + tail


def edit_footer(m: Mutator, data: bytes) -> bytes:
    """A file's blocks: one pointing at another message or somewhere else."""
    messages, footer = parse(data)
    if footer is None:
        if messages and m.rng.random() < 0.3:  # a stream as the start of a file
            return MAGIC + b"\x00\x00" + data
        return set_int(m, data)
    start, n = footer
    try:
        foot = fb.root(data[start : start + n])
        blocks = [(start + s + 24 * k, field_id) for field_id in (2, 3)
                  for s, count in [foot._vector(field_id, 24)] if s
                  for k in range(min(count, 4096))
                  if 0 <= start + s + 24 * k <= len(data) - 24]
    except StreamDbError:
        return flip_metadata(m, data)
    if not blocks:
        return set_int(m, data)
    at, _ = m.rng.choice(blocks)
    buf = bytearray(data)
    if messages and m.rng.random() < 0.6:
        msg = m.rng.choice(messages)
        struct.pack_into("<qi4xq", buf, at, msg.start, msg.body - msg.start, msg.body_len)
    else:
        offset, meta_len, body_len = struct.unpack_from("<qi4xq", data, at)
        which = m.rng.randrange(3)
        value = m.rng.choice(interesting_ints([offset, meta_len, body_len][which],
                                                 m.rng, len(data)))
        if which == 1:
            struct.pack_into("<i", buf, at + 8, (value + (1 << 31)) % (1 << 32) - (1 << 31))
        else:
            struct.pack_into("<q", buf, at + (0 if which == 0 else 16),
                             (value + (1 << 63)) % (1 << 64) - (1 << 63))
    return bytes(buf)


def _on_bytes(op: Callable[[Mutator, bytes], bytes]) -> Op:
    return lambda m, buf: bytearray(op(m, bytes(buf)))


class IpcBytes(fuzzkit.Format):
    """An IPC stream or file as it is: the shared mutations favour message boundaries; the
    format's own change metadata (bits, integers, length prefixes), bodies, whole messages
    and a file's footer."""

    max_size = MAX_INPUT
    OPS: Sequence[tuple[float, Op]] = [
        (3, _on_bytes(flip_metadata)), (4, _on_bytes(set_int)), (1.5, _on_bytes(set_prefix)),
        (1, _on_bytes(set_buffer_prefix)), (1, _on_bytes(flip_body)),
        (1.5, _on_bytes(edit_messages)), (1, _on_bytes(edit_footer))]

    def part(self, m: Mutator, data: bytes) -> Part:
        return Part(data, ops=self.OPS, points=boundaries, shared=0.6)


def message_cuts(data: bytes) -> list[bytes]:
    """Shrinking candidates: the input cut after a message, or without one of them."""
    messages, _ = parse(data)
    return [data[: m.end] for m in messages[:-1]] + [
        data[: m.start] + data[m.end :] for m in messages[1:]]
