"""A deterministic database workload with a dict model of what was acknowledged."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import streamdb
from streamdb import Config
from wal.vfs import VFS

DB = "/data/t.db"
CONFIG = Config(page_size=4096)

Model = dict[str, bytes]


@dataclass
class Outcome:
    acked: Model = field(default_factory=dict)  # state after the last acknowledged operation
    pending: Model | None = None  # state had the failing operation taken effect
    error: BaseException | None = None
    steps: int = 0


Step = tuple[Callable[[streamdb.Database], object], Callable[[Model], None]]


def _steps(rng: random.Random) -> list[Step]:
    """(database action, the same change on the model)."""
    aliases: dict[str, str] = {}

    def write(path: str, size: int) -> Step:
        data = rng.randbytes(size)

        def model(m: Model) -> None:
            m[path] = data
            for alias, target in aliases.items():
                if target == path and alias in m:
                    m[alias] = data

        return (lambda db: db.write_document(path, data)), model

    def bind(alias: str, target: str) -> Step:
        def model(m: Model) -> None:
            m[alias] = m[target]
            aliases[alias] = target

        return (lambda db: db.bind_to_path(db.get_id_by_path(target), alias)), model

    def delete(path: str) -> Step:
        def model(m: Model) -> None:
            del m[path]

        return (lambda db: db.delete(path)), model

    checkpoint: Step = ((lambda db: db.checkpoint()), lambda m: None)
    return [
        write("/a", 10), write("/b", 70_000), write("/c/d", 0), checkpoint,
        write("/a", 5000), bind("/alias", "/b"), write("/b", 9000), delete("/c/d"),
        write("/e", 150_000), checkpoint, delete("/a"), write("/a", 3), write("/f", 1),
    ]


def run(vfs: VFS, seed: int = 1) -> Outcome:
    """Run the workload until the first error, recording the model before and after each op."""
    rng = random.Random(seed)
    out = Outcome()
    steps = _steps(rng)
    try:
        db = streamdb.open(DB, CONFIG, vfs=vfs)
    except streamdb.StreamDbError as exc:
        out.error = exc
        return out
    try:
        for action, model in steps:
            attempt = dict(out.acked)
            model(attempt)
            try:
                action(db)
            except streamdb.StreamDbError as exc:
                out.pending = attempt
                out.error = exc
                return out
            out.acked = attempt
            out.steps += 1
        try:
            db.close()  # checkpoints: a step of its own, which changes nothing visible
        except streamdb.StreamDbError as exc:
            out.error = exc
    finally:
        if out.error is not None:
            # The injected fault may hit close() too; the simulated crash follows anyway,
            # and what matters is what the disk then holds.
            with contextlib.suppress(streamdb.StreamDbError):
                db.close()
    return out


def contents(db: streamdb.Database) -> Model:
    return {path: db.get(path) for path in db}
