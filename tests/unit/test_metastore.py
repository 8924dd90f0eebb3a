"""The metadata engine over both stores: versioning options (reference "Metadata Versioning Options",
docs/versioning.md), key space (docs/metadata-keys.md), range reads, group commit
(docs/durability.md#group-commit), RocksDB durability."""
from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import versionid
from shared.metastore import KVOpenError, MemoryKV, MetadataError, MetaStore, RocksKV
from shared.metastore.engine import append_version_id

B = ["bucket"]


def make_kv(kind: str, path: Path):
    return MemoryKV() if kind == "memory" else RocksKV(str(path))


@pytest.fixture(params=["memory", "rocks"])
def kind(request) -> str:
    return request.param


@pytest.fixture
async def store(kind, tmp_path) -> AsyncIterator[MetaStore]:
    s = MetaStore(make_kv(kind, tmp_path), metadata_path=str(tmp_path), repair_delay_s=3600)
    yield s
    await s.close()


@pytest.fixture
async def mem_store() -> AsyncIterator[MetaStore]:
    """Store-independent checks (argument validation) run on the in-memory store only."""
    s = MetaStore(MemoryKV(), repair_delay_s=3600)
    yield s
    await s.close()


async def collect(stream) -> list:
    return [item async for item in stream]


async def raw(store: MetaStore, key: str, sublevel: list[str] = B) -> str | None:
    """The stored value of a physical key, bypassing the engine's versioning (no PHD resolution)."""
    items = await collect(store.read_stream(sublevel, {"gte": key, "lte": key}))
    return items[0]["value"] if items else None


def vid_of(reply: str) -> str:
    return json.loads(reply)["versionId"]


def version_key(key: str, vid: str) -> str:
    return key + versionid.SEPARATOR + vid


async def make_versions(store: MetaStore, key: str, n: int) -> list[str]:
    """n versions of key (oldest first), values {"n": i}."""
    return [vid_of(await store.put(B, key, json.dumps({"n": i}), {"versioning": True})) for i in range(n)]


def expect_error(exc_info, type_: str) -> None:
    assert exc_info.value.type == type_


# --- PUT without options / GET / DELETE ----------------------------------------------------------

async def test_plain_put_overwrites_master_and_returns_none(store):
    assert await store.put(B, "k", '{"a":1}', None) is None
    assert await store.put(B, "k", '{"a":2}', {}) is None
    assert await store.get(B, "k", None) == '{"a":2}'
    assert await collect(store.read_stream(B, {})) == [{"key": "k", "value": '{"a":2}'}]


async def test_get_missing_key_raises_obj_not_found(store):
    with pytest.raises(MetadataError) as e:
        await store.get(B, "nope", None)
    assert (e.value.type, e.value.code) == ("ObjNotFound", 404)


async def test_plain_delete_removes_master_and_missing_key_is_not_an_error(store):
    await store.put(B, "k", "v", None)
    assert await store.delete(B, "k", None) is None
    assert await store.delete(B, "k", None) is None
    with pytest.raises(MetadataError):
        await store.get(B, "k", None)


async def test_values_are_arbitrary_strings_for_plain_puts(store):
    await store.put(B, "k", "not json ✓", None)
    assert await store.get(B, "k", None) == "not json ✓"


# --- PUT versioning: true ------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [True, ""])
async def test_versioning_put_creates_version_and_master_and_replies_version_id(store, flag):
    reply = await store.put(B, "k", '{"a":1}', {"versioning": flag})
    vid = vid_of(reply)
    assert reply == f'{{"versionId":"{vid}"}}'
    stored = f'{{"a":1,"versionId":"{vid}"}}'
    assert await raw(store, "k") == stored
    assert await raw(store, version_key("k", vid)) == stored
    assert len(vid) >= 28   # 27 + the dmd counter suffix (hex encoding, docs/versioning.md#version-ids)


def test_append_version_id_edits_the_json_string_in_place():
    assert append_version_id('{"a":1}', "V") == '{"a":1,"versionId":"V"}'
    assert append_version_id('{}', "V") == '{"versionId":"V"}'
    assert append_version_id('{ "a" : [1, {"b":2}] }\n', "V") == '{ "a" : [1, {"b":2}] ,"versionId":"V"}\n'


async def test_version_keys_are_listed_newest_first_after_the_master(store):
    vids = await make_versions(store, "k", 5)
    items = await collect(store.read_stream(B, {}))
    assert [i["key"] for i in items] == ["k"] + [version_key("k", v) for v in reversed(vids)]
    assert json.loads(items[0]["value"])["n"] == 4


async def test_versioning_false_is_a_plain_put(store):
    assert await store.put(B, "k", '{"a":1}', {"versioning": False}) is None
    assert await store.get(B, "k", None) == '{"a":1}'


