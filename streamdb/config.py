"""`Config`: the options of `streamdb.open`, with the defaults of docs/design.md, section 2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamdb import checks
from streamdb.errors import InvalidArgumentError

KiB = 1 << 10
MiB = 1 << 20
TiB = 1 << 40

Durability = Literal["full", "normal", "off"]


@dataclass(frozen=True, slots=True)
class Config:
    """Options fixed when a database is opened.

    `page_size` is recorded in the file when it is created; opening an existing database
    uses the file's page size. `durability`: "full" fsyncs every commit; "normal" fsyncs the
    log when a commit comes at least a second after the last fsync, and at `flush()`, a
    checkpoint and `close()` (a power loss may lose the commits since the last fsync, never
    consistency); "off" never fsyncs commits (a killed process loses nothing, a power loss
    may lose anything since the last checkpoint).
    """

    page_size: int = 8192
    max_document_size: int = 256 * MiB
    max_db_size: int = 8 * TiB
    page_cache_size: int = 2048
    versions_to_keep: int = 2
    use_mmap: bool = True
    compression: Literal["snappy", "lz4", "zstd"] | None = None
    encryption_key: bytes | None = None
    checksum: Literal["xxh3", "crc32c"] = "xxh3"
    durability: Durability = "full"
    lock_timeout: float = 0.0

    def __post_init__(self) -> None:
        """Check every field (InvalidArgumentError naming it, as for any argument)."""
        for name in ("page_size", "max_document_size", "max_db_size", "page_cache_size",
                     "versions_to_keep"):
            checks.integer(getattr(self, name), name, minimum=-(1 << 63))
        checks.flag(self.use_mmap, "use_mmap")
        size = self.page_size
        if size < 4 * KiB or size > 64 * KiB or size & (size - 1):
            raise InvalidArgumentError(f"page_size must be a power of two, 4 KiB..64 KiB: {size}")
        if not 0 <= self.max_document_size <= 1 << 40:
            raise InvalidArgumentError("max_document_size must be 0..1 TiB")
        if self.max_db_size < 1 * MiB:
            raise InvalidArgumentError("max_db_size must be at least 1 MiB")
        if self.page_cache_size < 0:
            raise InvalidArgumentError("page_cache_size must be >= 0")
        if self.versions_to_keep < 1:
            raise InvalidArgumentError("versions_to_keep must be >= 1")
        checks.choice(self.compression, "compression", (None, "snappy", "lz4", "zstd"))
        key = self.encryption_key
        if key is not None:
            if not isinstance(key, bytes | bytearray | memoryview):
                raise InvalidArgumentError(
                    f"encryption_key must be 32 bytes (AES-256), not {type(key).__name__}")
            if memoryview(key).nbytes != 32:
                raise InvalidArgumentError("encryption_key must be 32 bytes (AES-256)")
            object.__setattr__(self, "encryption_key", bytes(key))
        checks.choice(self.checksum, "checksum", ("xxh3", "crc32c"))
        checks.choice(self.durability, "durability", ("full", "normal", "off"))
        timeout = self.lock_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise InvalidArgumentError(
                f"lock_timeout must be a number of seconds, not {timeout!r:.40}")
        if not timeout >= 0:  # NaN too
            raise InvalidArgumentError("lock_timeout must be >= 0")
