"""deleteMany (issue 18): many plain deletes in one metadata call, and DeleteObjects on it.

Against real processes only: a dmd of this module's own (`python -m dmd`), one that plays an older
dmd (DMD_HIDDEN_CALLS=deleteMany: left out of its manifest and refused), and a gateway on each.
- the RPC, spoken by a raw socket.io client (docs/protocol.md#deletemany): each key's previous value
  in key order, null when absent (a key listed twice: its second entry finds it gone), all in one
  commit, nothing written for absent keys, bad arguments refused with nothing written;
- RemoteMetadataClient.delete_many answers the same through deleteMany and through `del` per key;
- DeleteObjects of 1000 entries (half the keys absent, some listed twice, per-key errors and a
  VersionId entry mixed in) answers the same on both gateways, in request order, deletes once,
  frees the removed objects' data and nothing else; on the new dmd it costs a handful of calls.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import socketio

from gateway.metadata import RemoteMetadataClient
from shared.metastore.errors import MetadataError
from tests.integration.conftest import ACCESS_KEY2, OTHER_ACCOUNT, SECRET_KEY2, make_client
from tests.procs import Dmd, Gateway, start_dmd, start_gateway

NS = "/MDFile/metadata"      # spelled out: the raw client speaks docs/protocol.md, not shared.rpc
FREE_WAIT_S = 60.0


@pytest.fixture(scope="module")
def new_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("dm-new"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def old_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("dm-old"), env={"DMD_HIDDEN_CALLS": "deleteMany"})
    yield d
    d.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, new_dmd: Dmd, old_dmd: Dmd) -> Iterator[dict[str, Gateway]]:
    tmp = tmp_path_factory.mktemp("dm-gw")
    started: dict[str, Gateway] = {}
    try:
        started["new"] = start_gateway(tmp / "new", new_dmd)
        started["old"] = start_gateway(tmp / "old", old_dmd)
        yield started
    finally:
        for g in started.values():
            g.stop()


class Raw:
    """A socket.io client that knows only docs/protocol.md."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)

    async def call(self, name: str, rpc_args: list[Any], sub_level: list[str] | None) -> list[Any]:
        params: dict[str, Any] = {"rpcArgs": rpc_args}
        if sub_level is not None:
            params["subLevel"] = sub_level
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.sio.emit("call", (name, params), namespace=NS, callback=lambda *a: done.set_result(list(a)))
        return await asyncio.wait_for(done, 30)


@contextlib.asynccontextmanager
async def raw(dmd: Dmd) -> AsyncIterator[Raw]:
    client = Raw()
    await client.sio.connect(f"http://127.0.0.1:{dmd.metadata_port}", namespaces=[NS], transports=["websocket"])
    try:
        yield client
    finally:
        await client.sio.disconnect()


async def ok(client: Raw, name: str, rpc_args: list[Any], sub_level: list[str] | None) -> Any:
    reply = await client.call(name, rpc_args, sub_level)
    assert reply[0] is None, reply
    return reply[1] if len(reply) > 1 else None


async def stored(client: Raw, sub: str, keys: list[str]) -> dict[str, str]:
    """The keys of `keys` present in sublevel `sub`, with their values."""
    found = {}
    for key in keys:
        reply = await client.call("get", [key, {}], [sub])
        if reply[0] is None:
            found[key] = reply[1]
        else:
            assert reply[0]["type"] == "ObjNotFound", reply
    return found


def value_of(key: str) -> str:
    return json.dumps({"key": key, "content-length": len(key)})


# ---- the RPC ----------------------------------------------------------------------------------

async def test_manifest_offers_delete_many_unless_hidden(new_dmd: Dmd, old_dmd: Dmd) -> None:
    async with raw(new_dmd) as client:
        names = [e["name"] for e in (await ok(client, "getManifest", [], []))["api"]]
        assert "deleteMany" in names
    async with raw(old_dmd) as client:
        names = [e["name"] for e in (await ok(client, "getManifest", [], []))["api"]]
        assert "deleteMany" not in names
        err = (await client.call("deleteMany", [["a"], {}], ["b"]))[0]
        assert err["type"] == "InvalidArgument"


