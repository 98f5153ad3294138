"""End-to-end demo of StreamDB on an embedded database in `demo-data/demo.db`.

A writer process logs telemetry documents and stores a large array, then dies without
closing (os._exit: a crash). The demo reopens the database, which recovers from its log,
reads documents whole, by range, as a stream and zero-copy as a numpy array, searches by
prefix and suffix, follows the writer from a read-only process with a snapshot and a
transaction in between, checks every checksum with verify(), compacts and backs up.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.synchronize
import os
import shutil
import time

import numpy as np

import streamdb
from streamdb import arrow

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "demo-data")
DB = os.path.join(DATA, "demo.db")


def writer() -> None:
    db = streamdb.open(DB)
    start = time.perf_counter()
    for day in range(1, 8):
        batch = []
        for dev in range(50):
            reading = {"device": dev, "day": day, "celsius": 20 + (dev * 7 + day) % 13}
            batch.append((f"/sensors/dev{dev:02d}/2026-11-{day:02d}.json",
                          json.dumps(reading).encode()))
        db.write_documents(batch)  # 50 documents, atomically, one fsync
    elapsed = time.perf_counter() - start
    print(f"writer: 350 documents in 7 durable batches, {elapsed * 1e3:.0f} ms")
    frame = np.arange(4_000_000, dtype=np.float64)  # 32 MB
    db.write_document("/frames/latest", frame.tobytes())
    db.write_document("/sensors/dev00/2026-11-07.json", b'{"device": 0, "corrected": true}')
    print("writer: stored a 32 MB array, then dies without closing the database")
    os._exit(0)


def dashboard(ready: multiprocessing.synchronize.Event,
              go: multiprocessing.synchronize.Event) -> None:
    """Another process reading while the writer writes: it never waits for the writer."""
    with streamdb.open(DB, readonly=True) as db:
        print(f"dashboard: read-only open sees {len(db.search('/alerts/'))} alerts")
        ready.set()
        go.wait()
        db.refresh()
        alerts = db.search("/alerts/")
        print(f"dashboard: after refresh() sees {len(alerts)} alerts, all or none of the "
              f"transaction: {[db.get(p).decode() for p in alerts]}")


def encrypted_demo() -> None:
    """A compressed, encrypted database read through the page cache instead of mmap."""
    path = os.path.join(DATA, "vault.db")
    key = os.urandom(32)
    config = streamdb.Config(compression="zstd", encryption_key=key, use_mmap=False)
    lines = b"".join(b'{"dev": %d, "t": %d, "temp": 21.5}\n' % (i % 16, i)
                     for i in range(200_000))
    with streamdb.open(path, config) as db:
        db.write_document("/logs/today.jsonl", lines)
        info = db.info("/logs/today.jsonl")
        print(f"vault: {info.size:,} bytes of logs stored in {info.stored_size:,} "
              f"({info.codec}, encrypted={info.encrypted})")
    for wrong in (None, os.urandom(32)):
        try:
            streamdb.open(path, streamdb.Config(encryption_key=wrong))
        except streamdb.EncryptionError as exc:
            print(f"  opened with {'no' if wrong is None else 'a wrong'} key: "
                  f"{type(exc).__name__}: {exc}")
    with streamdb.open(path, config) as db:
        for _ in range(2):
            assert b"".join(db.get_stream("/logs/today.jsonl")) == lines
        s = db.stats()
        print(f"  read twice through the page cache: {s.cache_hits} hits, {s.cache_misses} "
              f"misses, {s.cache_prefetches} pages read ahead")


def main() -> None:
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(DATA)
    child = multiprocessing.Process(target=writer)
    child.start()
    child.join()

    with streamdb.open(DB) as db:
        print(f"reopened {DB}: {len(db)} paths recovered from the log")
        print("documents of dev07:", db.search("/sensors/dev07/")[:3], "...")
        print("json documents:", len(db.search_suffix(".json")))
        latest = "/sensors/dev00/2026-11-07.json"
        print(f"{latest}: versions {db.versions(latest)}, now {db.get(latest)!r}")
        print(f"  version 1 was {db.get(latest, version=1)!r}")
        view = db.get_view("/frames/latest")
        frame = np.frombuffer(view, dtype=np.float64)  # no copy: over the memory map
        print(f"array: {frame.size:,} float64 zero-copy, sum {frame.sum():,.0f}, "
              f"slice {db.get('/frames/latest', offset=8, length=16)!r}")
        streamed = sum(len(chunk) for chunk in db.get_stream("/frames/latest"))
        print(f"streamed {streamed:,} bytes in verified 256 KiB chunks")
        ready, go = multiprocessing.Event(), multiprocessing.Event()
        reader = multiprocessing.Process(target=dashboard, args=(ready, go))
        reader.start()
        ready.wait()
        with db.snapshot() as before, db.transaction():
            db.write_document("/alerts/dev03", b"too hot")
            db.write_document("/alerts/dev11", b"too cold")
            print(f"transaction: this thread sees {len(db.search('/alerts/'))} alerts, "
                  f"the snapshot {len(before.search('/alerts/'))}")
        go.set()
        reader.join()
        log = "/telemetry/dev03"
        db.append_messages(log, (b"t=%d temp=21.5" % i for i in range(10_000)))  # one commit
        db.append_message(log, b"t=10000 temp=22.0")
        tail = [bytes(m) for m in db.messages(log, start=9_999)]
        print(f"message log {log}: {db.info(log).messages:,} messages, "
              f"still version {db.versions(log)}; from #9999: {tail}")
        readings = arrow.Table.from_pydict({
            "device": arrow.array([f"dev{i % 12:02d}" for i in range(100_000)],
                                  arrow.dictionary(arrow.int8(), arrow.utf8())),
            "temp": np.linspace(15.0, 30.0, 100_000)})
        db.put_table("/tables/readings", readings, compression="zstd")
        table = db.get_table("/tables/readings")
        temps = table.column("temp").to_numpy()
        print(f"arrow table: {table.num_rows:,} rows x {table.num_columns} columns "
              f"({db.info('/tables/readings').size:,} bytes of IPC file, zstd), mean temp "
              f"{temps.mean():.2f}, devices {sorted(set(table.column('device').to_pylist()))[:3]}"
              " ...")
        report = db.verify()
        print(f"verify: ok={report.ok}, {report.documents} documents checked")
        db.delete("/frames/latest")
        db.compact()
        db.backup(os.path.join(DATA, "backup.db"))
        print(f"after deleting the array and compacting: {os.path.getsize(DB):,} bytes; "
              f"backup written")
        del view, frame
    encrypted_demo()
    files = ", ".join(sorted(os.listdir(DATA)))
    print(f"files: {files}")


if __name__ == "__main__":
    main()
