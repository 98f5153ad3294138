"""Arrow IPC writers: the stream format and the file format, to the Arrow specification.

A message is the continuation marker 0xFFFFFFFF, the int32 length of the metadata (the
Message flatbuffer, padded), the metadata, then the body: the buffers back to back, each
padded to `alignment` (64 by default, 8 allowed). Messages start at multiples of
`alignment` from the start of the output, so every buffer does too. Dictionaries are
keyed by id (the dictionary fields in pre-order); a dictionary that changes is sent again
(the stream format replaces it; a dictionary that only grew is sent as a delta, in both
formats; the file format cannot replace one and says so). With `compression` ("lz4" for
LZ4_FRAME or "zstd"), each buffer is an int64 uncompressed length then the compressed
bytes, or -1 then the bytes as they are when compressing does not shrink them.

I/O: `sink.write` only (files, sockets' makefile, BytesIO). O(bytes) per batch; buffers
are written from their arrays without being joined.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from streamdb.arrow import metadata as md
from streamdb.arrow import types as t
from streamdb.arrow.array import Array, same_values, unpack_bits
from streamdb.arrow.cast import differences, explain
from streamdb.arrow.flatbuf import T
from streamdb.arrow.table import RecordBatch, Table
from streamdb.errors import ArrowError, InvalidArgumentError

MAGIC = b"ARROW1"
CONTINUATION = b"\xff\xff\xff\xff"
EOS = CONTINUATION + b"\x00\x00\x00\x00"
CODECS = {None: None, "lz4": md.LZ4_FRAME, "zstd": md.ZSTD}
_I64 = struct.Struct("<q")


def _compressor(codec: int) -> Any:
    if codec == md.LZ4_FRAME:
        import lz4.frame

        return lambda data: lz4.frame.compress(data, store_size=True)
    import zstandard

    return zstandard.ZstdCompressor(level=1).compress


def _bitmap(bits: np.ndarray[Any, Any], offset: int, length: int) -> np.ndarray[Any, Any]:
    """Bits offset..offset+length of a bitmap, starting at bit 0 (a view when aligned)."""
    if offset % 8 == 0:
        return bits[offset // 8 : offset // 8 + (length + 7) // 8]
    return np.packbits(unpack_bits(bits, offset, length), bitorder="little")


def _check(schema: t.Schema, compression: str | None, alignment: int) -> None:
    if not isinstance(schema, t.Schema):
        raise InvalidArgumentError(f"a writer takes a Schema, not a {type(schema).__name__}")
    if alignment not in (8, 64):
        raise InvalidArgumentError("alignment must be 8 or 64")
    if compression not in CODECS:
        raise InvalidArgumentError(f"compression must be None, 'lz4' or 'zstd': "
                                   f"{compression!r}")
    for f in md.dictionary_fields(schema):
        assert isinstance(f.type, t.DictionaryType)
        if md.dictionary_fields(t.Schema((t.Field("", f.type.value),))):
            raise ArrowError(f"field {f.name!r}: a dictionary of dictionaries")


class _Body:
    """The nodes and buffers of one record batch, flattened in pre-order."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int]] = []
        self.buffers: list[np.ndarray[Any, Any] | bytes] = []
        self.dictionaries: list[Array] = []  # in id order

    def add(self, a: Array) -> None:
        ty, n, off = a.type, a.length, a.offset
        self.nodes.append((n, a.null_count))
        if ty.layout == "null":
            return
        v = a.validity
        self.buffers.append(_bitmap(v, off, n) if v is not None and a.null_count else b"")
        if isinstance(ty, t.DictionaryType):
            assert a.dictionary is not None
            self.dictionaries.append(a.dictionary)
        layout = ty.layout
        if layout == "fixed":
            w = ty.dtype.itemsize
            buf = a.buffers[1]
            assert buf is not None
            self.buffers.append(buf[off * w : (off + n) * w])
        elif layout == "bool":
            assert a.buffers[1] is not None
            self.buffers.append(_bitmap(a.buffers[1], off, n))
        elif layout in ("var", "large_var", "list", "large_list"):
            offsets = a.value_offsets()
            start, end = int(offsets[0]), int(offsets[-1])
            self.buffers.append(offsets - start if start else offsets)
            if layout in ("var", "large_var"):
                data = a.buffers[2]
                self.buffers.append(data[start:end] if data is not None else b"")
            else:
                self.add(a.children[0].slice(start, end - start))
        elif layout == "fixed_list":
            assert isinstance(ty, t.FixedSizeListType)
            self.add(a.children[0].slice(off * ty.size, n * ty.size))
        elif layout == "struct":
            for child in a.children:
                self.add(child.slice(off, n))


