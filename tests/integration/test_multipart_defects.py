"""Multipart upload defects, through boto3 against the real gateway: repeated Complete of a completed
upload, full-object and composite checksums declared on Complete, x-amz-tagging on Create, and
conditional Complete (If-None-Match: <etag>)."""
from __future__ import annotations

import base64
import hashlib
import os
import zlib

import crc32c
import pytest
from botocore.exceptions import ClientError

from gateway import checksums
from tests.integration.test_multipart import PART, complete, error_code, mpu_etag, put_part, start, status

ABC = [bytes([c]) * PART for c in b"ABC"]   # three 5 MiB parts: b"A"*5MiB, b"B"*5MiB, b"C"*5MiB

# The checksum of the whole 15 MiB object (zlib.crc32 for CRC32), as a client computes it.
FULL_OBJECT_ABC = {"CRC32": "WgDhBQ==", "CRC32C": "xU+Krw==", "CRC64NVME": "i+6LR0y3eFo="}
# base64(sha256(concat(sha256 of each part))) + "-3" (the ceph s3-tests value for these parts).
COMPOSITE_SHA256_ABC = "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4=-3"


def _raw(algorithm: str, data: bytes) -> bytes:
    """A part's raw digest, computed without gateway.checksums."""
    if algorithm == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "CRC32C":
        return crc32c.crc32c(data).to_bytes(4, "big")
    return hashlib.new(algorithm.lower(), data).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def fbucket(s3_file, bucket_name):
    """A bucket on the file-backend gateway (checksum tests move 15 MiB objects: one backend is enough)."""
    s3_file.create_bucket(Bucket=bucket_name)
    return bucket_name


def _upload_with_checksums(s3, bucket: str, bodies: list[bytes], algorithm: str, key: str = "obj",
                           **create) -> tuple[str, list[dict]]:
    uid = start(s3, bucket, key, ChecksumAlgorithm=algorithm, **create)
    listed = []
    for number, body in enumerate(bodies, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=number, Body=body,
                           ChecksumAlgorithm=algorithm)
        listed.append({"PartNumber": number, "ETag": r["ETag"], f"Checksum{algorithm}": r[f"Checksum{algorithm}"]})
    return uid, listed


# ---------------------------------------------------------------- 1. repeated Complete

@pytest.mark.parametrize("versioned", [False, True])
def test_repeated_complete_of_a_completed_upload_answers_the_same_object(s3, bucket, versioned):
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    bodies = [os.urandom(PART), b"the end"]
    uid = start(s3, bucket)
    listed = [put_part(s3, bucket, uid, i + 1, body) for i, body in enumerate(bodies)]
    first = complete(s3, bucket, uid, listed)
    assert first["ETag"] == f'"{mpu_etag(bodies)}"'
    again = complete(s3, bucket, uid, listed)           # an SDK retrying after a timeout
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 200
    for field in ("ETag", "Bucket", "Key", "Location"):
        assert again[field] == first[field], field
    assert again.get("VersionId") == first.get("VersionId")
    if versioned:
        assert first["VersionId"] and first["VersionId"] != "null"
        assert len(s3.list_object_versions(Bucket=bucket, Prefix="obj")["Versions"]) == 1
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"".join(bodies)


def test_repeated_complete_with_another_part_list_is_refused(s3, bucket):
    bodies = [os.urandom(PART), os.urandom(PART), b"tail"]
    uid = start(s3, bucket)
    listed = [put_part(s3, bucket, uid, i + 1, body) for i, body in enumerate(bodies)]
    complete(s3, bucket, uid, listed)
    renumbered = [dict(listed[0]), dict(listed[1]), dict(listed[2], PartNumber=4)]
    for parts in (listed[:2], listed[1:], [listed[0], listed[2]], renumbered,
                  [listed[0], listed[1], dict(listed[2], ETag='"' + "0" * 32 + '"')]):
        with pytest.raises(ClientError) as exc:
            complete(s3, bucket, uid, parts)
        assert error_code(exc.value) == "InvalidPart", parts
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"".join(bodies)


def test_repeated_complete_after_the_object_was_replaced_or_deleted_is_no_such_upload(s3, bucket):
    uid = start(s3, bucket)
    listed = [put_part(s3, bucket, uid, 1, b"mpu data")]
    complete(s3, bucket, uid, listed)
    s3.put_object(Bucket=bucket, Key="obj", Body=b"overwritten")
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, listed)
    assert error_code(exc.value) == "NoSuchUpload" and status(exc.value) == 404
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"overwritten"

    uid = start(s3, bucket, "gone")
    listed = [put_part(s3, bucket, uid, 1, b"mpu data", key="gone")]
    complete(s3, bucket, uid, listed, key="gone")
    s3.delete_object(Bucket=bucket, Key="gone")
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, listed, key="gone")
    assert error_code(exc.value) == "NoSuchUpload"