async def test_suffixless_ids_when_configured_are_27_chars(tmp_path):
    s = MetaStore(MemoryKV(), version_id_suffix=False)
    vid = vid_of(await s.put(B, "k", "{}", {"versioning": True}))
    assert len(vid) == 27 and len(versionid.encode(vid)) == 32
    await s.close()


# --- PUT versionId: '' ---------------------------------------------------------------------------

async def test_put_with_empty_version_id_overwrites_master_only_with_a_fresh_id(store):
    old = (await make_versions(store, "k", 1))[0]
    reply = await store.put(B, "k", '{"null":true}', {"versionId": ""})
    vid = vid_of(reply)
    assert vid != old and vid < old
    assert await store.get(B, "k", None) == f'{{"null":true,"versionId":"{vid}"}}'
    keys = [i["key"] for i in await collect(store.read_stream(B, {}))]
    assert keys == ["k", version_key("k", old)]   # no version key for the new id


# --- PUT versionId: <vid> ------------------------------------------------------------------------

async def test_put_version_of_latest_updates_version_and_master(store):
    vids = await make_versions(store, "k", 2)
    value = f'{{"acl":"new","versionId":"{vids[1]}"}}'
    assert await store.put(B, "k", value, {"versionId": vids[1]}) == f'{{"versionId":"{vids[1]}"}}'
    assert await raw(store, version_key("k", vids[1])) == value   # stored verbatim
    assert await store.get(B, "k", None) == value


async def test_put_older_version_updates_only_that_version(store):
    vids = await make_versions(store, "k", 2)
    master_before = await store.get(B, "k", None)
    await store.put(B, "k", '{"acl":"old"}', {"versionId": vids[0]})
    assert await raw(store, version_key("k", vids[0])) == '{"acl":"old"}'
    assert await store.get(B, "k", None) == master_before


async def test_put_version_newer_than_master_updates_master_as_in_replication(store):
    old = (await make_versions(store, "k", 1))[0]
    newer = versionid.generate("RG002", "x")       # generated later: sorts before (is newer than) old
    await store.put(B, "k", '{"replicated":1}', {"versionId": newer})
    assert await store.get(B, "k", None) == '{"replicated":1}'
    assert await raw(store, version_key("k", old)) is not None


async def test_put_version_without_master_creates_master(store):
    vid = versionid.generate()
    await store.put(B, "k", '{"v":1}', {"versionId": vid})
    assert await store.get(B, "k", None) == '{"v":1}'
    assert await store.get(B, "k", {"versionId": vid}) == '{"v":1}'


async def test_put_version_keeps_a_master_without_version_id(store):
    await store.put(B, "k", '{"plain":1}', None)
    await store.put(B, "k", '{"nullv":1}', {"versionId": versionid.get_inf_vid()})
    assert await store.get(B, "k", None) == '{"plain":1}'


async def test_version_id_wins_when_both_options_are_set(store):
    vid = versionid.generate()
    reply = await store.put(B, "k", '{"v":1}', {"versionId": vid, "versioning": True})
    assert reply == f'{{"versionId":"{vid}"}}'
    keys = [i["key"] for i in await collect(store.read_stream(B, {}))]
    assert keys == ["k", version_key("k", vid)]


# --- GET versionId ---------------------------------------------------------------------------------

async def test_get_specific_version_reads_that_version_key(store):
    vids = await make_versions(store, "k", 3)
    assert json.loads(await store.get(B, "k", {"versionId": vids[0]}))["n"] == 0
    with pytest.raises(MetadataError) as e:
        await store.get(B, "k", {"versionId": versionid.generate()})
    expect_error(e, "ObjNotFound")


async def test_get_null_version_reads_the_null_key(store):
    await store.put(B, "k\x00", '{"isNull":true}', None)
    assert await store.get(B, "k", {"versionId": "null"}) == '{"isNull":true}'


# --- DELETE versionId, PHD and repair ------------------------------------------------------------

async def test_delete_older_version_leaves_master(store):
    vids = await make_versions(store, "k", 3)
    assert await store.delete(B, "k", {"versionId": vids[0]}) == f'{{"versionId":"{vids[0]}"}}'
    assert await raw(store, version_key("k", vids[0])) is None
    assert json.loads(await raw(store, "k"))["n"] == 2


async def test_delete_latest_version_places_phd_and_get_repairs_to_previous(store):
    vids = await make_versions(store, "k", 3)
    await store.delete(B, "k", {"versionId": vids[2]})
    phd = await raw(store, "k")
    assert phd.startswith('{ "isPHD": true, "versionId": "') and phd.endswith('" }')
    assert json.loads(phd)["versionId"] < vids[2]   # a fresh id
    got = await store.get(B, "k", None)
    assert json.loads(got)["n"] == 1
    assert await raw(store, "k") == got             # master repaired
    assert await raw(store, version_key("k", vids[2])) is None


