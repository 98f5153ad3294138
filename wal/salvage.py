"""Measuring what a salvage drops: the valid records of a damaged log past a point.

A log opened with `salvage=True` (see `wal.log`) reads its committed records up to the first
damage; the caller keeps some prefix of them and starts the log over (`finish(start_over=
True)`). `survey` tells what that leaves behind: every valid data record above the kept LSN
that can still be found in a current or damaged segment, and the highest LSN anything in the
log names, so that new LSNs can continue above it.

Rules (numbered so tests and docs can name them):

S1. Surveying reads, never writes. Records are found as recovery's torn-tail search finds
    them (R5): by searching each segment for its salt's tag and validating candidates alone
    (tag, kind, length, CRC), without the chain. A valid record is skipped whole, so records
    nested in payloads are not counted.
S2. A damaged header is read with the salt of its best guess (one flipped bit corrected when
    that explains the CRC); when even that salt is implausible its records cannot be found
    and are not counted.
S3. The highest LSN counts every valid header (a free header names the next LSN) and every
    valid record, whatever its kind or segment; a damaged header's fields do not count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wal import format as fmt
from wal.scan import Window, find_records
from wal.segments import Slot


@dataclass(frozen=True, slots=True)
class Survey:
    """Valid data records above an LSN, and the highest LSN the log names (S1-S3)."""

    records: int  # valid DATA records with an LSN above the one asked about
    bytes: int  # their bytes, 40-byte headers and payloads
    first_lsn: int  # the lowest of their LSNs (0 when there are none)
    last_lsn: int  # the highest of their LSNs (0 when there are none)
    highest_lsn: int  # the highest LSN any valid header or record names


def survey(slots: Iterable[Slot], after_lsn: int, max_record_size: int) -> Survey:
    """S1-S3 over `slots`. O(bytes of the current and damaged segments): one search for the
    tag through each (`wal.scan.find_records`). Reads only. Raises OSError from the files,
    WalInvalidArgumentError for a valid record above `max_record_size`, WalCorruptionError
    for a segment crafted to make the search quadratic."""
    records = size = first = last = highest = 0
    for slot in slots:
        if slot.header is not None:
            header = slot.header
            highest = max(highest, header.base_lsn - 1, header.prev_lsn)
            if header.free:
                continue
        elif slot.damaged and slot.guess is not None:
            header = slot.guess
        else:
            continue
        window = Window(slot.file, slot.file.size())
        for _, head in find_records(window, header, fmt.SEGMENT_HEADER_SIZE, max_record_size):
            highest = max(highest, head.lsn)
            if head.kind == fmt.KIND_DATA and head.lsn > after_lsn:
                records += 1
                size += fmt.RECORD_HEADER_SIZE + head.length
                first = head.lsn if not first else min(first, head.lsn)
                last = max(last, head.lsn)
    return Survey(records, size, first, last, highest)
