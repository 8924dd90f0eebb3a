"""Multipart upload through boto3 / aws-cli against the real gateway (file and mem backends), with
data-file accounting on the dmd's store, interrupted-Complete states and a differential run against moto."""
from __future__ import annotations


import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from gateway import checksums
from gateway.api.parts import part_range
from shared.listing import overview_key
from gateway.metadata.client import RemoteMetadataClient
from tests.integration.conftest import ACCESS_KEY, ACCESS_KEY2, SECRET_KEY, SECRET_KEY2, make_client

MiB = 1024 * 1024
PART = 5 * MiB


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def data_files(data_path: Path) -> set[str]:
    """Blob files of the dmd's data store (temp uploads excluded)."""
    return {p.name for p in data_path.rglob("*") if p.is_file() and ".tmp" not in p.parts}


def signed(url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None,
           access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> httpx.Response:
    """A raw SigV4-signed request, for inputs boto3 refuses to send."""
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(req)
    return httpx.request(method, url, content=body, headers=dict(req.headers.items()))


def start(s3, bucket: str, key: str = "obj", **kwargs) -> str:
    return s3.create_multipart_upload(Bucket=bucket, Key=key, **kwargs)["UploadId"]


def put_part(s3, bucket: str, upload_id: str, number: int, body: bytes, key: str = "obj", **kwargs) -> dict:
    r = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, **kwargs)
    return {"PartNumber": number, "ETag": r["ETag"]}


def complete(s3, bucket: str, upload_id: str, parts: list[dict], key: str = "obj", **kwargs) -> dict:
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": parts}, **kwargs)


def mpu_etag(parts: list[bytes]) -> str:
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


# ---------------------------------------------------------------- happy paths

def test_upload_file_download_file_multipart_with_threads_round_trips(s3, bucket, tmp_path):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(os.urandom(20 * MiB))
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4)
    s3.upload_file(str(src), bucket, "big", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ContentLength"] == 20 * MiB
    assert head["ETag"].strip('"').endswith("-4")
    s3.download_file(bucket, "big", str(dst), Config=config)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_complete_etag_is_md5_of_part_md5s_and_upload_attributes_apply(s3, bucket):
    parts = [os.urandom(PART), os.urandom(PART), b"last bit"]
    uid = start(s3, bucket, ContentType="text/x-mpu", Metadata={"color": "blue"}, CacheControl="max-age=5")
    listed = [put_part(s3, bucket, uid, i + 1, body) for i, body in enumerate(parts)]
    r = complete(s3, bucket, uid, listed)
    assert r["ETag"] == f'"{mpu_etag(parts)}"'
    assert r["Bucket"] == bucket and r["Key"] == "obj" and r["Location"].endswith(f"/{bucket}/obj")
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == b"".join(parts)
    assert got["ContentType"] == "text/x-mpu"
    assert got["Metadata"] == {"color": "blue"}
    assert got["CacheControl"] == "max-age=5"
    assert got["ETag"] == f'"{mpu_etag(parts)}"'
    # The upload is gone once completed.
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="obj", UploadId=uid)
    assert error_code(exc.value) == "NoSuchUpload"


def test_single_small_part_and_ranged_read_across_part_boundary(s3, bucket):
    uid = start(s3, bucket)
    only = put_part(s3, bucket, uid, 7, b"tiny")
    complete(s3, bucket, uid, [only])
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"tiny"
    parts = [os.urandom(PART), os.urandom(1000)]
    uid = start(s3, bucket, "two")
    listed = [put_part(s3, bucket, uid, i + 1, body, key="two") for i, body in enumerate(parts)]
    complete(s3, bucket, uid, listed, key="two")
    rng = s3.get_object(Bucket=bucket, Key="two", Range=f"bytes={PART - 10}-{PART + 9}")["Body"].read()
    assert rng == (parts[0] + parts[1])[PART - 10:PART + 10]


