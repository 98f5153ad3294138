"""Arrow IPC readers: the stream and file formats, zero-copy over bytes and maps.

`read_ipc(source)` takes a path (`str` or `os.PathLike`, memory-mapped by default), a
bytes-like object (always data) or a binary file, detects the format by its magic, and
returns a Table whose columns are `np.frombuffer` views of the input. `StreamReader`
yields batches one at a time from any binary file or socket-like object, for data larger
than memory.

Everything read is bounded by `Limits` and checked before use: message and body lengths
against the input and the limits, each buffer against the body, each array's buffers
against its length. With `validate=True` (the default) the O(n) checks run too, in numpy:
offsets non-decreasing and inside their data, dictionary indices inside their dictionary,
utf8 data UTF-8 and not split inside a character. Errors: ArrowFormatError (and
ArrowLimitError) for malformed input, UnsupportedError for types and features this
library does not read.
"""

from __future__ import annotations

import codecs
import io
import mmap as _mmap
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from streamdb.arrow import metadata as md
from streamdb.arrow import types as t
from streamdb.arrow.array import Array, concat, unpack_bits
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


class _Meta:
    """A message's metadata, parsed: (header type, header table, body length), and the
    batch plan `_State` makes of it. Cached by the metadata's bytes, so the batches of a
    stream that share a layout (the usual case) are parsed and planned once."""

    __slots__ = ("body_len", "header", "kind", "plan")

    def __init__(self, kind: int, header: FbTable, body_len: int) -> None:
        self.kind, self.header, self.body_len = kind, header, body_len
        self.plan: Any = None


_CACHE_ENTRIES = 256  # distinct metadata layouts kept per reader


def _parse_metadata(meta: bytes, offset: int, limits: md.Limits,
                    cache: dict[bytes, _Meta]) -> _Meta:
    """The parsed Message flatbuffer `meta` (from `cache` when seen before). O(len(meta))."""
    hit = cache.get(meta)
    if hit is not None:
        return hit
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
    if len(cache) >= _CACHE_ENTRIES:
        cache.clear()
    out = cache[meta] = _Meta(kind, header, body_len)
    return out


def _bytes_view(data: Any) -> memoryview:
    """`data` (bytes, bytearray, mmap, memoryview, numpy array: anything with the buffer
    protocol) as a flat byte view, in place. InvalidArgumentError otherwise."""
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise InvalidArgumentError(f"cannot read Arrow data from {type(data).__name__}"
                                   ) from exc
    if not view.c_contiguous:
        raise InvalidArgumentError("cannot read Arrow data from a non-contiguous buffer")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def _check_limits(limits: Any) -> None:
    if not isinstance(limits, md.Limits):
        raise InvalidArgumentError(f"limits must be an arrow.Limits, not "
                                   f"{type(limits).__name__}")


class _Message:
    __slots__ = ("body", "meta", "offset")

    def __init__(self, meta: _Meta, body: memoryview, offset: int) -> None:
        self.meta, self.body, self.offset = meta, body, offset


class _Source:
    """Messages from a buffer (bytes or a map), from `pos` on: zero-copy."""

    def __init__(self, data: memoryview, pos: int, limits: md.Limits) -> None:
        self.data, self.pos, self.limits = data, pos, limits
        self.cache: dict[bytes, _Meta] = {}

    def next(self) -> _Message | None:
        msg, self.pos = self.at(self.pos)
        return msg

    def at(self, pos: int) -> tuple[_Message | None, int]:
        """The message at `pos` (None at the end of the input or at EOS), and where the
        next one starts."""
        data = self.data
        size = len(data)
        if pos == size:
            return None, pos  # a stream may end without EOS
        if pos + 4 > size:
            raise ArrowFormatError("the input ends inside a message length", offset=pos)
        n = _I32.unpack_from(data, pos)[0]
        start = pos + 4
        if n == -1:  # the continuation marker, then the length
            if start + 4 > size:
                raise ArrowFormatError("the input ends inside a message length", offset=pos)
            n = _I32.unpack_from(data, start)[0]
            start += 4
        if n == 0:
            return None, start  # end of stream
        if n < 0 or n > self.limits.max_metadata:
            raise ArrowLimitError(f"message metadata of {n} bytes", offset=pos)
        body_start = start + n
        if body_start > size:
            raise ArrowFormatError("the input ends inside a message's metadata", offset=pos)
        meta = _parse_metadata(bytes(data[start:body_start]), pos, self.limits, self.cache)
        end = body_start + meta.body_len
        if end > size:
            raise ArrowFormatError("the input ends inside a message body", offset=pos)
        return _Message(meta, data[body_start:end], pos), end


