"""Opening and closing (docs/design.md, section 2 "Opening and configuration", invariant 7):
the writer lock and lock_timeout, read-only opens in this and other processes, close() with
live views, snapshots, streams and file objects, fork(), and the reader table's entries of
closed databases and dead processes."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import pytest

import streamdb
from streamdb import Config
from tests.streamdb.test_snapshots import BIG, BIG_PAGES, check_all, rand

PAGE = 4096
WAIT = 10.0  # generous bound for things that must happen
BLOCKED = 0.2  # how long something that must wait is watched not finishing
ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def config(**overrides: object) -> Config:
    return Config(**{"page_size": PAGE, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "l.db"


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True,
                          text=True, timeout=60, check=False)


def churn(db: streamdb.Database, rounds: int = 3) -> None:
    """Enough writes, deletes and gc() that any unprotected free page gets reused."""
    for r in range(rounds):
        for i in range(6):
            db.write_document(f"/churn/{r}/{i}", rand(BIG, f"churn{r}.{i}"))
        for p in db.search(f"/churn/{r - 1}/"):
            db.delete(p)
        db.gc()


# ---- the writer lock ---------------------------------------------------------------------

LOCKED_EXIT = 7
OPEN_WRITER = f"""
import sys, streamdb
try:
    streamdb.open(sys.argv[1])
except streamdb.LockedError:
    sys.exit({LOCKED_EXIT})
"""


def test_a_second_writer_is_locked_out_at_once(path: Path) -> None:
    with streamdb.open(path, config()) as db:
        db.write_document("/x", b"x")
        start = time.monotonic()
        with pytest.raises(streamdb.LockedError):
            streamdb.open(path, config())
        assert time.monotonic() - start < 0.5
        assert python(OPEN_WRITER, str(path)).returncode == LOCKED_EXIT
        db.write_document("/y", b"y")  # the failed opens changed nothing
        assert sorted(db) == ["/x", "/y"]
    with streamdb.open(path, config()) as again:  # released by close()
        assert sorted(again) == ["/x", "/y"]


def test_lock_timeout_waits_for_the_writer_to_close(path: Path) -> None:
    first = streamdb.open(path, config())
    first.write_document("/x", b"from the first writer")
    closer = threading.Timer(0.1, first.close)
    start = time.monotonic()
    closer.start()
    try:
        second = streamdb.open(path, config(lock_timeout=0.5))
    finally:
        closer.join()
    elapsed = time.monotonic() - start
    with second:
        assert 0.09 <= elapsed < 0.5, elapsed
        assert second.get("/x") == b"from the first writer"
        second.write_document("/y", b"second")


def test_lock_timeout_expires_with_locked_error(path: Path) -> None:
    with streamdb.open(path, config()) as first:
        start = time.monotonic()
        with pytest.raises(streamdb.LockedError):
            streamdb.open(path, config(lock_timeout=0.5))
        elapsed = time.monotonic() - start
        assert 0.5 <= elapsed < 2.5, elapsed
        first.write_document("/still", b"mine")
        assert first.get("/still") == b"mine"


# ---- read-only opens ---------------------------------------------------------------------


def test_readonly_and_writer_do_not_block_each_other(path: Path) -> None:
    writer = streamdb.open(path, config())
    writer.write_document("/x", b"1")
    big = writer.write_document("/big", rand(BIG, "ro"))
    ro = streamdb.open(path, readonly=True)  # while the writer is open
    assert writer.stats().readers == 1
    writer.write_document("/x", b"2")
    assert ro.get("/x") == b"1"  # the state of its open...
    assert ro.refresh() == writer.refresh()  # ...until it moves on
    assert ro.get("/x") == b"2"
    writer.checkpoint()
    writer.write_document("/x", b"3")
    assert ro.refresh() == writer.refresh()
    assert ro.get("/x") == b"3" and ro.get("/big") == rand(BIG, "ro")
    writer.close()
    ro2 = streamdb.open(path, readonly=True)  # no writer at all
    writer = streamdb.open(path, config())  # a read-only open takes no writer lock
    writer.write_document("/x", b"4")
    assert ro2.get("/x") == b"3" and ro2.refresh() == writer.refresh()
    assert ro2.get("/x") == b"4"
    assert writer.stats().readers == 2
    for call in (
        lambda: ro.write_document("/y", b"y"),
        lambda: ro.write_documents([("/y", b"y")]),
        lambda: ro.delete("/x"),
        lambda: ro.unbind_path("/x"),
        lambda: ro.bind_to_path(big, "/y"),
        lambda: ro.transaction().__enter__(),
        ro.gc,
        ro.checkpoint,
        ro.compact,
        ro.flush,
        lambda: ro.open("/y", "wb"),
    ):
        with pytest.raises(streamdb.ReadOnlyError):
            call()
    assert sorted(ro) == ["/big", "/x"] and ro.get("/x") == b"3"  # not refreshed since
    ro.close()
    assert writer.stats().readers == 1
    ro2.close()
    assert writer.stats().readers == 0
    check_all(writer)
    writer.close()


def test_readonly_open_of_a_missing_or_empty_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(streamdb.NotFoundError):
        streamdb.open(tmp_path / "missing.db", readonly=True)
    assert os.listdir(tmp_path) == [], "a read-only open created files"
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(streamdb.NotFoundError):
        streamdb.open(tmp_path / "empty.db", readonly=True)
    assert (tmp_path / "empty.db").read_bytes() == b""


def test_readonly_follows_checkpoints_and_a_compaction(path: Path) -> None:
    writer = streamdb.open(path, config())
    writer.write_document("/big", rand(BIG, "old"))
    writer.write_document("/keep", b"k")
    ro = streamdb.open(path, readonly=True)
    view = ro.get_view("/big")
    snap = ro.snapshot()
    writer.delete("/big")
    writer.compact()  # a new file renamed over the one ro has open
    writer.write_document("/after", rand(BIG, "after"))
    churn(writer)
    assert ro.refresh() == writer.refresh()
    assert "/big" not in ro and ro.get("/after") == rand(BIG, "after")
    assert sorted(ro.search("/churn/2/")) == [f"/churn/2/{i}" for i in range(6)]
    assert bytes(view) == rand(BIG, "old")
    assert snap.get("/big") == rand(BIG, "old")
    snap.close()
    ro.close()
    assert bytes(view) == rand(BIG, "old")
    writer.close()


READER_LOOP = """
import sys, streamdb
final = int(sys.argv[2])
db = streamdb.open(sys.argv[1], readonly=True)
print("R", flush=True)
seen = []
while True:
    db.refresh()
    with db.snapshot() as snap:
        k = int(snap.get("/pair/a"))
        b = snap.get("/pair/b")
        assert b == (b"%d;" % k) * (20_000 + k), f"half transaction at {k}"
        assert snap.search("/set/") == [f"/set/{k}/{i}" for i in range(3)], k
    assert not seen or seen[-1] <= k, (seen[-1], k)
    if not seen or seen[-1] != k:
        seen.append(k)
    if k == final:
        break
