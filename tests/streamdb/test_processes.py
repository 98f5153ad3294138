"""One writer process and read-only reader processes at once (docs/design.md, invariant 7:
single writer, many readers),
killed with SIGKILL at random moments and restarted.

The writer (proc_writer.py) announces each commit before it starts (`B`, with the digest of
the state it will produce) and acknowledges it after (`A`). Readers (proc_reader.py) refresh,
read and check every document, and report the digest of the whole state they saw. Here:
- a reader never sees a generation the writer had not started, and every state it sees is
  exactly one the writer committed (so no half group, no half transaction);
- every writer restart recovers every acknowledged commit, and the one in flight wholly or
  not at all;
- at the end the database verifies, its contents are the acknowledged ones, and the reader
  table holds no live entry.

Then focused tests: a reader process holding an old state keeps its pages from reuse until
it leaves, and two interleavings of a read-only open's refresh() with the writer, forced.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

import streamdb
from streamdb.engine import Engine
from streamdb.reads import version_at
from streamdb.storage.readers import HEADER_SIZE, FileReaderTable
from tests.streamdb import stressdocs as sd

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
WAIT = 60.0  # seconds: a bound on waiting for a process, far beyond any healthy delay


class Proc:
    """A helper process whose stdout lines we collect."""

    def __init__(self, name: str, args: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with log.open("ab") as err:
            self.popen = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=err, env=env)
        assert self.popen.stdout is not None and self.popen.stdin is not None
        self.stdout: IO[bytes] = self.popen.stdout
        self.stdin: IO[bytes] = self.popen.stdin
        self.buf = b""
        self.eof = False

    def feed(self, data: bytes) -> list[str]:
        if not data:
            self.eof = True
            data = b"\n" if self.buf else b""
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode() for line in lines if line]

    def read_ready(self, timeout: float = 0.0) -> list[str]:
        """The lines available now (waiting up to `timeout` for the first)."""
        lines: list[str] = []
        while not self.eof and select.select([self.stdout], [], [], timeout)[0]:
            lines += self.feed(os.read(self.stdout.fileno(), 1 << 16))
            timeout = 0.0
        return lines

    def kill(self) -> list[str]:
        """SIGKILL; the lines it wrote before dying."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(WAIT)
        return self.finish()

    def finish(self) -> list[str]:
        lines = []
        while not self.eof:
            lines += self.feed(os.read(self.stdout.fileno(), 1 << 16))
        self.stdout.close()
        self.stdin.close()
        return lines

    def died(self) -> str:
        return (f"{self.name} exited by itself with status {self.popen.wait(WAIT)}:\n"
                f"{self.log.read_text(errors='replace')[-4000:]}")


@dataclass
class Ledger:
    """What the writers announced and acknowledged, and what readers saw."""

    model: dict[str, int] = field(default_factory=dict)  # after every acknowledged commit
    pending: tuple[int, str, dict[str, int]] | None = None  # (gen, digest, state) in flight
    started: int = 0  # the newest generation announced
    states: set[str] = field(default_factory=lambda: {sd.state_digest({})})
    acked: int = 0
    maintenance: dict[str, int] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)  # reader name -> passes reported
    side_reads: dict[str, int] = field(default_factory=dict)  # passes the other thread read in
    in_doubt: list[bool | None] = field(default_factory=list)  # per reopen: in flight kept?

    def writer_line(self, line: str) -> None:
        kind, *rest = line.split()
        if kind == "O":  # a restarted writer's recovered state
            self.resolve(rest[0])
        elif kind == "B":
            gen, digest, ops = int(rest[0]), rest[1], rest[2:]
            assert self.pending is None, f"B {gen} before A {self.pending}"
            assert gen == self.started + 1, (gen, self.started)
            after = dict(self.model)
            for op in ops:
                if op[0] == "+":
                    after[op[1:]] = gen
                else:
                    del after[op[1:]]
            assert sd.state_digest(after) == digest, "the writer's model disagrees with ours"
            self.started, self.pending = gen, (gen, digest, after)
            self.states.add(digest)
        elif kind == "A":
            assert self.pending is not None and self.pending[0] == int(rest[0]), line
            self.model = self.pending[2]
            self.pending = None
            self.acked += 1
        else:
            assert kind == "C", line
            self.maintenance[rest[0]] = self.maintenance.get(rest[0], 0) + 1

    def resolve(self, digest: str) -> None:
        """A reopened database holds every acknowledged commit, and the one in flight when
        its writer was killed wholly or not at all."""
        if self.pending is not None and digest == self.pending[1]:
            self.model = self.pending[2]
            self.in_doubt.append(True)
        else:
            assert digest == sd.state_digest(self.model), (
                f"recovered state {digest} is neither the acknowledged one nor that plus the "
                f"commit in flight {self.pending}")
            self.in_doubt.append(None if self.pending is None else False)
        self.pending = None


