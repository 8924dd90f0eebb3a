"""Benchmark of the dmd data service: PUT and GET throughput of one large body, daemon peak RSS.

`bench_data(host, port, size, pid)` is what `make bench` (tests/bench/__main__.py) calls.
The body is generated on the fly and the read side only hashes, so this process
holds no more than a chunk at a time; the daemon's RSS is sampled every 50 ms.

Standalone: `python -m tests.bench.data_bench [--size BYTES]` starts its own
`python -m dmd.data` in a temporary directory.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator

import psutil

from gateway.data.dmd import DmdDataBackend

CHUNK_BYTES = 1 << 20
RSS_SAMPLE_INTERVAL_S = 0.05
MB = 1_000_000  # throughput in decimal MB/s, as disk and network tools report it


async def _generated_body(size: int) -> AsyncIterator[bytes]:
    # Each chunk differs (counter prefix) so nothing along the way can deduplicate.
    block = os.urandom(CHUNK_BYTES)
    sent, n = 0, 0
    while sent < size:
        length = min(CHUNK_BYTES, size - sent)
        yield n.to_bytes(8, "big") + block[8:length] if length > 8 else block[:length]
        sent += length
        n += 1


class _RssSampler:
    """Peak RSS of one process, sampled on the event loop every 50 ms."""

    def __init__(self, pid: int | None) -> None:
        self.process = psutil.Process(pid) if pid else None
        self.baseline = self.peak = self._rss()
        self._task: asyncio.Task[None] | None = None

    def _rss(self) -> int:
        if self.process is None:
            return 0
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return 0

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self._rss())
            await asyncio.sleep(RSS_SAMPLE_INTERVAL_S)

    def __enter__(self) -> "_RssSampler":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self._rss())


async def bench_data(host: str, port: int, size: int = 1 << 30, pid: int | None = None) -> dict[str, Any]:
    """PUT then GET one `size`-byte body through DmdDataBackend; returns MB/s and the daemon's RSS."""
    backend = DmdDataBackend(host, port, "bench")
    try:
        with _RssSampler(pid) as rss:
            t0 = time.perf_counter()
            key = await backend.put(_generated_body(size), size)
            put_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            received = 0
            async for chunk in backend.get(key):  # only counted: hashing here would measure this process
                received += len(chunk)
            get_s = time.perf_counter() - t0
            await backend.delete(key)
        if received != size:
            raise RuntimeError(f"GET returned {received} bytes, {size} were stored")
        return {
            "size_bytes": size,
            "put_MBps": round(size / MB / put_s, 1),
            "get_MBps": round(size / MB / get_s, 1),
            "put_seconds": round(put_s, 3),
            "get_seconds": round(get_s, 3),
            "daemon_rss_baseline_bytes": rss.baseline,
            "daemon_rss_peak_bytes": rss.peak,
            "daemon_rss_growth_MiB": round((rss.peak - rss.baseline) / (1 << 20), 1),
        }
    finally:
        await backend.close()


def main() -> None:
    from tests.procs import REPO, free_port, wait_for_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--nosync", action="store_true", help="S3DATA_NOSYNC=true for the daemon")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("S3")},
               "S3DATAPATH": str(Path(tmp) / "localData"), "LOG_LEVEL": "warn"}
        if args.nosync:
            env["S3DATA_NOSYNC"] = "true"
        proc = subprocess.Popen([sys.executable, "-m", "dmd.data", "--bind", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env)
        try:
            wait_for_port(port, proc)
            print(json.dumps(asyncio.run(bench_data("127.0.0.1", port, args.size, proc.pid)), indent=2))
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
