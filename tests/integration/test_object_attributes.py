"""GetObjectAttributes through boto3 against real processes (file and mem backends), and against
moto where moto implements it (moto answers neither ObjectParts nor the header errors)."""
from __future__ import annotations

import hashlib
import os
import re

import pytest
from botocore.exceptions import ClientError

from gateway import checksums
from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.integration.test_multipart import (
    PART,
    against_moto,
    complete,
    error_code,
    signed,
    start,
    status,
)

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def attributes(s3, bucket: str, key: str, names=None, **kwargs) -> dict:
    r = s3.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=names or ALL, **kwargs)
    r.pop("ResponseMetadata")
    return r


def _simple_object(s3, bucket: str) -> dict:
    data = b"hello attributes"
    s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="SHA256")
    r = attributes(s3, bucket, "k")
    r.pop("LastModified")
    return r


def test_attributes_of_a_simple_object_as_moto(s3, bucket):
    data = b"hello attributes"
    ours = _simple_object(s3, bucket)
    assert ours == {"ETag": hashlib.md5(data).hexdigest(),   # without quotes, as AWS
                    "Checksum": {"ChecksumSHA256": checksums.checksum_b64("SHA256", data),
                                 "ChecksumType": "FULL_OBJECT"},
                    "StorageClass": "STANDARD", "ObjectSize": len(data)}
    theirs = against_moto(_simple_object)
    # moto leaves out ChecksumType of a single PUT's checksum; AWS answers FULL_OBJECT.
    assert theirs["Checksum"].pop("ChecksumType", None) is None
    ours["Checksum"].pop("ChecksumType")
    assert theirs == ours


def test_only_the_named_attributes_are_answered(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc", StorageClass="STANDARD_IA")
    assert attributes(s3, bucket, "k", ["ObjectSize"]).keys() == {"LastModified", "ObjectSize"}
    r = attributes(s3, bucket, "k", ["StorageClass", "ETag"])
    assert r["StorageClass"] == "STANDARD_IA" and r["ETag"] == hashlib.md5(b"abc").hexdigest()
    assert "ObjectSize" not in r and "Checksum" not in r


def test_headers_last_modified_and_version_id_as_head_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    head = s3.head_object(Bucket=bucket, Key="k")
    r = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ETag"])
    assert r["LastModified"] == head["LastModified"]
    assert "VersionId" not in r   # never-versioned bucket: no x-amz-version-id, as HeadObject
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"second!")["VersionId"]
    assert attributes(s3, bucket, "k", ["ObjectSize"])["VersionId"] == v2
    old = attributes(s3, bucket, "k", ["ObjectSize", "ETag"], VersionId=v1)
    assert old["VersionId"] == v1 and old["ObjectSize"] == 5 and old["ETag"] == hashlib.md5(b"first").hexdigest()
    assert attributes(s3, bucket, "k", ["ObjectSize"], VersionId="null")["VersionId"] == "null"


