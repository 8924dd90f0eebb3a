"""The authorization matrix: action x principal (bucket owner, another account, anonymous) x bucket
setup (canned ACLs, grants, policy Allow, policy Deny) -> allowed or AccessDenied, through boto3 with
accessKey1 / accessKey2 / botocore UNSIGNED against the real dmd + gateway.

Every cell runs the real call; "allowed" means it succeeded, "denied" means AccessDenied (any other
answer fails the test). DeleteObjects is judged per key (AccessDenied in its Errors)."""
from __future__ import annotations

import json
import uuid
from typing import Callable

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY2, make_client, OTHER_ACCOUNT, OTHER_ID, OWNER_ID, SECRET_KEY2

OBJ = "obj"

LIST = {"ListObjectsV2", "ListObjects", "ListObjectVersions", "HeadBucket", "ListMultipartUploads"}
READ = {"GetObject", "HeadObject", "GetObjectTagging"}
WRITE = {"PutObject", "DeleteObject", "DeleteObjects", "MultipartUpload", "AbortMultipartUpload"}
ACP = {"GetBucketAcl", "GetObjectAcl"}
OWNER_ONLY = {"GetBucketVersioning", "GetBucketTagging", "PutObjectTagging", "GetBucketPolicy"}
COPY = {"CopyObject"}   # read on the source, write on the target
EVERYTHING = LIST | READ | WRITE | ACP | OWNER_ONLY | COPY


def _expect_denied(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        if code == "AccessDenied" or (code == "403" and status == 403):   # HEAD answers carry no code
            return False
        if code == "NoSuchBucketPolicy":   # allowed to ask; there is none
            return True
        raise
    return True


def _actions(owner, bucket: str, principals: int) -> dict[str, Callable[[object], bool]]:
    """Each action: a callable (client) -> allowed? What they need (objects to delete, uploads to
    abort) is made by the owner now, before the setup can refuse the owner writes."""
    keys = []
    for _ in range(2 * principals):
        keys.append(f"del-{uuid.uuid4().hex[:8]}")
        owner.put_object(Bucket=bucket, Key=keys[-1], Body=b"d")
    uploads = []
    for _ in range(principals):
        key = f"ab-{uuid.uuid4().hex[:8]}"
        uploads.append((key, owner.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]))

    def fresh_key() -> str:
        return keys.pop()

    def delete_objects(c) -> bool:
        key = fresh_key()
        resp = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}]})
        errors = resp.get("Errors", [])
        assert all(e["Code"] == "AccessDenied" for e in errors), errors
        return not errors

    def multipart(c) -> bool:
        def run() -> None:
            key = f"mp-{uuid.uuid4().hex[:8]}"
            up = c.create_multipart_upload(Bucket=bucket, Key=key)
            part = c.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"p")
            c.list_parts(Bucket=bucket, Key=key, UploadId=up["UploadId"])
            c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        return _expect_denied(run)

    def abort(c) -> bool:
        key, upload_id = uploads.pop()
        return _expect_denied(lambda: c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))

    def tagging(c) -> bool:
        return _expect_denied(lambda: c.get_bucket_tagging(Bucket=bucket))

    def copy(c) -> bool:
        return _expect_denied(lambda: c.copy_object(Bucket=bucket, Key=f"copy-{uuid.uuid4().hex[:8]}",
                                                    CopySource={"Bucket": bucket, "Key": OBJ}))

    def put_tagging(c) -> bool:
        return _expect_denied(lambda: c.put_object_tagging(Bucket=bucket, Key=OBJ, Tagging={"TagSet": [
            {"Key": "k", "Value": "v"}]}))

    return {
        "ListObjectsV2": lambda c: _expect_denied(lambda: c.list_objects_v2(Bucket=bucket)),
        "ListObjects": lambda c: _expect_denied(lambda: c.list_objects(Bucket=bucket)),
        "ListObjectVersions": lambda c: _expect_denied(lambda: c.list_object_versions(Bucket=bucket)),
        "HeadBucket": lambda c: _expect_denied(lambda: c.head_bucket(Bucket=bucket)),
        "ListMultipartUploads": lambda c: _expect_denied(lambda: c.list_multipart_uploads(Bucket=bucket)),
        "GetObject": lambda c: _expect_denied(lambda: c.get_object(Bucket=bucket, Key=OBJ)["Body"].read()),
        "HeadObject": lambda c: _expect_denied(lambda: c.head_object(Bucket=bucket, Key=OBJ)),
        "GetObjectTagging": lambda c: _expect_denied(lambda: c.get_object_tagging(Bucket=bucket, Key=OBJ)),
        "PutObject": lambda c: _expect_denied(lambda: c.put_object(Bucket=bucket, Key=f"new-{uuid.uuid4().hex[:8]}",
                                                                   Body=b"n")),
        "DeleteObject": lambda c: _expect_denied(lambda: c.delete_object(Bucket=bucket, Key=fresh_key())),
        "DeleteObjects": delete_objects,
        "MultipartUpload": multipart,
        "AbortMultipartUpload": abort,
        "GetBucketAcl": lambda c: _expect_denied(lambda: c.get_bucket_acl(Bucket=bucket)),
        "GetObjectAcl": lambda c: _expect_denied(lambda: c.get_object_acl(Bucket=bucket, Key=OBJ)),
        "GetBucketVersioning": lambda c: _expect_denied(lambda: c.get_bucket_versioning(Bucket=bucket)),
        "GetBucketTagging": tagging,
        "PutObjectTagging": put_tagging,
        "GetBucketPolicy": lambda c: _expect_denied(lambda: c.get_bucket_policy(Bucket=bucket)),
        "CopyObject": copy,
    }


