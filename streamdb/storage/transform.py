"""Value transforms: per-chunk compression and AES-256-GCM encryption.

A transformed version is stored as its logical chunks (`chunk_size` bytes each, the last
shorter), each compressed (unless that does not shrink it: then stored RAW), then sealed,
back to back; the version record's chunk table gives each stored length.

Keys (byte layout in docs/format/db.md, "Encryption"):
- the database key check: HKDF-SHA256(key, salt=header salt, info="streamdb key check" |
  database id), 32 bytes, compared in constant time at open;
- one subkey per version: HKDF-SHA256(key, salt=the version's random 16-byte salt,
  info="streamdb chunk key" | database id | document id | version), so a nonce is unique
  per subkey as long as chunk index and seal are (a rewritten version number, after a
  rollback or a crash, still gets a fresh salt and so a fresh key);
- nonce: chunk index u32 | seal u32 | 0 u32 (seal counts re-encryptions by appends);
- associated data: "SDB1" | database id | document id | version u32 | chunk index u32 |
  codec u8 | chunk flags u8 | final u8, and for the final chunk also the chunk count u32
  and the document size u64. Chunks therefore cannot be swapped, moved to another
  document or version, flagged differently, or truncated away (the new last chunk was not
  sealed as final), and the size and count cannot be changed.

Decoding is bounded: the caller passes the logical length a chunk must have; a codec frame
that declares or produces anything else is a CorruptionError, before any allocation sized
by it.

Errors: CorruptionError for undecodable frames, AuthenticationError (an EncryptionError
and a CorruptionError) for a chunk that fails authentication.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
import uuid
from collections import OrderedDict

import lz4.block
import snappy
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from streamdb import errors as E
from streamdb.storage.records import SALT_SIZE

CODEC_NONE = 0
CODECS = {"snappy": 1, "lz4": 2, "zstd": 3}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
TAG = 16  # bytes a sealed chunk gains
SCHEME_AES256_GCM = 1  # header key check scheme: AES-256-GCM chunks, HKDF-SHA256 keys
KEY_CHECK_SIZE = 64  # header bytes 184..247: scheme u8, 15 reserved, salt 16, check 32
ZSTD_LEVEL = 3

_zstd_local = threading.local()  # zstandard (de)compressor objects are not thread-safe


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_zstd_local, "pair", None)
    if pair is None:
        pair = _zstd_local.pair = (
            zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True),
            zstandard.ZstdDecompressor(),
        )
    return pair


def compress(codec: int, data: bytes | memoryview) -> bytes:
    """`data` compressed with `codec`. O(len(data))."""
    if codec == 1:
        return snappy.compress(data)  # type: ignore[no-any-return]
    if codec == 2:
        return lz4.block.compress(data, store_size=False)  # type: ignore[no-any-return]
    if codec == 3:
        return _zstd()[0].compress(data)
    raise E.InvalidArgumentError(f"unknown codec {codec}")


def _snappy_length(data: bytes | memoryview) -> int:
    """The uncompressed length a raw snappy block declares (its varint preamble)."""
    value = shift = 0
    for i in range(min(5, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    return -1


def decompress(codec: int, data: bytes | memoryview, expected: int) -> bytes:
    """`data` decompressed, which must give exactly `expected` bytes. Never allocates more
    than `expected` (plus the codec's constant overhead). Raises CorruptionError."""
    try:
        if codec == 1:
            if _snappy_length(data) != expected:
                raise E.CorruptionError("a snappy chunk declares the wrong length")
            out = snappy.uncompress(data)
        elif codec == 2:
            out = lz4.block.decompress(data, uncompressed_size=expected)
        elif codec == 3:
            if zstandard.frame_content_size(data) != expected:
                raise E.CorruptionError("a zstd chunk declares the wrong length")
            out = _zstd()[1].decompress(data, max_output_size=expected)
        else:
            raise E.CorruptionError(f"unknown codec {codec}")
    except E.CorruptionError:
        raise
    except Exception as exc:  # each codec has its own error types: all mean a bad frame
        raise E.CorruptionError(f"a compressed chunk does not decode: {exc}") from exc
    if len(out) != expected:
        raise E.CorruptionError(f"a compressed chunk decodes to {len(out)} bytes, not {expected}")
    return out  # type: ignore[no-any-return]


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(key)


def key_check(key: bytes, db_id: uuid.UUID, salt: bytes | None = None) -> bytes:
    """The header's 64 key-check bytes for `key` (a fresh salt unless one is given)."""
    salt = os.urandom(16) if salt is None else salt
    check = _hkdf(key, salt, b"streamdb key check" + db_id.bytes)
    return bytes([SCHEME_AES256_GCM]) + bytes(15) + salt + check


def open_cipher(key: bytes | None, db_id: uuid.UUID, stored: bytes | None,
                where: str) -> Cipher | None:
    """The cipher for a database whose header holds key check `stored` (None: not
    encrypted). Raises EncryptionError for a missing key or a key on a database that is
    not encrypted, WrongKeyError for the wrong key, UnsupportedError for an unknown scheme.
    """
    if stored is None:
        if key is not None:
            raise E.EncryptionError(
                f"{where} is not encrypted: open it without an encryption_key "
                f"(an existing database cannot be encrypted in place)")
        return None
    if key is None:
        raise E.EncryptionError(f"{where} is encrypted: open it with its encryption_key")
    if stored[0] != SCHEME_AES256_GCM:
        raise E.UnsupportedError(f"{where} uses encryption scheme {stored[0]}, unknown here")
    if not hmac.compare_digest(key_check(key, db_id, stored[16:32]), stored):
        raise E.WrongKeyError(f"the encryption_key does not open {where}")
    return Cipher(key, db_id)


_AAD = struct.Struct("<4s16s16sIIBBB")
_FINAL = struct.Struct("<IQ")


class Cipher:
    """AES-256-GCM for one database's chunks. Thread-safe; keeps the subkeys of the last
    `cached` versions used (deriving one costs a few microseconds)."""

    def __init__(self, key: bytes, db_id: uuid.UUID, cached: int = 256) -> None:
        self._key = key
        self.db_id = db_id
        self._keys: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._cached = cached
        self._lock = threading.Lock()

    @staticmethod
    def new_salt() -> bytes:
        return os.urandom(SALT_SIZE)

    def version_key(self, doc: bytes, version: int, salt: bytes) -> AESGCM:
        lookup = salt + doc + version.to_bytes(4, "little")
        with self._lock:
            aead = self._keys.get(lookup)
            if aead is not None:
                self._keys.move_to_end(lookup)
                return aead
        info = b"streamdb chunk key" + self.db_id.bytes + doc + version.to_bytes(4, "little")
        aead = AESGCM(_hkdf(self._key, salt, info))
        with self._lock:
            self._keys[lookup] = aead
            if len(self._keys) > self._cached:
                self._keys.popitem(last=False)
        return aead

    def associated(self, doc: bytes, version: int, index: int, codec: int, flags: int,
                   final: tuple[int, int] | None) -> bytes:
        """The associated data of chunk `index`; `final` is (chunk count, size) for the
        last chunk."""
        head = _AAD.pack(b"SDB1", self.db_id.bytes, doc, version, index, codec, flags,
                         final is not None)
        return head + _FINAL.pack(*final) if final is not None else head

    @staticmethod
    def nonce(index: int, seal: int) -> bytes:
        return struct.pack("<III", index, seal, 0)

    def open(self, aead: AESGCM, sealed: bytes | memoryview, index: int, seal: int,
             aad: bytes) -> bytes:
        """The plaintext of a sealed chunk; raises InvalidTag when it fails."""
        return aead.decrypt(self.nonce(index, seal), sealed, aad)


__all__ = ["AESGCM", "CODECS", "CODEC_NAMES", "Cipher", "InvalidTag", "compress",
           "decompress", "key_check", "open_cipher"]
