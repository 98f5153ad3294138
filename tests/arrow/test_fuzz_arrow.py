"""Replays the Arrow IPC fuzzer (fuzz/fuzz_arrow.py) in the test suite, and the bugs it found.

Every file of fuzz/corpus/arrow/ and a fixed, seeded run of 300 inputs (the corpus, 10
generated tables, then mutations) go through the harness target: `read_ipc` of bytes, a
misaligned view, `io.BytesIO` and `io.BufferedReader`; `StreamReader` batch by batch over
bytes, a file object and short reads; `FileReader` in order and in reverse; with
`validate=True` and `validate=False`; then, for what reads, `to_pydict`/`to_pylist`/
`to_numpy`, `write_ipc` as a stream and a file and a read of that, and `to_pyarrow`.
Accepted: a table or a `StreamDbError`; the harness raises on anything else (another
exception, readers that disagree, a table that does not read back as written, a step tracing
more than 64 MiB + 50 bytes per input byte, more than 5 s for an input).

The bugs below were found by the fuzzer or while writing it; each test is an expected
failure (strict: it fails once the bug is fixed, to be turned into a plain test).
"""

from __future__ import annotations

import contextlib
import io
import struct
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamdb import ArrowFormatError, StreamDbError, arrow
from streamdb.arrow import types as t
from streamdb.arrow.array import Array, as_bytes

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import arrow_inputs as inputs  # noqa: E402
import fuzz_arrow as harness  # noqa: E402

CORPUS = sorted(harness.CORPUS_DIR.glob("*.bin"))
SEED = 20261123
INPUTS = 300


def test_corpus_is_there() -> None:
    assert len(CORPUS) >= 100, f"regenerate it: python {FUZZ_DIR / 'make_arrow_corpus.py'}"
    assert len(CORPUS) <= 120
    assert sum(p.stat().st_size for p in CORPUS) < 300_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_corpus_file(path: Path) -> None:
    harness.run_one(path.read_bytes())  # raises on a bug


def test_seeded_fuzz_run() -> None:
    stats = harness.fuzz(SEED, max_inputs=INPUTS, generated_seeds=10, crash_dir=None)
    assert stats.executed == INPUTS
    bugs = [f"{bug.signature} ({stats.hits[bug.signature]} inputs): {len(bug.data)}-byte "
            f"input {bug.data[:40].hex()}...\n{bug.error}" for bug in stats.bugs]
    hint = (f"\nReproduce and save minimized inputs: python fuzz/fuzz_arrow.py "
            f"--max-inputs {INPUTS} --seed {SEED}\n")
    assert not bugs, hint + "\n\n".join(bugs)
    endings = {label.split(": ")[1].split(",")[0] for label in stats.outcomes}
    assert {"ok", "ArrowFormatError", "ArrowLimitError", "UnsupportedError"} <= endings


def test_harness_compares_nan_and_nat() -> None:
    nan, nat = float("nan"), np.datetime64("NaT", "ns")
    assert harness.same({"a": [nan, 1.0, [nat]]}, {"a": [nan, 1.0, [nat]]})
    assert not harness.same([nan], [1.0])
    assert not harness.same([1], [True])
    assert not harness.same([np.datetime64(5, "ns")], [nat])


# -- bugs ------------------------------------------------------------------------------------


def stream(ty: t.DataType, values: np.ndarray[Any, Any]) -> bytes:
    """A one-column stream of raw fixed-width `values` of type `ty` (no nulls)."""
    schema = t.Schema((t.Field("v", ty),))
    column = Array(ty, len(values), [None, as_bytes(values)])
    sink = io.BytesIO()
    arrow.write_ipc(sink, arrow.RecordBatch(schema, [column]), format="stream")
    return sink.getvalue()


def converts_or_refuses(data: bytes) -> list[Any] | None:
    """The values of a column that reads, or None when converting it is refused with a
    StreamDbError (anything else propagates)."""
    table = arrow.read_ipc(data)
    try:
        return table.column(0).to_pylist()
    except StreamDbError:
        return None


@pytest.mark.parametrize("buffer_size", [1, 5])
def test_a_file_is_detected_through_a_small_buffered_reader(buffer_size: int) -> None:
    """`peek` returns what one raw read gave (at most the buffer): when it shows fewer
    than the 6 bytes of the file magic, `read_ipc(f)` reads the whole input and decides
    then (a fuzzer finding: the file was read as a stream)."""
    table = arrow.Table.from_pydict({"x": [1, 2, 3]})
    sink = io.BytesIO()
    arrow.write_ipc(sink, table, format="file")
    data = sink.getvalue()
    got = arrow.read_ipc(io.BufferedReader(io.BytesIO(data), buffer_size))
    assert got.to_pydict() == {"x": [1, 2, 3]}


OUT_OF_RANGE = [
    (t.DateType(t.DAY), np.array([2**31 - 1], "<i4")),  # OverflowError in timedelta
    (t.DateType(t.MILLI), np.array([2**62], "<i8")),  # OverflowError: int too large
    (t.TimestampType(t.MICRO, "UTC"), np.array([2**62], "<i8")),  # OverflowError: date value
    (t.TimestampType(t.MILLI), np.array([10**15], "<i8")),  # OverflowError (year 33658)
    (t.TimeType(t.MICRO), np.array([-(2**62)], "<i8")),  # OverflowError
]