def _policy(bucket: str, effect: str, principal, actions) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": effect, "Principal": principal, "Action": actions,
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]})


def _bucket_tagging_missing_is_allowed(owner, bucket: str) -> None:
    owner.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "t", "Value": "v"}]})


# setup name -> (prepare(owner, bucket), {principal: allowed actions})
SETUPS: dict[str, tuple[Callable, dict[str, set[str]]]] = {
    "private": (lambda o, b: None, {"other": set(), "anon": set()}),
    "canned public-read": (
        lambda o, b: (o.put_bucket_acl(Bucket=b, ACL="public-read"),
                      o.put_object_acl(Bucket=b, Key=OBJ, ACL="public-read")),
        {"other": LIST | READ, "anon": LIST | READ}),
    "canned public-read-write": (
        lambda o, b: o.put_bucket_acl(Bucket=b, ACL="public-read-write"),
        {"other": LIST | WRITE, "anon": LIST | WRITE}),
    "canned authenticated-read": (
        lambda o, b: (o.put_bucket_acl(Bucket=b, ACL="authenticated-read"),
                      o.put_object_acl(Bucket=b, Key=OBJ, ACL="authenticated-read")),
        {"other": LIST | READ, "anon": set()}),
    "grants to the other account": (
        lambda o, b: (o.put_bucket_acl(Bucket=b, GrantRead=f'id="{OTHER_ID}"', GrantWrite=f'id="{OTHER_ID}"',
                                       GrantReadACP=f'id="{OTHER_ID}"', GrantFullControl=f'id="{OWNER_ID}"'),
                      o.put_object_acl(Bucket=b, Key=OBJ, GrantRead=f'id="{OTHER_ID}"',
                                       GrantReadACP=f'id="{OTHER_ID}"')),
        {"other": LIST | READ | WRITE | ACP | COPY, "anon": set()}),
    "policy allows the other account s3:*": (
        lambda o, b: o.put_bucket_policy(Bucket=b, Policy=_policy(b, "Allow", {"AWS": OTHER_ACCOUNT}, "s3:*")),
        {"other": EVERYTHING, "anon": set()}),
    "policy allows everyone GetObject+ListBucket": (
        lambda o, b: o.put_bucket_policy(Bucket=b, Policy=_policy(b, "Allow", "*", ["s3:GetObject",
                                                                                  "s3:ListBucket"])),
        {"other": {"ListObjectsV2", "ListObjects", "HeadBucket", "GetObject", "HeadObject"},
         "anon": {"ListObjectsV2", "ListObjects", "HeadBucket", "GetObject", "HeadObject"}}),
    "public-read-write ACLs, policy denies the other account": (
        lambda o, b: (o.put_bucket_acl(Bucket=b, ACL="public-read-write"),
                      o.put_object_acl(Bucket=b, Key=OBJ, ACL="public-read"),
                      o.put_bucket_policy(Bucket=b, Policy=_policy(b, "Deny", {"AWS": OTHER_ACCOUNT}, "s3:*"))),
        {"other": set(), "anon": LIST | READ | WRITE | COPY}),
    "policy denies writes to everyone, owner included": (
        lambda o, b: o.put_bucket_policy(Bucket=b, Policy=_policy(b, "Deny", "*", ["s3:PutObject",
                                                                                 "s3:DeleteObject"])),
        {"owner": EVERYTHING - {"PutObject", "DeleteObject", "DeleteObjects", "MultipartUpload", "CopyObject"},
         "other": set(), "anon": set()}),
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_authorization_matrix(file_gateway, bucket_name, setup):
    owner = make_client(file_gateway.url)
    clients = {"owner": owner, "other": make_client(file_gateway.url, ACCESS_KEY2, SECRET_KEY2),
               "anon": make_client(file_gateway.url, signature_version=UNSIGNED)}
    owner.create_bucket(Bucket=bucket_name)
    owner.put_object(Bucket=bucket_name, Key=OBJ, Body=b"object")
    _bucket_tagging_missing_is_allowed(owner, bucket_name)
    prepare, expected = SETUPS[setup]
    expected = {"owner": EVERYTHING, **expected}
    actions = _actions(owner, bucket_name, len(clients))
    prepare(owner, bucket_name)
    wrong = []
    for principal, client in clients.items():
        for name, call in actions.items():
            got = call(client)
            want = name in expected[principal]
            if got != want:
                wrong.append(f"{principal} {name}: {'allowed' if got else 'denied'}, expected "
                             f"{'allowed' if want else 'denied'}")
    assert not wrong, "\n".join(wrong)


def test_copy_needs_read_on_source_and_write_on_target(file_gateway, bucket_name):
    owner = make_client(file_gateway.url)
    other = make_client(file_gateway.url, ACCESS_KEY2, SECRET_KEY2)
    src, dst = bucket_name + "-src", bucket_name + "-dst"
    owner.create_bucket(Bucket=src)
    owner.put_object(Bucket=src, Key="s", Body=b"source")
    other.create_bucket(Bucket=dst)

    def copy() -> bool:
        return _expect_denied(lambda: other.copy_object(Bucket=dst, Key="c", CopySource={"Bucket": src, "Key": "s"}))
    assert not copy()                                      # no read on the source
    owner.put_object_acl(Bucket=src, Key="s", GrantRead=f'id="{OTHER_ID}"')
    assert copy()
    assert other.get_object(Bucket=dst, Key="c")["Body"].read() == b"source"
    # and the other way round: the owner may read its source but not write the other's bucket
    assert not _expect_denied(lambda: owner.copy_object(Bucket=dst, Key="c2", CopySource={"Bucket": src, "Key": "s"}))
    # UploadPartCopy follows the same rule
    up = other.create_multipart_upload(Bucket=dst, Key="mpc")
    other.upload_part_copy(Bucket=dst, Key="mpc", UploadId=up["UploadId"], PartNumber=1,
                           CopySource={"Bucket": src, "Key": "s"})
    owner.put_object(Bucket=src, Key="hidden", Body=b"h")
    with pytest.raises(ClientError) as exc:
        other.upload_part_copy(Bucket=dst, Key="mpc", UploadId=up["UploadId"], PartNumber=2,
                               CopySource={"Bucket": src, "Key": "hidden"})
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    # a missing source is AccessDenied to who may not list the source bucket
    with pytest.raises(ClientError) as exc:
        other.copy_object(Bucket=dst, Key="c3", CopySource={"Bucket": src, "Key": "missing"})
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
