"""Committed states and the readers that hold them.

A `State` is one committed state of a database: a catalog read at one LSN, over one file.
It is immutable, so a reader that holds one sees the same documents however long it reads.
`Pins` records which states are held (by in-flight reads, snapshots, streams and views),
so the writer never reuses a page a held state can see, and counts operations in flight, so
`close()` can wait for them.

Rules:
P1. A state is pinned before it is read and unpinned when the reader is done; taking the
    published state and pinning it is one step under the lock, so the writer's view of the
    oldest pin never misses a reader that is about to start.
P2. The oldest pinned stamp bounds what the writer may reuse (FreeSpace.release) and which
    catalog history it may fold (Catalog.horizon).
P3. After `close()` begins no operation starts; `close()` returns once those in flight end.
    Pins may outlive it (views), which keeps their pages out of reuse (the database
    publishes them in the reader table).
P4. The fast read path pins without the lock: a thread stores the published state in its
    `ReadSlot`, then checks that what it is about to read is still current (the engine
    takes cached locations out before it publishes a state that changes them), and clears
    the slot when done. `oldest` and `horizon` count slot states, so pages a fast read may
    touch are not reused under it.
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from streamdb.errors import ClosedError
from streamdb.storage.catalog import Catalog
from streamdb.storage.freespace import Stamp
from streamdb.storage.pager import Pager


@dataclass(frozen=True, slots=True, eq=False)
class State:
    """One committed state: `catalog` read at `lsn`, in the file `pager` reads, whose
    checkpoint header has generation `gen`."""

    catalog: Catalog
    lsn: int
    gen: int
    pager: Pager

    @property
    def stamp(self) -> Stamp:
        return (self.gen, self.lsn)


class ReadSlot:
    """One thread's pin for the fast read path (docs/design.md, "Performance principles"):
    the state it is reading now (None between reads), set with one attribute store instead
    of a lock round trip, and its counters (the thread's dict in `Counters`)."""

    __slots__ = ("__weakref__", "counts", "state")

    def __init__(self, counts: dict[str, int]) -> None:
        self.state: State | None = None
        self.counts = counts


class Pins:
    """Held states and in-flight operations of one `Database`. Thread-safe; every method
    is O(1) except `oldest` and `horizon`, which are O(distinct held states)."""

    def __init__(self, current: State, on_unpinned: Callable[[State], None]) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._held: dict[State, int] = {}
        self._active = 0
        self.current = current
        self.closed: str | None = None  # why operations are refused, once closing began
        # Called (lock released) when the last pin of a state that is no longer the
        # published one goes, or of any state once closing began.
        self._on_unpinned = on_unpinned
        # Pins dropped by finalisers (views, streams and snapshots collected by the garbage
        # collector). A finaliser may run in the middle of any allocation, even one made
        # under one of our locks, so it only queues the state (deque.append is atomic) and
        # wakes the janitor thread (SimpleQueue.put is safe there); the next call drains
        # the queue too, whichever comes first.
        self._later: collections.deque[State] = collections.deque()
        self._draining = threading.RLock()  # re-entered when release() drains again
        # Fast-path pins, one per reading thread (P4). A thread's slot dies with it.
        self._slots: weakref.WeakSet[ReadSlot] = weakref.WeakSet()
        self._local = threading.local()
        _janitor.start()
        _ALL.add(self)

    def slot(self, counters: Counters) -> ReadSlot:
        """This thread's fast-path slot (made once per thread). O(1)."""
        try:
            slot: ReadSlot = self._local.slot
            return slot
        except AttributeError:
            slot = self._local.slot = ReadSlot(counters.mine())
            with self._lock:
                self._slots.add(slot)
            return slot

    def _slot_states(self) -> list[State]:
        """States fast-path readers hold now. Lock held. O(reading threads)."""
        return [state for slot in list(self._slots) if (state := slot.state) is not None]

    def release_later(self, state: State) -> None:
        """`release(state, op=False)` from a finaliser: safe at any point. O(1)."""
        self._later.append(state)
        _janitor.wake(self)

    def drain(self) -> None:
        """Release what finalisers queued, now, and wait for a release the janitor is
        making: afterwards nothing queued before the call is still held."""
        with self._draining:
            while self._later:
                self.release(self._later.popleft(), op=False)

    def _drain(self) -> None:
        """`drain`, unless the queue is empty (the fast path of every call)."""
        if self._later:
            self.drain()

    def _refuse(self) -> None:
        if self.closed is not None:
            raise ClosedError(self.closed)

    def acquire(self, state: State | None = None, *, op: bool = True) -> State:
        """Pin `state` (default: the published one) and, if `op`, count an operation in
        flight. Raises ClosedError once closing began."""
        self._drain()
        with self._lock:
            self._refuse()
            state = state or self.current
            self._held[state] = self._held.get(state, 0) + 1
            self._active += op
            return state

    def release(self, state: State, *, op: bool = True) -> None:
        """Undo one `acquire(state, op=op)`."""
        with self._lock:
            count = self._held[state] - 1
            if count:
                self._held[state] = count
            else:
                del self._held[state]
            if op:
                self._active -= 1
                if not self._active and self.closed is not None:
                    self._idle.notify_all()
        if not count and (state is not self.current or self.closed is not None):
            self._on_unpinned(state)
        if self._later:
            self._drain()

    def begin(self) -> None:
        """Count an operation on a state the caller holds pinned (a stream's, a file's)."""
        with self._lock:
            self._refuse()
            self._active += 1

    def end(self) -> None:
        with self._lock:
            self._active -= 1
            if not self._active and self.closed is not None:
                self._idle.notify_all()

    def publish(self, state: State) -> None:
        """Make `state` the one new reads see."""
        with self._lock:
            self.current = state

    def oldest(self) -> Stamp | None:
        """The oldest held stamp (fast-path pins included), or None when nothing is held."""
        self._drain()
        with self._lock:
            return min((s.stamp for s in [*self._held, *self._slot_states()]), default=None)

    def horizon(self, catalog: Catalog) -> int:
        """The lowest LSN any reader may read `catalog` at: held states of it (fast-path
        pins included) and the published state (which new readers take)."""
        with self._lock:
            lsns = [s.lsn for s in [*self._held, *self._slot_states()] if s.catalog is catalog]
            if self.current.catalog is catalog:
                lsns.append(self.current.lsn)
            return min(lsns, default=self.current.lsn)

    def held(self) -> list[State]:
        self._drain()
        with self._lock:
            return list(self._held)

    def close(self, reason: str) -> None:
        """Refuse new operations, then wait for those in flight (P3)."""
        self._drain()
        with self._lock:
            if self.closed is None:
                self.closed = reason
            while self._active:
                self._idle.wait()

    def _check(self) -> None:
        """Assert: every held state is held a positive number of times; operations in
        flight are not negative; nothing waits in the finaliser queue for long (drained)."""
        self._drain()
        with self._lock:
            assert all(n > 0 for n in self._held.values()), self._held
            assert self._active >= 0, self._active


class _Janitor:
    """One daemon thread per process that releases pins finalisers queued, so a closed
    database's views, or an idle reader's dropped streams, let their pages go promptly."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Pins] = queue.SimpleQueue()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread in this process if it is not running (after fork() it is not).
        Called from `Pins()`, never from a finaliser."""
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._queue,), daemon=True,
                                 name="streamdb-janitor").start()
                self._pid = os.getpid()

    def wake(self, pins: Pins) -> None:
        self._queue.put(pins)

    @staticmethod
    def _run(work: queue.SimpleQueue[Pins]) -> None:
        while True:
            pins = work.get()
            try:
                pins._drain()
            except Exception as exc:  # keep serving the other databases
                warnings.warn(f"streamdb: letting a view's pages go failed: {exc!r}",
                              RuntimeWarning, stacklevel=1)


