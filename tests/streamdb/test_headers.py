"""The two header copies (rules H1-H4 in streamdb/storage/header.py): one damaged copy never
loses a committed write, and a file written before the copies were kept identical still
opens, is upgraded in place, and is refused rather than rolled back when it cannot be
trusted.

The sweeps flip bits of both header pages of a database image and open it again: each flip
must give the full committed state (repaired, and reported by `verify()`), or an error
naming the header; never an older state. `make test` flips every bit of the fixed fields and
of the tree references and one bit of every other byte; `make stress` flips every bit of
both pages.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import streamdb
from streamdb import Config
from streamdb.engine import Engine
from streamdb.storage.header import FLAG_MIRRORED, HEADER_SIZE, Copies, read_copies
from wal.memvfs import MemoryVFS

STRESS = bool(os.environ.get("STREAMDB_STRESS"))
DB = "/h/t.db"
PAGE = 4096
CONFIG = Config(page_size=PAGE)
FAST = Config(page_size=PAGE, durability="normal")  # reopening: no 16 MiB log zero-fill
State = dict[str, tuple[bytes, list[int]]]
Files = dict[str, bytes]


def contents(db: streamdb.Database) -> State:
    return {path: (db.get(path), db.versions(path)) for path in db.search("/")}


def files(mem: MemoryVFS) -> Files:
    """The files of the database directory. Log segments are zero-filled ahead of their
    records; the zeros past the last record (but 64 KiB) are left out, which keeps images
    small and opens the same (a shorter segment file reads as preallocated less)."""
    out = {}
    for name in mem.listdir("/h"):
        data = mem.read_file(f"/h/{name}")
        if "-wal" in name:
            data = data[: len(data.rstrip(b"\x00")) + (64 << 10)]
        out[f"/h/{name}"] = data
    return out


def on_disk(mem: MemoryVFS) -> Copies:
    data = mem.read_file(DB)
    return read_copies(lambda n, off: data[off : off + n])


def disk(image: Files) -> MemoryVFS:
    mem = MemoryVFS()
    for name, data in image.items():
        mem.write_file(name, data)
    mem.sync_dir("/h")
    return mem


def _first_steps(db: streamdb.Database) -> None:
    db.write_document("/a", b"first")
    db.write_document("/big", os.urandom(100_000))  # on pages
    db.write_document("/gone", b"soon deleted")
    db.checkpoint()


def _later_steps(db: streamdb.Database) -> None:
    db.write_document("/a", b"second")
    db.write_document("/b", b"new")
    db.delete("/gone")
    db.bind_to_path(db.get_id_by_path("/b"), "/alias")
    db.write_document("/big", os.urandom(90_000))


def closed() -> tuple[Files, State]:
    """Closed cleanly: both copies the last checkpoint's, the log recycled up to it."""
    mem = MemoryVFS()
    with streamdb.open(DB, CONFIG, vfs=mem) as db:
        _first_steps(db)
        _later_steps(db)
        state = contents(db)
    return files(mem), state


def killed() -> tuple[Files, State]:
    """Killed after a checkpoint and more commits: the log holds what the copies lack."""
    mem = MemoryVFS()
    db = streamdb.open(DB, CONFIG, vfs=mem)
    _first_steps(db)
    _later_steps(db)
    state = contents(db)
    image = files(mem.crash(keep="all"))
    db.close()
    return image, state


class _Crash(Exception):
    pass


def between_copies() -> tuple[Files, State]:
    """A power loss between a checkpoint's two header writes (H1): copy `generation % 2`
    holds the new header, the other the previous one, and the log was not recycled."""
    mem = MemoryVFS()
    db = streamdb.open(DB, CONFIG, vfs=mem)
    _first_steps(db)
    _later_steps(db)
    state = contents(db)
    real = Engine._write_headers

    def first_copy_only(self: Engine, header: object, first: int) -> None:
        page = header.pack().ljust(PAGE, b"\x00")  # type: ignore[attr-defined]
        self._pager.write_pages(first, page)
        self._pager.sync()
        raise _Crash

    Engine._write_headers = first_copy_only  # type: ignore[method-assign]
    try:
        with pytest.raises(_Crash):
            db.checkpoint()
        image = files(mem.crash(keep="none"))
    finally:
        Engine._write_headers = real  # type: ignore[method-assign]
    db._engine.crash()
    copies = read_copies(lambda n, off: image[DB][off : off + n])
    assert copies.a is not None and copies.b is not None
    assert copies.a.generation != copies.b.generation
    return image, state


