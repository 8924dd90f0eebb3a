"""The dmd data service (/DataFile on 9991) and the gateway's data backends, over real sockets.

Most tests run `start_data_server` in the test's own loop on a free port (fast);
crash and memory tests run the daemon as a separate process (`python -m dmd.data`,
and `python -m dmd` through tests/procs.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio

from dmd.data import FOLDER_HASH, TMP_DIR_NAME, WRITE_BATCH_BYTES, djb2_xor_hash, key_folder, start_data_server
from gateway.data import (DataBackend, DataIntegrityError, DataNotFound, DataRangeNotSatisfiable,
                          DataUnavailable, DmdDataBackend, MemoryDataBackend, make_data_backend)
from shared.config import Config, Location
from tests.procs import REPO, free_port, start_dmd

# One loop for the module so one in-process server (setup creates 3511 folders, ~1 s here)
# serves most tests; tests that need a fresh data path start their own.
pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY_RE = re.compile(r"^[0-9a-f]{40}$")
MiB = 1 << 20
IDLE_TIMEOUT_S = 1.0  # the in-process server's body idle timeout, short so stalled uploads end fast


# --- fixtures and helpers ------------------------------------------------------------------------
@dataclass
class DataServer:
    port: int
    data_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blob_files(self) -> list[Path]:
        return [p for p in self.data_path.glob("*/*") if p.parent.name != TMP_DIR_NAME]

    def temp_files(self) -> list[Path]:
        return list((self.data_path / TMP_DIR_NAME).iterdir())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DataServer]:
    data_path = tmp_path_factory.mktemp("shared") / "localData"
    runner = await start_data_server(Config(data_path=str(data_path)), "127.0.0.1", 0,
                                     body_idle_timeout=IDLE_TIMEOUT_S)
    try:
        yield DataServer(runner.addresses[0][1], data_path)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: DataServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        yield c


async def put_blob(client: httpx.AsyncClient, body: bytes) -> str:
    resp = await client.put("/DataFile", content=body)
    assert resp.status_code == 201, resp.text
    return resp.headers["Location"].removeprefix("/DataFile/")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def _read_response(reader: asyncio.StreamReader, has_body: bool = True) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0"))) if has_body else b""
    return RawResponse(status, headers, body)


async def raw_request(port: int, request: bytes, timeout: float = 5.0) -> RawResponse:
    """Send bytes exactly as given (no client-side URL normalisation) and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(_read_response(reader, not request.startswith(b"HEAD ")), timeout)
    finally:
        writer.close()


def request_line(method: str, target: str, extra: str = "") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n".encode()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def assert_error_body(body: bytes, error_type: str) -> None:
    assert body.endswith(b"\n")
    doc = json.loads(body)
    assert set(doc) == {"errorType", "errorMessage"} and doc["errorType"] == error_type, doc


