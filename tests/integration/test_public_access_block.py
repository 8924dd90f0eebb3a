"""Block Public Access and Object Ownership per bucket, and the `bucketDefaults` switch of
config.json (docs/authorization.md#defaults), against real gateways."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from shared.config import REPO_ROOT
from tests.integration.conftest import make_client, OTHER_ACCOUNT, OTHER_ID, OWNER_ID
from tests.procs import Gateway, start_gateway

ALL_ON = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
ALL_OFF = dict.fromkeys(ALL_ON, False)


@pytest.fixture
def bkt(owner, bucket_name):
    owner.create_bucket(Bucket=bucket_name)
    return bucket_name


def code_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def fails(code: str, fn, *args, **kwargs) -> None:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kwargs)
    assert code_of(exc) == code, exc.value.response


def public_policy(bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]})


# ---------------------------------------------------------------- Block Public Access

def test_put_get_delete_public_access_block(owner, other, bkt):
    fails("NoSuchPublicAccessBlockConfiguration", owner.get_public_access_block, Bucket=bkt)
    owner.put_public_access_block(Bucket=bkt, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    assert owner.get_public_access_block(Bucket=bkt)["PublicAccessBlockConfiguration"] == {
        **ALL_OFF, "BlockPublicAcls": True}
    fails("AccessDenied", other.get_public_access_block, Bucket=bkt)
    fails("AccessDenied", other.put_public_access_block, Bucket=bkt, PublicAccessBlockConfiguration=ALL_OFF)
    owner.delete_public_access_block(Bucket=bkt)
    fails("NoSuchPublicAccessBlockConfiguration", owner.get_public_access_block, Bucket=bkt)


def test_malformed_public_access_block(file_gateway, owner, bkt):
    url = owner.generate_presigned_url("put_public_access_block", Params={
        "Bucket": bkt, "PublicAccessBlockConfiguration": ALL_OFF})
    for body in (b"<PublicAccessBlockConfiguration><BlockPublicAcls>maybe</BlockPublicAcls>"
                 b"</PublicAccessBlockConfiguration>", b"<Other/>", b"<unclosed"):
        resp = httpx.put(url, content=body)
        assert resp.status_code == 400 and b"MalformedXML" in resp.content, body


def test_block_public_acls_rejects_public_acls(owner, bkt):
    owner.put_public_access_block(Bucket=bkt, PublicAccessBlockConfiguration={"BlockPublicAcls": True})
    fails("AccessDenied", owner.put_bucket_acl, Bucket=bkt, ACL="public-read")
    fails("AccessDenied", owner.put_bucket_acl, Bucket=bkt,
          GrantRead='uri="http://acs.amazonaws.com/groups/global/AuthenticatedUsers"')
    fails("AccessDenied", owner.put_object, Bucket=bkt, Key="k", Body=b"", ACL="public-read")
    owner.put_object(Bucket=bkt, Key="k", Body=b"")
    fails("AccessDenied", owner.put_object_acl, Bucket=bkt, Key="k", ACL="public-read-write")
    fails("AccessDenied", owner.create_multipart_upload, Bucket=bkt, Key="m", ACL="authenticated-read")
    owner.put_bucket_acl(Bucket=bkt, GrantRead=f'id="{OTHER_ID}"')   # not public: fine


def test_ignore_public_acls(file_gateway, owner, bkt):
    owner.put_object(Bucket=bkt, Key="pub", Body=b"p", ACL="public-read")
    url = f"{file_gateway.url}/{bkt}/pub"
    assert httpx.get(url).status_code == 200
    owner.put_public_access_block(Bucket=bkt, PublicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert httpx.get(url).status_code == 403
    owner.delete_public_access_block(Bucket=bkt)
    assert httpx.get(url).status_code == 200


def test_block_public_policy_and_restrict_public_buckets(file_gateway, owner, other, bkt):
    owner.put_object(Bucket=bkt, Key="k", Body=b"v")
    owner.put_public_access_block(Bucket=bkt, PublicAccessBlockConfiguration={"BlockPublicPolicy": True})
    fails("AccessDenied", owner.put_bucket_policy, Bucket=bkt, Policy=public_policy(bkt))
    owner.delete_public_access_block(Bucket=bkt)
    owner.put_bucket_policy(Bucket=bkt, Policy=public_policy(bkt))
    url = f"{file_gateway.url}/{bkt}/k"
    assert httpx.get(url).status_code == 200
    assert other.get_object(Bucket=bkt, Key="k")["Body"].read() == b"v"
    owner.put_public_access_block(Bucket=bkt, PublicAccessBlockConfiguration={"RestrictPublicBuckets": True})
    assert httpx.get(url).status_code == 403
    fails("AccessDenied", other.get_object, Bucket=bkt, Key="k")
    assert owner.get_object(Bucket=bkt, Key="k")["Body"].read() == b"v"


# ---------------------------------------------------------------- Object Ownership

def test_ownership_controls_put_get_delete(owner, bkt):
    fails("OwnershipControlsNotFoundError", owner.get_bucket_ownership_controls, Bucket=bkt)
    for value in ("BucketOwnerPreferred", "ObjectWriter", "BucketOwnerEnforced"):
        owner.put_bucket_ownership_controls(Bucket=bkt, OwnershipControls={"Rules": [{"ObjectOwnership": value}]})
        assert owner.get_bucket_ownership_controls(Bucket=bkt)["OwnershipControls"]["Rules"] == [
            {"ObjectOwnership": value}]
    owner.delete_bucket_ownership_controls(Bucket=bkt)
    fails("OwnershipControlsNotFoundError", owner.get_bucket_ownership_controls, Bucket=bkt)
    fails("MalformedXML", owner.put_bucket_ownership_controls, Bucket=bkt,
          OwnershipControls={"Rules": [{"ObjectOwnership": "Whoever"}]})


def test_bucket_owner_enforced_disables_acls(owner, other, bkt):
    owner.put_bucket_acl(Bucket=bkt, ACL="public-read-write")
    # a bucket ACL granting others must go before ACLs can be disabled
    fails("InvalidBucketAclWithObjectOwnership", owner.put_bucket_ownership_controls, Bucket=bkt,
          OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    owner.put_bucket_acl(Bucket=bkt, ACL="private")
    owner.put_object(Bucket=bkt, Key="pub", Body=b"p", ACL="public-read")
    owner.put_bucket_ownership_controls(Bucket=bkt, OwnershipControls={"Rules": [
        {"ObjectOwnership": "BucketOwnerEnforced"}]})
    fails("AccessControlListNotSupported", owner.put_object, Bucket=bkt, Key="k", Body=b"", ACL="public-read")
    fails("AccessControlListNotSupported", owner.put_bucket_acl, Bucket=bkt, ACL="public-read")
    fails("AccessControlListNotSupported", owner.put_object_acl, Bucket=bkt, Key="pub", ACL="public-read")
    owner.put_object(Bucket=bkt, Key="k", Body=b"", ACL="bucket-owner-full-control")
    # the old public grant no longer counts
    anon = make_client(owner.meta.endpoint_url, signature_version=UNSIGNED)
    fails("AccessDenied", anon.get_object, Bucket=bkt, Key="pub")
    # a policy is the way to share: the writer's object is the bucket owner's
    owner.put_bucket_policy(Bucket=bkt, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bkt}/*"}]}))
    other.put_object(Bucket=bkt, Key="from-other", Body=b"o")
    assert owner.get_object(Bucket=bkt, Key="from-other")["Body"].read() == b"o"
    assert owner.get_object_acl(Bucket=bkt, Key="from-other")["Owner"]["ID"] == OWNER_ID


def test_bucket_owner_preferred(owner, other, bkt):
    owner.put_bucket_acl(Bucket=bkt, GrantWrite=f'id="{OTHER_ID}"', GrantFullControl=f'id="{OWNER_ID}"')
    owner.put_bucket_ownership_controls(Bucket=bkt, OwnershipControls={"Rules": [
        {"ObjectOwnership": "BucketOwnerPreferred"}]})
    other.put_object(Bucket=bkt, Key="given", Body=b"g", ACL="bucket-owner-full-control")
    other.put_object(Bucket=bkt, Key="kept", Body=b"k")
    assert owner.get_object_acl(Bucket=bkt, Key="given")["Owner"]["ID"] == OWNER_ID
    fails("AccessDenied", owner.get_object_acl, Bucket=bkt, Key="kept")
    assert other.get_object_acl(Bucket=bkt, Key="kept")["Owner"]["ID"] == OTHER_ID


def test_create_bucket_with_object_ownership_header(owner, bucket_name):
    fails("InvalidBucketAclWithObjectOwnership", owner.create_bucket, Bucket=bucket_name, ACL="public-read",
          ObjectOwnership="BucketOwnerEnforced")
    owner.create_bucket(Bucket=bucket_name, ObjectOwnership="BucketOwnerEnforced")
    assert owner.get_bucket_ownership_controls(Bucket=bucket_name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]


# ---------------------------------------------------------------- the defaults switch

@pytest.fixture(scope="module")
def aws2023_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("aws2023")
    config = json.loads((REPO_ROOT / "config.json").read_text())
    config["bucketDefaults"] = "aws2023"
    path = Path(tmp) / "config.json"
    path.write_text(json.dumps(config))
    g = start_gateway(Path(tmp) / "gw", None, env={"S3_CONFIG_FILE": str(path)})
    yield g
    g.stop()


def test_aws2023_defaults_block_public_access_and_enforce_ownership(aws2023_gateway, bucket_name):
    s3 = make_client(aws2023_gateway.url)
    s3.create_bucket(Bucket=bucket_name)
    assert s3.get_public_access_block(Bucket=bucket_name)["PublicAccessBlockConfiguration"] == ALL_ON
    assert s3.get_bucket_ownership_controls(Bucket=bucket_name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    fails("AccessControlListNotSupported", s3.put_object, Bucket=bucket_name, Key="k", Body=b"", ACL="public-read")
    fails("AccessDenied", s3.put_bucket_policy, Bucket=bucket_name, Policy=public_policy(bucket_name))
    # ObjectWriter on request, as on AWS
    s3.create_bucket(Bucket=bucket_name + "-ow", ObjectOwnership="ObjectWriter")
    assert s3.get_bucket_ownership_controls(Bucket=bucket_name + "-ow")["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "ObjectWriter"}]


def test_classic_defaults(owner, bkt):
    fails("NoSuchPublicAccessBlockConfiguration", owner.get_public_access_block, Bucket=bkt)
    fails("OwnershipControlsNotFoundError", owner.get_bucket_ownership_controls, Bucket=bkt)
    owner.put_object(Bucket=bkt, Key="k", Body=b"", ACL="public-read")