def test_versioned_bucket_complete_returns_version_id(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="obj", Body=b"v1")
    uid = start(s3, bucket)
    r = complete(s3, bucket, uid, [put_part(s3, bucket, uid, 1, b"v2")])
    assert r["VersionId"] and r["VersionId"] != "null"
    assert s3.get_object(Bucket=bucket, Key="obj", VersionId=r["VersionId"])["Body"].read() == b"v2"
    versions = s3.list_object_versions(Bucket=bucket, Prefix="obj")["Versions"]
    assert len(versions) == 2


def test_sdk_default_checksums_and_composite_sha256_checksum(s3, bucket):
    parts = [os.urandom(PART), b"end"]
    uid = start(s3, bucket, ChecksumAlgorithm="SHA256")
    listed = []
    for i, body in enumerate(parts):
        r = s3.upload_part(Bucket=bucket, Key="obj", UploadId=uid, PartNumber=i + 1, Body=body,
                           ChecksumAlgorithm="SHA256")
        assert r["ChecksumSHA256"] == checksums.checksum_b64("SHA256", body)
        listed.append({"PartNumber": i + 1, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    listing = s3.list_parts(Bucket=bucket, Key="obj", UploadId=uid)
    assert listing["ChecksumAlgorithm"] == "SHA256"
    assert [p["ChecksumSHA256"] for p in listing["Parts"]] == [p["ChecksumSHA256"] for p in listed]
    # Without the per-part checksums a COMPOSITE upload cannot be completed (AWS's InvalidRequest).
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in listed])
    assert error_code(exc.value) == "InvalidRequest"
    wrong = [dict(listed[0], ChecksumSHA256=listed[1]["ChecksumSHA256"]), listed[1]]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, wrong)
    assert error_code(exc.value) == "InvalidPart"
    r = complete(s3, bucket, uid, listed)
    expected = checksums.composite("SHA256", [hashlib.sha256(p).digest() for p in parts])
    assert r["ChecksumSHA256"] == expected
    head = s3.head_object(Bucket=bucket, Key="obj", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected


def test_part_without_the_uploads_checksum_algorithm_is_rejected(gateway, bucket):
    plain = make_client(gateway.url, request_checksum_calculation="when_required")
    uid = start(plain, bucket, ChecksumAlgorithm="SHA1")
    with pytest.raises(ClientError) as exc:
        put_part(plain, bucket, uid, 1, b"no checksum")
    assert error_code(exc.value) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        put_part(plain, bucket, uid, 1, b"wrong one", ChecksumAlgorithm="CRC32")
    assert error_code(exc.value) == "InvalidRequest"
    assert "Checksum Type mismatch" in exc.value.response["Error"]["Message"]
    assert plain.list_parts(Bucket=bucket, Key="obj", UploadId=uid).get("Parts", []) == []


def test_full_object_crc32_checksum(s3, bucket):
    parts = [os.urandom(PART), os.urandom(123)]
    uid = start(s3, bucket, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    listed = [dict(put_part(s3, bucket, uid, i + 1, p, ChecksumAlgorithm="CRC32")) for i, p in enumerate(parts)]
    r = complete(s3, bucket, uid, listed)
    assert r["ChecksumCRC32"] == checksums.checksum_b64("CRC32", b"".join(parts))
    assert r["ChecksumType"] == "FULL_OBJECT"


# ---------------------------------------------------------------- error codes

@pytest.mark.parametrize("number", [0, 10001, -1])
def test_part_number_out_of_range_is_invalid_argument(s3, bucket, number):
    uid = start(s3, bucket)
    with pytest.raises(ClientError) as exc:
        put_part(s3, bucket, uid, number, b"x")
    assert error_code(exc.value) == "InvalidArgument"


def test_non_numeric_part_number_is_invalid_argument(gateway, s3, bucket):
    uid = start(s3, bucket)
    r = signed(f"{gateway.url}/{bucket}/obj?partNumber=abc&uploadId={uid}", "PUT", b"x")
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content


@pytest.mark.parametrize("upload_id", ["0" * 32, "not-an-id", "../x..|..y"])
def test_unknown_upload_is_no_such_upload_everywhere(s3, bucket, upload_id):
    calls = [
        lambda: put_part(s3, bucket, upload_id, 1, b"x"),
        lambda: complete(s3, bucket, upload_id, [{"PartNumber": 1, "ETag": '"x"'}]),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id),
        lambda: s3.list_parts(Bucket=bucket, Key="obj", UploadId=upload_id),
    ]
    for call in calls:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc.value) == "NoSuchUpload"
        assert status(exc.value) == 404