async def test_deleting_the_only_version_removes_the_master_on_get(store):
    vid = (await make_versions(store, "k", 1))[0]
    await store.delete(B, "k", {"versionId": vid})
    with pytest.raises(MetadataError) as e:
        await store.get(B, "k", None)
    expect_error(e, "ObjNotFound")
    assert await collect(store.read_stream(B, {})) == []


async def test_deleting_the_last_version_removes_the_master_at_once(store):
    """No placeholder is left for a key with no version behind it: nothing is left at all, without
    waiting for a get or the repair timer (a leftover master made DeleteBucket answer BucketNotEmpty)."""
    vid = (await make_versions(store, "k", 1))[0]
    await store.delete(B, "k", {"versionId": vid})
    assert await collect(store.raw_list_keys({})) == []


async def test_deleting_the_last_version_behind_a_placeholder_removes_the_placeholder(store):
    vids = await make_versions(store, "k", 3)
    await store.delete(B, "k", {"versionId": vids[2]})
    await store.delete(B, "k", {"versionId": vids[1]})
    assert json.loads(await raw(store, "k"))["isPHD"] is True     # v0 is still behind it
    await store.delete(B, "k", {"versionId": vids[0]})
    assert await collect(store.raw_list_keys({})) == []
    # A placeholder left with nothing behind it (its version key removed by a plain delete) goes
    # with the next version delete on the key, even of an absent version.
    older, newest = await make_versions(store, "j", 2)
    await store.delete(B, "j", {"versionId": newest})
    await store.delete(B, version_key("j", older), None)
    assert json.loads(await raw(store, "j"))["isPHD"] is True
    await store.delete(B, "j", {"versionId": versionid.generate("RG001")})
    assert await collect(store.raw_list_keys({})) == []


async def test_deleting_a_suspended_null_master_removes_it_or_leaves_a_placeholder_over_older_versions(store):
    null_vid = vid_of(await store.put(B, "n", '{"s":1}', {"versionId": ""}))   # master only, no version key
    await store.delete(B, "n", {"versionId": null_vid})
    assert await raw(store, "n") is None
    older = (await make_versions(store, "k", 1))[0]
    null_vid = vid_of(await store.put(B, "k", '{"s":2}', {"versionId": ""}))
    await store.delete(B, "k", {"versionId": null_vid})
    assert json.loads(await raw(store, "k"))["isPHD"] is True
    assert vid_of(await store.get(B, "k", None)) == older


async def test_last_version_check_sees_versions_still_queued_for_commit(store):
    """The master is the version deleted, and the only other version is still in the write queue:
    the master must become a placeholder (resolving to it), not vanish."""
    vid = versionid.generate("RG001")
    results = await asyncio.gather(
        store.put(B, "k", '{"x":1}', {"versioning": True}),                   # version X, queued
        store.put(B, "k", json.dumps({"m": 1, "versionId": vid}), None),      # master = V, queued
        store.delete(B, "k", {"versionId": vid}))
    x = vid_of(results[0])
    assert json.loads(await raw(store, "k"))["isPHD"] is True
    assert vid_of(await store.get(B, "k", None)) == x


async def test_delete_version_on_phd_master_places_a_new_phd(store):
    vids = await make_versions(store, "k", 3)
    await store.delete(B, "k", {"versionId": vids[2]})
    first_phd = await raw(store, "k")
    await store.delete(B, "k", {"versionId": vids[1]})
    second_phd = await raw(store, "k")
    assert second_phd != first_phd and json.loads(second_phd)["isPHD"] is True
    assert json.loads(await store.get(B, "k", None))["n"] == 0


async def test_get_specific_version_does_not_resolve_phd(store):
    vids = await make_versions(store, "k", 2)
    await store.delete(B, "k", {"versionId": vids[1]})
    assert json.loads(await store.get(B, "k", {"versionId": vids[0]}))["n"] == 0
    assert json.loads(await raw(store, "k"))["isPHD"] is True


async def test_delete_markers_are_ordinary_versions(store):
    await make_versions(store, "k", 1)
    marker = vid_of(await store.put(B, "k", '{"isDeleteMarker":true}', {"versioning": True}))
    assert json.loads(await store.get(B, "k", None))["isDeleteMarker"] is True
    await store.delete(B, "k", {"versionId": marker})
    assert json.loads(await store.get(B, "k", None))["n"] == 0


