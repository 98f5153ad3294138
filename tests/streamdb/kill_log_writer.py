"""Writer process for the message-log kill -9 test. Appends to the log LOG, alternately
single messages, batches and transactions of two appends, and acknowledges on stdout only
after each commit returned. Run as: kill_log_writer.py PATH LOG SEED [KEYHEX] (with a key,
the database is encrypted: each append re-seals the log's last chunk to new pages).

Protocol, one line per event (each one small write to the pipe, so never torn):
- `S n` once: the log holds n messages at start (the parent checks it against its model);
- `R`: ready (what `killing.run_and_kill` waits for);
- `P first k` before a commit of messages first..first+k-1, `A n` once it returned: the
  log now holds n messages.
Message i is always `payload(i)`, so the parent can recompute every one. The seed picks
how often the writer checkpoints: every 23 commits, every 300, or never (then the kill
always comes before a checkpoint, and the next open replays every append of the round).
"""

from __future__ import annotations

import hashlib
import random
import sys

import streamdb

LOG = "/log"


def size(i: int) -> int:
    """0 B to 300 KB: empty, small, around the 4 KiB inline limit, pages, and every 70th
    larger than a 256 KiB checksum chunk. Message 0 is empty and 1..3 are small, so the log
    passes through its inline phase first."""
    if i % 70 == 69:
        return 300_000
    k = i % 7
    r = random.Random(i)
    if k == 0:
        return 0
    if k <= 3:
        return r.randint(1, 200)
    if k == 4:
        return r.randint(1000, 6000)
    if k == 5:
        return r.randint(6000, 20_000)
    return r.randint(20_000, 70_000)


def payload(i: int) -> bytes:
    return hashlib.shake_256(b"log message %d" % i).digest(size(i))


def main() -> None:
    path, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else None
    rng = random.Random(seed)
    every = (23, 300, 0)[seed % 3]
    db = streamdb.open(path, streamdb.Config(encryption_key=key))
    n = (db.info(log).messages or 0) if log in db else 0
    out = sys.stdout
    out.write(f"S {n}\nR\n")
    out.flush()
    op = 0
    while True:
        k = 1 if op % 3 == 0 else rng.randint(2, 6)
        out.write(f"P {n} {k}\n")
        out.flush()
        if op % 3 == 0:
            first = db.append_message(log, payload(n))
        elif op % 3 == 1:
            first = db.append_messages(log, [payload(i) for i in range(n, n + k)])
        else:
            with db.transaction():
                first = db.append_message(log, payload(n))
                second = db.append_messages(log, [payload(i) for i in range(n + 1, n + k)])
            if second != n + 1:
                sys.exit(f"append_messages returned {second}, expected {n + 1}")
        if first != n:
            sys.exit(f"append returned {first}, expected {n}")
        n += k
        out.write(f"A {n}\n")
        out.flush()
        if every and op % every == every - 1:
            db.checkpoint()
        op += 1


if __name__ == "__main__":
    main()
