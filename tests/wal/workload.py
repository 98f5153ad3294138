"""A deterministic log workload that records what was acknowledged, and the check that a
recovered log holds exactly a committed prefix containing every acknowledged batch."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import wal
from wal.vfs import VFS

LOG = "/db/log"
SEGMENT = 2048


@dataclass
class Outcome:
    batches: list[list[tuple[int, bytes]]] = field(default_factory=list)  # in commit order
    acked: int = 0  # batches whose commit() returned
    checkpoint: int = 0  # highest LSN passed to checkpoint()
    error: BaseException | None = None


def run(vfs: VFS, seed: int = 1, rounds: int = 12, sync: wal.SyncMode = "full") -> Outcome:
    """Append/commit batches (some larger than a segment), checkpoint now and then, close
    and reopen once. Stops at the first error, which it records."""
    rng = random.Random(seed)
    out = Outcome()
    try:
        log = wal.open(LOG, vfs=vfs, segment_size=SEGMENT, sync=sync)
        for round_ in range(rounds):
            batch = []
            for _ in range(rng.choice((1, 1, 2, 4))):
                size = rng.choice((0, 1, 37, 300, 1500, 3000))
                payload = rng.randbytes(size)
                batch.append((log.append(payload), payload))
            out.batches.append(batch)
            log.commit()
            out.acked += 1
            if round_ % 4 == 3:
                lsn = batch[-1][0] - rng.choice((0, 3))
                # Calling checkpoint() declares everything up to lsn applied: segments may
                # be freed even if the call then fails.
                out.checkpoint = max(out.checkpoint, lsn)
                log.checkpoint(lsn)
            if round_ == rounds // 2:
                log.close()
                log = wal.open(LOG, vfs=vfs, segment_size=SEGMENT, sync=sync)
        log.close()
    except wal.WalError as exc:
        out.error = exc
    return out


def check_recovered(vfs: VFS, out: Outcome) -> wal.WriteAheadLog:
    """Open the log on `vfs` and assert the committed-prefix property. Returns the open log."""
    log = wal.open(LOG, vfs=vfs, segment_size=SEGMENT)
    got = [(r.lsn, r.payload) for r in log.replay(out.checkpoint + 1)]
    flat = [rec for batch in out.batches for rec in batch if rec[0] > out.checkpoint]
    assert got == flat[: len(got)], "recovered records are not a prefix of what was appended"
    acked = [rec for batch in out.batches[: out.acked] for rec in batch if rec[0] > out.checkpoint]
    assert len(got) >= len(acked), f"lost acknowledged records: {len(got)} < {len(acked)}"
    # Whole batches only.
    boundaries = {0}
    count = 0
    for batch in out.batches:
        count += sum(1 for rec in batch if rec[0] > out.checkpoint)
        boundaries.add(count)
    assert len(got) in boundaries, "a batch was recovered in part"
    return log


def assert_usable(log: wal.WriteAheadLog, vfs_after_crash: VFS | None = None) -> None:
    """The recovered log takes new records, and they survive a power loss."""
    lsn = log.append(b"after-recovery")
    log.commit()
    assert lsn > 0
    log.close()