print("OK", len(seen), flush=True)
"""


def test_readonly_process_reads_while_the_writer_writes(path: Path) -> None:
    final = 150
    writer = streamdb.open(path, config())

    def commit(k: int) -> None:
        with writer.transaction():
            for p in writer.search("/set/"):
                writer.delete(p)
            writer.write_document("/pair/a", b"%d" % k)
            writer.write_document("/pair/b", (b"%d;" % k) * (20_000 + k))
            for i in range(3):
                writer.write_document(f"/set/{k}/{i}", b"s")

    commit(0)
    proc = subprocess.Popen([sys.executable, "-c", READER_LOOP, str(path), str(final)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "R"
    for k in range(1, final + 1):
        commit(k)
        if k % 25 == 0:
            writer.checkpoint()
        if k % 40 == 0:
            writer.gc()
        if k == final // 2:
            writer.compact()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("OK"), out
    assert writer.verify().ok
    check_all(writer)
    writer.close()


# ---- close() with things still alive -----------------------------------------------------


def test_close_with_live_views_snapshots_streams_and_files(path: Path) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "close")
    db.write_document("/big", big)
    db.write_document("/small", b"small")
    view = db.get_view("/big")
    array = np.frombuffer(view, dtype=np.uint8)
    part = view[100:200]
    snap = db.snapshot()
    snap_view = snap.get_view("/big")
    stream = cast(Generator[bytes, None, None], db.get_stream("/big", chunk_size=65_536))
    assert next(stream) == big[:65_536]
    file = db.open("/big", "rb")
    assert file.read(10) == big[:10]
    db.close()  # never BufferError, however many views are out
    assert bytes(view) == big and array.tobytes() == big and bytes(part) == big[100:200]
    assert bytes(snap_view) == big
    closed: list[Callable[[], object]] = [
        lambda: snap.get("/small"),
        lambda: snap.get_view("/big"),
        lambda: snap.get_stream("/big"),
        lambda: list(snap),
        lambda: next(stream),
        lambda: file.read(10),
        lambda: db.get("/small"),
        lambda: db.get_view("/big"),
        lambda: db.get_stream("/big"),
        lambda: db.snapshot(),
        lambda: db.open("/big", "rb"),
        lambda: db.write_document("/x", b"x"),
        lambda: db.transaction().__enter__(),
        db.stats,
        db.refresh,
    ]
    for call in closed:
        with pytest.raises(streamdb.ClosedError):
            call()
    db.close()  # idempotent
    snap.close()
    stream.close()
    file.close()
    assert bytes(view) == big and bytes(snap_view) == big
    del view, array, part, snap_view
    gc.collect()
    with streamdb.open(path, config()) as again:
        assert again.stats().readers == 0
        assert again.get("/big") == big


def test_close_waits_for_reads_in_flight(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "in flight")
    db.write_document("/big", big)
    db.write_document("/small", b"s")
    entered, release, closed = threading.Event(), threading.Event(), threading.Event()
    real = db._engine.read

    def held_read(*args: Any) -> bytes:
        entered.set()
        release.wait(WAIT)
        return real(*args)

    monkeypatch.setattr(db._engine, "read", held_read)
    result: dict[str, object] = {}

    def read() -> None:
        try:
            result["data"] = db.get("/big")
        except BaseException as exc:
            result["error"] = exc

    reader = threading.Thread(target=read)
    reader.start()
    assert entered.wait(WAIT)

    def close() -> None:
        db.close()
        closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    deadline = time.monotonic() + WAIT
    while db._engine.closed is None:  # close() has begun refusing new operations...
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(streamdb.ClosedError):
        db.exists("/small")
    assert not closed.wait(BLOCKED), "close() did not wait for the read in flight"
    release.set()
    reader.join(WAIT)
    closer.join(WAIT)
    assert closed.is_set()
    assert result == {"data": big}


def test_a_view_pins_its_pages_across_close_and_a_new_writer_here(path: Path) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "pinned")
    db.write_document("/big", big)
    db.checkpoint()
    view = db.get_view("/big")
    array = np.frombuffer(view, dtype=np.uint8)
    db.close()
    with streamdb.open(path, config()) as writer:
        assert writer.stats().readers == 1  # the closed database's views, published
        writer.delete("/big")
        writer.gc()
        churn(writer, rounds=4)
        assert writer.stats().pending_free_pages >= BIG_PAGES
        assert bytes(view) == big and array.tobytes() == big
        report = writer.verify()
        assert report.ok, report.problems
        check_all(writer)


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "readonly"])
def test_the_pin_of_a_closed_databases_view_goes_with_the_view(path: Path,
                                                               readonly: bool) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "released")
    db.write_document("/big", big)
    db.checkpoint()
    if readonly:
        writer, db = db, streamdb.open(path, readonly=True)
    view = db.get_view("/big")
    db.close()
    if not readonly:
        writer = streamdb.open(path, config())
    with writer:
        writer.delete("/big")
        writer.gc()
        assert writer.stats().readers == 1
        assert writer.stats().pending_free_pages >= BIG_PAGES
        assert bytes(view) == big
        del view
        gc.collect()
        assert writer.stats().readers == 0, "the view is gone but its pin stays"
        writer.gc()
        stats = writer.stats()
        assert stats.pending_free_pages < BIG_PAGES and stats.free_pages >= BIG_PAGES
        writer.write_document("/reuse", rand(BIG, "reuse"))
        assert writer.stats().file_pages == stats.file_pages


def test_a_readonly_view_survives_refreshes_and_the_writers_gc(path: Path) -> None:
    writer = streamdb.open(path, config())
    big = rand(BIG, "ro view")
    writer.write_document("/big", big)
    writer.checkpoint()
    ro = streamdb.open(path, readonly=True)
    view = ro.get_view("/big")
    writer.delete("/big")
    writer.gc()
    for _ in range(3):
        churn(writer, rounds=2)
        assert ro.refresh() == writer.refresh()
        assert "/big" not in ro
        assert bytes(view) == big
    assert writer.stats().pending_free_pages >= BIG_PAGES
    del view
    gc.collect()
    ro.refresh()  # now it holds only the latest state
    writer.gc()
    assert writer.stats().pending_free_pages < BIG_PAGES
    assert writer.stats().readers == 1
    ro.close()
    assert writer.stats().readers == 0
    check_all(writer)
    writer.close()


WRITER_CHURN = """
import json, sys, streamdb
from streamdb import Config
with streamdb.open(sys.argv[1], Config(page_size=4096)) as db:
    readers = db.stats().readers
    if "/big" in db:
        db.delete("/big")
    db.gc()
    for r in range(3):
        for i in range(6):
            db.write_document(f"/churn/{r}/{i}", bytes([r * 6 + i]) * 300_000)
        for p in db.search(f"/churn/{r - 1}/"):
            db.delete(p)
        db.gc()
    stats = db.stats()
    report = db.verify()
