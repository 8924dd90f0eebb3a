"""Listings computed in the dmd: the `listObject` call (docs/protocol.md#listobject) against the
read-stream path, the fallback for a dmd without the call, the projection, the errors.

Both paths run against the same real dmd (`python -m dmd`, tests/procs.py): `RemoteMetadataClient.list_page`
uses listObject (the manifest offers it), `MetadataClient.list_page` (the base class, the algorithm in
this process over createReadStream) is the path kept for the original dmd. The second dmd plays an
older one: DMD_HIDDEN_CALLS=listObject leaves the call out of its manifest and refuses it.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.metadata import RemoteMetadataClient
from gateway.metadata.client import MetadataClient
from gateway.server import map_internal_error
from shared import jsoncodec, rpc
from shared.listing import (DELIMITER, DELIMITER_MASTER, DELIMITER_VERSIONS, LISTING_MPU, OBJECT_LISTING_FIELDS,
                            UPLOAD_LISTING_FIELDS, overview_key, project_entries)
from shared.metastore.errors import MetadataError
from tests.integration.conftest import make_client
from tests.procs import Dmd, start_dmd, start_gateway

ALPHABET = "ab/.-"
SHADOW = "mpuShadowBucket"


@pytest.fixture(scope="module")
def list_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("list-dmd"))
    yield d
    d.stop()


@pytest.fixture(scope="module")
def old_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("old-dmd"), env={"DMD_HIDDEN_CALLS": rpc.CALL_LIST_OBJECT})
    yield d
    d.stop()


def object_value(key: str, n: int, delete_marker: bool = False) -> str:
    """A stored object document with what a listing does not show (location, user metadata, acl)."""
    doc: dict[str, Any] = {"key": key, "content-length": n, "content-md5": f"{n:032x}",
                           "last-modified": "2024-01-01T00:00:00.000Z", "owner-id": "o" * 64,
                           "owner-display-name": "owner", "x-amz-storage-class": "STANDARD",
                           "location": [{"key": uuid.uuid4().hex, "size": n, "start": 0}],
                           "x-amz-meta-color": "blue", "acl": {"Canned": "private"}, "tags": {"t": "1"},
                           "isDeleteMarker": delete_marker}
    return jsoncodec.dumps(doc)


def upload_value(key: str, upload_id: str) -> str:
    return jsoncodec.dumps({"id": upload_id, "uploadId": upload_id, "key": key, "initiated": "2024-01-01T00:00:00Z",
                            "owner-id": "o" * 64, "owner-display-name": "owner",
                            "initiator": {"ID": "o" * 64, "DisplayName": "owner"}, "x-amz-storage-class": "STANDARD",
                            "controllingLocationConstraint": "us-east-1", "acl": {"Canned": "private"},
                            "x-amz-meta-color": "blue"})


async def both_pages(client: RemoteMetadataClient, sublevel: list[str], listing_type: str,
                     params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(listObject's page, the read-stream path's page with its values projected the same way)."""
    assert client.list_object
    in_dmd = await client.list_page(sublevel, listing_type, params)
    streamed = await MetadataClient.list_page(client, sublevel, listing_type, params)
    return in_dmd, project_entries(listing_type, streamed)


def next_params(listing_type: str, params: dict[str, Any], page: dict[str, Any]) -> dict[str, Any] | None:
    if not page["IsTruncated"]:
        return None
    if listing_type in (DELIMITER, DELIMITER_MASTER):
        if params.get("v2"):
            return {**params, "continuationToken": page["NextContinuationToken"]}
        # v1: NextMarker with a delimiter, else the last key (as S3 clients do).
        return {**params, "marker": page.get("NextMarker") or page["Contents"][-1]["key"]}
    if listing_type == DELIMITER_VERSIONS:
        return {**params, "keyMarker": page["NextKeyMarker"], "versionIdMarker": page.get("NextVersionIdMarker")}
    return {**params, "keyMarker": page["NextKeyMarker"], "uploadIdMarker": page["NextUploadIdMarker"]}


