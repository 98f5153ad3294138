"""The write-ahead log: append, commit (group commit), replay, checkpoint, recover.

Invariants (tests name them):

W1. `commit()` returns only after every record appended before it is written and, with
    sync="full", fsynced. With many threads committing, one fsync covers every batch
    written before it started (group commit).
W2. A batch is atomic: its last record carries END; recovery drops records after the last
    END. Large batches spill to the file before commit, all but their last record.
W3. Each record carries the highest LSN known durable when it was written, so recovery can
    tell a torn tail (nothing after it was synced) from corruption (something was).
W4. After a failed write or sync the log refuses every further write (WalFailedError) until
    it is reopened: after a failed fsync the kernel may have dropped the dirty pages.
W5. Segments are recycled, never truncated in place: a recycled segment gets a new salt, so
    its stale records never validate. Preallocated space is zero-filled once.
W6. Segment files start small and grow: the first is 1 MiB (or `segment_size` if smaller),
    each new file twice the largest one there is, up to `segment_size`; a recycled file
    keeps its size. The log rolls when the active segment's file is full (a record larger
    than that gets a segment of its own, which grows). With sync="full" each file is
    zero-filled to its size once. Nothing of this is on disk: recovery reads records until
    they stop, whatever the file sizes, so logs of any earlier sizing open.

Locking: one mutex guards the state; fsync runs with it released, so later batches are
written while an earlier one syncs.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Literal, NamedTuple

from wal import format as fmt
from wal.errors import (
    WalClosedError,
    WalCorruptionError,
    WalError,
    WalFailedError,
    WalInvalidArgumentError,
    WalIOError,
    WalLockedError,
    WalUnfinishedError,
    io_error,
)
from wal.recovery import RecoveryReport, load_slot, lock_main, open_slots, recover
from wal.salvage import Survey, survey
from wal.scan import Window, scan
from wal.segments import Slot, new_salt, slot_path
from wal.vfs import VFS, Buffer, OsVFS, VFile

SyncMode = Literal["full", "batch", "off"]

DEFAULT_SEGMENT_SIZE = 16 << 20
FIRST_FILE_SIZE = 1 << 20  # a log's first segment file; each new one is twice the largest
DEFAULT_MAX_RECORD_SIZE = 64 << 20
SPILL_BYTES = 4 << 20  # buffered batch bytes above which records are written before commit
KEEP_FREE = 2  # free segment files kept for reuse after a checkpoint
GATHER_MAX = 0.002  # longest a group-commit leader waits for other threads' batches


def _seq(slot: Slot) -> int:
    assert slot.header is not None
    return slot.header.seq


class Record(NamedTuple):
    lsn: int
    payload: bytes


class _Pending(NamedTuple):
    lsn: int
    payload: Buffer
    seed: int  # segment seed the CRC was computed from
    crc: int  # CRC of the payload from that seed
    kind: int = fmt.KIND_DATA


class _Mark(NamedTuple):
    """Where the last committed record ends: replay stops here, rollback returns here."""

    slot: Slot
    end: int
    lsn: int
    crc: int


def open(
    path: str | os.PathLike[str],
    *,
    sync: SyncMode = "full",
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    sync_interval: float = 1.0,
    vfs: VFS | None = None,
    finish: bool = True,
    salvage: bool = False,
) -> WriteAheadLog:
    """Open (creating if missing) and recover the log at `path`. See `WriteAheadLog`."""
    return WriteAheadLog(
        os.fspath(path),
        sync=sync,
        segment_size=segment_size,
        max_record_size=max_record_size,
        sync_interval=sync_interval,
        vfs=vfs,
        finish=finish,
        salvage=salvage,
    )


class WriteAheadLog:
    """A durable, ordered log of byte records.

    sync="full": `commit()` fsyncs (fdatasync) before it returns.
    sync="batch": `commit()` writes; an fsync happens when `sync_interval` seconds have passed
        since the last one (checked at commit), at `sync()` and at `close()`.
    sync="off": commits are never fsynced (only `sync()` does); survives a killed process,
        not a power loss, and recovery cannot then tell corruption from a torn tail.
    In every mode, segment headers are fsynced as they are written (once per segment) and
    checkpoint fsyncs the headers it rewrites.

    Opening recovers: it reads every record once (O(log size)), drops a torn tail (reported
    in `recovery`, not raised), and raises WalCorruptionError if durable bytes are damaged,
    WalFormatError for a file that is not a log, WalLockedError if another process has it.

    Recovery has two steps (R7). Deciding reads only: which segments are current, where the
    committed log ends. Finishing writes: it frees segments past that point, erases an
    unfinished batch, starts a first segment (creating the file), and fsyncs. By default the
    constructor does both. With `finish=False` it only decides, writing, creating and
    removing nothing (a missing log file stays missing, and is locked only at `finish()`):
    `replay()` reads the decided records and `skip_to()` works, every write raises
    WalUnfinishedError, `checkpoint()` does nothing, and `close()` writes nothing, until
    `finish()`. So a caller whose own open fails after reading the log leaves it as it was.

    With `salvage=True` (which needs `finish=False`) damage is not raised (R8): reading
    stops at the first damage as at a torn tail, `damage` says what it was, `survey()`
    measures what lies beyond, and `finish(start_over=True)` starts the log over.
    """

    def __init__(
        self,
        path: str,
        *,
        sync: SyncMode = "full",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
        sync_interval: float = 1.0,
        vfs: VFS | None = None,
        finish: bool = True,
        salvage: bool = False,
    ) -> None:
        if salvage and finish:
            raise WalInvalidArgumentError("salvage=True needs finish=False")
        if sync not in ("full", "batch", "off"):
            raise WalInvalidArgumentError(f"sync must be 'full', 'batch' or 'off', not {sync!r}")
        if not 0 <= max_record_size <= fmt.MAX_PAYLOAD:
            raise WalInvalidArgumentError(f"max_record_size must be 0..{fmt.MAX_PAYLOAD}")
        if segment_size < fmt.SEGMENT_HEADER_SIZE + fmt.RECORD_HEADER_SIZE:
            raise WalInvalidArgumentError("segment_size is too small")
        self.path = path
        self.sync_mode: SyncMode = sync
        self.segment_size = segment_size
        self.max_record_size = max_record_size
        self.sync_interval = sync_interval
        self._vfs: VFS = vfs if vfs is not None else OsVFS()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._session = secrets.randbits(32)
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        self._dirty: list[VFile] = []
        self._syncing = False
        self._unsynced_batches = 0  # batches written since the last fsync started
        self._group = 1  # batches per fsync lately (a decaying average)
        self._gather = threading.Condition(self._lock)  # a leader waiting for batches
        self._gather_seconds = 0.0
        self._failed: BaseException | None = None
        self._closed = True  # until the files are open
        self._replays = 0
        self._last_sync = time.monotonic()
        self._finished = False
        self._mark: _Mark | None = None
        try:
            slots = open_slots(self._vfs, path, max_record_size, create=finish, lenient=salvage)
        except OSError as exc:
            raise io_error(exc, f"opening {path}") from exc
        self._slots = slots
        self._locked = bool(slots) and slots[0].number == 0
        try:
            self._decide(slots, salvage)
        except BaseException:
            for slot in slots:
                slot.file.close()
            raise
        self._closed = False
        if finish:
            self.finish()

    def _decide(self, slots: list[Slot], salvage: bool) -> None:
        """R1-R6 without writing: where the committed log ends and what finishing frees."""
        try:
            found = recover(slots, self.max_record_size, lenient=salvage)
        except OSError as exc:
            raise io_error(exc, f"recovering {self.path}") from exc
        self.recovery: RecoveryReport = found.report
        self.damage: str | None = found.damage
        self._to_free = found.to_free
        self._chain = found.chain
        self._next_lsn = found.next_lsn
        self._committed_lsn = found.committed_lsn
        self._durable_lsn = found.committed_lsn
        self._checkpoint_lsn = 0
        if self._chain:
            self._set_mark()

    @property
    def finished(self) -> bool:
        """Recovery's writes are done (R7): the log takes writes."""
        return self._finished

    def finish(self, *, start_over: bool = False) -> None:
        """Do recovery's writes (R6, R7) after a `finish=False` open; idempotent.

        Frees the current segments past the resume point (highest first), erases the first
        record of an unfinished batch, creates and locks the log file if it was missing,
        starts a first segment when none is current, and fsyncs every current segment. With
        `start_over` (R8) every segment is freed instead, damaged headers first, then the
        current segments highest first, each free header naming an LSN above every LSN the
        log holds (`survey`), and the log starts over empty: the caller must have made what
        it keeps durable elsewhere. O(segments) header writes and fsyncs, plus the zero-fill
        of a new segment. Raises WalLockedError when the missing log file was created and
        locked by another process meanwhile, WalCorruptionError for a damaged (salvage) log
        without `start_over`, WalIOError (the log is then failed: close it) from the files.
        """
        with self._lock:
            if self._closed:
                raise WalClosedError(f"{self.path} is closed")
            if self._failed is not None:
                self._check_writable()
            if self._finished:
                return
            if self.damage is not None and not start_over:
                raise WalCorruptionError(f"{self.damage}; finish(start_over=True) drops it")
            try:
                if not self._locked:
                    self._adopt_main()
                if start_over:
                    self._start_over()
                else:
                    for slot in self._to_free:
                        self._free(slot)
                    if self.recovery.discarded_records:
                        self._erase_tail(self._chain[-1])
                if not self._chain:
                    self._roll(self._next_lsn)
                for slot in self._chain:
                    slot.file.sync()
            except OSError as exc:
                raise self._fail(exc, "recovering") from exc
            self._to_free = []
            self._durable_lsn = self._committed_lsn
            self._set_mark()
            self._finished = True

    def _adopt_main(self) -> None:
        """Create and lock slot 0, missing when the log was decided (R7). Lock held."""
        main = lock_main(self._vfs, self.path, create=True)
        assert main is not None
        try:
            slot = load_slot(0, self.path, main, self.max_record_size)
        except BaseException:
            main.close()
            raise
        if slot.header is not None:
            main.close()
            raise WalLockedError(f"{self.path} was created by another writer meanwhile")
        self._slots.insert(0, slot)
        self._locked = True

    def _start_over(self) -> None:
        """R8: free every damaged and current segment, so that nothing is replayed and new
        LSNs go above every LSN seen. Lock held; writes and fsyncs each header."""
        highest = survey(self._slots, 0, self.max_record_size).highest_lsn
        self._next_lsn = max(self._next_lsn, highest + 1, self._committed_lsn + 1)
        damaged = [s for s in self._slots if s.damaged]
        current = sorted((s for s in self._slots if s.current), key=_seq, reverse=True)
        for slot in damaged + current:
            self._free(slot)
            slot.damaged, slot.guess = False, None
        self._chain = []
        self._committed_lsn = self._next_lsn - 1
        self.recovery = RecoveryReport(0, self._committed_lsn, False, False, 0, 0)

    def survey(self, after_lsn: int) -> Survey:
        """What the log holds above `after_lsn` (rules S1-S3 in `wal.salvage`): valid data
        records that can be found in current or damaged segments, reachable or not, and
        the highest LSN the log names. O(log bytes); reads only. Raises WalIOError."""
        with self._lock:
            if self._closed:
                raise WalClosedError(f"{self.path} is closed")
            try:
                return survey(self._slots, after_lsn, self.max_record_size)
            except OSError as exc:
                raise io_error(exc, f"reading {self.path}") from exc

    def _set_mark(self) -> None:
        active = self._active
        self._mark = _Mark(active, active.end, active.last_lsn, active.last_crc)

    # -- state -------------------------------------------------------------------------

    @property
    def _active(self) -> Slot:
        return self._chain[-1]

    @property
    def next_lsn(self) -> int:
        """The LSN the next `append` will get."""
        return self._next_lsn

    @property
    def committed_lsn(self) -> int:
        """The LSN of the last committed record (written; durable too if sync="full")."""
        return self._committed_lsn

    @property
    def durable_lsn(self) -> int:
        """Every record up to this LSN has been fsynced."""
        return self._durable_lsn

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_writable(self) -> None:
        if self._closed:
            raise WalClosedError(f"{self.path} is closed")
        if self._failed is not None:
            raise WalFailedError(
                f"{self.path}: an earlier write or sync failed ({self._failed}); reopen the log"
            ) from self._failed
        if not self._finished:
            raise WalUnfinishedError(f"{self.path}: recovery is not finished; call finish()")

    def _fail(self, exc: OSError, what: str) -> WalIOError:
        self._failed = exc
        return io_error(exc, f"{what} {self.path}")

    # -- writing -------------------------------------------------------------------------

    def append(self, payload: Buffer) -> int:
        """Buffer one record; returns its LSN. Durable only once `commit()` returns.

        LSNs grow strictly, across reopens and checkpoints. The one exception: LSNs of a
        batch that a crash lost (its commit never returned) may be handed out again.

        O(len(payload)) for the CRC (outside the lock). A `bytes` payload is kept without a
        copy; other buffers are copied, since the caller may reuse them. May write earlier
        records of the batch to the file when the batch grows past 4 MiB.
        Raises WalInvalidArgumentError above `max_record_size`.
        """
        return self.append_many((payload,))

    def append_many(self, payloads: Iterable[Buffer]) -> int:
        """`append` each payload, in order, with consecutive LSNs; returns the first LSN
        (the next LSN if there are none). One lock acquisition for all. Raises
        WalInvalidArgumentError, before appending any, if one exceeds `max_record_size`."""
        header = self._active.header if self._chain else None
        seed = header.seed if header is not None else 0
        ready: list[tuple[Buffer, int]] = []
        for payload in payloads:
            if not isinstance(payload, bytes):
                view = memoryview(payload)
                immutable = view.readonly and isinstance(view.obj, bytes) and view.c_contiguous
                payload = view.cast("B") if immutable else view.tobytes()
            if len(payload) > self.max_record_size:
                raise WalInvalidArgumentError(
                    f"record of {len(payload)} bytes exceeds max_record_size="
                    f"{self.max_record_size}"
                )
            ready.append((payload, fmt.crc(payload, seed)))
        with self._lock:
            self._check_writable()
            first = self._next_lsn
            for payload, value in ready:
                self._pending.append(_Pending(self._next_lsn, payload, seed, value))
                self._next_lsn += 1
                self._pending_bytes += len(payload)
                if self._pending_bytes > SPILL_BYTES and len(self._pending) > 1:
                    self._write_pending(end=False)
            return first

    def skip_to(self, lsn: int) -> None:
        """Hand out LSNs above `lsn` from now on (a caller that recorded LSNs elsewhere, e.g.
        in a checkpoint, and finds the log behind them). O(1); nothing is written. Allowed
        before `finish()`."""
        with self._lock:
            if self._finished or self._failed is not None:
                self._check_writable()
            elif self._closed:
                raise WalClosedError(f"{self.path} is closed")
            if lsn >= fmt.MAX_COUNTER:
                raise WalInvalidArgumentError(f"LSN {lsn} is out of range")
            self._next_lsn = max(self._next_lsn, lsn + 1)

    def commit(self) -> int:
        """Write every appended record as one atomic batch; fsync per the sync mode (W1).

        Appended records are shared by all threads: this commits every thread's records
        appended so far, not only the caller's.

        Returns the LSN of the last committed record. Raises WalIOError/WalFullError when
        the write or fsync fails, after which the log is failed (W4).
        """
        with self._lock:
            self._check_writable()
            if self._pending:
                self._write_pending(end=True)
                self._unsynced_batches += 1
                self._gather.notify()
            target = self._committed_lsn
            due = self.sync_mode == "full" or (
                self.sync_mode == "batch"
                and time.monotonic() - self._last_sync >= self.sync_interval
            )
            if due:
                self._sync_to(target)
            return target

    def rollback(self) -> None:
        """Drop the records appended since the last commit. Their LSNs are not reused.

        O(1) unless the batch had spilled to the file: then it writes and fsyncs once.
        """
        with self._lock:
            self._check_writable()
            self._pending.clear()
            self._pending_bytes = 0
            try:
                self._rewind()
            except OSError as exc:
                raise self._fail(exc, "rolling back") from exc

    def sync(self) -> int:
        """Make every committed record durable now (any sync mode). Returns `durable_lsn`."""
        with self._lock:
            self._check_writable()
            self._sync_to(self._committed_lsn)
            return self._durable_lsn

    def _rewind(self) -> None:
        """Return the write position to the commit mark, dropping spilled records of the
        unfinished batch: segments it rolled into are freed, and its first record in the
        mark's segment is erased. Lock held; may write and fsync."""
        mark = self._mark
        assert mark is not None
        spilled = self._active is not mark.slot or mark.slot.end > mark.end
        while self._active is not mark.slot:
            self._free(self._active)
        mark.slot.end, mark.slot.last_lsn, mark.slot.last_crc = mark.end, mark.lsn, mark.crc
        if spilled:
            self._erase_tail(mark.slot)

    def _erase_tail(self, slot: Slot) -> None:
        """Zero the record header at `slot.end`, durably.

        Records left past the resume point by an unfinished batch still chain onto the last
        committed record. If the next write rolled to a new segment instead of overwriting
        them, recovery would read them as the start of a batch, and their segment would no
        longer end where the next one says it does. Erasing the first one breaks the chain.
        """
        slot.file.pwritev([bytes(fmt.RECORD_HEADER_SIZE)], slot.end)
        slot.file.sync()

    def _sync_to(self, target: int) -> None:
        """Wait until `durable_lsn >= target`, fsyncing if no other thread is. Lock held.

        Group commit: a thread that finds an fsync running waits for it, then for the next
        one, which covers every batch written meanwhile. When the last fsync served several
        threads, the next leader first waits, at most one fsync's time, for that many
        batches to arrive: otherwise the first thread back from an fsync would start the
        next one alone, and rounds would alternate between full and near-empty.
        """
        while self._durable_lsn < target:
            if self._failed is not None:
                self._check_writable()
            if self._syncing:
                self._cond.wait()
                continue
            self._syncing = True
            if self._group > 1:
                deadline = time.monotonic() + self._gather_seconds
                while self._unsynced_batches < self._group:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._gather.wait(left):
                        break
            upto, files, self._dirty = self._committed_lsn, self._dirty, []
            served, self._unsynced_batches = self._unsynced_batches, 0
            self._lock.release()
            error: OSError | None = None
            started = time.monotonic()
            try:
                for file in files:
                    file.sync()
            except OSError as exc:
                error = exc
            finally:
                self._lock.acquire()
                self._syncing = False
                self._cond.notify_all()
            if error is not None:
                raise self._fail(error, "syncing") from error
            self._durable_lsn = max(self._durable_lsn, upto)
            self._last_sync = time.monotonic()
            # A slowly decaying average, so one small round does not reset it.
            self._group = max(served, (self._group * 7 + served) // 8, 1)
            self._gather_seconds = min(GATHER_MAX, self._last_sync - started)

    def _write_pending(self, *, end: bool) -> None:
        """Write buffered records (all, or all but the last) at the active segment's end,
        rolling to a new segment when one is full. Lock held."""
        records = self._pending[:] if end else self._pending[:-1]
        buffers: list[Buffer] = []
        slot = self._active
        start = slot.end
        try:
            for i, rec in enumerate(records):
                size = fmt.RECORD_HEADER_SIZE + len(rec.payload)
                if slot.end + size > self._room(slot) and slot.end > fmt.SEGMENT_HEADER_SIZE:
                    self._flush(slot, buffers, start)
                    buffers = []
                    self._roll(rec.lsn)
                    slot, start = self._active, self._active.end
                header = slot.header
                assert header is not None
                crc = rec.crc if rec.seed == header.seed else fmt.crc(rec.payload, header.seed)
                last = end and i == len(records) - 1
                head, value = fmt.pack_record_header(
                    tag=header.tag,
                    kind=rec.kind,
                    flags=fmt.FLAG_END if last else 0,
                    length=len(rec.payload),
                    payload_crc=crc,
                    lsn=rec.lsn,
                    durable_lsn=self._durable_lsn,
                    prev_crc=slot.last_crc,
                    session=self._session,
                )
                buffers += (head, rec.payload)
                slot.end += size
                slot.last_lsn, slot.last_crc = rec.lsn, value
            self._flush(slot, buffers, start)
        except OSError as exc:
            raise self._fail(exc, "writing") from exc
        del self._pending[: len(records)]
        self._pending_bytes = sum(len(p.payload) for p in self._pending)
        if end:
            self._committed_lsn = records[-1].lsn
            self._set_mark()

    def _flush(self, slot: Slot, buffers: list[Buffer], start: int) -> None:
        if buffers:
            slot.file.pwritev(buffers, start)
            slot.size = max(slot.size, slot.end)
            if slot.file not in self._dirty:
                self._dirty.append(slot.file)

    # -- segments ------------------------------------------------------------------------

    def _roll(self, base_lsn: int) -> None:
        """Start a new segment (reusing a free slot when there is one) whose first record
        will be `base_lsn`. The header is durable on return, in every sync mode: headers must
        become durable in sequence order, or a crash could leave a gap that reads as a
        damaged segment (R2). One or two fsyncs per segment; with sync="full" a new file is
        also zero-filled to its size (W6)."""
        seq = max((s.header.seq for s in self._slots if s.current and s.header), default=0) + 1
        prev_lsn = self._active.last_lsn if self._chain else base_lsn - 1
        header = fmt.SegmentHeader(0, new_salt(), seq, base_lsn, prev_lsn)
        free = [s for s in self._slots if not s.current and s not in self._chain]
        if free:
            slot = min(free, key=lambda s: s.number)
            # W6: a recycled file keeps its size (and the room it had).
            slot.capacity = min(self.segment_size,
                                max(slot.size, slot.capacity, FIRST_FILE_SIZE))
        else:
            # W6: twice the largest file there is, from FIRST_FILE_SIZE up to segment_size.
            largest = max((s.size for s in self._slots), default=0)
            number = max((s.number for s in self._slots), default=-1) + 1
            path = slot_path(self.path, number)
            slot = Slot(number, path, self._vfs.open(path, create=True), None, 0)
            slot.capacity = min(self.segment_size, max(FIRST_FILE_SIZE, 2 * largest))
            self._slots.append(slot)
        fresh = slot.size < fmt.SEGMENT_HEADER_SIZE
        slot.write_header(header, fresh=fresh)
        slot.file.sync()
        if fresh:
            # The header was durable before anything else reached the file, so a crash
            # leaves either a blank file or a whole header (R1). Now make the name durable.
            self._vfs.sync_dir(os.path.dirname(self.path))
        if self.sync_mode == "full" and slot.size < slot.capacity:
            # Writing into zero-filled blocks lets each commit's fdatasync flush data only,
            # with no block allocation to journal: about 30% faster per commit here.
            slot.zero_fill(slot.capacity)
            slot.file.sync()
        self._chain.append(slot)

    def _room(self, slot: Slot) -> int:
        """W6: the bytes `slot` may fill before the log rolls: decided when it was rolled
        to, else (a segment recovered at open, or a file to recycle) its file's size,
        between FIRST_FILE_SIZE and `segment_size`."""
        if slot.capacity:
            return slot.capacity
        return min(self.segment_size, max(slot.size, FIRST_FILE_SIZE))

    def _free(self, slot: Slot) -> None:
        """Mark a segment free, durably. Its header keeps the next LSN so that LSNs keep
        growing even if every segment is free."""
        header = fmt.SegmentHeader(fmt.FLAG_FREE, new_salt(), 0, self._next_lsn)
        slot.write_header(header, fresh=False)
        slot.file.sync()
        if slot in self._chain:
            self._chain.remove(slot)

    def checkpoint(self, lsn: int) -> None:
        """The caller has durably applied every record up to `lsn` elsewhere.

        Segments holding only such records are freed (lowest first), and when the active
        segment is wholly applied the log rolls to a fresh segment with a new salt. Free
        segment files beyond two are deleted. Fsyncs each header it rewrites, in every
        sync mode. O(segments). Raises WalInvalidArgumentError if `lsn` is not committed.
        Before `finish()` (R7) it checks `lsn` and does nothing else.
        """
        with self._lock:
            if self._finished or self._failed is not None:
                self._check_writable()
            elif self._closed:
                raise WalClosedError(f"{self.path} is closed")
            if lsn > self._committed_lsn:
                raise WalInvalidArgumentError(
                    f"cannot checkpoint LSN {lsn}: the log is committed only up to "
                    f"{self._committed_lsn}"
                )
            if not self._finished:
                return
            if self._replays:
                raise WalError("cannot checkpoint while a replay() iterator is open")
            if lsn <= self._checkpoint_lsn:
                return
            self._checkpoint_lsn = lsn
            try:
                self._sync_to(self._committed_lsn)
                active = self._active
                if (
                    not self._pending
                    and active.last_lsn == self._committed_lsn <= lsn
                    and active.end > fmt.SEGMENT_HEADER_SIZE
                ):
                    self._roll(self._next_lsn)
                    self._set_mark()
                # Never free the segment holding the last committed record: a spilled batch
                # in a later segment may still be rolled back to it.
                assert self._mark is not None
                while self._chain[0] is not self._mark.slot and self._chain[0].last_lsn <= lsn:
                    self._free(self._chain[0])
                self._delete_spare()
            except OSError as exc:
                raise self._fail(exc, "checkpointing") from exc

    def _delete_spare(self) -> None:
        spare = sorted(
            (s for s in self._slots if not s.current and s.number != 0),
            key=lambda s: s.number,
        )
        for slot in spare[KEEP_FREE:]:
            if slot.file in self._dirty:  # written by a rolled-back batch, never synced
                self._dirty.remove(slot.file)
            slot.file.close()
            self._vfs.remove(slot.path)
            self._slots.remove(slot)
        if spare[KEEP_FREE:]:
            self._vfs.sync_dir(os.path.dirname(self.path))

    # -- reading -------------------------------------------------------------------------

    def replay(self, from_lsn: int = 0) -> Generator[Record, None, None]:
        """Yield committed data records with `lsn >= from_lsn`, in order.

        Reads the segments again (O(bytes from the first needed segment)), re-verifying
        every CRC; memory is one window plus one payload. Records committed after the call
        are not included. `checkpoint()` is refused while the iterator is open.
        Raises WalCorruptionError if bytes changed since the log was opened.
        """
        return (record for record, _ in self.replay_batches(from_lsn))

    def replay_batches(self, from_lsn: int = 0) -> Generator[tuple[Record, bool], None, None]:
        """`replay`, each record paired with whether it ends its commit batch (W2): a caller
        can tell where the atomic units are. Same cost and errors."""
        with self._lock:
            if self._closed:
                raise WalClosedError(f"{self.path} is closed")
            mark = self._mark
            plan: list[tuple[Slot, fmt.SegmentHeader | None, int, int]] = []
            if mark is not None:
                upto = self._chain.index(mark.slot)
                plan = [(s, s.header, s.end, s.last_lsn) for s in self._chain[:upto]]
                plan.append((mark.slot, mark.slot.header, mark.end, mark.lsn))
            self._replays += 1
        return self._replay(plan, from_lsn)

    def _replay(
        self,
        plan: list[tuple[Slot, fmt.SegmentHeader | None, int, int]],
        from_lsn: int,
    ) -> Generator[tuple[Record, bool], None, None]:
        try:
            last = 0
            for slot, header, end, last_lsn in plan:
                if header is None or last_lsn < from_lsn or end <= fmt.SEGMENT_HEADER_SIZE:
                    continue
                window = Window(slot.file, end)
                reached = fmt.SEGMENT_HEADER_SIZE
                for found in scan(window, header, stop=end, last_lsn=last,
                                  max_record_size=self.max_record_size, payloads=True):
                    reached, last = found.end, found.header.lsn
                    if found.header.kind == fmt.KIND_DATA and found.header.lsn >= from_lsn:
                        assert found.payload is not None
                        yield Record(found.header.lsn, found.payload), found.header.end
                if reached < end:
                    raise WalCorruptionError(
                        "a committed record no longer validates", segment=slot.path,
                        offset=reached,
                    )
        except OSError as exc:
            raise io_error(exc, f"reading {self.path}") from exc
        finally:
            with self._lock:
                self._replays -= 1

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Drop uncommitted records, mark a clean end, fsync (unless sync="off") and release
        the files. Idempotent. A failed log is closed without writing."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None and self._finished:
                    self._pending.clear()
                    try:
                        self._rewind()
                    except OSError as exc:
                        raise self._fail(exc, "closing") from exc
                    # The CLOSE marker tells the next open that no torn-tail search is needed.
                    lsn = self._next_lsn
                    self._next_lsn += 1
                    seed = self._active.header.seed if self._active.header else 0
                    self._pending.append(_Pending(lsn, b"", seed, seed, fmt.KIND_CLOSE))
                    self._write_pending(end=True)
                    if self.sync_mode != "off":
                        self._sync_to(self._committed_lsn)
            finally:
                self._closed = True
                for slot in self._slots:
                    slot.file.close()

    def forget(self) -> None:
        """Release the descriptors without writing anything: for a process that must not
        touch the log any more (a forked child). To the next open it looks like a crash,
        which recovery handles. Idempotent."""
        if not getattr(self, "_closed", True):
            self._closed = True
            for slot in self._slots:
                slot.file.close()

    def __del__(self) -> None:
        self.forget()  # an abandoned log writes nothing

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "failed" if self._failed
                 else "open" if self._finished else "unfinished")
        return f"<WriteAheadLog {self.path!r} {state} committed_lsn={self._committed_lsn}>"
