"""Opening a log: find its segments, validate them, decide where the committed log ends.

Rules (numbered so tests and docs can name them):

R1. Slot files whose header is blank (a crash during creation) or fails its CRC (a crash
    during a recycle) are free. A file without our magic, or of a newer version, is refused
    with WalFormatError and left untouched.
R2. Current segments, sorted by sequence number, must be consecutive; a gap means a header
    of a live segment was damaged: WalCorruptionError. (Segments are freed lowest first at
    checkpoint and highest first after a torn tail, so crashes leave no gap.)
R3. Records are read in order (`wal.scan`). A record is committed when a record with the END
    flag closes its batch; records after the last END are an unfinished batch and are dropped.
R4. Reading moves on to the next segment when its header names the last record read as
    the previous segment's last; otherwise reading stops there.
R5. Where reading stops, the tail is torn unless a valid record after that point (in the same
    segment or a later one) says, through its durable LSN, that the missing record had been
    fsynced: then the log is corrupt (WalCorruptionError). A log whose last record is a
    CLOSE marker ended cleanly and needs no such search.
R6. The writer resumes right after the last committed record, and current segments after it
    are freed (highest first). Dropped records cannot come back: each record names the CRC of
    the one before it and a random session id, so stale bytes past the resume point never
    chain onto new records.
R7. Deciding (R1-R5, `open_slots` without `create`, `recover`) reads only: no file is
    written, created or removed. R6's writes (freeing, erasing the unfinished batch's first
    record, a first segment, fsyncs) are the writer's `finish()`, which a caller may run only
    once its own open has succeeded.
R8. Lenient (salvage) recovery raises nothing for damage: a damaged header (R1) marks its
    slot `damaged` with a best guess of the header, a gap (R2) ends the chain before it, a
    proven stop point (R5) is read as a torn tail; `Recovered.damage` names the first damage.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from wal import format as fmt
from wal.errors import WalCorruptionError, WalLockedError
from wal.scan import Window, proves_durable, scan
from wal.segments import Slot, sibling_numbers, slot_path
from wal.vfs import VFS, VFile


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log found. A torn tail is reported here, never raised."""

    records: int  # committed data records in the log
    last_lsn: int  # LSN of the last committed record (0 if none)
    clean: bool  # the previous writer closed the log
    torn: bool  # an unfinished batch or a partial record was dropped
    discarded_records: int  # valid records of the unfinished batch that were dropped
    segments: int  # current segments


@dataclass
class Recovered:
    slots: list[Slot]
    chain: list[Slot]  # current segments in order; the last one is where writing resumes
    to_free: list[Slot]  # current segments past the resume point, highest first
    next_lsn: int
    committed_lsn: int
    report: RecoveryReport
    damage: str | None = None  # lenient (salvage) opens only: the first damage found


def _load(number: int, path: str, file: VFile, max_record_size: int, lenient: bool) -> Slot:
    size = file.size()
    raw = file.pread(fmt.SEGMENT_HEADER_SIZE, 0)
    if fmt.is_blank(raw):
        return Slot(number, path, file, None, size)
    try:
        header = fmt.parse_segment_header(raw)  # WalFormatError: foreign or newer file
        if header is None:
            _check_damaged_header(path, file, raw, size, max_record_size)
    except WalCorruptionError:
        if not lenient:
            raise
        return Slot(number, path, file, None, size, damaged=True, guess=_guess(raw))
    return Slot(number, path, file, header, size)


def _guess(raw: bytes) -> fmt.SegmentHeader | None:
    """The header a damaged one most likely was (one flipped bit corrected when that explains
    its CRC), for its salt; None when the salt is implausible (a tag with a zero byte)."""
    raw = _correct_one_bit(raw) or raw
    flags, salt, seq, base, prev = struct.unpack_from("<IQQQQ", raw, 12)
    if not all(salt >> (8 * i) & 0xFF for i in range(4)):
        return None
    return fmt.SegmentHeader(flags, salt, seq, base, prev)