class _FileSource:
    """Messages from a binary file or socket-like object, read as they come."""

    def __init__(self, f: Any, limits: md.Limits) -> None:
        read = getattr(f, "read", None) or getattr(f, "recv", None)
        if isinstance(f, io.TextIOBase):
            raise InvalidArgumentError("cannot read Arrow data from a text file: open it "
                                       "in binary mode")
        if not callable(read):
            raise InvalidArgumentError(f"cannot read from {type(f).__name__}")
        self._read, self.limits, self.pos = read, limits, 0
        self.cache: dict[bytes, _Meta] = {}

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
        meta = _parse_metadata(self._exact(n, "a message's metadata"), at, self.limits,
                               self.cache)
        body = self._exact(meta.body_len, "a message body")
        return _Message(meta, memoryview(body), at)


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
#
# A batch is decoded in two passes. Planning reads the metadata alone: the field nodes and
# buffers, each checked against the limits, the body length and (uncompressed) what its
# array needs. The plan is cached with the metadata, so a stream whose batches share a
# layout plans once. Building slices the body by the plan and runs the checks that need
# the data: offsets inside their data, ascending and UTF-8 (validate), dictionary indices
# inside their dictionary (validate), and decompression.

_NULL, _FIXED, _DICT, _VAR, _LIST, _NESTED = range(6)
_KINDS = {"null": _NULL, "fixed": _FIXED, "bool": _FIXED, "var": _VAR, "large_var": _VAR,
          "list": _LIST, "large_list": _LIST, "fixed_list": _NESTED, "struct": _NESTED}
_Spec = tuple[int, int, int, str]  # a buffer: body start, body end, bytes needed, what


class _Plan:
    """One array of a batch as its metadata lays it out."""

    __slots__ = ("bufs", "children", "dict_id", "dtype", "kind", "length", "name", "nulls",
                 "type", "width")

    def __init__(self, f: t.Field, kind: int, length: int, nulls: int,
                 bufs: list[_Spec | None], children: list[_Plan]) -> None:
        self.type, self.name, self.kind = f.type, f.name, kind
        self.length, self.nulls, self.bufs, self.children = length, nulls, bufs, children
        self.dict_id: int | None = None
        self.dtype: Any = None  # offsets' dtype (_VAR, _LIST); unsigned indices (_DICT)
        self.width = 0  # its item size


class _BatchPlan:
    __slots__ = ("arrays", "codec", "length")

    def __init__(self, length: int, codec: int | None, arrays: list[_Plan]) -> None:
        self.length, self.codec, self.arrays = length, codec, arrays