SCENARIOS: dict[str, Callable[[], tuple[Files, State]]] = {
    "closed": closed, "killed": killed, "between-copies": between_copies}


def flip(image: Files, offset: int, bit: int) -> Files:
    data = bytearray(image[DB])
    data[offset] ^= 1 << bit
    return {**image, DB: bytes(data)}


def every_bit() -> Iterator[tuple[int, int]]:
    """(offset, bit) of every bit of both header pages."""
    for offset in range(2 * PAGE):
        for bit in range(8):
            yield offset, bit


def sample_bits() -> Iterator[tuple[int, int]]:
    """(offset, bit) that full opens flip: one seeded bit of every 8-byte field of both
    copies' checksummed bytes, and a few bytes of the unused rest of each page; every bit
    of both pages under STRESS."""
    if STRESS:
        yield from every_bit()
        return
    rng = random.Random(20261207)
    for page in (0, 1):
        for offset in range(64):  # the fixed fields: every bit
            for bit in range(8):
                yield page * PAGE + offset, bit
        for field in range(64, HEADER_SIZE, 8):
            yield page * PAGE + field + rng.randrange(8), rng.randrange(8)
        for offset in rng.sample(range(HEADER_SIZE, PAGE), 4):
            yield page * PAGE + offset, rng.randrange(8)


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> tuple[str, Files, State]:
    name = request.param
    image, state = SCENARIOS[name]()
    return name, image, state


def test_the_reported_case(tmp_path: Path) -> None:
    """One flipped bit in the newer copy, on real files, through the public API only."""
    path = tmp_path / "h.db"
    with streamdb.open(path) as db:
        db.write_document("/a", b"first")
        db.checkpoint()
        db.write_document("/a", b"second")
        db.write_document("/b", b"new")
    with open(path, "r+b") as f:
        f.seek(8192 + 40)
        x = f.read(1)
        f.seek(8192 + 40)
        f.write(bytes([x[0] ^ 1]))
    with streamdb.open(path) as db:
        assert db.get("/a") == b"second" and db.exists("/b")
        report = db.verify()
        assert not report.ok and "page 1" in report.problems[0]
    with streamdb.open(path) as db:
        assert db.verify().ok  # repaired
        assert db.get("/a") == b"second" and db.exists("/b")


def test_every_bit_flip_leaves_a_trusted_copy(scenario: tuple[str, Files, State]) -> None:
    """Header level, every bit of both pages: a flip in a copy's checksummed bytes makes
    that copy damaged and leaves the other as it was; a flip past them changes nothing."""
    name, image, _ = scenario
    original = read_copies(lambda n, off: image[DB][off : off + n])
    assert original.a is not None and original.b is not None
    data = bytearray(image[DB][: 2 * PAGE])
    for offset, bit in every_bit():
        data[offset] ^= 1 << bit
        copies = read_copies(lambda n, off: bytes(data[off : off + n]))
        data[offset] ^= 1 << bit
        damaged = offset % PAGE < HEADER_SIZE
        where = f"{name}: bit {bit} of byte {offset}"
        if offset < PAGE:
            assert (copies.a is None) == damaged and copies.b == original.b, where
        else:
            assert (copies.b is None) == damaged and copies.a == original.a, where
        assert copies.current is not None, where


