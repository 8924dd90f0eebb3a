"""The dmd's batch delete, `POST /DataFile?delete` (docs/protocol.md#batch-delete, issue 18): many
blobs unlinked in one call, answered with the keys that failed; bad requests delete nothing."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from dmd.data import DELETE_MANY_MAX_KEYS, TMP_DIR_NAME, start_data_server
from shared.config import Config

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Path]]:
    data_path = tmp_path_factory.mktemp("dm") / "localData"
    runner = await start_data_server(Config(data_path=str(data_path)), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", data_path
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: tuple[str, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[0], timeout=10) as c:
        yield c


def blobs(data_path: Path) -> set[str]:
    return {p.name for p in data_path.glob("*/*") if p.parent.name != TMP_DIR_NAME}


async def put_blobs(client: httpx.AsyncClient, n: int) -> list[str]:
    keys = []
    for i in range(n):
        resp = await client.put("/DataFile", content=os.urandom(100 + i))
        assert resp.status_code == 201
        keys.append(resp.headers["Location"].removeprefix("/DataFile/"))
    return keys


async def test_deletes_the_listed_blobs_and_only_them(client: httpx.AsyncClient, server: tuple[str, Path]) -> None:
    keys = await put_blobs(client, 6)
    absent = "0" * 40
    resp = await client.post("/DataFile?delete", content=json.dumps({"keys": keys[:4] + [absent, keys[0]]}))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"failed": []}
    present = blobs(server[1])
    assert not present & set(keys[:4]) and set(keys[4:]) <= present
    for key in keys[:4]:
        assert (await client.get(f"/DataFile/{key}")).status_code == 404
    assert (await client.get(f"/DataFile/{keys[4]}")).status_code == 200


async def test_a_full_batch(client: httpx.AsyncClient, server: tuple[str, Path]) -> None:
    keys = await put_blobs(client, 30)
    padding = [os.urandom(20).hex() for _ in range(DELETE_MANY_MAX_KEYS - len(keys))]   # absent keys
    resp = await client.post("/DataFile?delete", content=json.dumps({"keys": keys + padding}))
    assert resp.status_code == 200 and resp.json() == {"failed": []}
    assert not blobs(server[1]) & set(keys)


async def test_an_unlink_that_fails_is_answered_by_key(client: httpx.AsyncClient, server: tuple[str, Path]) -> None:
    keys = await put_blobs(client, 2)
    blob = next(server[1].glob(f"*/{keys[0]}"))
    blob.unlink()
    blob.mkdir()   # unlink(2) of a folder fails (EISDIR), for root too
    try:
        resp = await client.post("/DataFile?delete", content=json.dumps({"keys": keys}))
    finally:
        blob.rmdir()
    assert resp.status_code == 200
    assert resp.json() == {"failed": [{"key": keys[0], "errorType": "InternalError"}]}


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"keys": "abc"}', b'{"nokeys": []}', b'{"keys": [1]}',
    b'{"keys": ["ABCDEF0123456789abcdef0123456789abcdef01"]}',   # not lowercase hex
    b'{"keys": ["../../etc/passwd"]}',
    json.dumps({"keys": ["0" * 40] * (DELETE_MANY_MAX_KEYS + 1)}).encode(),
], ids=["not-json", "list", "string", "no-keys", "number", "uppercase", "path", "too-many"])
async def test_a_bad_request_deletes_nothing(client: httpx.AsyncClient, server: tuple[str, Path], body: bytes) -> None:
    keys = await put_blobs(client, 1)
    if body.startswith(b'{"keys": ["ABC') or body.startswith(b'{"keys": ["../'):
        body = body.replace(b'"]', f'", "{keys[0]}"]'.encode())   # with a real key beside the bad one
    resp = await client.post("/DataFile?delete", content=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["errorType"] == "InvalidInput"
    assert keys[0] in blobs(server[1])


async def test_a_body_without_length_or_too_long_is_refused(server: tuple[str, Path]) -> None:
    import asyncio
    host, port = server[0].removeprefix("http://").split(":")
    for head in (b"Transfer-Encoding: chunked\r\n", b"Content-Length: %d\r\n" % (64 << 10 | 1)):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST /DataFile?delete HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            await writer.drain()
            status = (await asyncio.wait_for(reader.readline(), 5)).split()[1]
        finally:
            writer.close()
        assert status == b"400"


async def test_a_dmd_without_the_call_answers_405(tmp_path: Path) -> None:
    from dmd.data import DataFileStore, make_data_server
    from aiohttp import web
    store = DataFileStore(tmp_path / "d")
    await store.setup()
    runner = web.ServerRunner(make_data_server(store, delete_many_enabled=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            resp = await c.post("/DataFile?delete", content=b'{"keys": []}')
    finally:
        await runner.cleanup()
    assert resp.status_code == 405 and resp.json()["errorType"] == "MethodNotAllowed"


# ------------------------------------------------------------------ the gateway's side: DmdDataBackend
def _backend(server_url: str):
    from gateway.data.dmd import DmdDataBackend
    host, port = server_url.removeprefix("http://").split(":")
    return DmdDataBackend(host, int(port), "us-east-1")


async def test_backend_frees_in_batches_and_says_what_failed(client: httpx.AsyncClient,
                                                             server: tuple[str, Path]) -> None:
    keys = await put_blobs(client, 25)
    blob = next(server[1].glob(f"*/{keys[3]}"))
    blob.unlink()
    blob.mkdir()   # this one cannot be unlinked
    backend = _backend(server[0])
    try:
        absent = [os.urandom(20).hex() for _ in range(1500)]   # two batches in all
        failed = await backend.delete_many(absent[:700] + keys + ["not-a-key"] + absent[700:])
    finally:
        blob.rmdir()
        await backend.close()
    assert failed == [keys[3]]
    assert backend.delete_many_supported
    assert not blobs(server[1]) & set(keys)


async def test_backend_falls_back_to_one_delete_per_blob(tmp_path: Path) -> None:
    from aiohttp import web

    from dmd.data import DataFileStore, make_data_server
    store = DataFileStore(tmp_path / "d")
    await store.setup()
    runner = web.ServerRunner(make_data_server(store, delete_many_enabled=False))   # as the original
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    backend = _backend(url)
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            keys = await put_blobs(c, 5)
        assert await backend.delete_many(keys + [os.urandom(20).hex()]) == []
        assert not backend.delete_many_supported
        assert not blobs(tmp_path / "d") & set(keys)
        async with httpx.AsyncClient(base_url=url) as c:
            more = await put_blobs(c, 2)
        assert await backend.delete_many(more) == []   # remembered: straight to DELETEs
        assert not blobs(tmp_path / "d") & set(more)
    finally:
        await backend.close()
        await runner.cleanup()
