"""A standalone write-ahead log: checksummed, salted segments, group commit, checkpoint and
crash recovery. It never imports `streamdb`; the database uses it as its commit log.

    import wal
    with wal.open("events.log") as log:
        lsn = log.append(b"payload")
        log.commit()                      # durable when this returns (sync="full")
        for record in log.replay():
            print(record.lsn, record.payload)

A read-only follower of a log another writer appends to: `LogTail`.

Byte layout: docs/format/wal.md. Error tree: `wal.errors`.
"""

from wal.errors import (
    WalClosedError,
    WalCorruptionError,
    WalError,
    WalFailedError,
    WalFormatError,
    WalFullError,
    WalInvalidArgumentError,
    WalIOError,
    WalLockedError,
    WalRecycledError,
    WalUnfinishedError,
)
from wal.log import Record, SyncMode, WriteAheadLog, open
from wal.recovery import RecoveryReport
from wal.salvage import Survey
from wal.tail import LogTail, holds_after
from wal.vfs import VFS, OsVFS, VFile

__all__ = [
    "VFS",
    "LogTail",
    "OsVFS",
    "Record",
    "RecoveryReport",
    "Survey",
    "SyncMode",
    "VFile",
    "WalClosedError",
    "WalCorruptionError",
    "WalError",
    "WalFailedError",
    "WalFormatError",
    "WalFullError",
    "WalIOError",
    "WalInvalidArgumentError",
    "WalLockedError",
    "WalRecycledError",
    "WalUnfinishedError",
    "WriteAheadLog",
    "holds_after",
    "open",
]
