"""`InputBuffer`: the resumable input of the sans-IO decoders (frames, TLV).

Bytes are fed in pieces of any size; a decoder asks for `ensure(n)` contiguous bytes at the
read position and then consumes them by moving `pos`. A piece is used in place while the
bytes asked for lie in it; only a frame that straddles pieces is copied, and only its own
bytes, once enough have arrived. So feeding a frame byte by byte costs O(frame), not
O(frame^2), and big pieces are not copied at all. Views handed out stay valid: a buffer
that a view may point into is never resized or overwritten.
"""

from __future__ import annotations

from collections import deque

from streamdb.errors import UnexpectedEof


class InputBuffer:
    __slots__ = ("_extra", "_parts", "base", "pos", "view")

    def __init__(self) -> None:
        self.view = memoryview(b"")
        self.pos = 0  # read position in `view`
        self.base = 0  # stream offset of view[0]
        self._parts: deque[memoryview] = deque()  # fed after `view`
        self._extra = 0  # bytes in _parts

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes at the end. Copies only a mutable `data` (the caller may reuse it)."""
        piece = memoryview(data if isinstance(data, bytes) else bytes(data)).cast("B")
        if not piece:
            return
        if self.pos == len(self.view) and not self._parts:
            self.base += self.pos
            self.view, self.pos = piece, 0
            return
        self._parts.append(piece)
        self._extra += len(piece)

    def available(self) -> int:
        return len(self.view) - self.pos + self._extra

    def ensure(self, n: int) -> bool:
        """True when `n` bytes from `pos` are contiguous in `view`; False when fewer than
        `n` have been fed (then nothing is consumed). O(n) when they straddle pieces."""
        while self.pos == len(self.view) and self._parts:  # this piece is used up
            self.base += self.pos
            self.view, self.pos = self._parts.popleft(), 0
            self._extra -= len(self.view)
        if len(self.view) - self.pos >= n:
            return True
        if self.available() < n:
            return False
        pieces = [self.view[self.pos :]]
        have = len(pieces[0])
        while have < n:  # only the bytes asked for: the rest of the last piece stays
            part = self._parts.popleft()
            take = min(len(part), n - have)
            pieces.append(part[:take])
            if take < len(part):
                self._parts.appendleft(part[take:])
            self._extra -= take
            have += take
        self.base += self.pos
        self.view, self.pos = memoryview(b"".join(pieces)), 0
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
