"""`recover`: what a framed file holds, and the repair of a torn tail.

A writer killed mid-frame leaves a torn tail: one unfinished last frame, after which no valid
frame follows. Only that may be cut off. Everything else is reported or refused, never cut
(docs/format/framing.md, "Recovery", has the exact rules):

- a frame that fits in the file but fails its checksum, and a length above `max_frame_len`
  (which no writer wrote, wherever it ends), are damage: reported in `Recovery.error`;
- bytes that end the file like a torn frame but are followed by valid frames are corruption
  (`TailNotTorn`, naming the bad offset and the first valid frame after it);
- bytes that cannot be shown to be one unfinished frame are refused (`TailNotTorn`): with no
  checksum to check frames by, a "tail" larger than one frame of the stream; with one, a
  tail whose search for frames would pass its work limit.

Finding frames after the bad point: every offset after it is a candidate when its length
fits (at most `max_frame_len`, inside the file) and its header is not all zero bytes; the
lengths are filtered with numpy, in chunks, and only candidates are checked in Python. A
candidate starts a chain of frames, each valid (its checksum matches) and starting where the
one before ends. The chain proves corruption when its frames carry at least 32 bits of
checksum, counting only frames that are not zero fill (a stored checksum of 0 over a payload
of zero bytes: a zero-filled region is made of those, for CRC-16 and, empty, for CRC-32),
and counting a chain that ends exactly at the end of the file as one frame more once it has
one. So: one frame with a checksum of 4 or more bytes; two with CRC-16 (or a 3-byte one), or
one that ends the file; four with a 1-byte checksum, or three and the end of the file.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamdb.errors import ChecksumMismatch, FrameTooLarge, TailNotTorn, UnexpectedEof
from streamdb.framing.frames import DefaultDeframer, FrameDecoder

READ_SIZE = 1 << 20
UNCHECKED_TAIL = 4 << 10  # without checksums: a tail may be cut when at most this long, or
# no longer than the largest frame (header included) decoded before it
SCAN_WORK_PER_BYTE = 512  # the search's work limit, per byte of the tail...
SCAN_WORK_MAX = 256 << 20  # ...and in all: a unit is a byte hashed;
CANDIDATE_WORK = 256  # each frame checked costs this many more
EVIDENCE_BITS = 32  # of checksum, in the frames that prove valid data follows the bad point
_CHUNK = 1 << 16  # offsets filtered per numpy pass
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `recover` found. `clean`: whole frames up to the end of the file."""

    frames: int  # good frames from the start
    good_offset: int  # where the last good frame ends
    size: int  # bytes in the file when read
    torn: bool  # the bytes after good_offset are a torn tail (an unfinished last frame)
    error: ChecksumMismatch | FrameTooLarge | None  # or a bad frame starts there
    truncated: bool  # the torn tail was cut off

    @property
    def clean(self) -> bool:
        return not self.torn and self.error is None


def recover(file: str | os.PathLike[str] | Any, deframer: DefaultDeframer | None = None, *,
            truncate: bool = False) -> Recovery:
    """Scan the frames of `file` (a path, or a seekable binary file object, read from its
    start) with `deframer`, which must match the writer's framer (DefaultDeframer when
    None). With `truncate`, a torn tail is cut off (the file must be writable) and the file
    fsynced; nothing else ever is.

    Errors: TailNotTorn (a CorruptionError and a FramingError) when the decoding stops like
    a torn tail but is not one: valid frames follow (corruption), or, without checksums, more
    than one frame's worth of bytes is left, or the search for frames passes its work limit.
    The file is untouched whenever recover raises. I/O errors propagate as OSError.
    Damage that stops the decoding inside the file (ChecksumMismatch, FrameTooLarge) is not
    raised: it is `Recovery.error`.

    Cost: O(file size) to read and decode, plus, when the decoding stops short of the end
    with a checksummed deframer, the search of the tail: O(tail) numpy filtering and at
    most min(SCAN_WORK_MAX, SCAN_WORK_PER_BYTE * tail) bytes hashed (CANDIDATE_WORK per
    frame checked). Memory: O(largest frame).
    """
    if isinstance(file, str | os.PathLike):
        with open(file, "r+b" if truncate else "rb") as f:
            return recover(f, deframer, truncate=truncate)
    deframer = deframer if deframer is not None else DefaultDeframer()
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    frames, good, largest, stop = _decode(file, deframer)
    error: ChecksumMismatch | FrameTooLarge | None = None
    torn = False
    if isinstance(stop, UnexpectedEof):
        _check_torn(file, deframer, good, size, largest)  # raises unless it is torn
        torn = True
    else:
        error = stop  # FrameTooLarge: a length above the limit is damage, even past the end
    if truncate and torn:
        file.truncate(good)
        file.flush()
        try:
            fd = file.fileno()
        except (OSError, io.UnsupportedOperation):  # an in-memory file: nothing to sync
            fd = None
        if fd is not None:
            os.fsync(fd)
    return Recovery(frames, good, size, torn, error, truncate and torn)


