"""Arrow IPC metadata: schemas, fields and types to and from their FlatBuffers tables
(Schema.fbs, Message.fbs and File.fbs of the Arrow format; field ids as there).

Reading is bounded: at most `max_fields` fields in all and `max_depth` levels of nesting;
a type the library does not support (views, unions, run-end encoding, decimal32/64) is
UnsupportedError, an unknown one ArrowFormatError.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from streamdb.arrow import types as t
from streamdb.arrow.flatbuf import Builder, Structs, T, Table, Tables
from streamdb.errors import (
    ArrowFormatError,
    ArrowLimitError,
    InvalidArgumentError,
    UnsupportedError,
)

V5 = 4  # MetadataVersion.V5
SCHEMA, DICTIONARY_BATCH, RECORD_BATCH = 1, 2, 3  # MessageHeader union
LZ4_FRAME, ZSTD = 0, 1  # CompressionType
FIELD_NODE = struct.Struct("<qq")  # length, null_count
BUFFER = struct.Struct("<qq")  # offset, length
BLOCK = struct.Struct("<qi4xq")  # offset, metaDataLength, (padding), bodyLength
_SIMPLE: dict[int, type[t.DataType]] = {
    1: t.NullType, 4: t.BinaryType, 5: t.Utf8Type, 6: t.BoolType, 19: t.LargeBinaryType,
    20: t.LargeUtf8Type}
_UNSUPPORTED = {14: "union", 22: "run-end encoded", 23: "binary view", 24: "utf8 view",
                25: "list view", 26: "large list view"}


@dataclass(frozen=True)
class Limits:
    """Decoding limits: inputs beyond them are ArrowLimitError before anything is sized
    from them."""

    max_metadata: int = 64 << 20  # bytes of one message's metadata
    max_body: int = 1 << 40  # bytes of one message's body
    max_rows: int = 1 << 40  # rows (slots) of one array
    max_fields: int = 100_000  # fields in a schema, nested ones included
    max_buffers: int = 1_000_000  # buffers of one batch
    max_depth: int = 64  # nesting of types
    max_dictionary: int = 1 << 32  # values of one dictionary
    max_decompressed: int = 1 << 34  # bytes of one decompressed buffer

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgumentError(f"Limits.{name} must be an int >= 0: {value!r}")


DEFAULT_LIMITS = Limits()


# -- writing --------------------------------------------------------------------------------


def _kv(metadata: tuple[tuple[str, str], ...]) -> Tables | None:
    return Tables([T([k, v]) for k, v in metadata]) if metadata else None


def _type_table(ty: t.DataType) -> T:
    if isinstance(ty, t.IntType):
        return T([("i", ty.bits), ("?", ty.signed)])
    if isinstance(ty, t.FloatType):
        return T([("h", ty.precision)])
    if isinstance(ty, t.DecimalType):
        return T([("i", ty.precision), ("i", ty.scale), ("i", ty.bits)])
    if isinstance(ty, t.DateType | t.IntervalType | t.DurationType):
        return T([("h", ty.unit)])
    if isinstance(ty, t.TimeType):
        return T([("h", ty.unit), ("i", ty.bits)])
    if isinstance(ty, t.TimestampType):
        return T([("h", ty.unit), ty.tz])
    if isinstance(ty, t.FixedSizeBinaryType):
        return T([("i", ty.width)])
    if isinstance(ty, t.FixedSizeListType):
        return T([("i", ty.size)])
    if isinstance(ty, t.MapType):
        return T([("?", ty.keys_sorted)])
    return T([])


def field_table(f: t.Field, ids: list[int]) -> T:
    """The Field table of `f`; dictionary-encoded fields take the next id of `ids`."""
    ty = f.type
    encoding = None
    if isinstance(ty, t.DictionaryType):
        encoding = T([("q", ids.pop(0)), _type_table(ty.index), ("?", ty.ordered)])
        ty = ty.value
    children = Tables([field_table(c, ids) for c in ty.children])
    return T([f.name, ("?", f.nullable), ("B", ty.type_id), _type_table(ty), encoding,
              children, _kv(f.metadata)])


def dictionary_fields(schema: t.Schema) -> list[t.Field]:
    """The dictionary-encoded fields in id order (pre-order through nested types)."""
    out: list[t.Field] = []

    def walk(f: t.Field) -> None:
        if isinstance(f.type, t.DictionaryType):
            out.append(f)
            return
        for c in f.type.children:
            walk(c)

    for f in schema.fields:
        walk(f)
    return out


def schema_table(schema: t.Schema) -> T:
    ids = list(range(len(dictionary_fields(schema))))
    return T([("h", 0), Tables([field_table(f, ids) for f in schema.fields]),
              _kv(schema.metadata)])


def message(header_type: int, header: T, body_length: int) -> bytes:
    return Builder().finish(T([("h", V5), ("B", header_type), header, ("q", body_length)]))


def record_batch_table(length: int, nodes: list[tuple[int, int]],
                       buffers: list[tuple[int, int]], codec: int | None) -> T:
    compression = T([("b", codec), ("b", 0)]) if codec is not None else None
    return T([("q", length), Structs(FIELD_NODE, nodes), Structs(BUFFER, buffers), compression])


def footer(schema: t.Schema, dictionaries: list[tuple[int, int, int]],
           batches: list[tuple[int, int, int]]) -> bytes:
    return Builder().finish(T([("h", V5), schema_table(schema), Structs(BLOCK, dictionaries),
                               Structs(BLOCK, batches), _kv(schema.metadata)]))


# -- reading --------------------------------------------------------------------------------


class _Budget:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.fields = 0


def _read_kv(table: Table, i: int) -> tuple[tuple[str, str], ...]:
    # Custom metadata is bytes to pyarrow: what is not UTF-8 is kept as surrogates.
    return tuple((kv.string(0, "surrogateescape") or "", kv.string(1, "surrogateescape") or "")
                 for kv in table.tables(i))


def _read_type(type_id: int, tt: Table | None, children: tuple[t.Field, ...]) -> t.DataType:
    def need(n: int) -> None:
        if len(children) != n:
            raise ArrowFormatError(f"a type with id {type_id} has {len(children)} children")

    def get(i: int, fmt: str, default: int) -> int:
        return tt.scalar(i, fmt, default) if tt is not None else default

    if type_id in _UNSUPPORTED:
        raise UnsupportedError(f"Arrow {_UNSUPPORTED[type_id]} arrays are not supported")
    if type_id in _SIMPLE:
        need(0)
        return _SIMPLE[type_id]()
    if type_id == 2:
        need(0)
        bits = get(0, "i", 0)
        if bits not in (8, 16, 32, 64):
            raise ArrowFormatError(f"an integer type of {bits} bits")
        return t.IntType(bits, bool(get(1, "?", 0)))
    if type_id == 3:
        need(0)
        precision = get(0, "h", 0)
        if precision not in (0, 1, 2):
            raise ArrowFormatError(f"floating point precision {precision}")
        return t.FloatType(precision)
    if type_id == 7:
        need(0)
        bits = get(2, "i", 128)
        if bits in (32, 64):
            raise UnsupportedError(f"decimal{bits} arrays are not supported")
        if bits not in (128, 256):
            raise ArrowFormatError(f"a decimal type of {bits} bits")
        precision = get(0, "i", 0)
        if not 1 <= precision <= (38 if bits == 128 else 76):
            raise ArrowFormatError(f"decimal{bits} precision {precision}")
        return t.DecimalType(precision, get(1, "i", 0), bits)
    if type_id == 8:
        need(0)
        unit = get(0, "h", t.MILLI)
        if unit not in (0, 1):
            raise ArrowFormatError(f"date unit {unit}")
        return t.DateType(unit)
    if type_id in (9, 10, 18):
        need(0)
        unit = get(0, "h", t.MILLI if type_id != 10 else 0)
        if unit not in (0, 1, 2, 3):
            raise ArrowFormatError(f"time unit {unit}")
        if type_id == 9:
            bits = get(1, "i", 32)
            if bits != t.TimeType(unit).bits:
                raise ArrowFormatError(f"time unit {unit} with {bits} bits")
            return t.TimeType(unit)
        if type_id == 18:
            return t.DurationType(unit)
        return t.TimestampType(unit, (tt.string(1) if tt is not None else None) or None)
    if type_id == 11:
        need(0)
        unit = get(0, "h", 0)
        if unit not in (0, 1, 2):
            raise ArrowFormatError(f"interval unit {unit}")
        return t.IntervalType(unit)
    if type_id == 15:
        need(0)
        width = get(0, "i", 0)
        if width < 0:
            raise ArrowFormatError(f"fixed_size_binary width {width}")
        return t.FixedSizeBinaryType(width)
    if type_id in (12, 21):
        need(1)
        return (t.ListType if type_id == 12 else t.LargeListType)(children[0])
    if type_id == 16:
        need(1)
        size = get(0, "i", 0)
        if size < 0:
            raise ArrowFormatError(f"fixed_size_list size {size}")
        return t.FixedSizeListType(children[0], size)
    if type_id == 13:
        return t.StructType(children)
    if type_id == 17:
        need(1)
        entries = children[0].type
        if not isinstance(entries, t.StructType) or len(entries.fields) != 2:
            raise ArrowFormatError("a map's child is not a struct of a key and a value")
        if children[0].nullable or entries.fields[0].nullable:
            raise ArrowFormatError("a map's entries or keys are nullable (the format forbids)")
        return t.MapType(children[0], bool(get(0, "?", 0)))
    raise ArrowFormatError(f"unknown Arrow type id {type_id}")


def read_field(ft: Table, budget: _Budget, depth: int, dict_ids: dict[int, t.Field],
               path: list[int]) -> t.Field:
    """A Field table as a Field; dictionary ids are recorded in `dict_ids` (id -> field)."""
    budget.fields += 1
    if budget.fields > budget.limits.max_fields:
        raise ArrowLimitError(f"more than {budget.limits.max_fields} fields")
    if depth > budget.limits.max_depth:
        raise ArrowLimitError(f"types nested deeper than {budget.limits.max_depth}")
    name = ft.string(0) or ""
    nullable = bool(ft.scalar(1, "?", 0))
    type_id, tt = ft.union(2)
    children = tuple(read_field(c, budget, depth + 1, dict_ids, path) for c in ft.tables(5))
    ty = _read_type(type_id, tt, children)
    encoding = ft.table(4)
    if encoding is not None:
        index_table = encoding.table(1)
        index = (_read_type(2, index_table, ()) if index_table is not None else t.IntType(32))
        assert isinstance(index, t.IntType)
        ty = t.DictionaryType(index, ty, bool(encoding.scalar(2, "?", 0)))
        f = t.Field(name, ty, nullable, _read_kv(ft, 6))
        ident = encoding.scalar(0, "q", 0)
        if ident in dict_ids:
            raise ArrowFormatError(f"dictionary id {ident} is used by two fields")
        dict_ids[ident] = f
        return f
    f = t.Field(name, ty, nullable, _read_kv(ft, 6))
    _check_canonical_extension(f)
    return f


# Canonical extension types (the Arrow format's list) whose storage type is fixed: others'
# storage is checked by those who know them. A reader that knows these (pyarrow) refuses
# them on any other storage, and so do we, rather than hand out what it cannot take.
_CANONICAL: dict[str, tuple[str, Callable[[t.DataType], bool]]] = {
    "arrow.uuid": ("fixed_size_binary(16)",
                   lambda ty: isinstance(ty, t.FixedSizeBinaryType) and ty.width == 16),
    "arrow.bool8": ("int8", lambda ty: isinstance(ty, t.IntType) and (ty.bits, ty.signed)
                    == (8, True)),
    "arrow.json": ("utf8 or large_utf8", lambda ty: isinstance(ty, t.Utf8Type)),
}


def _check_canonical_extension(f: t.Field) -> None:
    name = next((v for k, v in f.metadata if k == "ARROW:extension:name"), None)
    rule = _CANONICAL.get(name) if isinstance(name, str) else None
    if rule is not None and not rule[1](f.type):
        raise ArrowFormatError(f"field {f.name!r}: the extension type {name} is stored as "
                               f"{rule[0]}, not {f.type}")


_CACHE: OrderedDict[tuple[bytes, int, Limits], tuple[t.Schema, dict[int, t.Field]]] = (
    OrderedDict())
_CACHED = 64  # schemas kept, by the bytes of the metadata they were read from


def read_schema(st: Table, limits: Limits = DEFAULT_LIMITS
                ) -> tuple[t.Schema, dict[int, t.Field]]:
    """A Schema table: the schema and its dictionary fields by id. The last schemas read
    are kept by the bytes of the flatbuffer holding them (reopening a file or a stream
    costs no parsing); a result is never changed, so sharing it is safe."""
    key = (st.buf, st.pos, limits)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    found = _read_schema(st, limits)
    _CACHE[key] = found
    if len(_CACHE) > _CACHED:
        _CACHE.popitem(last=False)
    return found


def _read_schema(st: Table, limits: Limits) -> tuple[t.Schema, dict[int, t.Field]]:
    if st.scalar(0, "h", 0) != 0:
        raise UnsupportedError("big-endian Arrow data is not supported")
    budget = _Budget(limits)
    dict_ids: dict[int, t.Field] = {}
    fields = tuple(read_field(f, budget, 0, dict_ids, []) for f in st.tables(1))
    return t.Schema(fields, _read_kv(st, 2)), dict_ids