def test_upload_id_of_another_key_is_no_such_upload(s3, bucket):
    uid = start(s3, bucket, "a")
    with pytest.raises(ClientError) as exc:
        put_part(s3, bucket, uid, 1, b"x", key="b")
    assert error_code(exc.value) == "NoSuchUpload"


def test_create_in_missing_bucket_is_no_such_bucket_and_other_account_is_denied(s3, gateway, bucket):
    with pytest.raises(ClientError) as exc:
        start(s3, bucket + "-missing")
    assert error_code(exc.value) == "NoSuchBucket"
    other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
    with pytest.raises(ClientError) as exc:
        start(other, bucket)
    assert error_code(exc.value) == "AccessDenied"
    uid = start(s3, bucket)
    with pytest.raises(ClientError) as exc:
        put_part(other, bucket, uid, 1, b"x")
    assert error_code(exc.value) == "AccessDenied"


def test_complete_with_empty_part_list_is_malformed_xml(s3, gateway, bucket):
    uid = start(s3, bucket)
    put_part(s3, bucket, uid, 1, b"x")
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, [])
    assert error_code(exc.value) == "MalformedXML"
    for body in (b"", b"<nope", b"<Other/>", b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part>"
                 b"</CompleteMultipartUpload>",
                 b'<!DOCTYPE x [<!ENTITY e "e">]><CompleteMultipartUpload/>'):
        r = signed(f"{gateway.url}/{bucket}/obj?uploadId={uid}", "POST", body)
        assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, body


def test_complete_out_of_order_or_repeated_parts_is_invalid_part_order(s3, bucket):
    uid = start(s3, bucket)
    p1, p2 = put_part(s3, bucket, uid, 1, os.urandom(PART)), put_part(s3, bucket, uid, 2, b"b")
    for parts in ([p2, p1], [p1, p1]):
        with pytest.raises(ClientError) as exc:
            complete(s3, bucket, uid, parts)
        assert error_code(exc.value) == "InvalidPartOrder"


def test_complete_with_missing_part_or_wrong_etag_is_invalid_part(s3, bucket):
    uid = start(s3, bucket)
    p1 = put_part(s3, bucket, uid, 1, b"a")
    for parts in ([{"PartNumber": 2, "ETag": p1["ETag"]}], [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]):
        with pytest.raises(ClientError) as exc:
            complete(s3, bucket, uid, parts)
        assert error_code(exc.value) == "InvalidPart"
    # Quotes around the ETag are optional.
    complete(s3, bucket, uid, [{"PartNumber": 1, "ETag": p1["ETag"].strip('"')}])


def test_small_part_before_the_last_is_entity_too_small(s3, bucket):
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"small"), put_part(s3, bucket, uid, 2, b"last")]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, parts)
    assert error_code(exc.value) == "EntityTooSmall"
    # Nothing was committed and the upload is still usable.
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="obj")
    complete(s3, bucket, uid, parts[:1])