def _decode(file: Any, deframer: DefaultDeframer) -> tuple[
        int, int, int, UnexpectedEof | ChecksumMismatch | FrameTooLarge | None]:
    """Decode from the file's position to its end: (good frames, offset where they end,
    largest payload, the error that stopped the decoding). O(file) reads and time."""
    decoder = FrameDecoder(deframer)
    largest = 0
    stop: UnexpectedEof | ChecksumMismatch | FrameTooLarge | None = None
    try:
        while True:
            payload = decoder.next_payload()
            if payload is not None:
                if payload.nbytes > largest:
                    largest = payload.nbytes
                continue
            data = file.read(READ_SIZE)
            if not data:
                decoder.end()
                break
            decoder.feed(data)
    except (UnexpectedEof, ChecksumMismatch, FrameTooLarge) as exc:
        stop = exc
    return decoder.frames, decoder.buffer.offset, largest, stop


def _check_torn(file: Any, deframer: DefaultDeframer, good: int, size: int,
                largest: int) -> None:
    """Return if the `size - good` bytes at `good` (where the decoding stopped, inside a
    frame) are a torn tail; raise TailNotTorn if they are not, or cannot be shown to be.
    Reads the tail (once) only for a checksummed deframer."""
    tail = size - good
    hs = deframer.header_size
    if not deframer.size or deframer.checksum is None:  # frames cannot be checked
        one_frame = max(UNCHECKED_TAIL, hs + largest)
        if tail > one_frame:
            raise TailNotTorn(
                f"the {tail} bytes after the last good frame are more than one frame of this "
                f"stream (largest {hs + largest} bytes with its header; without checksums "
                f"at most {one_frame} are cut): not a torn tail. Is this the deframer that "
                f"matches the writer's framer? Nothing was cut", offset=good, tail=tail)
        return
    data = _read_at(file, good, tail)
    budget = min(SCAN_WORK_MAX, SCAN_WORK_PER_BYTE * tail)
    try:
        found = _FrameSearch(data, deframer, budget).first()
    except _OverBudget:
        raise TailNotTorn(
            f"the {tail} bytes after the last good frame could not be searched for valid "
            f"frames within the work limit ({budget} bytes hashed, {CANDIDATE_WORK} more per "
            f"frame checked): not shown to be a torn tail, and nothing was cut",
            offset=good, tail=tail) from None
    if found is not None:
        raise TailNotTorn(
            f"valid frames follow the bad frame (the first at offset {good + found}): the "
            f"stream is corrupt there, not torn, and nothing was cut", offset=good, tail=tail,
            frame_offset=good + found)


def _read_at(file: Any, offset: int, n: int) -> bytes:
    """Exactly the `n` bytes at `offset` (fewer if the file ends first)."""
    file.seek(offset)
    parts: list[bytes] = []
    left = n
    while left > 0:
        part = file.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _OverBudget(Exception):
    """The search passed its work limit (internal: recover raises TailNotTorn)."""


