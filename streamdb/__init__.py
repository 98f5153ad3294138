"""StreamDB: an embedded, crash-safe stream database in one file.

    import streamdb
    with streamdb.open("data.db") as db:
        doc_id = db.write_document("/sensors/dev7/2026-11-21", b"...")
        db.get("/sensors/dev7/2026-11-21")
        db.search("/sensors/")

See `streamdb.database.Database` for the whole API and `streamdb.errors` for the errors.
"""

from streamdb.config import Config
from streamdb.database import Database, Stats, open
from streamdb.engine import LogRecovery, LogRecoveryWarning
from streamdb.errors import (
    ArrowError,
    ArrowFormatError,
    ArrowLimitError,
    AuthenticationError,
    ChecksumMismatch,
    ClosedError,
    CorruptionError,
    DocumentTooLargeError,
    EncryptionError,
    InvalidArgumentError,
    InvalidPathError,
    LockedError,
    NotFoundError,
    ReadOnlyError,
    StorageFullError,
    StorageIOError,
    StreamDbError,
    UnsupportedError,
    WrongKeyError,
)
from streamdb.maintenance import VerifyReport
from streamdb.reads import DocumentInfo, Snapshot

__version__ = "0.1.0"

__all__ = [
    "ArrowError",
    "ArrowFormatError",
    "ArrowLimitError",
    "AuthenticationError",
    "ChecksumMismatch",
    "ClosedError",
    "Config",
    "CorruptionError",
    "Database",
    "DocumentInfo",
    "DocumentTooLargeError",
    "EncryptionError",
    "InvalidArgumentError",
    "InvalidPathError",
    "LockedError",
    "LogRecovery",
    "LogRecoveryWarning",
    "NotFoundError",
    "ReadOnlyError",
    "Snapshot",
    "Stats",
    "StorageFullError",
    "StorageIOError",
    "StreamDbError",
    "UnsupportedError",
    "VerifyReport",
    "WrongKeyError",
    "open",
]
