#!/usr/bin/env python3
"""Fuzzer for the Arrow IPC readers (`streamdb.arrow`): hostile bytes must read as a table or
stop with a `StreamDbError`, the same whichever reader and source they go through, in bounded
memory and time; what reads cleanly must convert, write and read back unchanged.

    python fuzz/fuzz_arrow.py --seconds 60        # mutate the corpus and generated tables
    python fuzz/fuzz_arrow.py FILE_OR_DIR...      # replay inputs, print their outcomes
    python fuzz/fuzz_arrow.py --atheris [-- ARGS] # coverage-guided (atheris)

Input: the bytes of an IPC stream or file, as they are (a corpus file can be opened by
pyarrow too). Some steps split it in random pieces; their sizes come from a generator seeded
with the CRC-32 of the input, so a replay is exact. The target (`run_one`) runs, with
`validate=True` and with `validate=False`:

1. `read_ipc(data)` (auto-detects file or stream): the reference; then `read_ipc` of a
   bytearray, of a memoryview one byte off alignment, of `io.BytesIO` (read whole) and of an
   `io.BufferedReader` of 1 byte and up (it can peek: a stream is read message by message;
   when peek shows less than the file magic, the input is read whole);
2. `StreamReader` batch by batch over the bytes, over `io.BytesIO` and over a source giving
   short reads; for a file (ARROW1), over the stream inside it too;
3. `FileReader` when the input starts with ARROW1: the batches in order, then in reverse;
4. for every table (and every batch read before an error), with `validate=True`: `to_pydict`
   of the table and its batches, `to_pylist` and `to_numpy(zero_copy_only=False)` of every
   column, `write_ipc` as a stream and as a file (random codec and alignment) and a read of
   what was written (equal schema and values, NaN and NaT compared as such), and
   `to_pyarrow()` when pyarrow is importable. With `validate=False` (when `validate=True`
   refused the input) the same conversions run, but nothing is compared and `to_pylist` may
   raise IndexError (dictionary indices out of range: documented for trusted input only).

Accepted: a table, or a `StreamDbError`. A bug (`HarnessBug`, named after the step and the
exception type and innermost `streamdb` function): any other exception; sources or readers
that disagree on the table or the error type; `validate=False` failing where `validate=True`
read, or reading other values; a table that does not read back as written; a step whose
tracemalloc peak passes `MEMORY_BASE + MEMORY_PER_BYTE * len(input)` (conversions: plus
`SLOT_BYTES` per value converted); an input running past `TIME_LIMIT` seconds (watchdog).
Conversions of tables with more than `MAX_SLOTS` values in all (a null column of 2**40 rows
needs no bytes) are skipped: their cost is that of the output. Bugs are saved to fuzz/crashes/
(`arrow-<signature>-<sha1>.bin`, minimized, with a `.txt` traceback).

The seed corpus is fuzz/corpus/arrow/ (written by fuzz/make_arrow_corpus.py); the fuzzer adds
tables it generates itself (`generated`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import functools
import importlib.util
import io
import math
import random
import re
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
import numpy as np  # noqa: E402
from fuzzkit import HarnessBug, Mutator, Part  # noqa: E402
from fuzzkit.limits import tracing_memory  # noqa: E402
from fuzzkit.mutate import Op, flip_bits, insert_bytes, set_bytes, splice  # noqa: E402

from streamdb import StreamDbError, arrow  # noqa: E402
from streamdb.arrow import flatbuf as fb  # noqa: E402
from streamdb.arrow import metadata as md  # noqa: E402
from streamdb.arrow import types as t  # noqa: E402
from streamdb.arrow.writer import MAGIC  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "arrow"
LIB_DIR = Path(arrow.__file__).resolve().parents[1]  # streamdb/

TIME_LIMIT = 5.0  # seconds per input
MEMORY_BASE = 64 << 20  # traced bytes a step may peak at, plus MEMORY_PER_BYTE per input byte
MEMORY_PER_BYTE = 50
SLOT_BYTES = 1024  # and conversions this much per value they convert
MAX_SLOTS = 200_000  # values in all (children and dictionaries too) a table is converted up to
MAX_INPUT = 256 << 10  # mutations stay below this
try:
    HAVE_PYARROW = importlib.util.find_spec("pyarrow") is not None
except (ImportError, ValueError):  # a blocked or half-installed pyarrow
    HAVE_PYARROW = False



def step(name: str, budget: int) -> contextlib.AbstractContextManager[None]:
    """One step of the target: an exception that is neither a StreamDbError nor a HarnessBug
    is a bug named after the step, and the step's traced peak must stay within `budget`
    bytes, a StreamDbError (which goes through: the caller decides) or not. See
    `fuzzkit.step`."""
    return fuzzkit.step(name, budget, (LIB_DIR,), passes=(StreamDbError,))




@dataclasses.dataclass
class Read:
    """What one way of reading gave: batches (all of them, or those before the error), the
    schema if one was read, and the error."""

    batches: list[arrow.RecordBatch]
    error: StreamDbError | None
    schema: t.Schema | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ending(self) -> str:
        return "ok" if self.error is None else type(self.error).__name__


def attempt(name: str, budget: int, read: Callable[[], arrow.Table]) -> Read:
    with step(name, budget):
        try:
            table = read()
        except StreamDbError as exc:
            return Read([], exc)
    return Read(list(table.batches), None, table.schema)


def batch_by_batch(name: str, budget: int, make: Callable[[], arrow.StreamReader]) -> Read:
    got: list[arrow.RecordBatch] = []
    schema = None
    with step(name, budget):
        try:
            reader = make()
            schema = reader.schema
            while (batch := reader.read_next_batch()) is not None:
                got.append(batch)
                if batch.schema is not schema and batch.schema != schema:
                    raise HarnessBug(f"batch-schema: {name}", "a batch of another schema")
        except StreamDbError as exc:
            return Read(got, exc, schema)
    return Read(got, None, schema)


class ShortReads(io.RawIOBase):
    """A binary source giving at most a few bytes per read (a socket, a pipe)."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data, self._pos, self._rng = data, 0, rng

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self._data)
        n = min(size, self._rng.choice([1, 2, 3, 7, 64, 4096]))
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


