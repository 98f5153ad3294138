"""Hypothesis stateful test of the database against a plain-dict model, with power losses
on the in-memory file layer and verify() at the end of every run."""

from __future__ import annotations

import random

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import streamdb
from streamdb import Config
from wal.memvfs import MemoryVFS

DB = "/data/s.db"
CONFIG = Config(page_size=4096, versions_to_keep=2)
PATHS = st.sampled_from(["/a", "/a/b", "/b", "/c/d/e", "/é", "/z"])
DATA = st.binary(max_size=300) | st.sampled_from([b"", bytes(70_000), b"x" * 9000])


class DatabaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.disk = MemoryVFS()
        self.db = streamdb.open(DB, CONFIG, vfs=self.disk)
        self.model: dict[str, bytes] = {}
        self.ids: dict[str, object] = {}  # path -> document id in the model

    def _same_doc(self, path: str) -> list[str]:
        return [p for p, i in self.ids.items() if i == self.ids[path]]

    @rule(path=PATHS, data=DATA)
    def write(self, path: str, data: bytes) -> None:
        doc_id = self.db.write_document(path, data)
        if path in self.ids:
            assert doc_id == self.ids[path]
        self.ids[path] = doc_id
        for p in self._same_doc(path):
            self.model[p] = data

    @precondition(lambda self: self.model)
    @rule(pick=st.randoms(use_true_random=False))
    def delete(self, pick: random.Random) -> None:
        path = pick.choice(sorted(self.model))
        self.db.delete(path)
        del self.model[path]
        del self.ids[path]

    @precondition(lambda self: self.model)
    @rule(pick=st.randoms(use_true_random=False), alias=PATHS)
    def bind(self, pick: random.Random, alias: str) -> None:
        target = pick.choice(sorted(self.model))
        self.db.bind_to_path(self.db.get_id_by_path(target), alias)
        self.ids[alias] = self.ids[target]
        self.model[alias] = self.model[target]

    @rule(path=PATHS)
    def unbind_missing_is_keyerror(self, path: str) -> None:
        if path not in self.model:
            try:
                self.db.unbind_path(path)
            except KeyError:
                return
            raise AssertionError("unbinding a missing path did not raise")

    @rule()
    def checkpoint(self) -> None:
        self.db.checkpoint()

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = streamdb.open(DB, CONFIG, vfs=self.disk)

    @rule(keep=st.sampled_from(["none", "random", "all"]), seed=st.integers(0, 1000))
    def power_loss(self, keep: str, seed: int) -> None:
        # Every acknowledged write was fsynced (durability="full"), so nothing may be lost.
        self.disk = self.disk.crash(keep=keep, rng=random.Random(seed))  # type: ignore[arg-type]
        self.db._engine._forget()  # the old process is gone: drop it without a checkpoint
        self.db = streamdb.open(DB, CONFIG, vfs=self.disk)

    @invariant()
    def matches_model(self) -> None:
        assert sorted(self.db) == sorted(self.model)
        for path, data in self.model.items():
            assert self.db.get(path) == data, path
        assert len(self.db) == len(self.model)

    def teardown(self) -> None:
        report = self.db.verify()
        assert report.ok, report.problems
        self.db._engine._check()
        self.db.close()


TestDatabase = DatabaseMachine.TestCase
