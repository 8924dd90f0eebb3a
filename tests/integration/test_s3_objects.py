"""Buckets and objects through boto3 against the real gateway (file and mem backends)."""
from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------- buckets

def test_create_head_list_delete_bucket(s3, bucket_name):
    s3.create_bucket(Bucket=bucket_name)
    s3.head_bucket(Bucket=bucket_name)
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert bucket_name in names
    s3.delete_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket_name)
    assert status(exc.value) == 404
    assert bucket_name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


@pytest.mark.parametrize("name", ["ab", "A" * 10, "-abc", "abc-", "a..b", "192.168.1.1", "a_b", "x" * 64,
                                  "xn--abc", "abc-s3alias"])
def test_invalid_bucket_name_is_rejected(s3, name):
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=name)
    assert error_code(exc.value) == "InvalidBucketName"
    assert status(exc.value) == 400


def test_recreating_own_bucket_in_us_east_1_succeeds_and_elsewhere_conflicts(s3, bucket_name):
    s3.create_bucket(Bucket=bucket_name)
    s3.create_bucket(Bucket=bucket_name)   # legacyAwsBehavior: us-east-1 answers 200
    other = bucket_name + "-w2"
    s3.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=other, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    assert error_code(exc.value) == "BucketAlreadyOwnedByYou"
    assert status(exc.value) == 409
    loc = s3.get_bucket_location(Bucket=other)["LocationConstraint"]
    assert loc == "us-west-2"
    assert s3.get_bucket_location(Bucket=bucket_name)["LocationConstraint"] is None


def test_bucket_of_another_account_conflicts_and_is_denied(s3, gateway, bucket):
    other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
    with pytest.raises(ClientError) as exc:
        other.create_bucket(Bucket=bucket)
    assert error_code(exc.value) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as exc:
        other.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_code(exc.value) == "AccessDenied"
    assert bucket not in [b["Name"] for b in other.list_buckets()["Buckets"]]


def test_invalid_location_constraint(s3, bucket_name):
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": "mars-1"})
    assert error_code(exc.value) == "InvalidLocationConstraint"


def test_delete_non_empty_bucket_fails_and_missing_bucket_is_404(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"1")
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(exc.value) == "BucketNotEmpty"
    s3.delete_object(Bucket=bucket, Key="a")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(exc.value) == "NoSuchBucket"


# ---------------------------------------------------------------- objects

@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 1024 * 1024 + 17])
def test_put_get_round_trip(s3, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert got["ETag"] == put["ETag"]


def test_metadata_and_headers_are_stored_and_returned(s3, bucket):
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"hello", ContentType="text/plain",
                  ContentEncoding="identity", ContentDisposition="attachment", ContentLanguage="fr",
                  CacheControl="no-cache", Expires=datetime(2030, 1, 1, tzinfo=timezone.utc),
                  Metadata={"colour": "blue", "Size": "XL"})
    head = s3.head_object(Bucket=bucket, Key="doc.txt")
    assert head["ContentType"] == "text/plain"
    assert head["ContentEncoding"] == "identity"
    assert head["ContentDisposition"] == "attachment"
    assert head["ContentLanguage"] == "fr"
    assert head["CacheControl"] == "no-cache"
    assert head["Expires"].year == 2030
    assert head["Metadata"] == {"colour": "blue", "size": "XL"}
    assert head["ContentLength"] == 5


def test_response_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="k", ResponseContentType="image/png",
                        ResponseContentDisposition="inline", ResponseCacheControl="max-age=5")
    assert got["ContentType"] == "image/png"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "max-age=5"


def test_get_missing_key_and_bucket(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert error_code(exc.value) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket + "-missing", Key="nope")
    assert error_code(exc.value) == "NoSuchBucket"


def test_delete_is_idempotent(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


@pytest.mark.parametrize("rng,expected", [
    ("bytes=0-0", (0, 0)), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=99-", (99, 99)), ("bytes=90-200", (90, 99)), ("bytes=-500", (0, 99)),
])
def test_get_with_range(s3, bucket, rng, expected):
    data = bytes(range(100))
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == data[expected[0]:expected[1] + 1]
    assert got["ContentRange"] == f"bytes {expected[0]}-{expected[1]}/100"


@pytest.mark.parametrize("rng", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_get_with_range_past_end_returns_416(s3, bucket, rng):
    s3.put_object(Bucket=bucket, Key="r", Body=bytes(100))
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="r", Range=rng)
    assert error_code(exc.value) == "InvalidRange"
    assert status(exc.value) == 416


@pytest.mark.parametrize("rng", ["bytes=0-1,5-6", "bytes=9-3", "items=0-1", "bytes=a-b"])
def test_invalid_or_multiple_ranges_are_ignored(s3, bucket, rng):
    s3.put_object(Bucket=bucket, Key="r", Body=bytes(10))
    got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(got["Body"].read()) == 10


def test_conditional_get(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"data")["ETag"]
    past = datetime.now(timezone.utc) - timedelta(days=1)
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"data"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert status(exc.value) == 412
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(exc.value) == 304
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert status(exc.value) == 412
    just_now = datetime.now(timezone.utc)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfModifiedSince=just_now)
    assert status(exc.value) == 304
    # A date in the future is not a valid condition: ignored (RFC 7232).
    assert s3.head_object(Bucket=bucket, Key="c", IfModifiedSince=future)["ETag"] == etag
    # If-Match true wins over a failing If-Unmodified-Since; If-None-Match false wins over If-Modified-Since.
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=past)["ETag"] == etag
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"zz"', IfModifiedSince=just_now)["ETag"] == etag