async def test_repair_timer_fixes_the_master_without_a_get(kind, tmp_path):
    s = MetaStore(make_kv(kind, tmp_path), repair_delay_s=0.05)
    try:
        vids = await make_versions(s, "k", 2)
        await s.delete(B, "k", {"versionId": vids[1]})
        assert json.loads(await raw(s, "k"))["isPHD"] is True
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not json.loads(await raw(s, "k")).get("isPHD"):
                break
        assert json.loads(await raw(s, "k"))["n"] == 0
    finally:
        await s.close()


async def test_repair_timer_deletes_master_when_no_version_is_left(tmp_path):
    s = MetaStore(MemoryKV(), repair_delay_s=0.02)
    vid = (await make_versions(s, "k", 1))[0]
    await s.delete(B, "k", {"versionId": vid})
    await asyncio.sleep(0.2)
    assert await collect(s.raw_list_keys({})) == []
    await s.close()


async def test_versioning_put_during_phd_wins_over_repair(store):
    vids = await make_versions(store, "k", 2)
    await store.delete(B, "k", {"versionId": vids[1]})
    new = vid_of(await store.put(B, "k", '{"n":9}', {"versioning": True}))
    assert vid_of(await store.get(B, "k", None)) == new


@pytest.mark.parametrize("seed", range(8))
async def test_concurrent_deletes_of_latest_versions_end_with_true_newest_or_no_master(kind, tmp_path, seed):
    rnd = random.Random(seed)
    s = MetaStore(make_kv(kind, tmp_path), repair_delay_s=0.01)
    try:
        vids = await make_versions(s, "k", 12)
        doomed = vids[-rnd.randint(1, 12):]             # the newest k versions, maybe all

        async def later(call):
            for _ in range(rnd.randint(0, 30)):         # stagger the calls over many loop turns
                await asyncio.sleep(0)
            return await call
        calls: list[Any] = [s.delete(B, "k", {"versionId": v}) for v in doomed]
        calls += [s.get(B, "k", None) for _ in range(12)]
        rnd.shuffle(calls)
        results = await asyncio.gather(*(later(c) for c in calls), return_exceptions=True)
        assert all(not isinstance(r, Exception) or getattr(r, "type", "") == "ObjNotFound" for r in results)
        survivors = [v for v in vids if v not in doomed]
        await asyncio.sleep(0.05)                        # let the repair timers run
        master = await raw(s, "k")
        if survivors:
            assert vid_of(await s.get(B, "k", None)) == survivors[-1]
            assert master is None or json.loads(master).get("isPHD") or vid_of(master) == survivors[-1]
            assert vid_of(await raw(s, "k")) == survivors[-1]
        else:
            assert master is None
            with pytest.raises(MetadataError):
                await s.get(B, "k", None)
        assert s._key_locks == {}                        # idle keys hold no lock entries
    finally:
        await s.close()


# --- read streams: range options ---------------------------------------------------------------------

async def fill(store: MetaStore, keys: list[str]) -> None:
    await asyncio.gather(*(store.put(B, k, f"v-{k}", None) for k in keys))


KEYS = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("options,expected", [
    ({}, KEYS),
    ({"gt": "b"}, ["c", "d", "e"]),
    ({"gte": "b"}, ["b", "c", "d", "e"]),
    ({"lt": "d"}, ["a", "b", "c"]),
    ({"lte": "d"}, ["a", "b", "c", "d"]),
    ({"gt": "a", "lt": "e"}, ["b", "c", "d"]),
    ({"gte": "b", "lte": "d", "reverse": True}, ["d", "c", "b"]),
    ({"reverse": True}, list(reversed(KEYS))),
    ({"limit": 2}, ["a", "b"]),
    ({"limit": 2, "reverse": True}, ["e", "d"]),
    ({"limit": -1}, KEYS),
    ({"limit": 0}, []),
    ({"gt": "e"}, []),
    ({"gt": "c", "lt": "b"}, []),
    ({"gt": "", "lt": "\uffff"}, KEYS),
    ({"gt": None, "lt": None}, KEYS),
])
async def test_read_stream_range_options(store, options, expected):
    await fill(store, KEYS)
    items = await collect(store.read_stream(B, options))
    assert [i["key"] for i in items] == expected
    assert all(i["value"] == f"v-{i['key']}" for i in items)


async def test_read_stream_keys_or_values_only(store):
    await fill(store, KEYS)
    assert await collect(store.read_stream(B, {"values": False})) == KEYS
    assert await collect(store.read_stream(B, {"keys": False, "limit": 2})) == ["v-a", "v-b"]


async def test_read_stream_is_lazy_and_can_be_closed_early(store):
    await fill(store, [f"k{i:05d}" for i in range(3000)])
    stream = store.read_stream(B, {})
    first = [await stream.__anext__() for _ in range(3)]
    assert [i["key"] for i in first] == ["k00000", "k00001", "k00002"]
    await stream.aclose()
    assert len(await collect(store.read_stream(B, {"gte": "k02990"}))) == 10


