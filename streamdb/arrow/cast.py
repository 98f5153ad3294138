"""Lossless changes of representation between schemas, and what makes two schemas differ.

Some Arrow types are one logical type in several physical forms: utf8 and large_utf8 (and
the string views other libraries hand out, which `Table.from_arrow` reads as large_utf8),
binary and large_binary (likewise binary views), list and large_list. They differ only in
the width of their offsets (int32 or int64). `cast_columns` moves columns from one such
form to another, also inside lists, large lists, fixed-size lists, structs, maps and the
values of dictionaries; everything else (names, order, nullability, field metadata, and
every other type) must be equal. Numbers are never cast.

Costs: a column whose type is already the target's is kept as it is (no copy); a converted
variable-size or list column gets new offsets, computed in numpy in one pass (O(rows)),
while its data buffer or child is shared (sliced, not copied). Validity bitmaps are shared
when the array starts on a byte boundary, else repacked (O(rows)).

`differences` says how two schemas differ, field by field, for error messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from streamdb.arrow import types as t
from streamdb.arrow.array import Array, aligned, pack_validity, unpack_bits
from streamdb.errors import ArrowError

INT32_MAX = 2**31 - 1
_MAX_REASONS = 8  # differences named in one message; the rest are counted


def _family(ty: t.DataType) -> str | None:
    """The group of types that are forms of one logical type (None: only equal types
    match). The checks go from subclass to base class: LargeUtf8Type is a Utf8Type, and
    MapType and LargeListType are ListTypes."""
    if isinstance(ty, t.Utf8Type):
        return "utf8"
    if isinstance(ty, t.BinaryType):
        return "binary"
    if isinstance(ty, t.MapType):
        return "map"
    if isinstance(ty, t.ListType):
        return "list"
    if isinstance(ty, t.FixedSizeListType):
        return "fixed_size_list"
    if isinstance(ty, t.StructType):
        return "struct"
    if isinstance(ty, t.DictionaryType):
        return "dictionary"
    return None


def _shown(a: t.DataType, b: t.DataType) -> tuple[str, str]:
    """How to print two unequal types: their names, or more where the names agree."""
    if str(a) != str(b):
        return str(a), str(b)
    if isinstance(a, t.MapType) and isinstance(b, t.MapType):
        return (f"{a} with keys_sorted={a.keys_sorted}",
                f"{b} with keys_sorted={b.keys_sorted}")
    return repr(a), repr(b)


class _Diff:
    """Collects the differences of a target (`ours`) from a source (`theirs`); with
    `exact`, forms of one type (utf8 and large_utf8, ...) count as different too."""

    def __init__(self, ours: str, theirs: str, exact: bool) -> None:
        self.ours, self.theirs, self.exact = ours, theirs, exact
        self.reasons: list[str] = []

    def fields(self, target: tuple[t.Field, ...], source: tuple[t.Field, ...],
               parent: str | None) -> None:
        names, other = [f.name for f in target], [f.name for f in source]
        if names == other:
            for a, b in zip(target, source, strict=True):
                self.field(a, b, a.name if parent is None else f"{parent}.{a.name}")
            return
        of = "" if parent is None else f" of {parent!r}"
        if Counter(names) == Counter(other):
            self.reasons.append(f"the fields{of} are in the order {_names(names)} in "
                                f"{self.ours}, {_names(other)} in {self.theirs}")
        elif len(names) == len(other):
            for name, renamed in zip(names, other, strict=True):
                if name != renamed:
                    where = name if parent is None else f"{parent}.{name}"
                    self.reasons.append(f"field {where!r} of {self.ours} is named "
                                        f"{renamed!r} in {self.theirs}")
        else:
            for name in (Counter(names) - Counter(other)).elements():
                where = name if parent is None else f"{parent}.{name}"
                self.reasons.append(f"field {where!r} of {self.ours} is missing from "
                                    f"{self.theirs}")
            for name in (Counter(other) - Counter(names)).elements():
                where = name if parent is None else f"{parent}.{name}"
                self.reasons.append(f"field {where!r} of {self.theirs} is not in {self.ours}")

    def field(self, a: t.Field, b: t.Field, where: str) -> None:
        if a.nullable != b.nullable:
            self.reasons.append(f"field {where!r} is {_nullable(a)} in {self.ours}, "
                                f"{_nullable(b)} in {self.theirs}")
        if a.metadata != b.metadata:
            self.reasons.append(f"field {where!r} has metadata {dict(a.metadata)} in "
                                f"{self.ours}, {dict(b.metadata)} in {self.theirs}")
        self.type(a.type, b.type, where)

    def type(self, a: t.DataType, b: t.DataType, where: str, values: bool = False) -> None:
        """`values`: `a` and `b` are the value types of dictionary field `where`."""
        if a == b:
            return
        family = _family(a)
        if (family is None or family != _family(b) or not self._same_frame(a, b)
                or (self.exact and type(a) is not type(b))):
            shown = _shown(a, b)
            what = (f"the values of dictionary field {where!r} are" if values
                    else f"field {where!r} is")
            self.reasons.append(f"{what} {shown[0]} in {self.ours}, {shown[1]} in "
                                f"{self.theirs}")
        elif isinstance(a, t.DictionaryType):
            assert isinstance(b, t.DictionaryType)
            self.type(a.value, b.value, where, values=True)
        elif isinstance(a, t.StructType):
            self.fields(a.fields, b.children, where)
        else:  # a list, large list, map or fixed-size list: its one child
            self.fields(a.children, b.children, where)

    @staticmethod
    def _same_frame(a: t.DataType, b: t.DataType) -> bool:
        """Whether two types of one family agree in what is not their children or their
        offsets' width: a dictionary's index type and ordering, a fixed-size list's size,
        a map's keys_sorted."""
        if isinstance(a, t.DictionaryType) and isinstance(b, t.DictionaryType):
            return a.index == b.index and a.ordered == b.ordered
        if isinstance(a, t.FixedSizeListType) and isinstance(b, t.FixedSizeListType):
            return a.size == b.size
        if isinstance(a, t.MapType) and isinstance(b, t.MapType):
            return a.keys_sorted == b.keys_sorted
        return True


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _nullable(f: t.Field) -> str:
    return "nullable" if f.nullable else "not nullable"


