"""Throughput of the dmd's metadata RPC over one connection (RemoteMetadataClient).

`bench_rpc(host, port)` measures put and get calls/s at concurrency 1 and 64
(each for a fixed duration) and read-stream items/s over a 100k-key sublevel.
Run standalone against a running dmd: `python -m tests.bench.rpc_bench HOST PORT`.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Awaitable, Callable

from gateway.metadata import RemoteMetadataClient

MEASURE_SECONDS = 2.0
STREAM_KEYS = 100_000
FILL_CONCURRENCY = 256
VALUE = json.dumps({"owner-id": "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be",
                    "content-length": 1024, "content-md5": "d41d8cd98f00b204e9800998ecf8427e",
                    "location": [{"key": "50165db76eecea293abfd31103746dadb73a2074", "size": 1024}]})


async def _rate(concurrency: int, op: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Calls/s of `op(i)` run by `concurrency` workers for `seconds`."""
    counter = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal counter
        i = w
        while time.monotonic() < deadline:
            await op(i)
            counter += 1
            i += concurrency
    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return counter / (time.monotonic() - started)


async def bench_rpc(host: str, port: int, *, seconds: float = MEASURE_SECONDS,
                    stream_keys: int = STREAM_KEYS) -> dict:
    """{"put_c1": calls/s, "put_c64", "get_c1", "get_c64", "stream_items_per_s", ...}."""
    client = RemoteMetadataClient(host, port)
    await client.connect()
    bucket = [f"bench-{uuid.uuid4().hex[:8]}"]
    results: dict[str, float] = {}
    try:
        for c in (1, 64):
            results[f"put_c{c}"] = round(await _rate(c, lambda i: client.put(bucket, f"k{i:08d}", VALUE), seconds))
        for c in (1, 64):
            results[f"get_c{c}"] = round(await _rate(c, lambda i: client.get(bucket, "k00000000"), seconds))

        stream_bucket = [f"{bucket[0]}-stream"]
        sem = asyncio.Semaphore(FILL_CONCURRENCY)

        async def fill(i: int) -> None:
            async with sem:
                await client.put(stream_bucket, f"k{i:08d}", VALUE)
        started = time.monotonic()
        await asyncio.gather(*(fill(i) for i in range(stream_keys)))
        results["fill_puts_per_s"] = round(stream_keys / (time.monotonic() - started))

        started = time.monotonic()
        count = 0
        async for _ in client.read_stream(stream_bucket, {}):
            count += 1
        elapsed = time.monotonic() - started
        assert count == stream_keys, f"streamed {count} of {stream_keys} keys"
        results["stream_items_per_s"] = round(count / elapsed)
        results["stream_keys"] = count
        stats = await client.get_stats()
        results["max_batch_ops"] = stats.get("max_batch_ops", 0)
    finally:
        await client.close()
    return results


if __name__ == "__main__":
    host, port = (sys.argv[1], int(sys.argv[2])) if len(sys.argv) > 2 else ("127.0.0.1", 9990)
    print(json.dumps(asyncio.run(bench_rpc(host, port)), indent=2))
