"""A deterministic database workload with a dict model of what was acknowledged.

The documents are inline ones (up to 64 KiB stored) and page ones: incompressible, text-like
(compressible) and both in one document, one of them longer than a checksum chunk
(256 KiB). Under a transforming config (`TRANSFORMS`) the stored chunks therefore land both
in the log and in pages, compressed and RAW (not shrunk), sealed or not, and a two-chunk
document goes through the inline-then-pages switch (zstd) or straight to pages (lz4,
snappy); empty and 1..10-byte documents exercise the degenerate chunks.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import streamdb
from streamdb import Config
from wal.vfs import VFS

DB = "/data/t.db"
CONFIG = Config(page_size=4096)
TEST_KEY = bytes(range(32))  # a fixed AES-256 key: the tests are deterministic
# The configs the crash tests run the workload under, by test id.
CONFIGS = {
    "plain": CONFIG,
    "zstd+aes": replace(CONFIG, compression="zstd", encryption_key=TEST_KEY),
    "lz4": replace(CONFIG, compression="lz4"),
    "snappy": replace(CONFIG, compression="snappy"),
}
TRANSFORMS = [name for name in CONFIGS if name != "plain"]

Model = dict[str, bytes]


@dataclass
class Outcome:
    acked: Model = field(default_factory=dict)  # state after the last acknowledged operation
    pending: Model | None = None  # state had the failing operation taken effect
    error: BaseException | None = None
    steps: int = 0


Step = tuple[Callable[[streamdb.Database], object], Callable[[Model], None]]


Kind = Literal["random", "text", "mixed"]


def document(rng: random.Random, size: int, kind: Kind) -> bytes:
    """`size` bytes: "random" does not compress; "text" is words of a small vocabulary
    (zstd ~5x, lz4 ~3x, snappy ~4x); "mixed" is text up to 256 KiB, then random."""
    if kind == "random":
        return rng.randbytes(size)
    if kind == "mixed":
        head = min(size, 256 << 10)
        return document(rng, head, "text") + rng.randbytes(size - head)
    words = [rng.randbytes(rng.randint(3, 12)) + b" " for _ in range(64)]
    count = size // 8 + 1
    while True:
        out = b"".join([words[i & 63] for i in rng.randbytes(count)])
        if len(out) >= size:
            return out[:size]
        count *= 2


def _steps(rng: random.Random) -> list[Step]:
    """(database action, the same change on the model)."""
    aliases: dict[str, str] = {}

    def write(path: str, size: int, kind: Kind = "random") -> Step:
        data = document(rng, size, kind)

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
    # Stored under zstd / lz4 / snappy: /b 70,000 bytes RAW on pages, then ~2.3 / 3.5 /
    # 2.9 KB inline; /e a compressed chunk of ~52 / 93 / 71 KB (zstd: held inline until
    # the second chunk) and a RAW one of 37 KB, on pages.
    return [
        write("/a", 10, "text"), write("/b", 70_000), write("/c/d", 0), checkpoint,
        write("/a", 5000, "text"), bind("/alias", "/b"), write("/b", 9000, "text"),
        delete("/c/d"), write("/e", 300_000, "mixed"), checkpoint, delete("/a"),
        write("/a", 3), write("/f", 1),
    ]


def run(vfs: VFS, seed: int = 1, config: Config = CONFIG,
        observe: Callable[[streamdb.Database], object] | None = None) -> Outcome:
    """Run the workload until the first error, recording the model before and after each op.
    `observe(db)` is called after each acknowledged op."""
    rng = random.Random(seed)
    out = Outcome()
    steps = _steps(rng)
    try:
        db = streamdb.open(DB, config, vfs=vfs)
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
            if observe is not None:
                observe(db)
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