# -- comparing values -------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN and NaT to NaT (bit patterns of NaN aside)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, np.datetime64 | np.timedelta64) and isinstance(b, np.datetime64
                                                                    | np.timedelta64):
        if np.isnat(a) or np.isnat(b):
            return bool(np.isnat(a) and np.isnat(b))
        return bool(a == b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(
            same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def first_difference(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> str:
    if list(a) != list(b):
        return f"columns {list(a)[:5]} against {list(b)[:5]}"
    for name in a:
        x, y = a[name], b[name]
        if len(x) != len(y):
            return f"column {name!r}: {len(x)} values against {len(y)}"
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if not same(u, v):
                return f"column {name!r} row {i}: {u!r:.80} against {v!r:.80}"
    return "?"


def slots(batches: list[arrow.RecordBatch]) -> int:
    """Values a conversion would build: every array's length, children and dictionaries
    (each dictionary once) included."""
    seen: set[int] = set()

    def count(a: arrow.Array) -> int:
        n = a.length + sum(count(c) for c in a.children)
        if a.dictionary is not None and id(a.dictionary) not in seen:
            seen.add(id(a.dictionary))
            n += count(a.dictionary)
        return n

    return sum(count(c) for b in batches for c in b.columns) + len(batches)


def shape(read: Read) -> list[int]:
    return [b.num_rows for b in read.batches]


def agree(ref: Read, got: Read, name: str, *, ref_name: str, values: bool) -> None:
    """`got` read what `ref` read: the same ending, batches and (when `values`) values."""
    if got.ending != ref.ending:
        raise HarnessBug(f"readers-disagree: {name}",
                         f"{got.ending} ({got.error}) where {ref_name} gave {ref.ending} "
                         f"({ref.error})")
    if not ref.ok:
        return
    if shape(got) != shape(ref):
        raise HarnessBug(f"batches-differ: {name}", f"batches of {shape(got)[:8]} rows where "
                         f"{ref_name} read {shape(ref)[:8]}")
    if got.schema != ref.schema:
        raise HarnessBug(f"schema-differs: {name}", f"{got.schema} / {ref.schema}")
    if values:
        with step("to_pydict", 1 << 62):  # memory: checked by the conversions
            try:
                x, y = table_of(got).to_pydict(), table_of(ref).to_pydict()
            except StreamDbError:  # a value with no Python equivalent: the raw buffers
                x, y = raw_values(got), raw_values(ref)  # must then agree
        if not same(x, y):
            raise HarnessBug(f"values-differ: {name}",
                             f"against {ref_name}: {first_difference(x, y)}")


def raw_values(read: Read) -> dict[str, list[Any]]:
    """Each batch's columns as their validity and fixed-width values, bytes for bytes (for
    values that do not convert to Python objects), keyed by batch and column."""
    out: dict[str, list[Any]] = {}
    for b, batch in enumerate(read.batches):
        for c, column in enumerate(batch.columns):
            raw = (column.values().tobytes() if column.type.layout == "fixed"
                   and not isinstance(column.type, t.DictionaryType) else None)
            out[f"{b}/{c}"] = [column.valid_mask().tobytes(), raw]
    return out


def table_of(read: Read) -> arrow.Table:
    assert read.schema is not None
    return arrow.Table(read.schema, read.batches)


# -- conversions --------------------------------------------------------------------------------


def write(table: arrow.Table, fmt: str, rng: random.Random) -> bytes:
    sink = io.BytesIO()
    arrow.write_ipc(sink, table, format=fmt, compression=rng.choice([None, None, "lz4", "zstd"]),
                    alignment=rng.choice([8, 64]))
    return sink.getvalue()


def convert(read: Read, what: str, budget: int, rng: random.Random, *, strict: bool) -> str:
    """Convert, write and read back what `read` read (all of it, or the batches before its
    error). `strict` (validate=True): the read-back must give the same schema and values,
    and only StreamDbError is accepted; otherwise IndexError is accepted from conversions
    and nothing is compared. Returns a short label."""
    if read.schema is None:
        return "no schema"
    table = table_of(read)
    n = slots(read.batches)
    huge = n > MAX_SLOTS
    convert_budget = budget + SLOT_BYTES * n
    allowed: tuple[type[Exception], ...] = (StreamDbError,) if strict else (StreamDbError,
                                                                           IndexError)
    tag = "" if strict else " (validate=False)"
    values: dict[str, list[Any]] | None = None
    if not huge:
        name = f"to_pydict{tag}: {what}"
        with step(name, convert_budget), contextlib.suppress(*allowed):
            values = table.to_pydict()
            for batch in table.batches:
                batch.to_pydict()
                for column in batch.columns:
                    column.to_pylist()
                    with contextlib.suppress(StreamDbError):
                        column.to_numpy(zero_copy_only=False)
    for fmt in ("stream", "file"):
        name = f"write_ipc {fmt}{tag}: {what}"
        with step(name, convert_budget if not huge else budget):
            try:
                data = write(table, fmt, rng)
            except StreamDbError:
                continue  # the writer refuses (a replaced dictionary in a file, ...)
        name = f"read back {fmt}{tag}: {what}"
        back = attempt(name, budget + MEMORY_PER_BYTE * len(data),
                       functools.partial(arrow.read_ipc, data, validate=strict))
        if not strict:
            continue
        if not back.ok:
            raise HarnessBug(f"written-unreadable: {fmt}", f"{what}: {back.error!r}")
        if back.schema != read.schema:
            raise HarnessBug(f"written-schema-differs: {fmt}",
                             f"{what}: {back.schema} / {read.schema}")
        if sum(shape(back)) != sum(shape(read)):
            raise HarnessBug(f"written-rows-differ: {fmt}",
                             f"{what}: {sum(shape(back))} rows of {sum(shape(read))}")
        if values is not None:
            with step(f"to_pydict, read back {fmt}: {what}", convert_budget):
                again = table_of(back).to_pydict()
            if not same(again, values):
                raise HarnessBug(f"written-values-differ: {fmt}",
                                 f"{what}: {first_difference(again, values)}")
    if strict and HAVE_PYARROW and not huge:
        name = f"to_pyarrow: {what}"
        with step(name, convert_budget):
            try:
                pa_table = table.to_pyarrow()
            except StreamDbError:
                pa_table = None
            except Exception as exc:  # pyarrow's own errors: pyarrow refuses what we wrote
                raise HarnessBug(f"to_pyarrow: {type(exc).__name__}", f"{what}: {exc!r}"
                                 ) from exc
        if pa_table is not None and (pa_table.num_rows, pa_table.num_columns) != (
                table.num_rows, table.num_columns):
            raise HarnessBug("to_pyarrow-shape", f"{what}: {pa_table.num_rows} x "
                             f"{pa_table.num_columns} of {table.num_rows} x {table.num_columns}")
    return "huge" if huge else "converted"


# -- the target ---------------------------------------------------------------------------------


def run_one(data: bytes, *, memory: bool = True) -> str:
    """The target. Returns the outcome's name; raises on a bug. With `memory`, every step's
    traced peak is checked (tracemalloc is started if it is off)."""
    with tracing_memory(memory), fuzzkit.watchdog(TIME_LIMIT):
        return _run(bytes(data))


def _run(data: bytes) -> str:
    rng = random.Random(zlib.crc32(data))
    budget = MEMORY_BASE + MEMORY_PER_BYTE * len(data)
    fmt = "file" if data[:6] == MAGIC else "stream"
    strict = _run_mode(data, True, rng, budget)
    lenient = _run_mode(data, False, rng, budget)
    if strict.ok and not lenient.ok:
        raise HarnessBug("validate-false-fails", f"validate=False: {lenient.error!r}; "
                         "validate=True read it")
    if strict.ok:
        agree(strict, lenient, "validate=False", ref_name="validate=True", values=False)
        n = slots(strict.batches)
        if n <= MAX_SLOTS:
            with step("to_pydict, validate=False", budget + SLOT_BYTES * n):
                try:
                    x, y = table_of(lenient).to_pydict(), table_of(strict).to_pydict()
                except StreamDbError:  # no Python equivalent: compare the raw buffers
                    x, y = raw_values(lenient), raw_values(strict)
            if not same(x, y):
                raise HarnessBug("validate-false-values", first_difference(x, y))
        done = convert(strict, "read_ipc", budget, rng, strict=True)
        batches = len(strict.batches)
        count = "0" if not batches else "1" if batches == 1 else "2+"
        rows = ", rows" if sum(shape(strict)) else ""
        return f"{fmt}: ok, {count} batches{rows} ({done})"
    if lenient.ok:
        convert(lenient, "read_ipc", budget, rng, strict=False)
    return f"{fmt}: {strict.ending}: {error_shape(strict.error)}" + (
        "; validate=False ok" if lenient.ok else "")


def _run_mode(data: bytes, validate: bool, rng: random.Random, budget: int) -> Read:
    """Every reader and source over `data` with one `validate`; returns the reference read
    (`read_ipc` of the bytes)."""
    v = f"validate={validate}"
    name = f"read_ipc(bytes, {v})"
    ref = attempt(name, budget, lambda: arrow.read_ipc(data, validate=validate))
    values = validate and ref.ok and slots(ref.batches) <= MAX_SLOTS

    def check(label: str, read: Callable[[], arrow.Table], compare: bool = False) -> None:
        agree(ref, attempt(label, budget, read), label, ref_name=name,
              values=compare and values)

    misaligned = memoryview(b"\x00" + data)[1:]
    check(f"read_ipc(bytearray, {v})", lambda: arrow.read_ipc(bytearray(data),
                                                             validate=validate))
    check(f"read_ipc(misaligned memoryview, {v})", lambda: arrow.read_ipc(
        misaligned, validate=validate))
    check(f"read_ipc(BytesIO, {v})", lambda: arrow.read_ipc(io.BytesIO(data),
                                                           validate=validate))
    size = rng.choice([1, 5, 8, 64, 8192])
    check(f"read_ipc(BufferedReader({size}), {v})", lambda: arrow.read_ipc(
        io.BufferedReader(io.BytesIO(data), size), validate=validate), compare=True)

    if data[:6] != MAGIC:
        readers: list[tuple[str, Callable[[], arrow.StreamReader]]] = [
            (f"StreamReader(bytes, {v})",
             lambda: arrow.StreamReader(data, validate=validate)),
            (f"StreamReader(BytesIO, {v})",
             lambda: arrow.StreamReader(io.BytesIO(data), validate=validate)),
            (f"StreamReader(short reads, {v})",
             lambda: arrow.StreamReader(ShortReads(data, rng), validate=validate)),
        ]
        for label, make in readers:
            got = batch_by_batch(label, budget, make)
            agree(ref, got, label, ref_name=name, values=values and "short" in label)
            if not got.ok and got.batches and validate:  # the batches before the error
                convert(got, label, budget, rng, strict=True)
        return ref

    inner = memoryview(data)[8:]
    label = f"StreamReader(the stream inside the file, {v})"
    got = batch_by_batch(label, budget, lambda: arrow.StreamReader(inner, validate=validate))
    if got.batches and validate:
        convert(got, label, budget, rng, strict=True)
    label = f"FileReader({v})"
    forward = batch_by_file(label, budget, validate, data, reverse=False)
    agree(ref, forward, label, ref_name=name, values=False)
    if forward.ok:
        label = f"FileReader, batches in reverse order ({v})"
        backward = batch_by_file(label, budget, validate, data, reverse=True)
        backward.batches.reverse()
        agree(forward, backward, label, ref_name="in order", values=values)
    elif forward.batches and validate:
        convert(forward, label, budget, rng, strict=True)
    return ref


def batch_by_file(name: str, budget: int, validate: bool, data: bytes, *, reverse: bool
                  ) -> Read:
    got: list[arrow.RecordBatch] = []
    schema = None
    with step(name, budget):
        try:
            reader = arrow.FileReader(data, validate=validate)
            schema = reader.schema
            order = range(reader.num_record_batches)
            got.extend(reader.get_batch(i) for i in (reversed(order) if reverse else order))
        except StreamDbError as exc:
            return Read(got, exc, schema)
    return Read(got, None, schema)


def error_shape(exc: BaseException | None) -> str:
    """An error's message without its numbers and names: outcomes that differ in it are
    different paths through the reader."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", str(exc))
    text = re.sub(r"-?\d+", "N", text)
    return text.split(": ", 1)[0][:70]


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
    candidates = [x for m in messages for x in m.ints]
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
    if at + width > len(data):
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
    spots = [m.body + off for m in messages for off, n in m.buffers
             if n >= 8 and m.body + off + 8 <= len(data)]
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
                  for k in range(count)]
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


# -- the harness ----------------------------------------------------------------------------------


def message_cuts(data: bytes) -> list[bytes]:
    """Shrinking candidates: the input cut after a message, or without one of them."""
    messages, _ = parse(data)
    return [data[: m.end] for m in messages[:-1]] + [
        data[: m.start] + data[m.end :] for m in messages[1:]]


HARNESS = fuzzkit.Harness(
    name="arrow", script="fuzz/fuzz_arrow.py", corpus_dir=CORPUS_DIR, code_dirs=(LIB_DIR,),
    run=lambda data, memory: run_one(data, memory=memory), fmt=IpcBytes(), generate=generated,
    describe=lambda data: f"{'file' if data[:6] == MAGIC else 'stream'}: {data[:64].hex()}"
    f"{'...' if len(data) > 64 else ''}", shrink_first=message_cuts, time_limit=TIME_LIMIT,
    pool_limit=2048)
signature = HARNESS.signature


def fuzz(seed: int, seconds: float | None = None, max_inputs: int | None = None, *,
         corpus: bool = True, generated_seeds: int = 40, crash_dir: Path | None = None,
         coverage: bool = False) -> fuzzkit.FuzzStats:
    """The built-in fuzzer (`fuzzkit.fuzz`): every seed once, then mutations of the pool
    and now and then a new generated table."""
    return fuzzkit.fuzz(HARNESS, seed=seed, seconds=seconds, max_inputs=max_inputs,
                        corpus_dirs=None if corpus else [], generated_seeds=generated_seeds,
                        crash_dir=crash_dir, coverage=coverage)


if __name__ == "__main__":
    from fuzzkit.cli import main

    sys.exit(main(lambda strict: HARNESS, __doc__))
