"""Opening a database whose log is damaged: `streamdb.open(path, recover="truncate-log")`.

A damaged log makes a writer open refuse (CorruptionError) and change nothing. With
`recover="truncate-log"` the open salvages instead:

L1. The log is read as far as it is sound: up to the first WAL-level damage (a record that
    fails its checks while later records prove it had been synced, a missing segment, a
    damaged segment header), in whole commit batches. Its records are applied batch by
    batch; the first batch that contradicts the checkpoint (a record that does not decode,
    or that the catalog refuses, e.g. a version of a document that is not there) ends the
    salvage there, and the state is rebuilt from the checkpoint without it. The recovered
    state is the last checkpoint plus every whole batch before the first damage.
L2. Nothing is written before every log file is copied, byte for byte, beside the database:
    `NAME-wal.damaged-<UTC time>` for `NAME-wal`, `NAME-wal.N.damaged-<UTC time>` for
    `NAME-wal.N` (each written under a `.tmp` name, fsynced, renamed; the directory
    fsynced). An existing name is never overwritten: a `-2`, `-3`, ... follows the time.
L3. Then a checkpoint writes the recovered state into the database file (its header names
    the last kept LSN), and only then does the log start over (`wal` rule R8): every
    segment freed, damaged headers first, then the current ones highest first, new LSNs
    above every LSN the log held. A crash before the checkpoint's header is durable leaves
    the damaged state; after it, until the log has started over, the same damage over a
    checkpoint that already holds the kept batches (a new open refuses, and a new salvage
    reaches the same state); after that, the recovered state. Never a third state: a crash
    while segments are freed leaves a prefix of the old log, which reads no further than
    the kept batches (or still shows the damage).
L4. What was dropped is reported in `Database.recovery` (a `LogRecovery`) and with a
    `LogRecoveryWarning`. A log without damage opens as without `recover`, and
    `Database.recovery` is None.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

import wal
from streamdb import errors as E
from streamdb.engine.base import EngineFields
from streamdb.errmap import io_error, wal_error
from streamdb.storage.logfiles import log_files

RECOVER_MODES = ("truncate-log",)
_COPY_CHUNK = 1 << 20


class LogRecoveryWarning(UserWarning):
    """An open with recover="truncate-log" dropped records of a damaged log."""


@dataclass(frozen=True, slots=True)
class LogRecovery:
    """What an open with recover="truncate-log" kept and dropped (rules L1-L4)."""

    reason: str  # the first damage found
    kept_lsn: int  # the LSN of the recovered state (the checkpoint it wrote)
    records_kept: int  # log records applied on top of the previous checkpoint
    records_dropped: int  # valid data records found above kept_lsn (a damaged one is not)
    bytes_dropped: int  # their bytes, record headers and payloads
    lsns_dropped: tuple[int, int] | None  # the lowest and highest LSN of those records
    copies: tuple[str, ...]  # the copies of the damaged log files, in slot order


def check_mode(recover: str | None, readonly: bool) -> None:
    """Raise InvalidArgumentError unless `recover` is None or a known mode for a writer."""
    if recover is None:
        return
    if recover not in RECOVER_MODES:
        raise E.InvalidArgumentError(
            f"recover must be None or 'truncate-log', not {recover!r}")
    if readonly:
        raise E.InvalidArgumentError("recover= needs a writer open, not readonly=True")


class Salvage(EngineFields):
    """The salvaging open of `Engine` (rules L1-L4)."""

    def _salvage_log(self, sync: wal.SyncMode) -> LogRecovery | None:
        """The writer's log open with recover="truncate-log" (L1-L4): leaves `self._wal` finished
        and the catalog at the recovered state. O(log bytes) reads (twice when a batch
        contradicts the checkpoint), the copies, a checkpoint, O(segments) header writes.
        Raises what an open raises for anything but damage in the log (WalFormatError's
        UnsupportedError, LockedError, ...), StorageIOError/StorageFullError from the files."""
        path = self.path + "-wal"
        try:
            log = self._wal = wal.open(path, sync=sync, vfs=self._vfs, finish=False, salvage=True)
        except wal.WalError as exc:
            raise wal_error(exc, f"opening the log of {self.path}") from exc
        reason = log.damage
        try:
            try:
                kept_records = self._replay(opening=True)
            except E.CorruptionError as exc:
                # L1: a batch contradicts the checkpoint; the catalog holds part of it, so it
                # is rebuilt from the checkpoint and the batches before that one.
                cut = self._replay_batch
                reason = f"a logged record contradicts the checkpoint ({exc})"
                self._reload_state()
                kept_records = self._replay(opening=True, until=cut)
            if reason is None:
                log.skip_to(self._applied_lsn)
                log.finish()
                return None
            log.skip_to(self._applied_lsn)
            kept = self._applied_lsn
            found = log.survey(kept)
        except wal.WalError as exc:
            raise wal_error(exc, f"salvaging the log of {self.path}") from exc
        copies = self._copy_log_files()
        self._checkpoint(force=True)  # the recovered state, durable in the database file (L3)
        try:
            log.finish(start_over=True)
        except wal.WalError as exc:
            raise wal_error(exc, f"starting the log of {self.path} over") from exc
        report = LogRecovery(
            reason=reason,
            kept_lsn=kept,
            records_kept=kept_records,
            records_dropped=found.records,
            bytes_dropped=found.bytes,
            lsns_dropped=(found.first_lsn, found.last_lsn) if found.records else None,
            copies=tuple(copies),
        )
        warnings.warn(
            f"{self.path}: the log was damaged ({reason}); kept the state at LSN {kept}, dropped "
            f"{found.records} records ({found.bytes} bytes); the damaged log is kept in "
            f"{', '.join(os.path.basename(c) for c in copies)}",
            LogRecoveryWarning, stacklevel=4)
        return report


    def _copy_log_files(self) -> list[str]:
        """L2: copy every log file beside the database; returns the copies' paths."""
        vfs = self._vfs
        try:
            sources = log_files(vfs, self.path)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            suffix, n = f".damaged-{stamp}", 1
            while any(vfs.exists(p + suffix) or vfs.exists(p + suffix + ".tmp") for p in sources):
                n += 1
                suffix = f".damaged-{stamp}-{n}"
            copies = []
            for source in sources:
                target = source + suffix
                _copy(vfs, source, target + ".tmp")
                vfs.rename(target + ".tmp", target)
                copies.append(target)
            vfs.sync_dir(os.path.dirname(os.path.abspath(self.path)))
        except OSError as exc:
            raise io_error(exc, f"copying the damaged log of {self.path}") from exc
        return copies


def _copy(vfs: wal.VFS, source: str, target: str) -> None:
    src = vfs.open(source)
    try:
        dst = vfs.open(target, create=True)
        try:
            dst.truncate(0)
            offset, size = 0, src.size()
            while offset < size:
                chunk = src.pread(min(_COPY_CHUNK, size - offset), offset)
                if not chunk:
                    break
                dst.pwritev([chunk], offset)
                offset += len(chunk)
            dst.sync()
        finally:
            dst.close()
    finally:
        src.close()
