"""The B+tree's page format: constants, header layout, limits and the tree reference,
shared by the page codec (`btree_pages`), `build` and `Tree` (`btree`) and `update`
(`btree_update`) (docs/format/btree.md; the rules are numbered in `streamdb.storage.btree`).

The underscore names are private to the B+tree: these modules are one concept split in
files for size.
"""

from __future__ import annotations

import enum
import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Final, Protocol

import xxhash

from streamdb.errors import (
    CorruptionError,
    InvalidArgumentError,
    UnsupportedError,
)

# ------------------------------------------------------------------------------------------
# Format constants, shared by the writer and the reader (docs/format/btree.md)
# ------------------------------------------------------------------------------------------

MAGIC: Final = b"BT"
#: The version this code writes, in page headers and tree references. Version 1 (trees
#: written before copy-on-write updates) is still read, and such trees can be updated: the
#: pages an update writes are version 2, the pages it shares stay version 1.
FORMAT_VERSION: Final = 2
READ_VERSIONS: Final = (1, 2)
HEADER_SIZE: Final = 64
MAX_KEY_SIZE: Final = 2048
MAX_VALUE_SIZE: Final = 64 << 20
MAX_HEIGHT: Final = 32
MIN_PAGE_SIZE: Final = 4096
MAX_PAGE_SIZE: Final = 65536
MAX_TREE_ID: Final = 0xFFFF_FFFF
#: In-page offsets are u16, so on 64 KiB pages the last byte stays unused.
OFFSET_LIMIT: Final = 0xFFFF
#: Leaf entry flag: the value slot holds an overflow reference (length, first page, and in
#: version 2 the write id of the chain).
FLAG_OVERFLOW: Final = 0x01


class PageType(enum.IntEnum):
    """Byte 4 of every page header."""

    LEAF = 1
    INTERNAL = 2
    OVERFLOW = 3


_LEAF: Final = 1
_INTERNAL: Final = 2
_OVERFLOW: Final = 3

# magic, version, kind, type, level, flags, count, tree id, page number, checksum,
# next page, value offset, value length, reserved
_HEADER: Final = struct.Struct("<2sBBBBHIIQQQQQQ")
_CHECKSUM_AT: Final = 24
_ZERO8: Final = bytes(8)
_SLOT_V1: Final = struct.Struct("<QQ")  # overflow reference: value length, first page
_SLOT: Final = struct.Struct("<QQI")  # version 2: value length, first page, chain's write id
_REF: Final = struct.Struct("<QQIBBH")  # root, count, tree id, height, version, reserved
_BIG_ENDIAN: Final = sys.byteorder == "big"
#: A cached page is searched over its offsets this many times before its key list is built:
#: building costs about as much as 8 such searches, and a page that leaves the cache sooner
#: would waste it (measured on 8 KiB internal pages of ~300 separators).
_SEARCHES_BEFORE_KEY_LIST: Final = 8
#: Overflow pages go to the store in writes of about this many bytes (bounds the buffer).
_OVERFLOW_BATCH: Final = 1 << 20

assert _HEADER.size == HEADER_SIZE and _REF.size == 24


def inline_limit(page_size: int) -> int:
    """The longest value stored inside a leaf; longer ones go to overflow pages."""
    return page_size // 4


def overflow_capacity(page_size: int) -> int:
    """Value bytes held by one overflow page."""
    return page_size - HEADER_SIZE


def _leaf_start(n: int) -> int:
    """First key byte of a leaf of n entries: header, 2n+1 u16 offsets, n flag bytes."""
    return HEADER_SIZE + 2 * (2 * n + 1) + n


def _internal_start(n: int, version: int = FORMAT_VERSION) -> int:
    """First separator byte of an internal page of n children: header, n u64 children,
    (version 2) n u32 write ids, n u16 offsets."""
    return HEADER_SIZE + (14 if version >= 2 else 10) * n


def _from_le(typecode: str, data: bytes) -> array[int]:
    a = array(typecode)
    a.frombytes(data)
    if _BIG_ENDIAN:
        a.byteswap()
    return a