def _check_damaged_header(
    path: str, file: VFile, raw: bytes, size: int, max_record_size: int
) -> None:
    """Tell a torn header write from a damaged durable header (both fail the CRC).

    Header writes start at byte 8 and bytes 8..11 never change, so a torn *free* write
    always shows the FREE flag: that segment was being retired, and is free. Otherwise it
    is a torn recycle, whose records were never synced, unless records behind it prove (by
    their durable LSNs) that a sync happened after the segment's first record: then the
    header had been durable and is damaged (WalCorruptionError). The salt needed to read
    those records is taken from the header, after correcting a single flipped bit if one
    explains the CRC failure.
    """
    if raw[12] & fmt.FLAG_FREE:
        return  # checked before correcting: a torn free write is one bit from the old header
    raw = _correct_one_bit(raw) or raw
    flags, salt = struct.unpack_from("<IQ", raw, 12)
    if flags & fmt.FLAG_FREE:
        return
    guess = fmt.SegmentHeader(0, salt, 0, 0)
    first = None
    for found in scan(Window(file, size), guess, max_record_size=max_record_size):
        if first is None:
            first = found.header.lsn
        elif found.header.durable_lsn >= first:
            raise WalCorruptionError("segment header damaged", segment=path, offset=0)


def _correct_one_bit(raw: bytes) -> bytes | None:
    """The header with one bit flipped back, if that makes its CRC match. CRC-32C detects,
    and so locates, any single-bit error in a 64-byte header. O(480) CRCs of 60 bytes."""
    body = bytearray(raw[:60])
    stored = int.from_bytes(raw[60:64], "little")
    actual = fmt.crc(body)
    if (actual ^ stored).bit_count() == 1:  # the flipped bit is in the stored CRC
        return bytes(body) + actual.to_bytes(4, "little")
    for bit in range(64, 480):  # bytes 8..59; the magic was checked already
        body[bit >> 3] ^= 1 << (bit & 7)
        if fmt.crc(body) == stored:
            return bytes(body) + raw[60:64]
        body[bit >> 3] ^= 1 << (bit & 7)
    return None


def lock_main(vfs: VFS, path: str, *, create: bool) -> VFile | None:
    """Open slot 0 and take the writer's lock: None when the file is missing and not
    `create`. Raises WalLockedError if another process holds it, OSError from the files."""
    try:
        main = vfs.open(path, create=create)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        main.lock()
    except BlockingIOError as exc:
        main.close()
        raise WalLockedError(f"{path} is open in another process") from exc
    except BaseException:
        main.close()
        raise
    return main


def open_slots(
    vfs: VFS, path: str, max_record_size: int, *, create: bool = True, lenient: bool = False
) -> list[Slot]:
    """Open and lock slot 0, then open every sibling slot. Slot 0 is created if missing
    when `create`; otherwise a missing slot 0 is left missing (the list holds the siblings
    only, and nothing is locked). Writes nothing else. With `lenient`, damaged headers are
    marked on their slots (`Slot.damaged`) rather than raised."""
    main = lock_main(vfs, path, create=create)
    slots: list[Slot] = []
    try:
        if main is not None:
            slots.append(_load(0, path, main, max_record_size, lenient))
        for number in sibling_numbers(vfs, path):
            sib = slot_path(path, number)
            file = vfs.open(sib)
            slots.append(Slot(number, sib, file, None, 0))
            slots[-1] = _load(number, sib, file, max_record_size, lenient)
    except BaseException:
        for slot in slots:
            slot.file.close()
        if main is not None:
            main.close()
        raise
    return slots


def load_slot(number: int, path: str, file: VFile, max_record_size: int) -> Slot:
    """The slot in an open file (R1), strict: raises as opening the log does."""
    return _load(number, path, file, max_record_size, False)


