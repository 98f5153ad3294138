"""The storage invariants of docs/design.md that the other tests do not already pin down."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import streamdb
from streamdb import Config
from streamdb.reads import version_at
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS


def test_open_and_first_get_read_a_few_pages_not_the_index() -> None:
    """D5 (docs/design.md, "The path index"): the index is read lazily; opening a
    30,000-path database and getting one document reads a handful of pages, however many
    paths there are."""
    mem = MemoryVFS()
    with streamdb.open("/d/t.db", Config(page_size=4096), vfs=mem) as db:
        for start in range(0, 30_000, 5000):
            db.write_documents((f"/p/{i:06d}", b"v%d" % i) for i in range(start, start + 5000))
    counting = FaultyVFS(mem, only=frozenset({"pread"}))
    with streamdb.open("/d/t.db", Config(page_size=4096), vfs=counting) as db:
        assert db.get("/p/012345") == b"v12345"
        reads = counting.calls
        assert len(db) == 30_000
    # Headers, a header per log file (segment files start at 1 MiB and grow, so a log of a
    # few MiB spans several), the log's records, one root-to-leaf path per tree.
    logs = len([n for n in mem.listdir("/d") if "-wal" in n])
    assert reads <= 10 + logs, (reads, logs)


def test_large_documents_are_contiguous_and_64_byte_aligned(tmp_path: Path) -> None:
    """Invariant 4: a large document is one extent, and its view starts 64-byte aligned,
    so numpy reads it in place."""
    with streamdb.open(tmp_path / "t.db") as db:
        data = np.arange(500_000, dtype=np.float64)
        db.write_document("/arr", data.tobytes())
        assert len(version_at(db._engine._pins.current, "/arr", None).extents) == 1
        view = db.get_view("/arr")
        arr = np.frombuffer(view, dtype=np.float64)
        assert arr.ctypes.data % 64 == 0
        assert not arr.flags.owndata and np.array_equal(arr, data)
        del arr, view


def test_streaming_a_large_document_uses_chunk_sized_memory(tmp_path: Path) -> None:
    """Invariant 6: get_stream holds O(chunk) memory, writing from an iterable likewise."""
    size = 48 << 20
    with streamdb.open(tmp_path / "t.db") as db:
        tracemalloc.start()
        db.write_document("/big", (bytes(1 << 20) for _ in range(size >> 20)))
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        total = sum(len(c) for c in db.get_stream("/big"))
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert total == size
    assert write_peak < 8 << 20 and read_peak < 8 << 20, (write_peak, read_peak)


@pytest.mark.parametrize("mib", [16, pytest.param(256, marks=pytest.mark.slow)])
def test_large_sizes_roundtrip(tmp_path: Path, mib: int) -> None:
    block = os.urandom(1 << 20)
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/big", (block for _ in range(mib)))
        assert db.info("/big").size == mib << 20
        for i, chunk in enumerate(db.get_stream("/big", chunk_size=1 << 20)):
            assert chunk == block, i
        assert db.get("/big", offset=(mib << 20) - 5) == block[-5:]
    with streamdb.open(tmp_path / "t.db") as db:
        assert db.get("/big", offset=1 << 20, length=10) == block[:10]