class _Writer:
    """What the stream and file writers share: framing, bodies, dictionaries."""

    replaces = True  # whether a changed dictionary may be sent again whole

    def __init__(self, sink: Any, schema: t.Schema, *, compression: str | None = None,
                 alignment: int = 64, start: int = 0) -> None:
        _check(schema, compression, alignment)
        self.sink = sink
        self.schema = schema
        self.alignment = alignment
        self.codec = CODECS[compression]
        self._compress = _compressor(self.codec) if self.codec is not None else None
        self.pos = start
        self._sent: dict[int, Array] = {}  # dictionary id -> what readers hold
        self.dictionary_blocks: list[tuple[int, int, int]] = []
        self.batch_blocks: list[tuple[int, int, int]] = []
        self.closed = False
        self._message(md.message(md.SCHEMA, md.schema_table(schema), 0), [])

    def _write(self, data: bytes | memoryview) -> None:
        self.sink.write(data)
        self.pos += memoryview(data).nbytes

    def _message(self, meta: bytes, body: list[memoryview | bytes], body_len: int = 0
                 ) -> tuple[int, int, int]:
        """Write one message; its block (offset, metadata length, body length)."""
        start = self.pos
        pad = -(start + 8 + len(meta)) % self.alignment
        self._write(CONTINUATION + struct.pack("<i", len(meta) + pad) + meta + bytes(pad))
        for part in body:
            self._write(part)
        return start, 8 + len(meta) + pad, body_len

    def _body(self, buffers: list[np.ndarray[Any, Any] | bytes]
              ) -> tuple[list[tuple[int, int]], list[memoryview | bytes], int]:
        """The Buffer entries, the parts to write, and the body length."""
        entries: list[tuple[int, int]] = []
        parts: list[memoryview | bytes] = []
        at = 0
        for buf in buffers:
            data = memoryview(buf if isinstance(buf, bytes) else buf.data).cast("B")
            if self._compress is not None and len(data):
                packed = self._compress(data)
                if len(packed) < len(data):
                    data_parts = [_I64.pack(len(data)), packed]
                else:
                    data_parts = [_I64.pack(-1), data]
                length = sum(len(p) for p in data_parts)
            else:
                data_parts = [data] if len(data) else []
                length = len(data)
            entries.append((at, length))
            pad = -length % self.alignment
            parts += [memoryview(p) if not isinstance(p, memoryview) else p for p in data_parts]
            if pad:
                parts.append(bytes(pad))
            at += length + pad
        return entries, parts, at

    def _record(self, length: int, body: _Body, header: int, dict_id: int = 0,
                delta: bool = False) -> tuple[int, int, int]:
        entries, parts, body_len = self._body(body.buffers)
        rb = md.record_batch_table(length, body.nodes, entries, self.codec)
        if header == md.DICTIONARY_BATCH:
            rb = T([("q", dict_id), rb, ("?", delta)])
        return self._message(md.message(header, rb, body_len), parts, body_len)

    def write_batch(self, batch: RecordBatch) -> None:
        """Write one record batch (and the dictionaries it needs first). O(bytes)."""
        if self.closed:
            raise ArrowError("the writer is closed")
        if not isinstance(batch, RecordBatch):
            raise InvalidArgumentError(f"write_batch takes a RecordBatch, not a "
                                       f"{type(batch).__name__} (write_table takes tables)")
        if batch.schema.fields != self.schema.fields:
            raise ArrowError("the batch's schema differs from the writer's: " + explain(
                differences(self.schema, batch.schema, ours="the writer's", exact=True)))
        body = _Body()
        for column in batch.columns:
            body.add(column)
        for ident, dictionary in enumerate(body.dictionaries):
            self._dictionary(ident, dictionary)
        self.batch_blocks.append(self._record(batch.num_rows, body, md.RECORD_BATCH))

    def _dictionary(self, ident: int, values: Array) -> None:
        sent = self._sent.get(ident)
        if sent is values:
            return
        delta = False
        if sent is not None:
            if same_values(sent, values):
                self._sent[ident] = values
                return
            if len(values) > len(sent) and same_values(sent, values.slice(0, len(sent))):
                delta = True
                part = values.slice(len(sent))
            elif not self.replaces:
                raise ArrowError(f"dictionary {ident} changed: the file format cannot replace "
                                 "a dictionary (write the stream format, or one dictionary)")
        body = _Body()
        body.add(part if delta else values)
        block = self._record(len(part if delta else values), body, md.DICTIONARY_BATCH, ident,
                             delta)
        self.dictionary_blocks.append(block)
        self._sent[ident] = values

    def forget_dictionaries(self) -> None:
        """Send every dictionary again with the next batch that uses it (for streams
        continued by another writer, which cannot know what readers hold)."""
        self._sent.clear()

    def write_table(self, table: Table | RecordBatch) -> None:
        for batch in (table.batches if isinstance(table, Table) else [table]):
            self.write_batch(batch)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
        else:  # a failed write: no end marker or footer that would make it look complete
            self.closed = True

    def close(self) -> None:
        """End the stream (EOS), then whatever follows it (`_tail`). Idempotent."""
        if not self.closed:
            self._write(EOS)
            self._tail()
            self.closed = True

    def _tail(self) -> None:
        """What follows the end of the stream: nothing, in the stream format."""


