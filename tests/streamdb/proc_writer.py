"""Writer process for test_processes.py. Run as: proc_writer.py PATH SEED FIRST_GEN.

On open it reads (and checks) every document, runs verify(), and prints
`O <state digest>`. Then it commits generation after generation, FIRST_GEN on: before each
commit `B <gen> <digest of the state after it> <+path | -path>...`, after it returned
`A <gen>`; after a gc, checkpoint or compaction `C <what>`. Every line is one write(2)
before or after the operation it names, so a parent that kills this process knows which
commits were acknowledged and which one may have been in flight.
"""

from __future__ import annotations

import os
import random
import sys

import streamdb
from tests.streamdb import stressdocs as sd

GROUPS = 5  # group 0 has a ~1 MiB member
MEMBERS = {f"/g/{n}/": sd.group_paths(n, big=n == 0) for n in range(GROUPS)}
SINGLES = ["/s/t0", "/s/t1", "/s/k0", "/s/h0", "/s/h1", "/s/m0"]


def say(line: str) -> None:
    data = (line + "\n").encode()
    assert os.write(1, data) == len(data)


def read_state(db: streamdb.Database) -> dict[str, int]:
    """path -> generation of every document, each read whole and checked."""
    state = {p: sd.parse(p, db.get(p)) for p in db.search("/")}
    sd.check_groups(state, MEMBERS)
    return state


def choose(rng: random.Random, model: dict[str, int]) -> tuple[list[str], list[str]]:
    """The next commit: (paths written, paths deleted)."""
    groups = [g for g in MEMBERS if MEMBERS[g][0] in model]
    roll = rng.random()
    if roll < 0.5 or not groups:
        writes = list(MEMBERS[rng.choice(list(MEMBERS))])
        others = [g for g in groups if not writes[0].startswith(g)]
        deletes = list(MEMBERS[rng.choice(others)]) if others and rng.random() < 0.3 else []
        if rng.random() < 0.4:
            writes.append(rng.choice(SINGLES))
        return writes, deletes
    if roll < 0.75:
        return [rng.choice(SINGLES)], []
    singles = [p for p in SINGLES if p in model]
    if roll < 0.88 and singles:
        return [], [rng.choice(singles)]
    return [], list(MEMBERS[rng.choice(groups)])


def main() -> None:
    path, seed, gen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    db = streamdb.open(path)
    model = read_state(db)
    report = db.verify()
    assert report.ok, report.problems
    say(f"O {sd.state_digest(model)}")
    while True:
        writes, deletes = choose(rng, model)
        after = {p: g for p, g in model.items() if p not in deletes}
        after.update((p, gen) for p in writes)
        say(f"B {gen} {sd.state_digest(after)} "
            + " ".join([f"+{p}" for p in writes] + [f"-{p}" for p in deletes]))
        if len(writes) + len(deletes) == 1:
            if writes:
                db.write_document(writes[0], sd.make(writes[0], gen))
            else:
                db.delete(deletes[0])
        else:
            with db.transaction():
                for p in writes:
                    db.write_document(p, sd.make(p, gen))
                for p in deletes:
                    db.delete(p)
        say(f"A {gen}")
        model = after
        gen += 1
        roll = rng.random()
        if roll < 0.06:
            db.gc()
            say("C gc")
        elif roll < 0.14:
            db.checkpoint()
            say("C checkpoint")
        elif roll < 0.15:
            db.compact()
            say("C compact")


if __name__ == "__main__":
    main()
