"""The dmd secret (issue 17), against real `python -m dmd` / `python -m gateway` processes.

With DMD_SECRET on both sides S3 works end to end; a socket.io client that does not present the
secret in its handshake's auth payload is refused and gets no call served; a /DataFile request
without the `x-dmd-secret` header gets 401 (403 with a wrong one) and nothing is stored, read or
deleted. Without a secret everything works as before (the original CloudServer gateway sends
none), and a dmd bound to a non-loopback address without one warns loudly at start.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
import httpx
import pytest
import pytest_asyncio
import socketio

from gateway.metadata import RemoteMetadataClient
from shared.metastore import MetadataError
from tests.integration.conftest import make_client
from tests.procs import Dmd, Gateway, start_dmd, start_gateway

SECRET = "s3cr3t-for-tests_0123456789"
NS = "/MDFile/metadata"              # docs/protocol.md#transport
HEADER = "x-dmd-secret"
WARNING = "WITHOUT a dmd secret"
NO_ANSWER_S = 1.0                    # how long a refused caller waits for an answer that must not come


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secret_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("secret-dmd"), env={"DMD_SECRET": SECRET})
    yield d
    d.stop()


@pytest.fixture(scope="module")
def secret_gateway(tmp_path_factory: pytest.TempPathFactory, secret_dmd: Dmd) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("secret-gw"), secret_dmd, env={"DMD_SECRET": SECRET})
    yield g
    g.stop()


@pytest.fixture(scope="module")
def open_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    """No secret anywhere (tests/procs.py drops an inherited DMD_SECRET)."""
    d = start_dmd(tmp_path_factory.mktemp("open-dmd"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory: pytest.TempPathFactory, open_dmd: Dmd) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("open-gw"), open_dmd)
    yield g
    g.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def blob_files(dmd: Dmd) -> set[Path]:
    """Every stored blob and every upload in progress of the dmd's data directory."""
    return {p for p in dmd.data_path.glob("*/*") if p.is_file()}


def data_url(dmd: Dmd, key: str = "") -> str:
    return f"http://127.0.0.1:{dmd.data_port}/DataFile" + (f"/{key}" if key else "")


async def authorized_client(dmd: Dmd, secret: str = SECRET) -> RemoteMetadataClient:
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port, call_timeout_ms=5000, secret=secret)
    await client.connect()
    return client


def s3_round_trip(gateway: Gateway, bucket: str) -> None:
    s3 = make_client(gateway.url)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello dmd secret")
    assert s3.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello dmd secret"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a/b.txt"]
    s3.delete_object(Bucket=bucket, Key="a/b.txt")
    s3.delete_bucket(Bucket=bucket)


# --- raw socket.io over one websocket (engine.io 4 / socket.io 5 text frames) ----------------------
class RawSocket:
    """Speaks the frames by hand, so it can send a call even after the namespace refused it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def receive(self, timeout: float) -> str | None:
        """The next socket.io frame (engine.io pings answered on the way); None on timeout or close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                msg = await self.ws.receive(timeout=remaining)
            except asyncio.TimeoutError:
                return None
            if msg.type != aiohttp.WSMsgType.TEXT:
                return None
            if msg.data == "2":               # engine.io ping
                await self.ws.send_str("3")
                continue
            return msg.data
        return None

    async def join(self, auth: Any) -> str:
        """Send the namespace CONNECT packet with `auth`; the server's answer frame."""
        await self.ws.send_str(f"40{NS}," + json.dumps(auth) if auth is not None else f"40{NS},")
        answer = await self.receive(5)
        assert answer is not None, "no answer to the namespace CONNECT"
        return answer

    async def call(self, ack_id: int, *args: Any) -> str | None:
        """Emit a `call` event with an ack id; the ack frame, or None when none comes."""
        await self.ws.send_str(f"42{NS},{ack_id}" + json.dumps(["call", *args]))
        return await self.receive(NO_ANSWER_S)


async def raw_socket(session: aiohttp.ClientSession, dmd: Dmd) -> RawSocket:
    ws = await session.ws_connect(f"ws://127.0.0.1:{dmd.metadata_port}/socket.io/?EIO=4&transport=websocket")
    sock = RawSocket(ws)
    opened = await sock.receive(5)
    assert opened is not None and opened.startswith("0{"), opened   # the engine.io OPEN packet
    return sock