@pytest.mark.parametrize(("ty", "values"), OUT_OF_RANGE, ids=str)
def test_temporal_values_out_of_pythons_range(ty: t.DataType, values: np.ndarray[Any, Any]
                                              ) -> None:
    """Valid Arrow values (validate=True reads them) past what datetime/date/timedelta
    hold: converting them is an ArrowError (it was OverflowError)."""
    converts_or_refuses(stream(ty, values))


@pytest.mark.parametrize(("ty", "ticks"), [
    (t.TimestampType(t.SECOND), 2**62 + 1), (t.DurationType(t.SECOND), 2**62 + 1),
    (t.TimestampType(t.MILLI), 2**61 + 1), (t.DurationType(t.MILLI), 2**61 + 1)], ids=str)
def test_ticks_past_int64_microseconds_are_not_wrapped(ty: t.DataType, ticks: int) -> None:
    """Ticks are scaled to microseconds in Python integers: in int64 they wrapped silently
    (2**62 + 1 s read as 1970-01-01 00:00:01). Neither datetime nor timedelta holds the
    true value, so the only right answer is an error."""
    got = converts_or_refuses(stream(ty, np.array([ticks], "<i8")))
    assert got is None, f"a wrapped value: {got}"


@pytest.mark.parametrize("scale", [-(2**31), 2**31 - 1])
def test_decimal_with_a_huge_scale(scale: int) -> None:
    """The Decimal metadata's scale is any int32; a scale past what the conversion
    context holds is an ArrowError (it was decimal.InvalidOperation)."""
    ty = t.DecimalType(10, scale)
    converts_or_refuses(stream(ty, np.frombuffer((5).to_bytes(16, "little"), "V16")))


@pytest.mark.parametrize("tz", ["+ab:cd", "+05:3x", "+24:00", "-99:00"])
def test_timestamp_with_a_malformed_offset_zone(tz: str) -> None:
    """A zone of the shape [+-]hh:mm out of range or not numeric is an ArrowError, as an
    unknown zone name is (it was ValueError)."""
    converts_or_refuses(stream(t.TimestampType(t.MILLI, tz), np.array([0], "<i8")))


def delta_stream(claimed: int) -> bytes:
    """A stream of a dictionary<int32, struct<>> column whose two dictionary batches (the
    first, then a delta) claim `claimed` values each: a struct without children has no
    buffers, so the claim costs no bytes."""
    value = t.StructType(())
    ty = t.DictionaryType(t.IntType(32), value)
    schema = t.Schema((t.Field("d", ty),))
    batches = [arrow.RecordBatch(schema, [Array(ty, 1, [None, as_bytes(np.array([0], "<i4"))],
                                                dictionary=Array(value, n, [None]))])
               for n in (2, 3)]
    sink = io.BytesIO()
    arrow.write_ipc(sink, batches, format="stream", schema=schema)
    data = bytearray(sink.getvalue())
    messages, _ = inputs.parse(bytes(data))
    for m in (messages[1], messages[3]):  # the dictionary batches
        fields = [at for at, width in m.ints if width == 8]
        # bodyLength, id, the batch's length, then the field node (length, null count)
        for at in (fields[2], fields[3]):
            struct.pack_into("<q", data, at, claimed)
    return bytes(data)


def test_delta_stream_reads() -> None:
    table = arrow.read_ipc(delta_stream(1000))
    assert [len(b.columns[0].dictionary or []) for b in table.batches] == [1000, 2000]


def test_a_delta_dictionary_of_claimed_empty_structs_stays_bounded() -> None:
    """Reading (not converting) a 1.2 KB stream whose delta dictionary batches claim 100,000
    empty structs each: `concat` joins nested arrays buffer by buffer, so nothing is built
    per claimed value (it built 200,000 dicts through Python values; 2**32 - 1, the largest
    dictionary allowed, would have taken hundreds of GB)."""
    data = delta_stream(100_000)
    tracemalloc.start()
    try:
        with contextlib.suppress(StreamDbError):  # refusing it is fine too
            arrow.read_ipc(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"traced peak {peak:,} bytes for a {len(data)}-byte input"


@pytest.mark.parametrize("nullable", ["entries", "key"])
def test_a_map_with_nullable_entries_or_keys_is_refused(nullable: str) -> None:
    """A fuzzer finding: such a map read fine, then pyarrow refused what we wrote back. The
    format forbids it ("Neither the entries field nor the key field may be nullable")."""
    key = t.Field("key", t.Utf8Type(), nullable == "key")
    entries = t.Field("entries", t.StructType((key, t.Field("value", t.IntType(64)))),
                      nullable == "entries")
    ty = t.MapType(entries)
    table = arrow.Table.from_pydict({"m": arrow.array([[("a", 1)], []], ty)})
    sink = io.BytesIO()
    arrow.write_ipc(sink, table, format="stream")
    with pytest.raises(ArrowFormatError, match="nullable"):
        arrow.read_ipc(sink.getvalue())