print(json.dumps({"readers": readers, "pending": stats.pending_free_pages,
                  "free": stats.free_pages, "file": stats.file_pages, "ok": report.ok}))
"""


def test_a_view_pins_its_pages_across_close_and_a_writer_in_another_process(
    path: Path,
) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "other process")
    db.write_document("/big", big)
    db.checkpoint()
    view = db.get_view("/big")
    db.close()
    done = python(WRITER_CHURN, str(path))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["readers"] == 1 and seen["ok"]
    assert seen["pending"] >= BIG_PAGES
    assert bytes(view) == big


def test_a_writer_in_another_process_reuses_the_pages_once_the_view_is_gone(
    path: Path,
) -> None:
    db = streamdb.open(path, config())
    db.write_document("/big", rand(BIG, "gone"))
    db.checkpoint()
    view = db.get_view("/big")
    db.close()
    del view
    gc.collect()
    done = python(WRITER_CHURN, str(path))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["readers"] == 0, "a dead view's pin is still in the reader table"
    assert seen["pending"] < BIG_PAGES and seen["ok"]


# ---- fork --------------------------------------------------------------------------------


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` in a forked child; return what it returned (or its error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            try:
                result = work()
                code = 0
            except BaseException as exc:
                result = {"error": repr(exc)}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(data or b'{"error": "no result"}')
    assert os.waitstatus_to_exitcode(status) == 0, result
    assert isinstance(result, dict)
    return result


def outcome(call: Callable[[], object]) -> str:
    try:
        call()
    except streamdb.ClosedError as exc:
        return "closed after fork" if "fork" in str(exc) else f"closed: {exc}"
    except Exception as exc:
        return repr(exc)
    return "no error"


def test_after_fork_the_child_must_open_again(path: Path) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "fork")
    db.write_document("/x", b"x")
    db.write_document("/big", big)
    view = db.get_view("/big")
    snap = db.snapshot()
    stream = db.get_stream("/big", chunk_size=100_000)
    assert next(stream) == big[:100_000]
    ro = streamdb.open(path, readonly=True)  # a reader-table slot, under an OFD lock
    assert db.stats().readers == 1

    def child() -> dict[str, Any]:
        out: dict[str, Any] = {name: outcome(call) for name, call in {
            "get": lambda: db.get("/x"),
            "write": lambda: db.write_document("/child", b"c"),
            "delete": lambda: db.delete("/x"),
            "transaction": lambda: db.transaction().__enter__(),
            "gc": db.gc,
            "checkpoint": db.checkpoint,
            "snapshot": db.snapshot,
            "stats": db.stats,
            "len": lambda: len(db),
            "old snapshot": lambda: snap.get("/x"),
            "stream": lambda: next(stream),
            "readonly get": lambda: ro.get("/x"),
        }.items()}
        db.close()  # harmless in the child: nothing of the parent's is touched
        ro.close()
        out["view"] = bytes(view) == big
        out["writer"] = outcome(lambda: streamdb.open(path, config()))
        with streamdb.open(path, readonly=True) as mine:
            out["mine"] = [mine.get("/x").decode(), mine.get("/big") == big]
        return out

    got = in_child(child)
    assert got.pop("view") is True
    assert got.pop("mine") == ["x", True]
    assert got.pop("writer").startswith("LockedError")
    assert got == dict.fromkeys(got, "closed after fork")
    assert len(got) == 12
    # The parent is unaffected: its lock, its reader's slot, its snapshot and stream.
    assert db.stats().readers == 1
    assert python(OPEN_WRITER, str(path)).returncode == LOCKED_EXIT
    with pytest.raises(streamdb.LockedError):
        streamdb.open(path, config())
    db.write_document("/parent", b"p")
    assert db.get("/parent") == b"p" and ro.get("/x") == b"x"
    assert snap.get("/big") == big and b"".join(stream) == big[100_000:]
    db.delete("/big")
    churn(db)
    assert bytes(view) == big
    assert ro.get("/big") == big  # the read-only open's pin survived the child's exit
    assert db.verify().ok
    check_all(db)
    snap.close()
    ro.close()
    db.close()
    with streamdb.open(path, config()) as again:
        assert "/child" not in again and again.get("/x") == b"x"


def test_a_child_may_write_once_the_parent_closed(path: Path) -> None:
    db = streamdb.open(path, config())
    db.write_document("/parent", b"p")
    db.close()

    def child() -> dict[str, Any]:
        with streamdb.open(path, config()) as mine:
            mine.write_document("/child", rand(BIG, "child"))
            return {"paths": list(mine)}

    assert in_child(child) == {"paths": ["/child", "/parent"]}
    with streamdb.open(path, config()) as again:
        assert again.get("/child") == rand(BIG, "child")
        assert again.verify().ok


# ---- reader processes and their table entries ---------------------------------------------

READER_PROCESS = """
import hashlib, sys, streamdb
db = streamdb.open(sys.argv[1], readonly=True)
view = db.get_view("/big") if sys.argv[2] == "view" else None
first = hashlib.sha256(view).hexdigest() if view is not None else ""
print("R", db.refresh(), flush=True)
for line in sys.stdin:
    if line.strip() == "refresh":
        print("L", db.refresh(), flush=True)
    elif line.strip() == "check":
        print("C", hashlib.sha256(view).hexdigest() == first, flush=True)
