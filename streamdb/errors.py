"""The error tree. Every exception StreamDB raises on purpose is one of these.

```
StreamDbError
├── NotFoundError(KeyError)           path, id or version absent
├── InvalidPathError(ValueError)      not absolute, not UTF-8, NUL, over 1,024 bytes
├── InvalidArgumentError(ValueError)
├── DocumentTooLargeError             past max_document_size (a document or a message log)
├── CorruptionError                   names the path (or page) and offset
│   └── ChecksumMismatch              also a framed message's: expected and computed values
├── EncryptionError                   a missing key, or a key on an unencrypted database
│   ├── WrongKeyError
│   └── AuthenticationError           also a CorruptionError: a sealed chunk was altered
├── LockedError                       another process holds the writer lock
├── ReadOnlyError
├── ClosedError
├── StorageFullError                  ENOSPC or max_db_size; the database stays usable
├── StorageIOError(OSError)           any other failed file call; errno kept
├── UnsupportedError                  unknown format version, unsupported type, ...
├── FramingError                      framed streams and TLV (streamdb.framing)
│   ├── UnexpectedEof                 the input ends inside a frame (never EOFError)
│   ├── FrameTooLarge                 a length above the configured maximum
│   └── TailNotTorn                   recover() will not cut what is not a torn tail; also a
│                                     CorruptionError
└── ArrowError                        Arrow data and IPC (streamdb.arrow)
    └── ArrowFormatError              malformed IPC input; also a CorruptionError
        └── ArrowLimitError           input beyond a configured decoding limit
```

Lower-level exceptions (OSError, the `wal` package's errors, struct errors while parsing stored
metadata) are re-raised as one of these with the original as `__cause__`.
"""

from __future__ import annotations


class StreamDbError(Exception):
    """Base of every error StreamDB raises."""


class NotFoundError(StreamDbError, KeyError):
    """A path, document id or version does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better
        return str(self.args[0]) if self.args else ""


class InvalidPathError(StreamDbError, ValueError):
    """A path is not absolute, not valid UTF-8, contains NUL, or exceeds 1,024 bytes."""


class InvalidArgumentError(StreamDbError, ValueError):
    """An argument is out of range or of the wrong kind."""


class DocumentTooLargeError(StreamDbError):
    """A document, or a message log, would exceed max_document_size. (Reaching max_db_size
    is a StorageFullError.)"""


class CorruptionError(StreamDbError):
    """Stored bytes fail a checksum or a structural check. Names where."""

    def __init__(self, message: str, *, path: str | None = None, page: int | None = None,
                 offset: int | None = None) -> None:
        where = []
        if path is not None:
            where.append(f"path {path!r}")
        if page is not None:
            where.append(f"page {page}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(message + (f" ({', '.join(where)})" if where else ""))
        self.path = path
        self.page = page
        self.offset = offset


class ChecksumMismatch(CorruptionError):
    """A checksum does not match the bytes it covers. For framed messages, `expected` (the
    stored value) and `computed` are set, and `offset` is the frame's offset."""

    def __init__(self, message: str, *, path: str | None = None, page: int | None = None,
                 offset: int | None = None, expected: int | None = None,
                 computed: int | None = None) -> None:
        super().__init__(message, path=path, page=page, offset=offset)
        self.expected = expected
        self.computed = computed


class EncryptionError(StreamDbError):
    """Encryption is misconfigured, or authentication failed."""


class WrongKeyError(EncryptionError):
    """The encryption key does not open this database."""


class AuthenticationError(EncryptionError, CorruptionError):
    """An encrypted chunk fails authentication: its bytes, or the metadata bound to them,
    were altered (or damaged so that its checksum still matches). Names the path."""


class LockedError(StreamDbError):
    """Another process holds the writer lock."""


class ReadOnlyError(StreamDbError):
    """A write was attempted on a read-only database or view."""


class ClosedError(StreamDbError):
    """The database (or object) is closed."""


class StorageFullError(StreamDbError):
    """The disk is full or max_db_size is reached. The database stays usable."""


class StorageIOError(StreamDbError, OSError):
    """A file call failed; `errno` is the original one."""


class UnsupportedError(StreamDbError):
    """A format version, type or feature this library does not support."""


class FramingError(StreamDbError):
    """A framed stream or a TLV stream cannot be decoded (see its subclasses)."""


class UnexpectedEof(FramingError):
    """The input ends inside a frame: a torn length, checksum or payload. `offset` is where
    that frame starts."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message + (f" (offset {offset})" if offset is not None else ""))
        self.offset = offset


class FrameTooLarge(FramingError):
    """A frame's length is above the configured maximum (checked before any buffer is
    sized from it)."""

    def __init__(self, length: int, limit: int, *, offset: int | None = None) -> None:
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"frame of {length} bytes{where} exceeds the limit of {limit}")
        self.length = length
        self.limit = limit
        self.offset = offset


class TailNotTorn(FramingError, CorruptionError):
    """`recover` stopped inside a frame (the way a torn tail ends a file) but will not cut
    the `tail` bytes from `offset` (where the last good frame ends) off: valid frames follow
    (`frame_offset`, the first one's offset: the stream is corrupt at `offset`), or they
    cannot be shown to be one unfinished frame (`frame_offset` None: too long for a deframer
    without checksums, which may not match the writer's framer, or the search for frames
    passed its work limit). The file is left as it was."""

    offset: int

    def __init__(self, message: str, *, offset: int, tail: int,
                 frame_offset: int | None = None) -> None:
        super().__init__(message, offset=offset)
        self.tail = tail
        self.frame_offset = frame_offset


class ArrowError(StreamDbError):
    """Arrow data cannot be built or written as asked (streamdb.arrow)."""


class ArrowFormatError(ArrowError, CorruptionError):
    """Arrow IPC input is malformed: a bad offset, length, type or structure. `offset`,
    when set, is where in the input."""


class ArrowLimitError(ArrowFormatError):
    """Arrow IPC input declares more than a decoding limit allows (message size, rows,
    fields, buffers, nesting, dictionary or decompressed size); nothing was allocated
    for it."""
