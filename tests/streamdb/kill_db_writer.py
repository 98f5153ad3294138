"""Writer process for the database kill -9 test. Acknowledges each write on stdout only after
write_document returned. Run as: kill_db_writer.py PATH SEED."""

from __future__ import annotations

import hashlib
import sys

import streamdb


def payload(seed: int, n: int) -> bytes:
    """Deterministic content, 0 B to ~300 KB, so the parent can recompute it."""
    block = hashlib.blake2b(b"%d:%d" % (seed, n)).digest()
    return block * (n * 7919 % 9000)


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    db = streamdb.open(path)
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