"""


@pytest.fixture
def reader(path: Path) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", READER_PROCESS, str(path), mode],
                                env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert ask(proc, None).startswith("R ")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def ask(proc: subprocess.Popen[str], command: str | None) -> str:
    stdin: IO[str] | None = proc.stdin
    stdout: IO[str] | None = proc.stdout
    assert stdin is not None and stdout is not None
    if command is not None:
        stdin.write(command + "\n")
        stdin.flush()
    return stdout.readline().strip()


def test_a_killed_readers_entry_is_reclaimed_and_its_pages_reused(
    path: Path, reader: Callable[[str], subprocess.Popen[str]]
) -> None:
    db = streamdb.open(path, config())
    big = rand(BIG, "killed")
    db.write_document("/big", big)
    db.checkpoint()
    proc = reader("view")
    assert db.stats().readers == 1
    db.delete("/big")
    db.gc()
    churn(db)
    assert db.stats().pending_free_pages >= BIG_PAGES  # the reader may still read them
    assert ask(proc, "check") == "C True"  # and it does: its view never changed
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert db.stats().readers == 0  # the dead reader's entry is reclaimed
    db.gc()
    stats = db.stats()
    assert stats.pending_free_pages < BIG_PAGES
    assert stats.free_pages >= BIG_PAGES
    db.write_document("/reuse", rand(BIG, "reuse"))
    assert db.stats().file_pages == stats.file_pages, "the dead reader's pages stay pinned"
    assert db.verify().ok
    check_all(db)
    db.close()


def test_a_live_readers_refresh_lets_its_old_pages_go(
    path: Path, reader: Callable[[str], subprocess.Popen[str]]
) -> None:
    db = streamdb.open(path, config())
    db.write_document("/big", rand(BIG, "live"))
    db.checkpoint()
    proc = reader("none")  # no view: the read-only open pins the state it reads
    db.delete("/big")
    db.gc()
    assert db.stats().pending_free_pages >= BIG_PAGES
    assert ask(proc, "refresh") == f"L {db.refresh()}"
    db.gc()
    assert db.stats().pending_free_pages < BIG_PAGES
    assert db.stats().readers == 1
    stdin = proc.stdin
    assert stdin is not None
    stdin.close()  # the reader exits normally, closing its database
    assert proc.wait(WAIT) == 0
    assert db.stats().readers == 0
    check_all(db)
    db.close()


def test_reader_table_entries_of_many_processes(
    path: Path, reader: Callable[[str], subprocess.Popen[str]]
) -> None:
    db = streamdb.open(path, config())
    db.write_document("/big", rand(BIG, "many"))
    procs = [reader("view") for _ in range(3)]
    assert db.stats().readers == 3
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    assert db.stats().readers == 2
    assert all(ask(p, "check") == "C True" for p in (procs[0], procs[2]))
    db.write_document("/big", b"replaced")
    churn(db, rounds=2)
    assert all(ask(p, "check") == "C True" for p in (procs[0], procs[2]))
    check_all(db)
    db.close()