async def pattern_chunks(size: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    """A deterministic body generated on the fly (never held whole in memory)."""
    block = hashlib.sha256(b"seed").digest() * (chunk // 32)
    sent = 0
    while sent < size:
        n = min(chunk, size - sent)
        yield block[:n]
        sent += n


# --- layout --------------------------------------------------------------------------------------
async def test_folder_hash_matches_reference_test_vectors() -> None:
    assert djb2_xor_hash("0123456789abcdef0123456789abcdef01234567") == 1460976965
    assert key_folder("0123456789abcdef0123456789abcdef01234567") == 711
    assert djb2_xor_hash("a") == 177604
    assert djb2_xor_hash("abc") == 193415941


async def test_setup_creates_the_3511_folders_and_the_temp_folder(server: DataServer) -> None:
    folders = {p.name for p in server.data_path.iterdir() if p.is_dir()}
    assert folders == {str(i) for i in range(FOLDER_HASH)} | {TMP_DIR_NAME}


async def test_put_stores_the_blob_at_its_hash_folder(server: DataServer, client: httpx.AsyncClient) -> None:
    key = await put_blob(client, b"layout")
    assert (server.data_path / str(key_folder(key)) / key).read_bytes() == b"layout"
    assert server.temp_files() == []


async def test_blob_written_in_reference_layout_before_start_is_served(tmp_path: Path) -> None:
    data_path = tmp_path / "localData"
    key = "0123456789abcdef0123456789abcdef01234567"
    (data_path / "711").mkdir(parents=True)
    (data_path / "711" / key).write_bytes(b"from the original server")
    runner = await start_data_server(Config(data_path=str(data_path)), "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}") as c:
            resp = await c.get(f"/DataFile/{key}")
        assert resp.status_code == 200 and resp.content == b"from the original server"
    finally:
        await runner.cleanup()


async def test_leftover_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    data_path = tmp_path / "localData"
    (data_path / TMP_DIR_NAME / "stale-dir").mkdir(parents=True)
    (data_path / TMP_DIR_NAME / ("ab" * 20)).write_bytes(b"half an upload")
    (data_path / TMP_DIR_NAME / "stale-dir" / "x").write_bytes(b"x")
    runner = await start_data_server(Config(data_path=str(data_path)), "127.0.0.1", 0)
    try:
        assert list((data_path / TMP_DIR_NAME).iterdir()) == []
    finally:
        await runner.cleanup()


# --- PUT / GET / DELETE round trips --------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 5 * MiB], ids=["0B", "1B", "5MiB"])
async def test_put_then_get_returns_the_same_bytes(client: httpx.AsyncClient, size: int) -> None:
    body = os.urandom(size)
    resp = await client.put("/DataFile", content=body)
    assert resp.status_code == 201
    assert resp.headers["Content-Length"] == "0" and resp.content == b""
    location = resp.headers["Location"]
    assert location.startswith("/DataFile/") and KEY_RE.match(location.removeprefix("/DataFile/"))
    got = await client.get(location)
    assert got.status_code == 200
    assert got.headers["Content-Length"] == str(size) and got.headers["Accept-Ranges"] == "bytes"
    assert got.content == body


async def test_chunked_put_round_trips(client: httpx.AsyncClient) -> None:
    parts = [os.urandom(n) for n in (1, 70_000, 3 * MiB, 5)]

    async def gen() -> AsyncIterator[bytes]:
        for p in parts:
            yield p

    resp = await client.put("/DataFile", content=gen())  # no length known: httpx sends chunked
    assert resp.status_code == 201
    assert (await client.get(resp.headers["Location"])).content == b"".join(parts)


async def test_each_put_gets_a_new_key(client: httpx.AsyncClient) -> None:
    keys = {await put_blob(client, b"same body") for _ in range(5)}
    assert len(keys) == 5


async def test_delete_returns_204_then_get_and_delete_return_404(client: httpx.AsyncClient,
                                                                  server: DataServer) -> None:
    key = await put_blob(client, b"doomed")
    resp = await client.delete(f"/DataFile/{key}")
    assert resp.status_code == 204 and resp.content == b""
    assert not (server.data_path / str(key_folder(key)) / key).exists()
    for method in ("GET", "DELETE"):
        resp = await client.request(method, f"/DataFile/{key}")
        assert resp.status_code == 404
        assert_error_body(resp.content, "ObjNotFound")


async def test_disk_usage_reports_available_free_total(client: httpx.AsyncClient) -> None:
    resp = await client.get("/DataFile?diskUsage")
    assert resp.status_code == 200
    usage = json.loads(resp.content)
    assert set(usage) == {"available", "free", "total"}
    assert all(isinstance(v, int) and v >= 0 for v in usage.values())
    assert usage["total"] >= usage["free"] >= usage["available"] and usage["total"] > 0


@pytest.mark.parametrize("method", ["HEAD", "POST", "PATCH", "OPTIONS"])
async def test_other_methods_return_405(server: DataServer, method: str) -> None:
    resp = await raw_request(server.port, request_line(method, "/DataFile"))
    assert resp.status == 405
    if method != "HEAD":
        assert_error_body(resp.body, "MethodNotAllowed")


async def test_options_asterisk_returns_405(server: DataServer) -> None:
    resp = await raw_request(server.port, request_line("OPTIONS", "*"))
    assert resp.status == 405


# --- ranges --------------------------------------------------------------------------------------
TEN = b"0123456789"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ten_key(server: DataServer) -> str:
    """One 10-byte blob the range tests share (reads do not change it)."""
    async with httpx.AsyncClient(base_url=server.url) as c:
        return await put_blob(c, TEN)


@pytest.mark.parametrize("header,status,body,content_range", [
    ("bytes=0-0", 206, b"0", "bytes 0-0/10"),          # first byte
    ("bytes=9-9", 206, b"9", "bytes 9-9/10"),          # last byte
    ("bytes=9-", 206, b"9", "bytes 9-9/10"),
    ("bytes=2-5", 206, b"2345", "bytes 2-5/10"),
    ("bytes=5-100", 206, b"56789", "bytes 5-9/10"),    # end past the end is clamped
    ("bytes=0-", 206, TEN, "bytes 0-9/10"),
    ("bytes=-3", 206, b"789", "bytes 7-9/10"),         # suffix
    ("bytes=-100", 206, TEN, "bytes 0-9/10"),          # suffix longer than the blob
    ("bytes=0-1,5-6", 200, TEN, None),                 # multi-range: ignored, as the original
    ("bytes=5-2", 200, TEN, None),                     # start after end: ignored
    ("bytes=abc", 200, TEN, None),
    ("items=0-1", 200, TEN, None),
    ("bytes=-", 200, TEN, None),
])
async def test_get_with_satisfiable_or_ignored_range(client: httpx.AsyncClient, ten_key: str, header: str,
                                                     status: int, body: bytes, content_range: str | None) -> None:
    resp = await client.get(f"/DataFile/{ten_key}", headers={"Range": header})
    assert resp.status_code == status
    assert resp.content == body
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers.get("Content-Range") == content_range


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=10-20", "bytes=-0", "bytes=100-200"])
async def test_get_with_unsatisfiable_range_returns_416(client: httpx.AsyncClient, ten_key: str,
                                                        header: str) -> None:
    resp = await client.get(f"/DataFile/{ten_key}", headers={"Range": header})
    assert resp.status_code == 416
    assert_error_body(resp.content, "InvalidRange")


@pytest.mark.parametrize("header,status", [(None, 200), ("bytes=-1", 200), ("bytes=0-", 416), ("bytes=0-0", 416),
                                           ("bytes=-0", 416)])
async def test_range_on_zero_length_blob(client: httpx.AsyncClient, header: str | None, status: int) -> None:
    key = await put_blob(client, b"")
    resp = await client.get(f"/DataFile/{key}", headers={"Range": header} if header else {})
    assert resp.status_code == status
    if status == 200:
        assert resp.content == b"" and resp.headers["Content-Length"] == "0"


async def test_large_range_is_served_exactly(client: httpx.AsyncClient) -> None:
    body = os.urandom(3 * MiB + 17)
    key = await put_blob(client, body)
    resp = await client.get(f"/DataFile/{key}", headers={"Range": f"bytes={MiB - 3}-{3 * MiB}"})
    assert resp.status_code == 206 and resp.content == body[MiB - 3:3 * MiB + 1]


# --- bad URLs ------------------------------------------------------------------------------------
VALID = "0123456789abcdef0123456789abcdef01234567"
BAD_KEY_TARGETS = [
    "/DataFile/..",
    "/DataFile/%2e%2e",
    "/DataFile/../../victim",
    "/DataFile/..%2f..%2fvictim",
    "/DataFile/%2e%2e%2f%2e%2e%2fvictim",
    "/DataFile//etc/passwd",
    "//etc/passwd",
    "/DataFile/" + VALID + "%00",
    "/DataFile/%00",
    "/DataFile/" + VALID + "0",            # 41 chars
    "/DataFile/" + VALID[:-1],             # 39 chars
    "/DataFile/" + "a" * 4096,             # over-long
    "/DataFile/" + VALID.upper(),          # uppercase hex
    "/DataFile/" + VALID + "?x=1",         # a query on an object URL
    "/DataFile/" + VALID + "/extra",
    "/DataFile/%zz",
    "/DataFile/%C3",                       # truncated UTF-8
    "http://127.0.0.1/DataFile/" + VALID,  # absolute-form target
]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("target", BAD_KEY_TARGETS)
async def test_malformed_key_is_rejected_with_400_and_touches_nothing(server: DataServer, tmp_path: Path,
                                                                     method: str, target: str) -> None:
    victim = tmp_path / "victim"  # what the traversal targets point at
    victim.write_bytes(b"must survive")
    sentinel = server.data_path / str(key_folder(VALID)) / VALID  # what the near-miss keys point at
    sentinel.write_bytes(b"must survive too")
    top_level = sorted(os.listdir(server.data_path))
    try:
        resp = await raw_request(server.port, request_line(method, target))
        assert resp.status == 400
        assert_error_body(resp.body, "InvalidURI")
        assert victim.read_bytes() == b"must survive"
        assert sentinel.read_bytes() == b"must survive too"
        assert sorted(os.listdir(server.data_path)) == top_level
    finally:
        sentinel.unlink()


@pytest.mark.parametrize("method,target,status,error", [
    ("GET", "/DataFile", 400, "MissingParameter"),
    ("GET", "/DataFile/", 400, "MissingParameter"),
    ("DELETE", "/DataFile", 400, "MissingParameter"),
    ("GET", "/PassthroughFile/" + VALID, 400, "InvalidAction"),
    ("GET", "/Other", 400, "InvalidAction"),
    ("GET", "/DataFile?other", 400, "InvalidURI"),
    ("GET", "/", 400, "InvalidURI"),
    ("PUT", "/DataFile/" + VALID, 400, "InvalidURI"),      # the server names blobs, not the client
    ("PUT", "/DataFile?x", 400, "InvalidURI"),
])
async def test_url_problems_keep_the_reference_status_codes(server: DataServer, method: str, target: str,
                                                            status: int, error: str) -> None:
    extra = "Content-Length: 0\r\n" if method == "PUT" else ""
    resp = await raw_request(server.port, request_line(method, target, extra))
    assert resp.status == status
    assert_error_body(resp.body, error)


# --- bad or broken uploads -----------------------------------------------------------------------
async def test_put_without_content_length_or_chunked_returns_411(server: DataServer) -> None:
    resp = await raw_request(server.port, request_line("PUT", "/DataFile"))
    assert resp.status == 411
    assert_error_body(resp.body, "MissingContentLength")


async def test_put_with_non_numeric_content_length_returns_400(server: DataServer) -> None:
    # aiohttp's HTTP parser rejects it before our handler, hence no JSON body to check.
    before = server.blob_files()
    resp = await raw_request(server.port, request_line("PUT", "/DataFile", "Content-Length: abc\r\n"))
    assert resp.status == 400
    assert server.blob_files() == before and server.temp_files() == []


async def _start_partial_upload(server: DataServer, declared: int, sent: bytes, chunked: bool = False
                                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Headers plus part of the body; returns once the server has its temp file open (the dmd
    creates it with the first write batch: `sent` must exceed dmd.data.WRITE_BATCH_BYTES)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    length = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {declared}\r\n"
    writer.write(request_line("PUT", "/DataFile", length) + sent)
    await writer.drain()
    await wait_until(lambda: server.temp_files() != [], what="the upload's temp file")
    return reader, writer


async def test_client_disconnect_mid_upload_leaves_no_blob_and_no_temp(server: DataServer,
                                                                       client: httpx.AsyncClient) -> None:
    before = server.blob_files()
    _, writer = await _start_partial_upload(server, 2 * WRITE_BATCH_BYTES, b"0" * (WRITE_BATCH_BYTES + 10))
    writer.close()
    await wait_until(lambda: server.temp_files() == [], what="temp file removal")
    assert server.blob_files() == before
    await put_blob(client, b"still serving")  # the daemon carries on


async def test_truncated_chunked_upload_leaves_nothing(server: DataServer) -> None:
    before = server.blob_files()
    piece = b"0" * (WRITE_BATCH_BYTES + 10)
    _, writer = await _start_partial_upload(server, 0, b"%x\r\n%s\r\n5\r\nab" % (len(piece), piece), chunked=True)
    writer.close()
    await wait_until(lambda: server.temp_files() == [], what="temp file removal")
    assert server.blob_files() == before


async def test_stalled_short_body_gets_an_error_and_stores_nothing(server: DataServer) -> None:
    before = server.blob_files()
    reader, writer = await _start_partial_upload(server, 2 * WRITE_BATCH_BYTES, b"0" * (WRITE_BATCH_BYTES + 10))
    try:
        resp = await asyncio.wait_for(_read_response(reader), IDLE_TIMEOUT_S + 5)
    finally:
        writer.close()
    assert resp.status == 400
    assert_error_body(resp.body, "RequestTimeout")
    assert server.temp_files() == [] and server.blob_files() == before


async def test_write_error_returns_500_removes_partial_and_keeps_serving(server: DataServer,
                                                                         client: httpx.AsyncClient) -> None:
    # A real write(2) failure: a file-size limit makes write() fail with EFBIG past 1 MiB.
    before = server.blob_files()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MiB, hard))
    try:
        resp = await client.put("/DataFile", content=os.urandom(3 * MiB))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert resp.status_code == 500
    assert_error_body(resp.content, "InternalError")
    assert "EFBIG" in json.loads(resp.content)["errorMessage"]
    assert server.temp_files() == [] and server.blob_files() == before
    key = await put_blob(client, b"after the failure")
    assert (await client.get(f"/DataFile/{key}")).content == b"after the failure"


# --- concurrency ---------------------------------------------------------------------------------
async def test_concurrent_put_get_delete_of_many_blobs(server: DataServer) -> None:
    before = server.blob_files()
    bodies = [os.urandom(n) for n in [0, 1, 100, 65_536, 300_000] * 8]
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 limits=httpx.Limits(max_connections=20)) as c:
        keys = await asyncio.gather(*(put_blob(c, b) for b in bodies))
        assert len(set(keys)) == len(bodies)
        got = await asyncio.gather(*(c.get(f"/DataFile/{k}") for k in keys))
        assert [g.content for g in got] == bodies
        deleted = await asyncio.gather(*(c.delete(f"/DataFile/{k}") for k in keys))
        assert {d.status_code for d in deleted} == {204}
    assert server.blob_files() == before and server.temp_files() == []


