"""Writer process for the transaction kill -9 test. Runs transaction after transaction,
numbered from FIRST, and acknowledges each on stdout ("C k") only after its `with` block
returned. Run as: kill_tx_writer.py PATH FIRST.

Transaction k is a pure function of k (`tx_ops`), so the parent can compute the state after
any prefix of transactions (`model`). Every document transaction k writes carries k in its
content (`payload`)."""

from __future__ import annotations

import hashlib
import sys
import time

import streamdb

HUGE = 5 << 20  # one of these every HUGE_EVERY transactions: its pages are synced first
HUGE_EVERY = 6
SIZES = (0, 120, 3000, 20_000, 70_000, 150_000, 9, 66_000)

# ("w", path, size): write payload(k, path, size); ("b", path, source): bind path to the
# document at source; ("d", path, 0): delete.
Op = tuple[str, str, int | str]


def payload(k: int, path: str, size: int) -> bytes:
    """Deterministic content naming its transaction, at least its header long."""
    head = f"tx {k} {path}\n".encode()
    block = hashlib.blake2b(head).digest()
    body = block * (size // len(block) + 1)
    return (head + body)[: max(size, len(head))]


def docs_in(k: int) -> int:
    return 2 + k % 4


def tx_ops(k: int) -> list[Op]:
    """Transaction k: new documents, overwrites of shared ones, an alias moved, deletes of
    what earlier transactions wrote, and now and then a 5 MiB document."""
    ops: list[Op] = [("w", f"/tx/{k}/{i}", SIZES[(k + 3 * i) % len(SIZES)])
                     for i in range(docs_in(k))]
    ops += [("w", f"/shared/{j}", SIZES[(k * 5 + j) % len(SIZES)]) for j in range(3)]
    ops.append(("b", f"/alias/{k % 4}", f"/tx/{k}/1"))
    if k % HUGE_EVERY == HUGE_EVERY - 1:
        ops.append(("w", "/huge", HUGE))
    if k >= 3:  # all but /1 of transaction k-3; its /1 two transactions later
        ops += [("d", f"/tx/{k - 3}/{i}", 0) for i in range(docs_in(k - 3)) if i != 1]
    if k >= 5:  # its alias moved on at k-1, so this deletes the document
        ops.append(("d", f"/tx/{k - 5}/1", 0))
    return ops


def model(last: int) -> dict[str, tuple[int, str, int]]:
    """The database after transactions 0..last: path -> (k, origin path, size) of the
    payload it holds."""
    state: dict[str, tuple[int, str, int]] = {}
    for k in range(last + 1):
        for kind, path, arg in tx_ops(k):
            if kind == "w":
                assert isinstance(arg, int)
                state[path] = (k, path, arg)
            elif kind == "b":
                assert isinstance(arg, str)
                state[path] = state[arg]
            else:
                del state[path]
    return state


def run(db: streamdb.Database, k: int) -> None:
    with db.transaction():
        batch: list[tuple[str, object]] = []
        for kind, path, arg in tx_ops(k):
            if kind == "w":
                assert isinstance(arg, int)
                if path.endswith(("/2", "/3", "/4")):  # written together, at the end
                    batch.append((path, payload(k, path, arg)))
                else:
                    db.write_document(path, payload(k, path, arg))
            elif kind == "b":
                assert isinstance(arg, str)
                db.bind_to_path(db.get_id_by_path(arg), path)  # reads the pending write
            else:
                db.delete(path)
        db.write_documents(batch)


def main() -> None:
    path, first = sys.argv[1], int(sys.argv[2])
    db = streamdb.open(path)
    out = sys.stdout
    out.write("R\n")
    out.flush()
    k = first
    while True:
        run(db, k)
        if k % 3 == 0:  # committed, not yet acknowledged: a kill here must keep it
            time.sleep(0.002)
        out.write(f"C {k}\n")
        out.flush()
        if k % 10 == 9:
            db.checkpoint()
        if k % 15 == 14:
            db.gc()
        k += 1


if __name__ == "__main__":
    main()