class _Planner:
    """Plans the arrays of one RecordBatch table (a record batch or a dictionary's data)."""

    def __init__(self, rb: FbTable, body_len: int, dict_of_field: dict[int, int],
                 limits: md.Limits, offset: int) -> None:
        self.body_len, self.dict_of_field, self.limits = body_len, dict_of_field, limits
        self.offset = offset
        self.length = rb.scalar(0, "q", 0)
        if not 0 <= self.length <= limits.max_rows:
            raise ArrowLimitError(f"a batch of {self.length} rows", offset=offset)
        self.nodes = rb.structs(1, md.FIELD_NODE)
        self.buffers = rb.structs(2, md.BUFFER)
        if len(self.buffers) > limits.max_buffers:
            raise ArrowLimitError(f"a batch of {len(self.buffers)} buffers", offset=offset)
        compression = rb.table(3)
        self.codec: int | None = None
        if compression is not None:
            self.codec = compression.scalar(0, "b", 0)
            if self.codec not in (md.LZ4_FRAME, md.ZSTD) or compression.scalar(1, "b", 0):
                raise ArrowFormatError(f"unknown body compression {self.codec}", offset=offset)
        self.next_node = 0
        self.next_buffer = 0

    def fail(self, what: str) -> ArrowFormatError:
        return ArrowFormatError(what, offset=self.offset)

    def plan(self, fields: Sequence[t.Field]) -> _BatchPlan:
        arrays = [self.array(f) for f in fields]
        for p in arrays:
            if p.length < self.length:
                raise self.fail(f"column {p.name!r} has {p.length} rows of {self.length}")
        return _BatchPlan(self.length, self.codec, arrays)

    def node(self) -> tuple[int, int]:
        if self.next_node >= len(self.nodes):
            raise self.fail("a batch has fewer field nodes than its schema has fields")
        length, nulls = self.nodes[self.next_node]
        self.next_node += 1
        if not 0 <= length <= self.limits.max_rows or not 0 <= nulls <= length:
            raise self.fail(f"a field node of length {length} with {nulls} nulls")
        return length, nulls

    def buffer(self, need: int, what: str, wanted: bool = True) -> _Spec | None:
        """The next buffer, inside the body and (uncompressed) of at least `need` bytes;
        None when not `wanted`."""
        if self.next_buffer >= len(self.buffers):
            raise self.fail("a batch has fewer buffers than its schema needs")
        off, n = self.buffers[self.next_buffer]
        self.next_buffer += 1
        if off < 0 or n < 0 or off + n > self.body_len:
            raise self.fail(f"a buffer at {off} of {n} bytes lies outside the body")
        if not wanted:
            return None
        if self.codec is None and n < need:
            raise self.fail(f"{what} buffer of {n} bytes, {need} needed")
        return off, off + n, need, what

    def array(self, f: t.Field, depth: int = 0) -> _Plan:
        if depth > self.limits.max_depth:
            raise ArrowLimitError("arrays nested too deep", offset=self.offset)
        ty = f.type
        length, nulls = self.node()
        kind = _KINDS.get(ty.layout)
        if isinstance(ty, t.DictionaryType):
            kind = _DICT
        if kind is None:
            raise UnsupportedError(f"arrays of {ty}")
        if kind == _NULL:
            return _Plan(f, kind, length, length, [], [])
        bufs = [self.buffer((length + 7) // 8, "validity", wanted=nulls > 0)]
        children: list[_Plan] = []
        dtype: Any = None
        width = 0
        if kind == _DICT:
            assert isinstance(ty, t.DictionaryType)
            width = ty.index.bits // 8
            bufs.append(self.buffer(length * width, "dictionary index"))
            dtype = f"<u{width}"  # see _Builder.build
        elif ty.layout == "bool":
            bufs.append(self.buffer((length + 7) // 8, "boolean"))
        elif kind == _FIXED:
            bufs.append(self.buffer(length * ty.dtype.itemsize, str(ty)))
        elif kind in (_VAR, _LIST):
            width = 8 if ty.layout.startswith("large") else 4
            dtype = f"<i{width}"
            # An empty array may omit its offsets (the builder supplies a zero).
            bufs.append(self.buffer((length + 1) * width if length else 0, "offsets"))
            if kind == _VAR:
                bufs.append(self.buffer(0, "data"))
            else:
                children.append(self.array(ty.children[0], depth + 1))
        elif isinstance(ty, t.FixedSizeListType):
            child = self.array(ty.value, depth + 1)
            if child.length < length * ty.size:
                raise self.fail(f"{f.name!r}: a child of {child.length} values for {length} "
                                f"lists of {ty.size}")
            children.append(child)
        else:  # struct
            children = [self.array(c, depth + 1) for c in ty.children]
            for c in children:
                if c.length < length:
                    raise self.fail(f"{f.name!r}: a child of {c.length} values for {length} "
                                    "rows")
        p = _Plan(f, kind, length, nulls, bufs, children)
        p.dtype, p.width = dtype, width
        if kind == _DICT:
            p.dict_id = self.dict_of_field.get(id(f))
        return p


_ZERO_OFFSETS = np.zeros(8, np.uint8)


class _Builder:
    """Arrays from a batch plan and a message body."""

    def __init__(self, body: memoryview, codec: int | None, dictionaries: dict[int, Array],
                 limits: md.Limits, validate: bool, offset: int) -> None:
        self.body, self.codec, self.dictionaries = body, codec, dictionaries
        self.bytes = np.frombuffer(body, np.uint8)  # sliced per buffer: no copy
        self.limits, self.validate, self.offset = limits, validate, offset

    def fail(self, what: str) -> ArrowFormatError:
        return ArrowFormatError(what, offset=self.offset)

    def buffer(self, spec: _Spec | None) -> np.ndarray[Any, Any] | None:
        if spec is None:
            return None
        start, end, need, what = spec
        if self.codec is None:
            return self.bytes[start:end]  # its size was checked when planned
        out = self._decompress(self.body[start:end]) if end > start else self.bytes[:0]
        if len(out) < need:
            raise self.fail(f"{what} buffer of {len(out)} bytes, {need} needed")
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

    def build(self, p: _Plan) -> Array:
        kind, length = p.kind, p.length
        if kind == _NULL:
            return _trusted(p.type, length, (), (), length, None)
        if self.codec is None:
            body = self.bytes
            bufs: list[Any] = [None if s is None else body[s[0] : s[1]] for s in p.bufs]
        else:
            bufs = [self.buffer(s) for s in p.bufs]
        if kind == _FIXED:
            return _trusted(p.type, length, tuple(bufs), (), p.nulls, None)
        kids = tuple([self.build(c) for c in p.children])
        dictionary = None
        if kind == _DICT:
            dictionary = self.dictionaries.get(p.dict_id)  # type: ignore[arg-type]
            if dictionary is None:
                raise self.fail(f"field {p.name!r} needs dictionary {p.dict_id}, not sent "
                                "before")
            if self.validate and length:
                # As unsigned, a negative index is huge: one pass checks both ends.
                idx = bufs[1][: length * p.width].view(p.dtype)
                if p.nulls:
                    idx = idx[unpack_bits(bufs[0], 0, length)]
                if len(idx) and int(idx.max()) >= len(dictionary):
                    raise self.fail(f"field {p.name!r}: a dictionary index outside its "
                                    f"{len(dictionary)} values")
        elif kind in (_VAR, _LIST):
            offsets = bufs[1]
            if len(offsets) < p.width:  # only an empty array's, which may omit them
                if len(offsets):
                    raise self.fail(f"offsets buffer of {len(offsets)} bytes, {p.width} "
                                    "needed")
                offsets = bufs[1] = _ZERO_OFFSETS
            view = offsets[: (length + 1) * p.width].view(p.dtype)
            end = len(bufs[2]) if kind == _VAR else kids[0].length
            first, last = int(view[0]), int(view[-1])
            if not 0 <= first <= last <= end:
                raise self.fail(f"{p.name!r}: offsets {first}..{last} outside 0..{end}")
            if self.validate and length:
                if np.any(view[1:] < view[:-1]):
                    raise self.fail(f"{p.name!r}: offsets decrease")
                if isinstance(p.type, t.Utf8Type | t.LargeUtf8Type):
                    self._check_utf8(p.name, bufs[2], view, first, last)
        return _trusted(p.type, length, tuple(bufs), kids, p.nulls, dictionary)

    def _check_utf8(self, name: str, data: np.ndarray[Any, Any], offsets: np.ndarray[Any, Any],
                    first: int, last: int) -> None:
        """The string data is UTF-8 and no value starts or ends inside a character (no
        offset lands on a continuation byte). O(bytes)."""
        try:
            codecs.utf_8_decode(data[first:last].data, "strict", True)
        except UnicodeDecodeError as exc:
            raise self.fail(f"{name!r}: string data that is not UTF-8 ({exc.reason} at byte "
                            f"{first + exc.start})") from exc
        inside = offsets[(offsets > first) & (offsets < last)]
        if len(inside) and np.any((data[inside] & 0xC0) == 0x80):
            raise self.fail(f"{name!r}: a string offset inside a UTF-8 character")


_trusted = Array._trusted


# -- the readers ----------------------------------------------------------------------------


class _State:
    """Schema and dictionaries as the messages so far have set them."""

    def __init__(self, limits: md.Limits, validate: bool) -> None:
        self.limits, self.validate = limits, validate
        self.schema: t.Schema | None = None
        self.dict_ids: dict[int, t.Field] = {}
        self.dict_of_field: dict[int, int] = {}
        self.dictionaries: dict[int, Array] = {}

    def set_schema(self, header: FbTable) -> t.Schema:
        self.schema, self.dict_ids = md.read_schema(header, self.limits)
        self.dict_of_field = {id(f): i for i, f in self.dict_ids.items()}
        return self.schema

    def schema_message(self, msg: _Message | None) -> t.Schema:
        if msg is None:
            raise ArrowFormatError("the input holds no schema message")
        if msg.meta.kind != md.SCHEMA:
            raise ArrowFormatError("the first message is not a schema", offset=msg.offset)
        return self.set_schema(msg.meta.header)

    def _plan(self, msg: _Message) -> Any:
        """The message's batch plan, made once per distinct metadata: a _BatchPlan, or for
        a dictionary batch (id, is delta, _BatchPlan)."""
        meta = msg.meta
        if meta.plan is not None:
            return meta.plan
        assert self.schema is not None
        if meta.kind == md.SCHEMA:
            raise ArrowFormatError("a second schema message", offset=msg.offset)
        if meta.kind == md.RECORD_BATCH:
            meta.plan = self._planner(meta.header, msg).plan(self.schema.fields)
            return meta.plan
        ident = meta.header.scalar(0, "q", 0)
        f = self.dict_ids.get(ident)
        if f is None:
            raise ArrowFormatError(f"a dictionary batch for unknown id {ident}",
                                   offset=msg.offset)
        assert isinstance(f.type, t.DictionaryType)
        data = meta.header.table(1)
        if data is None:
            raise ArrowFormatError("a dictionary batch without data", offset=msg.offset)
        plan = self._planner(data, msg).plan([t.Field("", f.type.value)])
        meta.plan = (ident, bool(meta.header.scalar(2, "?", 0)), plan)
        return meta.plan

    def _planner(self, rb: FbTable, msg: _Message) -> _Planner:
        return _Planner(rb, msg.meta.body_len, self.dict_of_field, self.limits, msg.offset)

    def _build(self, plan: _BatchPlan, msg: _Message) -> list[Array]:
        b = _Builder(msg.body, plan.codec, self.dictionaries, self.limits, self.validate,
                     msg.offset)
        return [b.build(p) for p in plan.arrays]

    def batch(self, msg: _Message) -> RecordBatch | None:
        """The batch of a RecordBatch message; a DictionaryBatch updates the dictionaries
        (None). O(buffers), plus O(rows) for the checks of `validate`."""
        plan = self._plan(msg)
        if isinstance(plan, _BatchPlan):
            columns = self._build(plan, msg)
            n = plan.length
            columns = [c if c.length == n else c.slice(0, n) for c in columns]
            assert self.schema is not None
            return RecordBatch._trusted(self.schema, columns, n)
        ident, delta, data = plan
        values = self._build(data, msg)[0]
        if len(values) > self.limits.max_dictionary:
            raise ArrowLimitError(f"a dictionary of {len(values)} values", offset=msg.offset)
        if delta:  # appended to what is there
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


class StreamReader:
    """Record batches of an IPC stream, one at a time: `for batch in reader`. `source` is
    bytes-like (read in place) or a binary file / socket-like object."""

    def __init__(self, source: Any, *, validate: bool = True,
                 limits: md.Limits = md.DEFAULT_LIMITS) -> None:
        _check_limits(limits)
        if not hasattr(source, "read") and not hasattr(source, "recv"):
            self._source: _Source | _FileSource = _Source(_bytes_view(source), 0, limits)
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
        _check_limits(limits)
        view = _bytes_view(data)
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
        self._source = _Source(view, 0, limits)
        self._state = _State(limits, validate)
        self.schema = self._state.set_schema(schema_table)
        for block in dictionaries:
            self._state.batch(self._message(block))

    def _message(self, block: tuple[int, ...]) -> _Message:
        offset, meta_len, body_len = block
        src = self._source  # shared (its metadata cache too), but not its position
        if not 8 <= offset <= len(src.data) or meta_len < 0 or body_len < 0:
            raise ArrowFormatError(f"a block at {offset} outside the file")
        msg, end = src.at(offset)
        if msg is None or end - offset != meta_len + body_len:
            raise ArrowFormatError("a block does not match its message", offset=offset)
        return msg

    @property
    def num_record_batches(self) -> int:
        return len(self.blocks)

    def get_batch(self, i: int) -> RecordBatch:
        msg = self._message(self.blocks[i])
        if msg.meta.kind != md.RECORD_BATCH:
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
    parsed = _parse_metadata(meta, 0, limits, {})
    if parsed.kind != md.SCHEMA:
        raise ArrowFormatError("the first message is not a schema", offset=0)
    return md.read_schema(parsed.header, limits)[0]


def read_ipc(source: Any, *, mmap: bool | None = None, validate: bool = True,
             limits: md.Limits = md.DEFAULT_LIMITS) -> Table:
    """A Table from an IPC file or stream (detected by the magic): `source` is a path
    (memory-mapped unless `mmap=False`), a bytes-like object, or a binary file object.
    Columns are views of the input (of the map, for a path)."""
    _check_limits(limits)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            if mmap is False:
                data: Any = f.read()
            else:
                size = os.fstat(f.fileno()).st_size
                data = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ) if size else b""
        return _read_buffer(data, validate, limits)
    if not hasattr(source, "read"):
        return _read_buffer(source, validate, limits)  # bytes-like, or InvalidArgumentError
    if isinstance(source, io.TextIOBase):
        raise InvalidArgumentError("cannot read Arrow data from a text file: open it in "
                                   "binary mode")
    if mmap:
        try:
            data = _mmap.mmap(source.fileno(), 0, access=_mmap.ACCESS_READ)
        except (OSError, ValueError, io.UnsupportedOperation) as exc:
            raise InvalidArgumentError(f"cannot memory-map {type(source).__name__}: {exc}"
                                       ) from exc
        return _read_buffer(data, validate, limits)
    peek = getattr(source, "peek", None)
    head = peek(6)[:6] if callable(peek) else b""
    if head == MAGIC or len(head) < 6:  # a file (or unknown yet) needs its footer: read all
        parts = []
        while chunk := source.read(READ_STEP):
            parts.append(chunk)
        return _read_buffer(b"".join(parts), validate, limits)
    return StreamReader(source, validate=validate, limits=limits).read_all()


def _read_buffer(data: Any, validate: bool, limits: md.Limits) -> Table:
    view = _bytes_view(data)
    if bytes(view[:6]) == MAGIC:
        return FileReader(view, validate=validate, limits=limits).read_all()
    return StreamReader(view, validate=validate, limits=limits).read_all()
