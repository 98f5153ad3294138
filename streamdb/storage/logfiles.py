"""The log files beside a database: `NAME-wal` and its numbered siblings `NAME-wal.N`."""

from __future__ import annotations

from wal.segments import sibling_numbers, slot_path
from wal.vfs import VFS


def log_files(vfs: VFS, path: str) -> list[str]:
    """The log files of the database at `path` that exist."""
    log = path + "-wal"
    names = [log] + [slot_path(log, n) for n in sibling_numbers(vfs, log)]
    return [name for name in names if vfs.exists(name)]


def remove_log(vfs: VFS, path: str) -> None:
    for name in log_files(vfs, path):
        vfs.remove(name)
