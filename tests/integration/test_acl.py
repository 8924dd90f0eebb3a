"""ACLs through real clients (boto3 with two accounts, unsigned requests, aws-cli, s3cmd) against the
real dmd + gateway: canned ACLs and grant headers on every write that takes them, the
AccessControlPolicy documents of Get/PutBucketAcl and Get/PutObjectAcl, AWS's errors, and what the
grants then allow (docs/authorization.md)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import BIN, OTHER_EMAIL, OTHER_ID, OWNER_ID, run

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"


@pytest.fixture
def bkt(owner, bucket_name):
    owner.create_bucket(Bucket=bucket_name)
    return bucket_name


def code_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def grants_of(resp) -> set[tuple[str, str, str]]:
    """{(type, id-or-uri, permission)} of a GetBucketAcl / GetObjectAcl answer."""
    out = set()
    for g in resp["Grants"]:
        grantee = g["Grantee"]
        out.add((grantee["Type"], grantee.get("ID") or grantee.get("URI"), g["Permission"]))
    return out


# ---------------------------------------------------------------- documents

def test_default_bucket_acl_is_owner_full_control(owner, bkt):
    resp = owner.get_bucket_acl(Bucket=bkt)
    assert resp["Owner"] == {"ID": OWNER_ID, "DisplayName": "Bart"}
    assert grants_of(resp) == {("CanonicalUser", OWNER_ID, "FULL_CONTROL")}
    assert resp["Grants"][0]["Grantee"]["DisplayName"] == "Bart"


@pytest.mark.parametrize("canned, expected", [
    ("private", set()),
    ("public-read", {("Group", ALL_USERS, "READ")}),
    ("public-read-write", {("Group", ALL_USERS, "READ"), ("Group", ALL_USERS, "WRITE")}),
    ("authenticated-read", {("Group", AUTH_USERS, "READ")}),
    ("log-delivery-write", {("Group", LOG_DELIVERY, "WRITE"), ("Group", LOG_DELIVERY, "READ_ACP")}),
])
def test_canned_bucket_acls(owner, bucket_name, canned, expected):
    owner.create_bucket(Bucket=bucket_name, ACL=canned)
    assert grants_of(owner.get_bucket_acl(Bucket=bucket_name)) == {("CanonicalUser", OWNER_ID, "FULL_CONTROL")} | expected
    owner.put_bucket_acl(Bucket=bucket_name, ACL="private")
    assert grants_of(owner.get_bucket_acl(Bucket=bucket_name)) == {("CanonicalUser", OWNER_ID, "FULL_CONTROL")}


def test_object_canned_acls_including_bucket_owner_ones(owner, other, bkt):
    owner.put_bucket_acl(Bucket=bkt, ACL="public-read-write")
    other.put_object(Bucket=bkt, Key="a", Body=b"x", ACL="bucket-owner-read")
    resp = other.get_object_acl(Bucket=bkt, Key="a")
    assert resp["Owner"]["ID"] == OTHER_ID
    assert grants_of(resp) == {("CanonicalUser", OTHER_ID, "FULL_CONTROL"), ("CanonicalUser", OWNER_ID, "READ")}
    other.put_object(Bucket=bkt, Key="b", Body=b"x", ACL="bucket-owner-full-control")
    assert grants_of(other.get_object_acl(Bucket=bkt, Key="b")) == {
        ("CanonicalUser", OTHER_ID, "FULL_CONTROL"), ("CanonicalUser", OWNER_ID, "FULL_CONTROL")}
    # bucket-owner-read lets the bucket owner read an object it does not own, private does not
    assert owner.get_object(Bucket=bkt, Key="a")["Body"].read() == b"x"
    other.put_object(Bucket=bkt, Key="c", Body=b"x")
    with pytest.raises(ClientError) as exc:
        owner.get_object(Bucket=bkt, Key="c")
    assert code_of(exc) == "AccessDenied"
    # ...but it may delete it (the bucket owner's implicit right)
    owner.delete_object(Bucket=bkt, Key="c")


def test_grant_headers_with_id_email_and_uri(owner, other, bkt):
    owner.put_bucket_acl(Bucket=bkt, GrantRead=f'id="{OTHER_ID}"',
                         GrantWrite=f'emailAddress="{OTHER_EMAIL}"',
                         GrantReadACP=f'uri="{ALL_USERS}"', GrantFullControl=f'id="{OWNER_ID}"')
    assert grants_of(owner.get_bucket_acl(Bucket=bkt)) == {
        ("CanonicalUser", OTHER_ID, "READ"), ("CanonicalUser", OTHER_ID, "WRITE"),
        ("Group", ALL_USERS, "READ_ACP"), ("CanonicalUser", OWNER_ID, "FULL_CONTROL")}
    # READ lets the other account list, WRITE put, READ_ACP (to everyone) read the ACL
    other.put_object(Bucket=bkt, Key="k", Body=b"1")
    assert [o["Key"] for o in other.list_objects_v2(Bucket=bkt)["Contents"]] == ["k"]
    other.get_bucket_acl(Bucket=bkt)
    with pytest.raises(ClientError) as exc:   # no WRITE_ACP
        other.put_bucket_acl(Bucket=bkt, ACL="public-read")
    assert code_of(exc) == "AccessDenied"


def test_put_bucket_acl_document_round_trip(owner, other, bkt):
    policy = {"Owner": {"ID": OWNER_ID}, "Grants": [
        {"Grantee": {"Type": "CanonicalUser", "ID": OWNER_ID}, "Permission": "FULL_CONTROL"},
        {"Grantee": {"Type": "AmazonCustomerByEmail", "EmailAddress": OTHER_EMAIL}, "Permission": "READ"},
        {"Grantee": {"Type": "Group", "URI": AUTH_USERS}, "Permission": "READ_ACP"}]}
    owner.put_bucket_acl(Bucket=bkt, AccessControlPolicy=policy)
    # the email grantee comes back as the canonical user it names
    assert grants_of(owner.get_bucket_acl(Bucket=bkt)) == {
        ("CanonicalUser", OWNER_ID, "FULL_CONTROL"), ("CanonicalUser", OTHER_ID, "READ"),
        ("Group", AUTH_USERS, "READ_ACP")}
    other.list_objects(Bucket=bkt)


def test_acl_xml_shape_on_the_wire(file_gateway, owner, bkt):
    owner.put_bucket_acl(Bucket=bkt, ACL="public-read")
    url = owner.generate_presigned_url("get_bucket_acl", Params={"Bucket": bkt})
    body = httpx.get(url).text
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' in body
    assert ('<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group">'
            f"<URI>{ALL_USERS}</URI></Grantee><Permission>READ</Permission>") in body
    assert 'xsi:type="CanonicalUser"><ID>' + OWNER_ID + "</ID><DisplayName>Bart</DisplayName>" in body


# ---------------------------------------------------------------- errors

def test_canned_and_grant_headers_together_is_invalid_request(owner, bkt, bucket_name):
    with pytest.raises(ClientError) as exc:
        owner.put_bucket_acl(Bucket=bkt, ACL="public-read", GrantRead=f'id="{OTHER_ID}"')
    assert code_of(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        owner.put_object(Bucket=bkt, Key="k", Body=b"", ACL="public-read", GrantRead=f'id="{OTHER_ID}"')
    assert code_of(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        owner.create_bucket(Bucket=bucket_name + "x", ACL="private", GrantRead=f'id="{OTHER_ID}"')
    assert code_of(exc) == "InvalidRequest"


def test_acl_errors(owner, bkt):
    cases = [
        (dict(ACL="not-a-canned-acl"), "InvalidArgument"),
        (dict(GrantRead='emailAddress="nobody@example.com"'), "UnresolvableGrantByEmailAddress"),
        (dict(GrantRead='id="0123456789abcdef"'), "InvalidArgument"),
        (dict(GrantRead='uri="http://acs.amazonaws.com/groups/global/Nobody"'), "InvalidArgument"),
        (dict(GrantRead='nonsense'), "InvalidArgument"),
        (dict(AccessControlPolicy={"Owner": {"ID": OTHER_ID}, "Grants": []}), "AccessDenied"),
        (dict(AccessControlPolicy={"Owner": {"ID": OWNER_ID}, "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": OWNER_ID}, "Permission": "EVERYTHING"}]}),
         "MalformedACLError"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ClientError) as exc:
            owner.put_bucket_acl(Bucket=bkt, **kwargs)
        assert code_of(exc) == expected, kwargs
    # nothing changed
    assert grants_of(owner.get_bucket_acl(Bucket=bkt)) == {("CanonicalUser", OWNER_ID, "FULL_CONTROL")}


def test_malformed_acl_documents(file_gateway, owner, bkt):
    bodies = [b"<AccessControlPolicy><Owner><ID>" + OWNER_ID.encode(),
              b"<Nope/>",
              b"<AccessControlPolicy><AccessControlList/></AccessControlPolicy>",
              b"<AccessControlPolicy><Owner><ID>" + OWNER_ID.encode() + b"</ID></Owner><AccessControlList><Grant>"
              b"<Grantee><ID>x</ID></Grantee><Permission>READ</Permission></Grant></AccessControlList>"
              b"</AccessControlPolicy>"]
    for body in bodies:
        url = owner.generate_presigned_url("put_bucket_acl", Params={"Bucket": bkt})
        resp = httpx.put(url, content=body)
        assert resp.status_code == 400 and b"<Code>MalformedACLError</Code>" in resp.content, body


def test_object_acl_by_version_id(owner, anon, bkt):
    owner.put_bucket_versioning(Bucket=bkt, VersioningConfiguration={"Status": "Enabled"})
    v1 = owner.put_object(Bucket=bkt, Key="k", Body=b"one")["VersionId"]
    v2 = owner.put_object(Bucket=bkt, Key="k", Body=b"two")["VersionId"]
    owner.put_object_acl(Bucket=bkt, Key="k", VersionId=v1, ACL="public-read")
    assert ("Group", ALL_USERS, "READ") in grants_of(owner.get_object_acl(Bucket=bkt, Key="k", VersionId=v1))
    assert grants_of(owner.get_object_acl(Bucket=bkt, Key="k", VersionId=v2)) == {
        ("CanonicalUser", OWNER_ID, "FULL_CONTROL")}
    assert anon.get_object(Bucket=bkt, Key="k", VersionId=v1)["Body"].read() == b"one"
    with pytest.raises(ClientError) as exc:
        anon.get_object(Bucket=bkt, Key="k")
    assert code_of(exc) == "AccessDenied"


def test_acl_of_missing_object(owner, other, bkt):
    with pytest.raises(ClientError) as exc:
        owner.get_object_acl(Bucket=bkt, Key="missing")
    assert code_of(exc) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:   # who cannot list does not learn it is missing
        other.get_object_acl(Bucket=bkt, Key="missing")
    assert code_of(exc) == "AccessDenied"


# ---------------------------------------------------------------- writes that take an ACL

def test_multipart_acl_applies_to_completed_object(owner, anon, bkt):
    up = owner.create_multipart_upload(Bucket=bkt, Key="mp", ACL="public-read")
    part = owner.upload_part(Bucket=bkt, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"m" * 100)
    owner.complete_multipart_upload(Bucket=bkt, Key="mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert ("Group", ALL_USERS, "READ") in grants_of(owner.get_object_acl(Bucket=bkt, Key="mp"))
    assert anon.get_object(Bucket=bkt, Key="mp")["Body"].read() == b"m" * 100


def test_copy_takes_the_requests_acl_not_the_sources(owner, anon, bkt):
    owner.put_object(Bucket=bkt, Key="src", Body=b"s", ACL="public-read")
    owner.copy_object(Bucket=bkt, Key="plain", CopySource={"Bucket": bkt, "Key": "src"})
    owner.copy_object(Bucket=bkt, Key="pub", CopySource={"Bucket": bkt, "Key": "src"}, ACL="public-read")
    assert grants_of(owner.get_object_acl(Bucket=bkt, Key="plain")) == {("CanonicalUser", OWNER_ID, "FULL_CONTROL")}
    assert anon.get_object(Bucket=bkt, Key="pub")["Body"].read() == b"s"
    with pytest.raises(ClientError):
        anon.get_object(Bucket=bkt, Key="plain")


def test_object_writer_owns_and_bucket_owner_deletes(owner, other, bkt):
    owner.put_bucket_acl(Bucket=bkt, GrantWrite=f'id="{OTHER_ID}"', GrantFullControl=f'id="{OWNER_ID}"')
    other.put_object(Bucket=bkt, Key="theirs", Body=b"t")
    listed = owner.list_objects_v2(Bucket=bkt, FetchOwner=True)["Contents"]
    assert listed[0]["Owner"]["ID"] == OTHER_ID
    with pytest.raises(ClientError):
        owner.get_object(Bucket=bkt, Key="theirs")
    other.put_object_acl(Bucket=bkt, Key="theirs", GrantRead=f'id="{OWNER_ID}"')
    assert owner.get_object(Bucket=bkt, Key="theirs")["Body"].read() == b"t"
    owner.delete_object(Bucket=bkt, Key="theirs")
    assert "Contents" not in owner.list_objects_v2(Bucket=bkt)


# ---------------------------------------------------------------- clients

def test_aws_cli_put_and_get_bucket_acl(aws, owner, bkt):
    aws("s3api", "put-bucket-acl", "--bucket", bkt, "--grant-read", f"uri={ALL_USERS}",
        "--grant-full-control", f"id={OWNER_ID}")
    out = aws("s3api", "get-bucket-acl", "--bucket", bkt)
    assert ALL_USERS in out and '"Permission": "READ"' in out
    aws("s3api", "put-bucket-acl", "--bucket", bkt, "--acl", "private")
    assert ALL_USERS not in aws("s3api", "get-bucket-acl", "--bucket", bkt)


def _s3cmd(file_gateway, tmp_path: Path):
    host = file_gateway.url.split("://", 1)[1]
    cfg = tmp_path / "s3cfg"
    cfg.write_text("[default]\naccess_key = accessKey1\nsecret_key = verySecretKey1\n"
                   f"host_base = {host}\nhost_bucket = {host}\nuse_https = False\nsignature_v2 = False\n")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}

    def s3cmd(*args: str) -> str:
        return run([str(BIN / "s3cmd"), "-c", str(cfg), *args], env, tmp_path)
    return s3cmd


def test_s3cmd_setacl_public_then_private(file_gateway, owner, bkt, tmp_path):
    if not (BIN / "s3cmd").exists():
        pytest.skip("s3cmd not installed")
    s3cmd = _s3cmd(file_gateway, tmp_path)
    owner.put_object(Bucket=bkt, Key="file.txt", Body=b"hello")
    url = f"{file_gateway.url}/{bkt}/file.txt"
    assert httpx.get(url).status_code == 403
    s3cmd("setacl", "--acl-public", f"s3://{bkt}/file.txt")
    got = httpx.get(url)
    assert got.status_code == 200 and got.content == b"hello"
    info = s3cmd("info", f"s3://{bkt}/file.txt")
    assert "*anon*: READ" in info
    s3cmd("setacl", "--acl-private", f"s3://{bkt}/file.txt")
    assert httpx.get(url).status_code == 403
    assert "*anon*" not in s3cmd("info", f"s3://{bkt}/file.txt")


def test_unknown_bucket_acl_names_no_such_bucket(owner):
    with pytest.raises(ClientError) as exc:
        owner.get_bucket_acl(Bucket=f"nope-{uuid.uuid4().hex[:12]}")
    assert code_of(exc) == "NoSuchBucket"
