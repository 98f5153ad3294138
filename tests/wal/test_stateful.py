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
