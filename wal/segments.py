"""Segment files: naming, discovery and header writes.

The log at `path` is made of slots: slot 0 is the file `path` itself, slot N > 0 is the
sibling `path.N`. Each slot holds one segment, or is free. Which segments are current is
decided by their headers alone (see recovery), so no directory or manifest is needed.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from wal import format as fmt
from wal.vfs import VFS, VFile

# Zero-filling new segments (rather than fallocate's unwritten extents) means later
# fdatasync calls flush data only, with no extent conversion in the filesystem journal.
_ZEROS = bytes(1 << 20)


def slot_path(path: str, number: int) -> str:
    return path if number == 0 else f"{path}.{number}"


def sibling_numbers(vfs: VFS, path: str) -> list[int]:
    """Slot numbers > 0 present beside `path`, ascending. One listdir."""
    directory, base = os.path.split(path)
    prefix = base + "."
    found = []
    for name in vfs.listdir(directory):
        suffix = name[len(prefix) :]
        if name.startswith(prefix) and suffix.isdigit() and suffix[0] != "0":
            found.append(int(suffix))
    return sorted(found)


def new_salt() -> int:
    """A random salt whose tag (low 4 bytes) has no zero byte, so zero-filled space never
    matches it when recovery searches for records by tag."""
    while True:
        salt = secrets.randbits(64)
        if all(salt >> (8 * i) & 0xFF for i in range(4)):
            return salt


@dataclass(eq=False)
class Slot:
    """One segment file and what is known of it."""

    number: int
    path: str
    file: VFile
    header: fmt.SegmentHeader | None  # None: blank or torn, i.e. free
    size: int
    end: int = fmt.SEGMENT_HEADER_SIZE  # end of the last committed record
    last_lsn: int = 0  # LSN of the last committed record (base_lsn - 1 when none)
    last_crc: int = 0  # its CRC: the chain seed for the next record
    generation: int = 0  # bumped at every header write, so replay can notice recycling
    capacity: int = 0  # bytes the segment may fill before the log rolls (0: not decided yet)
    # Salvage only: the header is damaged (R1), and `guess` is the best guess of it (the
    # salt reads its records), None when even the salt is implausible.
    damaged: bool = False
    guess: fmt.SegmentHeader | None = None

    @property
    def current(self) -> bool:
        return self.header is not None and not self.header.free

    def write_header(self, header: fmt.SegmentHeader, *, fresh: bool) -> None:
        """Write the header. A fresh file gets the magic too; an existing one never has its
        first 8 bytes rewritten, so a torn header write cannot make it look foreign."""
        packed = header.pack()
        if fresh:
            self.file.pwritev([packed], 0)
            self.size = max(self.size, fmt.SEGMENT_HEADER_SIZE)
        else:
            self.file.pwritev([packed[8:]], 8)
        self.header = header
        self.end = fmt.SEGMENT_HEADER_SIZE
        self.last_lsn = header.base_lsn - 1
        self.last_crc = 0
        self.generation += 1

    def zero_fill(self, size: int) -> None:
        """Preallocate by writing zeros from the header to `size` bytes."""
        pos = max(self.size, fmt.SEGMENT_HEADER_SIZE)
        while pos < size:
            n = min(len(_ZEROS), size - pos)
            self.file.pwritev([memoryview(_ZEROS)[:n]], pos)
            pos += n
        self.size = max(self.size, size)