def test_repeated_complete_of_a_checksummed_upload_returns_its_checksum(s3, bucket):
    bodies = [os.urandom(PART), b"end"]
    uid, listed = _upload_with_checksums(s3, bucket, bodies, "SHA256")
    first = complete(s3, bucket, uid, listed)
    again = complete(s3, bucket, uid, listed, ChecksumSHA256=first["ChecksumSHA256"])
    assert (again["ETag"], again["ChecksumSHA256"], again["ChecksumType"]) == \
        (first["ETag"], first["ChecksumSHA256"], "COMPOSITE")
    wrong = [dict(listed[0], ChecksumSHA256=listed[1]["ChecksumSHA256"]), listed[1]]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, wrong)
    assert error_code(exc.value) == "InvalidPart"


# ---------------------------------------------------------------- 2. full-object checksums

@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_checksum_declared_on_complete(s3_file, fbucket, algorithm):
    s3, bucket = s3_file, fbucket
    expected = FULL_OBJECT_ABC[algorithm]
    assert checksums.checksum_b64(algorithm, b"".join(ABC)) == expected
    uid, listed = _upload_with_checksums(s3, bucket, ABC, algorithm, ChecksumType="FULL_OBJECT")
    # A value that is not the object's CRC is a BadDigest, and leaves the upload completable.
    wrong = checksums.checksum_b64(algorithm, b"something else")
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, listed, **{f"Checksum{algorithm}": wrong}, ChecksumType="FULL_OBJECT")
    assert error_code(exc.value) == "BadDigest"
    r = complete(s3, bucket, uid, listed, **{f"Checksum{algorithm}": expected}, ChecksumType="FULL_OBJECT")
    assert r[f"Checksum{algorithm}"] == expected and r["ChecksumType"] == "FULL_OBJECT"
    head = s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected
    got = s3.get_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert got[f"Checksum{algorithm}"] == expected
    assert hashlib.md5(got["Body"].read()).digest() == hashlib.md5(b"".join(ABC)).digest()
    # A retry with the same parts (and their checksums) answers the same; other part checksums do not.
    again = complete(s3, bucket, uid, listed, **{f"Checksum{algorithm}": expected})
    assert (again["ETag"], again[f"Checksum{algorithm}"]) == (r["ETag"], expected)
    field = f"Checksum{algorithm}"
    swapped = [dict(listed[0], **{field: listed[1][field]}), dict(listed[1], **{field: listed[0][field]}), listed[2]]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, swapped)
    assert error_code(exc.value) == "InvalidPart"


def test_head_and_get_report_the_checksum_type(s3_file, fbucket):
    s3, bucket = s3_file, fbucket
    uid, listed = _upload_with_checksums(s3, bucket, [b"one part"], "CRC32", "full", ChecksumType="FULL_OBJECT")
    complete(s3, bucket, uid, listed, key="full")
    uid, listed = _upload_with_checksums(s3, bucket, [b"one part"], "SHA256", "composite")
    complete(s3, bucket, uid, listed, key="composite")
    for key, checksum_type in (("full", "FULL_OBJECT"), ("composite", "COMPOSITE")):
        assert s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED").get("ChecksumType") == checksum_type
        assert s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED").get("ChecksumType") == checksum_type


# ---------------------------------------------------------------- 3. composite checksums

