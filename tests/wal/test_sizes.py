"""W6: segment files start at 1 MiB and double up to `segment_size`; recycled files keep
their size; logs written with other sizes open."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamdb
import wal
import wal.log as wlog
from wal.memvfs import MemoryVFS

LOG = "/db/log"
MiB = 1 << 20


def sizes(vfs: MemoryVFS) -> dict[str, int]:
    return {n: len(vfs.read_file(f"/db/{n}")) for n in sorted(vfs.listdir("/db"))}


def fill(log: wal.WriteAheadLog, megabytes: float) -> list[int]:
    lsns = []
    for _ in range(int(megabytes * 16)):
        lsns.append(log.append(bytes(64 << 10)))
        log.commit()
    return lsns


def test_an_empty_log_is_one_mebibyte_and_files_double_up_to_the_segment_size() -> None:
    mem = MemoryVFS()
    log = wal.open(LOG, vfs=mem, segment_size=4 * MiB)
    assert sizes(mem) == {"log": MiB}  # zero-filled (sync="full"), not 4 MiB
    fill(log, 8)
    assert sizes(mem) == {"log": MiB, "log.1": 2 * MiB, "log.2": 4 * MiB, "log.3": 4 * MiB}
    log.close()


def test_a_checkpoint_recycles_files_at_their_size() -> None:
    mem = MemoryVFS()
    log = wal.open(LOG, vfs=mem)  # the default segment size: 16 MiB
    lsn = log.append(b"x")
    log.commit()
    log.checkpoint(lsn)  # rolls to a new file, frees the first
    assert sizes(mem) == {"log": MiB, "log.1": 2 * MiB}  # was 2 x 16 MiB
    log.append(b"y")
    log.commit()
    log.checkpoint(log.committed_lsn)  # rolls back into the free 1 MiB file
    assert sizes(mem) == {"log": MiB, "log.1": 2 * MiB}
    log.close()
    with wal.open(LOG, vfs=mem) as again:
        assert [r.payload for r in again.replay()] == []


def test_lazy_sync_modes_roll_at_the_same_sizes_without_zero_filling() -> None:
    mem = MemoryVFS()
    with wal.open(LOG, vfs=mem, sync="off", segment_size=4 * MiB) as log:
        fill(log, 3.5)
        got = sizes(mem)
    assert sorted(got) == ["log", "log.1", "log.2"]
    assert got["log"] <= MiB and got["log.1"] <= 2 * MiB


def test_a_log_of_full_size_files_opens_and_keeps_their_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Logs written before W6 zero-filled every file to `segment_size`."""
    mem = MemoryVFS()
    monkeypatch.setattr(wlog, "FIRST_FILE_SIZE", 4 * MiB)
    with wal.open(LOG, vfs=mem, segment_size=4 * MiB) as log:
        written = fill(log, 1.5)
    assert sizes(mem) == {"log": 4 * MiB}
    monkeypatch.undo()
    with wal.open(LOG, vfs=mem, segment_size=4 * MiB) as log:
        assert [r.lsn for r in log.replay()] == written
        more = fill(log, 2)  # the 4 MiB file is filled before the log rolls
    assert sizes(mem) == {"log": 4 * MiB}
    with wal.open(LOG, vfs=mem, segment_size=4 * MiB) as log:
        assert [r.lsn for r in log.replay()] == written + more


def test_an_empty_database_costs_one_mebibyte_of_log(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with streamdb.open(path) as db:  # durability "full": zero-filled segments
        db.write_document("/a", b"x")
        assert (tmp_path / "t.db-wal").stat().st_size == MiB
    # close() checkpointed: the log rolled into a second, 2 MiB file.
    log_bytes = sum(p.stat().st_size for p in tmp_path.iterdir() if "-wal" in p.name)
    assert log_bytes == 3 * MiB
