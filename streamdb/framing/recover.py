"""`recover`: what a framed file holds, and the repair of a torn tail.

A writer killed mid-frame leaves a torn tail: a frame that runs past the end of the file.
Only that may be cut off. A frame that fits in the file but fails its checksum or its
length limit is damage: it is reported, never truncated (what follows may be good data).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any

from streamdb.errors import ChecksumMismatch, FrameTooLarge, UnexpectedEof
from streamdb.framing.frames import DefaultDeframer, FrameDecoder

READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Recovery:
    frames: int  # good frames from the start
    good_offset: int  # where the last good frame ends
    size: int  # bytes in the file when read
    torn: bool  # the bytes after good_offset are an unfinished frame
    error: ChecksumMismatch | FrameTooLarge | None  # or a bad frame starts there
    truncated: bool  # the torn tail was cut off

    @property
    def clean(self) -> bool:
        return not self.torn and self.error is None


def recover(file: str | os.PathLike[str] | Any, deframer: DefaultDeframer | None = None, *,
            truncate: bool = False) -> Recovery:
    """Scan the frames of `file` (a path, or a seekable binary file object, read from its
    start). With `truncate`, a torn tail is cut off (the file must be writable); damage
    never is. O(file size) reads, O(largest frame) memory."""
    if isinstance(file, str | os.PathLike):
        with open(file, "r+b" if truncate else "rb") as f:
            return recover(f, deframer, truncate=truncate)
    deframer = deframer or DefaultDeframer()
    size = file.seek(0, os.SEEK_END)
    file.seek(0)
    decoder = FrameDecoder(deframer)
    error: ChecksumMismatch | FrameTooLarge | None = None
    torn = False
    try:
        while True:
            if decoder.next_payload() is not None:
                continue
            data = file.read(READ_SIZE)
            if not data:
                decoder.end()
                break
            decoder.feed(data)
    except UnexpectedEof:
        torn = True
    except FrameTooLarge as exc:
        # A length past the end of the file is a torn header, not a huge frame.
        assert exc.offset is not None
        torn = exc.offset + deframer.header_size + exc.length > size
        error = None if torn else exc
    except ChecksumMismatch as exc:
        error = exc
    good = decoder.buffer.offset
    if truncate and torn:
        file.truncate(good)
        file.flush()
        try:
            fd = file.fileno()
        except (OSError, io.UnsupportedOperation):  # an in-memory file: nothing to sync
            fd = None
        if fd is not None:
            os.fsync(fd)
    return Recovery(decoder.frames, good, size, torn, error, truncate and torn)