def recover(slots: list[Slot], max_record_size: int, *, lenient: bool = False) -> Recovered:
    """Apply R2-R6 to loaded slots. Reads every current record once; writes nothing.

    With `lenient` (salvage), damage is not raised: the chain is cut at a missing segment,
    reading stops at damaged bytes as at a torn tail, and `Recovered.damage` says what was
    found (None for a log without damage)."""
    damage: str | None = None
    broken = [s for s in slots if s.damaged]
    if broken:
        damage = f"the header of {broken[0].path} is damaged"
    chain = sorted((s for s in slots if s.current), key=_seq)
    for i, (a, b) in enumerate(itertools.pairwise(chain)):
        if _seq(b) != _seq(a) + 1:
            message = f"log segment {_seq(a) + 1} is missing or its header is damaged"
            if not lenient:
                raise WalCorruptionError(message, segment=b.path, offset=0)
            damage = damage or f"{message} ({b.path} follows a gap)"
            chain = chain[: i + 1]
            break
    next_lsn = max([1, *(s.header.base_lsn for s in slots if s.header is not None)])
    if not chain:
        report = RecoveryReport(0, 0, True, False, 0, 0)
        return Recovered(slots, [], [], next_lsn, next_lsn - 1, report, damage)

    last_lsn = _header(chain[0]).base_lsn - 1
    committed: tuple[int, int, int, int] | None = None  # chain index, end, LSN, CRC
    records = pending = 0
    clean = False
    for index, slot in enumerate(chain):
        header = _header(slot)
        window = Window(slot.file, slot.size)
        slot.end, slot.last_lsn, slot.last_crc = fmt.SEGMENT_HEADER_SIZE, last_lsn, 0
        for found in scan(window, header, last_lsn=last_lsn, max_record_size=max_record_size):
            slot.end, slot.last_lsn, slot.last_crc = found.end, found.header.lsn, found.crc
            last_lsn = found.header.lsn
            pending += found.header.kind == fmt.KIND_DATA
            clean = found.header.end and found.header.kind == fmt.KIND_CLOSE
            if found.header.end:
                records, pending = records + pending, 0
                committed = (index, found.end, found.header.lsn, found.crc)
        following = chain[index + 1] if index + 1 < len(chain) else None
        if following is not None and _header(following).prev_lsn == last_lsn:
            continue  # R4: the writer rolled over here
        break

    tail = bytes(window.read(slot.end, 4))
    partial = tail == header.tag.to_bytes(4, "little")
    if not (clean and following is None):
        try:
            _check_torn_not_corrupt(chain, index, slot.end, last_lsn + 1, max_record_size)
        except WalCorruptionError as exc:
            if not lenient:
                raise
            damage = damage or str(exc)

    if committed is None:
        resume_index, end, lsn, crc = 0, fmt.SEGMENT_HEADER_SIZE, _header(chain[0]).base_lsn - 1, 0
    else:
        resume_index, end, lsn, crc = committed
    resume = chain[resume_index]
    resume.end, resume.last_lsn, resume.last_crc = end, lsn, crc
    report = RecoveryReport(
        records=records,
        last_lsn=lsn,
        clean=clean and following is None,
        torn=pending > 0 or partial,
        discarded_records=pending,
        segments=resume_index + 1,
    )
    return Recovered(
        slots,
        chain[: resume_index + 1],
        list(reversed(chain[resume_index + 1 :])),
        max(next_lsn, lsn + 1),
        lsn,
        report,
        damage,
    )


def _header(slot: Slot) -> fmt.SegmentHeader:
    assert slot.header is not None
    return slot.header


def _seq(slot: Slot) -> int:
    return _header(slot).seq


def _check_torn_not_corrupt(
    chain: list[Slot], index: int, offset: int, missing_lsn: int, max_record_size: int
) -> None:
    """R5: raise WalCorruptionError if a later record proves the stop point was durable."""
    for later in range(index, len(chain)):
        slot = chain[later]
        start = offset if later == index else fmt.SEGMENT_HEADER_SIZE - 1
        window = Window(slot.file, slot.size)
        if proves_durable(window, _header(slot), start, missing_lsn, max_record_size):
            raise WalCorruptionError(
                f"record {missing_lsn} is damaged but later records show it had been synced",
                segment=chain[index].path,
                offset=offset,
            )
