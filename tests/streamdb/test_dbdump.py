"""tools/dbdump.py on real files: each option prints the facts it promises, a damaged file is
reported rather than crashing the tool, and no file is ever changed, created or removed."""

from __future__ import annotations

import hashlib
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamdb
from streamdb import Config

TOOLS_DIR = Path(__file__).resolve().parents[2] / "tools"
if str(TOOLS_DIR) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR))

import dbdump  # noqa: E402


def _fingerprint(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[Path, dict[str, uuid.UUID]]]:
    """A closed database (page size 4096): a 300 KB document with an alias, an empty one
    deleted, a small one overwritten (two versions kept), a 70 KB one; two checkpoints."""
    path = tmp_path / "ex.db"
    ids: dict[str, uuid.UUID] = {}
    with streamdb.open(path, Config(page_size=4096)) as db:
        ids["big"] = db.write_document("/docs/a.bin", b"A" * 300_000)
        db.write_document("/docs/empty", b"")
        ids["note"] = db.write_document("/notes/n1.txt", b"hello world")
        db.checkpoint()
        db.write_document("/notes/n1.txt", b"hello again" * 10)
        db.bind_to_path(ids["big"], "/alias/a")
        ids["x"] = db.write_document("/tmp/x", b"x" * 70_000)
        db.delete("/docs/empty")
    yield path, ids


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = dbdump.main(list(args))
    return code, capsys.readouterr().out


def test_each_option_prints_its_facts_and_changes_nothing(
    example: tuple[Path, dict[str, uuid.UUID]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = example
    before = _fingerprint(path.parent)

    code, out = run(capsys, str(path))
    assert code == 0, out
    for fact in ("header A (offset 0): ok", "header B (offset 4096): ok", "CURRENT",
                 "generation 3", "page size 4096", "checkpoint LSN", "trees (as of checkpoint",
                 "paths  4 entries, height 1", "docs   3 entries", "log summary:", "problems: 0"):
        assert fact in out, fact
    assert "paths:" not in out and "page map:" not in out  # only with their options

    code, out = run(capsys, str(path), "--records")
    assert code == 0
    for fact in ("'/alias/a' -> " + str(ids["big"]), "'/docs/a.bin'", "'/tmp/x'",
                 f"{ids['big']}: 1 version(s), paths '/alias/a', '/docs/a.bin'",
                 f"{ids['note']}: 2 version(s)", "size 300000", "xxh3 x 2 (chunk 262144)",
                 "extents 2+74", "inline (110 bytes)", "inline (11 bytes)", "size 70000"):
        assert fact in out, fact
    assert "/docs/empty" not in out

    code, out = run(capsys, str(path), "--free")
    assert code == 0
    assert "free extents (first page + count):" in out
    assert "free pages" in out and "largest" in out

    code, out = run(capsys, str(path), "--pages")
    assert code == 0
    assert "page map:" in out and "2-75  doc /alias/a v1" in out
    assert "paths tree leaf" in out and "leaf pages:" in out

    root = next(int(line.split("root ")[1].split(",")[0]) for line in out.splitlines()
                if line.startswith("  paths  root"))
    code, out = run(capsys, str(path), "--page", str(root))
    assert code == 0
    assert f"page {root} (offset {root * 4096}, 4096 bytes)" in out
    assert "tree page: format 2, kind paths, leaf" in out and "checksum ok" in out
    assert "'/docs/a.bin': 16-byte value" in out
    assert "  000000  42 54 02 01 01 00" in out  # "BT", version 2, kind paths, leaf

    code, out = run(capsys, str(path), "--records", "--free", "--pages", "--page", "5")
    assert code == 0 and "belongs to: doc /alias/a v1" in out
    assert _fingerprint(path.parent) == before


def test_log_records_after_the_checkpoint(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Files copied while the database is open (what a crash leaves): the log holds the
    commits since the checkpoint, and dbdump lists them as operations to replay."""
    live, image = tmp_path / "live", tmp_path / "image"
    live.mkdir()
    image.mkdir()
    with streamdb.open(live / "t.db", Config(page_size=4096)) as db:
        doc = db.write_document("/a", b"first")
        db.checkpoint()
        db.write_document("/a", b"second")
        db.bind_to_path(doc, "/b")
        db.delete("/b")
        for name in (p.name for p in live.iterdir()):
            shutil.copy(live / name, image / name)
    before = _fingerprint(image)
    code, out = run(capsys, str(image / "t.db"), "--records")
    assert code == 0, out
    assert "(to replay): VERSION doc " + str(doc) in out
    assert "(to replay): BIND doc " in out and "path '/b'" in out
    assert "(to replay): UNBIND path '/b'" in out
    assert "3 data record(s) after the checkpoint LSN" in out
    assert "header: live, sequence" in out
    assert _fingerprint(image) == before


def test_damage_is_reported_not_raised(example: tuple[Path, dict[str, uuid.UUID]],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = example
    data = bytearray(path.read_bytes())
    _, out = run(capsys, str(path), "--pages")
    leaf = next(int(line.split()[0]) for line in out.splitlines()
                if line.strip().endswith("docs tree leaf"))
    data[leaf * 4096 + 200] ^= 0x01
    path.write_bytes(bytes(data))
    before = _fingerprint(path.parent)
    code, out = run(capsys, str(path), "--records", "--free", "--pages", "--page", str(leaf))
    assert code == 1
    assert "error (docs tree): ChecksumMismatch: page checksum mismatch" in out
    assert "checksum BAD" in out
    assert "log summary:" in out  # later sections still ran
    assert _fingerprint(path.parent) == before

    path.write_bytes(bytes(data[: 3 * 4096 + 100]))  # truncated: trees past the end
    code, out = run(capsys, str(path), "--records", "--free", "--pages")
    assert code == 1 and "the header counts more pages than the file holds" in out

    path.write_bytes(b"SQLite format 3\0" + bytes(9000))
    code, out = run(capsys, str(path), "--page", "1")
    assert code == 1 and "no StreamDB magic" in out and "no usable header copy" in out

    code, out = run(capsys, str(path.parent / "missing.db"))
    assert code == 2
    assert {name for name in _fingerprint(path.parent)} == set(before)  # nothing created


def test_message_logs_show_their_checksum_count_and_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "logs.db"
    with streamdb.open(path, Config(encryption_key=bytes(range(32)))) as db:
        db.append_messages("/log", [b"a" * 3000] * 200, checksum="crc16")
        db.append_message("/log", b"x", checksum="crc16")
    code, out = run(capsys, str(path), "--records")
    assert code == 0, out
    assert "message log (crc16, 201 messages)" in out
    assert "encrypted under 2 append key(s)" in out and "(chunk 262128)" in out