def drain_all() -> None:
    """Release, now, every pin finalisers queued in this process: before the writer asks
    which pages readers hold, so that views dropped a moment ago count as gone."""
    for pins in list(_ALL):
        pins.drain()


_janitor = _Janitor()
_ALL: weakref.WeakSet[Pins] = weakref.WeakSet()


class Counters:
    """Event counters bumped by many threads without a shared lock: each thread adds to its
    own dict (registered once), and `snapshot()` sums them. O(1) per bump, O(threads) per
    snapshot."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._local = threading.local()
        self._all: list[dict[str, int]] = []
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        try:
            mine: dict[str, int] = self._local.counts
        except AttributeError:
            mine = self._local.counts = dict.fromkeys(self._names, 0)
            with self._lock:
                self._all.append(mine)
        mine[name] += n

    def mine(self) -> dict[str, int]:
        """This thread's counters (registered on first use; kept after the thread ends)."""
        try:
            mine: dict[str, int] = self._local.counts
        except AttributeError:
            mine = self._local.counts = dict.fromkeys(self._names, 0)
            with self._lock:
                self._all.append(mine)
        return mine

    def read(self, nbytes: int) -> None:
        """One read of `nbytes`: "reads" and "bytes_read" in one bump."""
        try:
            mine: dict[str, int] = self._local.counts
        except AttributeError:
            self.add("reads", 0)
            mine = self._local.counts
        mine["reads"] += 1
        mine["bytes_read"] += nbytes

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            tables = list(self._all)
        return {name: sum(t[name] for t in tables) for name in self._names}
