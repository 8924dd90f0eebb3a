"""Object Lock through boto3 (issue 15): bucket configuration, retention, legal holds, the
lock headers of every write, the headers of GET/HEAD, and enforcement on deletes (DeleteObject
and DeleteObjects, with and without the governance bypass, by the owner and by a second account).
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client, raw_body

ACCOUNT2_ARN = "arn:aws:iam::123456789013:root"


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def future(days: float = 1.0) -> datetime:
    return (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)


@pytest.fixture
def lock_bucket(s3, bucket_name: str) -> str:
    s3.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    return bucket_name


def put_locked(s3, bucket: str, key: str, mode: str = "GOVERNANCE", days: float = 1.0, **extra) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=b"locked", ObjectLockMode=mode,
                         ObjectLockRetainUntilDate=future(days), **extra)["VersionId"]


# ---------------------------------------------------------------- bucket configuration

def test_create_with_lock_enables_versioning_for_good(s3, lock_bucket: str) -> None:
    assert s3.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    conf = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert conf == {"ObjectLockEnabled": "Enabled"}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=lock_bucket, VersioningConfiguration={"Status": "Suspended"})
    assert code(exc) == "InvalidBucketState" and status(exc) == 409


def test_configuration_not_found_and_versioning_required(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert code(exc) == "ObjectLockConfigurationNotFoundError" and status(exc) == 404
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    with pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
    assert code(exc) == "InvalidBucketState"
    # An existing versioned bucket can have Object Lock enabled.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf)
    got = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert got == conf
    conf_years = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 2}}}
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=conf_years)
    assert s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"] == conf_years


@pytest.mark.parametrize("body,expected", [
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>SOMETIMES</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>", "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years></DefaultRetention></Rule>"
     b"</ObjectLockConfiguration>", "MalformedXML"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>"
     b"<Mode>GOVERNANCE</Mode><Days>0</Days></DefaultRetention></Rule></ObjectLockConfiguration>", "InvalidArgument"),
    (b"<ObjectLockConfiguration><ObjectLockEnabled>Disabled</ObjectLockEnabled></ObjectLockConfiguration>",
     "MalformedXML"),
])
def test_configuration_document_errors(s3, lock_bucket: str, body: bytes, expected: str) -> None:
    with raw_body(s3, "PutObjectLockConfiguration", body), pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert code(exc) == expected and status(exc) == 400


# ---------------------------------------------------------------- lock headers on writes

def test_put_headers_and_get_head_show_them(s3, lock_bucket: str) -> None:
    until = future(2)
    vid = s3.put_object(Bucket=lock_bucket, Key="k", Body=b"x", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")["VersionId"]
    for call in (s3.head_object, s3.get_object):
        got = call(Bucket=lock_bucket, Key="k")
        assert got["ObjectLockMode"] == "COMPLIANCE"
        assert got["ObjectLockRetainUntilDate"] == until
        assert got["ObjectLockLegalHoldStatus"] == "ON"
    retention = s3.get_object_retention(Bucket=lock_bucket, Key="k", VersionId=vid)["Retention"]
    assert retention == {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    assert s3.get_object_legal_hold(Bucket=lock_bucket, Key="k")["LegalHold"] == {"Status": "ON"}


def test_lock_headers_on_bucket_without_lock(s3, bucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        put_locked(s3, bucket, "k")
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")
    assert code(exc) == "InvalidRequest"
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=bucket, Key="k")
    assert code(exc) == "InvalidRequest"


@pytest.mark.parametrize("headers", [
    {"x-amz-object-lock-mode": "FOREVER", "x-amz-object-lock-retain-until-date": "2099-01-01T00:00:00Z"},
    {"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "not-a-date"},
    {"x-amz-object-lock-mode": "GOVERNANCE", "x-amz-object-lock-retain-until-date": "2001-01-01T00:00:00Z"},
    {"x-amz-object-lock-mode": "GOVERNANCE"},
    {"x-amz-object-lock-legal-hold": "MAYBE"},
])
def test_bad_lock_headers_are_invalid_argument(s3, lock_bucket: str, headers: dict[str, str]) -> None:
    def add_headers(request, **kwargs):
        for name, value in headers.items():
            request.headers[name] = value
    s3.meta.events.register_first("before-sign.s3.PutObject", add_headers)
    try:
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=lock_bucket, Key="k", Body=b"x")
        assert code(exc) == "InvalidArgument" and status(exc) == 400
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add_headers)


def test_integrity_required_with_lock_headers_and_default_retention(gateway, lock_bucket: str) -> None:
    bare = make_client(gateway.url, request_checksum_calculation="when_required")
    with pytest.raises(ClientError) as exc:
        bare.put_object(Bucket=lock_bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=future())
    assert code(exc) == "InvalidRequest"
    bare.put_object(Bucket=lock_bucket, Key="plain", Body=b"x")   # no lock, no default: no requirement
    bare.put_object(Bucket=lock_bucket, Key="md5", Body=b"x", ContentMD5=base64.b64encode(hashlib.md5(b"x").digest()).decode(),
                    ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=future())
    bare.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    with pytest.raises(ClientError) as exc:
        bare.put_object(Bucket=lock_bucket, Key="plain", Body=b"x")
    assert code(exc) == "InvalidRequest"


def test_default_retention_applies_to_new_versions(s3, lock_bucket: str) -> None:
    s3.put_object_lock_configuration(Bucket=lock_bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 3}}})
    before = datetime.now(timezone.utc)
    s3.put_object(Bucket=lock_bucket, Key="d", Body=b"x")
    head = s3.head_object(Bucket=lock_bucket, Key="d")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert before + timedelta(days=3) - timedelta(seconds=5) <= head["ObjectLockRetainUntilDate"] \
        <= datetime.now(timezone.utc) + timedelta(days=3, seconds=5)
    # Explicit headers win over the default.
    until = future(10)
    s3.put_object(Bucket=lock_bucket, Key="e", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    assert s3.head_object(Bucket=lock_bucket, Key="e")["ObjectLockRetainUntilDate"] == until


def test_copy_multipart_and_post_carry_lock(s3, lock_bucket: str) -> None:
    until = future(5)
    s3.put_object(Bucket=lock_bucket, Key="src", Body=b"source")
    s3.copy_object(Bucket=lock_bucket, Key="copy", CopySource={"Bucket": lock_bucket, "Key": "src"},
                   ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=lock_bucket, Key="copy")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == \
        ("GOVERNANCE", until, "ON")
    assert "ObjectLockMode" not in s3.head_object(Bucket=lock_bucket, Key="src")
    upload = s3.create_multipart_upload(Bucket=lock_bucket, Key="mpu", ObjectLockMode="COMPLIANCE",
                                        ObjectLockRetainUntilDate=until)["UploadId"]
    etag = s3.upload_part(Bucket=lock_bucket, Key="mpu", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(Bucket=lock_bucket, Key="mpu", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    head = s3.head_object(Bucket=lock_bucket, Key="mpu")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", until)
    post = s3.generate_presigned_post(lock_bucket, "posted", Fields={"x-amz-object-lock-legal-hold": "ON"},
                                      Conditions=[{"x-amz-object-lock-legal-hold": "ON"}])
    import httpx
    resp = httpx.post(post["url"], data=post["fields"], files={"file": ("f", b"form body")})
    assert resp.status_code == 204, resp.text
    assert s3.head_object(Bucket=lock_bucket, Key="posted")["ObjectLockLegalHoldStatus"] == "ON"
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=lock_bucket, Key="m2", ObjectLockMode="NEVER",
                                   ObjectLockRetainUntilDate=until)
    assert code(exc) == "InvalidArgument"


# ---------------------------------------------------------------- retention and legal hold documents

def test_retention_extend_shorten_and_bypass(s3, lock_bucket: str) -> None:
    vid = put_locked(s3, lock_bucket, "g", "GOVERNANCE", days=2)
    later = future(4)
    s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vid,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})   # extend: fine
    with pytest.raises(ClientError) as exc:   # shorten without bypass
        s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vid,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(1)})
    assert code(exc) == "AccessDenied"
    s3.put_object_retention(Bucket=lock_bucket, Key="g", VersionId=vid, BypassGovernanceRetention=True,
                            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(1)})
    assert s3.get_object_retention(Bucket=lock_bucket, Key="g")["Retention"]["RetainUntilDate"] == future(1)
    # COMPLIANCE: extended, never shortened nor changed, bypass or not.
    cvid = put_locked(s3, lock_bucket, "c", "COMPLIANCE", days=2)
    s3.put_object_retention(Bucket=lock_bucket, Key="c", VersionId=cvid,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": future(3)})
    for retention in ({"Mode": "COMPLIANCE", "RetainUntilDate": future(1)},
                      {"Mode": "GOVERNANCE", "RetainUntilDate": future(5)}):
        with pytest.raises(ClientError) as exc:
            s3.put_object_retention(Bucket=lock_bucket, Key="c", VersionId=cvid, BypassGovernanceRetention=True,
                                    Retention=retention)
        assert code(exc) == "AccessDenied"
    assert s3.get_object_retention(Bucket=lock_bucket, Key="c")["Retention"]["RetainUntilDate"] == future(3)


def test_retention_document_errors(s3, lock_bucket: str) -> None:
    s3.put_object(Bucket=lock_bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=lock_bucket, Key="k")
    assert code(exc) == "NoSuchObjectLockConfiguration" and status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object_legal_hold(Bucket=lock_bucket, Key="k")
    assert code(exc) == "NoSuchObjectLockConfiguration"
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=lock_bucket, Key="k",
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(-1)})
    assert code(exc) == "InvalidArgument"
    bad_retention = b"<Retention><Mode>SOON</Mode><RetainUntilDate>2099-01-01T00:00:00Z</RetainUntilDate></Retention>"
    with raw_body(s3, "PutObjectRetention", bad_retention), pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=lock_bucket, Key="k", Retention={"Mode": "GOVERNANCE",
                                                                      "RetainUntilDate": future()})
    assert code(exc) == "MalformedXML"
    with raw_body(s3, "PutObjectLegalHold", b"<LegalHold><Status>MAYBE</Status></LegalHold>"), \
            pytest.raises(ClientError) as exc:
        s3.put_object_legal_hold(Bucket=lock_bucket, Key="k", LegalHold={"Status": "ON"})
    assert code(exc) == "MalformedXML"


# ---------------------------------------------------------------- enforcement

def test_locked_versions_cannot_be_deleted(s3, lock_bucket: str) -> None:
    gvid = put_locked(s3, lock_bucket, "g", "GOVERNANCE")
    cvid = put_locked(s3, lock_bucket, "c", "COMPLIANCE")
    hvid = s3.put_object(Bucket=lock_bucket, Key="h", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    for key, vid in (("g", gvid), ("c", cvid), ("h", hvid)):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=vid)
        assert code(exc) == "AccessDenied", key
        # Without a version id: a delete marker over the locked version, which stays.
        marker = s3.delete_object(Bucket=lock_bucket, Key=key)
        assert marker["DeleteMarker"] is True
        assert s3.head_object(Bucket=lock_bucket, Key=key, VersionId=vid)["ContentLength"] == 6 - (key == "h") * 5
        s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=marker["VersionId"])   # markers are not locked
    # COMPLIANCE and legal holds hold against the bypass too; GOVERNANCE gives way to it.
    for key, vid in (("c", cvid), ("h", hvid)):
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True)
        assert code(exc) == "AccessDenied"
    s3.delete_object(Bucket=lock_bucket, Key="g", VersionId=gvid, BypassGovernanceRetention=True)
    # A legal hold released: the version goes.
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="h", VersionId=hvid, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=lock_bucket, Key="h", VersionId=hvid)["LegalHold"]["Status"] == "OFF"
    s3.delete_object(Bucket=lock_bucket, Key="h", VersionId=hvid)
    left = {v["Key"] for v in s3.list_object_versions(Bucket=lock_bucket).get("Versions", [])}
    assert left == {"c"}


def test_retention_in_the_past_no_longer_locks(s3, lock_bucket: str) -> None:
    until = datetime.now(timezone.utc) + timedelta(seconds=3)
    vid = s3.put_object(Bucket=lock_bucket, Key="brief", Body=b"x", ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=until)["VersionId"]
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=lock_bucket, Key="brief", VersionId=vid)
    time.sleep(max(0.0, (until - datetime.now(timezone.utc)).total_seconds()) + 1.2)
    s3.delete_object(Bucket=lock_bucket, Key="brief", VersionId=vid)


def test_delete_objects_mix_of_locked_and_unlocked(s3, lock_bucket: str) -> None:
    locked = put_locked(s3, lock_bucket, "locked", "GOVERNANCE")
    held = s3.put_object(Bucket=lock_bucket, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    free = s3.put_object(Bucket=lock_bucket, Key="free", Body=b"x")["VersionId"]
    objects = [{"Key": "locked", "VersionId": locked}, {"Key": "held", "VersionId": held},
               {"Key": "free", "VersionId": free}, {"Key": "locked"}]
    result = s3.delete_objects(Bucket=lock_bucket, Delete={"Objects": objects})
    errors = {(e["Key"], e["Code"]) for e in result.get("Errors", [])}
    assert errors == {("locked", "AccessDenied"), ("held", "AccessDenied")}
    deleted = {(d["Key"], d.get("VersionId"), d.get("DeleteMarker", False)) for d in result["Deleted"]}
    assert ("free", free, False) in deleted and any(k == "locked" and m for k, _, m in deleted)
    # With the bypass, GOVERNANCE goes; the legal hold stays.
    result = s3.delete_objects(Bucket=lock_bucket, BypassGovernanceRetention=True, Delete={
        "Objects": [{"Key": "locked", "VersionId": locked}, {"Key": "held", "VersionId": held}]})
    assert [(e["Key"], e["Code"]) for e in result.get("Errors", [])] == [("held", "AccessDenied")]
    assert [d["Key"] for d in result["Deleted"]] == ["locked"]


def test_bypass_needs_the_permission(file_gateway, s3_file, bucket_name: str) -> None:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    other = make_client(file_gateway.url, ACCESS_KEY2, SECRET_KEY2)
    vids = [put_locked(s3, bucket_name, f"k{i}", "GOVERNANCE") for i in range(3)]

    def policy(actions: list[str]) -> None:
        s3.put_bucket_policy(Bucket=bucket_name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": ACCOUNT2_ARN}, "Action": actions,
            "Resource": [f"arn:aws:s3:::{bucket_name}/*"]}]}))

    policy(["s3:DeleteObjectVersion", "s3:PutObjectRetention"])
    with pytest.raises(ClientError) as exc:
        other.delete_object(Bucket=bucket_name, Key="k0", VersionId=vids[0], BypassGovernanceRetention=True)
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        other.put_object_retention(Bucket=bucket_name, Key="k1", VersionId=vids[1], BypassGovernanceRetention=True,
                                   Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(0.5)})
    assert code(exc) == "AccessDenied"
    result = other.delete_objects(Bucket=bucket_name, BypassGovernanceRetention=True,
                                  Delete={"Objects": [{"Key": "k2", "VersionId": vids[2]}]})
    assert [e["Code"] for e in result.get("Errors", [])] == ["AccessDenied"]
    policy(["s3:DeleteObjectVersion", "s3:PutObjectRetention", "s3:BypassGovernanceRetention"])
    other.delete_object(Bucket=bucket_name, Key="k0", VersionId=vids[0], BypassGovernanceRetention=True)
    other.put_object_retention(Bucket=bucket_name, Key="k1", VersionId=vids[1], BypassGovernanceRetention=True,
                               Retention={"Mode": "GOVERNANCE", "RetainUntilDate": future(0.5)})
    result = other.delete_objects(Bucket=bucket_name, BypassGovernanceRetention=True,
                                  Delete={"Objects": [{"Key": "k2", "VersionId": vids[2]}]})
    assert not result.get("Errors") and [d["Key"] for d in result["Deleted"]] == ["k2"]
    # The owner has the permission without a policy saying so.
    s3.delete_bucket_policy(Bucket=bucket_name)
    s3.delete_object(Bucket=bucket_name, Key="k1", VersionId=vids[1], BypassGovernanceRetention=True)