class Run:
    """The writer, the readers, and the checks on their lines."""

    def __init__(self, path: Path, tmp: Path, seed: int) -> None:
        self.path = path
        self.tmp = tmp
        self.seed = seed
        self.ledger = Ledger()
        self.starts = 0
        self.writer = self.start_writer()
        self.readers = {f"r{i}": self.start_reader(f"r{i}") for i in range(2)}

    def start_writer(self) -> Proc:
        self.starts += 1
        proc = Proc("writer", [str(HERE / "proc_writer.py"), str(self.path),
                               str(self.seed * 1000 + self.starts), str(self.ledger.started + 1)],
                    self.tmp / f"writer-{self.starts}.log")
        if self.starts == 1:  # the database exists once the first writer reports
            lines = proc.read_ready(WAIT)
            if lines[:1] != ["O " + sd.state_digest({})]:
                proc.popen.kill()
                pytest.fail(f"{lines}: {proc.died()}")
            self.on_writer(lines)
        return proc

    def start_reader(self, name: str) -> Proc:
        self.starts += 1
        return Proc(name, [str(HERE / "proc_reader.py"), str(self.path),
                           str(self.seed * 1000 + self.starts)],
                    self.tmp / f"{name}-{self.starts}.log")

    def on_writer(self, lines: list[str]) -> None:
        for line in lines:
            self.ledger.writer_line(line)

    def drain_writer(self) -> None:
        """Every line the writer has written so far: it announces a commit before making
        it, so a reader that saw the commit was preceded by the announcement."""
        self.on_writer(self.writer.read_ready())

    def on_reader(self, name: str, lines: list[str]) -> None:
        ledger = self.ledger
        for line in lines:
            kind, *rest = line.split()
            assert kind == "P", line
            newest, digest = int(rest[2]), rest[3]
            if newest > ledger.started or digest not in ledger.states:
                self.drain_writer()
            assert newest <= ledger.started, f"{name} saw gen {newest}, never started: {line}"
            assert digest in ledger.states, f"{name} saw a state never committed: {line}"
            ledger.passes[name] = ledger.passes.get(name, 0) + 1
            ledger.side_reads[name] = ledger.side_reads.get(name, 0) + (int(rest[5]) > 0)

    def poll(self, until: float) -> None:
        """Handle output until `until` (monotonic); fail if a process exits on its own."""
        procs = {p.stdout.fileno(): p for p in [self.writer, *self.readers.values()]}
        while (left := until - time.monotonic()) > 0:
            for fd in select.select(list(procs), [], [], left)[0]:
                proc = procs[fd]
                lines = proc.feed(os.read(fd, 1 << 16))
                if proc is self.writer:
                    self.on_writer(lines)
                else:
                    self.on_reader(proc.name, lines)
                assert not proc.eof, proc.died()

    def kill(self, name: str) -> None:
        if name == "writer":
            self.on_writer(self.writer.kill())
            self.writer = self.start_writer()
        else:
            reader = self.readers[name]
            self.on_reader(name, reader.kill())
            self.readers[name] = self.start_reader(name)

    def stop(self, rng: random.Random) -> None:
        """Kill the writer; kill one reader, and let the other exit by closing its stdin."""
        self.on_writer(self.writer.kill())
        killed, closed = rng.sample(sorted(self.readers), 2)
        self.on_reader(killed, self.readers[killed].kill())
        reader = self.readers[closed]
        reader.stdin.close()
        assert reader.popen.wait(WAIT) == 0, reader.died()
        lines = reader.finish()
        assert lines[-1:] == ["X"], lines
        self.on_reader(closed, lines[:-1])


