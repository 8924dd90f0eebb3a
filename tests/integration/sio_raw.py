"""A raw socket.io client for the dmd's RPC namespaces, written from the wire transcripts of the
original (tests/fixtures/original/wire-*.jsonl), not from our client: `call` events with an ack,
stream-data / stream-end events acked on arrival, any namespace (/MDFile/metadata, /MDFile/recordLog).
Used by test_migrate.py, test_recordlog.py and test_wire_replay.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

METADATA_NS = "/MDFile/metadata"
RECORDLOG_NS = "/MDFile/recordLog"


class RawSio:
    def __init__(self, namespaces: tuple[str, ...] = (METADATA_NS,)) -> None:
        self.namespaces = namespaces
        self.sio = socketio.AsyncClient(reconnection=False)
        self.items: dict[str, list[Any]] = {}       # streamId -> items, in order
        self.packets: dict[str, list[list[Any]]] = {}
        self.ended: set[str] = set()
        self.errors: dict[str, Any] = {}
        self.changed = asyncio.Event()
        for ns in namespaces:
            self.sio.on("stream-data", self._on_data, namespace=ns)
            self.sio.on("stream-end", self._on_end, namespace=ns)
            self.sio.on("stream-error", self._on_error, namespace=ns)

    async def open(self, port: int) -> "RawSio":
        await self.sio.connect(f"http://127.0.0.1:{port}", namespaces=list(self.namespaces),
                               transports=["websocket"], wait_timeout=30)
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def call(self, ns: str, name: str, params: Any, timeout: float = 30) -> list[Any]:
        """Emit ["call", name, params]; the ack's values as a list."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_ack(*values: Any) -> None:
            if not done.done():
                done.set_result(list(values))
        await self.sio.emit("call", (name, params), namespace=ns, callback=on_ack)
        return await asyncio.wait_for(done, timeout)

    async def hangup(self, ns: str, stream_id: str) -> None:
        await self.sio.emit("stream-hangup", {"streamId": stream_id}, namespace=ns)

    async def _on_data(self, payload: dict) -> None:
        self.items.setdefault(payload["streamId"], []).extend(payload["data"])
        self.packets.setdefault(payload["streamId"], []).append(payload["data"])
        self.changed.set()

    async def _on_end(self, payload: dict) -> None:
        self.ended.add(payload["streamId"])
        self.changed.set()

    async def _on_error(self, payload: dict) -> None:
        self.errors[payload["streamId"]] = payload["error"]
        self.changed.set()

    async def stream(self, stream_id: str, timeout: float = 30) -> list[Any]:
        """Every item of a stream, once it ended (raises on stream-error or timeout)."""
        deadline = time.monotonic() + timeout
        while stream_id not in self.ended:
            assert stream_id not in self.errors, f"stream error: {self.errors[stream_id]}"
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"stream {stream_id} did not end in {timeout}s"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.items.get(stream_id, [])

    async def read_stream(self, sub_level: list[str], options: dict | None = None) -> list[dict]:
        """createReadStream on the metadata namespace: all {key, value} items."""
        err, marker = await self.call(METADATA_NS, "createReadStream",
                                      {"rpcArgs": [options or {}], "subLevel": sub_level})
        assert err is None, err
        return await self.stream(marker["$streamId"])

    async def read_records(self, log_name: str = "s3-recordlog", **params: Any) -> tuple[dict, list[dict]]:
        """readRecords as backbeat calls it: (info, records)."""
        err, result = await self.call(RECORDLOG_NS, "readRecords", {"rpcArgs": [params], "logName": log_name})
        assert err is None, err
        return result["info"], await self.stream(result["log"]["$streamId"])
