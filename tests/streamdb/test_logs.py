"""Message logs inside the database (docs/design.md, sections 2 and 6; invariants 1-3):
`append_message`/`append_messages` grow a LOG version in place, one atomic and durable
commit per call and no new version, and `messages(path, start=)` reads the framed messages
back verified, from any index.

Covered: payloads of every size class and the frame placements that matter (the 4 KiB
inline limit, headers and payloads across 256 KiB chunk boundaries, a payload larger than
a chunk), every framing checksum and its byte-exactness with `streamdb.framing`; versions
and ids; snapshots, streams, transactions and other threads; reopen, checkpoint, compact,
backup, verify, pread, compression, read-only followers and encryption; damage on disk;
then crash safety on the fault-injecting file layer and real writer processes killed with
SIGKILL. Sweeps longer than the default run are behind STREAMDB_STRESS / the slow marker.
"""

from __future__ import annotations

import array
import errno
import io
import os
import random
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path
from typing import Literal

import pytest

import streamdb
from streamdb import Config
from streamdb.framing import (
    Checksum,
    ChecksumDeframer,
    ChecksumFramer,
    Crc16,
    Crc32,
    DefaultDeframer,
    DefaultFramer,
    StreamReader,
    StreamWriter,
    XxHash64,
)
from streamdb.reads import ReadMethods
from streamdb.storage.docio import CHUNK, DocReader
from streamdb.storage.logio import LOG_INLINE
from streamdb.storage.records import NO_FRAME, Version
from streamdb.storage.transform import TAG
from tests.streamdb.kill_log_writer import LOG
from tests.streamdb.kill_log_writer import payload as kill_payload
from tests.streamdb.killing import run_and_kill
from tests.streamdb.test_snapshots import check_all, rand
from wal.faults import FaultyVFS
from wal.memvfs import MemoryVFS

STRESS = bool(os.environ.get("STREAMDB_STRESS"))
KEY = bytes(range(32))
PAGE = 4096
WAIT = 30.0  # generous bound for threads that must finish
Name = Literal["xxh3", "crc32", "crc16"] | None
NAMES: list[Name] = ["xxh3", "crc32", "crc16", None]
CHECKSUM_OF: dict[Name, Checksum | None] = {
    "xxh3": XxHash64(), "crc32": Crc32(), "crc16": Crc16(), None: None}
HEADER: dict[Name, int] = {"xxh3": 12, "crc32": 8, "crc16": 6, None: 4}


class Boom(Exception):
    pass


