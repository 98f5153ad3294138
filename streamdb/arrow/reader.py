"""Arrow IPC readers: the stream and file formats, zero-copy over bytes and maps.

`read_ipc(source)` takes a path (`str` or `os.PathLike`, memory-mapped by default), a
bytes-like object (always data) or a binary file, detects the format by its magic, and
returns a Table whose columns are `np.frombuffer` views of the input. `StreamReader`
yields batches one at a time from any binary file or socket-like object, for data larger
than memory.

Everything read is bounded by `Limits` and checked before use: message and body lengths
against the input and the limits, each buffer against the body, each array's buffers
against its length. With `validate=True` (the default) the O(n) checks run too, in numpy:
offsets non-decreasing and inside their data, dictionary indices inside their dictionary.
Errors: ArrowFormatError (and ArrowLimitError) for malformed input, UnsupportedError for
types and features this library does not read.
"""

from __future__ import annotations

import mmap as _mmap
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamdb.arrow import metadata as md
from streamdb.arrow import types as t
from streamdb.arrow.array import Array, concat
from streamdb.arrow.flatbuf import Table as FbTable
from streamdb.arrow.flatbuf import root
from streamdb.arrow.table import RecordBatch, Table
from streamdb.arrow.writer import MAGIC
from streamdb.errors import (
    ArrowFormatError,
    ArrowLimitError,
    InvalidArgumentError,
    StreamDbError,
    UnsupportedError,
)

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
READ_STEP = 16 << 20  # a claimed length is read in steps, never allocated at once


class _Message:
    __slots__ = ("body", "header", "kind", "offset")

    def __init__(self, kind: int, header: FbTable, body: memoryview, offset: int) -> None:
        self.kind, self.header, self.body, self.offset = kind, header, body, offset


def _parse_metadata(meta: bytes, offset: int, limits: md.Limits) -> tuple[int, FbTable, int]:
    """(header type, header table, body length) of a Message flatbuffer."""
    try:
        msg = root(meta)
        version = msg.scalar(0, "h", 0)
        if version < 3:  # V4 (3) and V5 (4) are read
            raise UnsupportedError(f"Arrow metadata version V{version + 1} is not supported")
        kind, header = msg.union(1)
        body_len = msg.scalar(3, "q", 0)
    except ArrowFormatError as exc:
        raise ArrowFormatError(f"a damaged message: {exc}", offset=offset) from exc
    if header is None or kind not in (md.SCHEMA, md.DICTIONARY_BATCH, md.RECORD_BATCH):
        if kind in (4, 5):
            raise UnsupportedError("Arrow tensor messages are not supported")
        raise ArrowFormatError(f"a message of unknown type {kind}", offset=offset)
    if not 0 <= body_len <= limits.max_body:
        raise ArrowLimitError(f"a message body of {body_len} bytes", offset=offset)
    return kind, header, body_len


class _Source:
    """Messages from a buffer (bytes or a map): zero-copy."""

    def __init__(self, data: memoryview, pos: int, limits: md.Limits) -> None:
        self.data, self.pos, self.limits = data, pos, limits

    def next(self) -> _Message | None:
        data, pos = self.data, self.pos
        if pos == len(data):
            return None  # a stream may end without EOS
        if pos + 4 > len(data):
            raise ArrowFormatError("the input ends inside a message length", offset=pos)
        n = _I32.unpack_from(data, pos)[0]
        start = pos + 4
        if n == -1:  # the continuation marker, then the length
            if start + 4 > len(data):
                raise ArrowFormatError("the input ends inside a message length", offset=pos)
            n = _I32.unpack_from(data, start)[0]
            start += 4
        if n == 0:
            self.pos = start
            return None  # end of stream
        if n < 0 or n > self.limits.max_metadata:
            raise ArrowLimitError(f"message metadata of {n} bytes", offset=pos)
        if start + n > len(data):
            raise ArrowFormatError("the input ends inside a message's metadata", offset=pos)
        kind, header, body_len = _parse_metadata(bytes(data[start : start + n]), pos,
                                                 self.limits)
        body_start = start + n
        if body_len > len(data) - body_start:
            raise ArrowFormatError("the input ends inside a message body", offset=pos)
        self.pos = body_start + body_len
        return _Message(kind, header, data[body_start : self.pos], pos)