async def test_read_stream_keeps_going_while_keys_are_written(store):
    await fill(store, [f"k{i:04d}" for i in range(1000)])
    seen = []
    async for item in store.read_stream(B, {}):
        seen.append(item["key"])
        if len(seen) % 100 == 0:
            await store.put(B, f"k{len(seen):04d}x", "new", None)
            await store.delete(B, f"k{len(seen) + 50:04d}", None)
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert {f"k{i:04d}" for i in range(100)} <= set(seen)


async def test_keys_sort_by_utf8_bytes(store):
    keys = ["z", "\u00e9", "\U0001F600", "\uffee", "A"]
    await fill(store, keys)
    listed = [i["key"] for i in await collect(store.read_stream(B, {}))]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))


async def test_sublevels_are_isolated_including_prefix_lookalikes(store):
    for sub in (["a"], ["ab"], ["a", "b"], ["b"]):
        await store.put(sub, "k", json.dumps(sub), None)
    for sub in (["a"], ["ab"], ["a", "b"], ["b"]):
        assert await collect(store.read_stream(sub, {})) == [{"key": "k", "value": json.dumps(sub)}]
        assert await collect(store.read_stream(sub, {"reverse": True})) == [{"key": "k", "value": json.dumps(sub)}]
    assert await collect(store.read_stream(["x"], {})) == []
    assert await collect(store.raw_list_keys({})) == ["!a!k", "!a#b!k", "!ab!k", "!b!k"]


async def test_raw_list_keys_uses_level_sublevel_physical_keys_and_range_options(store):
    await store.put(["__metastore"], "mybucket", "{}", None)
    await store.put(["..recordLogs", "s3-recordlog"], "0000000000000007", "{}", None)
    vid = vid_of(await store.put(["mybucket"], "photo.jpg", "{}", {"versioning": True}))
    keys = await collect(store.raw_list_keys({}))
    assert keys == ["!..recordLogs#s3-recordlog!0000000000000007", "!__metastore!mybucket",
                    "!mybucket!photo.jpg", f"!mybucket!photo.jpg\x00{vid}"]
    assert await collect(store.raw_list_keys({"gte": "!m", "limit": 1})) == ["!mybucket!photo.jpg"]


# --- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sublevel", ["bucket", [""], [1], ["a!b"], None, [["a"]]])
async def test_malformed_sublevel_is_invalid_argument(mem_store, sublevel):
    for call in (mem_store.put(sublevel, "k", "v", None), mem_store.get(sublevel, "k", None),
                 mem_store.delete(sublevel, "k", None)):
        with pytest.raises(MetadataError) as e:
            await call
        expect_error(e, "InvalidArgument")
    with pytest.raises(MetadataError) as e:
        mem_store.read_stream(sublevel, {})
    expect_error(e, "InvalidArgument")


@pytest.mark.parametrize("key,value,options", [
    (5, "v", None), (None, "v", None), ("k", None, None), ("k", {"a": 1}, None), ("k", 5, None),
    ("\ud800", "v", None), ("k", "v", "opts"), ("k", "v", {"versionId": 5}),
    ("k", "not json", {"versioning": True}), ("k", "[1]", {"versionId": ""}),
])
async def test_malformed_put_is_invalid_argument(mem_store, key, value, options):
    with pytest.raises(MetadataError) as e:
        await mem_store.put(B, key, value, options)
    expect_error(e, "InvalidArgument")


@pytest.mark.parametrize("options", [
    "x", {"gt": 5}, {"limit": "3"}, {"limit": 1.5}, {"limit": True}, {"reverse": "yes"},
    {"keys": False, "values": False}, {"lte": ["a"]},
])
async def test_malformed_read_stream_options_are_invalid_argument(mem_store, options):
    with pytest.raises(MetadataError) as e:
        mem_store.read_stream(B, options)
    expect_error(e, "InvalidArgument")


async def test_null_key_writes_are_reported_not_implemented(mem_store):
    with pytest.raises(MetadataError) as e:
        await mem_store.put(B, "k", "{}", {"versionId": "null"})
    expect_error(e, "NotImplemented")


# --- group commit ------------------------------------------------------------------------------------

async def test_concurrent_puts_are_group_committed_and_all_readable(store):
    await asyncio.gather(*(store.put(B, f"k{i:04d}", f"v{i}", None) for i in range(1000)))
    stats = store.stats()
    assert stats["ops"] == 1000 and stats["max_batch_ops"] > 1 and stats["batches"] < 1000
    items = await collect(store.read_stream(B, {}))
    assert len(items) == 1000 and items[999] == {"key": "k0999", "value": "v999"}