def test_elements_come_in_schema_order_and_blank_names_are_ignored(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    r = signed(f"{gateway.url}/{bucket}/k?attributes", headers={"x-amz-object-attributes": "ObjectSize, ETag,"})
    assert r.status_code == 200
    body = r.text
    assert "<GetObjectAttributesResponse" in body
    assert re.search(r"<ETag>[0-9a-f]{32}</ETag><ObjectSize>3</ObjectSize>", body), body
    assert "Last-Modified" in r.headers


def test_missing_or_empty_attributes_header_is_invalid_request(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    for key in ("k", "missing"):
        for headers in ({}, {"x-amz-object-attributes": ""}, {"x-amz-object-attributes": ","}):
            r = signed(f"{gateway.url}/{bucket}/{key}?attributes", headers=headers)
            assert r.status_code == 400, (key, headers)
            assert b"<Code>InvalidRequest</Code>" in r.content
            assert b"x-amz-object-attributes header specifying the attributes" in r.content
    # The bucket's own errors come first.
    r = signed(f"{gateway.url}/{bucket}-nope/k?attributes")
    assert r.status_code == 404 and b"<Code>NoSuchBucket</Code>" in r.content


def test_unknown_attribute_name_is_invalid_argument(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc")
    for value in ("etag", "ETag,Nope", "Tags"):
        r = signed(f"{gateway.url}/{bucket}/k?attributes", headers={"x-amz-object-attributes": value})
        assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, value
        assert b"Invalid attribute name specified." in r.content


def _missing(s3, bucket: str) -> tuple:
    outcomes = []
    for call in (lambda: s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"]),
                 lambda: s3.get_object_attributes(Bucket=bucket + "-nope", Key="k", ObjectAttributes=["ETag"])):
        try:
            call()
            outcomes.append((200, None))
        except ClientError as exc:
            outcomes.append((status(exc), error_code(exc)))
    return tuple(outcomes)


def test_missing_key_and_bucket_as_moto(s3, bucket):
    ours = _missing(s3, bucket)
    assert ours == ((404, "NoSuchKey"), (404, "NoSuchBucket"))
    assert against_moto(_missing) == ours


def test_missing_key_answers_no_such_key_with_a_body(gateway, bucket):
    r = signed(f"{gateway.url}/{bucket}/missing?attributes", headers={"x-amz-object-attributes": "ETag"})
    assert r.status_code == 404
    assert b"<Code>NoSuchKey</Code>" in r.content and b"<Key>missing</Key>" in r.content


def test_delete_marker_answers_as_head_object(gateway, s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="k")["VersionId"]
    r = signed(f"{gateway.url}/{bucket}/k?attributes", headers={"x-amz-object-attributes": "ETag"})
    assert r.status_code == 404 and b"<Code>NoSuchKey</Code>" in r.content
    assert r.headers["x-amz-delete-marker"] == "true" and r.headers["x-amz-version-id"] == marker
    r = signed(f"{gateway.url}/{bucket}/k?attributes&versionId={marker}", headers={"x-amz-object-attributes": "ETag"})
    assert r.status_code == 405 and r.headers["x-amz-delete-marker"] == "true"


def test_other_accounts_are_denied(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
    with pytest.raises(ClientError) as exc:
        other.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ETag"])
    assert (status(exc.value), error_code(exc.value)) == (403, "AccessDenied")


def test_attributes_is_a_get_only_sub_resource(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed(f"{gateway.url}/{bucket}/k?attributes", "PUT", b"y")
    assert r.status_code == 405
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


# ---------------------------------------------------------------- ObjectParts

def test_no_object_parts_for_a_single_part_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert "ObjectParts" not in attributes(s3, bucket, "k")


def test_multipart_object_without_checksum_answers_only_the_parts_count(gateway, bucket):
    """AWS (general purpose buckets): no Part elements unless the object has an additional checksum."""
    plain = make_client(gateway.url, request_checksum_calculation="when_required")
    uid = start(plain, bucket, "mpu")
    parts = []
    for number, body in ((1, os.urandom(PART)), (2, b"tail")):
        r = plain.upload_part(Bucket=bucket, Key="mpu", UploadId=uid, PartNumber=number, Body=body)
        parts.append({"PartNumber": number, "ETag": r["ETag"]})
    complete(plain, bucket, uid, parts, key="mpu")
    r = attributes(plain, bucket, "mpu")
    assert r["ObjectParts"] == {"TotalPartsCount": 2}
    assert r["ObjectSize"] == PART + 4 and r["ETag"].endswith("-2")
    assert "Checksum" not in r


def test_multipart_object_with_checksum_pages_its_parts(s3, bucket):
    bodies = [os.urandom(PART), os.urandom(PART), b"end"]
    uid = start(s3, bucket, "mpu", ChecksumAlgorithm="CRC32")
    listed = []
    for i, body in enumerate(bodies):
        r = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=uid, PartNumber=i + 1, Body=body,
                           ChecksumAlgorithm="CRC32")
        listed.append({"PartNumber": i + 1, "ETag": r["ETag"], "ChecksumCRC32": r["ChecksumCRC32"]})
    done = complete(s3, bucket, uid, listed, key="mpu")
    whole = attributes(s3, bucket, "mpu")
    assert whole["Checksum"] == {"ChecksumCRC32": done["ChecksumCRC32"], "ChecksumType": "COMPOSITE"}
    parts = whole["ObjectParts"]
    assert (parts["TotalPartsCount"], parts["PartNumberMarker"], parts["NextPartNumberMarker"], parts["MaxParts"],
            parts["IsTruncated"]) == (3, 0, 3, 1000, False)
    assert [(p["PartNumber"], p["Size"]) for p in parts["Parts"]] == [(1, PART), (2, PART), (3, 3)]

    first = attributes(s3, bucket, "mpu", ["ObjectParts"], MaxParts=2)["ObjectParts"]
    assert (first["MaxParts"], first["IsTruncated"], first["NextPartNumberMarker"]) == (2, True, 2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
    rest = attributes(s3, bucket, "mpu", ["ObjectParts"], MaxParts=2,
                      PartNumberMarker=first["NextPartNumberMarker"])["ObjectParts"]
    assert (rest["PartNumberMarker"], rest["IsTruncated"], rest["NextPartNumberMarker"]) == (2, False, 3)
    assert [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(3, 3)]
    past = attributes(s3, bucket, "mpu", ["ObjectParts"], PartNumberMarker=3)["ObjectParts"]
    assert past["TotalPartsCount"] == 3 and past["IsTruncated"] is False and "Parts" not in past


def test_invalid_max_parts_is_invalid_argument(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for name, value in (("x-amz-max-parts", "abc"), ("x-amz-part-number-marker", "-1")):
        r = signed(f"{gateway.url}/{bucket}/k?attributes",
                   headers={"x-amz-object-attributes": "ObjectParts", name: value})
        assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, name
