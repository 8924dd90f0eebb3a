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


# --- small reads (issue 18): read on the event loop when the page cache holds the blob ------------
async def _stored(store: DataFileStore, body: bytes) -> str:
    return await store.put_stream(_body([body]), len(body))


async def test_small_blob_read_whole_in_one_go(tmp_path: Path) -> None:
    store = DataFileStore(tmp_path)
    await store.setup()
    for body in (b"", b"x", os.urandom(4096), os.urandom(data.SMALL_BLOB_BYTES - 1)):
        key = await _stored(store, body)
        f, size, got = await store.open_blob(key, data.SMALL_BLOB_BYTES)
        assert (f, size, got) == (None, len(body), body)
    big = os.urandom(data.SMALL_BLOB_BYTES)   # not below the limit: an open file for streaming
    f, size, got = await store.open_blob(await _stored(store, big), data.SMALL_BLOB_BYTES)
    assert f is not None and got is None and size == len(big)
    try:
        assert f.read() == big
    finally:
        f.close()


async def test_small_blob_not_in_the_page_cache_is_read_by_a_thread(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """RWF_NOWAIT refuses a read that would wait for the disk; the blob is then read in a thread,
    never answered short or empty."""
    store = DataFileStore(tmp_path)
    await store.setup()
    body = os.urandom(64 * 1024)
    key = await _stored(store, body)
    # Whether this filesystem drops clean pages on request, asked of another blob: a refused
    # RWF_NOWAIT read starts readahead, which would bring the tested blob's pages back.
    probe = await _stored(store, os.urandom(64 * 1024))
    fd = os.open(store.path_for(probe), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # clean pages (fsynced): dropped
        cached = data._read_cached(fd, len(body))
    finally:
        os.close(fd)
    if cached is not None:
        pytest.skip("this filesystem keeps the blob cached (tmpfs?): the thread path is forced below")
    fd = os.open(store.path_for(key), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    threaded: list[int] = []
    real = data._read_whole

    def spy(fd: int, size: int) -> bytes:
        threaded.append(size)
        return real(fd, size)

    monkeypatch.setattr(data, "_read_whole", spy)
    assert await store.open_blob(key, data.SMALL_BLOB_BYTES) == (None, len(body), body)
    assert threaded == [len(body)]


async def test_small_blob_read_falls_back_when_the_kernel_would_wait(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = DataFileStore(tmp_path)
    await store.setup()
    body = os.urandom(10_000)
    key = await _stored(store, body)

    def would_block(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        if flags & data.RWF_NOWAIT:
            raise BlockingIOError(11, "would block")
        raise AssertionError("the event loop must not read without RWF_NOWAIT")

    monkeypatch.setattr(os, "preadv", would_block)
    assert await store.open_blob(key, data.SMALL_BLOB_BYTES) == (None, len(body), body)


async def test_partly_cached_small_blob_is_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DataFileStore(tmp_path)
    await store.setup()
    body = os.urandom(10_000)
    key = await _stored(store, body)
    real = os.preadv

    def partial(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        return real(fd, [memoryview(buffers[0])[:4096]], offset, flags)   # only the first page was cached

    monkeypatch.setattr(os, "preadv", partial)
    assert await store.open_blob(key, data.SMALL_BLOB_BYTES) == (None, len(body), body)