def put_params(key: str) -> dict[str, Any]:
    return {"rpcArgs": [key, json.dumps({"v": key}), {}], "subLevel": ["secret-test"], "reqUids": "t"}


# --- with the secret on both sides -----------------------------------------------------------------
def test_s3_works_end_to_end_with_the_secret_on_both_sides(secret_gateway: Gateway, secret_dmd: Dmd) -> None:
    before = blob_files(secret_dmd)
    s3 = make_client(secret_gateway.url)
    s3.create_bucket(Bucket="secret-e2e")
    s3.put_object(Bucket="secret-e2e", Key="k", Body=b"x" * 1000)
    stored = blob_files(secret_dmd) - before
    assert len(stored) == 1 and next(iter(stored)).read_bytes() == b"x" * 1000   # the bytes went to the dmd
    assert s3.get_object(Bucket="secret-e2e", Key="k")["Body"].read() == b"x" * 1000
    assert s3.get_object(Bucket="secret-e2e", Key="k", Range="bytes=10-19")["Body"].read() == b"x" * 10
    s3.delete_object(Bucket="secret-e2e", Key="k")
    assert blob_files(secret_dmd) == before
    s3_round_trip(secret_gateway, "secret-e2e-2")
    assert "refused" not in secret_dmd.log_text()


@pytest.mark.parametrize("auth", [None, {}, {"secret": "wrong"}, {"secret": SECRET[:-1]}, {"secret": 42},
                                  {"secret": SECRET + "x"}],
                         ids=["no-auth", "empty-auth", "wrong", "prefix", "not-a-string", "longer"])
async def test_socketio_client_without_the_secret_is_refused(secret_dmd: Dmd, auth: Any) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(f"http://127.0.0.1:{secret_dmd.metadata_port}", namespaces=[NS],
                              transports=["websocket"], auth=auth, wait_timeout=5)
        assert NS not in sio.namespaces
    finally:
        await sio.disconnect()
    assert "metadata connection refused" in secret_dmd.log_text()


async def test_socketio_client_with_the_secret_is_served(secret_dmd: Dmd) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(f"http://127.0.0.1:{secret_dmd.metadata_port}", namespaces=[NS],
                      transports=["websocket"], auth={"secret": SECRET}, wait_timeout=5)
    try:
        err, manifest = await sio.call("call", ("getManifest", None), namespace=NS, timeout=5)
        assert err is None and {"name": "put"} in manifest["api"]
    finally:
        await sio.disconnect()


async def test_refused_connection_gets_no_call_served(secret_dmd: Dmd) -> None:
    """A client that sends calls anyway, after the refusal: no answer, nothing written."""
    async with aiohttp.ClientSession() as session:
        intruder = await raw_socket(session, secret_dmd)
        answer = await intruder.join({"secret": "wrong"})
        assert answer.startswith(f"44{NS},") and "unauthorized" in answer   # CONNECT_ERROR
        assert await intruder.call(1, "put", put_params("intruder")) is None
        assert await intruder.call(2, "getUUID", None) is None
        await intruder.ws.close()

        # The same frames with the secret: joined, and the call is answered (the harness works).
        friend = await raw_socket(session, secret_dmd)
        assert (await friend.join({"secret": SECRET})).startswith(f"40{NS},")   # CONNECT ok
        assert (await friend.call(1, "put", put_params("friend")) or "").startswith(f"43{NS},1[null")
        await friend.ws.close()

    client = await authorized_client(secret_dmd)
    try:
        assert json.loads(await client.get(["secret-test"], "friend")) == {"v": "friend"}
        with pytest.raises(MetadataError) as exc:
            await client.get(["secret-test"], "intruder")
        assert exc.value.type == "ObjNotFound"
    finally:
        await client.close()


async def test_gateway_client_with_a_wrong_secret_cannot_connect(secret_dmd: Dmd) -> None:
    client = RemoteMetadataClient("127.0.0.1", secret_dmd.metadata_port, call_timeout_ms=1000, secret="wrong")
    try:
        with pytest.raises(MetadataError) as exc:
            await client.connect()
        assert exc.value.type == "ECONNREFUSED"
    finally:
        await client.close()


@pytest.mark.parametrize("headers,status,error", [({}, 401, "Unauthorized"),
                                                  ({HEADER: "wrong"}, 403, "AccessDenied"),
                                                  ({HEADER: SECRET[:-1]}, 403, "AccessDenied"),
                                                  ({HEADER: ""}, 403, "AccessDenied")],
                         ids=["no-header", "wrong", "prefix", "empty"])
