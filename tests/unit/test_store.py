"""The store layer over the in-process engine: key layout, versioning options, upload records."""
from __future__ import annotations

import pytest

from gateway.metadata import LocalMetadataClient
import json

from gateway.models import BucketMD, ObjectMD, PartMD, UploadMD, canned_acl, new_object_md, now_iso
from gateway.store import METASTORE, USERS_BUCKET, Store, overview_key, part_key, shadow_bucket
from shared.metastore import MemoryKV, MetaStore


@pytest.fixture
async def store():
    s = Store(LocalMetadataClient(MetaStore(MemoryKV(), replication_group_id="RG001")), "RG001")
    await s.connect()
    await s.setup()
    yield s
    await s.close()


def _md(key: str, etag: str = "e") -> ObjectMD:
    return new_object_md(key, "owner", "Owner", size=1, md5=etag, location=None, data_store_name="us-east-1",
                        headers={}, user_meta={})


async def test_created_bucket_is_listed_for_its_owner_and_gone_after_delete(store):
    info = BucketMD("b1", "owner", "Owner", now_iso())
    await store.create_bucket(info)
    await store.create_bucket(BucketMD("b2", "owner", "Owner", now_iso()))
    await store.create_bucket(BucketMD("c", "other", "Other", now_iso()))
    assert [n async for n in store.owned_bucket_names("owner")] == ["b1", "b2"]
    assert [n async for n in store.owned_bucket_names("owner", after="b1")] == ["b2"]
    assert (await store.get_bucket("b1")).owner == "owner"
    await store.delete_bucket(info)
    assert await store.get_bucket("b1") is None
    assert [n async for n in store.owned_bucket_names("owner")] == ["b2"]
    # The raw layout is the original's: one key per bucket in __metastore and users..bucket.
    assert await store.client.get([METASTORE], "b2", {})
    assert await store.client.get([USERS_BUCKET], "owner..|..b2", {})


async def test_versioned_puts_keep_every_version_and_deletes_repair_the_master(store):
    await store.create_bucket(BucketMD("v", "owner", "Owner", now_iso()))
    v1 = await store.put_object("v", "k", _md("k", "one"), versioning=True)
    v2 = await store.put_object("v", "k", _md("k", "two"), versioning=True)
    assert v1 and v2 and v1 != v2
    assert (await store.get_object("v", "k")).etag == "two"
    assert (await store.get_object("v", "k", v1)).etag == "one"
    assert [md.etag async for md in store.versions_of("v", "k")] == ["two", "two", "one"]
    await store.delete_object("v", "k", v2)
    assert (await store.get_object("v", "k")).etag == "one"
    assert await store.bucket_has_versions("v")
    await store.delete_object("v", "k", v1)
    assert await store.get_object("v", "k", v1) is None


async def test_plain_put_has_no_version_and_delete_empties_the_bucket(store):
    await store.create_bucket(BucketMD("p", "owner", "Owner", now_iso()))
    assert await store.put_object("p", "k", _md("k")) is None
    assert (await store.get_object("p", "k")).version_id is None
    await store.delete_object("p", "k")
    assert await store.get_object("p", "k") is None
    assert not await store.bucket_has_versions("p")


async def test_upload_records_live_in_the_shadow_bucket_in_part_order(store):
    await store.put_upload("m", "obj", "u" * 32, {"key": "obj"})
    for n in (3, 1, 2, 10):
        await store.put_part("m", "u" * 32, n, {"partNumber": n})
    assert await store.bucket_has_uploads("m")
    assert [n for n, _ in await store.parts("m", "u" * 32)] == [1, 2, 3, 10]
    assert [n for n, _ in await store.parts("m", "u" * 32, after=2, limit=1)] == [3]
    assert await store.client.get([shadow_bucket("m")], overview_key("obj", "u" * 32), {})
    assert await store.client.get([shadow_bucket("m")], part_key("u" * 32, 10), {})
    await store.delete_part("m", "u" * 32, 3)
    assert [n for n, _ in await store.parts("m", "u" * 32)] == [1, 2, 10]
    await store.delete_upload("m", "obj", "u" * 32)
    assert await store.get_upload("m", "obj", "u" * 32) is None


