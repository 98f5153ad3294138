"""Arrow on numpy: the columnar model and the Arrow IPC stream and file formats.

```python
from streamdb import arrow

table = arrow.Table.from_pydict({"x": np.arange(5), "name": ["a", "b", None, "d", "e"]})
arrow.write_ipc("t.arrow", table)                 # the IPC file format (64-byte aligned)
back = arrow.read_ipc("t.arrow")                  # memory-mapped: columns are views
back.column("x").to_numpy()
```

pyarrow is optional: `to_pyarrow()`, `Table.from_pyarrow(t)` (both without a copy),
`Table.from_arrow(obj)` (Polars, DuckDB, ...) and the Arrow PyCapsule interface
(`__arrow_c_stream__`, `__arrow_c_array__`, `__arrow_c_schema__`) use it when installed.
"""

from streamdb.arrow.array import Array, array, from_numpy
from streamdb.arrow.metadata import Limits
from streamdb.arrow.reader import FileReader, StreamReader, read_ipc
from streamdb.arrow.table import ChunkedArray, RecordBatch, Table
from streamdb.arrow.types import (
    BinaryType,
    BoolType,
    DataType,
    DateType,
    DecimalType,
    DictionaryType,
    DurationType,
    Field,
    FixedSizeBinaryType,
    FixedSizeListType,
    FloatType,
    IntervalType,
    IntType,
    LargeBinaryType,
    LargeListType,
    LargeUtf8Type,
    ListType,
    MapType,
    NullType,
    Schema,
    StructType,
    TimestampType,
    TimeType,
    Utf8Type,
    binary,
    bool_,
    dictionary,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    list_,
    map_,
    null,
    struct_,
    uint8,
    uint16,
    uint32,
    uint64,
    utf8,
)
from streamdb.arrow.writer import FileWriter, StreamWriter, write_ipc

__all__ = [
    "Array", "BinaryType", "BoolType", "ChunkedArray", "DataType", "DateType", "DecimalType",
    "DictionaryType", "DurationType", "Field", "FileReader", "FileWriter",
    "FixedSizeBinaryType", "FixedSizeListType", "FloatType", "IntType", "IntervalType",
    "LargeBinaryType", "LargeListType", "LargeUtf8Type", "Limits", "ListType", "MapType",
    "NullType", "RecordBatch", "Schema", "StreamReader", "StreamWriter", "StructType",
    "Table", "TimeType", "TimestampType", "Utf8Type", "array", "binary", "bool_",
    "dictionary", "float16", "float32", "float64", "from_numpy", "int8", "int16", "int32",
    "int64", "list_", "map_", "null", "read_ipc", "struct_", "uint8", "uint16", "uint32",
    "uint64", "utf8", "write_ipc",
]