async def walk_and_compare(client: RemoteMetadataClient, sublevel: list[str], listing_type: str,
                           params: dict[str, Any]) -> int:
    """Every page of a listing, each equal on both paths; how many entries were listed."""
    listed = 0
    current: dict[str, Any] | None = params
    for _ in range(200):
        if current is None:
            return listed
        in_dmd, streamed = await both_pages(client, sublevel, listing_type, current)
        assert in_dmd == streamed, (listing_type, current)
        listed += sum(len(in_dmd.get(name) or ()) for name in ("Contents", "Versions", "Uploads", "CommonPrefixes"))
        current = next_params(listing_type, current, in_dmd)
    raise AssertionError("listing did not end")


ops = st.lists(st.tuples(st.sampled_from(["put", "put", "version", "marker", "delete-version", "upload"]),
                         st.text(ALPHABET, min_size=1, max_size=5)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, prefix=st.text(ALPHABET, max_size=2), delimiter=st.sampled_from([None, "/", ".", "a/"]),
       max_keys=st.integers(min_value=1, max_value=4))
def test_list_object_answers_the_same_pages_as_the_stream_path(list_dmd: Dmd, ops: list[tuple[str, str]],
                                                               prefix: str, delimiter: str | None,
                                                               max_keys: int) -> None:
    async def run() -> None:
        client = RemoteMetadataClient("127.0.0.1", list_dmd.metadata_port, call_timeout_ms=30_000)
        await client.connect()
        bucket = "b" + uuid.uuid4().hex
        sub, shadow = [bucket], [SHADOW + bucket]
        try:
            versions: dict[str, list[str]] = {}
            for i, (op, key) in enumerate(ops):
                if op == "put":
                    await client.put(sub, key, object_value(key, i), {})
                elif op in ("version", "marker"):
                    reply = await client.put(sub, key, object_value(key, i, op == "marker"), {"versioning": True})
                    versions.setdefault(key, []).append(jsoncodec.loads(reply)["versionId"])
                elif op == "delete-version" and versions.get(key):
                    # Deleting the version the master shows leaves a placeholder (PHD) master.
                    await client.delete(sub, key, {"versionId": versions[key].pop()})
                elif op == "upload":
                    upload_id = uuid.uuid4().hex
                    await client.put(shadow, overview_key(key, upload_id), upload_value(key, upload_id), {})
                    await client.put(shadow, f"{upload_id}..|..00001", '{"key":"part"}', {})
            params = {"prefix": prefix, "delimiter": delimiter, "maxKeys": max_keys}
            await walk_and_compare(client, sub, DELIMITER_MASTER, {**params, "v2": True})
            await walk_and_compare(client, sub, DELIMITER, {**params, "v2": True})
            await walk_and_compare(client, sub, DELIMITER_VERSIONS, params)
            await walk_and_compare(client, shadow, LISTING_MPU, params)
            # v1 markers: the page after each key.
            await walk_and_compare(client, sub, DELIMITER_MASTER, {**params, "marker": prefix + "a"})
        finally:
            await client.close()
    asyncio.run(run())


async def test_listed_values_carry_only_the_listing_fields(list_dmd: Dmd) -> None:
    client = RemoteMetadataClient("127.0.0.1", list_dmd.metadata_port)
    await client.connect()
    bucket = "p" + uuid.uuid4().hex
    try:
        await client.put([bucket], "k", object_value("k", 7), {"versioning": True})
        await client.put([bucket], "m", object_value("m", 8, delete_marker=True), {"versioning": True})
        page = await client.list_page([bucket], DELIMITER_VERSIONS, {})
        assert [v["key"] for v in page["Versions"]] == ["k", "m"]
        for entry in page["Versions"]:
            value = entry["value"]
            assert isinstance(value, dict)
            assert set(value) <= set(OBJECT_LISTING_FIELDS), value
            for hidden in ("location", "x-amz-meta-color", "acl", "tags", "key"):
                assert hidden not in value
        assert page["Versions"][0]["value"]["content-length"] == 7
        assert page["Versions"][1]["value"]["isDeleteMarker"] is True
        await client.put([SHADOW + bucket], overview_key("k", "u1"), upload_value("k", "u1"), {})
        uploads = (await client.list_page([SHADOW + bucket], LISTING_MPU, {}))["Uploads"]
        assert len(uploads) == 1 and set(uploads[0]["value"]) <= set(UPLOAD_LISTING_FIELDS)
        assert uploads[0]["value"]["initiator"]["DisplayName"] == "owner"
        assert "acl" not in uploads[0]["value"] and "x-amz-meta-color" not in uploads[0]["value"]
    finally:
        await client.close()


@pytest.mark.parametrize("listing_type, params, message", [
    ("Basic", {}, "listingType"),
    (None, {}, "listingType"),
    (DELIMITER_MASTER, {"keyMarker": "a"}, "unknown listing parameter"),
    (DELIMITER_MASTER, {"maxKeys": "10"}, "maxKeys"),
    (DELIMITER_MASTER, {"maxKeys": True}, "maxKeys"),
    (DELIMITER_VERSIONS, {"prefix": 3}, "prefix"),
])
async def test_bad_listing_requests_are_refused(list_dmd: Dmd, listing_type: Any, params: dict[str, Any],
                                                message: str) -> None:
    client = RemoteMetadataClient("127.0.0.1", list_dmd.metadata_port)
    await client.connect()
    try:
        with pytest.raises(MetadataError) as info:
            await client._call(rpc.CALL_LIST_OBJECT, [{**params, "listingType": listing_type}], ["bucket"])
        assert info.value.type == "InvalidArgument" and message in info.value.description
        # What the gateway answers such a failure with: InternalError, as for any dmd error.
        assert map_internal_error(info.value).code == "InternalError"
        # The connection is still good.
        assert (await client.list_page(["bucket"], DELIMITER, {}))["Contents"] == []
    finally:
        await client.close()


async def test_list_object_needs_a_sublevel(list_dmd: Dmd) -> None:
    client = RemoteMetadataClient("127.0.0.1", list_dmd.metadata_port)
    await client.connect()
    try:
        with pytest.raises(MetadataError) as info:
            await client._call(rpc.CALL_LIST_OBJECT, [{"listingType": DELIMITER}], None)
        assert info.value.type == "InvalidArgument"
    finally:
        await client.close()


async def test_a_dmd_without_list_object_is_listed_through_streams(old_dmd: Dmd) -> None:
    client = RemoteMetadataClient("127.0.0.1", old_dmd.metadata_port)
    await client.connect()
    bucket = "o" + uuid.uuid4().hex
    try:
        assert not client.list_object
        names = [entry["name"] for entry in client.manifest["api"]]
        assert rpc.CALL_LIST_OBJECT not in names and rpc.CALL_CREATE_READ_STREAM in names
        with pytest.raises(MetadataError) as info:
            await client._call(rpc.CALL_LIST_OBJECT, [{"listingType": DELIMITER}], [bucket])
        assert "Unknown remote call" in info.value.description
        for key in ("a/1", "a/2", "b", "c"):
            await client.put([bucket], key, object_value(key, 1), {})
        page = await client.list_page([bucket], DELIMITER_MASTER, {"delimiter": "/", "maxKeys": 2, "v2": True})
        assert page["CommonPrefixes"] == ["a/"] and [c["key"] for c in page["Contents"]] == ["b"]
        assert page["IsTruncated"] and page["NextContinuationToken"] == "b"
        assert isinstance(page["Contents"][0]["value"], str)   # the stored text: nothing projected it
    finally:
        await client.close()


def test_s3_listings_through_a_dmd_without_list_object(old_dmd: Dmd, tmp_path: Path) -> None:
    gw = start_gateway(tmp_path / "gw-old", old_dmd)
    try:
        s3 = make_client(gw.url)
        s3.create_bucket(Bucket="oldlist")
        for key in ("d/x", "d/y", "top"):
            s3.put_object(Bucket="oldlist", Key=key, Body=b"12345")
        page = s3.list_objects_v2(Bucket="oldlist", Delimiter="/")
        assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["d/"]
        assert [(c["Key"], c["Size"]) for c in page["Contents"]] == [("top", 5)]
        s3.put_bucket_versioning(Bucket="oldlist", VersioningConfiguration={"Status": "Enabled"})
        s3.delete_object(Bucket="oldlist", Key="top")
        versions = s3.list_object_versions(Bucket="oldlist", Prefix="top")
        assert len(versions["DeleteMarkers"]) == 1 and len(versions["Versions"]) == 1
        s3.create_multipart_upload(Bucket="oldlist", Key="mp")
        assert [u["Key"] for u in s3.list_multipart_uploads(Bucket="oldlist")["Uploads"]] == ["mp"]
    finally:
        gw.stop()