async def test_upload_overview_is_written_in_the_original_wire_form(store):
    headers = {"content-type": "text/plain", "cache-control": "no-cache", "x-amz-tagging": "a=1",
               "x-amz-meta-ignored": "headers are not user metadata", "host": "h"}
    overview = UploadMD.new("u" * 32, "obj", "m", owner_id="oid", owner_name="Owner", storage_class="STANDARD_IA",
                            location="us-east-1", acl=canned_acl("public-read", bucket=False), headers=headers,
                            user_meta={"x-amz-meta-color": "blue"}, checksum_algorithm="CRC32",
                            checksum_type="COMPOSITE")
    await store.put_upload("m", "obj", "u" * 32, overview)
    # Field names, values and order as CreateMultipartUpload has always written them (the original reads them).
    expected = {
        "id": "u" * 32, "uploadId": "u" * 32, "key": "obj", "eventualStorageBucket": "m",
        "initiated": overview["initiated"], "owner-id": "oid", "owner-display-name": "Owner",
        "initiator": {"ID": "oid", "DisplayName": "Owner"}, "x-amz-storage-class": "STANDARD_IA",
        "controllingLocationConstraint": "us-east-1", "dataStoreName": "us-east-1",
        "acl": canned_acl("public-read", bucket=False), "completeInProgress": False,
        "cache-control": "no-cache", "content-disposition": "", "content-encoding": "", "content-language": "",
        "expires": "", "content-type": "text/plain", "x-amz-website-redirect-location": "", "x-amz-tagging": "a=1",
        "x-amz-meta-color": "blue", "checksumAlgorithm": "CRC32", "checksumType": "COMPOSITE",
    }
    raw = await store.client.get([shadow_bucket("m")], overview_key("obj", "u" * 32), {})
    assert raw == json.dumps(expected)
    found = await store.get_upload("m", "obj", "u" * 32)
    assert isinstance(found, UploadMD) and found == expected
    assert (found.upload_id, found.key, found.owner_id, found.owner_display_name) == ("u" * 32, "obj", "oid", "Owner")
    assert (found.initiator_id, found.initiator_display_name) == ("oid", "Owner")
    assert (found.storage_class, found.location, found.data_store_name) == ("STANDARD_IA", "us-east-1", "us-east-1")
    assert (found.checksum_algorithm, found.checksum_type, found.tagging) == ("CRC32", "COMPOSITE", "a=1")
    assert found.acl["Canned"] == "public-read"
    assert found.user_metadata == {"x-amz-meta-color": "blue"}
    assert found.headers["content-type"] == "text/plain" and found.headers["expires"] == ""
    assert not found.complete_in_progress


async def test_upload_overview_keeps_unknown_fields_and_its_order_when_marked(store):
    # An overview the original wrote: its SSE and lock fields are not ours, and survive our rewrite.
    original = {"id": "u" * 32, "uploadId": "u" * 32, "key": "k", "owner-id": "o", "owner-display-name": "O",
                "x-amz-server-side-encryption": "AES256", "completeInProgress": False, "legalHold": False}
    await store.client.put([shadow_bucket("b")], overview_key("k", "u" * 32), json.dumps(original), {})
    overview = await store.get_upload("b", "k", "u" * 32)
    assert overview.checksum_algorithm is None and overview.storage_class == "STANDARD"
    assert (overview.initiator_id, overview.initiator_display_name) == ("o", "O")   # no initiator: the owner
    overview.complete_in_progress = True
    await store.put_upload("b", "k", "u" * 32, overview)
    raw = await store.client.get([shadow_bucket("b")], overview_key("k", "u" * 32), {})
    assert raw == json.dumps({**original, "completeInProgress": True})
    assert (await store.get_upload("b", "k", "u" * 32)).complete_in_progress


