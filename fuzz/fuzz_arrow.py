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
tables it generates itself (`generated`). The input model and its mutations are in
fuzz/arrow_inputs.py, the machinery every harness shares in fuzz/fuzzkit/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import io
import math
import random
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

FUZZ_DIR = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(FUZZ_DIR.parent), str(FUZZ_DIR)) if p not in sys.path]

import fuzzkit  # noqa: E402
import numpy as np  # noqa: E402
from arrow_inputs import (  # noqa: E402
    IpcBytes,
    generated,
    message_cuts,
)
from fuzzkit import HarnessBug  # noqa: E402
from fuzzkit.limits import tracing_memory  # noqa: E402

from streamdb import StreamDbError, arrow  # noqa: E402
from streamdb.arrow import types as t  # noqa: E402
from streamdb.arrow.writer import MAGIC  # noqa: E402

CORPUS_DIR = FUZZ_DIR / "corpus" / "arrow"
LIB_DIR = Path(arrow.__file__).resolve().parents[1]  # streamdb/

TIME_LIMIT = 5.0  # seconds per input
MEMORY_BASE = 64 << 20  # traced bytes a step may peak at, plus MEMORY_PER_BYTE per input byte
MEMORY_PER_BYTE = 50
SLOT_BYTES = 1024  # and conversions this much per value they convert
MAX_SLOTS = 200_000  # values in all (children and dictionaries too) a table is converted up to
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


# -- the harness ----------------------------------------------------------------------------------


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
