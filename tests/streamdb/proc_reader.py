"""Read-only reader process for test_processes.py.

    proc_reader.py PATH SEED            loop: refresh(), read and check everything, print
                                        `P <pass> <lsn> <newest gen> <state digest> <paths>
                                        <reads by the other thread>`, until stdin closes
                                        (then close, print `X`, exit 0); meanwhile another
                                        thread reads random documents through the same
                                        Database
    proc_reader.py PATH SEED hold DOC   read DOC, print `H <sha256 of get> <of get_view>`;
                                        after each line on stdin, read it again from the
                                        same state and print `H <get> <the first view>
                                        <a new view> <get_stream>`; after the line
                                        `refresh`, refresh and print `R <DOC exists>`;
                                        at EOF close, print `X`

Any failed check raises: the traceback goes to stderr and the exit status is 1.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import traceback

import streamdb
from tests.streamdb import stressdocs as sd
from tests.streamdb.proc_writer import MEMBERS, SINGLES, say


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def read_all(src: streamdb.Database | streamdb.Snapshot, rng: random.Random,
             ) -> tuple[dict[str, int], tuple[str, memoryview, str] | None]:
    """path -> generation of every document, each read whole (get, get_stream or get_view)
    and checked; and maybe a view to hold."""
    paths = src.search("/")
    assert len(src) == len(paths) and paths == sorted(paths)
    state: dict[str, int] = {}
    view: tuple[str, memoryview, str] | None = None
    for p in paths:
        how = rng.random()
        if how < 0.5:
            state[p] = sd.parse(p, src.get(p))
        elif how < 0.8:
            size = rng.choice([None, 8192, 100_000])
            state[p] = sd.parse(p, b"".join(src.get_stream(p, chunk_size=size)))
        else:
            v = src.get_view(p)
            state[p] = sd.parse(p, v)
            if view is None and len(v) > 60_000:
                view = (p, v, sha(v))
    sd.check_groups(state, MEMBERS)
    return state, view


def background(db: streamdb.Database, seed: int, reads: list[int],
               stop: threading.Event) -> None:
    """Another thread sharing `db`: reads random documents of whatever state is published
    (refresh() in the main thread moves it on), each checked on its own."""
    rng = random.Random(seed)
    paths = [p for members in MEMBERS.values() for p in members] + SINGLES
    try:
        while not stop.is_set():
            p = rng.choice(paths)
            try:
                if rng.random() < 0.5:
                    sd.parse(p, db.get(p))
                else:
                    sd.parse(p, b"".join(db.get_stream(p, chunk_size=65_536)))
                reads[0] += 1
            except streamdb.NotFoundError:
                reads[1] += 1  # absent from the state published when the read began
    except BaseException:
        traceback.print_exc()
        diagnose(db)
        os._exit(1)


def diagnose(db: streamdb.Database) -> None:
    print(f"reader state: lsn {db._engine._pins.current.lsn}, header generation "
          f"{db._engine.header.generation}, path still names our file: {db._engine._same_file()}",
          file=sys.stderr, flush=True)


def loop(db: streamdb.Database, rng: random.Random, eof: threading.Event) -> None:
    reads = [0, 0]  # documents read whole, absent
    side = threading.Thread(target=background, args=(db, rng.getrandbits(32), reads, eof),
                            daemon=True)
    side.start()
    last_lsn = -1
    held_snapshot: tuple[streamdb.Snapshot, dict[str, int]] | None = None
    held_view: tuple[str, memoryview, str] | None = None
    n = 0
    while not eof.is_set():
        lsn = db.refresh()
        assert lsn >= last_lsn, (lsn, last_lsn)
        last_lsn = lsn
        snap = db.snapshot() if rng.random() < 0.5 else None
        state, view = read_all(snap or db, rng)
        # What was held through the refresh (and whatever the writer did since) is as it was.
        if held_snapshot is not None:
            old, old_state = held_snapshot
            assert {p: sd.header_gen(p, old.get(p, length=sd.HEADER_MAX))
                    for p in old.search("/")} == old_state
            if old_state:
                p = rng.choice(sorted(old_state))
                assert sd.parse(p, old.get(p)) == old_state[p]
            old.close()
            held_snapshot = None
        if held_view is not None:
            p, v, digest = held_view
            assert sha(v) == digest, f"the view of {p} changed"
        held_view = view or held_view
        if snap is not None:
            if rng.random() < 0.5:
                held_snapshot = (snap, state)
            else:
                snap.close()
        n += 1
        say(f"P {n} {lsn} {max(state.values(), default=0)} {sd.state_digest(state)} "
            f"{len(state)} {reads[0]}")
    side.join()


def hold(db: streamdb.Database, doc: str) -> None:
    view = db.get_view(doc)
    say(f"H {sha(db.get(doc))} {sha(view)}")
    for line in sys.stdin:
        if line.strip() == "refresh":
            db.refresh()
            say(f"R {doc in db}")
        else:
            say(f"H {sha(db.get(doc))} {sha(view)} {sha(db.get_view(doc))} "
                f"{sha(b''.join(db.get_stream(doc)))}")


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    db = streamdb.open(path, readonly=True)
    if sys.argv[3:4] == ["hold"]:
        hold(db, sys.argv[4])
    else:
        eof = threading.Event()

        def wait_for_eof() -> None:
            sys.stdin.read()
            eof.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
        try:
            loop(db, random.Random(seed), eof)
        except BaseException:
            diagnose(db)
            raise
    db.close()
    say("X")
    os._exit(0)  # not waiting for the stdin thread


if __name__ == "__main__":
    main()