def test_bad_content_md5(s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="m", Body=b"data", ContentMD5=wrong)
    assert error_code(exc.value) == "BadDigest"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="m")
    assert status(exc.value) == 404


def test_failed_overwrite_keeps_previous_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"original")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError):
        s3.put_object(Bucket=bucket, Key="keep", Body=b"replacement", ContentMD5=wrong)
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"original"


def test_key_too_long(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"x")
    assert error_code(exc.value) == "KeyTooLongError"
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"x")


@pytest.mark.parametrize("key", ["a b", "a+b", "ünïcödé/✓", "a%2Fb", "dir/sub/file.txt", "~!@$&*()=:,;'",
                                 "trailing/"])
def test_unusual_keys_round_trip(s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert key in keys


# ---------------------------------------------------------------- auth and errors

def test_wrong_secret_is_signature_mismatch(gateway, bucket):
    bad = make_client(gateway.url, "accessKey1", "wrong")
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=bucket)
    assert error_code(exc.value) == "SignatureDoesNotMatch"
    assert status(exc.value) == 403


def test_unknown_access_key(gateway):
    bad = make_client(gateway.url, "nobody", "secret")
    with pytest.raises(ClientError) as exc:
        bad.list_buckets()
    assert error_code(exc.value) == "InvalidAccessKeyId"


def test_anonymous_request_is_denied_with_error_document(gateway, bucket):
    r = httpx.get(f"{gateway.url}/{bucket}")
    assert r.status_code == 403
    assert b"<Code>AccessDenied</Code>" in r.content
    assert r.headers["x-amz-request-id"]
    assert b"<RequestId>" in r.content


def test_unsupported_subresource_is_not_implemented(s3, gateway, bucket):
    r = httpx.get(f"{gateway.url}/{bucket}?accelerate")
    assert r.status_code in (403, 501)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_accelerate_configuration(Bucket=bucket)
    assert error_code(exc.value) == "NotImplemented"
    assert status(exc.value) == 501


def test_healthcheck(gateway):
    r = httpx.get(f"{gateway.url}/_/healthcheck")
    assert r.status_code == 200
    r = httpx.get(f"{gateway.url}/_/healthcheck/deep")
    assert r.status_code == 200
    assert r.json()["us-east-1"]["code"] == 200
    assert httpx.get(f"{gateway.url}/_/nothing").status_code == 400


# ---------------------------------------------------------------- tagging

def test_object_tagging_round_trip(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=1&b=two%20words")
    assert s3.get_object(Bucket=bucket, Key="t")["TagCount"] == 2
    tags = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"a": "1", "b": "two words"}
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "k", "Value": "v"}]
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    assert s3.get_object(Bucket=bucket, Key="t")["Body"].read() == b"x"


def test_invalid_tags_are_rejected(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": too_many})
    assert error_code(exc.value) == "BadRequest"   # AWS: "Object tags cannot be greater than 10"
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "k" * 129, "Value": "v"}]})
    assert error_code(exc.value) == "InvalidTag"
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="missing", Tagging={"TagSet": []})
    assert error_code(exc.value) == "NoSuchKey"


@pytest.mark.parametrize("key", ["a\x01b", "tab\there", "x\x1fy\x0b"])
def test_keys_with_control_characters_work_and_errors_stay_404(s3, gateway, bucket, key):
    # XML 1.0 cannot carry these characters: they travel as character references, never a 500.
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key=key)
    assert status(exc.value) == 404
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"
    assert key in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    raw = httpx.get(f"{gateway.url}/{bucket}/missing%01key",
                    headers={"Authorization": "AWS nobody:x", "Date": "Sat, 28 Nov 2026 00:00:00 GMT"})
    assert raw.status_code == 403 and b"<Code>" in raw.content
    # A document naming the key carries it as a character reference (as S3 does; XML 1.0
    # parsers such as botocore's then refuse it, which is why SDKs list with encoding-type=url).
    created = httpx.post(s3.generate_presigned_url("create_multipart_upload", Params={"Bucket": bucket, "Key": key}))
    assert created.status_code == 200
    assert f"<Key>{key}</Key>".replace(key, "".join(f"&#x{ord(c):x};" if ord(c) < 0x20 and c not in "\t\n\r" else c for c in key)) \
        in created.text