def differences(target: t.Schema, source: t.Schema, *, ours: str = "the schema",
                theirs: str = "the batch", exact: bool = False) -> list[str]:
    """How `source`'s fields differ from `target`'s in more than representation (see the
    module's docstring), one sentence each, naming the field by its path of names ('s.a'
    for child 'a' of struct 's', 'l.item' for a list's values): a field missing, extra,
    renamed or out of order; another type, nullability or field metadata. `ours` and
    `theirs` name the two schemas in the sentences. Empty when `cast_columns` can turn
    `source` into `target`; with `exact`, forms of one type differ too (empty only when
    the fields are equal). Schema-level metadata is not compared. O(fields, nested ones
    included)."""
    diff = _Diff(ours, theirs, exact)
    diff.fields(target.fields, source.fields, None)
    return diff.reasons


def explain(reasons: list[str]) -> str:
    """`reasons` joined into one message: the first few, then how many more."""
    shown = "; ".join(reasons[:_MAX_REASONS])
    more = len(reasons) - _MAX_REASONS
    return shown + (f"; and {more} more" if more > 0 else "")


def cast_columns(source: t.Schema, columns: tuple[Array, ...], target: t.Schema
                 ) -> list[Array]:
    """`columns` (of `source`) in the forms of `target`'s fields; the ones already there
    as they are. O(rows of the converted columns), see the module's docstring. Raises
    ArrowError naming the field when the schemas differ in more than representation
    (`differences`), or when a column's values do not fit the target's narrower offsets
    (past 2**31 - 1 bytes or values in one array); nothing is converted then."""
    reasons = differences(target, source)
    if reasons:
        raise ArrowError(f"cannot cast to the schema: {explain(reasons)}")
    return [cast_array(c, f.type, f.name) for c, f in zip(columns, target.fields,
                                                          strict=True)]


def cast_array(a: Array, ty: t.DataType, where: str) -> Array:
    """Array `a` as type `ty`, a form of the same logical type (`differences` says it is:
    this checks only what it needs). `where` names the field in errors. O(length) for
    each level whose offsets change, O(1) where the type is already `ty`. Raises
    ArrowError when the values do not fit `ty`'s int32 offsets."""
    if a.type == ty:
        return a
    if isinstance(ty, t.DictionaryType):
        assert a.dictionary is not None
        return Array(ty, a.length, a.buffers, offset=a.offset, null_count=a.null_count,
                     dictionary=cast_array(a.dictionary, ty.value, where))
    layout = ty.layout
    validity = _validity(a)
    if layout == "struct":
        assert isinstance(ty, t.StructType)
        children = [cast_array(c.slice(a.offset, a.length), f.type, f"{where}.{f.name}")
                    for c, f in zip(a.children, ty.fields, strict=True)]
        return Array(ty, a.length, [validity], children, null_count=a.null_count)
    if layout == "fixed_list":
        assert isinstance(ty, t.FixedSizeListType)
        k = ty.size
        child = cast_array(a.children[0].slice(a.offset * k, a.length * k), ty.value.type,
                           f"{where}.{ty.value.name}")
        return Array(ty, a.length, [validity], [child], null_count=a.null_count)
    if layout not in ("var", "large_var", "list", "large_list"):
        raise ArrowError(f"field {where!r}: no lossless cast of {a.type} to {ty}")
    wide = layout in ("large_var", "large_list")
    offsets = a.value_offsets() if a.length else np.zeros(1, np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    if not wide and end - start > INT32_MAX:
        unit = "bytes" if layout == "var" else "values"
        raise ArrowError(f"field {where!r}: its {a.type} values span {end - start} {unit}, "
                         f"past the {INT32_MAX} that {ty}'s int32 offsets reach")
    width = 8 if wide else 4
    buffer = aligned((a.length + 1) * width)
    np.subtract(offsets, start, out=buffer.view("<i8" if wide else "<i4"), casting="unsafe")
    if layout in ("var", "large_var"):
        data = a.buffers[2]
        values = data[start:end] if data is not None else np.zeros(0, np.uint8)
        return Array(ty, a.length, [validity, buffer, values], null_count=a.null_count)
    assert isinstance(ty, t.ListType)
    child = cast_array(a.children[0].slice(start, end - start), ty.value.type,
                       f"{where}.{ty.value.name}")
    return Array(ty, a.length, [validity, buffer], [child], null_count=a.null_count)


def _validity(a: Array) -> np.ndarray[Any, Any] | None:
    """`a`'s validity bitmap from bit 0 (for a copy of `a` at offset 0): None without
    nulls, a view when `a` starts on a byte boundary, else repacked. O(1) or O(length)."""
    v = a.validity
    if v is None or a.null_count == 0:
        return None
    if a.offset % 8 == 0:
        return v[a.offset // 8 : (a.offset + a.length + 7) // 8]
    return pack_validity(unpack_bits(v, a.offset, a.length))
