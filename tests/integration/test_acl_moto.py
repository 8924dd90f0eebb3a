"""Differential runs against moto (in-process mock_aws) for what moto models of ACLs and bucket
policies: the grants of canned ACLs and grant headers as GetBucketAcl / GetObjectAcl return them
(owner ids normalised), and the status/code of ACL and policy errors.

Where moto's answer is not AWS's the scenario says so (MOTO_DIFFERS) and asserts AWS's answer for us."""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tests.integration.conftest import make_client

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


def _normalised(resp: dict[str, Any], owner_id: str) -> list[tuple[str, str, str]]:
    out = []
    for g in resp["Grants"]:
        grantee = g["Grantee"]
        who = grantee.get("URI") or ("OWNER" if grantee.get("ID") == owner_id else grantee.get("ID"))
        out.append((grantee["Type"], who, g["Permission"]))
    return sorted(out)


def _outcome(fn: Callable[[], object]) -> tuple[int, str | None]:
    try:
        resp = fn()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    return resp["ResponseMetadata"]["HTTPStatusCode"], None  # type: ignore[index]


def _owner_id(s3, bucket: str) -> str:
    return s3.get_bucket_acl(Bucket=bucket)["Owner"]["ID"]


# name -> scenario(s3, bucket) -> comparable value
SHAPES: dict[str, Callable[[Any, str], object]] = {
    **{f"bucket_canned_{c}": (lambda c: lambda s3, b: (s3.put_bucket_acl(Bucket=b, ACL=c),
                                                      _normalised(s3.get_bucket_acl(Bucket=b), _owner_id(s3, b)))[1])(c)
       for c in ("private", "public-read", "public-read-write", "authenticated-read")},
    **{f"object_canned_{c}": (lambda c: lambda s3, b: (s3.put_object(Bucket=b, Key="k", Body=b"", ACL=c),
                                                      _normalised(s3.get_object_acl(Bucket=b, Key="k"),
                                                                  _owner_id(s3, b)))[1])(c)
       for c in ("private", "public-read", "public-read-write", "authenticated-read")},
    "bucket_grant_uri_headers": lambda s3, b: (
        s3.put_bucket_acl(Bucket=b, GrantRead=f'uri="{ALL_USERS}"', GrantWrite=f'uri="{AUTH_USERS}"'),
        _normalised(s3.get_bucket_acl(Bucket=b), _owner_id(s3, b)))[1],
    "bucket_acl_document": lambda s3, b: (
        s3.put_bucket_acl(Bucket=b, AccessControlPolicy={
            "Owner": {"ID": _owner_id(s3, b)},
            "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": _owner_id(s3, b)}, "Permission": "FULL_CONTROL"},
                       {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}),
        _normalised(s3.get_bucket_acl(Bucket=b), _owner_id(s3, b)))[1],
    "get_acl_missing_key": lambda s3, b: _outcome(lambda: s3.get_object_acl(Bucket=b, Key="missing")),
    "get_acl_missing_bucket": lambda s3, b: _outcome(lambda: s3.get_bucket_acl(Bucket=b + "-nope")),
    "put_acl_bad_canned": lambda s3, b: _outcome(lambda: s3.put_bucket_acl(Bucket=b, ACL="nonsense")),
    "get_policy_none": lambda s3, b: _outcome(lambda: s3.get_bucket_policy(Bucket=b)),
    "put_policy_not_json": lambda s3, b: _outcome(lambda: s3.put_bucket_policy(Bucket=b, Policy="not json")),
    "put_policy_ok": lambda s3, b: _outcome(lambda: s3.put_bucket_policy(Bucket=b, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                "Resource": f"arn:aws:s3:::{b}/*"}]}))),
    "policy_round_trip": lambda s3, b: (
        s3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "s", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{b}/*"}]})),
        json.loads(s3.get_bucket_policy(Bucket=b)["Policy"])["Statement"][0]["Sid"])[1],
    "delete_policy_none": lambda s3, b: _outcome(lambda: s3.delete_bucket_policy(Bucket=b)),
    "get_public_access_block_none": lambda s3, b: _outcome(lambda: s3.get_public_access_block(Bucket=b)),
    "public_access_block_round_trip": lambda s3, b: (
        s3.put_public_access_block(Bucket=b, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": False}),
        s3.get_public_access_block(Bucket=b)["PublicAccessBlockConfiguration"])[1],
    "get_ownership_controls_none": lambda s3, b: _outcome(lambda: s3.get_bucket_ownership_controls(Bucket=b)),
    "ownership_controls_round_trip": lambda s3, b: (
        s3.put_bucket_ownership_controls(Bucket=b, OwnershipControls={"Rules": [
            {"ObjectOwnership": "BucketOwnerPreferred"}]}),
        s3.get_bucket_ownership_controls(Bucket=b)["OwnershipControls"])[1],
}

# scenario -> (AWS's answer we assert for us, why moto differs)
MOTO_DIFFERS: dict[str, tuple[object, str]] = {
    "put_policy_ok": ((204, None), "AWS answers PutBucketPolicy with 204 No Content, moto with 200"),
    "put_policy_not_json": ((400, "MalformedPolicy"), "moto stores any text as a policy"),
    "put_acl_bad_canned": ((400, "InvalidArgument"), "moto fails on an unknown canned ACL"),
    **{f"{kind}_canned_public-read-write": (
        sorted([("CanonicalUser", "OWNER", "FULL_CONTROL"), ("Group", ALL_USERS, "READ"), ("Group", ALL_USERS, "WRITE")]),
        "AWS: public-read-write gives AllUsers READ and WRITE; moto lists READ only") for kind in ("bucket", "object")},
}


@pytest.fixture(scope="module")
def moto_results() -> dict[str, object]:
    results: dict[str, object] = {}
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        for name, scenario in SHAPES.items():
            bucket = f"diff-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            try:
                results[name] = scenario(s3, bucket)
            except Exception as exc:  # moto itself fails on some inputs; MOTO_DIFFERS names them
                results[name] = f"moto raised {type(exc).__name__}: {exc}"
    return results


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_same_as_moto(name, file_gateway, moto_results):
    s3 = make_client(file_gateway.url)
    bucket = f"diff-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    ours = SHAPES[name](s3, bucket)
    if name in MOTO_DIFFERS:
        aws, _why = MOTO_DIFFERS[name]
        assert ours == aws
        assert moto_results[name] != aws, f"moto now agrees with AWS on {name}: drop it from MOTO_DIFFERS"
    else:
        assert ours == moto_results[name]
