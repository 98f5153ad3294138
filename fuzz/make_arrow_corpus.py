#!/usr/bin/env python3
"""Write the seed corpus of the Arrow IPC fuzzer into `fuzz/corpus/arrow/`.

Deterministic: small tables of every type the model reads, written by our writer and (when
pyarrow is importable here; the corpus is committed, so running it needs no pyarrow) by
pyarrow, as streams and files, uncompressed and with LZ4 and Zstandard, 8- and 64-byte
aligned; dictionaries sent once, as deltas and replaced; empty tables, schema-only streams,
many batches; pyarrow's own features (metadata V4, types we refuse); then a few hostile inputs
made from them (torn, hostile lengths, a huge null column). Files are harness inputs: the
bytes of a stream or a file as they are (see `fuzz_arrow`), named after what they hold.

    python fuzz/make_arrow_corpus.py            # rewrite the corpus
    python fuzz/make_arrow_corpus.py --check    # and print each file's outcome

tests/arrow/test_fuzz_arrow.py replays every file; each must read, convert and read back,
or end in a StreamDbError. Inputs that expose bugs belong in `fuzz/crashes/`, not here.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import itertools
import random
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_arrow as harness
import fuzzkit
import numpy as np
from arrow_inputs import parse, random_table, write_table

from streamdb import arrow
from streamdb.arrow import types as t
from streamdb.arrow.array import as_bytes
from streamdb.arrow.writer import MAGIC

SEED = 20261123
N = 9  # rows of a batch: not a multiple of 8, bitmaps end mid-byte


class Raw(bytes):
    """A corpus case: the input's bytes as they are."""

    def encode(self) -> bytes:
        return bytes(self)


def _nullable(values: list[Any]) -> list[Any]:
    return [v if i % 3 != 1 else None for i, v in enumerate(values)]


