"""The read API, shared by `Database` (each call reads the latest committed state) and
`Snapshot` (every call reads the state it pinned when it was taken).

Each call pins one `State` for its duration (`_enter`/`_leave`), so it sees one consistent
committed state, never waits for the writer, and the pages it reads are not reused under
it. A stream pins its state until it is exhausted or closed; a zero-copy view pins it until
the last reference to the view is gone.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, cast

import numpy as np

from streamdb import checks
from streamdb import errors as E
from streamdb.engine import Engine, State
from streamdb.errmap import io_error
from streamdb.logs import read_messages
from streamdb.paths import path_key, search_key
from streamdb.storage.docio import CHUNK
from streamdb.storage.header import CHECKSUM_XXH3
from streamdb.storage.records import ARROW_STREAM, DocRecord, Version
from streamdb.storage.transform import CODEC_NAMES

if TYPE_CHECKING:
    from streamdb import arrow


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    path: str
    doc_id: uuid.UUID
    version: int
    size: int
    created: float
    modified: float
    codec: str | None
    checksum: str
    paths: tuple[str, ...]
    stored_size: int  # bytes on disk: less than size when compressed, more when encrypted
    encrypted: bool
    messages: int | None  # a message log's message count (None: a plain document)


def text(key: bytes) -> str:
    """A stored path key as text; keys are written as valid UTF-8, so anything else is
    damage."""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise E.CorruptionError(f"a stored path is not UTF-8: {key[:80]!r}") from exc


def doc_at(state: State, path: str) -> DocRecord:
    doc_id = state.catalog.lookup(path_key(path), state.lsn)
    doc = state.catalog.doc(doc_id, state.lsn) if doc_id is not None else None
    if doc is None:
        raise E.NotFoundError(f"no document at {path!r}")
    return doc


def version_at(state: State, path: str, version: int | None) -> Version:
    doc = doc_at(state, path)
    if version is None:
        return doc.latest
    for v in doc.versions:
        if v.version == version:
            return v
    raise E.NotFoundError(f"{path!r} has no version {version} (kept: "
                          f"{[v.version for v in doc.versions]})")


class ReadMethods(ABC):
    """The read methods; subclasses say which state a call reads (`_enter`/`_leave`)."""

    _engine: Engine

    @abstractmethod
    def _enter(self) -> State:
        """Pin the state this call reads, and count the call in flight."""

    @abstractmethod
    def _leave(self, state: State) -> None:
        """Undo `_enter`."""

    def _hold(self, state: State) -> State:
        """Pin `state` beyond this call (a stream's or a view's lifetime)."""
        return self._engine.hold(state)

    def get(self, path: str, version: int | None = None, offset: int = 0,
            length: int | None = None) -> bytes:
        """The bytes of the latest (or the given kept) version, or of a range of it.

        O(length); every chunk touched is verified (unless quick mode). Raises
        NotFoundError, InvalidArgumentError, ChecksumMismatch naming the path and offset.
        """
        if version is not None or length is not None or type(offset) is not int or offset:
            version = checks.optional_integer(version, "version", minimum=1)
            offset = checks.integer(offset, "offset")
            length = checks.optional_integer(length, "length")
        state = self._enter()
        try:
            v = version_at(state, path, version)
            return self._engine.read(state, path, v, offset,
                                  v.size - offset if length is None else length)
        finally:
            self._leave(state)

    def get_view(self, path: str) -> memoryview:
        """The latest version as a read-only memoryview: zero-copy over the memory map when
        the document is stored uncompressed in one extent, a copy otherwise.

        Lifetime: the view's bytes never change. Its pages are not reused while any
        reference to it (or to a slice, or to a numpy array made from it) lives, even
        after later writes, a checkpoint or `close()`. Memory maps stay alive as long.
        """
        state = self._enter()
        try:
            v = version_at(state, path, None)
            try:
                view = self._engine.counted_reader(state, path, v).view()
            except OSError as exc:
                raise io_error(exc, f"reading {path!r}") from exc
            if view is None:
                return memoryview(self._engine.read(state, path, v, 0, v.size)).toreadonly()
            # The view's exporter is a numpy array we can watch: when the last view of it
            # dies, so does the array, and its finaliser lets the pages go.
            holder = np.frombuffer(view.toreadonly(), dtype=np.uint8)
            weakref.finalize(holder, self._engine.let_go_later, self._hold(state))
            return holder.data
        finally:
            self._leave(state)

    def get_table(self, path: str, *, validate: bool = True) -> arrow.Table:
        """The Arrow table stored at `path` (by `put_table`, or any Arrow IPC file or
        stream). Zero-copy over the memory map when the document is stored uncompressed
        and unencrypted in one extent (its chunks verified first, unless quick mode);
        otherwise read into memory. Raises as `get_view`, and ArrowFormatError (naming the
        path) for bytes that are not Arrow IPC."""
        from streamdb import arrow

        validate = checks.flag(validate, "validate")
        view = self.get_view(path)
        try:
            return arrow.read_ipc(view, validate=validate)
        except E.ArrowFormatError as exc:
            raise E.ArrowFormatError(f"{path!r} does not hold an Arrow table: {exc}",
                                     path=path) from exc

    def get_stream(self, path: str, chunk_size: int | None = None) -> Iterator[bytes]:
        """The latest version as an iterator of `bytes` chunks (256 KiB by default), each
        verified as it is read and valid after `next()`. Memory O(chunk). The version is
        fixed when the iterator is created; its pages stay readable until the iterator is
        exhausted, closed or collected. Raises ClosedError from `next()` once the database
        is closed."""
        chunk_size = checks.optional_integer(chunk_size, "chunk_size", minimum=1)
        held, v = self._hold_latest(path)
        return self._stream(held, path, v, chunk_size or v.chunk_size or CHUNK)

    def _hold_latest(self, path: str) -> tuple[State, Version]:
        """The latest version of `path` and its state, pinned for the caller to release."""
        state = self._enter()
        try:
            v = version_at(state, path, None)  # before the pin: it may raise
            return self._hold(state), v
        finally:
            self._leave(state)

    def _stream(self, state: State, path: str, v: Version, step: int) -> Iterator[bytes]:
        engine = self._engine
        try:
            reader = engine.doc_reader(state, path, v)
            for offset in range(0, v.size, step):
                engine.op_begin()
                try:
                    data = engine.read(state, path, v, offset, step, reader)
                finally:
                    engine.op_end()
                yield data
        finally:
            engine.let_go_later(state)  # may run in the garbage collector

    def messages(self, path: str, start: int = 0) -> Iterator[memoryview]:
        """The messages of the log at `path` from index `start`, each verified against
        the log's checksum, as read-only memoryviews that stay valid. The log is read as
        it is when the iterator is created (appends after that are not seen). Memory
        O(256 KiB). Raises NotFoundError, InvalidArgumentError (not a message log),
        ChecksumMismatch and CorruptionError naming the path."""
        start = checks.integer(start, "start")
        held, v = self._hold_latest(path)
        if v.log is None or v.log.framing == ARROW_STREAM:
            self._engine.let_go_later(held)
            if v.log is None:
                raise E.InvalidArgumentError(f"{path!r} is a document, not a message log")
            raise E.InvalidArgumentError(
                f"{path!r} holds an Arrow stream, not a message log: read it with get_table")
        return self._messages(held, path, v, start)

    def _messages(self, state: State, path: str, v: Version, start: int) -> Iterator[memoryview]:
        try:
            yield from read_messages(self._engine, state, path, v, start)
        finally:
            self._engine.let_go_later(state)

    async def get_async(self, path: str) -> bytes:
        """`get` on a worker thread, so the event loop is not blocked."""
        return await asyncio.to_thread(self.get, path)

    def info(self, path: str) -> DocumentInfo:
        """Size, version, id, times, codec, checksum and paths of the latest version."""
        state = self._enter()
        try:
            doc = doc_at(state, path)
            v = doc.latest
            return DocumentInfo(
                path, doc.doc_id, v.version, v.size, v.created, v.modified,
                CODEC_NAMES.get(v.codec),
                "xxh3" if v.checksum == CHECKSUM_XXH3 else "crc32c",
                tuple(text(p) for p in doc.paths),
                v.stored,
                v.encrypted,
                v.log.count if v.log is not None and v.log.framing != ARROW_STREAM else None,
            )
        finally:
            self._leave(state)

    def versions(self, path: str) -> list[int]:
        """Kept version numbers, oldest first."""
        state = self._enter()
        try:
            return sorted(v.version for v in doc_at(state, path).versions)
        finally:
            self._leave(state)

    def search(self, prefix: str) -> list[str]:
        """Every path starting with `prefix`, sorted. O(log n + k)."""
        key = search_key(prefix, "prefix")
        state = self._enter()
        try:
            return state.catalog.search_paths(key, state.lsn)
        finally:
            self._leave(state)

    def search_suffix(self, suffix: str) -> list[str]:
        """Every path ending with `suffix`, sorted. O(log n + k log k)."""
        key = search_key(suffix, "suffix")
        state = self._enter()
        try:
            return state.catalog.search_suffix(key, state.lsn)
        finally:
            self._leave(state)

    def exists(self, path: str) -> bool:
        key = path_key(path)
        state = self._enter()
        try:
            return state.catalog.lookup(key, state.lsn) is not None
        finally:
            self._leave(state)

    def __contains__(self, path: object) -> bool:
        try:
            return self.exists(cast(str, path))
        except E.InvalidPathError:
            return False

    def __len__(self) -> int:
        state = self._enter()
        try:
            return state.catalog.count(state.lsn)
        finally:
            self._leave(state)

    def __iter__(self) -> Iterator[str]:
        """Paths in sorted order, as of when iteration starts."""
        return iter(self.search("/"))

    def get_id_by_path(self, path: str) -> uuid.UUID:
        state = self._enter()
        try:
            return doc_at(state, path).doc_id
        finally:
            self._leave(state)

    def list_paths(self, doc_id: uuid.UUID) -> list[str]:
        """The paths naming a document (the id -> paths lookup). O(log n)."""
        doc_id = checks.doc_id(doc_id)
        state = self._enter()
        try:
            doc = state.catalog.doc(doc_id.bytes, state.lsn)
            if doc is None:
                raise E.NotFoundError(f"no document {doc_id}")
            return [text(p) for p in doc.paths]
        finally:
            self._leave(state)


class Snapshot(ReadMethods):
    """A read-only view of one committed state, unaffected by later writes, deletes, `gc()`
    and `compact()`: the pages it can see are not reused until it is closed. Taking one is
    O(1). Use it as a context manager (or call `close()`); it may be shared by threads.

    Raises ClosedError once it, or its database, is closed.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._state: State | None = engine.hold()

    @property
    def lsn(self) -> int:
        """The LSN of the last commit this snapshot sees."""
        return self._live().lsn

    def _live(self) -> State:
        state = self._state
        if state is None:
            raise E.ClosedError("the snapshot is closed")
        return state

    def _enter(self) -> State:
        # A pin of its own per call: a close() from another thread mid-read cannot let
        # the pages go under it.
        return self._engine.pin(self._live())

    def _leave(self, state: State) -> None:
        self._engine.unpin(state)

    def close(self) -> None:
        """Release the state (its pages may be reused after this). Idempotent."""
        state, self._state = self._state, None
        if state is not None:
            self._engine.let_go(state)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._engine.let_go_later(state)

    def __repr__(self) -> str:
        where = "closed" if self._state is None else f"lsn={self._state.lsn}"
        return f"<streamdb.Snapshot of {self._engine.path!r} {where}>"
