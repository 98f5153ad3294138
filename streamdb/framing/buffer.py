"""`InputBuffer`: the resumable input of the sans-IO decoders (frames, TLV).

Bytes are fed in pieces of any size; a decoder asks for `ensure(n)` contiguous bytes at the
read position and then `consume`s them. Pieces are joined only when a frame needs bytes
from several, and only once enough have arrived, so feeding a frame byte by byte costs
O(frame), not O(frame^2). Views handed out stay valid: a buffer that a view may point into
is never resized or overwritten; joining makes a new one.
"""

from __future__ import annotations

from streamdb.errors import UnexpectedEof


class InputBuffer:
    __slots__ = ("_extra", "_parts", "base", "pos", "view")

    def __init__(self) -> None:
        self.view = memoryview(b"")
        self.pos = 0  # read position in `view`
        self.base = 0  # stream offset of view[0]
        self._parts: list[bytes] = []  # fed after `view`, not joined yet
        self._extra = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes at the end. Copies only a mutable `data` (the caller may reuse it)."""
        piece = data if isinstance(data, bytes) else bytes(data)
        if not piece:
            return
        if self.pos == len(self.view) and not self._parts:
            self.base += self.pos
            self.view, self.pos = memoryview(piece), 0
            return
        self._parts.append(piece)
        self._extra += len(piece)

    def available(self) -> int:
        return len(self.view) - self.pos + self._extra

    def ensure(self, n: int) -> bool:
        """True when `n` bytes from `pos` are contiguous in `view`; False when fewer than
        `n` have been fed (then nothing changes). O(n) when pieces must be joined."""
        if len(self.view) - self.pos >= n:
            return True
        if self.available() < n:
            return False
        joined = b"".join([self.view[self.pos :], *self._parts])
        self.base += self.pos
        self.view, self.pos = memoryview(joined), 0
        self._parts, self._extra = [], 0
        return True

    @property
    def offset(self) -> int:
        """The stream offset of the read position."""
        return self.base + self.pos

    def end(self, what: str) -> None:
        """At the end of the input: UnexpectedEof if bytes of an unfinished `what` remain."""
        if self.available():
            raise UnexpectedEof(f"the input ends inside a {what} ({self.available()} bytes)",
                                offset=self.offset)