def test_conditional_complete_if_none_match_and_if_match(s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"existing")
    uid = start(s3, bucket)
    parts = [put_part(s3, bucket, uid, 1, b"new")]
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, parts, IfNoneMatch="*")
    assert error_code(exc.value) == "PreconditionFailed" and status(exc.value) == 412
    with pytest.raises(ClientError) as exc:
        complete(s3, bucket, uid, parts, IfMatch='"' + "0" * 32 + '"')
    assert error_code(exc.value) == "PreconditionFailed"
    current = s3.head_object(Bucket=bucket, Key="obj")["ETag"]
    complete(s3, bucket, uid, parts, IfMatch=current)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"new"


# ---------------------------------------------------------------- listings

def test_list_parts_pagination(s3, bucket):
    uid = start(s3, bucket, StorageClass="STANDARD")
    etags = {n: put_part(s3, bucket, uid, n, f"part {n}".encode())["ETag"] for n in (1, 2, 3, 5, 8)}
    seen: list[int] = []
    marker = 0
    while True:
        page = s3.list_parts(Bucket=bucket, Key="obj", UploadId=uid, MaxParts=2, PartNumberMarker=marker)
        assert page["MaxParts"] == 2 and page["StorageClass"] == "STANDARD"
        assert page["Initiator"]["ID"] == page["Owner"]["ID"]
        for part in page["Parts"]:
            assert part["ETag"] == etags[part["PartNumber"]] and part["Size"] == len(f"part {part['PartNumber']}")
            seen.append(part["PartNumber"])
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
        assert marker == seen[-1]
    assert seen == [1, 2, 3, 5, 8]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="obj", UploadId=uid,
                                                   PartNumberMarker=3)["Parts"]] == [5, 8]


def test_list_parts_bad_max_parts_is_invalid_argument(gateway, s3, bucket):
    uid = start(s3, bucket)
    for query in ("max-parts=-1", "max-parts=abc", "part-number-marker=x"):
        r = signed(f"{gateway.url}/{bucket}/obj?uploadId={uid}&{query}")
        assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, query


def test_list_multipart_uploads_pagination_prefix_and_delimiter(s3, bucket):
    keys = ["a/1", "a/2", "b", "c/x/1", "d"]
    uploads = {k: start(s3, bucket, k) for k in keys}
    second_b = start(s3, bucket, "b")
    everything = s3.list_multipart_uploads(Bucket=bucket)
    assert [u["Key"] for u in everything["Uploads"]] == ["a/1", "a/2", "b", "b", "c/x/1", "d"]
    assert {u["UploadId"] for u in everything["Uploads"] if u["Key"] == "b"} == {uploads["b"], second_b}
    seen: list[tuple[str, str]] = []
    kwargs: dict = {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **kwargs)
        assert page["MaxUploads"] == 2
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        kwargs = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == [(u["Key"], u["UploadId"]) for u in everything["Uploads"]]
    folded = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in folded["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in folded["Uploads"]] == ["b", "b", "d"]
    prefixed = s3.list_multipart_uploads(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert [p["Prefix"] for p in prefixed["CommonPrefixes"]] == ["c/x/"]
    # Shadow-bucket state never leaks into object listings or ListBuckets.
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert not any(b["Name"].startswith("mpuShadowBucket") for b in s3.list_buckets()["Buckets"])
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(exc.value) == "BucketNotEmpty"


def test_list_multipart_uploads_url_encoding_and_bad_max_uploads(gateway, s3, bucket):
    start(s3, bucket, "sp ace/é")
    r = s3.list_multipart_uploads(Bucket=bucket, EncodingType="url")
    assert [u["Key"] for u in r["Uploads"]] == ["sp%20ace/%C3%A9"]   # boto3 leaves these encoded
    r = signed(f"{gateway.url}/{bucket}?uploads&max-uploads=-2")
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content


# ---------------------------------------------------------------- UploadPartCopy

def test_upload_part_copy_whole_and_ranged(s3, bucket):
    src = os.urandom(PART + 100)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    uid = start(s3, bucket, "dst")
    r1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1, CopySource=f"{bucket}/src")
    assert r1["CopyPartResult"]["ETag"] == f'"{hashlib.md5(src).hexdigest()}"'
    r2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange="bytes=10-19")
    assert r2["CopyPartResult"]["ETag"] == f'"{hashlib.md5(src[10:20]).hexdigest()}"'
    complete(s3, bucket, uid, [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                               {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}], key="dst")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == src + src[10:20]


