"""Bucket policies wired into authorization (the engine itself: tests/unit for gateway/policy.py):
Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus, explicit Deny over ACL grants, Allow for other
accounts and anonymous, the owner's unlosable policy rights, and condition keys built from the
request (docs/authorization.md#condition-keys)."""
from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, OTHER_ACCOUNT, OTHER_ID



@pytest.fixture
def bkt(owner, bucket_name):
    owner.create_bucket(Bucket=bucket_name)
    owner.put_object(Bucket=bucket_name, Key="docs/a.txt", Body=b"a")
    owner.put_object(Bucket=bucket_name, Key="private/b.txt", Body=b"b")
    return bucket_name


def code_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def stmt(effect: str, principal, action, resource, condition: dict | None = None) -> dict:
    s = {"Effect": effect, "Principal": principal, "Action": action, "Resource": resource}
    if condition:
        s["Condition"] = condition
    return s


def denied(fn, *args, **kwargs) -> None:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kwargs)
    assert code_of(exc) == "AccessDenied", exc.value.response


def test_put_get_delete_policy_and_status(owner, bkt):
    with pytest.raises(ClientError) as exc:
        owner.get_bucket_policy(Bucket=bkt)
    assert code_of(exc) == "NoSuchBucketPolicy"
    with pytest.raises(ClientError) as exc:
        owner.get_bucket_policy_status(Bucket=bkt)
    assert code_of(exc) == "NoSuchBucketPolicy"
    text = policy(stmt("Allow", {"AWS": OTHER_ACCOUNT}, "s3:GetObject", f"arn:aws:s3:::{bkt}/*"))
    owner.put_bucket_policy(Bucket=bkt, Policy=text)
    assert json.loads(owner.get_bucket_policy(Bucket=bkt)["Policy"]) == json.loads(text)
    assert owner.get_bucket_policy_status(Bucket=bkt)["PolicyStatus"]["IsPublic"] is False
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*")))
    assert owner.get_bucket_policy_status(Bucket=bkt)["PolicyStatus"]["IsPublic"] is True
    owner.delete_bucket_policy(Bucket=bkt)
    with pytest.raises(ClientError) as exc:
        owner.get_bucket_policy(Bucket=bkt)
    assert code_of(exc) == "NoSuchBucketPolicy"


@pytest.mark.parametrize("text", [
    "not json",
    json.dumps({"Version": "2012-10-17"}),
    policy(stmt("Allow", "*", "s3:GetObject", "arn:aws:s3:::some-other-bucket/*")),
    policy(stmt("Maybe", "*", "s3:GetObject", "arn:aws:s3:::BUCKET/*")),
    policy(stmt("Allow", "*", "s3:NoSuchAction", "arn:aws:s3:::BUCKET/*")),
    policy(stmt("Allow", "*", "s3:GetObject", "arn:aws:s3:::BUCKET/*", {"NoSuchOperator": {"aws:SourceIp": "1"}})),
])
def test_malformed_policies(owner, bkt, text):
    with pytest.raises(ClientError) as exc:
        owner.put_bucket_policy(Bucket=bkt, Policy=text.replace("BUCKET", bkt))
    assert code_of(exc) == "MalformedPolicy"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_allow_for_another_account_and_deny_over_acl(owner, other, bkt):
    denied(other.get_object, Bucket=bkt, Key="docs/a.txt")
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(
        stmt("Allow", {"AWS": f"arn:aws:iam::{OTHER_ACCOUNT}:root"}, ["s3:GetObject", "s3:ListBucket"],
             [f"arn:aws:s3:::{bkt}", f"arn:aws:s3:::{bkt}/*"]),
        stmt("Deny", {"AWS": OTHER_ACCOUNT}, "s3:GetObject", f"arn:aws:s3:::{bkt}/private/*")))
    assert other.get_object(Bucket=bkt, Key="docs/a.txt")["Body"].read() == b"a"
    assert len(other.list_objects_v2(Bucket=bkt)["Contents"]) == 2
    denied(other.get_object, Bucket=bkt, Key="private/b.txt")
    # an ACL grant does not beat an explicit Deny
    owner.put_object_acl(Bucket=bkt, Key="private/b.txt", GrantRead=f'id="{OTHER_ID}"')
    denied(other.get_object, Bucket=bkt, Key="private/b.txt")
    # the policy allowed only reads
    denied(other.put_object, Bucket=bkt, Key="docs/new", Body=b"")
    denied(other.delete_object, Bucket=bkt, Key="docs/a.txt")


def test_deny_applies_to_the_owner_but_never_locks_the_policy(owner, bkt):
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Deny", "*", "s3:*", [f"arn:aws:s3:::{bkt}",
                                                                             f"arn:aws:s3:::{bkt}/*"])))
    denied(owner.get_object, Bucket=bkt, Key="docs/a.txt")
    denied(owner.put_object, Bucket=bkt, Key="x", Body=b"")
    denied(owner.list_objects_v2, Bucket=bkt)
    # the owner can still read, replace and delete the policy
    assert "Deny" in owner.get_bucket_policy(Bucket=bkt)["Policy"]
    owner.delete_bucket_policy(Bucket=bkt)
    assert owner.get_object(Bucket=bkt, Key="docs/a.txt")["Body"].read() == b"a"