async def test_batches_respect_the_op_cap(kind, tmp_path):
    s = MetaStore(make_kv(kind, tmp_path), write_batch_max_ops=100)
    try:
        await asyncio.gather(*(s.put(B, f"k{i}", "{}", {"versioning": True}) for i in range(300)))
        stats = s.stats()
        assert stats["ops"] == 600 and stats["max_batch_ops"] == 100 and stats["batches"] >= 6
    finally:
        await s.close()


async def test_a_failed_batch_fails_its_callers(kind, tmp_path):
    kv = make_kv(kind, tmp_path)
    s = MetaStore(kv)
    await s.put(B, "k", "v", None)
    kv.close()                                       # the store underneath goes away
    results = await asyncio.gather(*(s.put(B, f"x{i}", "v", None) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, MetadataError) and r.type == "InternalError" for r in results)
    await s.close()


async def test_operations_after_close_are_errors(store):
    await store.close()
    with pytest.raises(MetadataError):
        await store.put(B, "k", "v", None)


# --- persistence, uuid, disk usage -------------------------------------------------------------------

async def test_rocks_reopen_after_close_keeps_data(tmp_path):
    s = MetaStore(RocksKV(str(tmp_path)), metadata_path=str(tmp_path))
    vid = vid_of(await s.put(B, "k", '{"a":1}', {"versioning": True}))
    uid = await s.get_uuid()
    await s.close()
    s2 = MetaStore(RocksKV(str(tmp_path)), metadata_path=str(tmp_path))
    try:
        assert vid_of(await s2.get(B, "k", None)) == vid
        assert await s2.get_uuid() == uid
        assert (tmp_path / "uuid").read_text() == uid
    finally:
        await s2.close()


def test_rocks_open_of_corrupt_db_raises(tmp_path):
    RocksKV(str(tmp_path)).close()
    (tmp_path / "rootDB" / "CURRENT").write_text("garbage\n")
    with pytest.raises(KVOpenError):
        RocksKV(str(tmp_path))


def test_rocks_open_of_non_empty_dir_without_current_raises(tmp_path):
    (tmp_path / "rootDB").mkdir()
    (tmp_path / "rootDB" / "000001.sst").write_bytes(b"junk")
    with pytest.raises(KVOpenError):
        RocksKV(str(tmp_path))


async def test_uuid_comes_from_initial_instance_id_when_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("INITIAL_INSTANCE_ID", "instance-42")
    s = MetaStore(MemoryKV(), metadata_path=str(tmp_path))
    assert await s.get_uuid() == "instance-42"
    assert (tmp_path / "uuid").read_text() == "instance-42"
    await s.close()


async def test_disk_usage_reports_available_free_total(store):
    usage = await store.get_disk_usage()
    assert set(usage) == {"available", "free", "total"}
    assert 0 < usage["available"] <= usage["free"] <= usage["total"]


async def test_stats_shape(store):
    await store.put(B, "k", "v", None)
    assert store.stats() == {"batches": 1, "ops": 1, "max_batch_ops": 1, "last_batch_ops": 1}


# --- property: random operation sequences against a dict model -------------------------------------


_PHD = object()   # model marker: the master is a placeholder for deletion
_MODEL_KEYS = ["a", "ab", "b"]
_op = st.one_of(
    st.tuples(st.sampled_from(["vput", "put", "sput"]), st.sampled_from(_MODEL_KEYS), st.integers(0, 99)),
    st.tuples(st.sampled_from(["del", "get"]), st.sampled_from(_MODEL_KEYS)),
    st.tuples(st.sampled_from(["vdel", "vget"]), st.sampled_from(_MODEL_KEYS), st.integers(0, 20)),
    st.tuples(st.just("vidput"), st.sampled_from(_MODEL_KEYS), st.integers(0, 20), st.integers(0, 99)),
)


class _KeyModel:
    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.master: Any = None
        self.known: list[str] = []          # every vid ever seen for the key, deleted ones included

    def pick(self, i: int) -> str:
        return self.known[i % len(self.known)] if self.known else versionid.generate("MODEL")

    def expected_get(self) -> str | None:
        if self.master is _PHD:
            newest = min(self.versions) if self.versions else None
            self.master = None if newest is None else self.versions[newest]   # the get repairs it
        return self.master


