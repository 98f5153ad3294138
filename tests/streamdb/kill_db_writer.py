"""Writer process for the database kill -9 test. Acknowledges each write on stdout only after
write_document returned. Run as: kill_db_writer.py PATH SEED [CONFIG], CONFIG a name of
`CONFIGS` (default "plain"); the parent opens the database with the same config."""

from __future__ import annotations

import hashlib
import sys

import streamdb
from streamdb import Config

TEST_KEY = hashlib.sha256(b"streamdb kill test key").digest()  # fixed: the parent needs it
CONFIGS = {
    "plain": Config(),
    "zstd+aes": Config(compression="zstd", encryption_key=TEST_KEY),
}


def payload(seed: int, n: int) -> bytes:
    """Deterministic content, 0 B to ~576 KB, so the parent can recompute it: a random
    (incompressible) head of 0, 1/4, 1/2 or 3/4 of the size, then a repeated 64-byte block.
    Under compression the stored size is about the head's, so documents go both inline and
    to pages."""
    block = hashlib.blake2b(b"%d:%d" % (seed, n)).digest()
    blocks = n * 7919 % 9000
    head = blocks * (n % 4) // 4
    return hashlib.shake_256(block).digest(64 * head) + block * (blocks - head)


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    config = CONFIGS[sys.argv[3] if len(sys.argv) > 3 else "plain"]
    db = streamdb.open(path, config)
    out = sys.stdout
    out.write("R\n")
    out.flush()
    n = 0
    while True:
        key = f"/doc/{n % 17}"
        if n % 11 == 10:
            db.delete(key) if key in db else None
            out.write(f"D {key} {n}\n")
        else:
            db.write_document(key, payload(seed, n))
            out.write(f"W {key} {n}\n")
        out.flush()
        if n % 29 == 28:
            db.checkpoint()
        n += 1


if __name__ == "__main__":
    main()