async def test_blob_deleted_during_a_read_is_still_read_whole(server: DataServer, client: httpx.AsyncClient) -> None:
    body = os.urandom(4 * MiB)
    key = await put_blob(client, body)
    async with httpx.AsyncClient(base_url=server.url) as reader_client:
        async with reader_client.stream("GET", f"/DataFile/{key}") as resp:
            chunks = resp.aiter_bytes()
            first = await chunks.__anext__()
            assert (await client.delete(f"/DataFile/{key}")).status_code == 204
            rest = b"".join([chunk async for chunk in chunks])
    assert first + rest == body


# --- the daemon as a separate process ------------------------------------------------------------
def _start_standalone(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """`python -m dmd.data`: only the data daemon, as a real process, on a port it binds itself."""
    data_path, log_path = tmp_path / "localData", tmp_path / "data-daemon.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("S3")},
           "S3DATAPATH": str(data_path), "LOG_LEVEL": "info"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dmd.data", "--bind", "127.0.0.1", "--port", "0"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log_path.read_text().splitlines():
            if '"data server listening"' in line:
                return proc, json.loads(line)["port"], data_path
        time.sleep(0.05)
    _stop(proc)
    raise RuntimeError(f"the data daemon did not start: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


async def _sigkill_mid_upload_then_restart(port: int, data_path: Path, kill: Callable[[], None],
                                           restart: Callable[[], int]) -> None:
    server = DataServer(port, data_path)
    _, writer = await _start_partial_upload(server, 10 * MiB, os.urandom(MiB))
    await wait_until(lambda: sum(p.stat().st_size for p in server.temp_files()) > 0, what="bytes on disk")
    kill()
    writer.close()
    assert server.temp_files() != []  # the crash did leave a partial upload behind
    server.port = restart()
    assert server.temp_files() == [] and server.blob_files() == []
    async with httpx.AsyncClient(base_url=server.url) as c:
        key = await put_blob(c, b"after restart")
        assert (await c.get(f"/DataFile/{key}")).content == b"after restart"


async def test_sigkill_mid_upload_standalone_daemon_serves_no_partial_blob(tmp_path: Path) -> None:
    proc, port, data_path = _start_standalone(tmp_path)
    procs = [proc]

    def restart() -> int:
        new, new_port, _ = _start_standalone(tmp_path)
        procs.append(new)
        return new_port

    try:
        await _sigkill_mid_upload_then_restart(port, data_path, lambda: _stop(proc), restart)
    finally:
        for p in procs:
            _stop(p)


async def test_sigkill_mid_upload_through_python_m_dmd_serves_no_partial_blob(tmp_path: Path) -> None:
    dmd = start_dmd(tmp_path)
    try:
        def restart() -> int:
            dmd.start()
            return dmd.data_port

        await _sigkill_mid_upload_then_restart(dmd.data_port, dmd.data_path, dmd.kill, restart)
    finally:
        dmd.stop()


def _read_chars(pid: int) -> int:
    """Bytes the process has read so far, files and sockets (/proc/<pid>/io `rchar`)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/<pid>/io")


async def test_daemon_streams_a_large_body_both_ways(tmp_path: Path) -> None:
    """Streaming, shown by behaviour rather than by memory figures: while the client pauses half-way
    through a 128 MiB PUT, most of that half is already in the daemon's upload file; while a reader
    pauses after 1 MiB of the GET, the daemon has read only what the socket buffers hold. A daemon
    that buffered bodies would show nothing on disk, or the whole file read."""
    size, half = 128 * MiB, 64 * MiB
    proc, port, data_path = _start_standalone(tmp_path)
    backend = DmdDataBackend("127.0.0.1", port, "us-east-1")
    paused, proceed = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in pattern_chunks(size):
            if sent == half:
                paused.set()
                await proceed.wait()
            yield chunk
            sent += len(chunk)

    def in_upload_files() -> int:
        return sum(f.stat().st_size for f in (data_path / ".tmp").iterdir() if f.is_file())

    try:
        put = asyncio.create_task(backend.put(body(), size))
        await asyncio.wait_for(paused.wait(), 120)
        written = 0
        for _ in range(600):
            written = in_upload_files()
            if written >= half // 2:
                break
            await asyncio.sleep(0.1)
        proceed.set()
        key = await asyncio.wait_for(put, 600)
        assert written >= half // 2, f"only {written / MiB:.1f} MiB of the {half // MiB} MiB sent were on disk"

        stream = backend.get(key).__aiter__()
        before = _read_chars(proc.pid)
        digest, got = hashlib.sha256(), 0
        while got < MiB:
            chunk = await stream.__anext__()
            digest.update(chunk)
            got += len(chunk)
        await asyncio.sleep(1.0)        # let the daemon fill the socket buffers and stop
        read_while_paused = _read_chars(proc.pid) - before
        async for chunk in stream:
            digest.update(chunk)
        await backend.close()
        assert read_while_paused < size // 4, \
            f"the daemon read {read_while_paused / MiB:.0f} MiB while the reader had taken {got / MiB:.0f} MiB"
        expected = hashlib.sha256()
        async for chunk in pattern_chunks(size):
            expected.update(chunk)
        assert digest.hexdigest() == expected.hexdigest()
    finally:
        proceed.set()
        _stop(proc)


# --- the gateway's data backends: one contract, two implementations ------------------------------
@dataclass
class BackendUnderTest:
    backend: DataBackend
    stored: Callable[[], int]  # how many blobs the store holds
    temp: Callable[[], int]    # how many partial uploads linger


@pytest_asyncio.fixture(loop_scope="module", params=["dmd", "memory"])
async def backend(request: pytest.FixtureRequest, server: DataServer) -> AsyncIterator[BackendUnderTest]:
    if request.param == "memory":
        mem = MemoryDataBackend("mem")
        yield BackendUnderTest(mem, lambda: len(mem), lambda: 0)
        return
    dmd_backend = DmdDataBackend("127.0.0.1", server.port, "us-east-1")
    baseline = len(server.blob_files())  # the module's server also holds other tests' blobs
    try:
        yield BackendUnderTest(dmd_backend, lambda: len(server.blob_files()) - baseline,
                               lambda: len(server.temp_files()))
    finally:
        await dmd_backend.close()


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


@pytest.mark.parametrize("known_size", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("parts", [[], [b"x"], [b"a" * 70_000, b"b" * 3 * MiB, b"c"]], ids=["0B", "1B", "3MiB"])
async def test_backend_put_then_get_round_trips(backend: BackendUnderTest, parts: list[bytes],
                                                known_size: bool) -> None:
    body = b"".join(parts)
    key = await backend.backend.put(chunks_of(*parts), len(body) if known_size else None)
    assert KEY_RE.match(key)
    assert await read_all(backend.backend.get(key)) == body


@pytest.mark.parametrize("start,end,expected", [
    (0, 0, b"0"), (9, 9, b"9"), (9, None, b"9"), (3, None, b"3456789"), (None, 2, b"012"),
    (2, 5, b"2345"), (5, 500, b"56789"),
])
async def test_backend_get_range_is_inclusive_and_clamped(backend: BackendUnderTest, start: int | None,
                                                          end: int | None, expected: bytes) -> None:
    key = await backend.backend.put(chunks_of(TEN), 10)
    assert await read_all(backend.backend.get(key, start, end)) == expected


@pytest.mark.parametrize("start,end", [(10, None), (10, 12)])
async def test_backend_get_range_past_end_raises_range_error(backend: BackendUnderTest, start: int,
                                                             end: int | None) -> None:
    key = await backend.backend.put(chunks_of(TEN), 10)
    with pytest.raises(DataRangeNotSatisfiable):
        await read_all(backend.backend.get(key, start, end))


@pytest.mark.parametrize("key", ["ab" * 20, "../../etc/passwd", "AB" * 20, ""])
async def test_backend_get_of_missing_or_malformed_key_raises_not_found(backend: BackendUnderTest,
                                                                        key: str) -> None:
    with pytest.raises(DataNotFound):
        await read_all(backend.backend.get(key))


async def test_backend_delete_is_idempotent(backend: BackendUnderTest) -> None:
    key = await backend.backend.put(chunks_of(b"bye"), 3)
    await backend.backend.delete(key)
    await backend.backend.delete(key)  # already deleted: not an error
    await backend.backend.delete("not-a-key")
    with pytest.raises(DataNotFound):
        await read_all(backend.backend.get(key))
    assert backend.stored() == 0


@pytest.mark.parametrize("known_size", [True, False], ids=["content-length", "chunked"])
async def test_backend_put_aborts_and_reraises_when_the_source_fails(backend: BackendUnderTest,
                                                                     known_size: bool) -> None:
    class BadChecksum(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * MiB
        yield b"b" * MiB
        raise BadChecksum("mismatch detected mid-stream")

    with pytest.raises(BadChecksum):
        await backend.backend.put(failing(), 3 * MiB if known_size else None)
    await wait_until(lambda: backend.temp() == 0, what="the aborted upload's temp file removal")
    assert backend.stored() == 0


@pytest.mark.parametrize("size", [5, 20], ids=["body-longer", "body-shorter"])
async def test_backend_put_with_wrong_size_raises_integrity_error_and_stores_nothing(
        backend: BackendUnderTest, size: int) -> None:
    with pytest.raises(DataIntegrityError):
        await backend.backend.put(chunks_of(TEN), size)
    await wait_until(lambda: backend.temp() == 0, what="the aborted upload's temp file removal")
    assert backend.stored() == 0


async def test_backend_is_healthy(backend: BackendUnderTest) -> None:
    assert await backend.backend.healthy() is True


async def test_dmd_backend_without_a_server_is_unhealthy_and_raises_unavailable() -> None:
    backend = DmdDataBackend("127.0.0.1", free_port(), "us-east-1", connect_timeout=1.0)
    try:
        assert await backend.healthy() is False
        with pytest.raises(DataUnavailable):
            await backend.put(chunks_of(b"x"), 1)
        with pytest.raises(DataUnavailable):
            await read_all(backend.get("ab" * 20))
        with pytest.raises(DataUnavailable):
            await backend.delete("ab" * 20)
    finally:
        await backend.close()


def _config(data_backend: str = "multiple") -> Config:
    return Config(data_backend=data_backend)


async def test_make_data_backend_picks_by_location_type() -> None:
    file_loc = Location("us-east-1", "file", "us-east-1", True)
    mem_loc = Location("memloc", "mem", "memloc", False)
    dmd_backend = make_data_backend(_config(), file_loc)
    assert isinstance(dmd_backend, DmdDataBackend)
    assert (dmd_backend.host, dmd_backend.port, dmd_backend.location_name) == ("localhost", 9991, "us-east-1")
    mem = make_data_backend(_config(), mem_loc)
    assert isinstance(mem, MemoryDataBackend)
    assert make_data_backend(_config(), mem_loc) is mem  # one process-wide store
    assert make_data_backend(_config("mem"), file_loc) is mem  # S3DATA=mem: every location in memory
    with pytest.raises(NotImplementedError, match="gcp"):
        make_data_backend(_config(), Location("g", "gcp", "g", False))
    # issue 16: S3DATA=file puts every location on the dmd; a file location may name its own dmd
    azure = Location("az", "azure", "az", False, {"azureContainerName": "c"})
    assert isinstance(make_data_backend(_config("file"), azure), DmdDataBackend)
    own = make_data_backend(_config(), Location("far", "file", "far", False, {"host": "10.0.0.9", "port": 9999}))
    assert isinstance(own, DmdDataBackend) and (own.host, own.port) == ("10.0.0.9", 9999)


# --- heavy ---------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_one_gib_streamed_round_trip_keeps_checksum(server: DataServer) -> None:
    size = 1 << 30
    backend = DmdDataBackend("127.0.0.1", server.port, "us-east-1")
    try:
        sent = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            async for chunk in pattern_chunks(size):
                sent.update(chunk)
                yield chunk

        key = await backend.put(body(), size)
        got = hashlib.sha256()
        n = 0
        async for chunk in backend.get(key):
            got.update(chunk)
            n += len(chunk)
        assert n == size and got.hexdigest() == sent.hexdigest()
        await backend.delete(key)
    finally:
        await backend.close()
