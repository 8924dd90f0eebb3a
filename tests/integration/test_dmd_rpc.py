"""The dmd's metadata RPC, end to end against the real `python -m dmd` process.

Part of it uses a raw python-socketio client written from docs/protocol.md
alone (so the server is checked against the protocol, not against our own
client); the rest drives `RemoteMetadataClient`, the gateway's client:
reconnection, timeouts, in-flight failure, stream backpressure. Durability is
checked by SIGKILLing the daemon during a put storm.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import socketio

from gateway.metadata import LocalMetadataClient, RemoteMetadataClient
from shared.metastore import MemoryKV, MetadataError, MetaStore, RocksKV
from tests.procs import REPO, Dmd, start_dmd

NS = "/MDFile/metadata"          # docs/protocol.md#transport, spelled out here on purpose: the raw client must not import shared.rpc
MANIFEST = ["createReadStream", "rawListKeys", "getUUID", "put", "del", "get", "getDiskUsage"]
SMALL_ACK_TIMEOUT_MS = 500
WINDOW = 5                       # streamMaxPendingAck default of config.json


def write_config(tmp: Path, **metadata_daemon: Any) -> Path:
    cfg = json.loads((REPO / "config.json").read_text())
    cfg["metadataDaemon"].update(metadata_daemon)
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def rpc_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("rpc-dmd"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def impatient_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    """A dmd whose stream ack timeout is 500 ms, so flow-control tests are quick."""
    tmp = tmp_path_factory.mktemp("impatient-dmd")
    conf = write_config(tmp, streamAckTimeoutMs=SMALL_ACK_TIMEOUT_MS)
    d = start_dmd(tmp, env={"S3_CONFIG_FILE": str(conf)})
    yield d
    d.stop()


class RawClient:
    """A socket.io client that knows only docs/protocol.md (call envelope, stream events)."""

    def __init__(self, ack_streams: bool = True, ack_gate: asyncio.Event | None = None,
                 ack_first: int | None = None) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.ack_streams = ack_streams
        self.ack_first = ack_first  # when given, only the first N packets of a stream are acked
        self.ack_gate = ack_gate    # when given, every stream-data ack waits for it
        self.packets: dict[str, list[list[Any]]] = {}
        self.ended: set[str] = set()
        self.errors: dict[str, Any] = {}
        self.changed = asyncio.Event()
        self._never = asyncio.Event()
        self.sio.on("stream-data", self._on_data, namespace=NS)
        self.sio.on("stream-end", self._on_end, namespace=NS)
        self.sio.on("stream-error", self._on_error, namespace=NS)

    async def open(self, port: int) -> "RawClient":
        await self.sio.connect(f"http://127.0.0.1:{port}", namespaces=[NS], transports=["websocket"])
        return self

    async def close(self) -> None:
        self._never.set()
        await self.sio.disconnect()

    async def call(self, *args: Any, timeout: float = 10) -> list[Any]:
        """Emit `call` with the given arguments; the ack's positional values as a list."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.sio.emit("call", tuple(args), namespace=NS, callback=lambda *a: done.set_result(list(a)))
        return await asyncio.wait_for(done, timeout)

    async def _on_data(self, payload: dict) -> None:
        received = self.packets.setdefault(payload["streamId"], [])
        received.append(payload["data"])
        self.changed.set()
        if not self.ack_streams or (self.ack_first is not None and len(received) > self.ack_first):
            await self._never.wait()   # the ack is the handler's return: never send it
        if self.ack_gate is not None:
            await self.ack_gate.wait()

    async def _on_end(self, payload: dict) -> None:
        self.ended.add(payload["streamId"])
        self.changed.set()

    async def _on_error(self, payload: dict) -> None:
        self.errors[payload["streamId"]] = payload["error"]
        self.changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            assert remaining > 0, "timed out waiting for stream events"
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass


async def wait_until(predicate: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def params(rpc_args: list[Any], sub_level: list[str] | None = None) -> dict[str, Any]:
    return {"rpcArgs": rpc_args, "subLevel": sub_level if sub_level is not None else [], "reqUids": "test-uid"}


async def stats_of(port: int) -> dict:
    raw = await RawClient().open(port)
    try:
        err, result = await raw.call("getStats", params([]))
        assert err is None
        return result
    finally:
        await raw.close()


async def wait_open_streams_zero(port: int, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = await stats_of(port)
        if stats["open_streams"] == 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def connected(port: int, call_timeout_ms: int = 30_000) -> AsyncIterator[RemoteMetadataClient]:
    client = RemoteMetadataClient("127.0.0.1", port, call_timeout_ms=call_timeout_ms)
    try:
        await client.connect()
        yield client
    finally:
        await client.close()


async def fill(port: int, bucket: str, n: int, value_size: int = 10, concurrency: int = 200) -> None:
    async with connected(port) as client:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.put([bucket], f"key-{i:06d}", json.dumps({"i": i, "pad": "x" * value_size}))
        await asyncio.gather(*(one(i) for i in range(n)))


# ---- the raw protocol ----------------------------------------------------------------

async def test_get_manifest_lists_the_metadata_calls(rpc_dmd: Dmd) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        err, manifest = await raw.call("getManifest", {})
        assert err is None and manifest["apiVersion"] == "1.0"
        names = [entry["name"] for entry in manifest["api"]]
        assert names[:len(MANIFEST)] == MANIFEST and "getManifest" not in names
    finally:
        await raw.close()


async def test_put_get_del_roundtrip_and_missing_key_is_obj_not_found(rpc_dmd: Dmd) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        value = '{"owner-id":"79a5","content-length":3}'
        reply = await raw.call("put", params(["photo.jpg", value, {}], ["rawbucket"]))
        assert reply[0] is None and (len(reply) == 1 or reply[1] is None)
        assert await raw.call("get", params(["photo.jpg", {}], ["rawbucket"])) == [None, value]
        # sublevels are isolated: the same key in another sublevel does not exist
        err = (await raw.call("get", params(["photo.jpg", {}], ["rawbucket2"])))[0]
        assert err["type"] == "ObjNotFound" and err["code"] == 404 and err["is_arsenal_error"] is True
        assert (await raw.call("del", params(["photo.jpg", {}], ["rawbucket"])))[0] is None
        err = (await raw.call("get", params(["photo.jpg", {}], ["rawbucket"])))[0]
        assert err["type"] == "ObjNotFound" and err["ObjNotFound"] is True
        # deleting a missing key is not an error (docs/protocol.md#calls)
        assert (await raw.call("del", params(["photo.jpg", {}], ["rawbucket"])))[0] is None
    finally:
        await raw.close()


async def test_versioned_put_replies_a_version_id_string(rpc_dmd: Dmd) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        err, reply = await raw.call("put", params(["v.txt", '{"a":1}', {"versioning": True}], ["vbucket"]))
        assert err is None and isinstance(reply, str)
        vid = json.loads(reply)["versionId"]
        assert len(vid) >= 28 and vid.endswith(tuple("0123456789"))
        err, stored = await raw.call("get", params(["v.txt", {"versionId": vid}], ["vbucket"]))
        assert err is None and json.loads(stored) == {"a": 1, "versionId": vid}
    finally:
        await raw.close()


async def test_uuid_and_disk_usage_calls(rpc_dmd: Dmd) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        err, uuid_ = await raw.call("getUUID", params([]))
        assert err is None and len(uuid_) == 36
        assert uuid_ == (rpc_dmd.metadata_path / "uuid").read_text().strip()
        err, usage = await raw.call("getDiskUsage", params([]))
        assert err is None and usage["total"] >= usage["free"] >= 0 and "available" in usage
    finally:
        await raw.close()


async def test_create_read_stream_with_manual_acks_delivers_items_in_order(rpc_dmd: Dmd) -> None:
    await fill(rpc_dmd.metadata_port, "streambucket", 300)
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        err, marker = await raw.call("createReadStream", params([{"gte": "key-000010", "lt": "key-000250"}],
                                                               ["streambucket"]))
        assert err is None and marker["readable"] is True and marker["writable"] is False
        sid = marker["$streamId"]
        await raw.wait_for(lambda: sid in raw.ended)
        items = [item for packet in raw.packets[sid] for item in packet]
        assert [i["key"] for i in items] == [f"key-{i:06d}" for i in range(10, 250)]
        assert json.loads(items[0]["value"])["i"] == 10
        assert len(raw.packets[sid]) < len(items), "packets must carry several items"
        err, marker = await raw.call("rawListKeys", params([{}]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: sid in raw.ended)
        keys = [k for packet in raw.packets[sid] for k in packet]
        assert "!streambucket!key-000010" in keys
    finally:
        await raw.close()


BAD_CALLS = [
    pytest.param(("nosuchcall", params([])), "Unknown remote call nosuchcall in namespace /MDFile/metadata",
                 id="unknown-call"),
    pytest.param(("put", params([42, "v", {}], ["b"])), "rpcArgs[0] (key) must be a string", id="int-key"),
    pytest.param(("put", params(["k", {"not": "a string"}, {}], ["b"])), "rpcArgs[1] (value) must be a string",
                 id="object-value"),
    pytest.param(("put", params(["k"], ["b"])), "rpcArgs[1] (value) must be a string", id="missing-value"),
    pytest.param(("get", params(["k", "opts"], ["b"])), "rpcArgs[1] (options) must be an object",
                 id="string-options"),
    pytest.param(("get", {"rpcArgs": ["k", {}]}), "missing subLevel", id="missing-sublevel"),
    pytest.param(("get", {"rpcArgs": ["k", {}], "subLevel": "b"}), "subLevel must be an array", id="string-sublevel"),
    pytest.param(("get", {"rpcArgs": ["k", {}], "subLevel": [1]}), "subLevel[0] must be a non-empty string",
                 id="int-in-sublevel"),
    pytest.param(("get", {"rpcArgs": "k", "subLevel": ["b"]}), "rpcArgs must be an array", id="string-rpcargs"),
    pytest.param(("get", "not-an-object"), "params must be an object", id="string-params"),
    pytest.param(("createReadStream", params(["nope"], ["b"])), "(options) must be an object", id="stream-options"),
    pytest.param((42, params([])), "call name must be a string", id="int-call-name"),
    pytest.param((), "call name must be a string", id="no-arguments"),
]


@pytest.mark.parametrize("args,message", BAD_CALLS)
async def test_bad_input_gets_an_error_reply_and_the_connection_keeps_serving(
        rpc_dmd: Dmd, args: tuple, message: str) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    try:
        err = (await raw.call(*args))[0]
        assert err["type"] == "InvalidArgument" and err["code"] == 400
        assert message in err["description"]
        assert (await raw.call("getUUID", params([])))[0] is None
    finally:
        await raw.close()


async def test_huge_value_is_refused_and_the_daemon_keeps_serving(rpc_dmd: Dmd) -> None:
    raw = await RawClient().open(rpc_dmd.metadata_port)
    other = await RawClient().open(rpc_dmd.metadata_port)
    try:
        huge = "x" * (33 * 1024 * 1024)
        err = (await raw.call("put", params(["big", huge, {}], ["b"]), timeout=30))[0]
        assert err["type"] == "InvalidArgument" and "value larger than" in err["description"]
        assert (await raw.call("getUUID", params([])))[0] is None
        assert (await other.call("getUUID", params([])))[0] is None
    finally:
        await raw.close()
        await other.close()


# ---- batching --------------------------------------------------------------------

async def test_ten_clients_thousand_concurrent_puts_each_are_acked_readable_and_batched(rpc_dmd: Dmd) -> None:
    clients = [RemoteMetadataClient("127.0.0.1", rpc_dmd.metadata_port) for _ in range(10)]
    await asyncio.gather(*(c.connect() for c in clients))
    try:
        async def storm(c: RemoteMetadataClient, n: int) -> None:
            results = await asyncio.gather(*(c.put(["storm"], f"c{n}-{i:04d}", f'{{"n":{n},"i":{i}}}')
                                             for i in range(1000)))
            assert results == [None] * 1000
        await asyncio.gather(*(storm(c, n) for n, c in enumerate(clients)))
        assert await clients[3].get(["storm"], "c7-0999") == '{"n":7,"i":999}'
        count = 0
        async for item in clients[0].read_stream(["storm"], {}):
            count += 1
        assert count == 10_000
        stats = await clients[0].get_stats()
        assert stats["max_batch_ops"] > 1
    finally:
        await asyncio.gather(*(c.close() for c in clients))


# ---- stream flow control --------------------------------------------------------

async def test_consumer_that_never_acks_gets_at_most_the_window_then_a_timeout_error(impatient_dmd: Dmd) -> None:
    port = impatient_dmd.metadata_port
    await fill(port, "window", 400, value_size=2000)   # ~800 KB: many 64 KiB packets
    raw = await RawClient(ack_streams=False).open(port)
    try:
        err, marker = await raw.call("createReadStream", params([{}], ["window"]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: sid in raw.errors, timeout=5)
        # Slow start: before any ack only one packet may be in flight.
        assert len(raw.packets[sid]) == 1
        assert raw.errors[sid]["code"] == "ETIMEDOUT"
        assert raw.errors[sid]["info"] == f"stream timeout: did not receive ack after {SMALL_ACK_TIMEOUT_MS}ms"
        assert sid not in raw.ended
        stats = await wait_open_streams_zero(port)
        assert stats["open_streams"] == 0
    finally:
        await raw.close()


async def test_consumer_that_stops_acking_gets_at_most_the_window_more(impatient_dmd: Dmd) -> None:
    port = impatient_dmd.metadata_port
    await fill(port, "window2", 1000, value_size=2000)   # ~2 MB: far more than 8 + 5 packets
    acked = 8   # enough acks to open the slow-start window to its maximum
    raw = await RawClient(ack_first=acked).open(port)
    try:
        _, marker = await raw.call("createReadStream", params([{}], ["window2"]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: sid in raw.errors, timeout=5)
        assert len(raw.packets[sid]) == acked + WINDOW
        assert raw.errors[sid]["code"] == "ETIMEDOUT"
        assert (await wait_open_streams_zero(port))["open_streams"] == 0
    finally:
        await raw.close()


async def test_hangup_and_disconnect_free_the_server_stream(impatient_dmd: Dmd) -> None:
    port = impatient_dmd.metadata_port
    await fill(port, "hangup", 400, value_size=2000)
    raw = await RawClient(ack_streams=False).open(port)
    try:
        _, marker = await raw.call("createReadStream", params([{}], ["hangup"]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: len(raw.packets.get(sid, ())) >= 1)
        assert (await stats_of(port))["open_streams"] == 1
        await raw.sio.emit("stream-hangup", {"streamId": sid}, namespace=NS)
        # freed well before the 500 ms ack timeout could have done it
        stats = await wait_open_streams_zero(port, timeout=0.3)
        assert stats["open_streams"] == 0 and sid not in raw.errors
        # a second stream, abandoned by disconnecting
        _, marker = await raw.call("createReadStream", params([{}], ["hangup"]))
        await raw.wait_for(lambda: len(raw.packets.get(marker["$streamId"], ())) >= 1)
    finally:
        await raw.close()
    assert (await wait_open_streams_zero(port, timeout=0.3))["open_streams"] == 0


async def test_stalled_remote_consumer_stops_acking_and_then_sees_the_timeout_error(impatient_dmd: Dmd) -> None:
    port = impatient_dmd.metadata_port
    await fill(port, "stall", 400, value_size=2000)
    async with connected(port) as client:
        stream = client.read_stream(["stall"], {})
        first = await anext(stream)
        assert first["key"] == "key-000000"
        await asyncio.sleep(SMALL_ACK_TIMEOUT_MS / 1000 * 3)   # stop consuming: acks must stop too
        received = 1
        with pytest.raises(MetadataError) as exc:
            async for _ in stream:
                received += 1
        assert exc.value.type == "ETIMEDOUT"
        assert received < 400
        # the connection is still good for other calls
        assert len(await client.get_uuid()) == 36


async def test_remote_consumer_closing_early_hangs_up(impatient_dmd: Dmd) -> None:
    port = impatient_dmd.metadata_port
    await fill(port, "early", 400, value_size=2000)
    async with connected(port) as client:
        stream = client.read_stream(["early"], {"gte": "key-000100"})
        assert (await anext(stream))["key"] == "key-000100"
        await stream.aclose()
        assert (await wait_open_streams_zero(port, timeout=0.3))["open_streams"] == 0


async def test_listing_100k_keys_streams_whole_and_in_order(tmp_path: Path) -> None:
    n, value = 100_000, "v" * 1000
    d = start_dmd(tmp_path, start=False)
    store = MetaStore(RocksKV(str(d.metadata_path)), metadata_path=str(d.metadata_path))
    for start in range(0, n, 5000):
        await asyncio.gather(*(store.put(["big"], f"k{i:07d}", value, {}) for i in range(start, start + 5000)))
    await store.close()
    d.start()
    client = RemoteMetadataClient("127.0.0.1", d.metadata_port)
    try:
        await client.connect()
        count = 0
        async for item in client.read_stream(["big"], {}):
            if count % 5000 == 0:
                assert item["key"] == f"k{count:07d}"
            count += 1
        assert count == n
    finally:
        await client.close()
        d.stop()


class CountingKV(MemoryKV):
    """The in-memory store, counting the entries its range iterators have produced."""

    def __init__(self) -> None:
        super().__init__()
        self.entries_read = 0

    def iterate(self, *args: Any, **kwargs: Any):
        for item in super().iterate(*args, **kwargs):
            self.entries_read += 1
            yield item


async def test_a_stalled_consumer_stops_the_dmd_reading_the_listing() -> None:
    """Bounded memory, shown by behaviour rather than by memory figures: when the consumer stops
    acking, the dmd has read from the store only what its ack window needed, not the listing."""
    from dmd.metadata import MetadataServer
    from tests.procs import free_port
    n = 20_000
    kv = CountingKV()
    store = MetaStore(kv)
    for start in range(0, n, 5000):
        await asyncio.gather(*(store.put(["big"], f"k{i:07d}", "v" * 1000, {}) for i in range(start, start + 5000)))
    kv.entries_read = 0
    server = MetadataServer(store, stream_ack_timeout_ms=SMALL_ACK_TIMEOUT_MS)
    port = free_port()
    await server.start("127.0.0.1", port)
    raw = await RawClient(ack_first=8).open(port)
    try:
        _, marker = await raw.call("createReadStream", params([{}], ["big"]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: sid in raw.errors, timeout=10)     # the ack timeout ended it
        sent = sum(len(packet) for packet in raw.packets[sid])
        assert len(raw.packets[sid]) == 8 + WINDOW
        # What was sent, plus at most one read-ahead chunk of the engine: far from the 20,000 keys.
        assert sent <= kv.entries_read < n // 4, (sent, kv.entries_read)
    finally:
        await raw.close()
        await server.close()
        await store.close()


async def test_source_read_error_is_forwarded_as_stream_error() -> None:
    """In process, to close the engine under an open stream: its next read fails."""
    from dmd.metadata import MetadataServer
    from tests.procs import free_port
    store = MetaStore(MemoryKV())
    await asyncio.gather(*(store.put(["src"], f"k{i:05d}", "v" * 2000, {}) for i in range(3000)))
    server = MetadataServer(store, stream_ack_timeout_ms=5000)
    port = free_port()
    await server.start("127.0.0.1", port)
    gate = asyncio.Event()
    raw = await RawClient(ack_gate=gate).open(port)
    try:
        _, marker = await raw.call("createReadStream", params([{}], ["src"]))
        sid = marker["$streamId"]
        await raw.wait_for(lambda: len(raw.packets.get(sid, ())) >= 1)
        await store.close()
        gate.set()
        await raw.wait_for(lambda: sid in raw.errors or sid in raw.ended)
        assert sid not in raw.ended
        assert raw.errors[sid]["type"] == "InternalError" and "closed" in raw.errors[sid]["description"]
        assert server.stats()["open_streams"] == 0
    finally:
        await raw.close()
        await server.close()


async def test_remote_client_reconnects_after_a_server_side_disconnect() -> None:
    """socket.io clients do not retry after a server "disconnect" packet; ours must."""
    from dmd.metadata import MetadataServer
    from tests.procs import free_port
    server = MetadataServer(MetaStore(MemoryKV()))
    port = free_port()
    await server.start("127.0.0.1", port)
    try:
        async with connected(port, call_timeout_ms=5000) as client:
            await client.put(["s"], "k", "v")
            for sid, _ in list(server.sio.manager.get_participants(NS, None)):
                await server.sio.disconnect(sid, namespace=NS)
            await wait_until(lambda: not client.connected)
            assert await client.get(["s"], "k") == "v"
    finally:
        await server.close()
        await server.store.close()


# ---- durability and start-up ------------------------------------------------------

async def test_sigkill_during_put_storm_loses_no_acknowledged_write(tmp_path: Path) -> None:
    d = start_dmd(tmp_path)
    acked: dict[str, str] = {}
    client = RemoteMetadataClient("127.0.0.1", d.metadata_port, call_timeout_ms=3000)
    try:
        await client.connect()

        async def writer(w: int) -> None:
            for i in range(100_000):
                key, val = f"w{w}-{i:06d}", f'{{"w":{w},"i":{i}}}'
                try:
                    await client.put(["crash"], key, val)
                except MetadataError:
                    return
                acked[key] = val

        writers = [asyncio.create_task(writer(w)) for w in range(32)]
        while len(acked) < 2000:
            await asyncio.sleep(0.01)
        d.kill()
        await asyncio.wait_for(asyncio.gather(*writers), 10)
        await client.close()
        d.start()
        client = RemoteMetadataClient("127.0.0.1", d.metadata_port)
        await client.connect()
        stored = {item["key"]: item["value"] async for item in client.read_stream(["crash"], {})}
        missing = [k for k, v in acked.items() if stored.get(k) != v]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    finally:
        await client.close()
        d.stop()


def test_corrupt_metadata_dir_exits_1_with_a_message(tmp_path: Path) -> None:
    d = start_dmd(tmp_path)
    d.stop()
    (d.metadata_path / "rootDB" / "CURRENT").write_text("garbage-manifest-name\n")
    proc = subprocess.run(d.args, env=d.env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot open the metadata store" in proc.stderr and str(d.metadata_path) in proc.stderr


def test_sigterm_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    d = start_dmd(tmp_path)
    assert d.stop(signal.SIGTERM) == 0
    assert "dmd listening metadata=127.0.0.1:" in d.log_text()


# ---- RemoteMetadataClient connection handling ----------------------------------------

@contextlib.asynccontextmanager
async def own_dmd_and_client(tmp: Path, call_timeout_ms: int) -> AsyncIterator[tuple[Dmd, RemoteMetadataClient]]:
    """A dmd for one test (which may stop, kill or restart it) and a connected client."""
    d = start_dmd(tmp)
    try:
        async with connected(d.metadata_port, call_timeout_ms) as client:
            yield d, client
    finally:
        if d.popen is not None and d.popen.poll() is None:
            os.kill(d.popen.pid, signal.SIGCONT)   # a test may have left it stopped
        d.stop()


async def test_remote_client_reconnects_after_a_dmd_restart(tmp_path: Path) -> None:
    async with own_dmd_and_client(tmp_path, call_timeout_ms=10_000) as (d, client):
        await client.put(["re"], "k", "before")
        d.stop()
        await wait_until(lambda: not client.connected)
        assert not await client.healthy()
        # a call made while the dmd is down waits for the reconnection
        pending = asyncio.create_task(client.get(["re"], "k"))
        await asyncio.sleep(0.3)
        d.start()
        assert await pending == "before"
        assert await client.healthy()


async def test_remote_client_call_timeout_and_late_ack_ignored(tmp_path: Path) -> None:
    async with own_dmd_and_client(tmp_path, call_timeout_ms=1000) as (d, client):
        os.kill(d.popen.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(MetadataError) as exc:
                await client.put(["t"], "k", "v")
            assert exc.value.type == "ETIMEDOUT" and "operation put timed out" in exc.value.description
            assert time.monotonic() - started > 0.9      # the timeout, not an early failure
        finally:
            os.kill(d.popen.pid, signal.SIGCONT)
        # the late ack of the timed-out put arrives and is ignored; new calls work. The put
        # itself is still being committed when the dmd resumes: wait for it to show.
        deadline = time.monotonic() + 5
        while True:
            try:
                assert await client.get(["t"], "k") == "v"
                break
            except MetadataError as err:
                assert err.type == "ObjNotFound" and time.monotonic() < deadline
                await asyncio.sleep(0.05)
        assert len(await client.get_uuid()) == 36


async def test_in_flight_writes_fail_at_once_when_the_connection_drops(tmp_path: Path) -> None:
    # Writes are never retried (their outcome is unknown): they fail at once, not after the call
    # timeout. Idempotent reads retry within the retry window instead (tests/integration/test_restarts.py).
    async with own_dmd_and_client(tmp_path, call_timeout_ms=30_000) as (d, client):
        os.kill(d.popen.pid, signal.SIGSTOP)
        calls = [asyncio.create_task(client.put(["t"], f"k{i}", "{}")) for i in range(5)]
        await asyncio.sleep(0.2)
        d.kill()   # a stopped process dies on SIGKILL; the kernel resets its sockets
        # well before the 30 s call timeout: the drop, not the timeout, ended them
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 20)
        assert all(isinstance(r, MetadataError) and r.type == "ECONNRESET" for r in results), results


async def test_in_flight_reads_are_retried_across_a_dmd_restart(tmp_path: Path) -> None:
    # Reads in flight when the dmd dies are tried again once it is back (within the retry window).
    async with own_dmd_and_client(tmp_path, call_timeout_ms=30_000) as (d, client):
        await client.put(["t"], "k", "before the crash")
        os.kill(d.popen.pid, signal.SIGSTOP)
        calls = [asyncio.create_task(client.get(["t"], "k")) for _ in range(5)]
        await asyncio.sleep(0.2)
        d.kill()
        d.start()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 20)
        assert results == ["before the crash"] * 5


async def test_remote_client_connect_fails_cleanly_when_nothing_listens() -> None:
    from tests.procs import free_port
    client = RemoteMetadataClient("127.0.0.1", free_port(), call_timeout_ms=500)
    with pytest.raises(MetadataError) as exc:
        await client.connect()
    assert exc.value.type == "ECONNREFUSED"
    await client.close()


# ---- LocalMetadataClient -------------------------------------------------------------

async def test_local_client_offers_the_same_interface_in_process() -> None:
    client = LocalMetadataClient(MetaStore(MemoryKV()))
    await client.connect()
    try:
        assert await client.put(["b"], "a", '{"x":1}') is None
        reply = await client.put(["b"], "v", '{"y":2}', {"versioning": True})
        assert "versionId" in json.loads(reply)
        assert await client.get(["b"], "a") == '{"x":1}'
        with pytest.raises(MetadataError) as exc:
            await client.get(["b"], "missing")
        assert exc.value.type == "ObjNotFound"
        keys = [item["key"] async for item in client.read_stream(["b"], {"lt": "v"})]
        assert keys == ["a"]
        assert await client.healthy()
    finally:
        await client.close()