class StreamWriter(_Writer):
    """Writes the Arrow IPC stream format: schema, dictionaries and batches, then EOS on
    close()."""


class FileWriter(_Writer):
    """Writes the Arrow IPC file format: magic, the stream, the footer (schema and the
    blocks of every dictionary and batch), its length and the magic again."""

    replaces = False

    def __init__(self, sink: Any, schema: t.Schema, *, compression: str | None = None,
                 alignment: int = 64) -> None:
        _check(schema, compression, alignment)
        sink.write(MAGIC + b"\x00\x00")
        super().__init__(sink, schema, compression=compression, alignment=alignment, start=8)

    def _tail(self) -> None:
        foot = md.footer(self.schema, self.dictionary_blocks, self.batch_blocks)
        self._write(foot + struct.pack("<i", len(foot)) + MAGIC)


def write_ipc(sink: Any, table: Table | RecordBatch | Iterable[RecordBatch], *,
              format: str = "file", compression: str | None = None, alignment: int = 64,
              schema: t.Schema | None = None) -> None:
    """Write `table` (a Table, a RecordBatch or batches) to `sink` (a binary file object,
    or a path) in the IPC `format` ("file" or "stream")."""
    if format not in ("file", "stream"):
        raise InvalidArgumentError(f"format must be 'file' or 'stream': {format!r}")
    if isinstance(sink, str) or hasattr(sink, "__fspath__"):
        try:
            with open(sink, "wb") as f:
                write_ipc(f, table, format=format, compression=compression,
                          alignment=alignment, schema=schema)
        except BaseException:
            with contextlib.suppress(OSError):  # no partial file left behind
                os.remove(sink)
            raise
        return
    if not isinstance(table, Table | RecordBatch) and hasattr(table, "__arrow_c_stream__"):
        table = Table.from_arrow(table)  # pyarrow, Polars, ...
    if isinstance(table, Table):
        batches, schema = list(table.batches), table.schema
    elif isinstance(table, RecordBatch):
        batches, schema = [table], table.schema
    else:
        if not isinstance(table, Iterable) or isinstance(table, str | bytes):
            raise InvalidArgumentError(f"cannot write a {type(table).__name__} as Arrow: "
                                       "give a Table, a RecordBatch or batches")
        batches = list(table)
        if any(not isinstance(b, RecordBatch) for b in batches):
            raise InvalidArgumentError("batches must be streamdb.arrow RecordBatches")
        if schema is None:
            if not batches:
                raise InvalidArgumentError("no batches and no schema")
            schema = batches[0].schema
    cls = FileWriter if format == "file" else StreamWriter
    with cls(sink, schema, compression=compression, alignment=alignment) as w:
        for batch in batches:
            w.write_batch(batch)
