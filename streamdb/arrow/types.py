"""Arrow data types and fields (the logical types of the Arrow columnar format).

Each type knows its physical layout: which buffers an array of it has (validity, offsets,
values) and, for fixed-width types, the numpy dtype of its values. The ids are those of
the `Type` union in Arrow's Schema.fbs. Types the reader meets but does not support (views,
unions, run-end encoding, decimal32/64) raise UnsupportedError when read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from streamdb.errors import ArrowError

# TimeUnit, DateUnit, IntervalUnit and Precision values of Schema.fbs
SECOND, MILLI, MICRO, NANO = 0, 1, 2, 3
UNIT_NAMES = ("s", "ms", "us", "ns")
DAY = 0
YEAR_MONTH, DAY_TIME, MONTH_DAY_NANO = 0, 1, 2
HALF, SINGLE, DOUBLE = 0, 1, 2


@dataclass(frozen=True)
class DataType:
    """Base of the types. `type_id` is the Schema.fbs union id; `layout` names the
    buffers: "fixed" (validity, values), "bool" (validity, bits), "var"/"large_var"
    (validity, int32/int64 offsets, bytes), "list"/"large_list" (validity, offsets, one
    child), "fixed_list" and "struct" (validity, children), "null" (no buffers)."""

    type_id: ClassVar[int] = 0
    layout: ClassVar[str] = "fixed"

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The numpy dtype of the values buffer (fixed layouts)."""
        raise ArrowError(f"{self} has no fixed-width values")

    @property
    def children(self) -> tuple[Field, ...]:
        return ()


@dataclass(frozen=True)
class NullType(DataType):
    type_id: ClassVar[int] = 1
    layout: ClassVar[str] = "null"

    def __str__(self) -> str:
        return "null"


@dataclass(frozen=True)
class IntType(DataType):
    bits: int = 64
    signed: bool = True
    type_id: ClassVar[int] = 2

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(f"<{'i' if self.signed else 'u'}{self.bits // 8}")

    def __str__(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}"


@dataclass(frozen=True)
class FloatType(DataType):
    precision: int = DOUBLE
    type_id: ClassVar[int] = 3

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(("<f2", "<f4", "<f8")[self.precision])

    def __str__(self) -> str:
        return ("float16", "float32", "float64")[self.precision]


@dataclass(frozen=True)
class BinaryType(DataType):
    type_id: ClassVar[int] = 4
    layout: ClassVar[str] = "var"

    def __str__(self) -> str:
        return "binary"


@dataclass(frozen=True)
class Utf8Type(DataType):
    type_id: ClassVar[int] = 5
    layout: ClassVar[str] = "var"

    def __str__(self) -> str:
        return "utf8"


@dataclass(frozen=True)
class BoolType(DataType):
    type_id: ClassVar[int] = 6
    layout: ClassVar[str] = "bool"

    def __str__(self) -> str:
        return "bool"


@dataclass(frozen=True)
class DecimalType(DataType):
    precision: int = 38
    scale: int = 0
    bits: int = 128
    type_id: ClassVar[int] = 7

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(f"V{self.bits // 8}")

    def __str__(self) -> str:
        return f"decimal{self.bits}({self.precision}, {self.scale})"


@dataclass(frozen=True)
class DateType(DataType):
    unit: int = DAY  # DAY (int32) or MILLI (int64)
    type_id: ClassVar[int] = 8

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype("<i4" if self.unit == DAY else "<i8")

    def __str__(self) -> str:
        return "date32" if self.unit == DAY else "date64"


@dataclass(frozen=True)
class TimeType(DataType):
    unit: int = MILLI
    type_id: ClassVar[int] = 9

    @property
    def bits(self) -> int:
        return 32 if self.unit in (SECOND, MILLI) else 64

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(f"<i{self.bits // 8}")

    def __str__(self) -> str:
        return f"time{self.bits}[{UNIT_NAMES[self.unit]}]"


