"""Translation of lower-level errors (OSError, the wal package's) into the error tree."""

from __future__ import annotations

import errno

import wal
from streamdb import errors as E


def io_error(exc: OSError, what: str) -> E.StreamDbError:
    if exc.errno == errno.ENOSPC:
        return E.StorageFullError(f"{what}: disk full")
    return E.StorageIOError(exc.errno or errno.EIO, f"{what}: {exc.strerror or exc}")


def wal_error(exc: wal.WalError, what: str) -> E.StreamDbError:
    if isinstance(exc, wal.WalFullError):
        return E.StorageFullError(f"{what}: disk full")
    if isinstance(exc, wal.WalIOError):
        return E.StorageIOError(exc.errno or errno.EIO, f"{what}: {exc}")
    if isinstance(exc, wal.WalLockedError):
        return E.LockedError(str(exc))
    if isinstance(exc, wal.WalCorruptionError):
        return E.CorruptionError(f"the log is damaged: {exc}")
    if isinstance(exc, wal.WalFormatError):
        return E.UnsupportedError(f"the log file: {exc}")
    if isinstance(exc, wal.WalFailedError):
        return E.StorageIOError(errno.EIO, f"{what}: {exc}")
    return E.StorageIOError(errno.EIO, f"{what}: {exc}")
