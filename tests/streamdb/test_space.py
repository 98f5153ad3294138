"""Space is reused without the user calling anything (docs/design.md, D1; docs/format/db.md,
"Space"): pages a superseded version used are reused once its change is durable and no
reader sees them, free pages at the end of the file go back to the file system at each
checkpoint, and checkpoints do not grow the file by themselves. Reuse never costs
correctness: a crash after pages were reused recovers every committed document, with no
page owned twice.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

import streamdb
from streamdb import Config
from wal.memvfs import MemoryVFS

MiB = 1 << 20


def size(path: Path) -> int:
    return os.path.getsize(path)


@pytest.mark.parametrize("durability", ["full", "normal", "off"])
def test_overwrites_reuse_space(tmp_path: Path, durability: str) -> None:
    """The reported loop (shorter): one path overwritten with 1 MiB documents stays under
    3x its live data (two kept versions), whatever the durability."""
    path = tmp_path / "g.db"
    rng = random.Random(4)
    with streamdb.open(path, Config(durability=durability)) as db:  # type: ignore[arg-type]
        for _ in range(80):
            db.write_document("/same", rng.randbytes(MiB))
            assert size(path) <= 3 * 2 * MiB + 64 * 1024
        assert db.versions("/same") == [79, 80]
    assert size(path) <= 3 * 2 * MiB


def test_a_snapshot_keeps_its_pages_then_lets_them_go(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rng = random.Random(5)
    with streamdb.open(path) as db:
        db.write_document("/same", first := rng.randbytes(MiB))
        snap = db.snapshot()
        for _ in range(10):
            db.write_document("/same", rng.randbytes(MiB))
        assert snap.get("/same") == first  # its pages were not reused
        assert size(path) >= 10 * MiB
        snap.close()
        grown = size(path)
        for _ in range(20):
            db.write_document("/same", rng.randbytes(MiB))
        assert size(path) <= grown  # reused now


def test_a_compressed_document_leaves_no_sparse_tail(tmp_path: Path) -> None:
    """8 MiB that compress to about 2.6 MiB: space is reserved for 8 MiB while writing, and
    what was not used goes back to the file system at the checkpoint."""
    path = tmp_path / "c.db"
    data = np.random.default_rng(1).integers(0, 4, 8 * MiB, dtype=np.uint8).tobytes()
    with streamdb.open(path, Config(compression="zstd")) as db:
        db.write_document("/c", data)
        stored = db.info("/c").stored_size
    assert stored < 3 * MiB
    assert size(path) <= stored + 256 * 1024
    assert os.stat(path).st_blocks * 512 <= stored + 256 * 1024
    with streamdb.open(path, Config(compression="zstd")) as db:
        assert db.get("/c") == data and db.verify().ok


def test_checkpoints_do_not_grow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    sizes = []
    with streamdb.open(path) as db:
        for i in range(150):
            db.write_document(f"/k{i % 5}", bytes(1000))
            db.checkpoint()
            sizes.append(size(path))
    assert max(sizes[50:]) == max(sizes[:50]), sizes


def test_the_file_shrinks_when_its_end_is_freed(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path) as db:
        db.write_document("/small", b"x")
        db.write_document("/big", bytes(20 * MiB))
        db.checkpoint()
        assert size(path) > 20 * MiB
        db.delete("/big")
        db.checkpoint()  # the delete is durable: its pages are free, at the end
        db.checkpoint()
        assert size(path) < MiB
        assert db.get("/small") == b"x"
    with streamdb.open(path) as db:
        assert db.verify().ok and list(db) == ["/small"]


def test_a_reader_process_view_survives_the_shrink(tmp_path: Path) -> None:
    """A read-only open mapped the longer file; after the writer cuts it, the reader's next
    refresh maps no further than the end, and its data reads back."""
    path = tmp_path / "r.db"
    with streamdb.open(path) as db:
        db.write_document("/keep", bytes(range(256)) * 4096)
        db.write_document("/big", bytes(8 * MiB))
        reader = streamdb.open(path, readonly=True)
        assert reader.get("/big") == bytes(8 * MiB)
        db.delete("/big")
        db.checkpoint()
        db.checkpoint()
        reader.refresh()
        assert not reader.exists("/big")
        assert reader.get("/keep") == bytes(range(256)) * 4096
        reader.close()


def test_a_crash_after_reuse_recovers_with_no_page_owned_twice() -> None:
    """Pages freed by a durable change are reused before any checkpoint; a crash then
    replays the change that freed them and the commit that reused them: the commit owns
    them, nothing is pending over them, and every document reads back."""
    rng = random.Random(6)
    mem = MemoryVFS()
    config = Config(page_size=4096)
    db = streamdb.open("/d/x.db", config, vfs=mem)
    db.write_document("/a", rng.randbytes(300_000))
    db.checkpoint()
    expected = {}
    for i in range(6):  # versions of /a dropped (keep 2), their pages reused by /b...
        expected["/a"] = rng.randbytes(300_000)
        db.write_document("/a", expected["/a"])
        expected[f"/b{i}"] = rng.randbytes(200_000)
        db.write_document(f"/b{i}", expected[f"/b{i}"])
    pages = db._engine._space.file_pages
    assert pages < (300_000 * 8 + 200_000 * 6) // 4096  # some pages were reused
    crashed = mem.crash(keep="none")  # every commit was fsynced (durability "full")
    db._engine.crash()
    with streamdb.open("/d/x.db", config, vfs=crashed) as again:
        assert {p: again.get(p) for p in again} == expected
        owned = {(s, c) for d in again._engine.catalog.iter_docs() for v in d.versions
                 for s, c in v.extents}
        for start, count, _ in again._engine._space.pending:
            for s, c in owned:
                assert start + count <= s or s + c <= start, "a pending page is owned"
        again._engine._space._check()
        report = again.verify()
        assert report.ok, report.problems
        for i in range(6):  # allocate everything again: nothing owned is handed out
            again.write_document(f"/c{i}", rng.randbytes(300_000))
        assert again.verify().ok
        assert all(again.get(p) == data for p, data in expected.items())
