"""DeleteBucket right after a bucket was emptied: no placeholder, upload or leftover key may make
a bucket whose listings show nothing answer BucketNotEmpty (the dmd repairs placeholders only
15 s after a version delete, docs/versioning.md#placeholders-and-repair; DeleteBucket must not wait for that).

Every test deletes the bucket at once, without any read of the deleted keys in between: a GET
resolves a placeholder and would hide the defect.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from gateway.metadata.client import RemoteMetadataClient
from tests.integration.conftest import make_client
from tests.integration.test_multipart import complete, put_part, start
from tests.integration.test_versioning import enable, put, suspend, versions

PHD = '{ "isPHD": true, "versionId": "%s" }'


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def all_versions(s3, bucket: str) -> list[dict[str, Any]]:
    """Every version and delete marker, as DeleteObjects <Object> entries."""
    r = s3.list_object_versions(Bucket=bucket)
    return [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in r.get("Versions", []) + r.get("DeleteMarkers", [])]


def assert_deleted_now(s3, bucket: str) -> None:
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_suspended_null_marker_and_versions_deleted_with_delete_objects_then_bucket_deletes_at_once(s3, bucket):
    enable(s3, bucket)
    suspend(s3, bucket)
    put(s3, bucket, "k", b"one")
    put(s3, bucket, "k", b"two")
    s3.delete_object(Bucket=bucket, Key="k")          # a null delete marker replaces the null version
    listed = all_versions(s3, bucket)
    assert listed == [{"Key": "k", "VersionId": "null"}]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": listed})
    assert "Errors" not in result
    assert versions(s3, bucket) == []
    assert_deleted_now(s3, bucket)


@pytest.mark.parametrize("order", ["listed", "oldest-first", "one-by-one"])
def test_bucket_with_versions_markers_and_null_versions_deletes_at_once_after_deleting_them(s3, bucket, order):
    put(s3, bucket, "pre", b"pre-versioning")                 # becomes a null version
    enable(s3, bucket)
    for key in ("a", "b/c", "pre"):
        put(s3, bucket, key, b"1")
        put(s3, bucket, key, b"2")
    s3.delete_object(Bucket=bucket, Key="a")                   # marker on top of two versions
    s3.delete_object(Bucket=bucket, Key="gone")                # marker on a missing key
    suspend(s3, bucket)
    put(s3, bucket, "b/c", b"null over versions")
    s3.delete_object(Bucket=bucket, Key="pre")                 # null marker
    listed = all_versions(s3, bucket)
    assert len(listed) == 10
    if order == "oldest-first":
        listed.reverse()
    if order == "one-by-one":
        for entry in listed:
            s3.delete_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])
    else:
        assert "Errors" not in s3.delete_objects(Bucket=bucket, Delete={"Objects": listed})
    assert versions(s3, bucket) == [] and s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert_deleted_now(s3, bucket)


def test_bucket_is_not_empty_while_a_version_remains_behind_a_placeholder(s3, bucket):
    enable(s3, bucket)
    v1 = put(s3, bucket, "k", b"1")
    v2 = put(s3, bucket, "k", b"2")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v2)    # the master becomes a placeholder over v1
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(exc.value) == "BucketNotEmpty"
    assert [e[1] for e in versions(s3, bucket)] == [v1]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    assert_deleted_now(s3, bucket)


@pytest.mark.parametrize("versioning", [None, "Enabled", "Suspended"])
def test_bucket_whose_uploads_were_aborted_or_completed_deletes_at_once(s3, bucket, versioning):
    if versioning == "Enabled":
        enable(s3, bucket)
    elif versioning == "Suspended":
        enable(s3, bucket)
        suspend(s3, bucket)
    aborted = start(s3, bucket, "aborted")
    put_part(s3, bucket, aborted, 1, b"part", key="aborted")
    completed = start(s3, bucket, "done")
    parts = [put_part(s3, bucket, completed, 1, b"part", key="done")]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(exc.value) == "BucketNotEmpty"          # ongoing uploads
    s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=aborted)
    complete(s3, bucket, completed, parts, key="done")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    listed = all_versions(s3, bucket)
    assert [e["Key"] for e in listed] == ["done"]
    assert "Errors" not in s3.delete_objects(Bucket=bucket, Delete={"Objects": listed})
    assert_deleted_now(s3, bucket)


async def _dmd_keys(dmd, sublevel: str) -> list[str]:
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        return [entry["key"] async for entry in client.read_stream([sublevel], {})]
    finally:
        await client.close()


def test_deleting_the_last_version_leaves_no_key_in_the_dmd(s3_file, dmd, bucket_name):
    """The engine's half of the fix: the last version takes its master along at once, no placeholder
    waits for the repair timer (DeleteBucket would work around one; the dmd must not need it)."""
    s3, bucket = s3_file, bucket_name
    s3.create_bucket(Bucket=bucket)
    enable(s3, bucket)
    ids = [put(s3, bucket, "k", bytes([i])) for i in range(3)]
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    suspend(s3, bucket)
    put(s3, bucket, "n", b"null")
    s3.delete_object(Bucket=bucket, Key="n")                   # null marker over the null version
    for vid in [marker, *ids[::-1]]:                           # newest first: each is the master
        s3.delete_object(Bucket=bucket, Key="k", VersionId=vid)
    s3.delete_object(Bucket=bucket, Key="n", VersionId="null")
    assert asyncio.run(_dmd_keys(dmd, bucket)) == []


def test_a_placeholder_with_nothing_behind_it_does_not_keep_the_bucket(s3_file, dmd, bucket_name):
    """A placeholder whose repair never ran (the dmd restarted within 15 s of the delete, or it was
    left by another gateway): listings skip it, so DeleteBucket must too."""
    s3, bucket = s3_file, bucket_name
    s3.create_bucket(Bucket=bucket)
    enable(s3, bucket)

    async def plant() -> None:
        client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
        await client.connect()
        try:
            await client.put([bucket], "orphan", PHD % "98765432109876RG001  1.2.3", {})
        finally:
            await client.close()
    asyncio.run(plant())
    assert versions(s3, bucket) == [] and s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert_deleted_now(s3, bucket)


# ---------------------------------------------------------------- aws-cli, as users empty a versioned bucket

def test_aws_cli_empties_a_versioned_bucket_and_rb_force_succeeds_at_once(aws, file_gateway, bucket_name, tmp_path):
    s3 = make_client(file_gateway.url)
    aws("s3", "mb", f"s3://{bucket_name}")
    aws("s3api", "put-bucket-versioning", "--bucket", bucket_name, "--versioning-configuration", "Status=Enabled")
    src = tmp_path / "f.txt"
    for i in range(3):
        src.write_text(f"content {i}\n")
        aws("s3", "cp", str(src), f"s3://{bucket_name}/dir/f.txt")
        aws("s3", "cp", str(src), f"s3://{bucket_name}/g{i}.txt")
    aws("s3", "rm", f"s3://{bucket_name}/dir/f.txt")                  # a delete marker
    aws("s3", "rm", f"s3://{bucket_name}/g0.txt")
    # The usual recipe: every version and marker through delete-objects, then rb.
    listing = json.loads(aws("s3api", "list-object-versions", "--bucket", bucket_name, "--output", "json"))
    objects = [{"Key": v["Key"], "VersionId": v["VersionId"]}
               for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]
    assert len(objects) == 3 + 3 + 2
    doc = tmp_path / "delete.json"
    doc.write_text(json.dumps({"Objects": objects, "Quiet": True}))
    out = aws("s3api", "delete-objects", "--bucket", bucket_name, "--delete", f"file://{doc}", "--output", "json")
    assert "Errors" not in (json.loads(out) if out.strip() else {})
    assert json.loads(aws("s3api", "list-object-versions", "--bucket", bucket_name, "--output", "json") or "{}") \
        .get("Versions") is None
    aws("s3", "rb", "--force", f"s3://{bucket_name}")
    assert bucket_name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
