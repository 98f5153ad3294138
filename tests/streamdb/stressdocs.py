"""Self-verifying documents for the concurrency stress tests (test_threads, test_processes and
their helper processes).

A document is a header followed by a body:

    MAGIC | generation u64 | body length u64 | SHA-256(path, generation, body) | path length
    u16 | path (UTF-8) | body

The body is a deterministic function of (path, generation), and its size class is named by
the path's last component (`t`iny, `k` ~10 KiB, `h` ~60-120 KiB across the inline limit,
`m` ~1 MiB: several checksum chunks), so anyone can recompute a document from its path and
generation, and any read can be checked on its own: `parse` rejects a torn, mixed, shifted or
misnamed document.

Groups: `/g/<n>/<member>` are written (and deleted) only all together, in one transaction,
all members carrying the generation of that transaction.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable, Mapping

MAGIC = b"SDOC"
_FIXED = struct.Struct("<4sQQ32sH")
HEADER_MAX = _FIXED.size + 128  # every path used here is shorter than 128 bytes

SIZES = {"t": (0, 300), "k": (8_000, 12_000), "h": (60_000, 120_000),
         "m": (900_000, 1_200_000)}

GROUP_MEMBERS = ("t0", "k0", "h0", "t1")
BIG_GROUP_MEMBERS = ("t0", "k0", "h0", "m0")


class BadDocument(AssertionError):
    """A read returned bytes that are not one whole, intact document of that path."""


def group_paths(group: int, big: bool = False) -> list[str]:
    members = BIG_GROUP_MEMBERS if big else GROUP_MEMBERS
    return [f"/g/{group}/{m}" for m in members]


def group_of(path: str) -> str | None:
    """`/g/<n>/` for a group member, else None."""
    if not path.startswith("/g/"):
        return None
    return path[: path.index("/", 3) + 1]


def body_size(path: str, gen: int) -> int:
    low, high = SIZES[path.rsplit("/", 1)[1][0]]
    return random.Random(f"size:{path}:{gen}").randint(low, high)


def _digest(path: bytes, gen: int, body: bytes | memoryview) -> bytes:
    h = hashlib.sha256(path)
    h.update(gen.to_bytes(8, "little"))
    h.update(body)
    return h.digest()


def make(path: str, gen: int) -> bytes:
    """The document `path` holds at generation `gen`. Deterministic."""
    key = path.encode()
    body = random.Random(f"body:{path}:{gen}").randbytes(body_size(path, gen))
    return _FIXED.pack(MAGIC, gen, len(body), _digest(key, gen, body), len(key)) + key + body


def header_gen(path: str, head: bytes) -> int:
    """The generation in the first HEADER_MAX (or fewer) bytes of `path`'s document; checks
    the header only."""
    if len(head) < _FIXED.size:
        raise BadDocument(f"{path}: {len(head)} bytes, shorter than a header")
    magic, gen, _, _, plen = _FIXED.unpack_from(head)
    if magic != MAGIC or head[_FIXED.size : _FIXED.size + plen] != path.encode():
        raise BadDocument(f"{path}: header names {head[_FIXED.size:_FIXED.size + plen]!r}")
    return int(gen)


def parse(path: str, data: bytes | memoryview) -> int:
    """The generation of `data`, after checking it is exactly one whole document of `path`
    (magic, path, length and digest). Raises BadDocument."""
    view = memoryview(data)
    if len(view) < _FIXED.size:
        raise BadDocument(f"{path}: {len(view)} bytes, shorter than a header")
    magic, gen, size, digest, plen = _FIXED.unpack_from(view)
    key = path.encode()
    start = _FIXED.size + plen
    if magic != MAGIC or bytes(view[_FIXED.size:start]) != key:
        raise BadDocument(f"{path}: header names {bytes(view[_FIXED.size:start])!r}")
    if len(view) != start + size:
        raise BadDocument(f"{path} gen {gen}: {len(view)} bytes, header says {start + size}")
    if _digest(key, gen, view[start:]) != digest:
        raise BadDocument(f"{path} gen {gen}: body digest mismatch")
    return int(gen)


def state_digest(mapping: Mapping[str, int]) -> str:
    """A short name for a whole state (path -> generation), to compare states between
    processes."""
    h = hashlib.sha256()
    for path in sorted(mapping):
        h.update(b"%s=%d;" % (path.encode(), mapping[path]))
    return h.hexdigest()[:16]


def check_groups(mapping: Mapping[str, int], members: Mapping[str, Iterable[str]]) -> None:
    """Every group in `mapping` is complete (all of `members[group]`) and at one generation.
    Raises BadDocument."""
    seen: dict[str, dict[str, int]] = {}
    for path, gen in mapping.items():
        group = group_of(path)
        if group is not None:
            seen.setdefault(group, {})[path] = gen
    for group, got in seen.items():
        want = set(members[group])
        if set(got) != want:
            raise BadDocument(f"half group {group}: {sorted(got)} of {sorted(want)}")
        if len(set(got.values())) != 1:
            raise BadDocument(f"group {group} mixes generations {sorted(got.items())}")