def _table(columns: Mapping[str, tuple[t.DataType, list[Any]]], batches: int = 2,
           metadata: tuple[tuple[str, str], ...] = ()) -> arrow.Table:
    """Columns of (type, values) in `batches` batches (the values split between them)."""
    schema = t.Schema(tuple(t.Field(name, ty) for name, (ty, _) in columns.items()), metadata)
    n = len(next(iter(columns.values()))[1]) if columns else 0
    cuts = [n * k // batches for k in range(batches + 1)]
    out = []
    for a, b in itertools.pairwise(cuts):
        out.append(arrow.RecordBatch(schema, [arrow.array(values[a:b], ty)
                                              for ty, values in columns.values()], b - a))
    return arrow.Table(schema, out)


def groups() -> dict[str, arrow.Table]:
    """One table per family of types."""
    ints = {f"{'u' if not s else ''}int{b}": (t.IntType(b, s), _nullable(
        [(-(1 << (b - 1)) if s else 0), (1 << (b - (1 if s else 0))) - 1, 0, 1, 2, 3, 4, 5, 6]))
        for b in (8, 16, 32, 64) for s in (True, False)}
    floats = {
        "f16": (t.FloatType(t.HALF), _nullable([0.5, -2.0, 65504.0, 0.0, float("inf"), 1.0,
                                                float("nan"), -0.0, 3.0])),
        "f32": (t.FloatType(t.SINGLE), _nullable([0.25 * i for i in range(N)])),
        "f64": (t.FloatType(t.DOUBLE), [1e300, -0.0, float("inf"), float("nan"), None, 5.5,
                                        -1e-300, 7.0, 8.0]),
    }
    basic = {"b": (t.BoolType(), _nullable([i % 2 == 0 for i in range(N)])),
             "n": (t.NullType(), [None] * N),
             "b2": (t.BoolType(), [True] * N)}
    words = ["", "a", "héllo", "x" * 20, "日本", "z", "", "q", "w"]
    strings = {
        "s": (t.Utf8Type(), _nullable(words)), "ls": (t.LargeUtf8Type(), _nullable(words)),
        "bin": (t.BinaryType(), _nullable([bytes([i]) * i for i in range(N)])),
        "lbin": (t.LargeBinaryType(), _nullable([bytes([i]) * i for i in range(N)])),
        "fsb": (t.FixedSizeBinaryType(3), _nullable([bytes([i, 255 - i, 0]) for i in range(N)])),
        "fsb0": (t.FixedSizeBinaryType(0), [b""] * N),
    }
    decimals = {
        "d128": (t.DecimalType(12, 2), _nullable([decimal.Decimal(f"{i * 137 - 500}.{i:02d}")
                                                  for i in range(N)])),
        "d256": (t.DecimalType(70, 3, 256), _nullable(
            [decimal.Decimal(f"-{i}{'9' * 50}.{i:03d}") for i in range(N)])),
        "d38": (t.DecimalType(38, 0), [decimal.Decimal(10**38 - 1), decimal.Decimal(-(10**38) + 1),
                                       *[decimal.Decimal(i) for i in range(N - 2)]]),
    }
    days = [dt.date(1970, 1, 1) + dt.timedelta(days=400 * i - 2000) for i in range(N)]
    ticks = [(i - 4) * 123_456_789 for i in range(N)]
    temporal: dict[str, tuple[t.DataType, list[Any]]] = {
        "d32": (t.DateType(t.DAY), _nullable(days)), "d64": (t.DateType(t.MILLI), days),
        "t32s": (t.TimeType(t.SECOND), _nullable([i * 3000 for i in range(N)])),
        "t32ms": (t.TimeType(t.MILLI), [i * 3_000_000 for i in range(N)]),
        "t64us": (t.TimeType(t.MICRO), _nullable([i * 3_000_000_000 for i in range(N)])),
        "t64ns": (t.TimeType(t.NANO), [i * 3_000_000_000_000 for i in range(N)]),
        "iym": (t.IntervalType(t.YEAR_MONTH), _nullable(list(range(-4, N - 4)))),
        "idt": (t.IntervalType(t.DAY_TIME), [(i, -i * 1000) for i in range(N)]),
        "imdn": (t.IntervalType(t.MONTH_DAY_NANO), _nullable([(i, -i, i * 10**12)
                                                              for i in range(N)])),
    }
    for unit, name in enumerate(t.UNIT_NAMES):
        tz = (None, "UTC", "+05:30", "Europe/Paris")[unit]
        temporal[f"ts{name}"] = (t.TimestampType(unit, tz), _nullable(ticks))
        temporal[f"dur{name}"] = (t.DurationType(unit), ticks)
    dictionaries = {
        f"dict{ix}": (t.DictionaryType(t.IntType(b, s), t.Utf8Type()),
                      _nullable(["red", "green", "blue", "red", "green", "x", "y", "red", ""]))
        for ix, (b, s) in enumerate([(8, True), (16, False), (32, True), (64, False)])}
    dictionaries["dint"] = (t.DictionaryType(t.IntType(32), t.IntType(64), True),
                            [10, -20, 30, 10, 10, None, -20, 5, 5])
    lists = _nullable([list(range(i % 4)) if i % 5 else [None, i] for i in range(N)])
    entries = [[(f"k{j}", j if j % 2 else None) for j in range(i % 3)] for i in range(N)]
    nested: dict[str, tuple[t.DataType, list[Any]]] = {
        "l": (t.list_(t.IntType(64)), lists),
        "ll": (t.LargeListType(t.Field("item", t.IntType(16))), lists),
        "fsl": (t.FixedSizeListType(t.Field("item", t.IntType(32)), 3),
                _nullable([[i, None, -i] for i in range(N)])),
        "st": (t.struct_([t.Field("a", t.IntType(64)), t.Field("b", t.Utf8Type())]),
               _nullable([{"a": i, "b": words[i]} for i in range(N)])),
        "m": (t.map_(t.Utf8Type(), t.IntType(64)), _nullable(entries)),
        "ls": (t.list_(t.struct_([t.Field("p", t.IntType(8)), t.Field("q", t.Utf8Type())])),
               _nullable([[{"p": i, "q": "s"}, None] if i % 2 else [] for i in range(N)])),
        "sl": (t.struct_([t.Field("l", t.list_(t.IntType(64))), t.Field("x", t.BinaryType())]),
               [{"l": v, "x": b"x"} for v in lists]),
        "ld": (t.list_(t.DictionaryType(t.IntType(16), t.Utf8Type())),
               _nullable([["u", "v"][: i % 3] for i in range(N)])),
    }
    return {"ints": _table(ints), "floats": _table(floats), "basic": _table(basic),
            "strings": _table(strings), "decimals": _table(decimals),
            "temporal": _table(temporal), "dictionaries": _table(dictionaries),
            "dictionaries-1-batch": _table(dictionaries, 1),
            "nested": _table(nested, 3)}


def dictionary_tables() -> dict[str, arrow.Table]:
    """Dictionaries across batches: the same one, one that grows (a delta), one replaced."""
    ty = t.DictionaryType(t.IntType(8), t.Utf8Type())
    schema = t.Schema((t.Field("d", ty), t.Field("i", t.IntType(32))))

    def batch(values: list[str | None]) -> arrow.RecordBatch:
        return arrow.RecordBatch(schema, [arrow.array(values, ty),
                                          arrow.array(list(range(len(values))), t.IntType(32))])

    # Dictionaries of nested values (built by hand: arrow.array() needs hashable values),
    # sent as deltas: the reader joins them through Python values.
    nested: dict[str, arrow.Table] = {}
    for label, value_type, values in (
            ("struct", t.struct_([t.Field("a", t.IntType(64)), t.Field("n", t.NullType())]),
             [{"a": i, "n": None} for i in range(4)]),
            ("list", t.list_(t.IntType(32)), [[1], [], [2, 3], None])):
        nty = t.DictionaryType(t.IntType(8), value_type)
        nschema = t.Schema((t.Field("d", nty),))
        nbatches = []
        for size, codes in ((2, [0, 1, 1]), (4, [3, 0, 2])):
            dictionary = arrow.array(values[:size], value_type)
            nbatches.append(arrow.RecordBatch(nschema, [arrow.Array(
                nty, len(codes), [None, as_bytes(np.array(codes, np.int8))],
                dictionary=dictionary)]))
        nested[f"dict-{label}-delta"] = arrow.Table(nschema, nbatches)
    return {
        **nested,
        "dict-delta": arrow.Table(schema, [batch(["a", "b", "a"]), batch(["a", "b", "c", None]),
                                           batch(["a", "b", "c", "d", "e"])]),
        "dict-replaced": arrow.Table(schema, [batch(["a", "b"]), batch(["x", "y", "x"]),
                                              batch(["a"])]),
    }


def special_tables() -> dict[str, arrow.Table]:
    schema = t.Schema((t.Field("x", t.IntType(64)), t.Field("s", t.Utf8Type())),
                      (("origin", "corpus"), ("caf\u00e9", "\u2603")))
    one = _table({"x": (t.IntType(64), [1, 2, 3]), "s": (t.Utf8Type(), ["a", None, "c"])}, 1)
    many = _table({"x": (t.IntType(32), list(range(12)))}, 6)
    return {
        "empty-batch": arrow.Table(schema, [arrow.RecordBatch(
            schema, [arrow.array([], t.IntType(64)), arrow.array([], t.Utf8Type())], 0)]),
        "schema-only": arrow.Table(schema, []),
        "no-columns": arrow.Table(t.Schema(()), [arrow.RecordBatch(t.Schema(()), [], 5)]),
        "one-batch": one,
        "many-batches": many,
    }


def _ours(name: str, table: arrow.Table, out: dict[str, Raw], variants: list[
        tuple[str, str | None, int]]) -> None:
    for fmt, codec, alignment in variants:
        data = write_table(table, fmt, codec, alignment)
        fmt = "file" if data[:6] == MAGIC else "stream"  # a replaced dictionary: a stream
        out[f"ours-{name}-{fmt}-{codec or 'plain'}-{alignment}"] = Raw(data)


def _pyarrow_cases(tables: dict[str, arrow.Table], out: dict[str, Raw]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:
        print("pyarrow is not installed: no pyarrow-written seeds", file=sys.stderr)
        return

    def write(batches: list[Any], schema: Any, fmt: str, **options: Any) -> Raw:
        sink = pa.BufferOutputStream()
        opts = pa.ipc.IpcWriteOptions(**options)
        new = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
        with new(sink, schema, options=opts) as w:
            for b in batches:
                w.write_batch(b)
        return Raw(sink.getvalue().to_pybytes())

    codecs = [None, "lz4", "zstd"]
    for i, (name, table) in enumerate(sorted(tables.items())):
        pt = table.to_pyarrow()
        for k, fmt in enumerate(("stream", "file")):
            codec = codecs[(i + k) % 3]
            try:
                out[f"pa-{name}-{fmt}-{codec or 'plain'}"] = write(
                    pt.to_batches(), pt.schema, fmt, compression=codec)
            except pa.ArrowException as exc:  # a file cannot replace a dictionary
                print(f"pyarrow refuses {name} as a {fmt}: {exc}", file=sys.stderr)

    # Dictionaries: deltas (pyarrow sends them only when asked), replacements, in a file.
    values = pa.array(["a", "b", "c", "d", "e"])
    dict_batches = [pa.record_batch([pa.DictionaryArray.from_arrays(
        pa.array(codes, pa.int16()), values[:n])], names=["d"])
        for codes, n in (([0, 1, 0], 2), ([2, 1, None], 3), ([4, 3], 5))]
    schema = dict_batches[0].schema
    out["pa-dict-delta-stream"] = write(dict_batches, schema, "stream",
                                        emit_dictionary_deltas=True)
    out["pa-dict-delta-file"] = write(dict_batches, schema, "file", emit_dictionary_deltas=True)
    out["pa-dict-replaced-stream"] = write(dict_batches[::-1], schema, "stream")
    # Metadata V4, a schema-only stream and file, an empty batch, custom and extension
    # metadata, a large table of several batches.
    small = pa.table({"x": pa.array([1, None, 3], pa.int32()), "s": pa.array(["p", "q", None])})
    v4 = pa.ipc.MetadataVersion.V4
    out["pa-v4-stream"] = write(small.to_batches(), small.schema, "stream", metadata_version=v4)
    out["pa-schema-only-stream"] = write([], small.schema, "stream")
    out["pa-schema-only-file"] = write([], small.schema, "file")
    empty = pa.record_batch([pa.array([], pa.int32()), pa.array([], pa.utf8())],
                            schema=small.schema)
    out["pa-empty-batch-file"] = write([empty, empty], small.schema, "file")
    meta = pa.schema([pa.field("u", pa.binary(16), metadata={
        "ARROW:extension:name": "arrow.uuid", "ARROW:extension:metadata": ""})],
        metadata={"k": "v" * 30})
    out["pa-extension-metadata-stream"] = write(
        [pa.record_batch([pa.array([bytes(16), b"\x01" * 16], pa.binary(16))], schema=meta)],
        meta, "stream")
    big = pa.table({"i": pa.array(range(3000), pa.int64()),
                    "f": pa.array([i / 7 for i in range(3000)])})
    out["pa-3000-rows-file-zstd"] = write(big.to_batches(max_chunksize=1000), big.schema,
                                          "file", compression="zstd")
    # Types this library refuses (UnsupportedError): unions, run-end encoding, views.
    refused: dict[str, Callable[[], Any]] = {
        "union": lambda: pa.UnionArray.from_sparse(pa.array([0, 1], pa.int8()),
                                                   [pa.array([1, 2]), pa.array(["a", "b"])]),
        "run-end": lambda: pa.RunEndEncodedArray.from_arrays([2, 3], [7, 8]),
        "string-view": lambda: pa.array(["a", "bb"], pa.string_view()),
        "list-view": lambda: pa.ListViewArray.from_arrays([0, 1], [1, 1], pa.array([5, 6])),
        "decimal32": lambda: pa.array([decimal.Decimal("1.5")], pa.decimal32(5, 1)),
    }
    for name, make in refused.items():
        try:
            column = make()
        except (AttributeError, pa.ArrowException) as exc:  # an older pyarrow
            print(f"pyarrow cannot make {name}: {exc}", file=sys.stderr)
            continue
        table = pa.table({name: column})
        out[f"pa-refused-{name}-stream"] = write(table.to_batches(), table.schema, "stream")


def _hostile(out: dict[str, Raw], tables: dict[str, arrow.Table]) -> None:
    """Damaged inputs made from clean ones (each a documented error, or a table)."""
    base = write_table(tables["basic"], "stream", None, 64)
    msgs, _ = parse(base)
    file = write_table(tables["strings"], "file", None, 8)
    fmsgs, footer = parse(file)
    assert footer is not None and len(msgs) >= 2 and len(fmsgs) >= 2

    def put(data: bytes, at: int, fmt: str, value: int) -> Raw:
        buf = bytearray(data)
        struct.pack_into(fmt, buf, at, value)
        return Raw(buf)

    out["hostile-empty"] = Raw(b"")
    out["hostile-magic-only"] = Raw(b"ARROW1")
    out["hostile-file-header-eos"] = Raw(b"ARROW1\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00")
    out["hostile-eos-only"] = Raw(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    out["hostile-metadata-length-minus-2"] = put(base, msgs[0].meta - 4, "<i", -2)
    out["hostile-metadata-length-2GiB"] = put(base, msgs[0].meta - 4, "<i", 0x7FFFFFFF)
    out["hostile-metadata-length-past-end"] = put(base, msgs[1].meta - 4, "<i",
                                                  len(base) - msgs[1].meta + 8)
    body_len = next(at for at, width in msgs[1].ints if width == 8)  # the Message's bodyLength
    out["hostile-body-length-1TiB"] = put(base, body_len, "<q", 1 << 40)
    out["hostile-torn-body"] = Raw(base[: msgs[1].body + msgs[1].body_len // 2])
    out["hostile-torn-length"] = Raw(base[: msgs[1].start + 6])
    # Pre-0.15 framing: no continuation marker before the lengths.
    legacy = b"".join(base[m.start + 4 : m.end] for m in msgs)
    out["hostile-legacy-framing"] = Raw(legacy + b"\x00\x00\x00\x00")
    out["hostile-footer-length-huge"] = put(file, len(file) - 10, "<i", 0x7FFFFFF0)
    out["hostile-footer-torn"] = Raw(file[: footer[0] + footer[1] // 2] + file[-10:])
    out["hostile-file-no-footer"] = Raw(file[: fmsgs[-1].end])
    block = footer[0] + parse_first_block(file[footer[0] : footer[0] + footer[1]])
    out["hostile-block-at-schema"] = put(file, block, "<q", fmsgs[0].start)
    # Field nodes claiming more rows than the buffers hold; a compressed buffer claiming
    # 16 GiB once decompressed.
    nodes = [at for at, width in msgs[1].ints if width == 8]
    out["hostile-node-length-huge"] = put(base, nodes[2], "<q", 1 << 40)
    lz4 = write_table(tables["ints"], "stream", "lz4", 8)
    lz4_msgs, _ = parse(lz4)
    m = lz4_msgs[1]
    at = m.body + next(off for off, n in m.buffers if n >= 8)
    out["hostile-decompressed-16GiB"] = put(lz4, at, "<q", 1 << 34)
    # A null column (no buffers) of 2**40 rows: reads in O(1), conversions skipped.
    huge = t.Schema((t.Field("n", t.NullType()),))
    sink = io.BytesIO()
    arrow.write_ipc(sink, arrow.RecordBatch(huge, [arrow.Array(t.NullType(), 1 << 40, [])],
                                            1 << 40), format="stream")
    out["hostile-null-column-2pow40-rows"] = Raw(sink.getvalue())
    out["hostile-garbage"] = Raw(random.Random(SEED).randbytes(300))


def parse_first_block(foot: bytes) -> int:
    """Where the first record batch block starts in a footer flatbuffer."""
    from streamdb.arrow import flatbuf as fb

    start, count = fb.root(foot)._vector(3, 24)
    assert count
    return start


def build(rng: random.Random) -> dict[str, Raw]:
    out: dict[str, Raw] = {}
    tables = groups()
    all_variants = [("stream", None, 64), ("file", None, 8), ("stream", "lz4", 8),
                    ("file", "zstd", 64), ("stream", "zstd", 8), ("file", "lz4", 64)]
    for i, (name, table) in enumerate(sorted(tables.items())):
        # every table plain in both formats, and two compressed variants that rotate
        _ours(name, table, out, [*all_variants[:2], all_variants[2 + i % 4],
                                 all_variants[2 + (i + 1) % 4]])
    for name, table in dictionary_tables().items():
        nested = "-delta" in name and name != "dict-delta"
        compressed = [] if nested else [("stream", "lz4", 8)]
        _ours(name, table, out, [("stream", None, 8), ("file", None, 64), *compressed])
    for name, table in special_tables().items():
        _ours(name, table, out, [("stream", None, 8), ("file", "zstd", 64)])
    for k in range(6):
        table = random_table(rng)
        fmt = ("stream", "file")[k % 2]
        out[f"random-{k:02d}-{fmt}"] = Raw(write_table(
            table, fmt, (None, "lz4", "zstd")[k % 3], (8, 64)[k // 3]))
    dictionaries = dictionary_tables()
    del dictionaries["dict-list-delta"]  # pyarrow writes the struct one
    _pyarrow_cases({**tables, **dictionaries, "special": special_tables()["one-batch"]}, out)
    _hostile(out, tables)
    return out


def main() -> int:
    return fuzzkit.corpus_main(__doc__, build, seed=SEED, out=harness.CORPUS_DIR,
                               run_one=harness.run_one, signature=harness.signature,
                               width=44)


if __name__ == "__main__":
    sys.exit(main())