async def test_datafile_refuses_a_caller_without_the_secret(secret_dmd: Dmd, http: httpx.AsyncClient,
                                                            headers: dict[str, str], status: int,
                                                            error: str) -> None:
    # A blob stored by a legitimate caller, for the GET and DELETE attempts.
    resp = await http.put(data_url(secret_dmd), content=b"confidential bytes", headers={HEADER: SECRET})
    assert resp.status_code == 201
    key = resp.headers["Location"].rsplit("/", 1)[1]
    before = blob_files(secret_dmd)

    put = await http.put(data_url(secret_dmd), content=b"intruder bytes", headers=headers)
    assert put.status_code == status and json.loads(put.content)["errorType"] == error
    assert "Location" not in put.headers
    get = await http.get(data_url(secret_dmd, key), headers=headers)
    assert get.status_code == status and b"confidential" not in get.content
    ranged = await http.get(data_url(secret_dmd, key), headers={**headers, "Range": "bytes=0-3"})
    assert ranged.status_code == status and b"conf" not in ranged.content
    delete = await http.delete(data_url(secret_dmd, key), headers=headers)
    assert delete.status_code == status
    usage = await http.get(data_url(secret_dmd) + "?diskUsage", headers=headers)
    assert usage.status_code == status and b"available" not in usage.content

    assert blob_files(secret_dmd) == before                  # nothing stored, nothing deleted
    assert (await http.get(data_url(secret_dmd, key), headers={HEADER: SECRET})).content == b"confidential bytes"
    assert "data request refused" in secret_dmd.log_text()


# --- without a secret ------------------------------------------------------------------------------
def test_without_a_secret_s3_works_as_before(open_gateway: Gateway, open_dmd: Dmd) -> None:
    s3_round_trip(open_gateway, "open-e2e")
    assert WARNING not in open_dmd.log_text()   # bound to 127.0.0.1: nothing to warn about


@pytest.mark.parametrize("auth", [None, {"secret": "anything"}], ids=["no-auth", "some-auth"])
async def test_without_a_secret_any_socketio_client_is_served(open_dmd: Dmd, auth: Any) -> None:
    """The original CloudServer gateway sends no auth payload: it must keep working."""
    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(f"http://127.0.0.1:{open_dmd.metadata_port}", namespaces=[NS],
                      transports=["websocket"], auth=auth, wait_timeout=5)
    try:
        err, reply = await sio.call("call", ("put", put_params("open")), namespace=NS, timeout=5)
        assert err is None
    finally:
        await sio.disconnect()


async def test_without_a_secret_datafile_needs_no_header(open_dmd: Dmd, http: httpx.AsyncClient) -> None:
    before = blob_files(open_dmd)
    resp = await http.put(data_url(open_dmd), content=b"plain")
    assert resp.status_code == 201
    key = resp.headers["Location"].rsplit("/", 1)[1]
    assert len(blob_files(open_dmd) - before) == 1
    assert (await http.get(data_url(open_dmd, key))).content == b"plain"
    assert (await http.delete(data_url(open_dmd, key))).status_code == 204
    assert blob_files(open_dmd) == before


# --- the start-up warning ----------------------------------------------------------------------------
def start_dmd_on_all_interfaces(tmp: Path, env: dict[str, str]) -> Dmd:
    d = start_dmd(tmp, env=env, start=False)
    d.args[d.args.index("--bind") + 1] = "0.0.0.0"
    return d.start()


@pytest.mark.parametrize("secret", ["", SECRET], ids=["without-secret", "with-secret"])
def test_non_loopback_bind_without_a_secret_warns_loudly(tmp_path: Path, secret: str) -> None:
    d = start_dmd_on_all_interfaces(tmp_path, {"DMD_SECRET": secret} if secret else {})
    try:
        log = d.log_text()
    finally:
        d.stop()
    warnings = [line for line in log.splitlines() if WARNING in line]
    if secret:
        assert warnings == []
    else:
        # Both ports, each as a log record and as a plain line on stderr (seen at any log level).
        assert any("metadata RPC" in w and w.startswith("dmd: WARNING") for w in warnings), log
        assert any("/DataFile" in w and w.startswith("dmd: WARNING") for w in warnings), log
        records = [json.loads(w) for w in warnings if w.startswith("{")]
        assert len(records) == 2 and {r["level"] for r in records} == {"warning"}, log
