"""Hypothesis stateful test: the log against a plain-list model, with crashes and reopens."""

from __future__ import annotations

import random

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import wal
import wal.log as wlog
from wal.memvfs import MemoryVFS

LOG = "/db/log"


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._spill = wlog.SPILL_BYTES
        wlog.SPILL_BYTES = 2500  # exercise spilled batches with small records
        self.disk = MemoryVFS()
        self.log = self._open()
        self.committed: list[tuple[int, bytes]] = []
        self.pending: list[tuple[int, bytes]] = []
        self.checkpointed = 0
        self.last_lsn = 0

    def _open(self) -> wal.WriteAheadLog:
        return wal.open(LOG, vfs=self.disk, segment_size=3000)

    @rule(payload=st.binary(max_size=1200) | st.sampled_from([b"", b"x" * 4000]))
    def append(self, payload: bytes) -> None:
        lsn = self.log.append(payload)
        assert lsn > self.last_lsn
        self.last_lsn = lsn
        self.pending.append((lsn, payload))

    @rule()
    def commit(self) -> None:
        self.log.commit()
        self.committed += self.pending
        self.pending = []
        assert self.log.durable_lsn == self.log.committed_lsn

    @rule()
    def rollback(self) -> None:
        self.log.rollback()
        self.pending = []

    @precondition(lambda self: self.committed)
    @rule(pick=st.floats(0, 1))
    def checkpoint(self, pick: float) -> None:
        lsn = self.committed[int(pick * (len(self.committed) - 1))][0]
        self.log.checkpoint(lsn)
        self.checkpointed = max(self.checkpointed, lsn)

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.pending = []
        self.log = self._open()
        assert self.log.recovery.clean

    @rule(keep=st.sampled_from(["none", "random", "all"]), seed=st.integers(0, 2**16))
    def crash(self, keep: str, seed: int) -> None:
        self.disk = self.disk.crash(keep=keep, rng=random.Random(seed))  # type: ignore[arg-type]
        self.log.close()  # the old object writes to the old disk only
        self.pending = []
        self.log = self._open()
        # LSNs handed out to a batch the crash lost may be handed out again; committed
        # LSNs never are.
        self.last_lsn = max([self.checkpointed, *(lsn for lsn, _ in self.committed)])

    @invariant()
    def replay_matches_model(self) -> None:
        got = [(r.lsn, r.payload) for r in self.log.replay(self.checkpointed + 1)]
        assert got == [rec for rec in self.committed if rec[0] > self.checkpointed]
        assert self.log.next_lsn > self.last_lsn

    def teardown(self) -> None:
        self.log.close()
        wlog.SPILL_BYTES = self._spill


TestLog = LogMachine.TestCase


# Regressions found by the stress profile of the test above.


def test_regression_rollback_of_a_spilled_batch_then_a_roll() -> None:
    """The rolled-back record stayed chained in place while the next commit rolled to a new
    segment; recovery then read it and called the new segment's records corruption."""
    machine = LogMachine()
    machine.reopen()
    machine.append(b"")
    machine.append(b"x" * 4000)  # spills the empty record
    machine.rollback()
    machine.append(b"x" * 4000)  # rolls to a new segment
    machine.commit()
    machine.reopen()
    machine.replay_matches_model()
    machine.crash("none", 0)
    machine.replay_matches_model()
    machine.teardown()


def test_regression_recovery_discards_a_batch_then_the_writer_rolls() -> None:
    disk = MemoryVFS()
    wlog_spill = wlog.SPILL_BYTES
    wlog.SPILL_BYTES = 100
    try:
        log = wal.open(LOG, vfs=disk, segment_size=3000)
        log.append(b"a")
        log.commit()
        log.append(b"b" * 50)
        log.append(b"c" * 200)  # spills b: an unfinished batch on disk
        disk = disk.crash(keep="all")
        log.close()
        log = wal.open(LOG, vfs=disk, segment_size=3000)
        assert log.recovery.discarded_records == 1
        log.append(b"d" * 4000)  # rolls to a new segment, leaving b's bytes behind
        log.commit()
        disk = disk.crash(keep="none")
        log.close()
        with wal.open(LOG, vfs=disk, segment_size=3000) as again:
            assert [r.payload for r in again.replay()] == [b"a", b"d" * 4000]
    finally:
        wlog.SPILL_BYTES = wlog_spill


def test_regression_checkpoint_keeps_the_segment_a_spilled_batch_rolls_back_to() -> None:
    machine = LogMachine()
    machine.append(b"")
    machine.commit()
    machine.append(b"x" * 4000)
    machine.append(b"")  # spills x into a new segment
    machine.checkpoint(0.0)
    machine.replay_matches_model()
    machine.rollback()
    machine.reopen()
    machine.replay_matches_model()
    machine.teardown()


def test_regression_checkpoint_deletes_a_spare_file_a_rolled_back_batch_wrote() -> None:
    """The deleted file stayed queued for the next fsync, which then hit a closed file."""
    machine = LogMachine()
    machine.append(b"")
    machine.commit()
    for payload in (b"x" * 4000, b"", b"x" * 4000, b""):  # spills across new segments
        machine.append(payload)
    machine.rollback()
    machine.append(b"")
    machine.checkpoint(0.0)  # rolls, frees, deletes spare files
    machine.replay_matches_model()
    machine.teardown()  # close() syncs what is dirty
