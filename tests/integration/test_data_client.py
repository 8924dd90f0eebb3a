"""The gateway's lean HTTP client for the dmd's /DataFile service (gateway/data/httpconn.py), and
`DmdDataBackend` on it: against a real dmd (tests/procs.py `start_dmd`: TCP, TLS, Unix socket),
and against tiny asyncio servers in this file that misbehave on purpose (close idle connections,
answer then close, stall, send short bodies).
"""
from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from dmd.data import TMP_DIR_NAME
from gateway.data import DataUnavailable, DmdDataBackend
from gateway.data.httpconn import READ_HIGH_WATER, ConnectionPool, HttpClientError, ReadTimeout
from tests.integration.test_data_daemon import pattern_chunks
from tests.procs import Dmd, start_dmd

MiB = 1 << 20
KEY = "0123456789abcdef0123456789abcdef01234567"
TIMEOUT_S = 120   # a bound on every test's exchanges, for a loaded machine: a hang fails instead of blocking


# --- the real dmd ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("client") / "dmd", sockets=True)
    yield d
    d.stop()


def blobs(dmd: Dmd) -> set[str]:
    return {p.name for p in dmd.data_path.glob("*/*") if p.parent.name != TMP_DIR_NAME}


def temp_files(dmd: Dmd) -> list[Path]:
    tmp = dmd.data_path / TMP_DIR_NAME
    return list(tmp.iterdir()) if tmp.exists() else []


