"""The `wal` package's error tree.

```
WalError
├── WalCorruptionError      durable log bytes are damaged (not a torn tail)
├── WalFormatError          not a log file, or a newer format version; the file is left untouched
├── WalLockedError          another process holds the log
├── WalClosedError          the log (or a LogTail) was closed
├── WalRecycledError        a LogTail was overtaken by a checkpoint: reopen from a newer one
├── WalUnfinishedError      opened with finish=False and finish() has not run: no writes yet
├── WalInvalidArgumentError (also ValueError) bad argument: oversize record, LSN beyond the log
├── WalIOError              (also OSError, errno kept) a file call failed
│   └── WalFullError        ENOSPC
└── WalFailedError          an earlier I/O failure poisoned the log: reopen it
```

Every OS error raised below this package is re-raised as `WalIOError` (or `WalFullError`)
with the original as `__cause__`.
"""

from __future__ import annotations

import errno as _errno


class WalError(Exception):
    """Base of every error this package raises."""


class WalCorruptionError(WalError):
    """Bytes that had been durable are damaged. Never raised for a torn tail."""

    def __init__(self, message: str, *, segment: str = "", offset: int = -1) -> None:
        where = f" ({segment} at offset {offset})" if segment else ""
        super().__init__(message + where)
        self.segment = segment
        self.offset = offset


class WalFormatError(WalError):
    """The file is not a log of this package, or is of a newer format version."""


class WalLockedError(WalError):
    """Another process has this log open."""


class WalClosedError(WalError):
    """The log is closed."""


class WalRecycledError(WalError):
    """A checkpoint freed or recycled log segments a `LogTail` still needed: the log was
    checkpointed past this reader. Reopen a tail from a newer checkpoint."""


class WalUnfinishedError(WalError):
    """The log was opened with `finish=False` and `finish()` has not run (or failed): it
    replays what recovery decided, but refuses every write."""


class WalInvalidArgumentError(WalError, ValueError):
    """An argument is out of range."""


class WalIOError(WalError, OSError):
    """A file call failed; `errno` is the original one. `during` names what the log was
    doing ("opening", "writing", "syncing", ...): after "syncing" nothing written since the
    last successful fsync can be trusted to be on disk."""

    during: str = ""


class WalFullError(WalIOError):
    """The disk is full (ENOSPC)."""


class WalFailedError(WalError):
    """A write or sync failed earlier, so what is on disk is unknown: reopen the log.

    After a failed fsync the kernel may have dropped the dirty pages; retrying would report
    success for data that never reached the disk.
    """


def io_error(exc: OSError, what: str) -> WalIOError:
    """Wrap an OSError from the file layer into the tree (caller raises it `from exc`)."""
    cls = WalFullError if exc.errno == _errno.ENOSPC else WalIOError
    error = cls(exc.errno or _errno.EIO, f"{what}: {exc.strerror or exc}")
    error.during = what.split()[0]
    return error
