"""Writer process for the kill -9 test: commits records and acknowledges each commit on
stdout only after commit() returned. Run as: kill_writer.py PATH THREADS SEED."""

from __future__ import annotations

import hashlib
import sys
import threading

import wal


def payload(thread: int, counter: int) -> bytes:
    """Deterministic payload, 0 B to ~40 KiB, so the parent can recompute it."""
    seed = hashlib.blake2b(b"%d:%d" % (thread, counter)).digest()
    return seed * (counter * 7919 % 1250)


def main() -> None:
    path, threads, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log = wal.open(path, segment_size=256 << 10)
    out = sys.stdout
    lock = threading.Lock()

    def work(thread: int) -> None:
        counter = 0
        while True:
            lsns = []
            for _ in range(1 + (counter + seed) % 3):
                lsns.append((log.append(payload(thread, counter)), counter))
                counter += 1
            log.commit()
            with lock:
                for lsn, c in lsns:
                    out.write(f"A {lsn} {thread} {c}\n")
                out.flush()
                if thread == 0 and counter % 25 < 3:
                    lsn = log.committed_lsn
                    out.write(f"C {lsn}\n")  # declared before the call, as the contract says
                    out.flush()
                    log.checkpoint(lsn)

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    out.write("R\n")
    out.flush()
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
