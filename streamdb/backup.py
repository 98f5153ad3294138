"""`Database.backup`: a consistent copy of a database, in one new file.

Rules (tests name them):

B1. The destination is never the database's own file, one of its log files (`NAME-wal`,
    `NAME-wal.N`, whether they exist yet or not), its reader table (`NAME-readers`) or its
    compaction file (`NAME.compact`), however the path is spelled: existing files are
    compared by identity (device and inode, so hard links, symbolic links and other
    spellings count), names that do not exist yet by their directory's identity and the
    name. InvalidArgumentError, before anything is written.
B2. An existing destination is replaced only with `overwrite=True`.
B3. The copy is written under a fresh temporary name in the destination's directory,
    fsynced, renamed over the destination, and the directory fsynced: a failed backup
    leaves the destination as it was and removes its temporary file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from typing import TYPE_CHECKING

from streamdb import errors as E
from streamdb.errmap import io_error
from streamdb.storage.logfiles import log_files

if TYPE_CHECKING:
    from streamdb.engine import Engine

_OWN_SUFFIX = re.compile(r"(-wal(\.\d+)?|-readers|\.compact)?")


def backup(db: Engine, dest: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """`Database.backup` (see there), writer lock held. The writer checkpoints, then copies
    the file: O(file size). A read-only open copies the state it reads, document by
    document, into a new file: O(live data), the writer goes on. Raises
    InvalidArgumentError (B1, B2), StorageIOError or StorageFullError (B3: nothing left)."""
    target = os.fspath(dest)
    try:
        _check_destination(db, target, overwrite)
    except OSError as exc:
        raise io_error(exc, f"backing up to {target}") from exc
    directory = os.path.dirname(os.path.abspath(target))
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}."
                       f"{secrets.token_hex(6)}.backup")
    try:
        db.copy_to(tmp)
        db.vfs.rename(tmp, target)
        db.vfs.sync_dir(directory)
    except BaseException as exc:
        # B3: the destination is untouched; the temporary file goes (if removing it fails
        # too, the first error is the one to report, and the name is unique).
        with contextlib.suppress(OSError):
            if db.vfs.exists(tmp):
                db.vfs.remove(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, E.StreamDbError):
            raise io_error(exc, f"backing up to {target}") from exc
        raise


def _check_destination(db: Engine, target: str, overwrite: bool) -> None:
    """B1 and B2. A few stats; raises InvalidArgumentError or OSError."""
    vfs, name = db.vfs, os.path.basename(target)
    if not name:
        raise E.InvalidArgumentError(f"backup destination {target!r} names a directory")
    base = os.path.basename(db.path)
    here = vfs.identity(os.path.dirname(target) or ".")
    if (here is not None and here == vfs.identity(os.path.dirname(db.path) or ".")
            and name.startswith(base) and _OWN_SUFFIX.fullmatch(name[len(base):])):
        raise _refuse(db, target)
    found = vfs.identity(target)
    if found is None:
        return
    own = [db.path, *log_files(vfs, db.path), db.path + "-readers", db.path + ".compact"]
    if found == db.file_identity() or found in {vfs.identity(p) for p in own}:
        raise _refuse(db, target)
    if not overwrite:
        raise E.InvalidArgumentError(
            f"backup destination {target} exists: pass overwrite=True to replace it")


def _refuse(db: Engine, target: str) -> E.InvalidArgumentError:
    return E.InvalidArgumentError(
        f"backup destination {target} is one of the files of the database {db.path} (the "
        f"database, its log NAME-wal and NAME-wal.N, or its reader table NAME-readers): "
        f"back up to another name")
