"""gateway/acl.py without servers: canned expansions, grant headers, documents, `allows`, and the
authorization decisions of gateway/authz.py on hand-made records."""
from __future__ import annotations

import types

import pytest

from gateway import acl as acls
from gateway import authz
from gateway.models import BucketMD, canned_acl, new_object_md, now_iso
from shared.config import load_config
from shared.errors import S3Error

CONFIG = load_config()
OWNER, OTHER = CONFIG.accounts[0], CONFIG.accounts[1]


def test_canned_grants_and_bucket_owner_placeholders():
    assert acls.grants(canned_acl("private", bucket=True), "o", "o", bucket=True) == [("o", "FULL_CONTROL")]
    assert acls.grants(canned_acl("public-read-write", bucket=True), "o", "o", bucket=True) == [
        ("o", "FULL_CONTROL"), (acls.ALL_USERS, "READ"), (acls.ALL_USERS, "WRITE")]
    assert acls.grants(canned_acl("bucket-owner-read", bucket=False), "w", "b", bucket=False) == [
        ("w", "FULL_CONTROL"), ("b", "READ")]
    # the same owner twice is shown once
    assert acls.grants(canned_acl("bucket-owner-full-control", bucket=False), "o", "o", bucket=False) == [
        ("o", "FULL_CONTROL")]


def test_allows_by_group_and_full_control():
    anon, other = acls.requester_ids(None), acls.requester_ids(OTHER.canonical_id)
    public = canned_acl("public-read", bucket=False)
    assert acls.allows(public, "READ", anon, "b") and not acls.allows(public, "READ_ACP", anon, "b")
    assert not acls.allows(public, "READ", anon, "b", ignore_public=True)
    auth = canned_acl("authenticated-read", bucket=False)
    assert acls.allows(auth, "READ", other, "b") and not acls.allows(auth, "READ", anon, "b")
    full = {"Canned": "", "FULL_CONTROL": [OTHER.canonical_id], "READ": [], "READ_ACP": [], "WRITE_ACP": []}
    assert all(acls.allows(full, p, other, "b") for p in acls.OBJECT_PERMISSIONS)
    assert acls.allows(canned_acl("bucket-owner-read", bucket=False), "READ", other, OTHER.canonical_id)


def test_grant_headers():
    acl = acls.acl_from_headers({"x-amz-grant-read": f'id="{OTHER.canonical_id}", uri="{acls.ALL_USERS}"',
                                 "x-amz-grant-write-acp": f"emailAddress={OTHER.email.upper()}"},
                                CONFIG, bucket=True)
    assert acl["Canned"] == "" and acl["READ"] == [OTHER.canonical_id, acls.ALL_USERS]
    assert acl["WRITE_ACP"] == [OTHER.canonical_id]
    assert acls.is_public(acl)
    assert acls.acl_from_headers({}, CONFIG, bucket=True) is None
    for headers, code in [({"x-amz-acl": "private", "x-amz-grant-read": "id=x"}, "InvalidRequest"),
                          ({"x-amz-acl": "everyone"}, "InvalidArgument"),
                          ({"x-amz-grant-read": "emailAddress=no@where"}, "UnresolvableGrantByEmailAddress"),
                          ({"x-amz-grant-read": "id=unknown"}, "InvalidArgument"),
                          ({"x-amz-grant-read": "who=me"}, "InvalidArgument")]:
        with pytest.raises(S3Error) as exc:
            acls.acl_from_headers(headers, CONFIG, bucket=True)
        assert exc.value.code == code, headers


def test_document_round_trip():
    pairs = [(OWNER.canonical_id, "FULL_CONTROL"), (acls.ALL_USERS, "READ")]
    from gateway.xml import to_bytes
    body = to_bytes(acls.acl_document(pairs, OWNER.canonical_id, OWNER.name, CONFIG))
    acl = acls.acl_from_xml(body, CONFIG, OWNER.canonical_id, bucket=True)
    assert acls.grants(acl, OWNER.canonical_id, OWNER.canonical_id, bucket=True) == pairs
    with pytest.raises(S3Error) as exc:
        acls.acl_from_xml(body, CONFIG, OTHER.canonical_id, bucket=True)
    assert exc.value.code == "AccessDenied"


def _bucket(**raw) -> BucketMD:
    return BucketMD.from_doc({"name": "b", "owner": OWNER.canonical_id, "ownerDisplayName": OWNER.name,
                              "creationDate": now_iso(), **raw})


def _object(owner=OWNER, canned="private"):
    md = new_object_md("k", owner.canonical_id, owner.name, size=1, md5="x", location=None,
                       data_store_name="us-east-1", headers={}, user_meta={})
    md.acl = canned_acl(canned, bucket=False)
    return md


def _ctx(account):
    return types.SimpleNamespace(account=account, key="k")


def test_owner_rights():
    b = _bucket()
    theirs = _object(OTHER)
    assert authz.allowed(_ctx(OWNER), b, "s3:ListBucket")
    assert not authz.allowed(_ctx(OWNER), b, "s3:GetObject", obj=theirs)        # not the object's owner
    assert authz.allowed(_ctx(OWNER), b, "s3:DeleteObject")                     # but deletes anything
    assert authz.allowed(_ctx(OWNER), b, "s3:PutObjectTagging", obj=theirs)
    assert authz.allowed(_ctx(OTHER), b, "s3:GetObject", obj=theirs)
    assert not authz.allowed(_ctx(OTHER), b, "s3:ListBucket")
    assert not authz.allowed(_ctx(None), b, "s3:GetObject", obj=None)


def test_bucket_owner_enforced_and_ignore_public_acls():
    enforced = _bucket(ownershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                       acl=canned_acl("public-read", bucket=True))
    assert authz.allowed(_ctx(OWNER), enforced, "s3:GetObject", obj=_object(OTHER))   # owner of everything
    assert not authz.allowed(_ctx(None), enforced, "s3:ListBucket")                    # ACLs off
    assert not authz.allowed(_ctx(None), enforced, "s3:GetObject", obj=_object(OWNER, "public-read"))
    ignored = _bucket(publicAccessBlockConfiguration={"IgnorePublicAcls": True})
    assert not authz.allowed(_ctx(None), ignored, "s3:GetObject", obj=_object(OWNER, "public-read"))
    with pytest.raises(S3Error) as exc:
        authz.check_acl_change(enforced, canned_acl("public-read", bucket=False), OWNER.canonical_id)
    assert exc.value.code == "AccessControlListNotSupported"
    authz.check_acl_change(enforced, canned_acl("bucket-owner-full-control", bucket=False), OWNER.canonical_id)
