"""`shelve` on a StreamDB file: a persistent dictionary of pickled Python objects.

    import streamdb.shelve

    with streamdb.shelve.open("cache.db") as shelf:
        shelf["config"] = {"retries": 3}
        shelf["config"]["retries"]            # 3

The standard library's `shelve.open` cannot open a StreamDB file: it goes through
`dbm.open`, which only knows the standard library's own formats (`dbm.whichdb` returns
`''` for a StreamDB file, and `dbm.open` then raises `dbm.error`). This module's `open` is
the same function over `streamdb.dbm.open`. Keys are str, each stored as one document
(its UTF-8 bytes are the dbm key; see `streamdb.dbm` for the path it gets); values are
pickled with `protocol`.

Differences from the standard library's `shelve.Shelf`, all on read-only shelves and
`close()`:
- On a read-only shelf (flag "r") assignment and deletion raise `streamdb.dbm.error` before
  anything else happens, so with `writeback=True` the refused value does not linger in the
  cache either.
- With `writeback=True`, a read-only shelf's cached entries are discarded at `sync()` and
  `close()` (they cannot be written), where the standard library's `Shelf` would try to
  write them back and fail.
- `close()` closes the database even when writing the cache back fails (an object that
  cannot be pickled, a full disk); the first error is raised after.

Pickle runs code from the data it loads: open only files you trust.
"""

from __future__ import annotations

import os
import shelve
from typing import Any

from streamdb import dbm as _dbm
from streamdb.config import Config
from streamdb.database import Database

__all__ = ["StreamDbShelf", "open"]


class StreamDbShelf(shelve.Shelf[Any]):
    """A `shelve.Shelf` over a `streamdb.dbm.StreamDbm` (see the module docstring).

    Each assignment is one commit (durability "normal" by default, "full" with flag "s"); `sync()`
    writes the cache back (with `writeback=True`) and fsyncs the log; `close()` does both
    and closes the database (a checkpoint). A closed shelf raises ValueError, as the
    standard library's does.
    """

    cache: dict[str, Any]  # the entries read or written, with writeback=True

    def __init__(self, dbm_object: _dbm.StreamDbm, protocol: int | None = None,
                 writeback: bool = False) -> None:
        super().__init__(dbm_object, protocol, writeback)
        self.readonly = dbm_object.database.readonly
        self._dbm: _dbm.StreamDbm | None = dbm_object

    @property
    def database(self) -> Database:
        """The underlying `Database` (for `checkpoint()`, `stats()`, ...). Raises
        `streamdb.dbm.error` once the shelf is closed."""
        if self._dbm is None:
            raise _dbm.error("the shelf is closed")
        return self._dbm.database

    def _check_writable(self) -> None:
        dbm_object = self._dbm
        if self.readonly and dbm_object is not None:
            raise _dbm.error(f"{dbm_object.database.path} was opened read-only (flag 'r')")

    def __setitem__(self, key: str, value: Any) -> None:
        """Pickle `value` and store it under `key` (one commit). Raises `streamdb.dbm.error`
        if the shelf is read-only, ValueError if it is closed."""
        self._check_writable()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        """Remove `key` (one commit). Raises KeyError if absent, `streamdb.dbm.error` if
        the shelf is read-only, ValueError if it is closed."""
        self._check_writable()
        super().__delitem__(key)

    def sync(self) -> None:
        """Write cached entries back (with `writeback=True`) and fsync the log. A
        read-only shelf has nothing to write: its cache is emptied."""
        if self.readonly:
            self.cache = {}
            return
        super().sync()

    def close(self) -> None:
        """`sync()`, then close the database, even if `sync()` failed. Idempotent."""
        dbm_object, self._dbm = getattr(self, "_dbm", None), None
        if dbm_object is None:
            return
        try:
            super().close()
        finally:
            dbm_object.close()  # a no-op if super().close() got that far


def open(  # the shelve module's name for it
    filename: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    flag: str = "c",
    protocol: int | None = None,
    writeback: bool = False,
    *,
    config: Config | None = None,
) -> StreamDbShelf:
    """Open the StreamDB database `filename` as a shelf, as `shelve.open` does for the
    standard library's dbm formats.

    `flag` is `streamdb.dbm.open`'s: "r" read-only, "w" read-write, "c" (the default)
    read-write and created if missing, "n" always a new, empty database; "s" after it makes
    every write durable on return. `protocol` is the pickle protocol (None: the default
    one); with `writeback=True` entries read are cached, so mutating them in place works,
    and written back at `sync()` and `close()`. `config` is passed to `streamdb.dbm.open`.

    Raises `streamdb.dbm.error` (a missing file with "r" or "w", locked, not a StreamDB
    file, corrupt, I/O), ValueError for a bad flag.
    """
    return StreamDbShelf(_dbm.open(filename, flag, config=config), protocol, writeback)
