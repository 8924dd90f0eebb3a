"""dmd/data.py upload writes (issue 18): body pieces are written as they arrived with writev(2),
whatever the kernel accepts per call, and the blob holds exactly the body, durable or not."""
from __future__ import annotations

import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from dmd import data
from dmd.data import WRITE_BATCH_BYTES, WRITE_BATCH_PIECES, DataFileStore


def test_writev_all_survives_partial_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev
    calls: list[int] = []

    def stingy(fd: int, buffers: list[memoryview]) -> int:
        assert len(buffers) <= WRITE_BATCH_PIECES
        calls.append(len(buffers))
        budget, out = 7, []   # the kernel takes 7 bytes per call, cutting pieces anywhere
        for b in buffers:
            if budget <= 0:
                break
            out.append(b[:budget])
            budget -= len(out[-1])
        return real(fd, out)

    monkeypatch.setattr(os, "writev", stingy)
    pieces = [os.urandom(n) for n in (1, 0, 10, 3, 64, 5)] + [b"x" * 3] * (WRITE_BATCH_PIECES + 5)
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        data._writev_all(fd, pieces)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(pieces)
    assert len(calls) > 10


async def _body(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for p in pieces:
        yield p


@pytest.mark.parametrize("no_sync", [False, True])
async def test_put_stream_of_many_small_and_large_pieces_stores_the_exact_body(tmp_path: Path, no_sync: bool) -> None:
    store = DataFileStore(tmp_path, no_sync=no_sync)
    await store.setup()
    pieces = [os.urandom(100) for _ in range(3 * WRITE_BATCH_PIECES + 7)]   # batches closed by piece count
    pieces += [os.urandom(WRITE_BATCH_BYTES + 11), os.urandom(5), os.urandom(2 * WRITE_BATCH_BYTES)]
    body = b"".join(pieces)
    key = await store.put_stream(_body(pieces), len(body))
    assert store.path_for(key).read_bytes() == body
    assert not list((tmp_path / ".tmp").iterdir())
