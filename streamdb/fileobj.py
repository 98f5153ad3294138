"""File objects over documents: `db.open(path, "rb")` and `db.open(path, "wb")`."""

from __future__ import annotations

import io
import tempfile
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamdb.engine.pins import State
from streamdb.errors import InvalidArgumentError
from streamdb.storage.docio import as_bytes
from streamdb.storage.records import Version

if TYPE_CHECKING:
    from streamdb.database import Database


class DocumentReader(io.RawIOBase):
    """A seekable, read-only view of one version. Reads verify the chunks they touch.
    Wrap in io.BufferedReader for many small reads. The version's pages stay readable
    until it is closed (or collected); reads raise ClosedError once the database is."""

    def __init__(self, db: Database, state: State, version: Version, path: str) -> None:
        super().__init__()
        self._db = db
        self._state: State | None = state  # pinned for us by Database.open
        self._path = path
        self._version = version
        self._pos = 0
        self.name = path

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._version.size}
        if whence not in base:
            raise InvalidArgumentError(f"bad whence {whence}")
        pos = base[whence] + offset
        if pos < 0:
            raise InvalidArgumentError("negative seek position")
        self._pos = pos
        return pos

    def _pread(self, length: int) -> bytes:
        if self._state is None:
            raise ValueError("read from a closed document reader")
        engine = self._db._engine
        engine.op_begin()
        try:
            data = engine.read(self._state, self._path, self._version, self._pos, length)
        finally:
            engine.op_end()
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._pread(len(view))
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self._pread(max(0, self._version.size - self._pos))

    def close(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            self._db._engine.let_go(state)
        super().close()

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state is not None:
            self._db._engine.let_go_later(state)


class DocumentWriter(io.RawIOBase):
    """Collects bytes (in memory up to 1 MiB, then in a temporary file) and writes them as
    a new version of the document when `close()` is called or a `with` block ends
    normally. Leaving a `with` block by an exception discards them, and so does a writer
    that is never closed: one the garbage collector finds (dropped, or left behind by an
    exception) commits nothing."""

    def __init__(self, db: Database, path: str) -> None:
        super().__init__()
        self._db = db
        self._path = path
        # Closed in close(); the writer's lifetime is not a with-block of ours.
        self._spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115
        self._discard = False
        self.name = path

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Append the bytes of `data` (any C-contiguous buffer). Returns their count.
        Raises InvalidArgumentError for a str or anything else that is not bytes-like,
        ValueError once closed (as io does)."""
        if self.closed:
            raise ValueError("write to a closed document writer")
        return self._spool.write(as_bytes(data, "data written to a document"))

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._discard:
                self._spool.seek(0)
                self._db.write_document(self._path, self._spool)
        finally:
            self._spool.close()
            super().close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._discard = exc_type is not None
        self.close()

    def __del__(self) -> None:
        # Never closed: abandoned (or its close raised). Commit nothing.
        self._discard = True
        if not getattr(self, "_spool", None) or self.closed:
            return
        self._spool.close()
        io.RawIOBase.close(self)
