"""A mixed workload for kill -9 tests: documents of every size class, overwrites, deletes,
aliases, transactions, message appends, Arrow table appends, checkpoints and gc, as a
seeded sequence of operations that a writer process runs and a checker replays on a model.

The sequence depends only on the seed; what an operation does depends on the state it
meets (a delete of a missing path, a bind from a missing path, do nothing), and the model
applies the same rule, so the checker can start from any recovered state.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import streamdb

PATHS = [f"/doc/{i}" for i in range(12)]
ALIASES = [f"/alias/{i}" for i in range(4)]
LOGS = ["/log/a", "/log/b"]
TABLE = "/table/t"
SIZES = [0, 1, 100, 4096, 8191, 70_000, 300_000, 1_100_000]  # inline .. several chunks


def content(seed: int, n: int, size: int) -> bytes:
    """Deterministic bytes of `size`: a random head, then a repeated block."""
    block = hashlib.blake2b(b"%d:%d" % (seed, n)).digest()
    head = hashlib.shake_256(block).digest(min(size, 4096))
    return (head + block * (size // 64 + 1))[:size]


@dataclass(frozen=True)
class Op:
    kind: str  # write, delete, bind, append, batch, tx, checkpoint, gc
    path: str = ""
    other: str = ""  # bind: the path whose document the alias names
    data: bytes = b""
    messages: tuple[bytes, ...] = ()
    rows: tuple[int, ...] = ()
    ops: tuple[Op, ...] = ()  # tx


def operations(seed: int) -> Iterator[Op]:
    """The endless seeded sequence."""
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        roll = rng.random()
        if roll < 0.04:
            yield Op("checkpoint")
        elif roll < 0.06:
            yield Op("gc")
        elif roll < 0.16:
            yield Op("tx", ops=tuple(_simple(rng, seed, n * 100 + i)
                                     for i in range(rng.randint(1, 5))))
        elif roll < 0.26:
            yield Op("append", rng.choice(LOGS), messages=tuple(
                content(seed, n * 100 + i, rng.choice([0, 10, 300, 5000]))
                for i in range(rng.randint(1, 8))))
        elif roll < 0.32:
            start = n * 1000
            yield Op("batch", TABLE, rows=tuple(range(start, start + rng.randint(1, 50))))
        else:
            yield _simple(rng, seed, n)


def _simple(rng: random.Random, seed: int, n: int) -> Op:
    roll = rng.random()
    if roll < 0.15:
        return Op("delete", rng.choice(PATHS + ALIASES))
    if roll < 0.25:
        return Op("bind", rng.choice(ALIASES), other=rng.choice(PATHS))
    return Op("write", rng.choice(PATHS + ALIASES), data=content(seed, n, rng.choice(SIZES)))


def run(db: streamdb.Database, op: Op) -> None:
    """Carry out `op` on the database (what the writer process does)."""
    from streamdb import arrow

    if op.kind == "write":
        db.write_document(op.path, op.data)
    elif op.kind == "delete":
        if op.path in db:
            db.delete(op.path)
    elif op.kind == "bind":
        if op.other in db:
            db.bind_to_path(db.get_id_by_path(op.other), op.path)
    elif op.kind == "append":
        db.append_messages(op.path, op.messages)
    elif op.kind == "batch":
        db.append_batch(op.path, arrow.Table.from_pydict({"n": list(op.rows)}))
    elif op.kind == "tx":
        with db.transaction():
            for inner in op.ops:
                run(db, inner)
    elif op.kind == "checkpoint":
        db.checkpoint()
    elif op.kind == "gc":
        db.gc()


@dataclass
class Model:
    """What the database should hold: documents by id, paths naming them, logs, rows."""

    docs: dict[int, bytes] = field(default_factory=dict)
    paths: dict[str, int] = field(default_factory=dict)
    logs: dict[str, list[bytes]] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)
    next_id: int = 0

    def copy(self) -> Model:
        return Model(dict(self.docs), dict(self.paths), {k: list(v) for k, v in
                                                          self.logs.items()},
                     list(self.rows), self.next_id)

    def apply(self, op: Op) -> None:
        if op.kind == "write":
            doc = self.paths.get(op.path)
            if doc is None:
                doc = self.next_id = self.next_id + 1
                self.paths[op.path] = doc
            self.docs[doc] = op.data
        elif op.kind == "delete":
            self._unbind(op.path)
        elif op.kind == "bind":
            if op.other in self.paths:
                self._unbind(op.path)
                self.paths[op.path] = self.paths[op.other]
        elif op.kind == "append":
            self.logs.setdefault(op.path, []).extend(op.messages)
        elif op.kind == "batch":
            self.rows.extend(op.rows)
        elif op.kind == "tx":
            for inner in op.ops:
                self.apply(inner)

    def _unbind(self, path: str) -> None:
        doc = self.paths.pop(path, None)
        if doc is not None and doc not in self.paths.values():
            del self.docs[doc]

    def view(self) -> dict[str, Any]:
        """What a reader sees: each path's bytes, each log's messages, the table's rows."""
        out: dict[str, Any] = {p: self.docs[d] for p, d in self.paths.items()}
        out.update({p: list(m) for p, m in self.logs.items()})
        if self.rows:
            out[TABLE] = list(self.rows)
        return out

    @staticmethod
    def of(db: streamdb.Database) -> Model:
        """The model of what `db` holds (aliases as shared documents)."""
        model = Model()
        ids: dict[Any, int] = {}
        for path in db:
            if path in LOGS:
                model.logs[path] = [bytes(m) for m in db.messages(path)]
            elif path == TABLE:
                model.rows = [int(x) for x in db.get_table(path).column("n").to_pylist()]
            else:
                doc = db.get_id_by_path(path)
                if doc not in ids:
                    ids[doc] = model.next_id = model.next_id + 1
                    model.docs[ids[doc]] = db.get(path)
                model.paths[path] = ids[doc]
        return model