@dataclass(frozen=True)
class TimestampType(DataType):
    unit: int = MICRO
    tz: str | None = None
    type_id: ClassVar[int] = 10

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype("<i8")

    def __str__(self) -> str:
        return f"timestamp[{UNIT_NAMES[self.unit]}{', tz=' + self.tz if self.tz else ''}]"


@dataclass(frozen=True)
class IntervalType(DataType):
    unit: int = MONTH_DAY_NANO
    type_id: ClassVar[int] = 11

    @property
    def dtype(self) -> np.dtype[np.generic]:
        if self.unit == YEAR_MONTH:
            return np.dtype("<i4")
        if self.unit == DAY_TIME:
            return np.dtype([("days", "<i4"), ("milliseconds", "<i4")])
        return np.dtype([("months", "<i4"), ("days", "<i4"), ("nanoseconds", "<i8")])

    def __str__(self) -> str:
        return ("month_interval", "day_time_interval", "month_day_nano_interval")[self.unit]


@dataclass(frozen=True)
class DurationType(DataType):
    unit: int = MICRO
    type_id: ClassVar[int] = 18

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype("<i8")

    def __str__(self) -> str:
        return f"duration[{UNIT_NAMES[self.unit]}]"


@dataclass(frozen=True)
class FixedSizeBinaryType(DataType):
    width: int = 1
    type_id: ClassVar[int] = 15

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype(f"S{self.width}") if self.width else np.dtype("V0")

    def __str__(self) -> str:
        return f"fixed_size_binary[{self.width}]"


@dataclass(frozen=True)
class LargeBinaryType(BinaryType):
    type_id: ClassVar[int] = 19
    layout: ClassVar[str] = "large_var"

    def __str__(self) -> str:
        return "large_binary"


@dataclass(frozen=True)
class LargeUtf8Type(Utf8Type):
    type_id: ClassVar[int] = 20
    layout: ClassVar[str] = "large_var"

    def __str__(self) -> str:
        return "large_utf8"


@dataclass(frozen=True)
class ListType(DataType):
    value: Field = field(default_factory=lambda: Field("item", NullType()))
    type_id: ClassVar[int] = 12
    layout: ClassVar[str] = "list"

    @property
    def children(self) -> tuple[Field, ...]:
        return (self.value,)

    def __str__(self) -> str:
        return f"list<{self.value.name}: {self.value.type}>"


@dataclass(frozen=True)
class LargeListType(ListType):
    type_id: ClassVar[int] = 21
    layout: ClassVar[str] = "large_list"

    def __str__(self) -> str:
        return f"large_list<{self.value.name}: {self.value.type}>"


@dataclass(frozen=True)
class FixedSizeListType(DataType):
    value: Field = field(default_factory=lambda: Field("item", NullType()))
    size: int = 1
    type_id: ClassVar[int] = 16
    layout: ClassVar[str] = "fixed_list"

    @property
    def children(self) -> tuple[Field, ...]:
        return (self.value,)

    def __str__(self) -> str:
        return f"fixed_size_list<{self.value.name}: {self.value.type}>[{self.size}]"


@dataclass(frozen=True)
class StructType(DataType):
    fields: tuple[Field, ...] = ()
    type_id: ClassVar[int] = 13
    layout: ClassVar[str] = "struct"

    @property
    def children(self) -> tuple[Field, ...]:
        return self.fields

    def __str__(self) -> str:
        return "struct<" + ", ".join(f"{f.name}: {f.type}" for f in self.fields) + ">"


@dataclass(frozen=True)
class MapType(ListType):
    """A list of `entries` structs of a key and an item field; as a List in layout."""

    keys_sorted: bool = False
    type_id: ClassVar[int] = 17
    layout: ClassVar[str] = "list"

    def __str__(self) -> str:
        entries = self.value.type
        assert isinstance(entries, StructType)
        key, item = entries.fields
        return f"map<{key.type}, {item.type}>"