@pytest.mark.parametrize("rng", ["bytes=0-100", "bytes=5-2", "0-2", "bytes=0-", "bytes=-3", "bytes=0-1,2-3"])
def test_upload_part_copy_bad_range_is_invalid_argument(s3, bucket, rng):
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    uid = start(s3, bucket, "dst")
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1, CopySource=f"{bucket}/src",
                            CopySourceRange=rng)
    assert error_code(exc.value) == "InvalidArgument"


def test_upload_part_copy_source_errors_and_conditions(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"data")
    uid = start(s3, bucket, "dst")

    def copy(**kwargs):
        return s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1, **kwargs)
    for source, code in ((f"{bucket}/nope", "NoSuchKey"), (f"{bucket}-nope/src", "NoSuchBucket")):
        with pytest.raises(ClientError) as exc:
            copy(CopySource=source)
        assert error_code(exc.value) == code
    with pytest.raises(ClientError) as exc:
        copy(CopySource=f"{bucket}/src", CopySourceIfMatch='"' + "0" * 32 + '"')
    assert error_code(exc.value) == "PreconditionFailed"
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    with pytest.raises(ClientError) as exc:
        copy(CopySource=f"{bucket}/src", CopySourceIfNoneMatch=etag)
    assert error_code(exc.value) == "PreconditionFailed"
    copy(CopySource=f"{bucket}/src", CopySourceIfMatch=etag)
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId="0" * 32, PartNumber=1, CopySource=f"{bucket}/src")
    assert error_code(exc.value) == "NoSuchUpload"


def test_upload_part_copy_reports_source_version_in_versioned_bucket(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"first")["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"second")
    uid = start(s3, bucket, "dst")
    r = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert r["CopySourceVersionId"] == v1
    complete(s3, bucket, uid, [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}], key="dst")
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"first"


# ---------------------------------------------------------------- data accounting (file backend)

