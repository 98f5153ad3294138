"""Writer process for the mixed-workload kill -9 test: runs `mixed_workload.operations(SEED)`
on the database and acknowledges each operation ("A i") only after it returned. Run as:
kill_mixed_writer.py PATH SEED."""

from __future__ import annotations

import sys

import streamdb
from tests.streamdb.mixed_workload import operations, run


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    db = streamdb.open(path)
    out = sys.stdout
    out.write("R\n")
    out.flush()
    for i, op in enumerate(operations(seed)):
        run(db, op)
        out.write(f"A {i}\n")
        out.flush()


if __name__ == "__main__":
    main()