async def _run_model(s: MetaStore, ops: list[tuple]) -> None:
    model = {k: _KeyModel() for k in _MODEL_KEYS}

    async def get_or_none(key: str, options: dict | None) -> str | None:
        try:
            return await s.get(B, key, options)
        except MetadataError as exc:
            assert exc.type == "ObjNotFound"
            return None

    for op in ops:
        name, key = op[0], op[1]
        m = model[key]
        if name == "vput":
            value = json.dumps({"v": op[2]})
            vid = vid_of(await s.put(B, key, value, {"versioning": True}))
            m.versions[vid] = m.master = append_version_id(value, vid)
            m.known.append(vid)
        elif name == "put":
            m.master = json.dumps({"p": op[2]})
            await s.put(B, key, m.master, None)
        elif name == "sput":
            value = json.dumps({"s": op[2]})
            vid = vid_of(await s.put(B, key, value, {"versionId": ""}))
            m.master = append_version_id(value, vid)
        elif name == "del":
            await s.delete(B, key, None)
            m.master = None
        elif name == "get":
            assert await get_or_none(key, None) == m.expected_get()
        elif name == "vdel":
            vid = m.pick(op[2])
            await s.delete(B, key, {"versionId": vid})
            m.versions.pop(vid, None)
            if m.master is _PHD or (m.master is not None and json.loads(m.master).get("versionId") == vid):
                m.master = _PHD if m.versions else None   # the last version takes its master along
        elif name == "vget":
            vid = m.pick(op[2])
            assert await get_or_none(key, {"versionId": vid}) == m.versions.get(vid)
        elif name == "vidput":
            vid = m.pick(op[2])
            value = json.dumps({"u": op[3]})
            await s.put(B, key, value, {"versionId": vid})
            m.versions[vid] = value
            if m.master is None:
                m.master = value
            elif m.master is not _PHD:
                master_vid = json.loads(m.master).get("versionId")
                if master_vid is not None and master_vid >= vid:
                    m.master = value
    stored = {i["key"]: i["value"] for i in await collect(s.read_stream(B, {}))}
    expected_versions = {version_key(k, v): val for k in _MODEL_KEYS for v, val in model[k].versions.items()}
    assert {k: v for k, v in stored.items() if "\x00" in k} == expected_versions
    for k in _MODEL_KEYS:
        # A placeholder only ever stands in front of versions; no master is left without a reason.
        if model[k].master is None:
            assert stored.get(k) is None
        elif model[k].master is _PHD:
            assert json.loads(stored[k])["isPHD"] is True and model[k].versions
        assert await get_or_none(k, None) == model[k].expected_get()


@pytest.mark.parametrize("store_kind,examples", [("memory", 150), ("rocks", 25)])
def test_random_operation_sequences_match_a_dict_model(store_kind, examples, tmp_path_factory):
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_op, max_size=40))
    def check(ops):
        path = tmp_path_factory.mktemp("model")
        async def go() -> None:
            s = MetaStore(make_kv(store_kind, path), repair_delay_s=3600)
            try:
                await _run_model(s, ops)
            finally:
                await s.close()
        asyncio.run(go())
    check()


# ---- conditional writes (docs/protocol.md#conditional-writes) ----------------------------------

class SlowKV(MemoryKV):
    """A memory store whose commits take a while and run in a worker thread (as RocksDB's do), so
    that writes arriving meanwhile queue up in the write cache for the next batch."""

    def __init__(self, delay_s: float = 0.02):
        super().__init__()
        self.delay_s = delay_s

    def write(self, ops, sync=True):
        import time
        time.sleep(self.delay_s)
        super().write(ops, sync)


@pytest.fixture
async def slow_store() -> AsyncIterator[MetaStore]:
    s = MetaStore(SlowKV(), repair_delay_s=3600)
    s._inline = False   # commit in a thread, as over RocksDB: a commit is in flight while others queue
    yield s
    await s.close()


async def test_put_if_absent_writes_a_missing_key_only(store):
    assert await store.put(B, "k", "one", {"ifAbsent": True}) is None
    with pytest.raises(MetadataError) as exc:
        await store.put(B, "k", "two", {"ifAbsent": True})
    expect_error(exc, "PreconditionFailed")
    assert exc.value.code == 412
    assert await store.get(B, "k", None) == "one"


async def test_put_if_match_compares_the_whole_stored_value(store):
    await store.put(B, "k", '{"v":1}', None)
    for wrong in ('{"v":2}', '{"v": 1}', ""):
        with pytest.raises(MetadataError) as exc:
            await store.put(B, "k", "new", {"ifMatch": wrong})
        expect_error(exc, "PreconditionFailed")
    with pytest.raises(MetadataError) as exc:
        await store.put(B, "missing", "new", {"ifMatch": '{"v":1}'})
    expect_error(exc, "PreconditionFailed")
    await store.put(B, "k", "new", {"ifMatch": '{"v":1}'})
    assert await store.get(B, "k", None) == "new"
    with pytest.raises(MetadataError):
        await store.get(B, "missing", None)