def test_reuploading_a_part_replaces_it_and_frees_the_old_data(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    uid = start(s3, bucket_name)
    before = data_files(dmd.data_path)
    put_part(s3, bucket_name, uid, 1, b"first version")
    after_first = data_files(dmd.data_path)
    assert len(after_first - before) == 1
    p = put_part(s3, bucket_name, uid, 1, b"second version")
    after_second = data_files(dmd.data_path)
    assert len(after_second - before) == 1 and not (after_first - before) & after_second
    complete(s3, bucket_name, uid, [p])
    assert s3.get_object(Bucket=bucket_name, Key="obj")["Body"].read() == b"second version"


def test_abort_frees_all_part_data_and_forgets_the_upload(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    uid = start(s3, bucket_name)
    for n in (1, 2, 3):
        put_part(s3, bucket_name, uid, n, os.urandom(1000))
    assert len(data_files(dmd.data_path) - before) == 3
    r = s3.abort_multipart_upload(Bucket=bucket_name, Key="obj", UploadId=uid)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert data_files(dmd.data_path) - before == set()
    assert s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
    with pytest.raises(ClientError) as exc:
        s3.abort_multipart_upload(Bucket=bucket_name, Key="obj", UploadId=uid)
    assert error_code(exc.value) == "NoSuchUpload"
    s3.delete_bucket(Bucket=bucket_name)   # no leftover upload state blocks it


def test_complete_frees_unused_parts_and_overwrite_frees_the_old_object(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    uid = start(s3, bucket_name)
    p1 = put_part(s3, bucket_name, uid, 1, os.urandom(PART))
    put_part(s3, bucket_name, uid, 2, b"unused")
    p3 = put_part(s3, bucket_name, uid, 3, b"used")
    complete(s3, bucket_name, uid, [p1, p3])
    assert len(data_files(dmd.data_path) - before) == 2
    s3.put_object(Bucket=bucket_name, Key="obj", Body=b"replacement")
    assert len(data_files(dmd.data_path) - before) == 1
    s3.delete_object(Bucket=bucket_name, Key="obj")
    assert data_files(dmd.data_path) - before == set()


def test_part_landing_after_its_upload_was_aborted_is_no_such_upload_and_leaves_no_data(
        s3_file, file_gateway, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    uid = start(s3, bucket_name)
    body = os.urandom(256 * 1024)
    half_sent, go_on = threading.Event(), threading.Event()

    def slow_body():
        yield body[:1024]
        half_sent.set()
        go_on.wait(10)
        yield body[1024:]
    url = f"{file_gateway.url}/{bucket_name}/obj?partNumber=1&uploadId={uid}"
    req = AWSRequest(method="PUT", url=url, headers={"x-amz-content-sha256": hashlib.sha256(body).hexdigest(),
                                                     "content-length": str(len(body))})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    result: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: result.append(
        httpx.put(url, content=slow_body(), headers=dict(req.headers.items()), timeout=30)))
    sender.start()
    assert half_sent.wait(10)
    s3.abort_multipart_upload(Bucket=bucket_name, Key="obj", UploadId=uid)
    go_on.set()
    sender.join(30)
    assert result and result[0].status_code == 404 and b"<Code>NoSuchUpload</Code>" in result[0].content
    assert data_files(dmd.data_path) - before == set()


# ---------------------------------------------------------------- interrupted Complete (gateway killed)

async def _snapshot(dmd, bucket: str, key: str, upload_id: str) -> dict[str, str]:
    """The upload's raw shadow-bucket entries, read straight from the dmd."""
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        saved = {}
        async for entry in client.read_stream(["mpuShadowBucket" + bucket], {}):
            if upload_id in entry["key"]:
                saved[entry["key"]] = entry["value"]
        assert overview_key(key, upload_id) in saved
        return saved
    finally:
        await client.close()


async def _restore(dmd, bucket: str, key: str, upload_id: str, saved: dict[str, str]) -> None:
    """Put the entries back with the overview marked, as a gateway killed mid-Complete leaves them."""
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        for k, v in saved.items():
            if k == overview_key(key, upload_id):
                v = json.dumps({**json.loads(v), "completeInProgress": True})
            await client.put(["mpuShadowBucket" + bucket], k, v, {})
    finally:
        await client.close()


async def test_abort_after_a_complete_killed_past_its_commit_keeps_the_objects_data(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    uid = start(s3, bucket_name)
    parts = [os.urandom(PART), b"tail"]
    listed = [put_part(s3, bucket_name, uid, i + 1, p) for i, p in enumerate(parts)]
    put_part(s3, bucket_name, uid, 3, b"never used")
    saved = await _snapshot(dmd, bucket_name, "obj", uid)
    complete(s3, bucket_name, uid, listed)
    await _restore(dmd, bucket_name, "obj", uid, saved)   # committed, but no clean-up happened
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket_name)["Uploads"]] == [uid]
    s3.abort_multipart_upload(Bucket=bucket_name, Key="obj", UploadId=uid)
    assert s3.get_object(Bucket=bucket_name, Key="obj")["Body"].read() == b"".join(parts)
    assert len(data_files(dmd.data_path) - before) == 2    # only the unused part's data went
    assert s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


async def test_retried_complete_after_a_kill_past_its_commit_answers_the_committed_object(s3_file, dmd,
                                                                                           bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    uid = start(s3, bucket_name)
    listed = [put_part(s3, bucket_name, uid, 1, b"only part")]
    saved = await _snapshot(dmd, bucket_name, "obj", uid)
    first = complete(s3, bucket_name, uid, listed)
    await _restore(dmd, bucket_name, "obj", uid, saved)
    again = complete(s3, bucket_name, uid, listed)
    assert again["ETag"] == first["ETag"] and again["VersionId"] == first["VersionId"]
    assert len(s3.list_object_versions(Bucket=bucket_name)["Versions"]) == 1
    assert s3.get_object(Bucket=bucket_name, Key="obj")["Body"].read() == b"only part"
    assert s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


async def test_complete_killed_before_its_commit_can_be_aborted_or_completed(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    uid = start(s3, bucket_name)
    listed = [put_part(s3, bucket_name, uid, 1, b"data")]
    saved = await _snapshot(dmd, bucket_name, "obj", uid)
    await _restore(dmd, bucket_name, "obj", uid, saved)   # marked, nothing committed
    complete(s3, bucket_name, uid, listed)
    assert s3.get_object(Bucket=bucket_name, Key="obj")["Body"].read() == b"data"
    uid2 = start(s3, bucket_name, "other")
    put_part(s3, bucket_name, uid2, 1, b"to abort", key="other")
    saved = await _snapshot(dmd, bucket_name, "other", uid2)
    await _restore(dmd, bucket_name, "other", uid2, saved)
    s3.abort_multipart_upload(Bucket=bucket_name, Key="other", UploadId=uid2)
    assert len(data_files(dmd.data_path) - before) == 1   # the completed object's data only


# ---------------------------------------------------------------- GET/HEAD ?partNumber=N

def test_part_range_of_multipart_and_plain_objects():
    md = {"uploadId": "u", "content-length": 15, "location": [
        {"key": "a", "size": 10, "start": 0, "dataStoreETag": "1:aa"},
        {"key": "b", "size": 5, "start": 10, "dataStoreETag": "4:bb"}]}
    assert part_range(md, 1) == (0, 9, 2)
    assert part_range(md, 4) == (10, 14, 2)
    assert part_range({"content-length": 7, "location": [{"key": "x", "size": 7}]}, 1) == (0, 6, 1)
    for bad_md, number in ((md, 2), ({"content-length": 7}, 2)):
        with pytest.raises(Exception) as exc:
            part_range(bad_md, number)
        assert getattr(exc.value, "code", None) == "InvalidPartNumber"
        assert getattr(exc.value, "status", None) == 416


def test_get_and_head_by_part_number(s3, bucket):
    parts = [os.urandom(PART), b"second part"]
    uid = start(s3, bucket)
    complete(s3, bucket, uid, [put_part(s3, bucket, uid, i + 1, p) for i, p in enumerate(parts)])
    got = s3.get_object(Bucket=bucket, Key="obj", PartNumber=2)
    assert got["Body"].read() == parts[1]
    assert got["PartsCount"] == 2
    assert got["ContentRange"] == f"bytes {PART}-{PART + len(parts[1]) - 1}/{PART + len(parts[1])}"
    assert s3.head_object(Bucket=bucket, Key="obj", PartNumber=1)["ContentLength"] == PART
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="obj", PartNumber=3)
    assert error_code(exc.value) == "InvalidPartNumber"


# ---------------------------------------------------------------- differential against moto

def _error_scenarios(s3, bucket: str) -> dict[str, str]:
    """The same boto3 calls against any S3: scenario -> error code (or "ok")."""
    out: dict[str, str] = {}

    def run(name, fn):
        try:
            fn()
            out[name] = "ok"
        except ClientError as exc:
            out[name] = error_code(exc)
        except Exception as exc:  # moto raises some errors as Python exceptions
            out[name] = f"exception {type(exc).__name__}"
    uid = start(s3, bucket)
    big = put_part(s3, bucket, uid, 1, b"a" * PART)
    small = put_part(s3, bucket, uid, 2, b"b")
    tail = put_part(s3, bucket, uid, 3, b"c")
    run("unknown upload part", lambda: put_part(s3, bucket, "0" * 32, 1, b"x"))
    run("unknown upload list parts", lambda: s3.list_parts(Bucket=bucket, Key="obj", UploadId="0" * 32))
    run("unknown upload abort", lambda: s3.abort_multipart_upload(Bucket=bucket, Key="obj", UploadId="0" * 32))
    run("part number 0", lambda: put_part(s3, bucket, uid, 0, b"x"))
    run("part number 10001", lambda: put_part(s3, bucket, uid, 10001, b"x"))
    run("out of order", lambda: complete(s3, bucket, uid, [tail, big]))
    run("missing part", lambda: complete(s3, bucket, uid, [big, {"PartNumber": 9, "ETag": tail["ETag"]}]))
    run("wrong etag", lambda: complete(s3, bucket, uid, [{"PartNumber": 1, "ETag": tail["ETag"]}]))
    run("too small", lambda: complete(s3, bucket, uid, [big, small, tail]))
    run("empty list", lambda: complete(s3, bucket, uid, []))
    run("complete", lambda: complete(s3, bucket, uid, [big, tail]))
    run("complete again", lambda: complete(s3, bucket, uid, [big, tail]))
    return out


# Where moto 5 answers differently from us, with moto's answer (ours follows AWS).
MOTO_DIFFERS = {
    "unknown upload part": "exception KeyError",   # moto crashes; AWS: NoSuchUpload
    "part number 0": "NoSuchUpload",               # moto checks the upload id first; AWS: InvalidArgument
    "out of order": "EntityTooSmall",              # moto checks sizes before order; AWS: InvalidPartOrder
}


def against_moto(scenarios):
    """Run `scenarios(client, bucket)` against moto's in-process S3."""
    from moto import mock_aws
    with mock_aws():
        moto_s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        moto_s3.create_bucket(Bucket="diff")
        return scenarios(moto_s3, "diff")


def test_error_codes_match_moto(s3, bucket):
    ours = _error_scenarios(s3, bucket)
    theirs = against_moto(_error_scenarios)
    expected = {"unknown upload part": "NoSuchUpload", "unknown upload list parts": "NoSuchUpload",
                "unknown upload abort": "NoSuchUpload", "part number 0": "InvalidArgument",
                "part number 10001": "InvalidArgument", "out of order": "InvalidPartOrder",
                "missing part": "InvalidPart", "wrong etag": "InvalidPart", "too small": "EntityTooSmall",
                "empty list": "MalformedXML", "complete": "ok",
                "complete again": "ok"}   # a retry of a Complete that succeeded succeeds again, as on AWS
    assert ours == expected
    assert theirs == {**ours, **MOTO_DIFFERS}


# ---------------------------------------------------------------- aws-cli

@pytest.mark.slow
def test_aws_cli_cp_100_mib_up_and_down(file_gateway, bucket_name, tmp_path):
    s3 = make_client(file_gateway.url)
    s3.create_bucket(Bucket=bucket_name)
    src, dst = tmp_path / "up.bin", tmp_path / "down.bin"
    with open(src, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(MiB))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    aws = [sys.executable, "-m", "awscli", "--endpoint-url", file_gateway.url, "s3", "cp", "--only-show-errors"]
    started = time.monotonic()
    subprocess.run(aws + [str(src), f"s3://{bucket_name}/big"], env=env, check=True, timeout=300)
    up = time.monotonic() - started
    subprocess.run(aws + [f"s3://{bucket_name}/big", str(dst)], env=env, check=True, timeout=300)
    down = time.monotonic() - started - up
    print(f"aws s3 cp 100 MiB: up {up:.1f} s, down {down:.1f} s")
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    assert s3.head_object(Bucket=bucket_name, Key="big")["ETag"].strip('"').endswith("-13")