def process_stress(tmp_path: Path, seed: int, duration: float) -> None:
    path = tmp_path / "p.db"
    rng = random.Random(seed)
    run = Run(path, tmp_path, seed)
    try:
        end = time.monotonic() + duration
        victims: list[str] = []
        while time.monotonic() < end:
            run.poll(min(end, time.monotonic() + rng.uniform(0.2, 1.2)))
            if not victims:
                victims = ["writer", "r0", "r1"]
                rng.shuffle(victims)
            run.kill(victims.pop())
        run.poll(time.monotonic() + 0.5)
        run.stop(rng)
    finally:
        for proc in [run.writer, *run.readers.values()]:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(WAIT)
    ledger = run.ledger
    print(f"commits acknowledged {ledger.acked}, maintenance {ledger.maintenance}, "
          f"reader passes {ledger.passes} (with reads by a second thread: "
          f"{ledger.side_reads}), writer restarts (in flight kept?) {ledger.in_doubt}")
    assert ledger.acked >= 10 * duration / 12, ledger.acked
    assert min(ledger.passes.get(name, 0) for name in ("r0", "r1")) >= 5 * duration / 12
    assert min(ledger.side_reads.get(name, 0) for name in ("r0", "r1")) >= 1
    assert len(ledger.in_doubt) >= 2  # the writer was killed and restarted

    with streamdb.open(path) as db:
        state = {p: sd.parse(p, db.get(p)) for p in db.search("/")}
        ledger.resolve(sd.state_digest(state))
        assert state == ledger.model
        assert {p: db.get(p) for p in db} == {p: sd.make(p, g) for p, g in state.items()}
        assert db.stats().readers == 0
        table = db._engine._table
        assert isinstance(table, FileReaderTable)
        table._check()
        # Killed readers' slots were reclaimed: the table holds no entry at all.
        raw = (path.parent / (path.name + "-readers")).read_bytes()[HEADER_SIZE:]
        assert raw == bytes(len(raw))
        db._engine._check()
        report = db.verify()
        assert report.ok, report.problems
    with streamdb.open(path) as db:
        assert {p: sd.parse(p, db.get(p)) for p in db} == ledger.model
        assert db.verify().ok


def test_processes_stress(tmp_path: Path) -> None:
    process_stress(tmp_path, seed=1, duration=12.0)


@pytest.mark.slow
def test_processes_stress_long(tmp_path: Path) -> None:
    process_stress(tmp_path, seed=2,
                   duration=float(os.environ.get("STREAMDB_STRESS_SECONDS", "120")))


# ---- one reader process holding an old state ---------------------------------------------


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("leave", ["exit", "kill"])
def test_reader_process_keeps_its_pages_until_it_leaves(tmp_path: Path, leave: str) -> None:
    """A reader process holding a state still reads a document the writer deleted, byte
    for byte, after gc() and many new large writes: its pages were not reused. Once the
    reader is gone (closed, or killed), gc() makes them reusable."""
    path = tmp_path / "h.db"
    big = random.Random(5).randbytes(4 << 20)
    with streamdb.open(path) as db:
        db.write_document("/big", big)
        db.write_document("/small", b"x" * 100)
        db.checkpoint()
        old = version_at(db._engine._pins.current, "/big", None).extents
        old_pages = {p for start, count in old for p in range(start, start + count)}
        reader = Proc("holder", [str(HERE / "proc_reader.py"), str(path), "0", "hold", "/big"],
                      tmp_path / "holder.log")
        try:
            lines = reader.read_ready(WAIT)
            assert lines == [f"H {digest(big)} {digest(big)}"], (lines, reader.log.read_text())
            assert db.stats().readers == 1

            db.delete("/big")
            db.gc()
            rng = random.Random(6)
            for i in range(10):
                db.write_document(f"/new/{i}", rng.randbytes(3 << 20))
                if i % 3 == 2:
                    db.delete(f"/new/{i - 1}")
                    db.gc()
            db.gc()
            free = {p for start, count in db._engine._space.extents()
                    for p in range(start, start + count)}
            used = {p for d in db._engine.catalog.iter_docs() for v in d.versions
                    for start, count in v.extents for p in range(start, start + count)}
            assert not old_pages & (free | used), "pages a reader process holds were reused"

            reader.stdin.write(b"again\n")
            reader.stdin.flush()
            lines = reader.read_ready(WAIT)
            assert lines == [f"H {digest(big)}" + f" {digest(big)}" * 3], reader.log.read_text()
            reader.stdin.write(b"refresh\n")
            reader.stdin.flush()
            lines = reader.read_ready(WAIT)
            assert lines == ["R False"], reader.log.read_text()  # it moves on when it refreshes
            db.gc()  # the reader has moved on, but it is still there

            if leave == "kill":
                reader.kill()
            else:
                reader.stdin.close()
                assert reader.popen.wait(WAIT) == 0, reader.died()
                assert reader.finish() == ["X"]
        finally:
            if reader.popen.poll() is None:
                reader.popen.kill()
                reader.popen.wait(WAIT)
        db.gc()
        assert db.stats().readers == 0
        free = {p for start, count in db._engine.free_extents()
                for p in range(start, start + count)}
        assert old_pages <= free, "the old document's pages were not freed"
        pages = db.stats().file_pages
        db.write_document("/again", big)  # fits in the freed space: the file does not grow
        assert db.stats().file_pages == pages
        assert db.get("/again") == big
        db._engine._space._check()
        assert db.verify().ok