async def test_delete_many_returns_previous_values_in_key_order_in_one_commit(new_dmd: Dmd) -> None:
    sub = "dm-values"
    present = [f"k{i:03d}" for i in range(400)]
    async with raw(new_dmd) as client:
        for key in present + ["keep"]:
            await ok(client, "put", [key, value_of(key), {}], [sub])
        # every present key, an absent key between each two, and a few keys listed twice
        keys: list[str] = []
        for key in present:
            keys += [key, "absent-" + key]
        keys += ["k000", "k007", "absent-k000"]
        before = await ok(client, "getStats", [], [])
        previous = await ok(client, "deleteMany", [keys, {"returnPrevious": True}], [sub])
        after = await ok(client, "getStats", [], [])
        expected = []
        seen: set[str] = set()
        for key in keys:
            expected.append(value_of(key) if key in present and key not in seen else None)
            seen.add(key)
        assert previous == expected
        assert await stored(client, sub, present + ["keep", "absent-k000"]) == {"keep": value_of("keep")}
        # the 400 deletes were one write batch (absent keys wrote nothing)
        assert after["batches"] - before["batches"] == 1, (before, after)
        assert after["last_batch_ops"] == len(present)
        # absent keys only: nulls, nothing written
        before = await ok(client, "getStats", [], [])
        assert await ok(client, "deleteMany", [["nope", "nope", "k001"], {"returnPrevious": True}], [sub]) \
            == [None, None, None]
        assert (await ok(client, "getStats", [], []))["batches"] == before["batches"]
        # without returnPrevious: null, and the keys are gone
        await ok(client, "put", ["x", "1", {}], [sub])
        assert await ok(client, "deleteMany", [["x", "keep"], {}], [sub]) is None
        assert await stored(client, sub, ["x", "keep"]) == {}
        # no keys: nothing to do
        assert await ok(client, "deleteMany", [[], {"returnPrevious": True}], [sub]) == []


@pytest.mark.parametrize("rpc_args, sub_level", [
    ([["good", 7], {"returnPrevious": True}], ["dm-bad"]),                       # a key not a string
    ([["good", "k" * (16 * 1024 + 1)], {}], ["dm-bad"]),                         # a key too long
    ([["good"] + [f"x{i}" for i in range(1000)], {"returnPrevious": True}], ["dm-bad"]),   # 1001 keys
    (["good", {}], ["dm-bad"]),                                                  # keys not an array
    ([], ["dm-bad"]),                                                            # no keys
    ([["good"], {"returnPrevious": "yes"}], ["dm-bad"]),                         # a non-boolean option
    ([["good"], {"ifMatch": "v"}], ["dm-bad"]),                                  # a condition
    ([["good"], {"versionId": "98"}], ["dm-bad"]),                               # a versioned delete
    ([["good"], {"versioning": True}], ["dm-bad"]),
    ([["good"], "options"], ["dm-bad"]),                                         # options not an object
    ([["good"], {}], None),                                                      # no subLevel
])
async def test_bad_arguments_are_refused_and_nothing_is_written(new_dmd: Dmd, rpc_args: list[Any],
                                                                 sub_level: list[str] | None) -> None:
    async with raw(new_dmd) as client:
        await ok(client, "put", ["good", "v", {}], ["dm-bad"])
        before = await ok(client, "getStats", [], [])
        err = (await client.call("deleteMany", rpc_args, sub_level))[0]
        assert err is not None and err["type"] == "InvalidArgument" and err["code"] == 400, err
        assert await stored(client, "dm-bad", ["good"]) == {"good": "v"}
        assert (await ok(client, "getStats", [], []))["batches"] == before["batches"]


