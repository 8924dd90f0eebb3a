"""A lean asyncio HTTP/1.1 client for the dmd's /DataFile service (issue 18: gateway CPU).

aiohttp's client costs about twice the CPU of this one per small exchange; the gateway makes one
data exchange per GET and per PUT. This client does only what the data backend needs:

- `ConnectionPool`: one per backend and event loop. Keep-alive connections, the idle ones reused
  last-in first-out and closed after `idle_timeout` (FREE_SOCKET_TIMEOUT_S, below the dmd's 60 s);
  at most `max_connections` in use, further requests wait for one. TCP (optionally TLS) or a
  Unix-domain socket.
- `pool.request(method, target, headers, body, size)`, used as `async with pool.request(...) as
  resp`: the body is None, bytes, or an async iterator of bytes, sent with Content-Length when
  `size` is known, chunked otherwise; the write buffer is drained as the transport asks (a slow
  server never makes us buffer a whole body).
- `Response` (no HEAD requests: the parser would wait for the announced body): `status`,
  `headers` (case-insensitive `get`), the body as the pieces arrive
  (`async for piece in resp.iter_pieces()`), reading paused while more than READ_HIGH_WATER bytes
  wait for the caller; `read(limit)` for small bodies.

Connection hygiene: a connection goes back to the pool only after its whole response was parsed
and the server did not ask to close it; anything else (an unread body, an error, a timeout, a
cancelled caller, the server's EOF) closes it. A request on a reused connection that the server
had already closed (no response byte came back) is sent once more on a new connection when its
body can be sent again (none, or bytes); a streamed body is never resent.

Every transport failure raises an `HttpClientError` (an OSError, so `TRANSPORT_ERRORS` of
gateway/data/base.py covers it); a silence longer than `read_timeout` while waiting for the
answer, for body bytes, or for the server to take our bytes raises `ReadTimeout`.
"""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from typing import AsyncIterator

import httptools

FREE_SOCKET_TIMEOUT_S = 55.0   # gateway/data/base.py has the same; below the dmd's 60 s keep-alive
READ_HIGH_WATER = 1 << 20      # body bytes buffered for a slow reader before the socket is paused
READ_LOW_WATER = 256 << 10     # ... and resumed below this
SMALL_BODY_JOIN = 64 << 10     # a bytes body up to this size goes out with the head in one write


class HttpClientError(OSError):
    """The exchange with the server failed (connect, write, read, a malformed answer)."""


class ConnectError(HttpClientError):
    """No connection could be made (refused, unreachable, TLS handshake failed, connect timeout)."""


class ReadTimeout(HttpClientError, TimeoutError):
    """The server stayed silent (or stopped taking our bytes) longer than the read timeout."""