class _FrameSearch:
    """The search for a chain of valid frames in `data` (the bytes after the bad point,
    which is offset 0) that proves them not torn. See the module docstring for the rules."""

    def __init__(self, data: bytes, deframer: DefaultDeframer, budget: int) -> None:
        checksum = deframer.checksum
        assert checksum is not None and deframer.size
        self.data = data
        self.view = memoryview(data)
        self.hs = deframer.header_size
        self.limit = deframer.max_frame_len
        self.compute: Callable[[memoryview], int] = (
            getattr(checksum, "function", None) or checksum.compute)
        self.mask = (1 << 8 * deframer.size) - 1
        self.need = -(-EVIDENCE_BITS // (8 * deframer.size))  # evidence frames
        self.zero_frame_valid = self.compute(self.view[:0]) & self.mask == 0
        self.budget = budget
        self.work = 0
        # Per offset: 0 not known yet, else 1 + 2 * (evidence frames of the chain from
        # there, at most `need`) + (1 if the chain ends exactly at the end of the data).
        self.memo = bytearray(len(data) + 1)
        self.zero_run = (0, 0)  # the last run of zero bytes found: [start, end)

    def first(self) -> int | None:
        """The first offset (> 0) whose chain proves valid frames follow, or None. Raises
        _OverBudget. O(len(data)) filtering plus the work limit."""
        for pos in _candidates(self.data, self.hs, self.limit):
            evidence, at_end = self._chain(pos)
            if evidence >= self.need or (at_end and evidence >= 1 and evidence + 1 >= self.need):
                return pos
        return None

    def _frame(self, pos: int) -> tuple[int, int] | None:
        """(where the frame at `pos` ends, 1 if it is evidence else 0), or None if no valid
        frame starts there."""
        data, hs = self.data, self.hs
        if len(data) - pos < hs:
            return None
        n = _LENGTH.unpack_from(data, pos)[0]
        start = pos + hs
        stop = start + n
        if n > self.limit or stop > len(data):
            return None
        self.work += CANDIDATE_WORK + n
        if self.work > self.budget:
            raise _OverBudget
        stored = int.from_bytes(data[pos + 4 : start], "little")
        if self.compute(self.view[start:stop]) & self.mask != stored:
            return None
        zero_fill = stored == 0 and data.count(0, start, stop) == n
        return stop, 0 if zero_fill else 1

    def _zero_frames_end(self, pos: int) -> int:
        """Where a run of all-zero frames (valid: the checksum of nothing is 0) starting at
        `pos` ends: the first offset whose header is not all zero bytes."""
        lo, run = self.zero_run
        if not lo <= pos < run:  # a new run: find its end (chains entering it share it)
            arr = np.frombuffer(self.data, np.uint8)
            run = pos
            while run < len(self.data):
                chunk = arr[run : run + (1 << 16)]
                nonzero = np.flatnonzero(chunk)
                if len(nonzero):
                    run += int(nonzero[0])
                    break
                run += len(chunk)
            self.zero_run = pos, run
        return pos + (run - pos) // self.hs * self.hs

    def _chain(self, pos: int) -> tuple[int, bool]:
        """(evidence frames, at most `need`; whether it ends exactly at the end) of the chain
        of valid frames from `pos`. Each offset is checked once (memo); iterative."""
        memo, end, hs = self.memo, len(self.data), self.hs
        path: list[tuple[int, int]] = []
        while True:
            if memo[pos]:
                evidence, at_end = divmod(memo[pos] - 1, 2)
                break
            if pos == end:
                evidence, at_end = 0, 1
                break
            if (self.zero_frame_valid and end - pos >= hs
                    and not any(self.view[pos : pos + hs])):
                after = self._zero_frames_end(pos)  # zero fill: no evidence, skipped whole
                self.work += CANDIDATE_WORK
                path.append((pos, 0))
                pos = after
                continue
            frame = self._frame(pos)
            if frame is None:
                evidence, at_end = 0, 0
                memo[pos] = 1
                break
            path.append((pos, frame[1]))
            pos = frame[0]
        for at, own in reversed(path):
            evidence = min(self.need, evidence + own)
            memo[at] = 1 + 2 * evidence + at_end
        return evidence, bool(at_end)


def _candidates(data: bytes, hs: int, limit: int, chunk: int = _CHUNK) -> Iterator[int]:
    """The offsets p > 0 of `data`, ascending, where a frame header could start: its length
    is at most `limit` and fits in `data` (p + hs + length <= len(data)), and its `hs`
    bytes are not all zero. numpy, `chunk` offsets at a time (lazily: a search that stops
    early filters no further): O(len(data)) time, O(chunk) memory. A chunk of zero bytes
    is skipped whole; otherwise each of the four alignments of the u32 lengths is compared
    with the chunk's largest room first, and only offsets that pass are looked at again."""
    last = len(data) - hs  # the last offset with room for a header
    arr = np.frombuffer(data, np.uint8)
    for lo in range(1, last + 1, chunk):
        hi = min(last + 1, lo + chunk)
        if not arr[lo : hi - 1 + hs].any():  # zero fill
            continue
        bound = min(limit, last - lo)
        keep = np.zeros(hi - lo, dtype=bool)
        for r in range(min(4, hi - lo)):
            start = lo + r  # offsets start, start + 4, ... below hi
            count = (hi - start + 3) // 4
            lengths = np.frombuffer(data, "<u4", count=count, offset=start)
            idx = np.flatnonzero(lengths <= bound)
            if not len(idx):
                continue
            chosen = lengths[idx].astype(np.int64)
            fits = chosen <= np.minimum(limit, last - start - 4 * idx)
            nonzero = chosen != 0
            for at in range(4, hs, 4):  # the rest of the header, four bytes at a time
                more = np.frombuffer(data, "<u4", count=count, offset=start + min(at, hs - 4))
                nonzero |= more[idx] != 0
            keep[r::4][idx[fits & nonzero]] = True
        yield from (np.flatnonzero(keep) + lo).tolist()