# ---- a read-only open's refresh() racing the writer ---------------------------------------


def test_refresh_racing_a_compaction_never_follows_the_new_files_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """refresh() checks that the path still names the file it has open, then reads the log
    tail. A compaction that renames a new file over the path, and a commit after it, may
    land between the two: the commit's records name pages of the new file, and must not be
    applied to the old one. (The interleaving is forced here; in the process stress test it
    happens by chance.)"""
    path = tmp_path / "c.db"
    old, new = random.Random(1).randbytes(300_000), random.Random(2).randbytes(300_000)
    with streamdb.open(path) as writer, streamdb.open(path, readonly=True) as reader:
        writer.write_document("/junk", random.Random(3).randbytes(2_000_000))
        writer.write_document("/a", old)
        writer.delete("/junk")
        writer.checkpoint()
        reader.refresh()
        assert reader.get("/a") == old
        real = Engine._follow

        def follow(engine: Engine) -> None:
            if engine is reader._engine:  # after refresh()'s same-file check, before its poll
                monkeypatch.setattr(Engine, "_follow", real)
                writer.compact()
                writer.write_document("/a", new)
            real(engine)

        monkeypatch.setattr(Engine, "_follow", follow)
        reader.refresh()
        assert reader.get("/a") in (old, new)  # the state before, or after: never garbage
        reader.refresh()
        assert reader.get("/a") == new


def test_a_read_starting_while_refresh_reloads_keeps_its_pages(tmp_path: Path) -> None:
    """A read-only Database shared by threads: a read (here a stream) that starts while
    another thread's refresh() reloads after a checkpoint reads the state still published,
    so that state's pages must stay out of reuse until the read ends, even though the
    reload has already written the newer header's stamp into the reader table."""
    path = tmp_path / "l.db"
    v1 = random.Random(1).randbytes(1_000_000)
    with streamdb.open(path) as writer, streamdb.open(path, readonly=True) as reader:
        writer.write_document("/a", v1)
        writer.checkpoint()
        reader.refresh()
        assert reader.get("/a") == v1
        writer.delete("/a")
        writer.checkpoint()  # a new header: the next refresh() reloads
        slot = reader._engine._slot
        assert slot is not None
        real = slot.publish
        streams: list[Iterator[bytes]] = []

        def publish(db_id: bytes, stamp: tuple[int, int]) -> None:
            real(db_id, stamp)
            if not streams:  # the reload's first publish: another thread starts a read now
                streams.append(reader.get_stream("/a", chunk_size=1 << 20))
                writer.gc()
                for i in range(4):
                    writer.write_document(f"/b{i}", random.Random(10 + i).randbytes(len(v1)))

        slot.publish = publish  # type: ignore[method-assign]
        reader.refresh()
        assert b"".join(streams[0]) == v1
        assert "/a" not in reader


def test_a_read_during_a_reload_after_compaction_finds_its_file_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a compaction renamed a new file over the path, a read-only open's refresh()
    opens the new file, reads the state there, then publishes it. A read in another thread
    meanwhile reads the state still published, over the old file: that file must stay
    open until no state over it is published or held."""
    path = tmp_path / "o.db"
    a = random.Random(1).randbytes(100_000)
    with streamdb.open(path) as writer, streamdb.open(path, readonly=True) as reader:
        writer.write_document("/a", a)
        reader.refresh()
        assert reader.get("/a") == a
        writer.compact()  # the next refresh() reopens
        real = Engine._follow
        during: list[bytes] = []

        def follow(engine: Engine) -> None:
            if engine is reader._engine and not during:  # the reload has opened the new file
                during.append(reader.get("/a"))  # another thread's read, now
            real(engine)

        monkeypatch.setattr(Engine, "_follow", follow)
        reader.refresh()
        assert during == [a]
        assert reader.get("/a") == a
