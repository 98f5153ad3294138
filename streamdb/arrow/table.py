"""Record batches, chunked arrays and tables (a table is a schema and a list of batches:
Lightstream's SuperTable). Building and column access are O(columns); nothing is copied."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streamdb.arrow import types as t
from streamdb.arrow.array import Array, array
from streamdb.arrow.cast import cast_columns, differences, explain
from streamdb.errors import ArrowError, InvalidArgumentError

if TYPE_CHECKING:
    import pyarrow as pa


class RecordBatch:
    """Equal-length columns under a schema."""

    __slots__ = ("columns", "num_rows", "schema")

    def __init__(self, schema: t.Schema, columns: Sequence[Array],
                 num_rows: int | None = None) -> None:
        if len(columns) != len(schema.fields):
            raise ArrowError(f"{len(columns)} columns for {len(schema.fields)} fields")
        rows = num_rows if num_rows is not None else (len(columns[0]) if columns else 0)
        for f, c in zip(schema.fields, columns, strict=True):
            if len(c) != rows:
                raise ArrowError(f"column {f.name!r} has {len(c)} rows, not {rows}")
            if c.type != f.type:
                raise ArrowError(f"column {f.name!r} is {c.type}, its field says {f.type}")
        self.schema = schema
        self.columns = tuple(columns)
        self.num_rows = rows

    @classmethod
    def _trusted(cls, schema: t.Schema, columns: list[Array], num_rows: int) -> RecordBatch:
        """A batch whose columns are known to fit `schema` (the IPC reader's). O(1)."""
        batch = cls.__new__(cls)
        batch.schema, batch.columns, batch.num_rows = schema, tuple(columns), num_rows
        return batch

    @classmethod
    def from_pydict(cls, data: Mapping[str, Any], schema: t.Schema | None = None
                    ) -> RecordBatch:
        """Columns from lists or numpy arrays (or Arrays), by name: with a `schema`, one
        for each of its fields, found by the field's name (ArrowError if missing or
        extra)."""
        if schema is not None:
            names = schema.names
            if sorted(names) != sorted(data) or len(set(names)) != len(names):
                raise ArrowError(f"columns {list(data)} for the schema's {names}")
            return cls(schema, [data[f.name] if isinstance(data[f.name], Array)
                                else array(data[f.name], f.type) for f in schema.fields])
        columns = [v if isinstance(v, Array) else array(v) for v in data.values()]
        schema = t.Schema(tuple(t.Field(name, c.type) for name, c in
                                zip(data, columns, strict=True)))
        return cls(schema, columns)

    def column(self, key: str | int) -> Array:
        return self.columns[_index(self.schema, key)]

    def slice(self, offset: int = 0, length: int | None = None) -> RecordBatch:
        cols = [c.slice(offset, length) for c in self.columns]
        n = len(cols[0]) if cols else max(0, min(self.num_rows - offset, length or self.num_rows))
        return RecordBatch(self.schema, cols, n)

    def to_pydict(self) -> dict[str, list[Any]]:
        return {f.name: c.to_pylist() for f, c in zip(self.schema.fields, self.columns,
                                                      strict=True)}

    def cast(self, schema: t.Schema) -> RecordBatch:
        """This batch under `schema`, whose fields may differ from this batch's only in
        how the same values are stored: utf8 / large_utf8, binary / large_binary and list /
        large_list (the width of their offsets), also inside lists, fixed-size lists,
        structs, maps and dictionaries' values. Names, order, nullability, field metadata
        and every other type must be equal; numbers are never cast.

        The batch itself when the schemas are equal, the same columns under `schema` when
        only the schemas' metadata differs (O(fields)); otherwise the columns
        already in the target's form are kept (no copy), and converted ones get new
        offsets, computed in numpy in one pass (O(rows) each), over the same data buffers
        and children. Raises ArrowError naming the field: when the schemas differ in more
        than that (what differs: a field missing, extra, renamed or out of order, another
        type, nullability or metadata), or when values do not fit int32 offsets (more than
        2**31 - 1 bytes, or list items, in one column of the batch)."""
        if schema == self.schema:
            return self
        if schema.fields == self.schema.fields:  # only the schema's metadata differs
            return RecordBatch._trusted(schema, list(self.columns), self.num_rows)
        return RecordBatch._trusted(schema, cast_columns(self.schema, self.columns, schema),
                                    self.num_rows)

    def __len__(self) -> int:
        return self.num_rows

    def to_pyarrow(self) -> pa.RecordBatch:
        """The batch as a pyarrow RecordBatch over the same buffers (see Table.to_pyarrow)."""
        from streamdb.arrow.interop import batch_to_pyarrow

        return batch_to_pyarrow(self)

    def __arrow_c_array__(self, requested_schema: object = None) -> tuple[object, object]:
        schema, data = self.to_pyarrow().__arrow_c_array__(requested_schema)
        return schema, data

    def __arrow_c_schema__(self) -> object:
        return self.schema.__arrow_c_schema__()

    def __repr__(self) -> str:
        return f"<RecordBatch {self.num_rows} rows x {len(self.columns)} columns>"


class ChunkedArray:
    """One column of a table: an array per batch."""

    __slots__ = ("chunks", "type")

    def __init__(self, type: t.DataType, chunks: Sequence[Array]) -> None:
        self.type = type
        self.chunks = tuple(chunks)

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def null_count(self) -> int:
        return sum(c.null_count for c in self.chunks)

    def to_numpy(self, zero_copy_only: bool = False) -> np.ndarray[Any, Any]:
        """The column as one numpy array: zero-copy for one chunk that allows it,
        else concatenated (a copy)."""
        if len(self.chunks) == 1:
            return self.chunks[0].to_numpy(zero_copy_only)
        if zero_copy_only:
            raise ArrowError(f"a column of {len(self.chunks)} chunks needs a copy")
        parts = [c.to_numpy(False) for c in self.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, object)

    def to_pylist(self) -> list[Any]:
        return [v for c in self.chunks for v in c.to_pylist()]


class Table:
    """A schema and its record batches (chunks), possibly none."""

    __slots__ = ("batches", "schema")

    def __init__(self, schema: t.Schema, batches: Sequence[RecordBatch] = ()) -> None:
        for b in batches:
            if b.schema.fields != schema.fields:
                raise ArrowError("a batch's schema differs from the table's: " + explain(
                    differences(schema, b.schema, ours="the table", exact=True)))
        self.schema = schema
        self.batches = tuple(batches)

    @classmethod
    def from_batches(cls, batches: Iterable[RecordBatch], schema: t.Schema | None = None
                     ) -> Table:
        items = list(batches)
        if schema is None:
            if not items:
                raise InvalidArgumentError("no batches and no schema")
            schema = items[0].schema
        return cls(schema, items)

    @classmethod
    def from_pydict(cls, data: Mapping[str, Any], schema: t.Schema | None = None) -> Table:
        batch = RecordBatch.from_pydict(data, schema)
        return cls(batch.schema, [batch])

    @classmethod
    def from_pyarrow(cls, table: pa.Table | pa.RecordBatch) -> Table:
        """A table over the buffers of a pyarrow Table or RecordBatch (no copy; O(columns x
        batches)). Year-month and day-time intervals, which pyarrow cannot hand out as
        arrays, go through an IPC stream in memory (one copy). Needs pyarrow
        (UnsupportedError otherwise); UnsupportedError for types this library does not
        read (views, unions, ...)."""
        from streamdb.arrow.interop import from_pyarrow

        return from_pyarrow(table)

    @classmethod
    def from_arrow(cls, data: Any) -> Table:
        """A table of any Arrow PyCapsule producer (`__arrow_c_stream__`: a Polars
        DataFrame, a DuckDB relation, a pyarrow table, ...; or `__arrow_c_array__`: a
        batch or struct array), through pyarrow, without a copy; our own tables and batches
        as they are. String and binary views (which Polars hands out) are cast to
        large_utf8 and large_binary (a copy of those columns). Needs pyarrow
        (UnsupportedError otherwise); InvalidArgumentError for an object with neither
        interface."""
        from streamdb.arrow.interop import from_arrow

        return from_arrow(data)

    def cast(self, schema: t.Schema) -> Table:
        """This table under `schema`: each batch cast as `RecordBatch.cast` does (same
        rules, costs and errors); the table itself when the schemas are equal. A table
        without batches is checked against `schema` too. O(fields) plus the batches'
        costs."""
        if schema == self.schema:
            return self
        reasons = differences(schema, self.schema, ours="the schema", theirs="the table")
        if reasons:
            raise ArrowError(f"cannot cast the table to the schema: {explain(reasons)}")
        return Table(schema, [b.cast(schema) for b in self.batches])

    def to_pyarrow(self) -> pa.Table:
        """The table as a pyarrow Table over the same buffers (no copy; extension types and
        intervals pyarrow cannot construct go through an IPC stream in memory)."""
        from streamdb.arrow.interop import to_pyarrow

        return to_pyarrow(self)

    @property
    def num_rows(self) -> int:
        return sum(b.num_rows for b in self.batches)

    @property
    def num_columns(self) -> int:
        return len(self.schema.fields)

    @property
    def column_names(self) -> list[str]:
        return self.schema.names

    def column(self, key: str | int) -> ChunkedArray:
        i = _index(self.schema, key)
        return ChunkedArray(self.schema.fields[i].type, [b.columns[i] for b in self.batches])

    def to_pydict(self) -> dict[str, list[Any]]:
        return {f.name: self.column(i).to_pylist() for i, f in enumerate(self.schema.fields)}

    def __iter__(self) -> Iterator[RecordBatch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return (f"<Table {self.num_rows} rows x {self.num_columns} columns in "
                f"{len(self.batches)} batches>")

    def equals(self, other: Table) -> bool:
        return self.schema == other.schema and self.to_pydict() == other.to_pydict()

    # The Arrow PyCapsule interface: DuckDB, Polars and others take these directly.
    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self.to_pyarrow().__arrow_c_stream__(requested_schema)

    def __arrow_c_schema__(self) -> object:
        return self.schema.__arrow_c_schema__()


def _index(schema: t.Schema, key: str | int) -> int:
    if isinstance(key, int):
        if not -len(schema.fields) <= key < len(schema.fields):
            raise IndexError(key)
        return key % len(schema.fields)
    for i, f in enumerate(schema.fields):
        if f.name == key:
            return i
    raise KeyError(key)
