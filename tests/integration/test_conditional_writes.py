"""Conditional writes and deletes through boto3 against real processes.

PutObject and CompleteMultipartUpload: If-None-Match: * (create only), If-None-Match: <etag> (HTTP's
meaning: refuse only when the current ETag is one of those given; AWS answers 501 there, RGW accepts
it, we offer the superset), If-Match: <etag> or * (404 NoSuchKey when the key is missing, 412 when
the ETag differs). DeleteObject's If-Match and DeleteObjects' per-object <ETag> (AWS's conditional
deletes: against the current version; 412 on mismatch, 404 NoSuchKey when missing). A current delete
marker counts as no object everywhere.
"""
from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.integration.test_multipart import complete, put_part, start

OTHER = '"0123456789abcdef0123456789abcdef"'


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def fails(call, code: str, http_status: int) -> None:
    with pytest.raises(ClientError) as exc:
        call()
    assert (error_code(exc.value), status(exc.value)) == (code, http_status)


def absent(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return status(exc) == 404
    return False


@pytest.fixture
def with_marker(s3, bucket: str) -> str:
    """A versioned bucket whose key "k" has a version under a current delete marker."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"old")
    s3.delete_object(Bucket=bucket, Key="k")
    return bucket


# ---------------------------------------------------------------- PutObject

def test_put_if_match_on_a_missing_key_is_404_no_such_key_and_creates_nothing(s3, bucket):
    for value in (OTHER, "*"):
        fails(lambda: s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch=value), "NoSuchKey", 404)
    assert absent(s3, bucket, "absent")


def test_put_if_match_star_replaces_an_existing_key(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch="*")["ETag"] == etag(b"second")
    assert body(s3, bucket, "k") == b"second"


def test_put_if_match_accepts_any_etag_of_a_list(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch=f"{OTHER}, {etag(b'first')}")
    assert body(s3, bucket, "k") == b"second"
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"third", IfMatch=f"{OTHER}, {etag(b'first')}"),
          "PreconditionFailed", 412)
    assert body(s3, bucket, "k") == b"second"


def test_put_if_none_match_etag_is_412_when_the_current_etag_matches(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch=etag(b"first")),
          "PreconditionFailed", 412)
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch=f"{OTHER}, {etag(b'first')}"),
          "PreconditionFailed", 412)
    assert body(s3, bucket, "k") == b"first"


def test_put_if_none_match_etag_writes_when_the_current_etag_differs_or_the_key_is_missing(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch=OTHER)
    assert body(s3, bucket, "k") == b"second"
    s3.put_object(Bucket=bucket, Key="new", Body=b"created", IfNoneMatch=OTHER)
    assert body(s3, bucket, "new") == b"created"


def test_put_if_none_match_star_refuses_an_existing_key_and_creates_a_missing_one(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*"), "PreconditionFailed", 412)
    assert body(s3, bucket, "k") == b"first"
    s3.put_object(Bucket=bucket, Key="new", Body=b"created", IfNoneMatch="*")
    assert body(s3, bucket, "new") == b"created"


def test_put_conditions_treat_a_current_delete_marker_as_no_object(s3, with_marker):
    bucket = with_marker
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", IfMatch="*"), "NoSuchKey", 404)
    fails(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", IfMatch=etag(b"old")), "NoSuchKey", 404)
    s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfNoneMatch=etag(b"old"))
    assert body(s3, bucket, "k") == b"new"
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"newer", IfNoneMatch="*")
    assert body(s3, bucket, "k") == b"newer"


# ---------------------------------------------------------------- CompleteMultipartUpload

def test_complete_if_none_match_etag_and_if_match_star(s3, bucket):
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"new")]
    fails(lambda: complete(s3, bucket, uid, parts, IfMatch="*"), "NoSuchKey", 404)
    s3.put_object(Bucket=bucket, Key="obj", Body=b"existing")
    fails(lambda: complete(s3, bucket, uid, parts, IfNoneMatch=etag(b"existing")), "PreconditionFailed", 412)
    assert body(s3, bucket, "obj") == b"existing"
    complete(s3, bucket, uid, parts, IfNoneMatch=OTHER)
    assert body(s3, bucket, "obj") == b"new"
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"newer")]
    complete(s3, bucket, uid, parts, IfMatch="*")
    assert body(s3, bucket, "obj") == b"newer"


# ---------------------------------------------------------------- DeleteObject

def test_delete_if_match_deletes_only_the_matching_current_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    fails(lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch=OTHER), "PreconditionFailed", 412)
    assert body(s3, bucket, "k") == b"data"
    r = s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag(b"data"))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204 and absent(s3, bucket, "k")


def test_delete_if_match_star_deletes_an_existing_key(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert absent(s3, bucket, "k")


def test_delete_if_match_on_a_missing_key_is_404_no_such_key(s3, bucket):
    for value in (OTHER, "*"):
        fails(lambda: s3.delete_object(Bucket=bucket, Key="absent", IfMatch=value), "NoSuchKey", 404)
    # Without the condition, deleting a missing key still succeeds.
    assert s3.delete_object(Bucket=bucket, Key="absent")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_if_match_on_a_versioned_bucket(s3, with_marker):
    bucket = with_marker
    # The current version is a delete marker: no object, no new marker.
    fails(lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch="*"), "NoSuchKey", 404)
    assert len(s3.list_object_versions(Bucket=bucket)["DeleteMarkers"]) == 1
    s3.put_object(Bucket=bucket, Key="k", Body=b"live")
    fails(lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag(b"old")), "PreconditionFailed", 412)
    assert body(s3, bucket, "k") == b"live"
    r = s3.delete_object(Bucket=bucket, Key="k", IfMatch=etag(b"live"))
    assert r["DeleteMarker"] is True
    assert len(s3.list_object_versions(Bucket=bucket)["DeleteMarkers"]) == 2


# ---------------------------------------------------------------- DeleteObjects

def test_delete_objects_honours_a_per_object_etag(s3, bucket):
    for key in ("match", "mismatch", "star", "plain"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "match", "ETag": etag(b"match")},
        {"Key": "mismatch", "ETag": etag(b"something else")},
        {"Key": "star", "ETag": "*"},
        {"Key": "plain"},
        {"Key": "missing", "ETag": OTHER},
    ]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["match", "plain", "star"]
    assert {e["Key"]: e["Code"] for e in result["Errors"]} == {"mismatch": "PreconditionFailed",
                                                               "missing": "NoSuchKey"}
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["mismatch"]
    assert body(s3, bucket, "mismatch") == b"mismatch"


def test_delete_objects_etag_against_a_current_delete_marker_is_no_such_key(s3, with_marker):
    result = s3.delete_objects(Bucket=with_marker, Delete={"Objects": [{"Key": "k", "ETag": etag(b"old")}]})
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("k", "NoSuchKey")]
    assert len(s3.list_object_versions(Bucket=with_marker)["DeleteMarkers"]) == 1