def test_composite_sha256_declared_on_complete_with_and_without_the_part_count(s3_file, fbucket):
    s3, bucket = s3_file, fbucket
    uid, listed = _upload_with_checksums(s3, bucket, ABC, "SHA256")
    digest = COMPOSITE_SHA256_ABC.rsplit("-", 1)[0]
    refused = {
        f"{digest}-2": "BadDigest",                                  # wrong part count
        _b64(hashlib.sha256(b"other").digest()) + "-3": "BadDigest",  # wrong digest
        "bm90IGEgZGlnZXN0-3": "InvalidRequest",                      # not a SHA-256 digest
        f"{digest}-x": "InvalidRequest",
    }
    for value, code in refused.items():
        with pytest.raises(ClientError) as exc:
            complete(s3, bucket, uid, listed, ChecksumSHA256=value)
        assert error_code(exc.value) == code, value
    with pytest.raises(ClientError) as exc:   # the upload is COMPOSITE
        complete(s3, bucket, uid, listed, ChecksumSHA256=COMPOSITE_SHA256_ABC, ChecksumType="FULL_OBJECT")
    assert error_code(exc.value) == "InvalidRequest"
    r = complete(s3, bucket, uid, listed, ChecksumSHA256=COMPOSITE_SHA256_ABC, ChecksumType="COMPOSITE")
    assert r["ChecksumSHA256"] == COMPOSITE_SHA256_ABC and r["ChecksumType"] == "COMPOSITE"
    assert s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")["ChecksumSHA256"] == COMPOSITE_SHA256_ABC
    assert s3.get_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")["ChecksumSHA256"] == COMPOSITE_SHA256_ABC
    # The form without the part count is the same checksum (accepted on a retry too).
    again = complete(s3, bucket, uid, listed, ChecksumSHA256=digest)
    assert again["ChecksumSHA256"] == COMPOSITE_SHA256_ABC


@pytest.mark.parametrize("algorithm", ["SHA1", "CRC32", "CRC32C"])
def test_composite_checksum_declared_on_complete(s3_file, fbucket, algorithm):
    s3, bucket = s3_file, fbucket
    bodies = [ABC[0], b"tail"]
    expected = _b64(_raw(algorithm, b"".join(_raw(algorithm, b) for b in bodies))) + "-2"
    uid, listed = _upload_with_checksums(s3, bucket, bodies, algorithm)
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, listed, **{f"Checksum{algorithm}": _b64(_raw(algorithm, b"x")) + "-2"})
    assert error_code(exc.value) == "BadDigest"
    r = complete(s3, bucket, uid, listed, **{f"Checksum{algorithm}": expected})
    assert r[f"Checksum{algorithm}"] == expected and r["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == expected


# ---------------------------------------------------------------- 4. x-amz-tagging on Create

def test_tagging_given_on_create_applies_to_the_completed_object(s3, bucket):
    uid = start(s3, bucket, Tagging="project=blue&note=two%20words&empty=")
    complete(s3, bucket, uid, [put_part(s3, bucket, uid, 1, b"tagged")])
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key="obj")["TagSet"]}
    assert tags == {"project": "blue", "note": "two words", "empty": ""}
    assert s3.get_object(Bucket=bucket, Key="obj")["TagCount"] == 3
    # Without x-amz-tagging the object has no tags.
    uid = start(s3, bucket, "plain")
    complete(s3, bucket, uid, [put_part(s3, bucket, uid, 1, b"x", key="plain")], key="plain")
    assert s3.get_object_tagging(Bucket=bucket, Key="plain")["TagSet"] == []


@pytest.mark.parametrize("tagging", [
    "&".join(f"k{i}=v" for i in range(11)),      # more than 10 tags
    "dup=1&dup=2",                              # a key twice
    "k" * 129 + "=v",                           # key too long
    "k=" + "v" * 257,                           # value too long
    "aws:reserved=v",                           # system prefix
    "a=1=2",                                    # not a query string
])
def test_invalid_tagging_on_create_is_refused_as_put_object_refuses_it(s3, bucket, tagging):
    with pytest.raises(ClientError) as put_exc:
        s3.put_object(Bucket=bucket, Key="obj", Body=b"x", Tagging=tagging)
    with pytest.raises(ClientError) as create_exc:
        start(s3, bucket, Tagging=tagging)
    assert error_code(create_exc.value) == error_code(put_exc.value)
    assert create_exc.value.response["Error"].get("Message") == put_exc.value.response["Error"].get("Message")
    assert status(create_exc.value) == status(put_exc.value) == 400
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# ---------------------------------------------------------------- 5. conditional Complete

def test_complete_if_none_match_etag_fails_only_when_the_current_etag_matches(s3, bucket):
    current = s3.put_object(Bucket=bucket, Key="obj", Body=b"existing")["ETag"]
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"new")]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, parts, IfNoneMatch=current)
    assert error_code(exc.value) == "PreconditionFailed" and status(exc.value) == 412
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"existing"
    r = complete(s3, bucket, uid, parts, IfNoneMatch='"' + "0" * 32 + '"')
    assert r["ETag"] == f'"{mpu_etag([b"new"])}"'
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"new"


def test_complete_if_match_on_a_missing_key_is_no_such_key(s3, bucket):
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"new")]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, parts, IfMatch='"' + "0" * 32 + '"')
    assert error_code(exc.value) == "NoSuchKey" and status(exc.value) == 404
    complete(s3, bucket, uid, parts, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"new"