def test_flips_are_repaired_with_nothing_lost(scenario: tuple[str, Files, State]) -> None:
    """Full opens: the whole committed state every time, the damage reported by verify()
    and rewritten on disk."""
    name, image, state = scenario
    checked = 0
    for offset, bit in sample_bits():
        mem = disk(flip(image, offset, bit))
        with streamdb.open(DB, FAST, vfs=mem) as db:
            where = f"{name}: bit {bit} of byte {offset}"
            assert contents(db) == state, where
            report = db.verify()
            if offset % PAGE < HEADER_SIZE:  # a checksummed byte: that copy was damaged
                copy = "A (page 0)" if offset < PAGE else "B (page 1)"
                assert not report.ok and any(copy in p for p in report.problems), where
            else:
                assert report.ok, (where, report.problems)
        assert on_disk(mem).mirrored, where  # repaired on disk
        checked += 1
    assert checked == (2 * 8 * PAGE if STRESS else 2 * (64 * 8 + (HEADER_SIZE - 64) // 8 + 4))


def test_a_damaged_copy_reads_fully_in_a_reader_process_too(
        scenario: tuple[str, Files, State]) -> None:
    """A read-only open cannot repair, but reads the full state from the other copy and
    the log, and its verify() names the damaged copy."""
    name, image, state = scenario
    for page in (0, 1):
        mem = disk(flip(image, page * PAGE + 40, 0))  # the checkpoint LSN
        with streamdb.open(DB, FAST, readonly=True, vfs=mem) as db:
            assert contents(db) == state, (name, page)
            report = db.verify()
            assert not report.ok and any(f"page {page}" in p for p in report.problems)


def test_both_copies_damaged_is_an_error_naming_the_header() -> None:
    image, _ = closed()
    image = flip(flip(image, 48, 0), PAGE + 48, 0)
    with pytest.raises(streamdb.CorruptionError, match="both headers"):
        streamdb.open(DB, FAST, vfs=disk(image))


def test_damaged_magic_of_copy_a_is_damage_not_a_foreign_file() -> None:
    image, state = closed()
    data = bytearray(image[DB])
    data[0:8] = b"GARBAGE!"
    with streamdb.open(DB, FAST, vfs=disk({**image, DB: bytes(data)})) as db:
        assert contents(db) == state
    foreign = bytearray(image[DB])
    foreign[0:8] = b"GARBAGE!"
    foreign[PAGE : PAGE + 8] = b"GARBAGE!"
    with pytest.raises(streamdb.UnsupportedError, match="not a StreamDB database"):
        streamdb.open(DB, FAST, vfs=disk({**image, DB: bytes(foreign)}))


def test_new_databases_and_checkpoints_write_both_copies_alike() -> None:
    mem = MemoryVFS()
    with streamdb.open(DB, CONFIG, vfs=mem) as db:
        copies = on_disk(mem)
        assert copies.mirrored and copies.a is not None and copies.a.generation == 1
        db.write_document("/x", b"1")
        db.checkpoint()
        copies = on_disk(mem)
        assert copies.mirrored and copies.a == db._engine.header


def test_a_crash_between_the_copies_is_mirrored_before_anything_is_written() -> None:
    """H4: the writer rewrites the older copy at open, before any page the older copy's
    trees use could be reused."""
    image, state = between_copies()
    mem = disk(image)
    with streamdb.open(DB, FAST, vfs=mem) as db:
        assert on_disk(mem).mirrored
        assert contents(db) == state


# -- files written before H1 (legacy) ----------------------------------------------------------


def legacy(*, recycle: bool) -> tuple[Files, State, int]:
    """An image as the previous protocol left it: copy `g % 2` holds generation g, the other
    copy generation g - 1, neither flagged mirrored; the log recycled up to copy g's
    checkpoint (`recycle`), or not (a crash right after the newer copy's write). Returns the
    page of the newer copy too."""
    mem = MemoryVFS()
    db = streamdb.open(DB, CONFIG, vfs=mem)
    _first_steps(db)
    _later_steps(db)
    state = contents(db)
    older = replace(db._engine.header, flags=db._engine.header.flags & ~FLAG_MIRRORED)
    if recycle:
        db.checkpoint()
    else:
        db._engine._header = older.next(checkpoint_lsn=db._engine._applied_lsn)  # never written
    newer = replace(db._engine.header, flags=db._engine.header.flags & ~FLAG_MIRRORED)
    image = files(mem.crash(keep="all"))
    db._engine.crash()
    data = bytearray(image[DB])
    if recycle:
        data[(newer.generation % 2) * PAGE : (newer.generation % 2) * PAGE + PAGE] = (
            newer.pack().ljust(PAGE, b"\x00"))
    else:  # the newer copy's write was torn: garbage where it was going
        data[(newer.generation % 2) * PAGE : (newer.generation % 2) * PAGE + 64] = bytes(
            range(64))
    data[(older.generation % 2) * PAGE : (older.generation % 2) * PAGE + PAGE] = (
        older.pack().ljust(PAGE, b"\x00"))
    return {**image, DB: bytes(data)}, state, newer.generation % 2


def test_a_legacy_file_opens_and_is_upgraded_in_place() -> None:
    image, state, _ = legacy(recycle=True)
    before = read_copies(lambda n, off: image[DB][off : off + n])
    assert before.a is not None and before.b is not None and not before.mirrored
    mem = disk(image)
    with streamdb.open(DB, FAST, readonly=True, vfs=mem) as db:
        assert contents(db) == state
    with streamdb.open(DB, FAST, vfs=mem) as db:
        assert contents(db) == state
        after = on_disk(mem)
        assert after.mirrored and after.a is not None and after.a.flags & FLAG_MIRRORED
    with streamdb.open(DB, FAST, vfs=mem) as db:
        assert contents(db) == state


def test_a_legacy_file_whose_newer_copy_is_damaged_is_refused_not_rolled_back() -> None:
    image, _, newer = legacy(recycle=True)
    image = flip(image, newer * PAGE + 40, 3)
    mem = disk(image)
    with pytest.raises(streamdb.CorruptionError, match=r"header copy .* is damaged"):
        streamdb.open(DB, FAST, vfs=mem)
    with pytest.raises(streamdb.CorruptionError, match=r"header copy .* is damaged"):
        streamdb.open(DB, FAST, readonly=True, vfs=mem)
    assert files(mem) == image  # refused, untouched


def test_a_legacy_file_whose_older_copy_is_damaged_opens_for_writing() -> None:
    image, state, newer = legacy(recycle=True)
    mem = disk(flip(image, (1 - newer) * PAGE + 40, 3))
    with streamdb.open(DB, FAST, vfs=mem) as db:  # the log proves the newer copy current
        assert contents(db) == state
    assert on_disk(mem).mirrored


def test_a_legacy_crash_during_the_header_write_keeps_everything() -> None:
    """The previous protocol's crash: the newer copy torn, the log not recycled."""
    image, state, _ = legacy(recycle=False)
    with streamdb.open(DB, FAST, vfs=disk(image)) as db:
        assert contents(db) == state


def test_a_header_that_would_not_read_back_is_never_written() -> None:
    """A checkpoint whose trees lie outside the file (a damaged free-space map gave out a
    page past its end) is refused before either copy is touched: the database keeps the
    header it had, rather than two copies that no open accepts."""
    mem = MemoryVFS()
    db = streamdb.open(DB, CONFIG, vfs=mem)
    _first_steps(db)
    engine: Engine = db._engine
    before = mem.read_file(DB)[: 2 * PAGE]
    header = engine._header
    past = replace(header.trees["docs"], root=header.file_pages)
    bad = header.next(trees={**header.trees, "docs": past})
    with pytest.raises(streamdb.CorruptionError, match="would not read back"):
        engine._write_headers(bad, 0)
    assert mem.read_file(DB)[: 2 * PAGE] == before
    db.close()
    with streamdb.open(DB, CONFIG, vfs=mem) as again:
        assert again.get("/a") == b"first"