def config(**overrides: object) -> Config:
    return Config(**{"page_size": PAGE, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[streamdb.Database]:
    with streamdb.open(tmp_path / "l.db", config()) as handle:
        yield handle


def framer(name: Name) -> DefaultFramer:
    cs = CHECKSUM_OF[name]
    return ChecksumFramer(cs) if cs is not None else DefaultFramer()


def deframer(name: Name) -> DefaultDeframer:
    cs = CHECKSUM_OF[name]
    return ChecksumDeframer(cs) if cs is not None else DefaultDeframer()


def framed(name: Name, payloads: Iterable[bytes]) -> bytes:
    """What `streamdb.framing.StreamWriter` writes for `payloads`."""
    out = io.BytesIO()
    with StreamWriter(out, framer(name)) as w:
        w.write_many(payloads)
    return out.getvalue()


def read_all(r: ReadMethods, path: str, start: int = 0) -> list[bytes]:
    return [bytes(m) for m in r.messages(path, start)]


def latest(db: streamdb.Database, path: str) -> Version:
    doc_id = db._engine.catalog.lookup(path.encode())
    assert doc_id is not None, path
    doc = db._engine.catalog.doc(doc_id)
    assert doc is not None, path
    return doc.latest


def physical(db: streamdb.Database, path: str, offset: int) -> int:
    """The file offset of byte `offset` of the log at `path` (stored on pages)."""
    v = latest(db, path)
    assert v.inline is None and v.extents, "the log is inline, not on pages"
    page = db._engine._page_size
    base = 0
    for first, count in v.extents:
        if offset < base + count * page:
            return first * page + offset - base
        base += count * page
    raise AssertionError(f"offset {offset} is past the extents of {path}")


def frame_offsets(name: Name, payloads: list[bytes]) -> list[int]:
    """Where each frame starts in the log, and the end."""
    return list(accumulate((HEADER[name] + len(p) for p in payloads), initial=0))


def expected_starts(name: Name, payloads: list[bytes], chunk: int = CHUNK
                    ) -> list[tuple[int, int]]:
    """Per chunk: (index, offset in the chunk) of the first frame starting in it."""
    offsets = frame_offsets(name, payloads)
    size = offsets[-1]
    starts = [(0, NO_FRAME)] * max(1, -(-size // chunk))
    for i, off in enumerate(offsets[:-1]):
        if starts[off // chunk][1] == NO_FRAME:
            starts[off // chunk] = (i, off % chunk)
    return starts


def check_log(r: ReadMethods, path: str, name: Name, model: list[bytes], *,
              every_start: bool = True) -> None:
    """Everything the read API says about the log at `path` agrees with `model`."""
    info = r.info(path)
    assert info.messages == len(model)
    assert info.size == frame_offsets(name, model)[-1]
    assert info.version == 1 and r.versions(path) == [1]
    raw = r.get(path)
    assert raw == framed(name, model), "the stored frames are not StreamWriter's"
    assert [bytes(m) for m in StreamReader(io.BytesIO(raw), deframer(name))] == model
    starts = range(len(model) + 3) if every_start else sorted(
        {0, 1, len(model) // 2, len(model) - 1, len(model), len(model) + 1})
    for start in starts:
        assert read_all(r, path, start) == model[start:], start


# ---- 1. appending and reading ----------------------------------------------------------


def size_classes(name: Name, chunk: int = CHUNK) -> list[bytes]:
    """Payloads that put frames of a `name` log where it matters: empty and small ones,
    a log of exactly LOG_INLINE bytes then one byte past it, a frame header straddling a
    chunk boundary, a frame ending exactly at a chunk's end and the next starting there,
    a payload larger than a chunk (so one chunk holds no frame start), and many small
    frames after it."""
    h = HEADER[name]
    out: list[bytes] = []
    end = 0

    def add(n: int) -> None:
        nonlocal end
        out.append(rand(n, f"{name}:{len(out)}"))
        end += h + n

    def fill_to(target: int) -> None:  # one message ending exactly at `target`
        assert target - end - h >= 0
        add(target - end - h)

    add(0)
    add(1)
    add(100)
    fill_to(LOG_INLINE)  # exactly at the inline limit
    add(1)  # past it: to pages
    add(4096)
    fill_to(chunk - 2)  # the next frame's header straddles the boundary
    add(10)
    fill_to(2 * chunk - h - 3)  # the next frame's payload straddles it by 3 bytes ...
    add(7)
    fill_to(3 * chunk)  # ... this one ends exactly at a chunk's end
    add(5)  # and this one starts exactly at the next
    add(2 * chunk + 12_345)  # larger than a chunk: chunk 4 has no frame start
    for i in range(40):
        add(i * 37 % 500)
    add(0)
    return out


def append_in(db: streamdb.Database, path: str, name: Name, payloads: list[bytes],
              how: str, rng: random.Random, model: list[bytes]) -> None:
    """Append `payloads` to `model` and the log: one call per message ("single"), one
    call ("batch"), or random groups ("groups"); each call returns its first index."""
    i = 0
    while i < len(payloads):
        k = (1 if how == "single" else len(payloads) if how == "batch"
             else rng.choice((1, 1, 2, 3, 7, 20)))
        group = payloads[i : i + k]
        if len(group) == 1 and how != "groups":
            first = db.append_message(path, group[0], checksum=name)
        else:
            first = db.append_messages(path, iter(group), checksum=name)
        assert first == len(model)
        model += group
        i += k


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
@pytest.mark.parametrize("how", ["single", "batch", "groups"])
@pytest.mark.parametrize("name", NAMES)
def test_every_size_class_reads_back_from_every_start(tmp_path: Path, name: Name,
                                                      how: str, key: bytes | None) -> None:
    """Encrypted logs have chunks of CHUNK - TAG bytes (a sealed chunk fills whole pages):
    the size classes follow them."""
    page_size = {"single": 4096, "batch": 8192, "groups": 65536}[how]
    chunk = CHUNK if key is None else CHUNK - TAG
    payloads = size_classes(name, chunk)
    rng = random.Random(f"{name}{how}")
    model: list[bytes] = []
    path = tmp_path / "l.db"
    cfg = Config(page_size=page_size, encryption_key=key)
    with streamdb.open(path, cfg) as db:
        # bytes, bytearray and memoryview payloads are the same thing
        kinds: list[Callable[[bytes], bytes | bytearray | memoryview]] = [
            bytes, bytearray, memoryview]
        first = db.append_message("/log", kinds[0](payloads[0]), checksum=name)
        assert first == 0
        model.append(payloads[0])
        db.append_messages("/log", [kinds[1](payloads[1]), kinds[2](payloads[2])],
                           checksum=name)
        model += payloads[1:3]
        head = len(model)
        append_in(db, "/log", name, payloads[head:4], how, rng, model)
        v = latest(db, "/log")
        # exactly at the limit: inline (sealed, it is 16 bytes more: on pages)
        assert v.size == LOG_INLINE and (v.inline is not None) == (key is None)
        append_in(db, "/log", name, payloads[4:], how, rng, model)
        v = latest(db, "/log")
        assert v.inline is None and v.chunk_size == chunk and v.encrypted == (key is not None)
        assert model == payloads
        check_log(db, "/log", name, model)
        assert v.log is not None and list(v.log.starts) == expected_starts(name, model, chunk)
        assert v.log.starts[4][1] == NO_FRAME
    with streamdb.open(path, cfg) as db:
        check_log(db, "/log", name, model, every_start=False)
        assert db.append_message("/log", b"after reopen", checksum=name) == len(model)
        model.append(b"after reopen")
        check_log(db, "/log", name, model, every_start=False)
        assert db.verify().ok
        check_all(db)


@pytest.mark.parametrize("name", NAMES)
def test_frames_are_stream_writer_bytes_and_read_back_by_stream_reader(db: streamdb.Database,
                                                                         name: Name) -> None:
    payloads = [b"", b"abc", rand(5000, name), b"\x00" * 70_000, rand(300_000, name)]
    db.append_messages("/log", payloads, checksum=name)
    stored = db.get("/log")
    assert stored == framed(name, payloads)
    assert list(StreamReader(io.BytesIO(stored), deframer(name))) == payloads
    if name == "crc32":  # docs/design.md, section 6's example: b"abc" framed with CRC-32
        assert stored[8 : 8 + 11] == bytes.fromhex("03000000c2412435616263")


def test_return_values_empty_batches_and_empty_payloads(db: streamdb.Database) -> None:
    assert db.append_messages("/new", []) == 0  # nothing to append
    assert db.append_message("/new", b"") == 0
    assert db.append_messages("/new", [b"", b""]) == 1
    assert db.append_messages("/new", iter([])) == 3
    assert db.append_message("/new", b"x") == 3
    assert read_all(db, "/new") == [b"", b"", b"", b"x"]
    assert db.info("/new").messages == 4
    v = latest(db, "/new")
    size = v.size
    assert db.append_messages("/new", []) == 4  # an empty batch changes nothing
    assert latest(db, "/new").size == size and db.info("/new").messages == 4
    assert read_all(db, "/new", 4) == [] and read_all(db, "/new", 100) == []


def test_messages_are_read_only_views_that_stay_valid(tmp_path: Path) -> None:
    payloads = [rand(n, n) for n in (0, 10, 70_000, 300_000, 5, 600_000, 1)]
    with streamdb.open(tmp_path / "l.db", config()) as db:
        db.append_messages("/log", payloads)
        views = list(db.messages("/log"))
        from_two = list(db.messages("/log", 2))
        db.append_messages("/log", [rand(400_000, "more")])
        db.checkpoint()
    assert all(v.readonly for v in views)
    assert [bytes(v) for v in views] == payloads  # after more appends and close
    assert [bytes(v) for v in from_two] == payloads[2:]


def test_payloads_are_bytes_whatever_the_memoryview_format(db: streamdb.Database) -> None:
    """A numpy-style buffer of 8-byte items: its frame holds its bytes, and the chunk
    entries (which depend on where frames start) stay right, so every start reads back."""
    arrays = [array.array("Q", range(i, i + 5000)) for i in range(150)]  # 40 KB each
    model = [a.tobytes() for a in arrays]
    assert db.append_messages("/log", [memoryview(a) for a in arrays[:100]]) == 0
    for a in arrays[100:]:
        db.append_message("/log", memoryview(a))
    log = latest(db, "/log").log
    assert log is not None and list(log.starts) == expected_starts("xxh3", model)
    for start in range(0, 151, 10):
        assert read_all(db, "/log", start) == model[start:], start


@pytest.mark.parametrize("name", NAMES)
def test_the_checksum_is_recorded_and_reused(db: streamdb.Database, name: Name) -> None:
    db.append_message("/log", b"first", checksum=name)
    before = db.get("/log")
    for other in NAMES:
        if other != name:
            with pytest.raises(streamdb.InvalidArgumentError):
                db.append_message("/log", b"other", checksum=other)
            with pytest.raises(streamdb.InvalidArgumentError):
                db.append_messages("/log", [b"a", b"b"], checksum=other)
    if name != "xxh3":  # the default checksum is "xxh3": this log's must be named
        with pytest.raises(streamdb.InvalidArgumentError):
            db.append_message("/log", b"default")
    assert db.get("/log") == before and db.info("/log").messages == 1
    assert db.append_message("/log", b"second", checksum=name) == 1
    assert db.get("/log") == framed(name, [b"first", b"second"])


def test_misuse_raises_the_documented_errors(db: streamdb.Database) -> None:
    db.write_document("/plain", b"a plain document")
    with pytest.raises(streamdb.InvalidArgumentError):
        db.append_message("/plain", b"x")
    with pytest.raises(streamdb.InvalidArgumentError):
        db.messages("/plain")
    assert db.get("/plain") == b"a plain document" and db.versions("/plain") == [1]
    with pytest.raises(streamdb.NotFoundError):
        db.messages("/missing")
    with pytest.raises(streamdb.InvalidArgumentError):
        db.append_message("/log", b"x", checksum="md5")
    assert "/log" not in db
    db.append_message("/log", b"x")
    with pytest.raises(streamdb.InvalidArgumentError):
        db.messages("/log", start=-1)
    with pytest.raises(streamdb.InvalidPathError):
        db.append_message("no-slash", b"x")
    with db.snapshot() as snap:
        with pytest.raises(streamdb.InvalidArgumentError):
            snap.messages("/plain")
        with pytest.raises(streamdb.NotFoundError):
            snap.messages("/missing")


def test_a_batch_past_max_document_size_appends_nothing(tmp_path: Path) -> None:
    with streamdb.open(tmp_path / "l.db", config(max_document_size=100_000)) as db:
        db.append_messages("/log", [rand(40_000, 1), rand(40_000, 2)])
        with pytest.raises(streamdb.DocumentTooLargeError):
            db.append_messages("/log", [b"small", rand(30_000, 3)])
        with pytest.raises(streamdb.DocumentTooLargeError):
            db.append_message("/new", rand(100_001, 4))
        assert read_all(db, "/log") == [rand(40_000, 1), rand(40_000, 2)]
        assert "/new" not in db
        assert db.append_message("/log", b"fits") == 2
        assert db.verify().ok
        check_all(db)


def test_a_source_that_raises_appends_nothing(db: streamdb.Database) -> None:
    db.append_messages("/log", [b"a", rand(10_000, "b")])

    def source() -> Iterator[bytes]:
        yield b"c"
        yield rand(200_000, "d")
        raise Boom

    with pytest.raises(Boom):
        db.append_messages("/log", source())
    assert read_all(db, "/log") == [b"a", rand(10_000, "b")]
    assert db.append_message("/log", b"e") == 2
    check_all(db)


def test_an_alias_names_the_same_log(db: streamdb.Database) -> None:
    db.append_message("/log", b"one")
    db.bind_to_path(db.get_id_by_path("/log"), "/alias")
    assert db.append_message("/alias", rand(9000, "two")) == 1
    assert read_all(db, "/log") == read_all(db, "/alias") == [b"one", rand(9000, "two")]


# ---- 2. appends extend the current version -------------------------------------------------


def test_appends_keep_version_one_and_the_document_id(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with streamdb.open(path, config(versions_to_keep=1)) as db:
        db.append_message("/log", b"first")
        doc_id = db.get_id_by_path("/log")
        created = db.info("/log").created
        for i in range(30):  # inline, then pages, then new extents
            db.append_messages("/log", [rand(i * 3000, i), b"x"])
            assert db.versions("/log") == [1]
            assert db.get_id_by_path("/log") == doc_id
        info = db.info("/log")
        assert info.version == 1 and info.created == created and info.modified >= created
        assert info.messages == 61 and info.codec is None and not info.encrypted
        db.gc()
        assert db.versions("/log") == [1]
        with pytest.raises(streamdb.NotFoundError):
            db.get("/log", version=2)
    with streamdb.open(path, config()) as db:
        assert db.versions("/log") == [1] and db.get_id_by_path("/log") == doc_id
        assert db.list_paths(doc_id) == ["/log"]


# ---- 3. isolation and atomicity --------------------------------------------------------------


def test_snapshots_and_streams_do_not_see_later_appends(db: streamdb.Database) -> None:
    # On pages, the last chunk partly filled: the appends write into it, in place.
    old = [rand(n, f"old{n}") for n in (0, 5000, 70_000, 100)]
    db.append_messages("/log", old)
    old_bytes = db.get("/log")
    snap = db.snapshot()
    stream = db.messages("/log")  # created, not started
    started = db.messages("/log")
    assert bytes(next(started)) == old[0]
    late = db.messages("/log", 3)
    new = [rand(n, f"new{n}") for n in (1, 3000, 300_000, 700_000)]
    db.append_messages("/log", new[:2])
    db.append_message("/log", new[2])
    db.checkpoint()
    db.append_message("/log", new[3])
    assert [bytes(m) for m in stream] == old
    assert [bytes(m) for m in started] == old[1:]
    assert [bytes(m) for m in late] == old[3:]
    assert read_all(snap, "/log") == old and snap.get("/log") == old_bytes
    assert snap.info("/log").messages == len(old) and read_all(snap, "/log", 4) == []
    snap.close()
    assert read_all(db, "/log") == old + new
    check_all(db)


def test_appends_in_a_transaction_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    base = [b"base", rand(6000, "base")]
    added = [b"a", rand(100_000, "b"), rand(300_000, "c")]
    seen: list[tuple[list[bytes], bool]] = []
    with streamdb.open(path, config()) as db:
        db.append_messages("/log", base)
        with db.transaction():
            assert db.append_message("/log", added[0]) == 2
            assert db.append_messages("/log", added[1:]) == 3
            assert db.append_message("/new", b"n", checksum="crc32") == 0
            assert read_all(db, "/log") == base + added  # the owner sees its writes
            assert read_all(db, "/new") == [b"n"]
            other = threading.Thread(
                target=lambda: seen.append((read_all(db, "/log"), "/new" in db)))
            other.start()
            other.join(WAIT)  # readers do not wait for the transaction
            assert not other.is_alive()
        assert seen == [(base, False)]
        assert read_all(db, "/log") == base + added and read_all(db, "/new") == [b"n"]
    with streamdb.open(path, config()) as db:
        assert read_all(db, "/log") == base + added and read_all(db, "/new") == [b"n"]
        assert db.verify().ok


def used_pages(db: streamdb.Database) -> int:
    s = db.stats()
    return s.file_pages - s.free_pages - s.pending_free_pages


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_an_exception_in_a_transaction_drops_its_appends(tmp_path: Path,
                                                         exc: type[BaseException]) -> None:
    path = tmp_path / "l.db"
    base = [b"base", rand(6000, "base")]
    with streamdb.open(path, config()) as db:
        db.append_messages("/log", base)
        db.checkpoint()
        pages = used_pages(db)
        with pytest.raises(exc), db.transaction():
            db.append_message("/log", b"gone")
            db.append_messages("/log", [rand(500_000, "gone")])  # new extents
            db.append_message("/inline", b"gone too")
            db.append_messages("/paged", [rand(100_000, "gone three")])
            raise exc
        assert read_all(db, "/log") == base
        assert "/inline" not in db and "/paged" not in db
        assert used_pages(db) == pages  # the extents went back
        assert db.append_messages("/log", [b"next", rand(70_000, "next")]) == 2
        assert db.append_message("/inline", b"now") == 0
        check_all(db)
        model = [*base, b"next", rand(70_000, "next")]
        assert read_all(db, "/log") == model
    with streamdb.open(path, config()) as db:
        assert read_all(db, "/log") == model and read_all(db, "/inline") == [b"now"]
        assert db.verify().ok


def test_a_failed_append_inside_a_transaction_is_undone_alone(db: streamdb.Database) -> None:
    db.append_message("/log", b"base")

    def source() -> Iterator[bytes]:
        yield rand(300_000, "x")
        raise Boom

    with db.transaction():
        assert db.append_message("/log", b"a") == 1
        with pytest.raises(streamdb.InvalidArgumentError):
            db.append_message("/log", b"wrong checksum", checksum="crc16")
        with pytest.raises(Boom):
            db.append_messages("/log", source())
        assert db.append_messages("/log", [rand(90_000, "c"), b"d"]) == 2
    assert read_all(db, "/log") == [b"base", b"a", rand(90_000, "c"), b"d"]
    check_all(db)


def test_other_threads_see_all_of_a_batch_or_none(db: streamdb.Database) -> None:
    rng = random.Random(3)
    batches = [[rand(rng.choice((0, 10, 3000, 40_000, 120_000)), f"{b}.{i}")
                for i in range(b % 5 + 1)] for b in range(50)]
    expected = [p for batch in batches for p in batch]
    bounds = set(accumulate((len(b) for b in batches), initial=0))
    db.append_messages("/log", batches[0])
    stop = threading.Event()
    errors: list[BaseException] = []
    checks = [0]

    def writer() -> None:
        try:
            for i, batch in enumerate(batches[1:], 1):
                if i % 2:
                    db.append_messages("/log", batch)
                else:
                    with db.transaction():
                        db.append_message("/log", batch[0])
                        db.append_messages("/log", batch[1:])
                if i == 25:
                    db.checkpoint()
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set() or checks[0] < 10:
                got = read_all(db, "/log")
                assert len(got) in bounds, len(got)
                assert got == expected[: len(got)]
                with db.snapshot() as snap:
                    n = snap.info("/log").messages
                    assert n in bounds, n
                    assert read_all(snap, "/log", max(0, (n or 0) - 3)) == \
                        expected[max(0, (n or 0) - 3) : n]
                checks[0] += 1
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert checks[0] >= 10
    assert read_all(db, "/log") == expected
    check_all(db)


# ---- 4. durability ----------------------------------------------------------------------


def build_logs(db: streamdb.Database) -> dict[str, tuple[Name, list[bytes]]]:
    """A small log per checksum (inline), and a large one per checksum in several extents,
    across chunks; the models."""
    logs: dict[str, tuple[Name, list[bytes]]] = {}
    for name in NAMES:
        small = [b"", b"s", rand(300, name)]
        db.append_messages(f"/small/{name}", small, checksum=name)
        big: list[bytes] = []
        for i in range(6):
            batch = [rand(n, f"{name}{i}{n}") for n in (0, 50, 5000, 33_333 * i)]
            db.append_messages(f"/big/{name}", batch, checksum=name)
            big += batch
        logs[f"/small/{name}"] = (name, small)
        logs[f"/big/{name}"] = (name, big)
    return logs


def check_logs(r: ReadMethods, logs: dict[str, tuple[Name, list[bytes]]]) -> None:
    for path, (name, model) in logs.items():
        check_log(r, path, name, model, every_start=False)


def grow(db: streamdb.Database, logs: dict[str, tuple[Name, list[bytes]]], tag: str) -> None:
    for path, (name, model) in logs.items():
        more = [rand(7, tag), rand(90_000, tag)] if path.startswith("/big") else [b"m"]
        assert db.append_messages(path, more, checksum=name) == len(model)
        model += more


@pytest.mark.parametrize(("use_mmap", "key"), [(True, None), (False, None), (True, KEY)],
                         ids=["mmap", "pread", "aes"])
def test_logs_survive_reopen_checkpoint_compact_and_backup(tmp_path: Path, use_mmap: bool,
                                                           key: bytes | None) -> None:
    path = tmp_path / "l.db"
    cfg = config(use_mmap=use_mmap, encryption_key=key)
    with streamdb.open(path, cfg) as db:
        logs = build_logs(db)
        db.write_document("/plain", b"plain")
        check_logs(db, logs)
        db.checkpoint()
        check_logs(db, logs)
        grow(db, logs, "after checkpoint")
    with streamdb.open(path, cfg) as db:
        check_logs(db, logs)
        grow(db, logs, "after reopen")
        db.compact()
        check_logs(db, logs)
        grow(db, logs, "after compact")  # appends to the compacted copy
        check_logs(db, logs)
        report = db.verify()
        assert report.ok, report.problems
        check_all(db)
        db.backup(tmp_path / "backup.db")
        grow(db, logs, "after backup")
    with streamdb.open(path, cfg) as db:
        check_logs(db, logs)
        assert db.verify().ok
    with streamdb.open(tmp_path / "backup.db", cfg) as backup:
        for path_, (_name, model) in logs.items():
            del model[-(2 if path_.startswith("/big") else 1):]  # not in the backup
        check_logs(backup, logs)
        grow(backup, logs, "in the backup")
        check_logs(backup, logs)
        assert backup.verify().ok
        check_all(backup)


def test_logs_in_a_compressed_database_are_stored_uncompressed(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    cfg = config(compression="zstd")
    text = [b"hello world, " * n for n in (0, 1, 100, 5000, 30_000)]
    with streamdb.open(path, cfg) as db:
        db.write_document("/doc", b"compressible " * 10_000)
        assert db.info("/doc").codec == "zstd"
        db.append_messages("/log", text)
        db.append_message("/log", rand(100_000, "tail"))
        model = [*text, rand(100_000, "tail")]
        info = db.info("/log")
        assert info.codec is None and info.stored_size == info.size
        check_log(db, "/log", "xxh3", model, every_start=False)
    with streamdb.open(path, cfg) as db:
        check_log(db, "/log", "xxh3", model, every_start=False)
        db.append_message("/log", b"more " * 1000)
        model.append(b"more " * 1000)
        db.compact()
        check_log(db, "/log", "xxh3", model, every_start=False)
        assert db.info("/log").codec is None
        assert db.verify().ok


@pytest.mark.parametrize("page_size", [4096, 8192])
def test_a_small_append_after_a_checkpoint_keeps_the_log(tmp_path: Path, page_size: int) -> None:
    """A log still inline (at most LOG_INLINE bytes) but too large for an index leaf is
    moved to pages by a checkpoint (or the one close() makes); an append that keeps it
    within LOG_INLINE must keep its earlier messages."""
    path = tmp_path / "l.db"
    cfg = Config(page_size=page_size)
    model = [rand(300, i) for i in range(9)]  # 2.8 KB: more than a quarter page
    with streamdb.open(path, cfg) as db:
        db.append_messages("/log", model)
        db.checkpoint()
        assert read_all(db, "/log") == model
        assert db.append_message("/log", b"small") == len(model)
        model.append(b"small")
        assert read_all(db, "/log") == model
    with streamdb.open(path, cfg) as db:  # and through close() and reopen
        assert read_all(db, "/log") == model
        db.append_message("/log", b"again")
        model.append(b"again")
        assert read_all(db, "/log") == model
        assert db.verify().ok


@pytest.mark.parametrize("use_mmap", [True, False], ids=["mmap", "pread"])
def test_a_read_only_follower_sees_appends_after_refresh(tmp_path: Path,
                                                         use_mmap: bool) -> None:
    path = tmp_path / "l.db"
    cfg = config(use_mmap=use_mmap)
    with streamdb.open(path, cfg) as writer:
        writer.append_messages("/log", [b"one", rand(5000, "two")])
        with streamdb.open(path, cfg, readonly=True) as ro:
            model = [b"one", rand(5000, "two")]
            assert read_all(ro, "/log") == model
            pinned = ro.messages("/log")
            for i, more in enumerate(([b"3"], [rand(300, "4")] * 3, [rand(300_000, "5")],
                                      [b"", rand(70_000, "6")])):
                writer.append_messages("/log", more)
                assert read_all(ro, "/log") == model  # until refresh
                ro.refresh()
                model += more
                check_log(ro, "/log", "xxh3", model, every_start=False)
                if i == 1:
                    writer.checkpoint()  # the follower reloads from the new trees
            with pytest.raises(streamdb.ReadOnlyError):
                ro.append_message("/log", b"nope")
            assert [bytes(m) for m in pinned] == [b"one", rand(5000, "two")]


def sealed_history(db: streamdb.Database, path: str, appends: Iterable[list[bytes]]
                   ) -> list[Version]:
    """Append each batch to the log at `path`; the latest version after each."""
    out = []
    for batch in appends:
        db.append_messages(path, batch)
        out.append(latest(db, path))
    return out


def test_every_append_seals_what_it_writes_under_a_fresh_key(tmp_path: Path) -> None:
    """AES-GCM must never see one key and nonce twice: the nonce is the chunk index, so
    each append seals the chunks it rewrites (the old last one and the new ones) with a
    salt never used before, and leaves the salts of the chunks before them alone."""
    rng = random.Random(3)
    batches = [[rng.randbytes(rng.choice((0, 30, 5000, 90_000))) for _ in range(
        rng.choice((1, 1, 3, 12)))] for _ in range(60)]
    with streamdb.open(tmp_path / "l.db", config(encryption_key=KEY)) as db:
        history = sealed_history(db, "/log", batches)
        seen: set[bytes] = set()
        prev_n = 0
        for before, v in zip([None, *history], history, strict=False):
            assert v.log is not None and len(v.log.salts) == len(v.sums) == len(v.table)
            first = max(0, prev_n - 1)
            if before is not None:
                assert before.log is not None
                assert v.log.salts[:first] == before.log.salts[:first]
                assert v.table[:first] == before.table[:first]
            written = set(v.log.salts[first:])
            assert len(written) == 1 and not written & seen
            seen |= written
            prev_n = len(v.sums)
        assert read_all(db, "/log") == [p for batch in batches for p in batch]


def test_an_encrypted_log_leaves_no_plaintext_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    secret = [b"TOP-SECRET-%05d" % i * 20 for i in range(200)]
    with streamdb.open(path, config(encryption_key=KEY, durability="full")) as db:
        db.append_message("/log", secret[0])  # inline, in the log record
        db.append_messages("/log", secret[1:])  # on pages
        wal_bytes = b"".join(f.read_bytes() for f in tmp_path.iterdir() if "wal" in f.name)
        db.checkpoint()
        assert read_all(db, "/log") == secret
    raw = path.read_bytes() + wal_bytes
    assert b"TOP-SECRET" not in raw
    with pytest.raises(streamdb.EncryptionError):
        streamdb.open(path, config())
    with pytest.raises(streamdb.WrongKeyError):
        streamdb.open(path, config(encryption_key=bytes(32)))
    with streamdb.open(path, config(encryption_key=KEY)) as db:
        assert read_all(db, "/log") == secret


def test_an_encrypted_log_frees_the_pages_of_its_rewritten_tails(tmp_path: Path) -> None:
    """Each single append rewrites the last chunk (up to 256 KiB) to new pages; the old
    ones are freed by the commit and reused after a checkpoint. Two rounds of 400 appends
    of 2 KB, a checkpoint every 50: the second round reuses the first round's freed pages,
    so the file grows by about the log's growth (0.8 MB), not by the ~50 MB of tails the
    round rewrites."""
    path = tmp_path / "l.db"
    model: list[bytes] = []
    sizes = []
    with streamdb.open(path, config(encryption_key=KEY)) as db:
        for _round in range(2):
            for i in range(400):
                model.append(rand(2000, len(model)))
                db.append_message("/log", model[-1])
                if i % 50 == 49:
                    db.checkpoint()
            sizes.append(os.path.getsize(path))
        assert read_all(db, "/log") == model
        assert db.verify().ok
        check_all(db)
    assert sizes[1] - sizes[0] < 3 << 20, sizes


def test_tampering_with_an_encrypted_log_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    model = [rand(n, n) for n in (100, 300_000, 5000, 200_000, 7)]
    with streamdb.open(path, config(encryption_key=KEY)) as db:
        db.append_messages("/log", model[:2])
        db.append_messages("/log", model[2:])
        db.checkpoint()
        v = latest(db, "/log")
        assert v.log is not None and len(set(v.log.salts)) == 2
        # Chunk 0 keeps the first append's salt; swapping salts, or giving chunk 0 the
        # other append's salt, fails authentication (the checksums still match).
        engine = db._engine
        assert bytes(DocReader(engine._pager, v, "/log", verify=True, cipher=engine.cipher)
                     .chunk(0))[12:112] == model[0]
        for salts in (v.log.salts[::-1], (v.log.salts[-1],) * len(v.log.salts)):
            forged = replace(v, log=replace(v.log, salts=salts))
            with pytest.raises(streamdb.AuthenticationError, match="/log"):
                DocReader(engine._pager, forged, "/log", verify=True,
                          cipher=engine.cipher).chunk(0)
        where = physical(db, "/log", 1000)  # a stored byte of chunk 0
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x01
    path.write_bytes(bytes(raw))
    with streamdb.open(path, config(encryption_key=KEY)) as db:
        with pytest.raises(streamdb.CorruptionError, match="/log"):
            read_all(db, "/log")
        assert not db.verify().ok
    with streamdb.open(path, config(encryption_key=KEY)) as db, \
            pytest.warns(UserWarning, match="quick mode"):
        db.set_quick_mode(True)  # no checksums first: the tag catches it, the checksum
        with pytest.raises(streamdb.ChecksumMismatch, match="/log"):  # then names it damage
            read_all(db, "/log")


# ---- 5. damage ------------------------------------------------------------------------------


def damaged_log(tmp_path: Path, name: Name, bad: int = 5) -> tuple[Path, list[bytes], int]:
    """A closed database whose log (on pages, three chunks) has one payload byte of
    message `bad` flipped on disk, 10 bytes before its end (message 5 lies in chunk 1;
    message 7 ends in the last chunk, chunk 2); the model and `bad`."""
    path = tmp_path / "d.db"
    model = [rand(n, f"{name}{i}") for i, n in enumerate((10, 5000, 100_000, 200_000, 40, 70,
                                                         30_000, 300_000))]
    with streamdb.open(path, config()) as db:
        db.append_messages("/log", model[:4], checksum=name)
        db.append_messages("/log", model[4:], checksum=name)
        db.checkpoint()
        offsets = frame_offsets(name, model)
        assert CHUNK <= offsets[5] < offsets[6] < 2 * CHUNK < offsets[8] - 10
        offset = offsets[bad + 1] - 10  # inside payload `bad`, 10 bytes before its end
        where = physical(db, "/log", offset)
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x10
    path.write_bytes(bytes(raw))
    return path, model, bad


@pytest.mark.parametrize("name", NAMES)
def test_a_flipped_payload_byte_fails_the_chunk_checksum(tmp_path: Path, name: Name) -> None:
    path, model, bad = damaged_log(tmp_path, name)
    with streamdb.open(path, config()) as db:
        for start in (0, bad):
            with pytest.raises(streamdb.CorruptionError, match="/log"):
                list(db.messages("/log", start))
        got: list[bytes] = []
        with pytest.raises(streamdb.CorruptionError, match="/log"):
            got.extend(bytes(m) for m in db.messages("/log"))
        assert got == model[: len(got)] and len(got) < bad  # nothing damaged came out
        assert not db.verify().ok


@pytest.mark.parametrize("name", [n for n in NAMES if n is not None])
def test_in_quick_mode_the_frame_checksum_catches_a_flipped_payload_byte(tmp_path: Path,
                                                                         name: Name) -> None:
    path, model, bad = damaged_log(tmp_path, name)
    with streamdb.open(path, config()) as db:
        with pytest.warns(UserWarning):
            db.set_quick_mode(True)
        got: list[bytes] = []
        with pytest.raises(streamdb.ChecksumMismatch, match="/log") as caught:
            got.extend(bytes(m) for m in db.messages("/log"))
        assert got == model[:bad]  # every message before the damaged one, then the error
        assert caught.value.expected is not None and caught.value.computed is not None
        assert caught.value.expected != caught.value.computed
        with pytest.raises(streamdb.ChecksumMismatch, match="/log"):
            read_all(db, "/log", bad)


@pytest.mark.parametrize("name", NAMES)
def test_in_quick_mode_a_damaged_frame_length_is_corruption(tmp_path: Path,
                                                            name: Name) -> None:
    path = tmp_path / "d.db"
    model = [rand(n, f"{name}{n}") for n in (10, 5000, 100_000, 20)]
    with streamdb.open(path, config()) as db:
        db.append_messages("/log", model, checksum=name)
        db.checkpoint()
        where = physical(db, "/log", frame_offsets(name, model)[2] + 3)  # length's top byte
    raw = bytearray(path.read_bytes())
    raw[where] ^= 0x80
    path.write_bytes(bytes(raw))
    with streamdb.open(path, config()) as db:
        with pytest.warns(UserWarning):
            db.set_quick_mode(True)
        got: list[bytes] = []
        with pytest.raises(streamdb.CorruptionError, match="/log"):
            got.extend(bytes(m) for m in db.messages("/log"))
        assert got == model[:2]


def test_an_append_after_damage_does_not_hide_it(tmp_path: Path) -> None:
    """The bytes before an append in the last chunk are read back to checksum the grown
    chunk; damage among them must still be reported afterwards, not sealed in by the new
    checksum (docs/design.md, invariant 3: flipped bytes are never returned as data). A log
    without frame checksums has only the chunk checksum to catch it."""
    path, _model, _bad = damaged_log(tmp_path, None, bad=7)  # in the last chunk
    with streamdb.open(path, config()) as db:
        refused: list[streamdb.CorruptionError] = []
        try:
            db.append_message("/log", b"after the damage", checksum=None)
        except streamdb.CorruptionError as exc:  # refusing to extend damage is fine too
            refused.append(exc)
        assert len(refused) <= 1
        with pytest.raises(streamdb.CorruptionError, match="/log"):
            read_all(db, "/log")
        assert not db.verify().ok


# ---- 6. crash safety on the fault-injecting file layer ------------------------------------

CRASH_DB = "/data/logs.db"
CRASH_CONFIG = config()
CONFIGS = {"plain": CRASH_CONFIG, "aes": config(encryption_key=KEY)}  # crash-test configs
PLAIN = "/doc"  # the workload's one plain document
AFTER = "/after"  # a plain document the checks write after recovery
State = dict[str, tuple[bytes, ...]]  # log path -> messages; plain path -> (its bytes,)


@dataclass
class Outcome:
    acked: State
    pending: State | None = None  # the state had the failing step taken effect
    error: BaseException | None = None
    steps: int = 0
    close_error: BaseException | None = None  # closing after the fault may fail too


@dataclass(frozen=True)
class Step:
    kind: Literal["append", "doc", "checkpoint"]
    path: str = ""
    checksum: Name = "xxh3"
    payloads: tuple[bytes, ...] = ()


def crash_steps() -> list[Step]:
    """Single and batched appends to two logs: inline, the move to pages (first extent),
    filling it and allocating more (one across a chunk boundary), empty payloads, a plain
    document between them and checkpoints."""
    rng = random.Random(1)

    def blob(n: int) -> bytes:
        return rng.randbytes(n)

    def append(path: str, *sizes: int, checksum: Name = "xxh3") -> Step:
        return Step("append", path, checksum, tuple(blob(n) for n in sizes))

    return [
        append("/log", 10),
        append("/log", *[100] * 5),
        append("/log", 2000),
        append("/log", 3000, 1500),  # past 4 KiB: moves to pages
        Step("doc", PLAIN, payloads=(blob(70_000),)),
        Step("checkpoint"),
        append("/log", *[1500] * 40),  # fills the first extent, allocates the next
        append("/log", 0),
        append("/other", 1, 0, 5000, checksum="crc16"),
        append("/log", 200_000),  # across the first chunk boundary
        Step("checkpoint"),
        append("/log", 100_000),  # past the extents' room: one more
        append("/other", 3, checksum="crc16"),
    ]


def apply(state: State, step: Step) -> State:
    after = dict(state)
    if step.kind == "append":
        after[step.path] = state.get(step.path, ()) + step.payloads
    elif step.kind == "doc":
        after[step.path] = step.payloads
    return after


def crash_run(vfs: MemoryVFS | FaultyVFS, cfg: Config = CRASH_CONFIG) -> Outcome:
    """Run the workload until the first error; the model before and after each step."""
    out = Outcome({})
    try:
        db = streamdb.open(CRASH_DB, cfg, vfs=vfs)
    except streamdb.StreamDbError as exc:
        out.error = exc
        return out
    try:
        for step in crash_steps():
            attempt = apply(out.acked, step)
            try:
                if step.kind == "append":
                    got = (db.append_message(step.path, step.payloads[0],
                                             checksum=step.checksum)
                           if len(step.payloads) == 1 else
                           db.append_messages(step.path, step.payloads,
                                              checksum=step.checksum))
                    assert got == len(out.acked.get(step.path, ())), "wrong first index"
                elif step.kind == "doc":
                    db.write_document(step.path, step.payloads[0])
                else:
                    db.checkpoint()
            except streamdb.StreamDbError as exc:
                out.pending, out.error = attempt, exc
                return out
            out.acked = attempt
            out.steps += 1
        try:
            db.close()
        except streamdb.StreamDbError as exc:
            out.error = exc
    finally:
        if out.error is not None:
            try:
                db.close()
            except streamdb.StreamDbError as exc:  # the fault may hit close() too; the
                out.close_error = exc  # simulated crash follows anyway
    return out


def crash_state(db: streamdb.Database) -> State:
    return {p: (db.get(p),) if p in (PLAIN, AFTER) else tuple(read_all(db, p)) for p in db}


def crash_check(disk: MemoryVFS, out: Outcome, cfg: Config = CRASH_CONFIG) -> None:
    """Recovery: the acknowledged messages, in order, or those plus the whole in-flight
    batch; no torn message (every log parses to its end); verify() clean; the log takes
    appends (inline and on new pages) that survive a power loss."""
    with streamdb.open(CRASH_DB, cfg, vfs=disk) as db:
        got = crash_state(db)
        allowed = [out.acked] + ([out.pending] if out.pending is not None else [])
        assert got in allowed, ({p: len(m) for p, m in got.items()}, out.error)
        report = db.verify()
        assert report.ok, report.problems
        db._engine._check()
        before = got.get("/log", ())
        # A large append first: on pages and new extents whatever the recovered log was
        # (test_a_small_append_after_a_checkpoint_keeps_the_log covers the small one).
        assert db.append_messages("/log", [rand(100_000, "after"), b""]) == len(before)
        assert db.append_message("/log", b"after") == len(before) + 2
        db.write_document(AFTER, rand(50_000, "after"))  # pages of its own
        more = (rand(100_000, "after"), b"", b"after")
        assert tuple(read_all(db, "/log", len(before))) == more
        assert db.get(AFTER) == rand(50_000, "after")
    with streamdb.open(CRASH_DB, cfg, vfs=disk.crash(keep="none")) as again:
        assert crash_state(again) == {**got, "/log": before + more,
                                      AFTER: (rand(50_000, "after"),)}


def total_calls(only: frozenset[str] | None = None, cfg: Config = CRASH_CONFIG) -> int:
    probe = FaultyVFS(MemoryVFS(), only=only)
    out = crash_run(probe, cfg)
    assert out.error is None, out.error
    return probe.calls


def points(total: int, test: str, stride: int) -> list[int]:
    """The calls 1..total a sweep fails: all of them under STREAMDB_STRESS, else every
    `stride`-th from a seeded offset."""
    if STRESS or stride == 1:
        return list(range(1, total + 1))
    start = 1 + random.Random(zlib.crc32(test.encode())).randrange(stride)
    return list(range(start, total + 1, stride))


@pytest.mark.parametrize("which", CONFIGS)
def test_the_workload_runs_clean_and_survives_power_loss(which: str) -> None:
    cfg = CONFIGS[which]
    mem = MemoryVFS()
    out = crash_run(mem, cfg)
    assert out.error is None and out.steps == len(crash_steps())
    assert len(out.acked["/log"]) == 52 and len(out.acked["/other"]) == 4
    for keep in ("none", "random", "all"):
        crash_check(mem.crash(keep=keep, rng=random.Random(1)), out, cfg)


WRITES = frozenset({"pwritev", "allocate", "truncate"})
SYNCS = frozenset({"sync", "sync_dir"})


@pytest.mark.parametrize("which", CONFIGS)
@pytest.mark.parametrize(("code", "only"), [(errno.EIO, None), (errno.ENOSPC, WRITES)],
                         ids=["EIO", "ENOSPC"])
def test_fail_every_file_call_in_turn(code: int, only: frozenset[str] | None,
                                      which: str) -> None:
    """EIO at every file call; ENOSPC at every call that can run out of space (outside
    STREAMDB_STRESS every 5th and every 3rd, and half as many for the encrypted run)."""
    cfg = CONFIGS[which]
    total = total_calls(only, cfg)
    assert total > 20
    stride = (5 if only is None else 3) * (2 if which == "aes" else 1)
    for n in points(total, f"fail-{code}-{which}", stride):
        mem = MemoryVFS()
        out = crash_run(FaultyVFS(mem, fail_at=n, errno=code, only=only), cfg)
        assert out.error is not None, n
        crash_check(mem.crash(keep="none" if n % 2 else "all"), out, cfg)
        if code == errno.EIO:
            crash_check(mem.crash(keep="all" if n % 2 else "none"), out, cfg)


@pytest.mark.parametrize("which", CONFIGS)
def test_power_loss_at_every_sync_keeping_random_sectors(which: str) -> None:
    """A power loss at each sync (every other one outside STREAMDB_STRESS), the unsynced
    writes landing sector by sector at random."""
    cfg = CONFIGS[which]
    syncs = FaultyVFS(MemoryVFS(), only=SYNCS)
    crash_run(syncs, cfg)
    assert syncs.calls > 10
    rng = random.Random(5)
    for n in points(syncs.calls, f"sync-{which}", 2):
        mem = MemoryVFS()
        out = crash_run(FaultyVFS(mem, fail_at=n, only=SYNCS), cfg)
        for _ in range(8 if STRESS else 2):
            crash_check(mem.crash(keep="random", rng=rng), out, cfg)


@pytest.mark.parametrize("which", CONFIGS)
def test_a_failed_append_leaves_the_log_usable_without_reopening(which: str) -> None:
    cfg = CONFIGS[which]
    mem = MemoryVFS()
    faulty = FaultyVFS(mem, only=frozenset({"pwritev"}))
    with streamdb.open(CRASH_DB, cfg, vfs=faulty) as db:
        model = [b"kept", rand(10_000, "kept")]
        db.append_messages("/log", model)
        for size in (10, 200_000):  # inline, and pages in a new extent
            faulty.fail_at, faulty.errno = faulty.calls + 1, errno.ENOSPC
            with pytest.raises(streamdb.StorageFullError):
                db.append_messages("/log", [rand(size, size), b"x"])
            faulty.fail_at = None
            assert read_all(db, "/log") == model
            assert db.append_message("/log", rand(size, "ok")) == len(model)
            model.append(rand(size, "ok"))
        assert read_all(db, "/log") == model
        assert db.verify().ok
        check_all(db)
    with streamdb.open(CRASH_DB, cfg, vfs=mem.crash(keep="none")) as db:
        assert read_all(db, "/log") == model


@pytest.mark.parametrize("keep", ["all", "none"])
def test_a_log_extent_is_not_given_out_again_after_a_crash(keep: Literal["all", "none"]) -> None:
    """A log's extent has room for later appends past the bytes written so far, so the
    file may end inside it. After a crash before the next checkpoint the reopened database
    must still count the whole extent as the log's: neither another document nor the
    checkpoint's index pages may be put there, where the log's next append writes."""
    mem = MemoryVFS()
    db = streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=mem)
    db.append_message("/log", rand(5000, 0))  # to pages: a 64 KiB extent, 5 KB written
    disk = mem.crash(keep=keep)  # killed (or the power lost) before any checkpoint
    db.close()
    model = [rand(5000, 0)]
    doc = rand(100_000, "doc")
    with streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=disk) as db:
        db.write_document("/doc", doc)
        db.append_message("/log", rand(30_000, 1))  # fills the log's own extent
        model.append(rand(30_000, 1))
        assert db.get("/doc") == doc
        assert read_all(db, "/log") == model
        report = db.verify()
        assert report.ok, report.problems
        check_all(db)
    # Again, then a clean close: its checkpoint writes the index; the next append and a
    # crash; the index must still read.
    db = streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=disk)
    db.append_message("/log2", rand(5000, 2))
    again = disk.crash(keep=keep)
    db.close()
    with streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=again) as db:
        assert read_all(db, "/log2") == [rand(5000, 2)]
    with streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=again) as db:
        db.append_message("/log2", rand(50_000, 3))
        last = again.crash(keep=keep)
    with streamdb.open(CRASH_DB, CRASH_CONFIG, vfs=last) as db:
        assert read_all(db, "/log2") == [rand(5000, 2), rand(50_000, 3)]
        assert db.get("/doc") == doc and read_all(db, "/log") == model
        report = db.verify()
        assert report.ok, report.problems


# ---- 7. kill -9 -----------------------------------------------------------------------------

WRITER = Path(__file__).with_name("kill_log_writer.py")
KILL_ROUNDS = int(os.environ.get("KILL_ROUNDS", "6"))
ROUNDS_PER_DB = 8  # then a new database: a log grows by ~10 MB a round


def kill_round(path: Path, seed: int, rng: random.Random, start: int,
               key: bytes | None = None) -> int:
    """Run and kill one writer appending to LOG, which held `start` messages (in a
    database encrypted with `key`, if given); check the log and return how many messages
    it holds now."""
    args = [str(path), LOG, str(seed)] + ([key.hex()] if key is not None else [])
    lines = run_and_kill(WRITER, args, rng, (0.05, 0.6))
    assert [line for line in lines if line.startswith("S ")] == [f"S {start}"], lines[:3]
    acked, pending = start, None
    for line in lines:
        kind, *rest = line.split()
        if kind == "P":
            pending = (int(rest[0]), int(rest[1]))
            assert pending[0] == acked
        elif kind == "A":
            assert pending is not None and int(rest[0]) == sum(pending)
            acked, pending = int(rest[0]), None
    with streamdb.open(path, Config(encryption_key=key)) as db:
        report = db.verify()
        assert report.ok, (seed, report.problems)
        got = read_all(db, LOG) if LOG in db else []  # parses cleanly to its end
    allowed = {acked} | ({sum(pending)} if pending is not None else set())
    assert len(got) in allowed, (len(got), acked, pending)
    for i, message in enumerate(got):
        assert message == kill_payload(i), f"message {i} is not what was appended"
    return len(got)


def kill_rounds(tmp_path: Path, count: int, rng: random.Random,
                key: bytes | None = None) -> None:
    """Kill writer after writer; each round appends to what the previous ones left."""
    total = 0
    n = 0
    for seed in range(count):
        path = tmp_path / f"k{seed // ROUNDS_PER_DB}.db"
        if seed % ROUNDS_PER_DB == 0:
            n = 0
            for old in tmp_path.glob("k*.db*"):
                old.unlink()
        n = kill_round(path, seed, rng, n, key)
        total += n
    assert total > 0, "no writer acknowledged anything"


def test_sigkill_never_loses_an_acknowledged_message(tmp_path: Path) -> None:
    kill_rounds(tmp_path, KILL_ROUNDS, random.Random(11))


def test_sigkill_never_loses_an_acknowledged_encrypted_message(tmp_path: Path) -> None:
    kill_rounds(tmp_path, max(3, KILL_ROUNDS // 2), random.Random(12), KEY)


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "aes"])
def test_sigkill_stress(tmp_path: Path, key: bytes | None) -> None:
    kill_rounds(tmp_path, 200, random.Random(99), key)