pattern = pattern_chunks   # a deterministic body generated on the fly (test_data_daemon's)


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def eventually(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


# --- a tiny server that misbehaves on purpose --------------------------------------------------------
class Exchange:
    """One request as the fake server read it."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.method = head.split(b" ", 1)[0].decode()
        self.connection = 0   # which connection of the server's it came on (1, 2, ...)


# handle(exchange, writer, index of the request on its connection, connection number) -> keep going?
Handler = Callable[[Exchange, asyncio.StreamWriter, int, int], Awaitable[bool]]


class FakeServer:
    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.connections = 0
        self.closed_by_client = 0   # connections the client closed (EOF while waiting for a request)
        self.requests: list[Exchange] = []
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> "FakeServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        index = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                exchange = Exchange(head, body)
                exchange.connection = number
                self.requests.append(exchange)
                index += 1
                if not await self.handle(exchange, writer, index, number):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def answer(status: int = 200, body: bytes = b"", extra: str = "", length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return f"HTTP/1.1 {status} X\r\nContent-Length: {n}\r\n{extra}\r\n".encode() + body


def backend_for(server: FakeServer, **kw: object) -> DmdDataBackend:
    kw.setdefault("retry_window_ms", 0)
    return DmdDataBackend("127.0.0.1", server.port, "us-east-1", **kw)  # type: ignore[arg-type]


# --- keep-alive ------------------------------------------------------------------------------------
async def test_sequential_requests_use_one_connection(dmd: Dmd) -> None:
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    try:
        keys = []
        for i in range(20):
            keys.append(await backend.put(pattern(1000 + i), 1000 + i))
            assert len(await read_all(backend.get(keys[-1]))) == 1000 + i
            assert await read_all(backend.get(keys[-1], 10, 19)) == (await read_all(pattern(20)))[10:20]
        for key in keys:
            await backend.delete(key)
        assert await backend.healthy()
        assert backend._pool is not None and backend._pool.connections_made == 1
    finally:
        await backend.close()


async def test_a_response_not_read_to_its_end_closes_the_connection(dmd: Dmd) -> None:
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    try:
        key = await backend.put(pattern(8 * MiB), 8 * MiB)
        pool = backend._pool
        assert pool is not None and pool.connections_made == 1
        stream = backend.get(key).__aiter__()
        await stream.__anext__()
        await stream.aclose()
        assert pool.idle == 0 and pool.in_use == 0
        assert len(await read_all(backend.get(key))) == 8 * MiB     # on a new connection
        assert pool.connections_made == 2 and pool.idle == 1
        await backend.delete(key)
    finally:
        await backend.close()


async def test_a_server_closing_an_idle_connection_costs_nothing() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        if ex.method == "PUT":
            writer.write(answer(201, extra=f"Location: /DataFile/{KEY}\r\n"))
        else:
            writer.write(answer(200, b"hello"))
        await writer.drain()
        await asyncio.sleep(0.2)
        return False          # then closes the idle connection

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            assert await read_all(backend.get(KEY)) == b"hello"
            await asyncio.sleep(1.0)          # the server has closed it meanwhile
            # A streamed body is never sent twice: this works only if the dead connection was not taken.
            assert await backend.put(pattern(1000), 1000) == KEY
            assert server.connections == 2 and len(server.requests) == 2
        finally:
            await backend.close()


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        writer.write(answer(200, b"hello"))
        await writer.drain()
        return True

    async with FakeServer(handle) as server:
        pool = ConnectionPool("127.0.0.1", server.port, idle_timeout=2.0)
        try:
            async def get() -> bytes:
                async with pool.request("GET", "/DataFile/" + KEY) as resp:
                    return await resp.read()
            held = [await pool.request("GET", "/DataFile/" + KEY) for _ in range(3)]   # 3 connections
            for resp in held:
                assert await resp.read() == b"hello"   # read whole: back to the pool, in this order
            assert pool.idle == 3 and server.closed_by_client == 0
            await asyncio.sleep(0.2)
            assert await get() == b"hello"
            assert server.requests[-1].connection == 3   # the most recently used one (LIFO)
            await eventually(lambda: server.closed_by_client == 2, 10)   # the two older ones time out
            assert pool.idle == 1
            await eventually(lambda: server.closed_by_client == 3, 10)
            assert pool.idle == 0 and server.connections == 3
        finally:
            await pool.close()


async def _close_on_second_request(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
    """Answers the first request of a connection, closes without answering on the second (the race of a
    server closing an idle connection just as the client sends on it)."""
    if index >= 2:
        return False
    if ex.method == "PUT":
        writer.write(answer(201, extra=f"Location: /DataFile/{KEY}\r\n"))
    else:
        writer.write(answer(200, b"hello"))
    await writer.drain()
    return True


async def test_a_request_without_body_is_sent_again_when_the_reused_connection_was_dead() -> None:
    async with FakeServer(_close_on_second_request) as server:
        backend = backend_for(server)
        try:
            assert await read_all(backend.get(KEY)) == b"hello"
            assert await read_all(backend.get(KEY)) == b"hello"   # retried once, on a new connection
            assert server.connections == 2 and len(server.requests) == 3
            await backend.delete(KEY)   # 200 is a done delete
        finally:
            await backend.close()


async def test_a_streamed_body_is_never_sent_twice() -> None:
    async with FakeServer(_close_on_second_request) as server:
        backend = backend_for(server)
        try:
            assert await backend.put(pattern(1000), 1000) == KEY
            with pytest.raises(DataUnavailable):
                await backend.put(pattern(1000), 1000)
            assert server.connections == 1, "the streamed body was sent again"
        finally:
            await backend.close()


async def test_an_answer_with_connection_close_is_not_reused() -> None:
    # The server says "Connection: close" but leaves the socket open: a client that reused it
    # would send the second request on this connection.
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        writer.write(answer(200, b"hello", extra="Connection: close\r\n"))
        await writer.drain()
        return True

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            for _ in range(3):
                assert await read_all(backend.get(KEY)) == b"hello"
            assert server.connections == 3
        finally:
            await backend.close()


async def test_a_server_that_answers_then_closes() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        writer.write(answer(200, b"hello"))
        await writer.drain()
        return False     # no Connection: close, closes at once

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            for _ in range(5):
                assert await read_all(backend.get(KEY)) == b"hello"
            assert server.connections == len(server.requests) == 5
        finally:
            await backend.close()


# --- timeouts and broken answers -----------------------------------------------------------------
async def test_a_stalled_server_times_out_as_unavailable() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        await asyncio.sleep(3600)
        return False

    async with FakeServer(handle) as server:
        backend = backend_for(server, read_timeout=0.5)
        try:
            with pytest.raises(DataUnavailable) as err:
                await asyncio.wait_for(read_all(backend.get(KEY)), 30)
            assert isinstance(err.value.__cause__, ReadTimeout)
            with pytest.raises(DataUnavailable):
                await asyncio.wait_for(backend.put(pattern(100), 100), 30)
            assert backend._pool is not None and backend._pool.idle == 0
        finally:
            await backend.close()


async def test_a_server_stalling_mid_body_times_out() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        writer.write(answer(200, b"x" * 50, length=100))
        await writer.drain()
        await asyncio.sleep(3600)
        return False

    async with FakeServer(handle) as server:
        backend = backend_for(server, read_timeout=0.5)
        try:
            got: list[bytes] = []
            with pytest.raises(DataUnavailable):
                async for piece in backend.get(KEY):
                    got.append(piece)
            assert b"".join(got) == b"x" * 50
            assert backend._pool is not None and backend._pool.idle == 0
        finally:
            await backend.close()


async def test_a_short_body_is_an_error_and_its_connection_is_not_reused() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        if number == 1:
            writer.write(answer(200, b"x" * 50, length=100))   # 50 bytes short, then closes
            await writer.drain()
            return False
        writer.write(answer(200, b"hello"))
        await writer.drain()
        return True

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            with pytest.raises(DataUnavailable):
                await asyncio.wait_for(read_all(backend.get(KEY)), 30)
            assert await read_all(backend.get(KEY)) == b"hello"
            assert server.connections == 2
        finally:
            await backend.close()


async def test_a_malformed_answer_is_unavailable_not_a_crash() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        return True

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            with pytest.raises(DataUnavailable):
                await asyncio.wait_for(read_all(backend.get(KEY)), 30)
            assert backend._pool is not None and backend._pool.idle == 0
        finally:
            await backend.close()


# --- uploads ---------------------------------------------------------------------------------------
async def test_chunked_upload_of_unknown_size(dmd: Dmd) -> None:
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    try:
        size = 3 * MiB + 17
        key = await backend.put(pattern(size, 100_000), None)
        assert await read_all(backend.get(key)) == await read_all(pattern(size, 100_000))
        await backend.delete(key)
    finally:
        await backend.close()


async def test_chunked_encoding_is_what_goes_out_without_a_size() -> None:
    async def handle(ex: Exchange, writer: asyncio.StreamWriter, index: int, number: int) -> bool:
        return False    # only looks at the head

    async with FakeServer(handle) as server:
        backend = backend_for(server)
        try:
            with pytest.raises(DataUnavailable):
                await backend.put(pattern(10), None)
            head = server.requests[0].head.lower()
            assert b"transfer-encoding: chunked\r\n" in head and b"content-length" not in head
        finally:
            await backend.close()


class SourceBroke(Exception):
    pass


@pytest.mark.parametrize("known_size", [True, False], ids=["content-length", "chunked"])
async def test_a_caller_body_that_raises_leaves_nothing_on_the_dmd(dmd: Dmd, known_size: bool) -> None:
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    size = 8 * MiB

    async def broken() -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in pattern(size, 256 * 1024):
            if sent >= 2 * MiB:
                raise SourceBroke("the client went away")
            yield chunk
            sent += len(chunk)

    try:
        before = blobs(dmd)
        with pytest.raises(SourceBroke):
            await asyncio.wait_for(backend.put(broken(), size if known_size else None), TIMEOUT_S)
        await eventually(lambda: not temp_files(dmd))     # the dmd dropped the partial upload
        await asyncio.sleep(0.5)
        assert blobs(dmd) == before
        key = await backend.put(pattern(10), 10)          # the backend still works
        await backend.delete(key)
    finally:
        await backend.close()


# --- backpressure and pool limit --------------------------------------------------------------------
async def test_a_slow_reader_keeps_the_buffered_bytes_bounded(dmd: Dmd) -> None:
    size = 64 * MiB
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    pool = ConnectionPool("127.0.0.1", dmd.data_port)
    try:
        key = await asyncio.wait_for(backend.put(pattern(size), size), TIMEOUT_S)
        async with pool.request("GET", f"/DataFile/{key}") as resp:
            assert resp.status == 200 and resp.headers.get("content-length") == str(size)
            conn = resp._conn
            digest, expected = hashlib.sha256(), hashlib.sha256()
            async for chunk in pattern(size):
                expected.update(chunk)
            most, got, n = 0, 0, 0
            async for piece in resp.iter_pieces():
                digest.update(piece)
                got += len(piece)
                n += 1
                if n % 16 == 1 and got < size // 2:
                    await asyncio.sleep(0.3)   # a slow reader: the socket would deliver everything meanwhile
                most = max(most, conn.buffered)
            assert got == size and digest.digest() == expected.digest()
        # one socket read (at most 256 KiB) past the high-water mark
        assert most <= READ_HIGH_WATER + 512 * 1024, f"{most / MiB:.1f} MiB buffered"
        assert pool.idle == 1
        await backend.delete(key)
    finally:
        await pool.close()
        await backend.close()


async def test_a_connection_reused_after_an_unread_answer_reads_again(dmd: Dmd) -> None:
    # An answer that arrived whole while its reader took nothing: reading was paused past the
    # high-water mark; the next exchange on the connection must resume it.
    size = READ_HIGH_WATER + 1   # reading pauses on the very last byte
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
    pool = ConnectionPool("127.0.0.1", dmd.data_port, read_timeout=5)
    try:
        key = await backend.put(pattern(size), size)
        resp = await pool.request("GET", f"/DataFile/{key}")
        conn = resp._conn
        await eventually(lambda: conn.complete, 30)
        assert conn._read_paused
        resp.release()
        assert pool.idle == 1
        async with pool.request("GET", f"/DataFile/{key}") as again:
            assert again._conn is conn and len(await again.read(2 * size)) == size
        await backend.delete(key)
    finally:
        await pool.close()
        await backend.close()


async def test_the_pool_limit_holds_under_200_concurrent_requests(dmd: Dmd) -> None:
    limit = 8
    backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1", max_connections=limit)
    try:
        key = await backend.put(pattern(64 * 1024), 64 * 1024)
        pool = backend._pool
        assert pool is not None
        most = 0

        async def one(i: int) -> int:
            nonlocal most
            if i % 2:
                n = len(await read_all(backend.get(key)))
            else:
                k = await backend.put(pattern(1000), 1000)
                await backend.delete(k)
                n = 64 * 1024
            most = max(most, pool.in_use)
            return n

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, pool.in_use)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            sizes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), TIMEOUT_S)
        finally:
            watcher.cancel()
        assert sizes == [64 * 1024] * 200
        assert 1 < most <= limit, most
        assert pool.connections_made <= limit and pool.in_use == 0
        await backend.delete(key)
    finally:
        await backend.close()


async def test_a_cancelled_waiter_does_not_leak_a_slot(dmd: Dmd) -> None:
    pool = ConnectionPool("127.0.0.1", dmd.data_port, max_connections=1)
    try:
        held = await pool.request("GET", "/DataFile?diskUsage")
        waiting = asyncio.create_task(_get(pool))
        await asyncio.sleep(0.1)
        waiting.cancel()                 # cancelled while it waits for the slot
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.in_use == 1
        waiting = asyncio.create_task(_get(pool))
        await asyncio.sleep(0.1)
        held.release()                   # hands the slot to the waiter...
        waiting.cancel()                 # ...cancelled before it could run
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert pool.in_use == 0
        async with pool.request("GET", "/DataFile?diskUsage") as resp:
            assert resp.status == 200 and b"free" in await resp.read()
    finally:
        await pool.close()


async def _get(pool: ConnectionPool) -> bytes:
    async with pool.request("GET", "/DataFile?diskUsage") as resp:
        return await resp.read()


async def test_a_read_waits_through_a_dmd_restart(tmp_path: Path) -> None:
    d = await asyncio.to_thread(start_dmd, tmp_path / "dmd")
    backend = DmdDataBackend("127.0.0.1", d.data_port, "us-east-1", retry_window_ms=60_000)
    try:
        key = await backend.put(pattern(100_000), 100_000)
        assert len(await read_all(backend.get(key))) == 100_000
        await asyncio.to_thread(d.kill)       # the pooled connection dies with it

        def restart_later() -> None:
            time.sleep(1.0)
            d.start()
        restarted = asyncio.create_task(asyncio.to_thread(restart_later))
        assert len(await asyncio.wait_for(read_all(backend.get(key)), TIMEOUT_S)) == 100_000
        await restarted
        await backend.delete(key)
    finally:
        await backend.close()
        await asyncio.to_thread(d.stop)


# --- Unix socket and TLS ---------------------------------------------------------------------------
async def test_unix_socket(dmd: Dmd) -> None:
    assert dmd.data_socket
    backend = DmdDataBackend("ignored", 1, "us-east-1", socket_path=dmd.data_socket)
    try:
        for _ in range(3):
            key = await backend.put(pattern(100_000), 100_000)
            assert await read_all(backend.get(key)) == await read_all(pattern(100_000))
            await backend.delete(key)
        assert await backend.healthy()
        assert backend._pool is not None and backend._pool.connections_made == 1
    finally:
        await backend.close()
    missing = DmdDataBackend("ignored", 1, "us-east-1", socket_path=dmd.data_socket + ".nope", retry_window_ms=0)
    try:
        with pytest.raises(DataUnavailable):
            await read_all(missing.get(KEY))
    finally:
        await missing.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
async def test_tls_to_a_dmd_with_tls(tmp_path: Path) -> None:
    from tests.deploy.test_dmd_tls import make_pki
    await asyncio.to_thread(make_pki, tmp_path, "good")
    await asyncio.to_thread(make_pki, tmp_path, "other")
    secret = "s" * 40
    d = await asyncio.to_thread(start_dmd, tmp_path / "dmd", {"DMD_SECRET": secret,
                                                             "DMD_TLS_CERT": str(tmp_path / "good.crt"),
                                                             "DMD_TLS_KEY": str(tmp_path / "good.key")})
    try:
        good = ssl.create_default_context(cafile=str(tmp_path / "good-ca.crt"))
        backend = DmdDataBackend("127.0.0.1", d.data_port, "us-east-1", secret=secret, ssl_context=good)
        try:
            size = 5 * MiB + 3
            for _ in range(2):
                key = await backend.put(pattern(size), size)
                assert await read_all(backend.get(key)) == await read_all(pattern(size))
                assert len(await read_all(backend.get(key, 0, 9))) == 10
                await backend.delete(key)
            assert await backend.healthy()
            assert backend._pool is not None and backend._pool.connections_made == 1
        finally:
            await backend.close()
        for name, ctx in (("wrong CA", ssl.create_default_context(cafile=str(tmp_path / "other-ca.crt"))),
                          ("plain HTTP", None)):
            other = DmdDataBackend("127.0.0.1", d.data_port, "us-east-1", secret=secret, ssl_context=ctx,
                                   retry_window_ms=0, read_timeout=5)
            try:
                with pytest.raises(DataUnavailable):
                    await asyncio.wait_for(read_all(other.get(KEY)), 30)
                assert not await other.healthy(), name
            finally:
                await other.close()
    finally:
        await asyncio.to_thread(d.stop)


async def test_transport_errors_are_oserrors() -> None:
    # gateway/data/base.py's TRANSPORT_ERRORS (read retries, delete retries, 503 mapping) covers them.
    from gateway.data.base import TRANSPORT_ERRORS
    assert issubclass(HttpClientError, TRANSPORT_ERRORS) and issubclass(ReadTimeout, TRANSPORT_ERRORS)
