#!/usr/bin/env python3
"""Write the seed corpus of the log recovery fuzzer into `fuzz/corpus/wal/`.

Deterministic: every log is written by `wal` itself on a `MemoryVFS` with seeded salts and
sessions (see `fuzz_wal_recovery.seeded_wal_randomness`), then damaged on purpose. Files are
harness inputs (see the framing in `fuzz_wal_recovery`), named after what they hold.

    python fuzz/make_wal_corpus.py            # rewrite the corpus
    python fuzz/make_wal_corpus.py --check    # and print each file's outcome

Every file must end in success or a `wal.WalError` (tests/wal/test_fuzz_corpus.py replays
them); inputs that expose bugs belong in `fuzz/crashes/`, not here.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_wal_recovery as harness
import fuzzkit
import wal_inputs
from wal_inputs import (
    HDR,
    LOG_PATH,
    MAX_RECORD_SIZE,
    REC,
    SEGMENT_SIZE,
    SIBLING_PATH,
    FuzzCase,
    record_offsets,
    repair_checksums,
)

import wal
from wal import format as fmt
from wal.memvfs import MemoryVFS

SEED = 20240611
Writer = Callable[[wal.WriteAheadLog, MemoryVFS], None]


def write_log(
    seed: int,
    actions: Writer,
    *,
    close: bool = True,
    max_record_size: int = MAX_RECORD_SIZE,
    sync: wal.SyncMode = "full",
    tear: int | None = None,
    keep_random: bool = False,
) -> FuzzCase:
    """Run `actions` on a fresh log; return slot 0 and slot 1 (after a crash, if asked)."""
    vfs = MemoryVFS()
    with wal_inputs.seeded_wal_randomness(seed):
        log = wal.open(
            LOG_PATH, vfs=vfs, max_record_size=max_record_size, segment_size=SEGMENT_SIZE,
            sync=sync,
        )
        actions(log, vfs)
        if close:
            log.close()
    if tear is not None:
        vfs = vfs.crash(keep="none", tear=tear)
    elif keep_random:
        vfs = vfs.crash(keep="random", rng=random.Random(seed))
    assert not vfs.exists(LOG_PATH + ".2"), "the harness takes two segment files at most"
    log_bytes = vfs.read_file(LOG_PATH) if vfs.exists(LOG_PATH) else b""
    sibling = vfs.read_file(SIBLING_PATH) if vfs.exists(SIBLING_PATH) else None
    return FuzzCase(log_bytes, sibling)


def batch(*payloads: bytes) -> Writer:
    """One committed batch of these records (none: just open and close)."""

    def run(log: wal.WriteAheadLog, vfs: MemoryVFS) -> None:
        if payloads:
            for payload in payloads:
                log.append(payload)
            log.commit()

    return run


def commits(rng: random.Random, batches: int, *, sizes: tuple[int, int] = (0, 40)) -> Writer:
    def run(log: wal.WriteAheadLog, vfs: MemoryVFS) -> None:
        for _ in range(batches):
            for _ in range(rng.choice([1, 1, 2, 3])):
                log.append(rng.randbytes(rng.randrange(*sizes)))
            log.commit()

    return run


def trim(data: bytes) -> bytes:
    """Drop the zero-filled preallocation at the end (keeps the corpus small), never cutting
    into a record (payloads may end in zeros)."""
    offsets = record_offsets(data)
    end = HDR if offsets else 0
    if offsets:
        last = offsets[-1]
        end = last + REC + int.from_bytes(data[last + 8 : last + 12], "little")
    return data[: max(end, len(data.rstrip(b"\0")))]


def trimmed(case: FuzzCase) -> FuzzCase:
    sibling = None if case.sibling is None else trim(case.sibling)
    return FuzzCase(trim(case.log), sibling, case.checkpoint, case.large)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    buf = bytearray(data)
    buf[offset] ^= 1 << bit
    return bytes(buf)


def put(data: bytes, offset: int, size: int, value: int, *, repair: bool = True) -> bytes:
    """Set a little-endian field; with `repair`, recompute the checksums afterwards."""
    buf = bytearray(data)
    buf[offset : offset + size] = value.to_bytes(size, "little")
    return repair_checksums(buf) if repair else bytes(buf)


def build(rng: random.Random) -> dict[str, FuzzCase]:
    corpus: dict[str, FuzzCase] = {}
    seed = rng.getrandbits
    nothing = batch()

    # -- valid logs ----------------------------------------------------------------------
    fresh_closed = trimmed(write_log(seed(64), nothing))
    corpus["empty-input"] = FuzzCase(b"")
    corpus["valid-fresh-closed"] = fresh_closed
    corpus["valid-fresh-abandoned"] = write_log(seed(64), nothing, close=False)  # zero-filled
    one = trimmed(write_log(seed(64), batch(b"hello")))
    corpus["valid-one-record-closed"] = one
    corpus["valid-one-record-abandoned"] = trimmed(
        write_log(seed(64), batch(b"hello"), close=False)
    )
    corpus["valid-one-empty-record"] = trimmed(
        write_log(seed(64), batch(b""))
    )
    many = trimmed(write_log(seed(64), commits(rng, 25)))
    corpus["valid-many-records-closed"] = many
    many_open = trimmed(write_log(seed(64), commits(rng, 25), close=False))
    corpus["valid-many-records-abandoned"] = many_open
    two = trimmed(write_log(seed(64), commits(rng, 16, sizes=(40, 200))))
    assert two.sibling is not None
    corpus["valid-two-segments-closed"] = two
    corpus["valid-two-segments-abandoned"] = trimmed(
        write_log(seed(64), commits(rng, 16, sizes=(40, 200)), close=False)
    )

    def checkpointed(log: wal.WriteAheadLog, vfs: MemoryVFS) -> None:
        commits(rng, 16, sizes=(40, 200))(log, vfs)
        # Everything before the second segment's base LSN is applied: slot 0 becomes free.
        base = int.from_bytes(vfs.read_file(SIBLING_PATH)[32:40], "little")
        log.checkpoint(base - 1)
        commits(rng, 2)(log, vfs)

    corpus["valid-after-checkpoint"] = trimmed(write_log(seed(64), checkpointed))

    def checkpoint_all(log: wal.WriteAheadLog, vfs: MemoryVFS) -> None:
        commits(rng, 6)(log, vfs)
        log.checkpoint(log.committed_lsn)

    corpus["valid-checkpointed-everything"] = trimmed(write_log(seed(64), checkpoint_all))

    def rollback_at_roll(log: wal.WriteAheadLog, vfs: MemoryVFS) -> None:
        # 28 records of 140 bytes fill a 4096-byte segment up to offset 3984.
        for _ in range((SEGMENT_SIZE - HDR) // (REC + 100)):
            log.append(bytes(100))
            log.commit()
        log.append(b"dropped")
        log.rollback()
        log.append(bytes(300))  # does not fit: rolls, leaving an LSN gap at the boundary
        log.commit()

    gap = trimmed(write_log(seed(64), rollback_at_roll))
    assert gap.sibling is not None
    corpus["valid-rollback-gap-at-segment-roll"] = gap
    big = write_log(seed(64), batch(bytes(range(256)) * 40))
    corpus["valid-record-larger-than-segment"] = trimmed(big)
    corpus["oversize-record-for-max-record-size"] = trimmed(
        write_log(
            seed(64),
            batch(b"\x5a" * (MAX_RECORD_SIZE + 1)),
            max_record_size=MAX_RECORD_SIZE + 1,
        )
    )
    with_options = FuzzCase(many.log, many.sibling, checkpoint=True, large=True)
    corpus["valid-many-records-then-checkpoint-large"] = with_options

    # -- crash images --------------------------------------------------------------------
    for tear in (0, 17, REC - 1, REC, REC + 5):
        corpus[f"crash-torn-last-write-at-{tear}"] = trimmed(
            write_log(seed(64), commits(rng, 8, sizes=(10, 80)), close=False, tear=tear)
        )
    corpus["crash-random-sectors-sync-off"] = trimmed(
        write_log(seed(64), commits(rng, 16, sizes=(20, 200)), close=False, sync="off",
                  keep_random=True)
    )

    # -- truncations ---------------------------------------------------------------------
    records = record_offsets(many.log)
    for name, cut in {
        "magic-prefix": 5,
        "header-minus-1": HDR - 1,
        "header-only": HDR,
        "mid-first-record-header": HDR + REC // 2,
        "first-record-header-only": HDR + REC,
        "mid-payload": records[3] + REC + 1,
        "at-record-boundary": records[10],
        "last-byte-missing": len(many.log) - 1,
    }.items():
        corpus[f"truncated-{name}"] = FuzzCase(many.log[:cut])

    # -- bit flips and field damage --------------------------------------------------------
    mid = records[len(records) // 2]
    last = records[-1]
    corpus["flip-magic"] = FuzzCase(flip(many.log, 3))
    corpus["flip-header-crc"] = FuzzCase(flip(many.log, HDR - 2, 5))
    corpus["flip-salt-abandoned"] = FuzzCase(flip(many_open.log, 17, 2))
    corpus["flip-first-record-crc"] = FuzzCase(flip(many.log, records[0] + 12, 1))
    corpus["flip-middle-payload-synced-later"] = FuzzCase(flip(many.log, mid + REC, 0))
    corpus["flip-last-record-lsn"] = FuzzCase(flip(many.log, last + 16, 3))
    corpus["flip-length-field"] = FuzzCase(flip(many.log, records[2] + 10, 7))
    corpus["flip-sibling-header"] = FuzzCase(two.log, flip(two.sibling, 30, 4))
    corpus["flip-sibling-first-record"] = FuzzCase(two.log, flip(two.sibling, HDR + 20, 6))
    corpus["lsn-going-backwards-repaired"] = FuzzCase(put(many.log, records[5] + 16, 8, 1))
    # Counters near 2**64 with valid checksums once overflowed the writer's u64 fields.
    corpus["lsn-overflow-header-base-repaired"] = FuzzCase(put(one.log, 32, 8, 2**64 - 1))
    corpus["lsn-overflow-last-record-repaired"] = FuzzCase(put(many.log, last + 16, 8, 2**63))
    corpus["header-base-lsn-zero-repaired"] = FuzzCase(put(one.log, 32, 8, 0))
    corpus["durable-lsn-claims-future-repaired"] = FuzzCase(
        put(many.log, records[4] + 24, 8, 10**6)
    )
    unfinished = put(many_open.log, record_offsets(many_open.log)[-1] + 5, 1, 0)  # END off
    corpus["unfinished-last-batch-repaired"] = FuzzCase(unfinished)
    # The next record does not fit: the writer rolls, leaving the dropped batch behind it.
    corpus["unfinished-last-batch-then-roll"] = FuzzCase(unfinished, large=True)
    corpus["unknown-record-kind-repaired"] = FuzzCase(put(many.log, mid + 4, 1, 7))
    corpus["free-flag-set-repaired"] = FuzzCase(put(many.log, 12, 4, fmt.FLAG_FREE))
    corpus["free-flag-set-torn-header"] = FuzzCase(
        put(many.log, 12, 4, fmt.FLAG_FREE, repair=False)
    )

    # -- not logs, or not this version ---------------------------------------------------
    corpus["foreign-sqlite-header"] = FuzzCase(b"SQLite format 3\0" + bytes(range(200)))
    corpus["foreign-text"] = FuzzCase(b"this is a plain text file, not a write-ahead log\n" * 3)
    corpus["all-zero-header"] = FuzzCase(bytes(HDR))
    corpus["all-zero-short"] = FuzzCase(bytes(20))
    corpus["all-ff"] = FuzzCase(b"\xff" * 300)
    corpus["newer-version"] = FuzzCase(put(one.log, 8, 2, fmt.VERSION + 1))
    corpus["newer-version-bad-crc"] = FuzzCase(put(one.log, 8, 2, fmt.VERSION + 1, repair=False))
    corpus["version-zero"] = FuzzCase(put(one.log, 8, 2, 0))
    corpus["header-size-128"] = FuzzCase(put(one.log, 10, 2, 128))

    # -- two files -----------------------------------------------------------------------
    corpus["sibling-foreign"] = FuzzCase(one.log, b"GIF89a" + bytes(100))
    corpus["sibling-empty"] = FuzzCase(one.log, b"")
    corpus["sibling-zero-prefix"] = FuzzCase(one.log, bytes(10))
    corpus["sibling-copy-of-log"] = FuzzCase(many.log, many.log)
    corpus["sibling-sequence-gap"] = FuzzCase(two.log, put(two.sibling, 24, 8, 5, repair=True))
    corpus["segments-swapped"] = FuzzCase(two.sibling, two.log)
    return corpus


def main() -> int:
    return fuzzkit.corpus_main(__doc__, build, seed=SEED, out=harness.CORPUS_DIR,
                               run_one=harness.run_one, signature=harness.signature,
                               width=45)


if __name__ == "__main__":
    sys.exit(main())