async def test_part_record_is_written_in_the_original_wire_form(store):
    loc = {"key": "d1", "size": 3, "start": 0, "dataStoreName": "us-east-1"}
    part = PartMD.new(3, "0" * 32, [loc], ("CRC32", "AAAAAA=="))
    await store.put_part("w", "u" * 32, 2, part)
    expected = {"md-model-version": 3, "partLocations": [loc], "last-modified": part["last-modified"],
                "content-md5": "0" * 32, "content-length": 3,
                "checksum": {"checksumAlgorithm": "CRC32", "checksumValue": "AAAAAA=="}, "key": "u" * 32 + "..|..00002"}
    assert await store.client.get([shadow_bucket("w")], "u" * 32 + "..|..00002", {}) == json.dumps(expected)
    found = await store.get_part("w", "u" * 32, 2)
    assert isinstance(found, PartMD) and found == expected
    assert (found.model_version, found.locations, found.etag, found.size) == (3, [loc], "0" * 32, 3)
    assert found.last_modified == part.last_modified
    assert (found.checksum_algorithm, found.checksum_value) == ("CRC32", "AAAAAA==")
    [(number, listed)] = await store.parts("w", "u" * 32)
    assert number == 2 and isinstance(listed, PartMD) and listed == expected
    # An empty part: no locations, no checksum.
    empty = PartMD.new(0, "d41d8cd98f00b204e9800998ecf8427e", None, None)
    assert list(empty) == ["md-model-version", "partLocations", "last-modified", "content-md5", "content-length"]
    assert (empty.locations, empty.checksum, empty.checksum_value) == ([], None, None)


async def test_get_part_reads_one_part_record(store):
    await store.put_part("g", "u" * 32, 7, {"content-md5": "m7"})
    # The stored value carries its own key, as the original's part records do.
    assert (await store.get_part("g", "u" * 32, 7)) == {"content-md5": "m7", "key": "u" * 32 + "..|..00007"}
    assert await store.get_part("g", "u" * 32, 8) is None
    await store.delete_part("g", "u" * 32, 7)
    assert await store.get_part("g", "u" * 32, 7) is None


async def test_owned_bucket_names_first_starts_at_a_name_included(store):
    for name in ("a1", "b1", "b2", "c1"):
        await store.create_bucket(BucketMD(name, "owner", "Owner", now_iso()))
    await store.create_bucket(BucketMD("b0", "other", "Other", now_iso()))
    assert [n async for n in store.owned_bucket_names("owner", first="b1")] == ["b1", "b2", "c1"]
    assert [n async for n in store.owned_bucket_names("owner", first="b")] == ["b1", "b2", "c1"]
    assert [n async for n in store.owned_bucket_names("owner", first="d")] == []


def test_store_sublevel_names_are_reserved_bucket_names(store):
    assert store.reserves_bucket_name(METASTORE) and store.reserves_bucket_name(USERS_BUCKET)
    assert store.reserves_bucket_name(shadow_bucket("b").lower())
    assert not store.reserves_bucket_name("mybucket")


async def test_bucket_has_versions_skips_placeholder_masters_and_repairs_lone_ones(store):
    await store.create_bucket(BucketMD("h", "owner", "Owner", now_iso()))
    assert not await store.bucket_has_versions("h")
    # A placeholder with nothing behind it (its repair never ran): the get repairs it away.
    await store.client.put(["h"], "orphan", '{ "isPHD": true, "versionId": "98765432109876RG001  1.2.3" }', {})
    assert not await store.bucket_has_versions("h")
    assert not await store.bucket_has_versions("h")
    # A placeholder over a version: the version counts.
    v1 = await store.put_object("h", "k", _md("k", "one"), versioning=True)
    v2 = await store.put_object("h", "k", _md("k", "two"), versioning=True)
    await store.delete_object("h", "k", v2)
    assert await store.bucket_has_versions("h")
    await store.delete_object("h", "k", v1)
    assert not await store.bucket_has_versions("h")
    await store.put_object("h", "plain", _md("plain"))
    assert await store.bucket_has_versions("h")


# ---- races settled with conditional writes (docs/versioning.md#races) ---------------------------

async def test_create_bucket_puts_the_record_only_if_absent(store):
    first = BucketMD("r", "owner", "Owner", now_iso())
    assert await store.create_bucket(first)
    second = BucketMD("r", "other", "Other", now_iso())
    assert not await store.create_bucket(second)
    assert (await store.get_bucket("r")).owner == "owner"
    # The loser's users..bucket entry went with its attempt.
    assert [n async for n in store.owned_bucket_names("other")] == []
    assert [n async for n in store.owned_bucket_names("owner")] == ["r"]