def _to_le(a: array[int]) -> bytes:
    if _BIG_ENDIAN:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _page_checksum(page: bytes | bytearray | memoryview) -> int:
    """XXH3-64 of a whole page with its checksum field (bytes 24..31) taken as zero."""
    mv = memoryview(page)
    h = xxhash.xxh3_64(mv[:_CHECKSUM_AT])
    h.update(_ZERO8)
    h.update(mv[_CHECKSUM_AT + 8 :])
    return h.intdigest()


def _check_page_size(page_size: object) -> int:
    if (
        not isinstance(page_size, int)
        or not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE
        or page_size & (page_size - 1)
    ):
        raise InvalidArgumentError(
            f"page_size must be a power of two in {MIN_PAGE_SIZE}..{MAX_PAGE_SIZE}: {page_size!r}"
        )
    return page_size


def _check_kind(kind: object) -> int:
    if not isinstance(kind, int) or not 0 <= kind <= 0xFF:
        raise InvalidArgumentError(f"kind must be an int in 0..255: {kind!r}")
    return kind


def _coerce(obj: object, what: str) -> bytes:
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    raise InvalidArgumentError(f"{what} must be bytes, not {type(obj).__name__}")


# ------------------------------------------------------------------------------------------
# Public types
# ------------------------------------------------------------------------------------------


class PageStore(Protocol):
    """The pager seam: fixed-size pages addressed by number. Page 0 is never a tree page."""

    page_size: int  # a power of two, 4096..65536

    def read_page(self, page_no: int) -> bytes | memoryview:
        """Exactly `page_size` bytes of page `page_no` (1 <= page_no < page_count())."""
        ...

    def allocate(self, n_pages: int) -> int:
        """First page number (>= 1) of `n_pages` contiguous free pages."""
        ...

    def write_pages(self, page_no: int, data: bytes | bytearray | memoryview) -> None:
        """Write `data` (a multiple of page_size bytes) from page `page_no` on."""
        ...

    def page_count(self) -> int:
        """Pages the file holds: a page number at or above it lies outside the file."""
        ...


@dataclass(frozen=True, slots=True)
class TreeRef:
    """Where a tree lives: what the database keeps in its header (24 bytes packed).

    `tree_id` is the write id of the root page: the random non-zero number of the `build` or
    `update` that wrote it, which that page carries in its header, so that a stale page at
    a reused page number is refused (rule 1 of `streamdb.storage.btree`). Pages an update
    shares with older trees keep their own write ids; each parent names its children's.
    The empty tree is all zero. Raises InvalidArgumentError for inconsistent fields.
    """

    root: int  # 0 = empty tree
    height: int  # 0 for the empty tree, 1 when the root is a leaf
    count: int  # number of entries
    tree_id: int  # the root page's write id, 1..2**32-1; 0 for the empty tree

    def __post_init__(self) -> None:
        in_range = (
            0 <= self.root < 1 << 64
            and 0 <= self.count < 1 << 64
            and 0 <= self.height <= MAX_HEIGHT
            and 0 <= self.tree_id <= MAX_TREE_ID
        )
        zero = (self.root == 0, self.height == 0, self.count == 0, self.tree_id == 0)
        if not in_range or any(zero) != all(zero) or (self.height > 1 and self.count < 2):
            raise InvalidArgumentError(f"inconsistent tree reference {self!r}")

    def pack(self) -> bytes:
        """The 24-byte little-endian form (docs/format/btree.md). O(1)."""
        return _REF.pack(self.root, self.count, self.tree_id, self.height, FORMAT_VERSION, 0)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> TreeRef:
        """Parse `pack()`'s output (or a version 1 reference); 24 zero bytes are the empty
        tree too. O(1).

        Raises CorruptionError for a wrong length, non-zero reserved bytes or inconsistent
        fields, UnsupportedError for a format version other than 1 or 2.
        """
        if len(data) != _REF.size:
            raise CorruptionError(f"tree reference is {len(data)} bytes, not {_REF.size}")
        root, count, tree_id, height, version, reserved = _REF.unpack(data)
        if not any(bytes(data)):
            return EMPTY
        if version not in READ_VERSIONS:
            raise UnsupportedError(f"B-tree format version {version} is not supported")
        if reserved:
            raise CorruptionError("tree reference has non-zero reserved bytes")
        try:
            return cls(root, height, count, tree_id)
        except InvalidArgumentError as exc:
            raise CorruptionError(str(exc)) from exc


EMPTY: Final = TreeRef(0, 0, 0, 0)