@dataclass(frozen=True)
class DictionaryType(DataType):
    """Dictionary encoding: `index` integers into a dictionary of `value` type. In IPC
    it is the field's DictionaryEncoding; the dictionary travels in dictionary batches."""

    index: IntType = field(default_factory=lambda: IntType(32))
    value: DataType = field(default_factory=Utf8Type)
    ordered: bool = False
    type_id: ClassVar[int] = -1  # not a Type union member

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return self.index.dtype

    def __str__(self) -> str:
        return f"dictionary<values={self.value}, indices={self.index}, ordered={self.ordered}>"


@dataclass(frozen=True)
class Field:
    """A named, typed column (or child of a nested type). Duplicate names are allowed.
    `metadata` is the field's custom metadata (extension types keep theirs here)."""

    name: str
    type: DataType
    nullable: bool = True
    metadata: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.name}: {self.type}{'' if self.nullable else ' not null'}"


@dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_pyarrow(self) -> Any:
        """The schema as a pyarrow Schema (needs pyarrow)."""
        from streamdb.arrow.interop import schema_to_pyarrow

        return schema_to_pyarrow(self)

    def __arrow_c_schema__(self) -> object:
        return self.to_pyarrow().__arrow_c_schema__()

    def field(self, name_or_index: str | int) -> Field:
        if isinstance(name_or_index, int):
            return self.fields[name_or_index]
        for f in self.fields:
            if f.name == name_or_index:
                return f
        raise KeyError(name_or_index)

    def __len__(self) -> int:
        return len(self.fields)

    def __str__(self) -> str:
        return "\n".join(str(f) for f in self.fields)


# Shorthands, as in pyarrow
def int8() -> IntType: return IntType(8)
def int16() -> IntType: return IntType(16)
def int32() -> IntType: return IntType(32)
def int64() -> IntType: return IntType(64)
def uint8() -> IntType: return IntType(8, False)
def uint16() -> IntType: return IntType(16, False)
def uint32() -> IntType: return IntType(32, False)
def uint64() -> IntType: return IntType(64, False)
def float16() -> FloatType: return FloatType(HALF)
def float32() -> FloatType: return FloatType(SINGLE)
def float64() -> FloatType: return FloatType(DOUBLE)
def utf8() -> Utf8Type: return Utf8Type()
def binary() -> BinaryType: return BinaryType()
def bool_() -> BoolType: return BoolType()
def null() -> NullType: return NullType()


def list_(value: DataType | Field) -> ListType:
    return ListType(value if isinstance(value, Field) else Field("item", value))


def struct_(fields: list[Field] | tuple[Field, ...]) -> StructType:
    return StructType(tuple(fields))


def map_(key: DataType, item: DataType, keys_sorted: bool = False) -> MapType:
    entries = StructType((Field("key", key, False), Field("value", item)))
    return MapType(Field("entries", entries, False), keys_sorted)


def dictionary(index: IntType, value: DataType, ordered: bool = False) -> DictionaryType:
    return DictionaryType(index, value, ordered)


_NUMPY_KINDS: dict[str, DataType] = {
    "b1": BoolType(), "i1": IntType(8), "i2": IntType(16), "i4": IntType(32), "i8": IntType(64),
    "u1": IntType(8, False), "u2": IntType(16, False), "u4": IntType(32, False),
    "u8": IntType(64, False), "f2": FloatType(HALF), "f4": FloatType(SINGLE),
    "f8": FloatType(DOUBLE),
}


def from_numpy_dtype(dtype: np.dtype[np.generic]) -> DataType:
    """The Arrow type of a numpy dtype: numbers, bool, datetime64/timedelta64 (s to ns)."""
    key = f"{dtype.kind}{dtype.itemsize}"
    if key in _NUMPY_KINDS:
        return _NUMPY_KINDS[key]
    if dtype.kind in "mM":
        unit = np.datetime_data(dtype)[0]  # type: ignore[arg-type]
        if unit in UNIT_NAMES:
            index = UNIT_NAMES.index(unit)
            return TimestampType(index) if dtype.kind == "M" else DurationType(index)
    raise ArrowError(f"no Arrow type for numpy dtype {dtype}")
