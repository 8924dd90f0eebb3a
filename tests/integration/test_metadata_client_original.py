"""Our gateway against a metadata server that answers as the original CloudServer's mdserver.js.

The server is a real socket.io server (python-socketio on aiohttp, in this process) on
/MDFile/metadata. It answers with frames the original produced (tests/fixtures/original/
metadata-handshake.json, copied from the original's wire transcript and probes):
- params that the original's RPC server cannot read (`null`, or without `subLevel`) get the
  original's error acks ("Cannot read properties of null (reading 'reqUids')", ...);
- the FIRST getManifest, even a well-formed one, gets that error too: the gateway must recover
  (drop the socket, back off, reconnect) rather than wedge with "Already connected" (issue 20);
- later getManifest calls get the original's manifest ack, the setup put the original's ack,
  any `get` the original's ObjNotFound ack.
The gateway is the real `python -m gateway` process (tests/procs.py).
"""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import socketio
from aiohttp import web

from tests.procs import Gateway, _base_env, free_port

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "original" / "metadata-handshake.json"
NAMESPACE = "/MDFile/metadata"
READY_WITHIN_S = 15.0   # the gateway retries setup every 2 s; generous for a loaded machine


def frame_args(text: str) -> list[Any]:
    """The argument list of a recorded socket.io EVENT or ACK frame: `4x/MDFile/metadata,<id>[...]`."""
    return json.loads(text[text.index("["):])


FRAMES = json.loads(FIXTURE.read_text())
ORIGINAL_MANIFEST_CALL = frame_args(FRAMES["gateway"]["getManifest_call"])   # ["call","getManifest",{...}]
MANIFEST_ACK = frame_args(FRAMES["gateway"]["getManifest_ack"])               # [null, {"apiVersion",...}]
NULL_PARAMS_ACK = frame_args(FRAMES["probes"]["getManifest_null_ack"])        # [{"message": ...}]
NO_SUBLEVEL_ACK = frame_args(FRAMES["probes"]["getManifest_no_subLevel_ack"])
PUT_ACK = frame_args(FRAMES["gateway"]["setup_put_ack"])                      # [null, null]
NOT_FOUND_ACK = frame_args(FRAMES["gateway"]["request_get_ack_ObjNotFound"])  # [{is_arsenal_error...}]
ORIGINAL_REQUEST_CALL = frame_args(FRAMES["gateway"]["request_get_call"])


