"""Following a log read-only while another writer (possibly another process) appends to it.

    with wal.LogTail("events.log", from_lsn=checkpoint_lsn + 1) as tail:
        while running:
            for record in tail.poll():           # batches committed since the last poll
                apply(record.lsn, record.payload)

Rules (numbered so tests and docs can name them):

T1. The tail never writes, locks, creates or removes a file, and constructing it does no I/O.
    A missing log file means nothing was written yet: `poll()` returns [] and looks again
    next time. (The VFS opens files read-write; the tail only reads them.)
T2. A record is valid exactly when `wal.scan.scan` accepts it: tag of the segment's salt, CRC
    seeded by the salt, `prev_crc` chain, increasing LSN, length within the file. Reading
    stops silently at the first record that is not valid: a writer's in-flight write looks
    like a torn tail, so the log's contents never make the tail raise a corruption error.
    (The one exception: bytes that validated earlier in the same poll no longer do while
    their segment header is unchanged, which no writer of this package causes.)
T3. A segment header that is blank, fails its CRC (a header being rewritten) or holds
    implausible values counts as free: recovery's R1 without its single-bit correction and
    damage check. A file without the magic, or of a newer version, raises WalFormatError as
    opening the log does.
T4. Reading starts at the current segment with the lowest sequence number. If its previous
    LSN is at or above `from_lsn` (and not 0), records the reader asked for were checkpointed
    away: WalRecycledError. Until a complete batch has been consumed, every poll starts over
    this way.
T5. Reading moves on to the next segment as recovery's R4 does: the one whose header has the
    next sequence number and names the last LSN read as its previous one. Slot files can
    appear (and spare ones vanish, their names reused later) at any time, so when reading
    reaches the end of a segment's valid records and none of the slot files this poll has
    read holds the successor, the directory is listed again and slot files are opened again
    by name.
T6. `poll()` returns the DATA records with `lsn >= from_lsn` of every complete batch: up to and
    including the last reachable record carrying END. Each is returned once, in LSN order,
    across polls. Records of an unfinished batch (being written, spilled before commit, or
    rolled back) are never returned; the next poll reads them again from the end of the last
    complete batch. CLOSE markers are consumed, never returned.
T7. Between polls the tail keeps the point after the last complete batch: its segment file
    and header, the offset, the CRC chain value and the LSN. A poll first reads that header
    again; if it changed, a checkpoint freed or recycled the segment, the log was
    checkpointed past this reader: WalRecycledError, and from then on the tail is good only
    for `close()`. The header of each segment that records are returned from is also read
    again after its records, so bytes of a segment recycled during the poll are never
    returned (WalRecycledError instead).
T8. A batch is visible once its END record is written, which is inside `commit()` and before
    its fsync (sync="full"): a tail can return a batch whose `commit()` has not returned yet,
    and a power loss can still lose it.

Memory: one 1 MiB read window plus the payloads returned; a payload's length is checked
against `max_record_size` before it is read. Records of an unfinished batch are verified but
not held, so a large spilled batch costs I/O, not memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from wal import format as fmt
from wal.errors import (
    WalClosedError,
    WalCorruptionError,
    WalInvalidArgumentError,
    WalRecycledError,
    io_error,
)
from wal.log import DEFAULT_MAX_RECORD_SIZE, Record
from wal.scan import Window, scan
from wal.segments import sibling_numbers, slot_path
from wal.vfs import VFS, OsVFS, VFile

_RECYCLED = "the log was checkpointed past this reader; reopen from a newer checkpoint"


@dataclass(frozen=True, slots=True)
class _Segment:
    """An open slot file and the current-segment header it was read with."""

    path: str
    file: VFile
    header: fmt.SegmentHeader


@dataclass(frozen=True, slots=True)
class _Point:
    """Where reading resumes: `offset` in `segment`, after a record with CRC `crc` (0 at a
    segment's start) and LSN `lsn` (the previous segment's last LSN at a segment's start)."""

    segment: _Segment
    offset: int
    crc: int
    lsn: int


@dataclass(frozen=True, slots=True)
class _Span:
    """Valid records of one segment, from `start` up to offset `stop`; the last has `lsn`."""

    start: _Point
    stop: int
    lsn: int


def _read_header(file: VFile) -> fmt.SegmentHeader | None:
    """The header of a current segment, or None when the slot counts as free (T3). One pread.
    Raises WalFormatError for a foreign or newer file, OSError from the file."""
    raw = file.pread(fmt.SEGMENT_HEADER_SIZE, 0)
    if fmt.is_blank(raw):
        return None
    try:
        header = fmt.parse_segment_header(raw)
    except WalCorruptionError:
        return None  # implausible values under a valid CRC: the writer never uses the slot
    return header if header is not None and not header.free else None


class _Slots:
    """The slot files one poll looks at: the current segments seen so far, by path.

    Each slot file is opened at most once per listing; the directory is listed again only
    when a successor is not among the segments seen (T5). Nothing is closed before the poll
    ends (`close_except`), since the spans being read still use the files.
    """

    def __init__(self, vfs: VFS, path: str, held: _Segment | None) -> None:
        self._vfs = vfs
        self._path = path
        self._current: dict[str, _Segment] = {held.path: held} if held is not None else {}
        self._retired: list[_Segment] = []

    def first(self) -> _Segment | None:
        """T4: the current segment with the lowest sequence number, or None (no log file,
        or no current segment yet). An exists() and a `refresh`."""
        if not self._vfs.exists(self._path):
            return None
        self.refresh()
        return min(self._current.values(), key=lambda s: s.header.seq, default=None)

    def successor(self, segment: _Segment, lsn: int) -> _Segment | None:
        """T5 (R4): the segment after `segment`, given that `lsn` was the last LSN read in
        it, or None. Looks among the segments seen first, then lists again (`refresh`)."""
        for attempt in range(2):
            if attempt:
                self.refresh()
            for candidate in self._current.values():
                header = candidate.header
                if header.seq == segment.header.seq + 1 and header.prev_lsn == lsn:
                    return candidate
        return None

    def refresh(self) -> None:
        """List the directory and read every slot's header: one listdir, a pread per segment
        seen, an open and a pread per other slot file. A segment whose header changed is
        opened again by name: a freed slot file may have been deleted and its name reused."""
        numbers = sibling_numbers(self._vfs, self._path)
        paths = [self._path, *(slot_path(self._path, n) for n in numbers)]
        seen, self._current = self._current, {}
        for path in paths:
            segment = seen.pop(path, None)
            if segment is not None and _read_header(segment.file) == segment.header:
                self._current[path] = segment
                continue
            if segment is not None:
                self._retired.append(segment)
            segment = self._open_current(path)
            if segment is not None:
                self._current[path] = segment
        self._retired += seen.values()  # no longer listed: freed, then deleted

    def _open_current(self, path: str) -> _Segment | None:
        """The segment in slot file `path`, open, or None if the slot is free or gone (the
        writer deletes spare slots at checkpoint). One open and one pread."""
        try:
            file = self._vfs.open(path)
        except FileNotFoundError:
            return None
        try:
            header = _read_header(file)
        except BaseException:
            file.close()
            raise
        if header is None:
            file.close()
            return None
        return _Segment(path, file, header)

    def close_except(self, held: _Segment | None) -> None:
        """Close every file this poll used but `held`."""
        for segment in [*self._current.values(), *self._retired]:
            if segment is not held:
                segment.file.close()


def holds_after(path: str, *, vfs: VFS | None = None) -> int | None:
    """The LSN above which the log at `path` holds every committed record (records at or
    below it may have been recycled by a checkpoint): the previous LSN its first current
    segment names (T4). None when there is no log file or no current segment.

    Read-only, as the tail is (T1): a listdir and a header pread per slot file. Raises
    WalFormatError for a file that is not a log, WalIOError for a failed read."""
    slots = _Slots(vfs if vfs is not None else OsVFS(), path, None)
    try:
        first = slots.first()
    except OSError as exc:
        raise io_error(exc, f"reading {path}") from exc
    finally:
        slots.close_except(None)
    return None if first is None else first.header.prev_lsn


class LogTail:
    """A read-only follower of the log at `path` (rules T1-T8 above). Not thread-safe: poll
    from one thread at a time.

    Complexity and I/O: the first poll that finds a batch reads the log from its first
    current segment, O(log bytes); later polls read O(new bytes) plus one header pread. The
    directory is listed (one listdir, a header pread per segment file already open and an
    open and pread per other slot file) at the start, and whenever reading reaches the end
    of a segment's valid records without a known successor, which includes every poll that
    finds nothing new. Records of an unfinished batch are read again by each poll until the
    batch completes. Newly returned records are read twice (verified, then read with their
    payloads), so unfinished batches are never held in memory. Between polls one file is
    open: the segment of the last complete batch.
    """

    def __init__(
        self,
        path: str,
        *,
        from_lsn: int,
        vfs: VFS | None = None,
        max_record_size: int = DEFAULT_MAX_RECORD_SIZE,
    ) -> None:
        """No I/O. Raises WalInvalidArgumentError for a negative `from_lsn` or a
        `max_record_size` outside 0..2**32-1."""
        if from_lsn < 0:
            raise WalInvalidArgumentError(f"from_lsn must be >= 0, not {from_lsn}")
        if not 0 <= max_record_size <= fmt.MAX_PAYLOAD:
            raise WalInvalidArgumentError(f"max_record_size must be 0..{fmt.MAX_PAYLOAD}")
        self.path = path
        self.from_lsn = from_lsn
        self.max_record_size = max_record_size
        self._vfs: VFS = vfs if vfs is not None else OsVFS()
        self._at: _Point | None = None  # after the last complete batch consumed (T7)
        self._position = 0
        self._recycled = False
        self._closed = False

    @property
    def position(self) -> int:
        """LSN of the last record consumed (the end of a complete batch), 0 if none."""
        return self._position

    def poll(self) -> list[Record]:
        """The data records of the batches completed since the last poll (T6), in LSN order.

        O(new bytes) and a few preads; see the class docstring. A failed poll changes
        nothing, so it can be retried, except after WalRecycledError (T4, T7), which every
        later poll raises again. Raises WalIOError (or WalFullError) when a file call fails,
        WalFormatError for a foreign or newer file (T3), WalInvalidArgumentError for a valid
        record above `max_record_size`, WalClosedError after `close()`, and
        WalCorruptionError only if bytes that validated a moment ago stop validating while
        their segment header stays the same (something other than a writer modified them).
        """
        if self._closed:
            raise WalClosedError(f"the tail of {self.path} is closed")
        if self._recycled:
            raise WalRecycledError(_RECYCLED)
        slots = _Slots(self._vfs, self.path, self._at.segment if self._at else None)
        try:
            return self._poll(slots)
        except OSError as exc:
            raise io_error(exc, f"reading {self.path}") from exc
        finally:
            slots.close_except(self._at.segment if self._at else None)

    def _poll(self, slots: _Slots) -> list[Record]:
        at = self._at
        if at is None:
            first = slots.first()
            if first is None:
                return []
            if first.header.prev_lsn and first.header.prev_lsn >= self.from_lsn:
                raise self._recycle()  # T4: records from_lsn..prev_lsn are gone
            at = _Point(first, fmt.SEGMENT_HEADER_SIZE, 0, first.header.base_lsn - 1)
        elif _read_header(at.segment.file) != at.segment.header:
            raise self._recycle()  # T7
        spans, done = self._measure(at, slots)
        records = self._read(spans)
        if done is not at:
            self._at, self._position = done, done.lsn
        return records

    def _recycle(self) -> WalRecycledError:
        self._recycled = True
        return WalRecycledError(_RECYCLED)

    def _measure(self, at: _Point, slots: _Slots) -> tuple[list[_Span], _Point]:
        """Follow the log from `at` while records are valid (T2, T5): the spans holding
        complete batches, and the point after the last of them (T6). Verifies every byte
        read (CRCs, window by window) without holding payloads. O(bytes after `at`)."""
        spans: list[_Span] = []
        done, done_span = at, 0
        start = at
        while True:
            segment = start.segment
            end, crc, lsn = start.offset, start.crc, start.lsn
            window = Window(segment.file, segment.file.size())
            for found in scan(window, segment.header, start=end, prev_crc=crc, last_lsn=lsn,
                              max_record_size=self.max_record_size):
                end, crc, lsn = found.end, found.crc, found.header.lsn
                if found.header.end:
                    done, done_span = _Point(segment, end, crc, lsn), len(spans)
            spans.append(_Span(start, end, lsn))
            following = slots.successor(segment, lsn)
            if following is None:
                break
            start = _Point(following, fmt.SEGMENT_HEADER_SIZE, 0, lsn)
        return [*spans[:done_span], _Span(spans[done_span].start, done.offset, done.lsn)], done

    def _read(self, spans: list[_Span]) -> list[Record]:
        """Read the records of `spans` with their payloads, verifying them again, then read
        each segment's header again (T7). O(bytes in the spans); spans wholly below
        `from_lsn` are skipped."""
        records: list[Record] = []
        for span in spans:
            start = span.start
            segment = start.segment
            if span.stop <= start.offset or span.lsn < self.from_lsn:
                continue
            reached = start.offset
            for found in scan(Window(segment.file, span.stop), segment.header,
                              start=start.offset, stop=span.stop, prev_crc=start.crc,
                              last_lsn=start.lsn, max_record_size=self.max_record_size,
                              payloads=True):
                reached = found.end
                if found.header.kind == fmt.KIND_DATA and found.header.lsn >= self.from_lsn:
                    assert found.payload is not None
                    records.append(Record(found.header.lsn, found.payload))
            if _read_header(segment.file) != segment.header:
                raise self._recycle()
            if reached != span.stop:
                raise WalCorruptionError(
                    "a record changed while it was being read", segment=segment.path,
                    offset=reached,
                )
        return records

    def close(self) -> None:
        """Release the open file (the tail never writes or locks). Idempotent."""
        self._closed = True
        at, self._at = self._at, None
        if at is not None:
            at.segment.file.close()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recycled" if self._recycled else "open"
        return f"<LogTail {self.path!r} {state} position={self._position}>"