def test_public_policy_lets_anonymous_read_with_plain_http(file_gateway, owner, anon, bkt):
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/docs/*")))
    assert httpx.get(f"{file_gateway.url}/{bkt}/docs/a.txt").content == b"a"
    assert httpx.get(f"{file_gateway.url}/{bkt}/private/b.txt").status_code == 403
    assert anon.get_object(Bucket=bkt, Key="docs/a.txt")["Body"].read() == b"a"
    denied(anon.list_objects_v2, Bucket=bkt)


def test_condition_source_ip_and_secure_transport(file_gateway, owner, bkt):
    url = f"{file_gateway.url}/{bkt}/docs/a.txt"
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
                                                           {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})))
    assert httpx.get(url).status_code == 403        # we come from 127.0.0.1
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
                                                           {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}})))
    assert httpx.get(url).status_code == 200
    # deny plain HTTP: even the owner is refused
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt("Deny", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
                                                           {"Bool": {"aws:SecureTransport": "false"}})))
    denied(owner.get_object, Bucket=bkt, Key="docs/a.txt")


def test_condition_prefix_on_listing(owner, other, bkt):
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt(
        "Allow", {"AWS": OTHER_ACCOUNT}, "s3:ListBucket", f"arn:aws:s3:::{bkt}",
        {"StringLike": {"s3:prefix": "docs/*"}})))
    assert [o["Key"] for o in other.list_objects_v2(Bucket=bkt, Prefix="docs/")["Contents"]] == ["docs/a.txt"]
    denied(other.list_objects_v2, Bucket=bkt, Prefix="private/")
    denied(other.list_objects_v2, Bucket=bkt)


def test_condition_object_tags_and_canned_acl(owner, other, bkt):
    owner.put_object(Bucket=bkt, Key="tagged", Body=b"t", Tagging="team=blue")
    owner.put_object(Bucket=bkt, Key="untagged", Body=b"u")
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(
        stmt("Allow", {"AWS": OTHER_ACCOUNT}, "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
             {"StringEquals": {"s3:ExistingObjectTag/team": "blue"}}),
        stmt("Allow", {"AWS": OTHER_ACCOUNT}, "s3:PutObject", f"arn:aws:s3:::{bkt}/*",
             {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control",
                               "s3:RequestObjectTag/team": "blue"}})))
    assert other.get_object(Bucket=bkt, Key="tagged")["Body"].read() == b"t"
    denied(other.get_object, Bucket=bkt, Key="untagged")
    denied(other.put_object, Bucket=bkt, Key="up", Body=b"x")
    denied(other.put_object, Bucket=bkt, Key="up", Body=b"x", ACL="bucket-owner-full-control")
    other.put_object(Bucket=bkt, Key="up", Body=b"x", ACL="bucket-owner-full-control", Tagging="team=blue")
    assert owner.get_object(Bucket=bkt, Key="up")["Body"].read() == b"x"


def test_condition_signature_version_and_auth_type(file_gateway, owner, bkt):
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt(
        "Deny", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
        {"StringEquals": {"s3:authType": "REST-QUERY-STRING"}})))
    owner.get_object(Bucket=bkt, Key="docs/a.txt")   # header-signed: allowed
    url = owner.generate_presigned_url("get_object", Params={"Bucket": bkt, "Key": "docs/a.txt"})
    assert httpx.get(url).status_code == 403
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt(
        "Deny", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/*",
        {"StringNotEquals": {"s3:signatureversion": "AWS4-HMAC-SHA256"}})))
    owner.get_object(Bucket=bkt, Key="docs/a.txt")
    v2 = make_client(file_gateway.url, signature_version="s3")
    denied(v2.get_object, Bucket=bkt, Key="docs/a.txt")


def test_delete_objects_reports_per_key_access_denied(owner, other, bkt):
    owner.put_bucket_policy(Bucket=bkt, Policy=policy(stmt(
        "Allow", {"AWS": OTHER_ACCOUNT}, "s3:DeleteObject", f"arn:aws:s3:::{bkt}/docs/*")))
    resp = other.delete_objects(Bucket=bkt, Delete={"Objects": [{"Key": "docs/a.txt"}, {"Key": "private/b.txt"}]})
    assert [d["Key"] for d in resp["Deleted"]] == ["docs/a.txt"]
    assert [(e["Key"], e["Code"]) for e in resp["Errors"]] == [("private/b.txt", "AccessDenied")]
    assert [o["Key"] for o in owner.list_objects_v2(Bucket=bkt)["Contents"]] == ["private/b.txt"]


def test_policy_actions_are_the_owners(owner, other, bkt):
    text = policy(stmt("Allow", {"AWS": OTHER_ACCOUNT}, "s3:GetObject", f"arn:aws:s3:::{bkt}/*"))
    denied(other.put_bucket_policy, Bucket=bkt, Policy=text)
    owner.put_bucket_policy(Bucket=bkt, Policy=text)
    denied(other.get_bucket_policy, Bucket=bkt)
    denied(other.delete_bucket_policy, Bucket=bkt)


def test_aws_cli_put_bucket_policy(aws, owner, anon, bkt):
    text = policy(stmt("Allow", "*", "s3:GetObject", f"arn:aws:s3:::{bkt}/docs/*"))
    aws("s3api", "put-bucket-policy", "--bucket", bkt, "--policy", text)
    out = json.loads(aws("s3api", "get-bucket-policy", "--bucket", bkt))
    assert json.loads(out["Policy"]) == json.loads(text)
    assert anon.get_object(Bucket=bkt, Key="docs/a.txt")["Body"].read() == b"a"
