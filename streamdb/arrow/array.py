"""Arrays on numpy: the Arrow columnar layout, buffers as 64-byte-aligned uint8 arrays.

An `Array` is a type, a length, an offset into its buffers (slices share them), its
buffers (validity bitmap, offsets, values; None where absent) and its children (nested
types) or dictionary. Validity bitmaps stay packed (bit i of byte i // 8, least
significant first). Conversions: `to_numpy()` is zero-copy where the layout allows,
`to_pylist()` builds Python objects, `array(values, type)` builds from Python lists or
numpy arrays. Complexity is O(length) in numpy, O(1) for slicing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamdb.arrow import types as t
from streamdb.errors import ArrowError

ALIGNMENT = 64
_EMPTY = np.zeros(0, np.uint8)


def aligned(nbytes: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A zeroed uint8 buffer of `nbytes` whose data starts on a 64-byte boundary."""
    raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes]


def as_bytes(values: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """`values` as a uint8 buffer: a view when contiguous and 64-byte aligned, else an
    aligned copy."""
    flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    if flat.ctypes.data % ALIGNMENT == 0:
        return flat
    out = aligned(flat.nbytes)
    out[:] = flat
    return out


def pack_validity(valid: np.ndarray[Any, np.dtype[np.bool_]]) -> np.ndarray[Any, Any]:
    return as_bytes(np.packbits(valid, bitorder="little"))


def unpack_bits(bitmap: np.ndarray[Any, Any], offset: int, length: int
                ) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Bits offset..offset+length of a packed bitmap, as bools. O(length)."""
    first, last = offset // 8, (offset + length + 7) // 8
    bits = np.unpackbits(bitmap[first:last], bitorder="little")
    start = offset - first * 8
    return bits[start : start + length].astype(bool)


class Array:
    """One Arrow array. `buffers` follow the type's layout (see DataType); `children`
    are the nested arrays; `dictionary` the values of a dictionary-encoded array."""

    __slots__ = ("_null_count", "buffers", "children", "dictionary", "length", "offset",
                 "type")

    def __init__(self, type: t.DataType, length: int,
                 buffers: Sequence[np.ndarray[Any, Any] | None], children: Sequence[Array] = (),
                 *, offset: int = 0, null_count: int = -1, dictionary: Array | None = None
                 ) -> None:
        self.type = type
        self.length = length
        self.offset = offset
        self.buffers = tuple(buffers)
        self.children = tuple(children)
        self.dictionary = dictionary
        self._null_count = null_count if self.validity is not None or null_count >= 0 else 0
        if self.validity is None and type.layout != "null":
            self._null_count = 0
        elif type.layout == "null":
            self._null_count = length

    @classmethod
    def _trusted(cls, type: t.DataType, length: int,
                 buffers: tuple[np.ndarray[Any, Any] | None, ...], children: tuple[Array, ...],
                 null_count: int, dictionary: Array | None) -> Array:
        """An array at offset 0 whose parts are known to agree (the IPC reader's): nothing
        normalised. `null_count` is 0 without validity, the length for the null type. O(1)."""
        a = cls.__new__(cls)
        a.type, a.length, a.offset, a.buffers, a.children = type, length, 0, buffers, children
        a.dictionary, a._null_count = dictionary, null_count
        return a

    # -- facts --------------------------------------------------------------------------

    @property
    def validity(self) -> np.ndarray[Any, Any] | None:
        return self.buffers[0] if self.buffers else None

    @property
    def null_count(self) -> int:
        if self._null_count < 0:
            valid = self.valid_mask()
            self._null_count = self.length - int(np.count_nonzero(valid))
        return self._null_count

    def valid_mask(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """True where a value is present. O(length)."""
        if self.type.layout == "null":
            return np.zeros(self.length, bool)
        v = self.validity
        if v is None:
            return np.ones(self.length, bool)
        return unpack_bits(v, self.offset, self.length)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"<Array {self.type} length {self.length}, {self.null_count} null>"

    def to_pyarrow(self) -> Any:
        """The array as a pyarrow Array over the same buffers (needs pyarrow)."""
        from streamdb.arrow.interop import array_to_pyarrow

        return array_to_pyarrow(self)

    def __arrow_c_array__(self, requested_schema: object = None) -> tuple[object, object]:
        schema, data = self.to_pyarrow().__arrow_c_array__(requested_schema)
        return schema, data

    def slice(self, offset: int = 0, length: int | None = None) -> Array:
        """A zero-copy slice. O(1)."""
        offset = min(max(offset, 0), self.length)
        n = self.length - offset if length is None else min(max(length, 0), self.length - offset)
        return Array(self.type, n, self.buffers, self.children, offset=self.offset + offset,
                     null_count=-1 if self.validity is not None else 0,
                     dictionary=self.dictionary)

    # -- typed views --------------------------------------------------------------------

    def values(self) -> np.ndarray[Any, Any]:
        """The values buffer of a fixed-width array, as its dtype, this slice only."""
        dtype = self.type.dtype
        buf = self.buffers[1]
        assert buf is not None
        if dtype.itemsize == 0:
            return np.zeros(self.length, dtype)
        return buf[: (self.offset + self.length) * dtype.itemsize].view(dtype)[self.offset :]

    def value_offsets(self) -> np.ndarray[Any, Any]:
        """The offsets of a variable-size or list array, this slice's length + 1 of them."""
        wide = self.type.layout in ("large_var", "large_list")
        buf = self.buffers[1]
        assert buf is not None
        width = 8 if wide else 4
        return buf[: (self.offset + self.length + 1) * width].view(
            "<i8" if wide else "<i4")[self.offset :]

    def to_numpy(self, zero_copy_only: bool = True) -> np.ndarray[Any, Any]:
        """The values as a numpy array. Zero-copy for fixed-width types (and dictionary
        indices' values taken) without nulls; otherwise, with `zero_copy_only=False`, a copy:
        nulls become NaN (floats) or None (object arrays); booleans are unpacked, strings and
        nested values become objects. Raises ArrowError when a copy is needed but not
        allowed."""
        layout = self.type.layout
        if layout == "fixed" and not isinstance(self.type, t.DictionaryType) and (
                self.null_count == 0):
            out = self.values()
            if isinstance(self.type, t.TimestampType | t.DurationType):
                kind = "M" if isinstance(self.type, t.TimestampType) else "m"
                return out.view(f"{kind}8[{t.UNIT_NAMES[self.type.unit]}]")
            if isinstance(self.type, t.DateType) and self.type.unit == t.DAY:
                return out if zero_copy_only else out.astype("M8[D]")
            return out
        if zero_copy_only:
            raise ArrowError(f"{self.type} with {self.null_count} nulls needs a copy: pass "
                             "zero_copy_only=False")
        if isinstance(self.type, t.FloatType):
            out = self.values().astype(np.float64 if self.type.precision == t.DOUBLE
                                       else self.type.dtype)
            out[~self.valid_mask()] = np.nan
            return out
        if isinstance(self.type, t.BoolType) and self.null_count == 0:
            assert self.buffers[1] is not None
            return unpack_bits(self.buffers[1], self.offset, self.length)
        out = np.empty(self.length, object)
        out[:] = self.to_pylist()
        return out

    def to_pylist(self) -> list[Any]:
        """The values as Python objects (None for nulls). O(length). Raises ArrowError for
        a value Python's types cannot hold (a date past year 9999, a decimal scale out of
        range)."""
        try:
            values = _pyvalues(self)
        except (OverflowError, ValueError, decimal.DecimalException) as exc:
            raise ArrowError(f"a {self.type} value has no Python equivalent: {exc}") from exc
        if self.null_count == 0 or self.type.layout == "null":
            return values
        valid = self.valid_mask()
        return [v if ok else None for v, ok in zip(values, valid.tolist(), strict=True)]

    def equals(self, other: Array) -> bool:
        return self.type == other.type and self.to_pylist() == other.to_pylist()


def _pyvalues(a: Array) -> list[Any]:
    """Every slot's value, nulls included as whatever is stored."""
    ty = a.type
    n = a.length
    if ty.layout == "null":
        return [None] * n
    if isinstance(ty, t.DictionaryType):
        assert a.dictionary is not None
        values = _pylist_all(a.dictionary)
        indices = a.values().tolist()
        valid = a.valid_mask().tolist() if a.null_count else [True] * n
        return [values[i] if ok else None for i, ok in zip(indices, valid, strict=True)]
    if isinstance(ty, t.BoolType):
        assert a.buffers[1] is not None
        bits: list[Any] = unpack_bits(a.buffers[1], a.offset, n).tolist()
        return bits
    if ty.layout in ("var", "large_var"):
        offsets = a.value_offsets().tolist()
        data = a.buffers[2]
        raw = bytes(data) if data is not None else b""
        items = [raw[offsets[i] : offsets[i + 1]] for i in range(n)]
        if isinstance(ty, t.Utf8Type):
            return [b.decode("utf-8", "replace") for b in items]
        return items
    if ty.layout in ("list", "large_list"):
        offsets = a.value_offsets().tolist()
        child = _pylist_all(a.children[0])
        if isinstance(ty, t.MapType):
            key, item = (f.name for f in ty.value.type.children)
            return [[(e[key], e[item]) for e in child[offsets[i] : offsets[i + 1]]]
                    for i in range(n)]
        return [child[offsets[i] : offsets[i + 1]] for i in range(n)]
    if isinstance(ty, t.FixedSizeListType):
        child = _pylist_all(a.children[0])
        k = ty.size
        return [child[(a.offset + i) * k : (a.offset + i + 1) * k] for i in range(n)]
    if isinstance(ty, t.StructType):
        columns = [c.slice(a.offset, n).to_pylist() for c in a.children]
        return [{f.name: col[i] for f, col in zip(ty.fields, columns, strict=True)}
                for i in range(n)]
    vals = a.values()
    if isinstance(ty, t.DecimalType):
        width = ty.bits // 8
        raw = vals.tobytes()
        return [decimal.Decimal(int.from_bytes(raw[i * width : (i + 1) * width], "little",
                                               signed=True)).scaleb(-ty.scale, _EXACT)
                for i in range(n)]
    if isinstance(ty, t.FixedSizeBinaryType):
        raw = vals.tobytes()
        return [raw[i * ty.width : (i + 1) * ty.width] for i in range(n)]
    if isinstance(ty, t.DateType):
        epoch = dt.date(1970, 1, 1)
        days = vals.tolist() if ty.unit == t.DAY else (vals // 86_400_000).tolist()
        return [epoch + dt.timedelta(days=d) for d in days]
    if isinstance(ty, t.IntervalType) and ty.unit != t.YEAR_MONTH:
        return [tuple(x) for x in vals.tolist()]
    if isinstance(ty, t.TimestampType | t.DurationType | t.TimeType):
        return _temporal(ty, vals)
    out: list[Any] = vals.tolist()
    return out


def _temporal(ty: t.TimestampType | t.DurationType | t.TimeType, vals: np.ndarray[Any, Any]
              ) -> list[Any]:
    """datetime / timedelta / time values for units down to microseconds; nanosecond
    values as numpy datetime64 / timedelta64, which keep every digit."""
    if ty.unit == t.NANO:
        kind = "M8" if isinstance(ty, t.TimestampType) else "m8"
        out: list[Any] = list(vals.astype("<i8").view(f"{kind}[ns]"))
        return out
    factor = 10 ** (6 - 3 * ty.unit)  # in Python ints: no int64 wrap-around
    micros = [v * factor for v in vals.tolist()]
    if isinstance(ty, t.DurationType):
        return [dt.timedelta(microseconds=us) for us in micros]
    if isinstance(ty, t.TimeType):
        midnight = dt.datetime(1970, 1, 1)
        return [(midnight + dt.timedelta(microseconds=us)).time() for us in micros]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    zone = _zone(ty.tz) if ty.tz else None
    values = [epoch + dt.timedelta(microseconds=us) for us in micros]
    if zone is None:
        return [v.replace(tzinfo=None) for v in values]
    return [v.astimezone(zone) for v in values]


def _zone(name: str) -> dt.tzinfo:
    offset = re.fullmatch(r"([+-])([01]\d|2[0-3]):([0-5]\d)", name)
    if offset:
        sign = 1 if offset[1] == "+" else -1
        return dt.timezone(sign * dt.timedelta(hours=int(offset[2]), minutes=int(offset[3])))
    if name[:1] in "+-":
        raise ArrowError(f"malformed time zone offset {name!r}")
    try:
        import zoneinfo

        return zoneinfo.ZoneInfo(name)
    except Exception as exc:  # zoneinfo's errors for unknown or malformed names
        raise ArrowError(f"unknown time zone {name!r}") from exc


def _pylist_all(a: Array) -> list[Any]:
    return a.to_pylist()


def concat(a: Array, b: Array) -> Array:
    """`a` then `b` (of one type) as one array, from their buffers: O(len(a) + len(b))
    for types with buffers, O(1) for those without (nothing is built per value)."""
    ty, n = a.type, a.length + b.length
    if ty.layout == "null":
        return Array(ty, n, [])
    if a.null_count or b.null_count:
        validity = pack_validity(np.concatenate([a.valid_mask(), b.valid_mask()]))
    else:
        validity = None
    if ty.layout == "fixed" and not isinstance(ty, t.DictionaryType):
        values = np.concatenate([a.values().view(np.uint8).reshape(-1),
                                 b.values().view(np.uint8).reshape(-1)])
        return Array(ty, n, [validity, as_bytes(values)])
    if ty.layout == "bool":
        bits = [unpack_bits(x.buffers[1], x.offset, x.length) for x in (a, b)
                if x.buffers[1] is not None]
        return Array(ty, n, [validity, pack_validity(np.concatenate(bits))])
    if ty.layout in ("var", "large_var"):
        parts, offsets, at = [], [np.zeros(1, np.int64)], 0
        for x in (a, b):
            o = x.value_offsets().astype(np.int64)
            data = x.buffers[2]
            parts.append(data[int(o[0]) : int(o[-1])] if data is not None else _EMPTY)
            offsets.append(o[1:] - o[0] + at)
            at += int(o[-1] - o[0])
        wide = ty.layout == "large_var"
        joined = np.concatenate(offsets).astype("<i8" if wide else "<i4")
        return Array(ty, n, [validity, as_bytes(joined), as_bytes(np.concatenate(parts))])
    if ty.layout == "struct":
        return Array(ty, n, [validity], [concat(x, y) for x, y in
                                         zip(_children(a), _children(b), strict=True)])
    if isinstance(ty, t.FixedSizeListType):
        k = ty.size
        return Array(ty, n, [validity], [concat(
            a.children[0].slice(a.offset * k, a.length * k),
            b.children[0].slice(b.offset * k, b.length * k))])
    if ty.layout in ("list", "large_list"):
        offsets, children, at = [np.zeros(1, np.int64)], [], 0
        for x in (a, b):
            o = x.value_offsets().astype(np.int64)
            children.append(x.children[0].slice(int(o[0]), int(o[-1] - o[0])))
            offsets.append(o[1:] - o[0] + at)
            at += int(o[-1] - o[0])
        wide = ty.layout == "large_list"
        joined = np.concatenate(offsets).astype("<i8" if wide else "<i4")
        return Array(ty, n, [validity, as_bytes(joined)], [concat(*children)])
    raise ArrowError(f"cannot concatenate arrays of {ty}")


def _children(a: Array) -> list[Array]:
    """A struct array's children, cut to its slice."""
    return [c.slice(a.offset, a.length) for c in a.children]


def same_values(a: Array, b: Array) -> bool:
    """Whether two arrays hold the same values, bit for bit (NaN equals the same NaN).
    O(length)."""
    if a.type != b.type or a.length != b.length:
        return False
    valid = a.valid_mask()
    if not np.array_equal(valid, b.valid_mask()):
        return False
    ty = a.type
    if ty.layout == "null":
        return True
    if ty.layout == "fixed" and not isinstance(ty, t.DictionaryType):
        w = ty.dtype.itemsize
        x = a.values().view(np.uint8).reshape(-1, w) if w else np.zeros((a.length, 0))
        y = b.values().view(np.uint8).reshape(-1, w) if w else np.zeros((b.length, 0))
        return bool(np.array_equal(x[valid], y[valid]))
    if ty.layout == "bool":
        assert a.buffers[1] is not None and b.buffers[1] is not None
        return bool(np.array_equal(unpack_bits(a.buffers[1], a.offset, a.length)[valid],
                                   unpack_bits(b.buffers[1], b.offset, b.length)[valid]))
    return a.to_pylist() == b.to_pylist()


# -- building -----------------------------------------------------------------------------


def from_numpy(values: np.ndarray[Any, Any], type: t.DataType | None = None,
               mask: np.ndarray[Any, Any] | None = None) -> Array:
    """An array of a 1-d numpy array: zero-copy when contiguous and 64-byte aligned
    (else one aligned copy). `mask` is True where a value is null."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ArrowError("from_numpy takes a 1-d array")
    ty = type or t.from_numpy_dtype(values.dtype)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != values.shape:
            raise ArrowError(f"a mask of {len(mask)} for {len(values)} values")
    if values.dtype.kind in "mM":  # in the type's unit; NaT is null
        unit = _numpy_unit(ty)
        if unit is not None:
            values = values.astype(f"{values.dtype.kind}8[{unit}]")
        nat = np.isnat(values)
        values = values.view("<i8")
        if nat.any():
            mask = nat if mask is None else (mask | nat)
            values = np.where(nat, 0, values)  # null slots hold 0, as pyarrow's do
    validity = None
    if mask is not None and np.any(mask):
        validity = pack_validity(~mask)
    if isinstance(ty, t.BoolType):
        return Array(ty, len(values), [validity, pack_validity(values.astype(bool))])
    if ty.layout != "fixed":
        return array(values.tolist(), ty, mask=mask)
    if values.dtype != ty.dtype:
        if ty.dtype.kind in "iu" and not np.can_cast(values.dtype, ty.dtype):
            # pyarrow's safe cast: a value that would change is an error
            check = values if mask is None else values[~mask]
            info = np.iinfo(ty.dtype.str)
            whole = check.dtype.kind in "iu" or bool(
                np.isfinite(check).all() and (np.floor(check) == check).all())
            if not whole or (len(check) and not (info.min <= check.min()
                                                 and check.max() <= info.max)):
                raise ArrowError(f"values of {values.dtype} that {ty} cannot hold")
            if mask is not None:
                values = np.where(mask, 0, values)  # what null slots hold need not fit
        values = values.astype(ty.dtype)
    return Array(ty, len(values), [validity, as_bytes(values)])


def _numpy_unit(ty: t.DataType) -> str | None:
    """The numpy datetime64/timedelta64 unit of a temporal type's values."""
    if isinstance(ty, t.TimestampType | t.DurationType | t.TimeType):
        return t.UNIT_NAMES[ty.unit]
    if isinstance(ty, t.DateType):
        return "D" if ty.unit == t.DAY else "ms"
    return None


def array(values: Sequence[Any] | np.ndarray[Any, Any], type: t.DataType | None = None, *,
          mask: np.ndarray[Any, Any] | None = None) -> Array:
    """An array of Python values (None is null) or of a numpy array, of `type` or of the
    type inferred from the values (bool, int64, float64, utf8, binary, list, struct)."""
    if isinstance(values, np.ndarray) and values.dtype != object and (
            type is None or type.layout in ("fixed", "bool")):
        return from_numpy(values, type, mask)
    items = list(values)
    if mask is not None:
        if len(mask) != len(items):
            raise ArrowError(f"a mask of {len(mask)} for {len(items)} values")
        items = [None if m else v for v, m in zip(items, np.asarray(mask).tolist(), strict=True)]
    ty = type if type is not None else infer(items)
    try:
        return _build(ty, items)
    except (TypeError, ValueError, OverflowError) as exc:  # a value the type cannot hold
        raise ArrowError(f"values that are not {ty}: {exc}") from exc


def infer(items: Sequence[Any]) -> t.DataType:
    sample = next((v for v in items if v is not None), None)
    if sample is None:
        return t.NullType()
    if isinstance(sample, bool):
        return t.BoolType()
    if isinstance(sample, int | float):  # ints and floats together are doubles
        kinds = {bool if isinstance(v, bool) else int if isinstance(v, int) else
                 float if isinstance(v, float) else object for v in items if v is not None}
        if kinds == {int}:
            return t.IntType(64)
        if kinds <= {int, float}:
            return t.FloatType(t.DOUBLE)
        raise ArrowError("values of mixed types: give the array a type")
    if isinstance(sample, str):
        return t.Utf8Type()
    if isinstance(sample, bytes | bytearray | memoryview):
        return t.BinaryType()
    if isinstance(sample, dict):
        keys: dict[str, None] = {}
        for v in items:
            if v is not None:
                keys.update(dict.fromkeys(v))
        return t.StructType(tuple(t.Field(k, infer([v.get(k) if v is not None else None
                                                    for v in items])) for k in keys))
    if isinstance(sample, list | tuple):
        return t.list_(infer([x for v in items if v is not None for x in v]))
    if isinstance(sample, dt.datetime):
        return t.TimestampType(t.MICRO)
    if isinstance(sample, dt.date):
        return t.DateType(t.DAY)
    if isinstance(sample, decimal.Decimal):
        return t.DecimalType(38, max(0, -int(sample.as_tuple().exponent)))
    raise ArrowError(f"cannot infer an Arrow type for {type(sample).__name__}")


def _validity(items: Sequence[Any]) -> tuple[np.ndarray[Any, Any] | None, np.ndarray[Any, Any]]:
    valid = np.fromiter((v is not None for v in items), bool, len(items))
    return (None if valid.all() else pack_validity(valid)), valid


def _build(ty: t.DataType, items: list[Any]) -> Array:
    n = len(items)
    if ty.layout == "null":
        if any(v is not None for v in items):
            raise ArrowError("a null array holds only None")
        return Array(ty, n, [])
    validity, valid = _validity(items)
    if isinstance(ty, t.DictionaryType):
        lookup: dict[Any, int] = {}
        codes = [lookup.setdefault(v, len(lookup)) if v is not None else 0 for v in items]
        dictionary = _build(ty.value, list(lookup))
        return Array(ty, n, [validity, as_bytes(np.array(codes, ty.index.dtype))],
                     dictionary=dictionary)
    if isinstance(ty, t.BoolType):
        bits = np.fromiter((bool(v) for v in items), bool, n)
        return Array(ty, n, [validity, pack_validity(bits)])
    if ty.layout in ("var", "large_var"):
        text = isinstance(ty, t.Utf8Type | t.LargeUtf8Type)
        parts = []
        for v in items:
            if isinstance(v, str):
                parts.append(v.encode())
            elif isinstance(v, bytes | bytearray | memoryview):
                raw = bytes(v)
                if text:
                    raw.decode()  # UTF-8 or UnicodeDecodeError (a ValueError): ArrowError
                parts.append(raw)
            elif v is None:
                parts.append(b"")
            else:
                raise ArrowError(f"a {type(v).__name__} value in a {ty} array")
        offsets = np.zeros(n + 1, "<i8" if ty.layout == "large_var" else "<i4")
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        data = np.frombuffer(b"".join(parts), np.uint8)
        return Array(ty, n, [validity, as_bytes(offsets), as_bytes(data)])
    if ty.layout in ("list", "large_list"):
        value = ty.children[0]
        flat: list[Any] = []
        lengths = []
        for v in items:
            seq = [] if v is None else (list(v.items()) if isinstance(v, dict) else list(v))
            if isinstance(ty, t.MapType):
                key, item = (f.name for f in ty.value.type.children)
                seq = [{key: k, item: x} for k, x in seq]
            flat += seq
            lengths.append(len(seq))
        offsets = np.zeros(n + 1, "<i8" if ty.layout == "large_list" else "<i4")
        np.cumsum(lengths, out=offsets[1:])
        return Array(ty, n, [validity, as_bytes(offsets)], [_build(value.type, flat)])
    if isinstance(ty, t.FixedSizeListType):
        flat = []
        for v in items:
            seq = [None] * ty.size if v is None else list(v)
            if len(seq) != ty.size:
                raise ArrowError(f"a fixed_size_list[{ty.size}] value has {len(seq)} items")
            flat += seq
        return Array(ty, n, [validity], [_build(ty.value.type, flat)])
    if isinstance(ty, t.StructType):
        children = [_build(f.type, [None if v is None else v.get(f.name) for v in items])
                    for f in ty.fields]
        return Array(ty, n, [validity], children)
    return Array(ty, n, [validity, as_bytes(_fixed_values(ty, items, valid))])


def _fixed_values(ty: t.DataType, items: list[Any], valid: np.ndarray[Any, Any]
                  ) -> np.ndarray[Any, Any]:
    dtype = ty.dtype
    if isinstance(ty, t.DecimalType):
        width = ty.bits // 8
        try:
            raw = b"".join(_unscaled(v, ty.scale).to_bytes(width, "little", signed=True)
                           if v is not None else bytes(width) for v in items)
        except (OverflowError, decimal.InvalidOperation) as exc:
            raise ArrowError(f"a value does not fit {ty}: {exc}") from exc
        return np.frombuffer(raw, np.uint8)
    if isinstance(ty, t.FixedSizeBinaryType):
        raw = b"".join(bytes(v) if v is not None else bytes(ty.width) for v in items)
        if len(raw) != ty.width * len(items):
            raise ArrowError(f"a fixed_size_binary[{ty.width}] value has another length")
        return np.frombuffer(raw, np.uint8)
    if isinstance(ty, t.DateType):
        epoch = dt.date(1970, 1, 1)
        days = [(v - epoch).days if v is not None else 0 for v in items]
        return np.array(days if ty.unit == t.DAY else [d * 86_400_000 for d in days], dtype)
    if isinstance(ty, t.TimestampType) and any(isinstance(v, dt.datetime) for v in items):
        per_second = 10 ** (3 * ty.unit)
        return np.array([_ticks(v, per_second) if v is not None else 0 for v in items], dtype)
    if isinstance(ty, t.TimeType) and any(isinstance(v, dt.time) for v in items):
        per_second = 10 ** (3 * ty.unit)
        return np.array([((v.hour * 60 + v.minute) * 60 + v.second) * per_second
                         + v.microsecond * per_second // 1_000_000 if isinstance(v, dt.time)
                         else (v if v is not None else 0) for v in items], dtype)
    if isinstance(ty, t.DurationType) and any(isinstance(v, dt.timedelta) for v in items):
        micro = 10 ** (3 * ty.unit) // 1_000_000 if ty.unit >= t.MICRO else 0
        return np.array([_duration(v, ty.unit, micro) if v is not None else 0 for v in items],
                        dtype)
    if dtype.fields:
        return np.array([tuple(v) if v is not None else (0,) * len(dtype.fields)
                         for v in items], dtype)
    fill = 0
    return np.array([v if ok else fill for v, ok in zip(items, valid.tolist(), strict=True)],
                    dtype)


_EXACT = decimal.Context(prec=100, Emin=-10**6, Emax=10**6)  # decimal256 needs 77 digits


def _unscaled(v: object, scale: int) -> int:
    """The integer a decimal of `scale` stores for `v`; refuses a value with more digits
    after the point than the scale keeps."""
    d = decimal.Decimal(v if isinstance(v, decimal.Decimal | int | str) else str(v))
    shifted = d.scaleb(scale, _EXACT)
    if shifted != shifted.to_integral_value(context=_EXACT):
        raise decimal.InvalidOperation(f"{v} has more than {scale} digits after the point")
    return int(shifted)


def _ticks(v: dt.datetime, per_second: int) -> int:
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    delta = v - dt.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * per_second + delta.microseconds * per_second \
        // 1_000_000


def _duration(v: dt.timedelta, unit: int, micro: int) -> int:
    us = (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds
    return us * micro if unit >= t.MICRO else us // (1_000_000 // 10 ** (3 * unit))