class _FileSource:
    """Messages from a binary file or socket-like object, read as they come."""

    def __init__(self, f: Any, limits: md.Limits) -> None:
        read = getattr(f, "read", None) or getattr(f, "recv", None)
        if not callable(read):
            raise InvalidArgumentError(f"cannot read from {type(f).__name__}")
        self._read, self.limits, self.pos = read, limits, 0

    def _exact(self, n: int, what: str) -> bytes:
        parts = []
        left = n
        while left:
            chunk = self._read(min(left, READ_STEP))
            if not chunk:
                raise ArrowFormatError(f"the input ends inside {what}", offset=self.pos)
            parts.append(chunk)
            left -= len(chunk)
        self.pos += n
        return b"".join(parts)

    def next(self) -> _Message | None:
        at = self.pos
        first = self._read(4)
        while first and len(first) < 4:
            more = self._read(4 - len(first))
            if not more:
                break
            first += more
        if not first:
            return None
        if len(first) < 4:
            raise ArrowFormatError("the input ends inside a message length", offset=at)
        self.pos += 4
        n = _I32.unpack(first)[0]
        if n == -1:
            n = _I32.unpack(self._exact(4, "a message length"))[0]
        if n == 0:
            return None
        if n < 0 or n > self.limits.max_metadata:
            raise ArrowLimitError(f"message metadata of {n} bytes", offset=at)
        kind, header, body_len = _parse_metadata(self._exact(n, "a message's metadata"), at,
                                                 self.limits)
        body = self._exact(body_len, "a message body")
        return _Message(kind, header, memoryview(body), at)


_STEP = 1 << 20  # decompressed bytes produced per call: memory follows the output


def _decompress(codec: int | None, data: memoryview, size: int) -> bytes | None:
    """The frame `data` decompressed, or None if it yields more than `size` bytes. Output
    is produced a MiB at a time, so memory follows what the frame really holds, not the
    size its buffer claims."""
    parts: list[bytes] = []
    total = 0
    if codec == md.LZ4_FRAME:
        import lz4.frame

        d = lz4.frame.LZ4FrameDecompressor()
        chunk = d.decompress(data, max_length=_STEP)
        while True:
            parts.append(chunk)
            total += len(chunk)
            if total > size:
                return None
            if d.eof or (not chunk and d.needs_input):
                break
            chunk = d.decompress(b"", max_length=_STEP)
        if not d.eof:
            raise ArrowFormatError("a truncated LZ4 frame")
    else:
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(bytes(data)) as r:
            while chunk := r.read(min(_STEP, size + 1 - total)):
                parts.append(chunk)
                total += len(chunk)
                if total > size:
                    return None
    return b"".join(parts)


# -- arrays from a batch's nodes and buffers ------------------------------------------------


