"""A byte buffer over an async body stream, for the parsers that frame a
request body themselves (aws-chunked payloads, multipart/form-data POSTs).

It holds at most what one read needs plus one network read, so bodies of any
size stream through.
"""
from __future__ import annotations

from typing import AsyncIterator, Callable

from shared.errors import S3Error

ErrorFactory = Callable[[], S3Error]


class ByteStream:
    def __init__(self, raw: AsyncIterator[bytes], initial: bytes = b""):
        self._iter = raw.__aiter__()
        self.buf = bytearray(initial)
        self.eof = False

    async def fill(self) -> bool:
        """Append the next non-empty network read to `buf`; False at the end of the body."""
        while not self.eof:
            try:
                piece = await self._iter.__anext__()
            except StopAsyncIteration:
                self.eof = True
                return False
            if piece:
                self.buf += piece
                return True
        return False

    async def at_end(self) -> bool:
        return not self.buf and not await self.fill()

    async def readline(self, max_length: int, too_long: ErrorFactory, truncated: ErrorFactory) -> bytes:
        """One CRLF-terminated line, without the CRLF."""
        start = 0
        while True:
            at = self.buf.find(b"\r\n", start)
            if at >= 0:
                line = bytes(self.buf[:at])
                del self.buf[:at + 2]
                return line
            if len(self.buf) > max_length:
                raise too_long()
            start = max(0, len(self.buf) - 1)
            if not await self.fill():
                raise truncated()

    async def read(self, count: int, truncated: ErrorFactory) -> AsyncIterator[bytes]:
        """Exactly `count` bytes, in the pieces they arrive in."""
        while count:
            if not self.buf and not await self.fill():
                raise truncated()
            take = min(count, len(self.buf))
            piece = bytes(self.buf[:take])
            del self.buf[:take]
            count -= take
            yield piece
