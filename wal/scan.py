"""Reading records out of one segment: shared by recovery and replay.

A record is valid when its header is plausible (tag of this segment's salt, known kind, no
unknown flags, length within the file), it chains to the record before it (`prev_crc`), its
LSN is above the previous one, and its CRC matches. Scanning stops at the first record that
is not valid; what that means (clean end, torn tail, corruption) is recovery's decision.

Memory: one read window (1 MiB) plus, when payloads are wanted, one payload (bounded by
`max_record_size`, checked before reading). Payload CRCs are computed window by window, so a
record larger than the limit is still verified without being held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from wal import format as fmt
from wal.errors import WalCorruptionError, WalInvalidArgumentError
from wal.vfs import VFile

WINDOW = 1 << 20
SEARCH_BUDGET = 4  # see find_records


class Window:
    """Buffered positional reads over a file of known size."""

    __slots__ = ("_buf", "_file", "_start", "size")

    def __init__(self, file: VFile, size: int) -> None:
        self._file = file
        self.size = size
        self._buf = b""
        self._start = 0

    def read(self, offset: int, n: int) -> bytes | memoryview:
        """Exactly `min(n, size - offset)` bytes at `offset`. One pread per window refill."""
        n = max(0, min(n, self.size - offset))
        rel = offset - self._start
        if rel >= 0 and rel + n <= len(self._buf):
            return memoryview(self._buf)[rel : rel + n]
        if n > WINDOW:
            return self._file.pread(n, offset)
        self._buf = self._file.pread(min(WINDOW, self.size - offset), offset)
        self._start = offset
        return memoryview(self._buf)[:n]

    def find(self, needle: bytes, start: int) -> int:
        """Offset of the first `needle` at or after `start`, or -1. Reads window by window,
        searching each in place (no copies)."""
        pos = start
        while pos + len(needle) <= self.size:
            rel = pos - self._start
            if not (rel >= 0 and rel + len(needle) <= len(self._buf)):
                self._buf = self._file.pread(min(WINDOW, self.size - pos), pos)
                self._start, rel = pos, 0
            hit = self._buf.find(needle, rel)
            if hit >= 0:
                return self._start + hit
            pos = self._start + len(self._buf) - len(needle) + 1
        return -1

    def crc(self, offset: int, n: int, seed: int) -> int:
        """CRC-32C of `n` bytes at `offset`, window by window."""
        value = seed
        while n > 0:
            piece = self.read(offset, min(n, WINDOW))
            if not piece:
                break
            value = fmt.crc(piece, value)
            offset += len(piece)
            n -= len(piece)
        return value


@dataclass(slots=True)
class Found:
    """A valid record: where it is, its header, its CRC, and (if asked) its payload."""

    offset: int
    header: fmt.RecordHeader
    crc: int
    payload: bytes | None

    @property
    def end(self) -> int:
        return self.offset + fmt.RECORD_HEADER_SIZE + self.header.length


def check_record(
    window: Window, seg: fmt.SegmentHeader, offset: int, max_record_size: int
) -> tuple[fmt.RecordHeader, int] | None:
    """The header and CRC of a valid-by-itself record at `offset`, or None.

    Does not check the chain or LSN order. Raises WalInvalidArgumentError for a valid record
    larger than `max_record_size` (the log was written with a larger limit).
    """
    head = _plausible(window, seg, offset)
    return None if head is None else _verified(window, seg, offset, head, max_record_size)


def _plausible(window: Window, seg: fmt.SegmentHeader, offset: int) -> fmt.RecordHeader | None:
    """The header at `offset` if it passes the cheap checks (no CRC yet). O(1)."""
    raw = window.read(offset, fmt.RECORD_HEADER_SIZE)
    if len(raw) < fmt.RECORD_HEADER_SIZE:
        return None
    head = fmt.parse_record_header(raw)
    if not head.plausible(seg.tag, window.size - offset - fmt.RECORD_HEADER_SIZE):
        return None
    return head


def _verified(window: Window, seg: fmt.SegmentHeader, offset: int, head: fmt.RecordHeader,
              max_record_size: int) -> tuple[fmt.RecordHeader, int] | None:
    """`check_record` past the cheap checks: the CRC over the payload. O(head.length)."""
    raw = bytes(window.read(offset, fmt.RECORD_HEADER_SIZE))  # the window moves as it hashes
    value = fmt.finish_crc(raw, window.crc(offset + fmt.RECORD_HEADER_SIZE, head.length,
                                           seg.seed))
    if value != head.crc:
        return None
    if head.length > max_record_size:
        raise WalInvalidArgumentError(
            f"the log holds a {head.length}-byte record at offset {offset}, above "
            f"max_record_size={max_record_size}: reopen with a larger limit"
        )
    return head, value


def find_records(
    window: Window, seg: fmt.SegmentHeader, start: int, max_record_size: int
) -> Iterator[tuple[int, fmt.RecordHeader]]:
    """(offset, header) of each valid-by-itself record at or after `start`, found by
    searching for the segment's tag (zero-filled and stale-salt space is skipped at C speed)
    and checking each candidate alone (tag, kind, length, CRC), without the chain. A valid
    record is skipped whole, so records nested in payloads are never looked at.

    O(bytes searched). Candidates that fail may hash at most SEARCH_BUDGET times the bytes
    searched plus `max_record_size`, and may number at most 1,024 plus one per KiB
    searched: a log written by this package has almost none (a random 32-bit tag turns up
    by chance once in 4 GiB). A segment crafted to make the search long (a plausible header
    at every few bytes, or headers claiming long payloads) raises WalCorruptionError
    instead. Raises WalInvalidArgumentError like `check_record`, OSError from the file.
    """
    tag = seg.tag.to_bytes(4, "little")
    span = max(0, window.size - start)
    hashed = SEARCH_BUDGET * span + max_record_size  # bytes failed candidates may hash
    misses = 1024 + span // 1024  # candidates that may fail
    pos = window.find(tag, start)
    while pos >= 0:
        head = _plausible(window, seg, pos)
        over = head is not None and head.length > hashed
        checked = None
        if head is not None and not over:
            checked = _verified(window, seg, pos, head, max_record_size)
            if checked is None:
                hashed -= head.length
        if checked is None:
            misses -= 1
            if misses < 0 or over:
                raise WalCorruptionError(
                    f"the segment holds more damaged record headers than a log can "
                    f"(searching from offset {start}, at {pos})"
                )
            pos = window.find(tag, pos + 1)
            continue
        yield pos, checked[0]
        pos = window.find(tag, pos + fmt.RECORD_HEADER_SIZE + checked[0].length)


def scan(
    window: Window,
    seg: fmt.SegmentHeader,
    *,
    start: int = fmt.SEGMENT_HEADER_SIZE,
    stop: int | None = None,
    prev_crc: int = 0,
    last_lsn: int = 0,
    max_record_size: int,
    payloads: bool = False,
) -> Iterator[Found]:
    """Valid, chained records from `start` until the first invalid one (or `stop`).

    O(bytes scanned). The caller learns where scanning stopped from the last `Found.end`.
    """
    offset = start
    limit = window.size if stop is None else min(stop, window.size)
    last_lsn = max(last_lsn, seg.base_lsn - 1)
    while offset + fmt.RECORD_HEADER_SIZE <= limit:
        checked = check_record(window, seg, offset, max_record_size)
        if checked is None:
            return
        head, value = checked
        end = offset + fmt.RECORD_HEADER_SIZE + head.length
        if head.prev_crc != prev_crc or head.lsn <= last_lsn or end > limit:
            return
        payload = None
        if payloads:
            payload = bytes(window.read(offset + fmt.RECORD_HEADER_SIZE, head.length))
        found = Found(offset, head, value, payload)
        yield found
        offset, prev_crc, last_lsn = found.end, value, head.lsn


def proves_durable(
    window: Window, seg: fmt.SegmentHeader, start: int, lsn: int, max_record_size: int
) -> bool:
    """True if a valid record of this segment starting after `start` says, through its
    durable LSN, that record `lsn` had been fsynced before it was written.

    Used only when recovery stops early: such a record proves the bytes at the stop point
    were durable, so they are corrupt rather than torn. Records are found by
    `find_records`. O(bytes after `start`); stops at the first proof. Raises
    WalCorruptionError when the search would take more (`find_records`).
    """
    return any(head.durable_lsn >= lsn
               for _, head in find_records(window, seg, start + 1, max_record_size))
