"""The document API of docs/design.md, section 2, on real files and on the in-memory file
layer."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamdb
from streamdb import Config
from streamdb.reads import version_at
from wal.memvfs import MemoryVFS

DB = "/data/app.db"


def mem_db(vfs: MemoryVFS | None = None, **config: object) -> streamdb.Database:
    return streamdb.open(DB, Config(**config), vfs=vfs or MemoryVFS())  # type: ignore[arg-type,unused-ignore]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[streamdb.Database]:
    with streamdb.open(tmp_path / "t.db") as handle:
        yield handle


def test_write_get_roundtrip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path) as db:
        doc_id = db.write_document("/a/b", b"hello")
        assert isinstance(doc_id, uuid.UUID)
        assert db.get("/a/b") == b"hello"
    assert sorted(os.listdir(tmp_path))[0] == "t.db"
    with streamdb.open(path) as db:
        assert db.get("/a/b") == b"hello"
        assert db.get_id_by_path("/a/b") == doc_id


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 3 * 8192 + 5, 64 << 10, (64 << 10) + 1,
                                  300_000, 2_000_000])
def test_sizes_roundtrip(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/doc", data)
        assert db.get("/doc") == data
        assert bytes(db.get_view("/doc")) == data
        assert b"".join(db.get_stream("/doc")) == data
    with streamdb.open(tmp_path / "t.db") as db:
        assert db.get("/doc") == data
        assert db.info("/doc").size == size


def test_sources_bytes_file_iterable(db: streamdb.Database, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    db.write_document("/bytes", bytearray(data))
    db.write_document("/file", io.BytesIO(data))
    db.write_document("/iter", (data[i : i + 7000] for i in range(0, len(data), 7000)))
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with src.open("rb") as f:
        db.write_document("/realfile", f)
    for p in ("/bytes", "/file", "/iter", "/realfile"):
        assert db.get(p) == data, p
    with pytest.raises(streamdb.InvalidArgumentError):
        db.write_document("/str", "text")
    assert "/str" not in db


def test_versions_aliases_and_ids(db: streamdb.Database) -> None:
    doc_id = db.write_document("/v", b"one")
    assert db.write_document("/v", b"two") == doc_id
    db.bind_to_path(doc_id, "/alias")
    assert db.get("/alias") == b"two"
    assert db.write_document("/v", b"three") == doc_id
    assert db.get("/alias") == b"three"  # aliases follow new versions
    assert db.versions("/v") == [2, 3]  # versions_to_keep = 2
    assert db.get("/v", version=2) == b"two"
    with pytest.raises(streamdb.NotFoundError):
        db.get("/v", version=1)
    assert sorted(db.list_paths(doc_id)) == ["/alias", "/v"]
    db.unbind_path("/alias")
    assert db.list_paths(doc_id) == ["/v"]
    db.delete("/v")
    with pytest.raises(streamdb.NotFoundError):
        db.list_paths(doc_id)


def test_delete_missing_is_keyerror(db: streamdb.Database) -> None:
    with pytest.raises(KeyError):
        db.delete("/nothing")
    with pytest.raises(streamdb.NotFoundError):
        db.get("/nothing")


def test_search_prefix_suffix_len_iter(db: streamdb.Database) -> None:
    for p in ["/s/a.txt", "/s/b.bin", "/s/c/d.txt", "/t/e.txt", "/s"]:
        db.write_document(p, p.encode())
    assert db.search("/s/") == ["/s/a.txt", "/s/b.bin", "/s/c/d.txt"]
    assert db.search_suffix(".txt") == ["/s/a.txt", "/s/c/d.txt", "/t/e.txt"]
    assert len(db) == 5
    assert list(db) == sorted(["/s/a.txt", "/s/b.bin", "/s/c/d.txt", "/t/e.txt", "/s"])
    assert "/s" in db and "/u" not in db and 5 not in db
    db.checkpoint()
    db.delete("/s/b.bin")
    db.write_document("/s/bb", b"x")
    assert db.search("/s/") == ["/s/a.txt", "/s/bb", "/s/c/d.txt"]
    assert db.search_suffix("b") == ["/s/bb"]


@pytest.mark.parametrize("bad", ["relative", "/nul\x00", "/" + "x" * 1024, "/\ud800", b"/bytes"])
def test_invalid_paths_write_nothing(db: streamdb.Database, bad: object) -> None:
    with pytest.raises(streamdb.InvalidPathError):
        db.write_document(bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        db.get(bad)  # type: ignore[arg-type]
    assert len(db) == 0


def test_max_document_size_keeps_the_previous_version(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db", Config(max_document_size=100_000)) as db:
        db.write_document("/d", b"old")
        for source in (bytes(100_001), (bytes(30_000) for _ in range(5))):
            with pytest.raises(streamdb.DocumentTooLargeError):
                db.write_document("/d", source)
            assert db.get("/d") == b"old"
        free_before = db.stats().free_pages
        db.write_document("/d", bytes(100_000))
        assert db.stats().free_pages <= free_before


def test_max_document_size_holds_for_small_documents(tmp_path: Path) -> None:
    """Regression: the inline fast path for small bytes skipped the size check."""
    with streamdb.open(tmp_path / "t.db", Config(max_document_size=1000)) as db:
        db.write_document("/d", bytes(1000))
        for source in (bytes(1001), bytearray(2000), [bytes(600), bytes(600)]):
            with pytest.raises(streamdb.DocumentTooLargeError):
                db.write_document("/d", source)
        assert db.get("/d") == bytes(1000) and db.versions("/d") == [1]


def test_failing_source_leaves_nothing(db: streamdb.Database) -> None:
    def chunks() -> object:
        yield bytes(100_000)
        raise RuntimeError("source broke")

    db.write_document("/d", b"old")
    with pytest.raises(RuntimeError):
        db.write_document("/d", chunks())
    assert db.get("/d") == b"old"


def test_write_documents_is_atomic(db: streamdb.Database) -> None:
    ids = db.write_documents([("/x", b"1"), ("/y", bytes(200_000)), ("/x", b"2")])
    assert ids[0] == ids[2] and db.get("/x") == b"2" and db.versions("/x") == [1, 2]
    with pytest.raises(streamdb.InvalidPathError):
        db.write_documents([("/z", b"1"), ("bad", b"2")])
    assert "/z" not in db


def test_range_reads(db: streamdb.Database) -> None:
    data = os.urandom(700_000)
    db.write_document("/r", data)
    for offset, length in [(0, 10), (262_140, 10), (500_000, None), (699_999, 5), (800_000, 3)]:
        want = data[offset:] if length is None else data[offset : offset + length]
        assert db.get("/r", offset=offset, length=length) == want
    with pytest.raises(streamdb.InvalidArgumentError):
        db.get("/r", offset=-1)


def test_file_objects(db: streamdb.Database) -> None:
    data = os.urandom(300_000)
    with db.open("/f", "wb") as f:
        f.write(data[:1000])
        f.write(data[1000:])
    with db.open("/f", "rb") as f:
        assert f.read(10) == data[:10]
        f.seek(-5, io.SEEK_END)
        assert f.read() == data[-5:]
        f.seek(1000)
        buf = bytearray(500)
        assert f.readinto(buf) == 500 and bytes(buf) == data[1000:1500]
    with pytest.raises(RuntimeError), db.open("/g", "wb") as f:
        f.write(b"never")
        raise RuntimeError
    assert "/g" not in db


def test_get_async(db: streamdb.Database) -> None:
    db.write_document("/a", b"async")
    assert asyncio.run(db.get_async("/a")) == b"async"


def test_overwrite_churn_reuses_space(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        for i in range(60):
            db.write_document("/churn", os.urandom(300_000))
            if i % 10 == 9:
                db.checkpoint()
        size = db.stats().file_pages
        for _ in range(60):
            db.write_document("/churn", os.urandom(300_000))
            db.checkpoint()
        assert db.stats().file_pages <= size + 120  # bounded, not 60 more documents


def test_foreign_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(5000))
    with pytest.raises(streamdb.UnsupportedError):
        streamdb.open(path)
    assert path.read_bytes() == b"SQLite format 3\x00" + bytes(5000)
    assert not (tmp_path / "other.db-wal").exists()


def test_a_header_copy_counts_only_where_its_page_size_puts_it(tmp_path: Path) -> None:
    """Copy A damaged, and at offset 4096 (inside a 64 KiB database's first header page) a
    checksummed header declaring 64 KiB pages: not copy B of a 4 KiB database. Taking it
    once made a database whose checkpoints (copy B at 64 KiB) were never read again, so
    every write after the open was lost at the next open (found by the fuzzer)."""
    path = tmp_path / "t.db"
    with streamdb.open(path, Config(page_size=65536)) as db:
        db.write_document("/a", b"x" * 100_000)
        db.checkpoint()  # generation 2, in copy A
        db.write_document("/a2", b"y")
    # closed: generation 3, in copy B, holds both documents
    raw = bytearray(path.read_bytes())
    stale = bytes(raw[65536 : 65536 + 512])  # copy B: a valid header of 64 KiB pages
    raw[4096 : 4096 + 512] = stale
    raw[100] ^= 0xFF  # copy A damaged
    path.write_bytes(bytes(raw))
    with streamdb.open(path) as db:  # B, at 64 KiB, is the current copy
        assert db.get("/a") == b"x" * 100_000
        db.write_document("/b", b"after")
    with streamdb.open(path) as db:
        assert db.get("/b") == b"after"
    raw = bytearray(path.read_bytes())
    raw[65536 + 100] ^= 0xFF  # both real copies damaged now: only the stale one is valid
    raw[100] ^= 0xFF
    raw[4096 : 4096 + 512] = stale
    path.write_bytes(bytes(raw))
    with pytest.raises(streamdb.CorruptionError, match="both headers"):
        streamdb.open(path)


def test_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    from streamdb.storage import header as hdr

    path = tmp_path / "t.db"
    streamdb.open(path).close()
    raw = path.read_bytes()
    h = hdr.parse(raw)
    assert h is not None
    newer = bytearray(h.pack())
    newer[8:10] = (hdr.VERSION + 1).to_bytes(2, "little")
    import xxhash

    newer[-8:] = xxhash.xxh3_64_intdigest(bytes(newer[:-8])).to_bytes(8, "little")
    changed = bytes(newer) + raw[512:]
    changed = changed[: h.page_size] + bytes(newer) + changed[h.page_size + 512 :]
    path.write_bytes(changed)
    with pytest.raises(streamdb.UnsupportedError, match="newer"):
        streamdb.open(path)
    assert path.read_bytes() == changed


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db"), pytest.raises(streamdb.LockedError):
        streamdb.open(tmp_path / "t.db")


def test_closed_database_refuses(tmp_path: Path) -> None:
    db = streamdb.open(tmp_path / "t.db")
    db.close()
    db.close()
    with pytest.raises(streamdb.ClosedError):
        db.get("/a")


def test_after_close_the_db_file_alone_holds_everything(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/small", b"s")
        db.write_document("/big", bytes(500_000))
    for name in os.listdir(tmp_path):
        if name != "t.db":
            os.remove(tmp_path / name)
    with streamdb.open(tmp_path / "t.db") as db:
        assert db.get("/small") == b"s" and db.get("/big") == bytes(500_000)


def test_in_memory_file_layer_and_power_loss() -> None:
    vfs = MemoryVFS()
    db = mem_db(vfs)
    db.write_document("/a", b"committed")
    db.write_document("/b", bytes(100_000))
    crashed = vfs.crash(keep="none")
    with mem_db(crashed) as again:
        assert again.get("/a") == b"committed"
        assert again.get("/b") == bytes(100_000)


def test_flipped_data_byte_is_a_checksum_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    data = os.urandom(100_000)
    with streamdb.open(path) as db:
        db.write_document("/victim", data)
        (extent,) = version_at(db._engine._pins.current, "/victim", None).extents
    raw = bytearray(path.read_bytes())
    raw[extent[0] * 8192 + 1234] ^= 0x01
    path.write_bytes(bytes(raw))
    with streamdb.open(path) as db:
        with pytest.raises(streamdb.ChecksumMismatch, match="/victim"):
            db.get("/victim")
        with pytest.warns(UserWarning):
            db.set_quick_mode(True)
        assert len(db.get("/victim")) == len(data)


def test_a_headerless_database_beside_a_log_is_refused(tmp_path: Path) -> None:
    """Found while writing streamdb.dbm: an empty .db file with an old NAME-wal beside it got
    the old log replayed into a new database. The log is kept as evidence instead."""
    path = tmp_path / "t.db"
    db = streamdb.open(path)
    db.write_document("/old", b"from another life")
    db._engine._forget()  # leave the log behind without a checkpoint
    path.write_bytes(b"")  # the database file is replaced by an empty one
    log = (tmp_path / "t.db-wal").read_bytes()
    with pytest.raises(streamdb.CorruptionError, match="remove the log"):
        streamdb.open(path)
    assert path.read_bytes() == b"" and (tmp_path / "t.db-wal").read_bytes() == log


def test_backup_is_a_consistent_openable_copy(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db") as db:
        db.write_document("/a", b"x" * 100)
        db.write_document("/b", os.urandom(300_000))
        db.backup(tmp_path / "copy.db")
        db.write_document("/after", b"not in the backup")
        want = {p: db.get(p) for p in ("/a", "/b")}
    with streamdb.open(tmp_path / "copy.db") as copy:
        assert {p: copy.get(p) for p in copy} == want
        assert copy.verify().ok


def test_compact_shrinks_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path) as db:
        for i in range(40):
            db.write_document(f"/d/{i}", os.urandom(200_000))
        doc_id = db.write_document("/keep", b"v1")
        db.write_document("/keep", b"v2")
        db.bind_to_path(doc_id, "/alias")
        for i in range(35):
            db.delete(f"/d/{i}")
        db.checkpoint()
        view = db.get_view("/d/39")
        before = path.stat().st_size
        want = {p: db.get(p) for p in db}
        db.compact()
        assert path.stat().st_size < before / 3
        assert {p: db.get(p) for p in db} == want
        assert db.versions("/keep") == [1, 2] and db.get_id_by_path("/alias") == doc_id
        assert bytes(view) == want["/d/39"]  # an old view still reads the old bytes
        db.write_document("/new", b"after compact")
        assert db.verify().ok
        with pytest.raises(streamdb.LockedError):
            streamdb.open(path)
    with streamdb.open(path) as db:
        assert db.get("/new") == b"after compact" and db.get("/keep", version=1) == b"v1"
    assert sorted(n for n in os.listdir(tmp_path) if "compact" in n) == []


def test_stats_count_commits_reads_and_cache(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "t.db", Config(page_size=4096)) as db:
        db.write_documents((f"/s/{i:05d}", b"x" * 50) for i in range(3000))
        db.checkpoint()
        for _ in range(3):
            for i in range(0, 3000, 7):
                db.get(f"/s/{i:05d}")
        stats = db.stats()
        assert stats.paths == 3000 and stats.commits == 1 and stats.checkpoints == 1
        assert stats.reads == 3 * len(range(0, 3000, 7))
        assert stats.index_cache_hits > stats.index_cache_misses > 0
        with pytest.raises(AttributeError):
            stats.paths = 1  # type: ignore[misc]