async def test_values_too_large_to_return_are_refused_then_deleted_in_halves(new_dmd: Dmd) -> None:
    """More than 2 MiB of values to answer: ReplyTooLarge with nothing written; the gateway's
    client then asks for halves of the keys and gets every value."""
    sub = ["dm-large"]
    keys = [f"big{i:02d}" for i in range(8)]
    values = {k: json.dumps({"key": k, "pad": k * (300 * 1024 // len(k))}) for k in keys}
    async with raw(new_dmd) as client:
        for k in keys:
            await ok(client, "put", [k, values[k], {}], sub)
        before = await ok(client, "getStats", [], [])
        err = (await client.call("deleteMany", [keys, {"returnPrevious": True}], sub))[0]
        assert err is not None and err["type"] == "ReplyTooLarge" and err["code"] == 413, err
        assert (await ok(client, "getStats", [], []))["batches"] == before["batches"]
        assert len(await stored(client, sub[0], keys)) == len(keys)
        # fewer fit
        assert await ok(client, "deleteMany", [keys[:3], {"returnPrevious": True}], sub) == [values[k] for k in keys[:3]]
        for k in keys[:3]:
            await ok(client, "put", [k, values[k], {}], sub)
    async with remote(new_dmd) as remote_client:
        answer = await remote_client.delete_many(sub, keys + keys[:2], {"returnPrevious": True})
        assert answer == [values[k] for k in keys] + [None, None]
        assert not [k for k in keys if await _exists(remote_client, sub, k)]
    async with raw(new_dmd) as client:   # without returnPrevious nothing is answered: no limit
        for k in keys:
            await ok(client, "put", [k, values[k], {}], sub)
        assert await ok(client, "deleteMany", [keys, {}], sub) is None
        assert await stored(client, sub[0], keys) == {}


@contextlib.asynccontextmanager
async def remote(dmd: Dmd) -> AsyncIterator[RemoteMetadataClient]:
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def test_remote_client_answers_the_same_with_and_without_delete_many(new_dmd: Dmd, old_dmd: Dmd) -> None:
    answers = {}
    for name, dmd in (("new", new_dmd), ("old", old_dmd)):
        async with remote(dmd) as client:
            assert client.delete_many_call is (name == "new")
            sub = ["dm-remote"]
            for i in range(0, 300, 2):
                await client.put(sub, f"r{i:03d}", value_of(f"r{i:03d}"))
            keys = [f"r{i:03d}" for i in range(300)] + ["r000", "r001", "r002"]
            random.Random(5).shuffle(keys)
            answers[name] = await client.delete_many(sub, keys, {"returnPrevious": True})
            left = [k for k in (f"r{i:03d}" for i in range(300)) if await _exists(client, sub, k)]
            assert left == [], name
            with pytest.raises(MetadataError) as info:
                await client.delete_many(sub, [f"z{i}" for i in range(1001)], {"returnPrevious": True})
            assert info.value.type == "InvalidArgument"
            await client.put(sub, "stay", "v")
            with pytest.raises(MetadataError) as info:
                await client.delete_many(sub, ["stay", 3], {})   # type: ignore[list-item]
            assert info.value.type == "InvalidArgument" and await _exists(client, sub, "stay")
            assert await client.delete_many(sub, ["stay"], {}) == [None]
            assert not await _exists(client, sub, "stay")
    assert answers["new"] == answers["old"]
    assert sum(v is not None for v in answers["new"]) == 150


async def _exists(client: RemoteMetadataClient, sub: list[str], key: str) -> bool:
    try:
        await client.get(sub, key)
        return True
    except MetadataError as exc:
        assert exc.type == "ObjNotFound"
        return False


async def test_delete_many_of_bucket_records_invalidates_the_cached_records(new_dmd: Dmd) -> None:
    async with remote(new_dmd) as reader, remote(new_dmd) as writer:
        await writer.put(["__metastore"], "dm-cached-bucket", '{"v":1}')
        assert await reader.get_bucket_record("dm-cached-bucket") == '{"v":1}'
        assert await writer.delete_many(["__metastore"], ["dm-cached-bucket"], {"returnPrevious": True}) == ['{"v":1}']
        with pytest.raises(MetadataError) as info:
            await reader.get_bucket_record("dm-cached-bucket")
        assert info.value.type == "ObjNotFound"


# ---- DeleteObjects --------------------------------------------------------------------------------

def blobs(dmd: Dmd) -> set[str]:
    return {p.name for p in dmd.data_path.glob("[0-9]*/*") if p.is_file()}


def body_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * 8


def strip(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "ResponseMetadata"} for e in entries]


async def _calls(dmd: Dmd) -> int:
    async with remote(dmd) as client:
        return (await client.get_stats())["calls"]


def test_delete_objects_1000_entries_same_answers_with_and_without_delete_many(
        gateways: dict[str, Gateway], new_dmd: Dmd, old_dmd: Dmd) -> None:
    long_key = "L" * 1025
    results = {}
    for name, dmd in (("new", new_dmd), ("old", old_dmd)):
        s3 = make_client(gateways[name].url, read_timeout=120)
        bucket = f"dm-objects-{name}"
        s3.create_bucket(Bucket=bucket)
        before = blobs(dmd)
        existing = [f"k/{i:04d}" for i in range(0, 940, 2)]          # 470 of the 940 keys exist
        keep = [f"keep/{i}" for i in range(5)]
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=body_of(k)), existing + keep))
        kept = blobs(dmd) - before
        assert len(kept) == len(existing) + len(keep)
        entries = [{"Key": f"k/{i:04d}"} for i in range(940)]
        entries += [{"Key": f"k/{i:04d}"} for i in range(0, 100, 2)]    # 50 existing keys twice
        entries += [{"Key": f"k/{i:04d}"} for i in range(1, 11, 2)]     # 5 absent keys twice
        entries += [{"Key": long_key}, {"Key": "k/0940", "VersionId": "null"}, {"Key": "k/0940"}]
        random.Random(11).shuffle(entries)
        assert len(entries) == 998
        calls_before = asyncio.run(_calls(dmd))
        out = s3.delete_objects(Bucket=bucket, Delete={"Objects": entries})
        calls = asyncio.run(_calls(dmd)) - calls_before - 1
        results[name] = (strip(out.get("Deleted", [])), strip(out.get("Errors", [])))
        if name == "new":    # one deleteMany for the plain deletes, a few calls for the rest
            assert calls < 20, calls
        else:
            assert calls >= 940, calls     # one del per distinct key
        listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for o in p.get("Contents", [])]
        assert listed == keep
        for k in keep:
            assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == body_of(k)
        # the removed objects' blobs are freed, only those: the kept objects' are left of this test's
        deadline = time.monotonic() + FREE_WAIT_S
        while len(blobs(dmd) - before) > len(keep) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(blobs(dmd) - before) == len(keep)
        assert blobs(dmd) - before <= kept
        # quiet mode: only the errors
        out = s3.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": entries})
        assert "Deleted" not in out
        assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [(long_key, "KeyTooLongError")]
    deleted, errors = results["new"]
    assert (deleted, errors) == results["old"]
    expected = []
    for e in entries:
        if e["Key"] != long_key:
            expected.append({"Key": e["Key"], **({"VersionId": e["VersionId"]} if "VersionId" in e else {})})
    assert deleted == expected                       # request order, every entry (duplicates twice)
    assert [(e["Key"], e["Code"]) for e in errors] == [(long_key, "KeyTooLongError")]


def test_per_key_access_denied_stays_with_and_without_delete_many(gateways: dict[str, Gateway]) -> None:
    for name, gateway in gateways.items():
        owner = make_client(gateway.url)
        other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
        bucket = f"dm-denied-{name}"
        owner.create_bucket(Bucket=bucket)
        owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "s3:DeleteObject",
            "Resource": f"arn:aws:s3:::{bucket}/docs/*"}]}))
        keys = [f"docs/{i}" for i in range(10)] + [f"private/{i}" for i in range(10)]
        for k in keys:
            owner.put_object(Bucket=bucket, Key=k, Body=b"x")
        request = keys + ["docs/0", "private/0", "docs/absent"]
        out = other.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in request]})
        assert [d["Key"] for d in out["Deleted"]] == [k for k in request if k.startswith("docs/")], name
        assert [(e["Key"], e["Code"]) for e in out["Errors"]] == \
            [(k, "AccessDenied") for k in request if k.startswith("private/")], name
        listed = [o["Key"] for o in owner.list_objects_v2(Bucket=bucket)["Contents"]]
        assert listed == [f"private/{i}" for i in range(10)], name
