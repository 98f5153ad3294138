"""A `dbm`-compatible interface to a StreamDB file, so that `shelve` works on one.

    import streamdb.dbm
    import streamdb.shelve

    with streamdb.dbm.open("cache.db", "c") as d:
        d[b"key"] = b"value"
    with streamdb.shelve.open("cache.db") as shelf:  # a shelve.Shelf over streamdb.dbm.open
        shelf["config"] = {"retries": 3}

`open(file, flag, mode)` returns a `StreamDbm`, a mapping from bytes to bytes with the API of
the standard library's dbm objects. One dbm key is one document; the database file is
created at exactly the given name and its log lives beside it as `NAME-wal` (and
`NAME-wal.1`, ...).

The standard library's `dbm.open` and `shelve.open` cannot open a StreamDB file:
`dbm.whichdb` knows only the standard library's own formats and returns `''` for it, and
`dbm.open` can only pick one of those. Use this module's `open`, or `streamdb.shelve.open`.

Key encoding
------------
Keys are arbitrary bytes; document paths are UTF-8 strings starting with "/", without NUL,
of at most 1,024 bytes. Each key has exactly one path, in one of two namespaces:

| key                                  | path                                          |
|--------------------------------------|-----------------------------------------------|
| valid UTF-8 without NUL ("text")     | "/k/" + the key decoded as UTF-8              |
| anything else ("binary")             | "/x/" + one character per byte: U+0001..U+00FF |
|                                      | for bytes 0x01..0xFF, U+0100 for 0x00         |

The text form is the key itself, so a text key may be up to 1,021 bytes long. A binary
character takes 1 byte of UTF-8 for bytes 0x01..0x7F and 2 bytes otherwise, so every key of
up to 510 bytes fits, and longer binary keys fit while 3 + len + (bytes >= 0x80 or NUL)
<= 1,024. A longer key cannot be stored: setting it raises `error`; looking it up finds
nothing (KeyError, False, the default).

The map is injective (the namespaces are disjoint: a key's namespace is decided by the key,
and each form is invertible on its own), and `path_to_key` is its exact inverse: it returns
None for every path that `key_to_path` never produces (paths outside the two prefixes, or
non-canonical ones such as "/x/abc", whose key is text). Other documents in the same file
are therefore invisible to this interface.

Iteration order is the database's: paths sorted by their UTF-8 bytes, which puts every text
key first, in bytewise order, then every binary key, in bytewise order except that NUL
sorts after 0xFF.

Flags
-----
"r" read-only, the file must exist; "w" read-write, the file must exist; "c" read-write,
created if missing; "n" a new empty database always (an existing file is truncated and its
log removed). An existing file of 0 bytes opens as a new database with "w", "c" and "n"
(any stray log beside it is removed first, so it cannot be replayed into the new database),
and raises `error` with "r". The modifiers "f", "s" and "u" of `dbm.gnu` may follow the
flag: "s" (synchronous) makes every write durable on return (durability "full"); without it
writes use durability "normal", like gdbm's unsynchronised mode: the log is fsynced by a
write that comes at least a second after the previous fsync, by `sync()` and by `close()`,
so a power loss may lose the writes made since the last fsync (a killed process loses
nothing); "f" and "u" are accepted and ignored (the writer lock is always
taken). `mode` applies to files this module creates (the database and its log), masked by
the umask as by open(2); the log of an existing database gets the database file's
permissions, so that a 0o600 database never has a world-readable log.

Errors
------
`error` is a single class, a subclass of both `OSError` (like every member of the standard
library's `dbm.error` tuple, so `except OSError` works) and `streamdb.StreamDbError` (so
`except StreamDbError` still catches everything StreamDB raises). `except
streamdb.dbm.error:` works as with `dbm.error`; code that indexes `dbm.error[0]` must use
`streamdb.dbm.error` itself. Every StreamDB failure (locked, read-only, closed, corrupt, not
a StreamDB file, I/O) is re-raised as `error` with the original as `__cause__`; a missing key
raises `KeyError(key)`; a key or value of the wrong type raises TypeError; an unknown flag
raises ValueError.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, MutableMapping
from dataclasses import replace
from types import TracebackType

from streamdb.config import Config
from streamdb.database import Database
from streamdb.errors import NotFoundError, StreamDbError
from streamdb.paths import MAX_PATH_BYTES
from wal.segments import sibling_numbers, slot_path
from wal.vfs import OsFile, OsVFS

__all__ = ["MAX_BINARY_KEY", "MAX_TEXT_KEY", "StreamDbm", "error", "key_to_path", "open",
           "path_to_key"]

TEXT_PREFIX = "/k/"
BINARY_PREFIX = "/x/"
_NUL_CHAR = "\u0100"  # stands for byte 0x00 in the binary form: paths may not hold NUL
MAX_TEXT_KEY = MAX_PATH_BYTES - len(TEXT_PREFIX)  # 1,021: any text key up to this fits
MAX_BINARY_KEY = (MAX_PATH_BYTES - len(BINARY_PREFIX)) // 2  # 510: any key up to this fits

Key = str | bytes | bytearray | memoryview
Value = str | bytes | bytearray | memoryview


class error(StreamDbError, OSError):  # lower case: the dbm modules' name for it
    """A dbm operation failed: see the module docstring. `errno` is set when the cause
    had one (ENOENT for a missing file with "r" or "w")."""


# -- the key <-> path map (pure) -------------------------------------------------------


def key_to_path(key: bytes) -> str:
    """The document path of `key` (see the module docstring). O(len(key)), no I/O.

    Raises `error` if the path would exceed 1,024 bytes of UTF-8.
    """
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        path = TEXT_PREFIX + text
        size = len(TEXT_PREFIX) + len(key)
    else:
        path = BINARY_PREFIX + key.decode("latin-1").replace("\x00", _NUL_CHAR)
        size = len(path.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        raise error(f"a key of {len(key)} bytes needs a path of {size} bytes; the limit is "
                    f"{MAX_PATH_BYTES} (text keys up to {MAX_TEXT_KEY} bytes, any key up to "
                    f"{MAX_BINARY_KEY} bytes)")
    return path


def path_to_key(path: str) -> bytes | None:
    """The key whose path is `path`, or None if `key_to_path` never yields `path`.
    O(len(path)), no I/O, never raises for a str."""
    if path.startswith(TEXT_PREFIX):
        try:
            key = path[len(TEXT_PREFIX):].encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: not a path at all
            return None
    elif path.startswith(BINARY_PREFIX):
        try:
            key = path[len(BINARY_PREFIX):].replace(_NUL_CHAR, "\x00").encode("latin-1")
        except UnicodeEncodeError:  # a character outside U+0001..U+0100
            return None
    else:
        return None
    try:
        canonical = key_to_path(key)
    except error:
        return None
    # Rejects "/x/" paths of text keys and paths holding NUL, so the inverse is exact.
    return key if canonical == path else None


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise TypeError(f"dbm keys are bytes or str, not {type(key).__name__}")


def _value_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    try:
        return memoryview(value).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"dbm values are bytes-like or str, not {type(value).__name__}") \
            from None


def _error(exc: StreamDbError | OSError) -> error:
    if isinstance(exc, OSError) and exc.errno is not None:
        return error(exc.errno, exc.strerror or str(exc))
    return error(str(exc))


# -- opening ---------------------------------------------------------------------------


class _ModeVFS(OsVFS):
    """The OS file layer, creating files with `mode` (masked by the umask) instead of
    0o666. Used for the database and its log segments, which hold the same data."""

    def __init__(self, mode: int) -> None:
        self.mode = mode

    def open(self, path: str, *, create: bool = False) -> OsFile:
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
        return OsFile(path, os.open(path, flags, self.mode))


def _parse_flag(flag: object) -> tuple[str, bool]:
    """The open kind ("r", "w", "c", "n") and whether "s" (synchronous) was given."""
    if not isinstance(flag, str) or not flag or flag[0] not in "rwcn" or \
            any(m not in "fsu" for m in flag[1:]):
        raise ValueError(f"flag must be 'r', 'w', 'c' or 'n', optionally followed by 'f', "
                         f"'s' or 'u'; not {flag!r}")
    return flag[0], "s" in flag[1:]


def _remove_log(vfs: OsVFS, path: str) -> None:
    """Remove the log segments `path-wal`, `path-wal.N` if present. O(directory size)."""
    log = path + "-wal"
    for name in [slot_path(log, n) for n in sibling_numbers(vfs, log)] + [log]:
        with contextlib.suppress(FileNotFoundError):
            vfs.remove(name)


def _prepare_writable(path: str, kind: str, mode: int) -> None:
    """Make `path` ready for a read-write open with flag `kind` ("w", "c" or "n").

    Creates the file (mode & ~umask) for "c" and "n" if missing. If the database is to be
    new (flag "n", or the file is empty), takes the writer lock, truncates the file, removes
    any log beside it and fsyncs the directory, then releases the lock: `Database` then
    creates a database in the empty file. Raises `error` if the file is missing ("w"), or
    open elsewhere, or on any failed file call.
    """
    vfs = _ModeVFS(mode)
    try:
        file = vfs.open(path, create=kind in "cn")
    except FileNotFoundError as exc:
        raise error(errno.ENOENT, f"no database at {path}; use flag 'c' or 'n' to create "
                                  "one") from exc
    except OSError as exc:
        raise _error(exc) from exc
    try:
        size = file.size()
        if size and kind != "n":
            return  # an existing database: Database.__init__ does the rest
        try:
            file.lock()  # the lock Database holds while open: never destroy a live database
        except BlockingIOError as exc:
            raise error(errno.EWOULDBLOCK, f"{path} is open elsewhere") from exc
        # Truncate first, then remove the log: a crash in between leaves an empty file,
        # which the next open through this module treats as new (removing the log again).
        # The other order could leave the old database with only part of its log.
        if size:
            file.truncate(0)
            file.sync()
        _remove_log(vfs, path)
        vfs.sync_dir(os.path.dirname(os.path.abspath(path)))
    except OSError as exc:
        if isinstance(exc, error):
            raise
        raise _error(exc) from exc
    finally:
        file.close()


def open(  # the dbm modules' name for it
    file: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    flag: str = "r",
    mode: int = 0o666,
    *,
    config: Config | None = None,
) -> StreamDbm:
    """Open the StreamDB database `file` as a dbm object (flags: see the module docstring).

    `config` defaults to `Config(durability="normal")`; flag "s" forces durability "full".
    I/O: opening reads the two header pages and replays the log (O(log size)); creating
    writes and fsyncs the headers. Raises `error` (missing file with "r"/"w", locked, not a
    StreamDB file, corrupt, I/O), ValueError for a bad flag.
    """
    path = os.fsdecode(file)
    kind, synchronous = _parse_flag(flag)
    config = config or Config(durability="normal")
    if synchronous:
        config = replace(config, durability="full")
    if kind == "r":
        if not os.path.exists(path):
            raise error(errno.ENOENT, f"no database at {path}")
    else:
        _prepare_writable(path, kind, mode)
    try:
        perms = stat.S_IMODE(os.stat(path).st_mode)
        # Log segments created later get the database file's permissions.
        database = Database(path, config, readonly=kind == "r", vfs=_ModeVFS(perms))
    except (StreamDbError, OSError) as exc:
        raise _error(exc) from exc
    return StreamDbm(database)


# -- the mapping -----------------------------------------------------------------------


class StreamDbm(MutableMapping[bytes, bytes]):
    """A dbm object over an open `Database`: bytes keys to bytes values.

    A `MutableMapping` like `dbm.dumb`'s objects (so `shelve.Shelf` type-checks, and
    `items`, `values`, `pop`, `popitem`, `update` come from the mixin), with `keys()`
    returning a list as every dbm object does (`get` is the mixin's: `self[key]` or the
    default). Keys and values may be given as str (encoded as UTF-8) or bytes-like; reads
    return bytes. Every method raises `error` once the object is closed, and translates
    StreamDB failures to `error`. n below is the number of keys; a lookup is O(log n) plus the
    value's size; writes commit one batch to the log each (fsynced with flag "s").
    """

    def __init__(self, database: Database) -> None:
        self._db: Database | None = database

    @property
    def database(self) -> Database:
        """The underlying `Database` (for checkpoint, stats, ...). Raises `error` if closed."""
        return self._open_db()

    def _open_db(self) -> Database:
        if self._db is None:
            raise error("the StreamDB dbm object is closed")
        return self._db

    def __getitem__(self, key: Key) -> bytes:
        """The value of `key`. O(log n + size); reads and verifies it. Raises KeyError."""
        raw = _key_bytes(key)
        db = self._open_db()
        try:
            path = key_to_path(raw)
        except error:
            raise KeyError(key) from None  # too long to have been stored
        try:
            return db.get(path)
        except NotFoundError:
            raise KeyError(key) from None
        except StreamDbError as exc:
            raise _error(exc) from exc

    def __setitem__(self, key: Key, value: Value) -> None:
        """Store `value` under `key` (one commit). Raises `error` if read-only or the key
        is too long, TypeError for other types."""
        path = key_to_path(_key_bytes(key))
        data = _value_bytes(value)
        db = self._open_db()
        try:
            db.write_document(path, data)
        except StreamDbError as exc:
            raise _error(exc) from exc

    def __delitem__(self, key: Key) -> None:
        """Remove `key` (one commit). Raises KeyError if absent, `error` if read-only."""
        raw = _key_bytes(key)
        db = self._open_db()
        try:
            path = key_to_path(raw)
        except error:
            raise KeyError(key) from None
        try:
            db.delete(path)
        except NotFoundError:
            raise KeyError(key) from None
        except StreamDbError as exc:
            raise _error(exc) from exc

    def __contains__(self, key: object) -> bool:
        """Whether `key` is stored. O(log n), reads no value. TypeError for a non-key."""
        raw = _key_bytes(key)
        db = self._open_db()
        try:
            path = key_to_path(raw)
        except error:
            return False
        try:
            return db.exists(path)
        except StreamDbError as exc:
            raise _error(exc) from exc

    def keys(self) -> list[bytes]:  # type: ignore[override]  # dbm objects return a list
        """Every key, in the order of the module docstring. O(n) time and memory."""
        db = self._open_db()
        try:
            paths = db.search(TEXT_PREFIX) + db.search(BINARY_PREFIX)
        except StreamDbError as exc:
            raise _error(exc) from exc
        return [key for key in map(path_to_key, paths) if key is not None]

    def __iter__(self) -> Iterator[bytes]:
        """The keys as of the call (a snapshot). O(n) memory."""
        return iter(self.keys())

    def __len__(self) -> int:
        """The number of keys. O(n): other documents in the file are not counted."""
        return len(self.keys())

    def setdefault(self, key: Key, default: Value = b"") -> bytes:
        """The value of `key`; if absent, store `default` first. Returns bytes (the stored
        value), where CPython's dbm objects return `default` as given."""
        try:
            return self[key]
        except KeyError:
            data = _value_bytes(default)
            self[key] = data
            return data

    def clear(self) -> None:
        """Remove every key: one commit per key, O(n log n) (the mixin's is O(n^2)).
        Raises `error` if read-only."""
        for key in self.keys():
            with contextlib.suppress(KeyError):
                del self[key]

    def sync(self) -> None:
        """Make every write so far durable (fsyncs the log). A no-op when read-only."""
        db = self._open_db()
        if db.readonly:
            return
        try:
            db.flush()
        except StreamDbError as exc:
            raise _error(exc) from exc

    def close(self) -> None:
        """Checkpoint and close the database (see `Database.close`). Idempotent."""
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except StreamDbError as exc:
                raise _error(exc) from exc

    def __enter__(self) -> StreamDbm:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self._db.path if self._db is not None else "closed"
        return f"<streamdb.dbm.StreamDbm {where}>"