class _Decoder:
    """Builds the arrays of one record batch from its flattened nodes and buffers."""

    def __init__(self, msg: _Message, rb: FbTable, dictionaries: dict[int, Array],
                 dict_ids: dict[int, t.Field], limits: md.Limits, validate: bool) -> None:
        self.body = msg.body
        self.body_bytes = np.frombuffer(msg.body, np.uint8)  # sliced per buffer: no copy
        self.offset = msg.offset
        self.limits = limits
        self.validate = validate
        self.dictionaries = dictionaries
        self.dict_of_field = {id(f): i for i, f in dict_ids.items()}
        self.length = rb.scalar(0, "q", 0)
        self.nodes = rb.structs(1, md.FIELD_NODE)
        self.buffers = rb.structs(2, md.BUFFER)
        if len(self.buffers) > limits.max_buffers:
            raise ArrowLimitError(f"a batch of {len(self.buffers)} buffers", offset=self.offset)
        compression = rb.table(3)
        self.codec: int | None = None
        if compression is not None:
            self.codec = compression.scalar(0, "b", 0)
            if self.codec not in (md.LZ4_FRAME, md.ZSTD) or compression.scalar(1, "b", 0):
                raise ArrowFormatError(f"unknown body compression {self.codec}",
                                       offset=self.offset)
        self.next_node = 0
        self.next_buffer = 0
        if not 0 <= self.length <= limits.max_rows:
            raise ArrowLimitError(f"a batch of {self.length} rows", offset=self.offset)

    def fail(self, what: str) -> ArrowFormatError:
        return ArrowFormatError(what, offset=self.offset)

    def node(self) -> tuple[int, int]:
        if self.next_node >= len(self.nodes):
            raise self.fail("a batch has fewer field nodes than its schema has fields")
        length, nulls = self.nodes[self.next_node]
        self.next_node += 1
        if not 0 <= length <= self.limits.max_rows or not 0 <= nulls <= length:
            raise self.fail(f"a field node of length {length} with {nulls} nulls")
        return length, nulls

    def buffer(self, wanted: bool = True) -> np.ndarray[Any, Any] | None:
        """The next buffer (checked against the body; None when not `wanted`)."""
        if self.next_buffer >= len(self.buffers):
            raise self.fail("a batch has fewer buffers than its schema needs")
        off, n = self.buffers[self.next_buffer]
        self.next_buffer += 1
        if off < 0 or n < 0 or off + n > len(self.body):
            raise self.fail(f"a buffer at {off} of {n} bytes lies outside the body")
        if not wanted:
            return None
        if self.codec is not None and n:
            return self._decompress(self.body[off : off + n])
        return self.body_bytes[off : off + n]

    def data(self) -> np.ndarray[Any, Any]:
        out = self.buffer()
        assert out is not None
        return out

    def _decompress(self, view: memoryview) -> np.ndarray[Any, Any]:
        if len(view) < 8:
            raise self.fail("a compressed buffer shorter than its length prefix")
        size = _I64.unpack_from(view, 0)[0]
        data = view[8:]
        if size == -1:
            return np.frombuffer(data, np.uint8)
        if not 0 <= size <= self.limits.max_decompressed:
            raise ArrowLimitError(f"a buffer that decompresses to {size} bytes",
                                  offset=self.offset)
        try:
            out = _decompress(self.codec, data, size)
        except StreamDbError:
            raise
        except Exception as exc:  # the codecs' own errors: RuntimeError, ZstdError, ...
            raise self.fail(f"a compressed buffer does not decompress: {exc}") from exc
        if out is None:
            raise self.fail(f"a buffer decompresses to more than its {size} bytes")
        if len(out) != size:
            raise self.fail(f"a buffer decompressed to {len(out)} bytes, not {size}")
        return np.frombuffer(out, np.uint8)

    def _need(self, buf: np.ndarray[Any, Any], nbytes: int, what: str) -> None:
        if len(buf) < nbytes:
            raise self.fail(f"a {what} buffer of {len(buf)} bytes, {nbytes} needed")

    def array(self, f: t.Field, depth: int = 0) -> Array:
        if depth > self.limits.max_depth:
            raise ArrowLimitError("arrays nested too deep", offset=self.offset)
        ty = f.type
        length, nulls = self.node()
        if ty.layout == "null":
            return Array(ty, length, [])
        validity = self.buffer(wanted=nulls > 0)
        if validity is not None:
            self._need(validity, (length + 7) // 8, "validity")
        layout = ty.layout
        if isinstance(ty, t.DictionaryType):
            values = self.data()
            self._need(values, length * ty.index.dtype.itemsize, "dictionary index")
            ident = self.dict_of_field.get(id(f))
            dictionary = self.dictionaries.get(ident) if ident is not None else None
            if dictionary is None:
                raise self.fail(f"field {f.name!r} needs dictionary {ident}, not sent before")
            out = Array(ty, length, [validity, values], null_count=nulls, dictionary=dictionary)
            if self.validate and length:
                idx = out.values()
                if nulls:
                    idx = idx[out.valid_mask()]
                # As unsigned, a negative index is huge: one pass checks both ends.
                unsigned = idx.view(idx.dtype.str.replace("i", "u"))
                if len(idx) and int(unsigned.max()) >= len(dictionary):
                    raise self.fail(f"field {f.name!r}: a dictionary index outside its "
                                    f"{len(dictionary)} values")
            return out
        if layout == "fixed":
            values = self.data()
            self._need(values, length * ty.dtype.itemsize, str(ty))
            return Array(ty, length, [validity, values], null_count=nulls)
        if layout == "bool":
            values = self.data()
            self._need(values, (length + 7) // 8, "boolean")
            return Array(ty, length, [validity, values], null_count=nulls)
        if layout in ("var", "large_var", "list", "large_list"):
            wide = layout.startswith("large")
            offsets = self.data()
            width = 8 if wide else 4
            if length == 0 and len(offsets) == 0:  # an empty array may omit its offsets
                offsets = np.zeros(width, np.uint8)
            self._need(offsets, (length + 1) * width, "offsets")
            view = offsets[: (length + 1) * width].view("<i8" if wide else "<i4")
            first, last = int(view[0]), int(view[-1])
            if layout in ("var", "large_var"):
                data = self.data()
                end = len(data)
                children: list[Array] = []
            else:
                child = self.array(ty.children[0], depth + 1)
                end = len(child)
                children = [child]
                data = None
            if not 0 <= first <= last <= end:
                raise self.fail(f"{f.name!r}: offsets {first}..{last} outside 0..{end}")
            if self.validate and length and np.any(view[1:] < view[:-1]):
                raise self.fail(f"{f.name!r}: offsets decrease")
            bufs = [validity, offsets] + ([data] if data is not None else [])
            return Array(ty, length, bufs, children, null_count=nulls)
        if layout == "fixed_list":
            assert isinstance(ty, t.FixedSizeListType)
            child = self.array(ty.value, depth + 1)
            if len(child) < length * ty.size:
                raise self.fail(f"{f.name!r}: a child of {len(child)} values for {length} "
                                f"lists of {ty.size}")
            return Array(ty, length, [validity], [child], null_count=nulls)
        if layout == "struct":
            kids = [self.array(c, depth + 1) for c in ty.children]
            for c in kids:
                if len(c) < length:
                    raise self.fail(f"{f.name!r}: a child of {len(c)} values for {length} rows")
            return Array(ty, length, [validity], kids, null_count=nulls)
        raise UnsupportedError(f"arrays of {ty}")


# -- the readers ----------------------------------------------------------------------------


class _State:
    """Schema and dictionaries as the messages so far have set them."""

    def __init__(self, limits: md.Limits, validate: bool) -> None:
        self.limits, self.validate = limits, validate
        self.schema: t.Schema | None = None
        self.dict_ids: dict[int, t.Field] = {}
        self.dictionaries: dict[int, Array] = {}

    def schema_message(self, msg: _Message | None) -> t.Schema:
        if msg is None:
            raise ArrowFormatError("the input holds no schema message")
        if msg.kind != md.SCHEMA:
            raise ArrowFormatError("the first message is not a schema", offset=msg.offset)
        self.schema, self.dict_ids = md.read_schema(msg.header, self.limits)
        return self.schema

    def batch(self, msg: _Message) -> RecordBatch | None:
        """The batch of a RecordBatch message; a DictionaryBatch updates the dictionaries
        (None)."""
        assert self.schema is not None
        if msg.kind == md.SCHEMA:
            raise ArrowFormatError("a second schema message", offset=msg.offset)
        if msg.kind == md.DICTIONARY_BATCH:
            ident = msg.header.scalar(0, "q", 0)
            f = self.dict_ids.get(ident)
            if f is None:
                raise ArrowFormatError(f"a dictionary batch for unknown id {ident}",
                                       offset=msg.offset)
            assert isinstance(f.type, t.DictionaryType)
            data = msg.header.table(1)
            if data is None:
                raise ArrowFormatError("a dictionary batch without data", offset=msg.offset)
            dec = _Decoder(msg, data, self.dictionaries, self.dict_ids, self.limits,
                           self.validate)
            values = dec.array(t.Field("", f.type.value))
            if len(values) > self.limits.max_dictionary:
                raise ArrowLimitError(f"a dictionary of {len(values)} values", offset=msg.offset)
            if msg.header.scalar(2, "?", 0):  # a delta: appended to what is there
                old = self.dictionaries.get(ident)
                if old is None:
                    raise ArrowFormatError(f"a delta for dictionary {ident}, never sent",
                                           offset=msg.offset)
                values = concat(old, values)
                if len(values) > self.limits.max_dictionary:
                    raise ArrowLimitError(f"a dictionary of {len(values)} values",
                                          offset=msg.offset)
            self.dictionaries[ident] = values
            return None
        dec = _Decoder(msg, msg.header, self.dictionaries, self.dict_ids, self.limits,
                       self.validate)
        columns = [dec.array(f) for f in self.schema.fields]
        for f, c in zip(self.schema.fields, columns, strict=True):
            if len(c) < dec.length:
                raise ArrowFormatError(f"column {f.name!r} has {len(c)} rows of {dec.length}",
                                       offset=msg.offset)
        columns = [c if len(c) == dec.length else c.slice(0, dec.length) for c in columns]
        return RecordBatch._trusted(self.schema, columns, dec.length)


class StreamReader:
    """Record batches of an IPC stream, one at a time: `for batch in reader`. `source` is
    bytes-like (read in place) or a binary file / socket-like object."""

    def __init__(self, source: Any, *, validate: bool = True,
                 limits: md.Limits = md.DEFAULT_LIMITS) -> None:
        if isinstance(source, bytes | bytearray | memoryview | _mmap.mmap):
            self._source: _Source | _FileSource = _Source(memoryview(source).cast("B"), 0,
                                                          limits)
        else:
            self._source = _FileSource(source, limits)
        self._state = _State(limits, validate)
        self.schema = self._state.schema_message(self._source.next())

    def read_next_batch(self) -> RecordBatch | None:
        while (msg := self._source.next()) is not None:
            batch = self._state.batch(msg)
            if batch is not None:
                return batch
        return None

    def __iter__(self) -> Iterator[RecordBatch]:
        while (batch := self.read_next_batch()) is not None:
            yield batch

    def read_all(self) -> Table:
        return Table(self.schema, list(self))


class FileReader:
    """An IPC file: its schema from the footer and its batches by index, each read from
    its block. Opening is O(metadata)."""

    def __init__(self, data: bytes | memoryview | _mmap.mmap, *, validate: bool = True,
                 limits: md.Limits = md.DEFAULT_LIMITS) -> None:
        view = memoryview(data).cast("B")
        n = len(view)
        if n < 18 or bytes(view[:6]) != MAGIC or bytes(view[n - 6 :]) != MAGIC:
            raise ArrowFormatError("not an Arrow IPC file (no ARROW1 magic at both ends)")
        foot_len = _I32.unpack_from(view, n - 10)[0]
        if not 0 < foot_len <= n - 18:
            raise ArrowFormatError(f"an IPC footer of {foot_len} bytes", offset=n - 10)
        if foot_len > limits.max_metadata:
            raise ArrowLimitError(f"an IPC footer of {foot_len} bytes", offset=n - 10)
        start = n - 10 - foot_len
        try:
            foot = root(bytes(view[start : n - 10]))
            schema_table = foot.table(1)
            if schema_table is None:
                raise ArrowFormatError("an IPC footer without a schema", offset=start)
            dictionaries = foot.structs(2, md.BLOCK)
            self.blocks = foot.structs(3, md.BLOCK)
        except ArrowFormatError as exc:
            raise ArrowFormatError(f"a damaged IPC footer: {exc}", offset=start) from exc
        self._view, self._limits = view, limits
        self._state = _State(limits, validate)
        self.schema, self._state.dict_ids = md.read_schema(schema_table, limits)
        self._state.schema = self.schema
        for block in dictionaries:
            self._state.batch(self._message(block))

    def _message(self, block: tuple[int, ...]) -> _Message:
        offset, meta_len, body_len = block
        if not 8 <= offset <= len(self._view) or meta_len < 0 or body_len < 0:
            raise ArrowFormatError(f"a block at {offset} outside the file")
        src = _Source(self._view, offset, self._limits)
        msg = src.next()
        if msg is None or src.pos - offset != meta_len + body_len:
            raise ArrowFormatError("a block does not match its message", offset=offset)
        return msg

    @property
    def num_record_batches(self) -> int:
        return len(self.blocks)

    def get_batch(self, i: int) -> RecordBatch:
        msg = self._message(self.blocks[i])
        if msg.kind != md.RECORD_BATCH:
            raise ArrowFormatError("a record batch block holds another message",
                                   offset=msg.offset)
        batch = self._state.batch(msg)
        assert batch is not None
        return batch

    def __iter__(self) -> Iterator[RecordBatch]:
        for i in range(len(self.blocks)):
            yield self.get_batch(i)

    def read_all(self) -> Table:
        return Table(self.schema, list(self))


def read_stream_schema(read_at: Callable[[int, int], bytes],
                       limits: md.Limits = md.DEFAULT_LIMITS) -> t.Schema:
    """The schema of an IPC stream from its first message, read with `read_at(offset,
    length)` (two small reads)."""
    head = read_at(0, 8)
    if len(head) < 8 or head[:4] != b"\xff\xff\xff\xff":
        raise ArrowFormatError("not an Arrow IPC stream (no continuation marker)", offset=0)
    n = _I32.unpack_from(head, 4)[0]
    if not 0 < n <= limits.max_metadata:
        raise ArrowLimitError(f"message metadata of {n} bytes", offset=0)
    meta = read_at(8, n)
    if len(meta) != n:
        raise ArrowFormatError("the input ends inside the schema message", offset=0)
    kind, header, _ = _parse_metadata(meta, 0, limits)
    if kind != md.SCHEMA:
        raise ArrowFormatError("the first message is not a schema", offset=0)
    return md.read_schema(header, limits)[0]


def read_ipc(source: Any, *, mmap: bool | None = None, validate: bool = True,
             limits: md.Limits = md.DEFAULT_LIMITS) -> Table:
    """A Table from an IPC file or stream (detected by the magic): `source` is a path
    (memory-mapped unless `mmap=False`), a bytes-like object, or a binary file object.
    Columns are views of the input (of the map, for a path)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            if mmap is False:
                data: Any = f.read()
            else:
                size = os.fstat(f.fileno()).st_size
                data = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ) if size else b""
        return _read_buffer(data, validate, limits)
    if isinstance(source, bytes | bytearray | memoryview | _mmap.mmap):
        return _read_buffer(source, validate, limits)
    if mmap and hasattr(source, "fileno"):
        return _read_buffer(_mmap.mmap(source.fileno(), 0, access=_mmap.ACCESS_READ),
                            validate, limits)
    peek = getattr(source, "peek", None)
    head = peek(6)[:6] if callable(peek) else b""
    if head == MAGIC or len(head) < 6:  # a file (or unknown yet) needs its footer: read all
        parts = []
        while chunk := source.read(READ_STEP):
            parts.append(chunk)
        return _read_buffer(b"".join(parts), validate, limits)
    return StreamReader(source, validate=validate, limits=limits).read_all()


def _read_buffer(data: Any, validate: bool, limits: md.Limits) -> Table:
    view = memoryview(data).cast("B")
    if bytes(view[:6]) == MAGIC:
        return FileReader(view, validate=validate, limits=limits).read_all()
    return StreamReader(view, validate=validate, limits=limits).read_all()