async def _mark(store, name: str) -> tuple[str, dict]:
    """What DeleteBucket's first step does: the record marked deleted (a delete in progress, or one
    that died there)."""
    raw = await store.client.get([METASTORE], name, {})
    doc = {**json.loads(raw), "deleted": True, "deletionId": "d1"}
    marked = json.dumps(doc, separators=(",", ":"))
    await store.client.put([METASTORE], name, marked, {"ifMatch": raw})
    return marked, doc


async def test_delete_bucket_answers_by_content_and_unmarks_a_bucket_it_keeps(store):
    info = BucketMD("d", "owner", "Owner", now_iso())
    await store.create_bucket(info)
    await store.put_object("d", "k", _md("k"))
    assert await store.delete_bucket(info) == "versions"
    assert (await store.get_bucket("d")) is not None
    assert "deletionId" not in json.loads(await store.client.get([METASTORE], "d", {}))
    await store.delete_object("d", "k")
    await store.put_upload("d", "k", "u" * 32, UploadMD({"key": "k"}))
    assert await store.delete_bucket(info) == "uploads"
    await store.delete_upload("d", "k", "u" * 32)
    assert await store.delete_bucket(info) == "deleted"
    assert await store.get_bucket("d") is None
    assert [n async for n in store.owned_bucket_names("owner")] == []
    assert await store.delete_bucket(info) == "missing"


async def test_a_mark_left_behind_is_settled_by_the_next_reader(store):
    await store.create_bucket(BucketMD("full", "owner", "Owner", now_iso()))
    await store.put_object("full", "k", _md("k"))
    await _mark(store, "full")
    assert (await store.get_bucket("full")) is not None          # not empty: unmarked, still there
    assert json.loads(await store.client.get([METASTORE], "full", {}))["deleted"] is False
    await store.create_bucket(BucketMD("empty", "owner", "Owner", now_iso()))
    await _mark(store, "empty")
    assert await store.get_bucket("empty") is None                 # empty: the deletion is finished
    assert await store._raw([METASTORE], "empty") is None


async def test_a_write_that_lands_during_a_delete_makes_the_delete_fail(store):
    info = BucketMD("w", "owner", "Owner", now_iso())
    await store.create_bucket(info)
    loaded = await store.get_bucket("w")
    marked, doc = await _mark(store, "w")                          # the delete has marked the bucket ...
    assert await store.bucket_has_versions("w") is False           # ... and found it empty
    await store.put_object("w", "k", _md("k"))                     # the write lands now ...
    assert await store.bucket_alive(loaded)                        # ... and finds its bucket alive
    assert await store._settle("w", marked, doc) == "lost"         # so the delete's removal fails
    assert await store.delete_bucket(loaded) == "versions"


async def test_a_write_that_lands_after_a_delete_finds_its_bucket_gone(store):
    info = BucketMD("g", "owner", "Owner", now_iso())
    await store.create_bucket(info)
    loaded = await store.get_bucket("g")
    assert await store.delete_bucket(loaded) == "deleted"
    assert not await store.bucket_alive(loaded)
    assert not await store.put_bucket(loaded)                      # config writes never resurrect it
    assert await store.get_bucket("g") is None
    await store.create_bucket(BucketMD("g", "other", "Other", now_iso()))
    assert not await store.bucket_alive(loaded)                    # a new bucket of that name is not it


async def test_plain_object_writes_return_what_they_replaced(store):
    await store.create_bucket(BucketMD("o", "owner", "Owner", now_iso()))
    previous, text = await store.replace_object("o", "k", _md("k", "one"))
    assert previous is None
    previous, _ = await store.replace_object("o", "k", _md("k", "two"))
    assert previous.etag == "one"
    assert not await store.delete_object_if("o", "k", text)       # not ours any more
    assert (await store.remove_object("o", "k")).etag == "two"
    assert await store.remove_object("o", "k") is None


async def test_upload_claims_are_conditional_on_the_record_read(store):
    await store.put_upload("u", "k", "a" * 32, UploadMD({"key": "k"}))
    overview, raw = await store.get_upload_record("u", "k", "a" * 32)
    claim = UploadMD({**overview, "completeInProgress": True})
    assert await store.replace_upload("u", "k", "a" * 32, claim, raw)
    assert not await store.delete_upload("u", "k", "a" * 32, expected=raw)     # an Abort that read before
    assert await store.delete_upload("u", "k", "a" * 32, expected=json.dumps(claim))
    assert await store.get_upload("u", "k", "a" * 32) is None