class ConnectionClosed(HttpClientError):
    """The server closed the connection (EOF, reset) before the exchange was complete.
    `before_response`: not one byte of the answer had arrived."""

    def __init__(self, message: str, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response


class ProtocolError(HttpClientError):
    """The answer is not valid HTTP/1.1, or its body is not what its headers announced."""


class BodyTooLarge(HttpClientError):
    """`Response.read(limit)`: the body is longer than `limit`."""


class Headers(dict):
    """Response headers under lowercase names; `get` and `in` take any case. A repeated header
    keeps its last value (the few headers read here are never repeated)."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the HTTP parser's callbacks and the state of the exchange on it."""

    def __init__(self, pool: "ConnectionPool") -> None:
        self.pool = pool
        self.loop = pool.loop
        self.read_timeout = pool.read_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False          # EOF seen, connection lost, or closed by us: never reused
        self.idle_since = 0.0
        self.exchanges = 0           # requests made on it (1 = a new connection)
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._active = False         # an exchange is under way (bytes from the server are expected)
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.got_bytes = False       # a byte of the answer has arrived
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False        # the whole answer was parsed
        self.keep_alive = False
        self.reusable = True         # False: something makes the connection unfit for another exchange
        self.exc: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self._read_paused = False

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active:   # bytes nobody asked for: the connection is in an unknown state
            self.reusable = False
            self.abort()
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed answer from {self.pool.where}: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        if self._active and self.headers_done and not self.complete and self._until_eof():
            self.complete = True       # a body delimited by the end of the connection
            self.keep_alive = False
            self._wake()
        self.closed = True
        if self._active and not self.complete:
            what = "while sending the body" if self.headers_done else "before answering"
            self._fail(ConnectionClosed(f"{self.pool.where} closed the connection {what}", not self.got_bytes))
        return False   # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._active and not self.complete:
            reason = f": {exc!r}" if exc is not None else ""
            self._fail(ConnectionClosed(f"connection to {self.pool.where} lost{reason}", not self.got_bytes))
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:   # a second answer to one request
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:   # an interim answer (we never send Expect): the real one follows
            self.raw_headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > READ_HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:   # the end of an interim answer
            return
        self.complete = True
        self._wake()

    # --- helpers --------------------------------------------------------------------------------------
    def _until_eof(self) -> bool:
        """Whether the answer's body ends with the connection (neither a length nor chunks)."""
        names = {n.lower() for n, _ in self.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self.exc is None:
            self.exc = exc
        self._wake()

    def _on_timeout(self, fut: asyncio.Future[None], what: str) -> None:
        if not fut.done():
            fut.set_exception(ReadTimeout(f"no answer from {self.pool.where} for {self.read_timeout:g} s ({what})"))

    async def _wait(self, what: str) -> None:
        """Until the parser or the transport has news; ReadTimeout after `read_timeout` of silence."""
        fut = self.loop.create_future()
        self._waiter = fut
        timer = self.loop.call_later(self.read_timeout, self._on_timeout, fut, what)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    async def _drain(self) -> None:
        """Until the transport's write buffer is below its high-water mark (or the connection is gone)."""
        while self._write_paused and not self.closed:
            fut = self.loop.create_future()
            self._drain_waiter = fut
            timer = self.loop.call_later(self.read_timeout, self._on_timeout, fut, "taking the request body")
            try:
                await fut
            finally:
                timer.cancel()
                self._drain_waiter = None

    def abort(self) -> None:
        """Close at once (unsent bytes dropped: the server sees a short request and keeps nothing)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _dead(self) -> ConnectionClosed:
        if isinstance(self.exc, ConnectionClosed):
            return self.exc
        return ConnectionClosed(f"connection to {self.pool.where} closed", not self.got_bytes)

    def _check_sending(self) -> None:
        if self.exc is not None and not self.headers_done:
            raise self.exc
        if self.closed and not self.headers_done:
            raise self._dead()

    # --- one exchange ---------------------------------------------------------------------------------
    async def exchange(self, head: bytes, body: object, size: int | None) -> None:
        """Send one request and wait for the head of its answer."""
        if self.closed:
            raise self._dead()
        if self._read_paused:   # the last answer arrived whole while its reader lagged: read again
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._reset_exchange()
        self._active = True
        self.exchanges += 1
        transport = self.transport
        assert transport is not None
        if body is None:
            transport.write(head)
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) <= SMALL_BODY_JOIN:
                transport.write(head + bytes(body))
            else:
                transport.writelines((head, body))
            if self._write_paused:
                await self._drain()
        else:
            transport.write(head)
            await self._send_stream(transport, body, size)   # type: ignore[arg-type]
        while not self.headers_done:
            if self.exc is not None:
                raise self.exc
            if self.closed:
                raise self._dead()
            await self._wait("waiting for the answer")

    async def _send_stream(self, transport: asyncio.Transport, body: AsyncIterator[bytes], size: int | None) -> None:
        chunked = size is None
        sent = 0
        async for piece in body:
            if not piece:
                continue
            self._check_sending()
            if self.headers_done:
                # The server answered before taking the whole body (an error): stop sending; the
                # connection cannot carry another request.
                self.reusable = False
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()
                return
            sent += len(piece)
            if chunked:
                transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                if sent > size:  # type: ignore[operator]
                    raise ValueError(f"request body longer than its Content-Length {size}")
                transport.write(piece)
            if self._write_paused:
                await self._drain()
        self._check_sending()
        if chunked:
            if not self.headers_done:
                transport.write(b"0\r\n\r\n")
        elif sent != size and not self.headers_done:
            raise ValueError(f"request body of {sent} bytes, Content-Length {size}")

    def finished(self) -> bool:
        """Whether the exchange ended cleanly and the connection can carry another one."""
        self._active = False
        return (self.complete and self.keep_alive and self.reusable and not self.closed
                and self.exc is None)


class Response:
    """The answer to one request. Leaving `async with` (or `release()`) gives the connection back
    to the pool when the answer was parsed whole, else closes it."""

    __slots__ = ("status", "headers", "_conn", "_pool", "_released")

    def __init__(self, pool: "ConnectionPool", conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._released = False
        self.status = conn.status
        self.headers = Headers((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in conn.raw_headers)

    async def iter_pieces(self) -> AsyncIterator[bytes]:
        """The body as the pieces arrive (each as the parser produced it, not re-joined)."""
        conn = self._conn
        queue = conn.body
        while True:
            if queue:
                piece = queue.popleft()
                conn.buffered -= len(piece)
                if conn._read_paused and conn.buffered <= READ_LOW_WATER:
                    conn._read_paused = False
                    if conn.transport is not None and not conn.closed:
                        conn.transport.resume_reading()
                yield piece
                continue
            if conn.complete:
                self.release()
                return
            if conn.exc is not None:
                raise conn.exc
            if conn.closed:
                raise conn._dead()
            await conn._wait("waiting for body bytes")

    async def read(self, limit: int = 1 << 20) -> bytes:
        """The whole body (BodyTooLarge past `limit` bytes: this is for small answers)."""
        parts: list[bytes] = []
        total = 0
        async for piece in self.iter_pieces():
            total += len(piece)
            if total > limit:
                self.release()
                raise BodyTooLarge(f"answer body from {self._pool.where} longer than {limit} bytes")
            parts.append(piece)
        return b"".join(parts)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        self._pool._release(conn, conn.finished())

    async def __aenter__(self) -> "Response":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class _RequestContext:
    """`pool.request(...)`: awaitable (a Response) and an async context manager (released on exit)."""

    __slots__ = ("_pool", "_args", "_resp")

    def __init__(self, pool: "ConnectionPool", args: tuple) -> None:
        self._pool = pool
        self._args = args
        self._resp: Response | None = None

    def __await__(self):
        return self._pool._request(*self._args).__await__()

    async def __aenter__(self) -> Response:
        self._resp = await self._pool._request(*self._args)
        return self._resp

    async def __aexit__(self, *exc_info: object) -> None:
        if self._resp is not None:
            self._resp.release()


class ConnectionPool:
    """Keep-alive connections to one server (host:port, TLS when `ssl` is given, or a Unix socket)."""

    def __init__(self, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None, socket_path: str = "",
                 max_connections: int = 100, connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 idle_timeout: float = FREE_SOCKET_TIMEOUT_S, headers: dict[str, str] | None = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.socket_path = socket_path
        self.ssl = None if socket_path else ssl
        self.where = f"unix:{socket_path}" if socket_path else f"{host}:{port}"
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        host_header = "localhost" if socket_path else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        fixed = [("Host", host_header), *(headers or {}).items()]
        self._fixed_head = "".join(f"{k}: {v}\r\n" for k, v in fixed)
        self._idle: list[_Connection] = []
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False
        self.connections_made = 0   # new connections opened so far (tests, metrics)

    # --- public ---------------------------------------------------------------------------------------
    def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes | AsyncIterator[bytes] | None = None, size: int | None = None) -> _RequestContext:
        """One request: `target` is the path and query. `body`: bytes, or an async iterator with
        `size` its exact length (None: sent chunked)."""
        return _RequestContext(self, (method, target, headers, body, size))

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def idle(self) -> int:
        return sum(1 for c in self._idle if not c.closed)

    async def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- internals ------------------------------------------------------------------------------------
    def _head(self, method: str, target: str, headers: dict[str, str] | None, body: object,
              size: int | None) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\n", self._fixed_head]
        if headers:
            lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if body is None:
            if method in ("PUT", "POST"):
                lines.append("Content-Length: 0\r\n")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            lines.append(f"Content-Length: {len(body)}\r\n")
        elif size is not None:
            lines.append(f"Content-Length: {size}\r\n")
        else:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def _request(self, method: str, target: str, headers: dict[str, str] | None, body: object,
                       size: int | None) -> Response:
        if self.closed:
            raise HttpClientError(f"connection pool to {self.where} is closed")
        head = self._head(method, target, headers, body, size)
        resendable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        if self._in_use < self.max_connections and not self._waiters:
            self._in_use += 1
        else:
            await self._wait_for_slot()
        try:
            conn = self._pop_idle()
            retried = False
            while True:
                if conn is None:
                    conn = await self._connect()
                try:
                    await conn.exchange(head, body, size)
                    return Response(self, conn)
                except ConnectionClosed as exc:
                    conn.abort()
                    if exc.before_response and resendable and conn.exchanges > 1 and not retried:
                        retried = True   # the server had closed this idle connection: once more on a new one
                        conn = None
                        continue
                    raise
                except BaseException:
                    conn.abort()
                    raise
        except BaseException:
            self._free_slot()
            raise

    async def _wait_for_slot(self) -> None:
        fut = self.loop.create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._free_slot()   # the slot was handed to us as we were cancelled: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def _free_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)   # the slot passes to the next waiter
                return
        self._in_use -= 1

    def _pop_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since >= self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _Connection, reuse: bool) -> None:
        if reuse and not self.closed:
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
            if self._sweeper is None:
                self._sweeper = self.loop.call_later(self.idle_timeout, self._sweep)
        else:
            conn.abort()
        self._free_slot()

    def _sweep(self) -> None:
        """Close the connections idle for `idle_timeout` (before the server closes them under us)."""
        self._sweeper = None
        now = self.loop.time()
        keep: list[_Connection] = []
        for conn in self._idle:   # oldest first
            if conn.closed:
                continue
            if now - conn.idle_since >= self.idle_timeout:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._sweeper = self.loop.call_later(keep[0].idle_since + self.idle_timeout - now, self._sweep)

    async def _connect(self) -> _Connection:
        loop = self.loop
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.socket_path:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(self), self.socket_path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                        server_hostname=self.host if self.ssl is not None else None)
        except TimeoutError as exc:
            raise ConnectError(f"cannot connect to {self.where}: no answer in {self.connect_timeout:g} s") from exc
        except OSError as exc:   # refused, unreachable, ssl.SSLError (an OSError)
            raise ConnectError(f"cannot connect to {self.where}: {exc!r}") from exc
        self.connections_made += 1
        return conn  # type: ignore[return-value]