async def test_delete_if_match_removes_only_the_value_expected(store):
    await store.put(B, "k", "one", None)
    with pytest.raises(MetadataError) as exc:
        await store.delete(B, "k", {"ifMatch": "other"})
    expect_error(exc, "PreconditionFailed")
    assert await store.get(B, "k", None) == "one"
    assert await store.delete(B, "k", {"ifMatch": "one"}) is None
    with pytest.raises(MetadataError) as exc:
        await store.delete(B, "k", {"ifMatch": "one"})
    expect_error(exc, "PreconditionFailed")


async def test_return_previous_answers_the_value_replaced_or_removed(store):
    assert await store.put(B, "k", "one", {"returnPrevious": True}) == {"previous": None}
    assert await store.put(B, "k", "two", {"returnPrevious": True}) == {"previous": "one"}
    assert await store.put(B, "k", "three", {"ifMatch": "two", "returnPrevious": True}) == {"previous": "two"}
    assert await store.delete(B, "k", {"returnPrevious": True}) == {"previous": "three"}
    assert await store.delete(B, "k", {"returnPrevious": True}) == {"previous": None}


async def test_conditions_apply_to_plain_writes_only_and_are_typed(mem_store):
    bad = [("put", {"versioning": True, "ifAbsent": True}), ("put", {"versionId": "", "returnPrevious": True}),
           ("del", {"versionId": "x", "ifMatch": "v"}), ("put", {"ifAbsent": "yes"}),
           ("put", {"ifMatch": 3}), ("put", {"ifAbsent": True, "ifMatch": "v"}), ("del", {"ifAbsent": True})]
    for call, options in bad:
        with pytest.raises(MetadataError) as exc:
            if call == "put":
                await mem_store.put(B, "k", "{}", options)
            else:
                await mem_store.delete(B, "k", options)
        expect_error(exc, "InvalidArgument")
    # Unset conditions are no conditions: a plain put as ever.
    assert await mem_store.put(B, "k", "v", {"ifAbsent": None, "ifMatch": None}) is None


async def test_conditions_see_writes_still_queued_for_commit(slow_store):
    s = slow_store
    first = asyncio.ensure_future(s.put(B, "k", "v1", None))   # its commit is in flight ...
    await asyncio.sleep(0.005)
    queued = asyncio.ensure_future(s.put(B, "k", "v2", None))  # ... so this one waits in the queue
    await asyncio.sleep(0)
    assert s._pending[b"!bucket!k"][0] == b"v2"                 # queued, not committed
    stale = s.put(B, "k", "x", {"ifMatch": "v1"})
    absent = s.put(B, "other", "y", {"ifAbsent": True})
    taken = s.put(B, "k", "z", {"ifAbsent": True})
    current = s.put(B, "k", "v3", {"ifMatch": "v2", "returnPrevious": True})
    results = await asyncio.gather(first, queued, stale, absent, taken, current, return_exceptions=True)
    assert results[0] is None and results[1] is None
    assert isinstance(results[2], MetadataError) and results[2].type == "PreconditionFailed"
    assert results[3] is None
    assert isinstance(results[4], MetadataError) and results[4].type == "PreconditionFailed"
    assert results[5] == {"previous": "v2"}
    assert await s.get(B, "k", None) == "v3"


@pytest.mark.parametrize("rounds", [30])
async def test_concurrent_conditional_writes_of_one_key_have_one_winner_under_group_commit(slow_store, rounds):
    s = slow_store
    for r in range(rounds):
        key = f"k{r}"
        # put-if-absent: one creator
        created = await asyncio.gather(*(s.put(B, key, f"c{i}", {"ifAbsent": True}) for i in range(6)),
                                       return_exceptions=True)
        assert sum(1 for x in created if x is None) == 1
        assert all(isinstance(x, MetadataError) and x.type == "PreconditionFailed" for x in created if x is not None)
        base = await s.get(B, key, None)
        # put-if-unchanged and delete-if-unchanged of the same value: one winner
        claims = [s.put(B, key, f"claim{i}", {"ifMatch": base}) for i in range(3)] + \
                 [s.delete(B, key, {"ifMatch": base}) for _ in range(3)]
        outcome = await asyncio.gather(*claims, return_exceptions=True)
        assert sum(1 for x in outcome if x is None) == 1
        # returnPrevious: each replaced value is answered exactly once, the last one stays
        await s.put(B, key, "start", None)
        replies = await asyncio.gather(*(s.put(B, key, f"w{i}", {"returnPrevious": True}) for i in range(8)))
        previous = [x["previous"] for x in replies]
        final = await s.get(B, key, None)
        assert sorted(previous + [final]) == sorted(["start"] + [f"w{i}" for i in range(8)])