class OriginalLikeServer:
    """A socket.io server on /MDFile/metadata answering with the original's recorded acks."""

    def __init__(self, fail_first: str = "getManifest") -> None:
        self.fail_first = fail_first      # the call whose first occurrence is refused
        self.calls: list[tuple[str, Any]] = []
        self.connects = 0
        self._refused = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def _answer(self, name: str, params: Any) -> tuple[Any, ...]:
        # What Arsenal's RPC server does with params it cannot read (wire-probes.jsonl).
        if params is None:
            return tuple(NULL_PARAMS_ACK)
        if not isinstance(params, dict) or not isinstance(params.get("subLevel"), list):
            return tuple(NO_SUBLEVEL_ACK)
        if name == self.fail_first and not self._refused:
            self._refused = True
            return tuple(NULL_PARAMS_ACK if name == "getManifest" else NOT_FOUND_ACK)
        if name == "getManifest":
            return tuple(MANIFEST_ACK)
        if name == "put":
            return tuple(PUT_ACK)
        if name == "getUUID":
            return (None, "b4f4f1a0-2c9d-4b1e-9f1e-000000000020")
        return tuple(NOT_FOUND_ACK)   # get, del, ...: nothing is stored here

    async def _start(self) -> None:
        sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

        async def on_connect(sid: str, environ: dict, auth: Any = None) -> None:
            self.connects += 1

        async def on_call(sid: str, name: str, params: Any = None) -> tuple[Any, ...]:
            self.calls.append((name, params))
            return self._answer(name, params)

        sio.on("connect", on_connect, namespace=NAMESPACE)
        sio.on("call", on_call, namespace=NAMESPACE)
        app = web.Application()
        sio.attach(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> "OriginalLikeServer":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:   # engine.io's ping and service tasks
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def original_server(request: pytest.FixtureRequest) -> Iterator[OriginalLikeServer]:
    server = OriginalLikeServer(getattr(request, "param", "getManifest")).start()
    yield server
    server.stop()


def start_gateway_on(tmp: Path, server: OriginalLikeServer) -> tuple[Gateway, float]:
    """Our real gateway over `server` (its data port is unused here); and how long it took to listen."""
    env = {"METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(server.port),
           "DATA_HOST": "127.0.0.1", "DATA_PORT": str(free_port())}
    port = free_port()
    args = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", "1"]
    g = Gateway(args, _base_env(env), [port], tmp / f"gateway-{port}.log", port=port)
    started = time.monotonic()
    g.start()   # returns once the gateway listens: after its metadata setup succeeded
    return g, time.monotonic() - started


def check_shape(name: str, params: Any) -> None:
    """The params of a call, shaped as the original gateway's (same keys, same order, same types)."""
    assert isinstance(params, dict), f"{name}: params {params!r}"
    keys = list(params)
    assert keys in (["rpcArgs", "subLevel"], ["rpcArgs", "reqUids", "subLevel"]), f"{name}: keys {keys}"
    assert isinstance(params["rpcArgs"], list) and isinstance(params["subLevel"], list)
    assert all(isinstance(s, str) and s for s in params["subLevel"])
    if "reqUids" in params:
        assert isinstance(params["reqUids"], str) and params["reqUids"]


def test_first_call_is_the_original_gateways_getmanifest(original_server: OriginalLikeServer,
                                                        tmp_path: Path) -> None:
    g, took = start_gateway_on(tmp_path, original_server)
    try:
        name, params = original_server.calls[0]
        # Exactly the frame the original gateway sends: ["call","getManifest",{"rpcArgs":[],"subLevel":[]}]
        assert ["call", name, params] == ORIGINAL_MANIFEST_CALL
        assert json.dumps(params, separators=(",", ":")) == '{"rpcArgs":[],"subLevel":[]}'
    finally:
        g.stop()


@pytest.mark.parametrize("original_server", ["getManifest", "put"], indirect=True)
def test_gateway_recovers_from_a_failed_setup(original_server: OriginalLikeServer, tmp_path: Path) -> None:
    """The first getManifest (or the first setup put) is refused as the original refuses: the gateway
    drops the socket, backs off, reconnects and becomes ready; never "Already connected"."""
    g, took = start_gateway_on(tmp_path, original_server)
    try:
        assert took < READY_WITHIN_S, f"gateway ready after {took:.1f}s"
        print(f"gateway ready {took:.2f}s after its start (setup refused once)")
        log = g.log_text()
        assert "Already connected" not in log
        assert "ECONNREFUSED" not in log
        assert log.count("metadata setup failed, retrying") == 1, log[-3000:]
        names = [n for n, _ in original_server.calls]
        # The refused call, then a fresh connection (not "Already connected") and the whole setup again.
        expected = {"getManifest": ["getManifest", "getManifest", "put"],
                    "put": ["getManifest", "put", "getManifest", "put"]}[original_server.fail_first]
        assert names == expected
        assert original_server.connects == 2, f"{original_server.connects} connections, calls {names}"
        for name, params in original_server.calls:
            check_shape(name, params)
        # Setup calls carry no reqUids, as the original's setup put does not.
        assert all("reqUids" not in params for _, params in original_server.calls)
        # Ready: the shallow health check reaches the metadata server (getUUID).
        resp = requests.get(f"{g.url}/_/healthcheck", timeout=30)
        assert resp.status_code == 200, resp.text
        assert original_server.calls[-1][0] == "getUUID"
        check_shape(*original_server.calls[-1])
    finally:
        g.stop()


def test_request_calls_carry_the_request_uids(original_server: OriginalLikeServer, tmp_path: Path) -> None:
    """Calls made for an S3 request carry its id as reqUids, placed as the original places it."""
    g, _ = start_gateway_on(tmp_path, original_server)
    try:
        before = len(original_server.calls)
        resp = requests.head(f"{g.url}/some-bucket", timeout=30)   # anonymous: the bucket is looked up
        assert resp.status_code in (403, 404), resp.status_code
        request_calls = original_server.calls[before:]
        assert request_calls, "the request made no metadata call"
        name, params = request_calls[0]
        check_shape(name, params)
        assert list(params) == list(ORIGINAL_REQUEST_CALL[2])   # rpcArgs, reqUids, subLevel
        assert name == "get" and params["subLevel"] == ["__metastore"] and params["rpcArgs"][0] == "some-bucket"
        assert params["reqUids"] == resp.headers["x-amz-request-id"]
    finally:
        g.stop()
