"""Authorization: may this requester perform this IAM action on this bucket (and object)?

Called once per request by the pipeline (gateway/app.py) with the route's IAM action, by the copy
actions for their source, by DeleteObjects for each key and by PostObject once its form is
authenticated. AWS's evaluation order (docs/authorization.md):

1. owner fast path: no bucket policy, the requester owns the bucket (and the object, for an
   object-level action) -> allowed, nothing else is built;
2. the bucket policy (parsed once per PutBucketPolicy, cached): an explicit Deny wins (the bucket
   owner keeps the policy actions), an Allow allows (unless RestrictPublicBuckets ignores it);
3. owners and ACLs: the bucket owner may do every bucket action, the object owner every action on
   its object, the bucket owner may delete (and tag) any object of its bucket; otherwise the ACL of
   the resource must grant the permission the action needs (Object Ownership BucketOwnerEnforced
   disables ACLs, Block Public Access IgnorePublicAcls ignores public grants);
4. otherwise AccessDenied.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from gateway import acl as acls
from gateway.models import BucketMD, ObjectMD, canned_acl
from gateway.policy import BucketPolicy, PolicyRequest, Principal
from shared.config import Account
from shared.errors import S3Error
from shared.log import get_logger, log_event

if TYPE_CHECKING:
    from gateway.context import RequestContext

log = get_logger("gateway")

# ACL permission on the BUCKET an action needs (absent: only the bucket owner, or a policy).
BUCKET_ACL_PERMISSION = {
    "s3:ListBucket": "READ", "s3:ListBucketVersions": "READ", "s3:ListBucketMultipartUploads": "READ",
    "s3:PutObject": "WRITE", "s3:DeleteObject": "WRITE", "s3:DeleteObjectVersion": "WRITE",
    "s3:AbortMultipartUpload": "WRITE", "s3:ListMultipartUploadParts": "WRITE",
    "s3:GetBucketAcl": "READ_ACP", "s3:PutBucketAcl": "WRITE_ACP",
}
# Object-level actions: the ACL of the OBJECT decides (None: only its owner, or a policy).
OBJECT_ACL_PERMISSION: dict[str, str | None] = {
    "s3:GetObject": "READ", "s3:GetObjectVersion": "READ",
    "s3:GetObjectAttributes": "READ", "s3:GetObjectVersionAttributes": "READ",
    "s3:GetObjectTagging": "READ", "s3:GetObjectVersionTagging": "READ",
    "s3:GetObjectAcl": "READ_ACP", "s3:GetObjectVersionAcl": "READ_ACP",
    "s3:PutObjectAcl": "WRITE_ACP", "s3:PutObjectVersionAcl": "WRITE_ACP",
    "s3:PutObjectTagging": None, "s3:PutObjectVersionTagging": None,
    "s3:DeleteObjectTagging": None, "s3:DeleteObjectVersionTagging": None,
}
OBJECT_LEVEL_ACTIONS = frozenset(OBJECT_ACL_PERMISSION)
# What the bucket owner may do on objects it does not own (as the original's bucketOwnerActions).
BUCKET_OWNER_OBJECT_ACTIONS = frozenset((
    "s3:GetObjectTagging", "s3:GetObjectVersionTagging", "s3:PutObjectTagging", "s3:PutObjectVersionTagging",
    "s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"))
# The bucket owner can always read, replace and delete the policy, even under a Deny (AWS's rule
# against locking yourself out), and manage the public access block and ownership controls.
OWNER_ALWAYS = frozenset(("s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"))
POLICY_CACHE_SIZE = 1024
_policy_cache: dict[tuple[str, Any, str], Any] = {}


def bucket_policy(bucket: BucketMD) -> Any:
    """The bucket's parsed BucketPolicy (gateway/policy.py), or None. Parsed once per policy put:
    cached under (bucket, bucket uid, policy id)."""
    doc = bucket.policy
    if doc is None:
        return None
    text = None
    pid = bucket.policy_id
    if pid is None:   # a record written by the original: key on the document itself
        text = pid = json.dumps(doc, sort_keys=True)
    key = (bucket.name, bucket.raw.get("uid"), pid)
    cached = _policy_cache.get(key)
    if cached is None:
        if len(_policy_cache) >= POLICY_CACHE_SIZE:
            _policy_cache.clear()
        try:
            cached = BucketPolicy.parse(text or json.dumps(doc), bucket.name)
        except S3Error as exc:
            log_event(log, logging.WARNING, "stored bucket policy does not parse", bucket=bucket.name,
                      error=exc.message)
            cached = False
        _policy_cache[key] = cached
    return cached or None


def principal_of(account: Account | None) -> Any:
    if account is None:
        return None
    return Principal(account.canonical_id, account.shortid, account.arn)


# Who an anonymous request acts as where an account is recorded (delete markers, upload initiators).
ANONYMOUS = Account("", "", "", acls.PUBLIC_ID, "", ())


def actor(account: Account | None) -> Account:
    return account if account is not None else ANONYMOUS


def requester_id(account: Account | None) -> str:
    return account.canonical_id if account is not None else acls.PUBLIC_ID


def _auth_type(ctx: "RequestContext") -> str | None:
    if ctx.route.action == "PostObject":
        return "POST"
    scheme = ctx.auth.scheme
    if scheme.endswith("-header"):
        return "REST-HEADER"
    if scheme.endswith("-query"):
        return "REST-QUERY-STRING"
    return None


def condition_context(ctx: "RequestContext", obj: ObjectMD | None, account: Account | None) -> dict[str, Any]:
    """The condition keys of a request (lower-case names), only those the request has."""
    headers, query = ctx.headers, ctx.query
    now = time.time()
    c: dict[str, Any] = {
        "aws:currenttime": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:epochtime": str(int(now)),
        "aws:securetransport": "true" if ctx.request.url.scheme == "https" else "false",
        "aws:principaltype": "Account" if account is not None else "Anonymous",
    }
    client = ctx.request.client
    if client is not None and client.host:
        c["aws:sourceip"] = client.host
    for header, key in (("referer", "aws:referer"), ("user-agent", "aws:useragent"),
                        ("x-amz-acl", "s3:x-amz-acl"), ("x-amz-server-side-encryption", "s3:x-amz-server-side-encryption"),
                        ("x-amz-server-side-encryption-aws-kms-key-id",
                         "s3:x-amz-server-side-encryption-aws-kms-key-id"),
                        ("x-amz-copy-source", "s3:x-amz-copy-source"),
                        ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
                        ("x-amz-storage-class", "s3:x-amz-storage-class"),
                        ("x-amz-content-sha256", "s3:x-amz-content-sha256"),
                        ("x-amz-grant-read", "s3:x-amz-grant-read"), ("x-amz-grant-write", "s3:x-amz-grant-write"),
                        ("x-amz-grant-read-acp", "s3:x-amz-grant-read-acp"),
                        ("x-amz-grant-write-acp", "s3:x-amz-grant-write-acp"),
                        ("x-amz-grant-full-control", "s3:x-amz-grant-full-control"),
                        ("x-amz-object-ownership", "s3:x-amz-object-ownership")):
        if header in headers:
            c[key] = headers[header]
    if account is not None:
        c["aws:principalaccount"] = account.shortid
        c["aws:principalarn"] = account.arn
        c["aws:userid"] = account.shortid
        c["aws:username"] = account.name
    for param in ("prefix", "delimiter", "max-keys"):
        if param in query:
            c[f"s3:{param}"] = query[param]
    if "versionId" in query:
        c["s3:versionid"] = query["versionId"]
    scheme = ctx.auth.scheme
    if scheme.startswith("v4"):
        c["s3:signatureversion"] = "AWS4-HMAC-SHA256"
    elif scheme.startswith("v2"):
        c["s3:signatureversion"] = "AWS"
    auth_type = _auth_type(ctx)
    if auth_type is not None:
        c["s3:authtype"] = auth_type
    if obj is not None:
        for k, v in obj.tags.items():
            c[f"s3:existingobjecttag/{k.lower()}"] = v
    tagging = headers.get("x-amz-tagging")
    if tagging:
        pairs = parse_qsl(tagging, keep_blank_values=True)
        for k, v in pairs:
            c[f"s3:requestobjecttag/{k.lower()}"] = v
        c["s3:requestobjecttagkeys"] = [k for k, _ in pairs]
    return c


def _resource(bucket: BucketMD, key: str | None) -> str:
    return f"arn:aws:s3:::{bucket.name}" if key is None else f"arn:aws:s3:::{bucket.name}/{key}"


def _pab(bucket: BucketMD, name: str) -> bool:
    pab = bucket.public_access_block
    return bool(pab and pab.get(name))


def allowed(ctx: "RequestContext", bucket: BucketMD, action: str, *, key: str | None = None,
            obj: ObjectMD | None = None, account: Account | None | bool = False) -> bool:
    """May the request's account (or `account`) perform `action` on `bucket` (and `key`)?

    Object-level actions (OBJECT_LEVEL_ACTIONS) pass the addressed version as `obj` (None when
    it does not exist: then the requester needs what a listing needs, to learn it is missing)."""
    if account is False:
        account = ctx.account
    assert account is not True
    requester = requester_id(account)
    owns_bucket = requester == bucket.owner
    object_level = action in OBJECT_LEVEL_ACTIONS
    enforced = bucket.object_ownership == "BucketOwnerEnforced"
    obj_owner = None
    if object_level and obj is not None:
        obj_owner = bucket.owner if enforced else (obj.owner_id or bucket.owner)
    policy = bucket_policy(bucket) if bucket.raw.get("bucketPolicy") else None
    if policy is None:
        if owns_bucket and (obj_owner is None or obj_owner == requester):
            return True   # the owner fast path
    else:
        resource_key = key if key is not None else (ctx.key if object_level or action in _KEYED else None)
        req = PolicyRequest(principal_of(account), action, _resource(bucket, resource_key),
                                              condition_context(ctx, obj, account))
        decision = policy.evaluate(req)
        if decision == "Deny":
            return owns_bucket and action in OWNER_ALWAYS
        if decision == "Allow":
            restricted = _pab(bucket, "RestrictPublicBuckets") and policy.is_public()
            if not restricted or _same_account(account, bucket):
                return True
    return _acl_allows(bucket, action, requester, owns_bucket, object_level, obj, obj_owner, enforced)


# Bucket-level actions on a key: their policy resource is the object's ARN.
_KEYED = frozenset(("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                    # Object Lock (gateway/objectlock.py)
                    "s3:PutObjectRetention", "s3:GetObjectRetention", "s3:PutObjectLegalHold",
                    "s3:GetObjectLegalHold", "s3:BypassGovernanceRetention"))


def _same_account(account: Account | None, bucket: BucketMD) -> bool:
    return account is not None and account.canonical_id == bucket.owner


def _acl_allows(bucket: BucketMD, action: str, requester: str, owns_bucket: bool, object_level: bool,
                obj: ObjectMD | None, obj_owner: str | None, enforced: bool) -> bool:
    ignore_public = _pab(bucket, "IgnorePublicAcls")
    ids = acls.requester_ids(requester)
    if object_level and obj is not None:
        if obj_owner == requester:
            return True
        if owns_bucket and action in BUCKET_OWNER_OBJECT_ACTIONS:
            return True
        perm = OBJECT_ACL_PERMISSION.get(action)
        if enforced or perm is None:
            return False
        return acls.allows(obj.acl, perm, ids, bucket.owner, ignore_public)
    if owns_bucket:
        return True
    # A missing object: whoever may list the bucket learns it is missing.
    perm = "READ" if object_level else BUCKET_ACL_PERMISSION.get(action)
    if enforced or perm is None:   # BucketOwnerEnforced: ACLs no longer give access
        return False
    return acls.allows(bucket.acl, perm, ids, bucket.owner, ignore_public)


def needs_object(account: Account | None, bucket: BucketMD, action: str) -> bool:
    """Does authorizing this object-level action need the object's record? Not for the bucket owner
    doing what it may do on any object of its bucket (tagging), with no policy to evaluate."""
    return not (action in BUCKET_OWNER_OBJECT_ACTIONS and requester_id(account) == bucket.owner
                and not bucket.raw.get("bucketPolicy"))


def authorize(ctx: "RequestContext", bucket: BucketMD, action: str, *, key: str | None = None,
              obj: ObjectMD | None = None, account: Account | None | bool = False) -> None:
    """AccessDenied unless `allowed`."""
    if not allowed(ctx, bucket, action, key=key, obj=obj, account=account):
        raise S3Error("AccessDenied")


# ---------------------------------------------------------------- what a write sets

def new_object_acl(ctx: "RequestContext", bucket: BucketMD, headers: dict[str, str] | None = None,
                   canned_name: str = "x-amz-acl") -> dict[str, Any]:
    """The ACL of an object a request creates (x-amz-acl or x-amz-grant-*), checked against the bucket's
    Object Ownership (AccessControlListNotSupported) and Block Public Access (AccessDenied)."""
    headers = ctx.headers if headers is None else headers
    acl = acls.acl_from_headers(headers, ctx.config, bucket=False, canned_name=canned_name)
    check_acl_change(bucket, acl, bucket.owner)
    return acl if acl is not None else canned_acl("private", bucket=False)


def check_acl_change(bucket: BucketMD, acl: dict[str, Any] | None, owner: str) -> None:
    """An ACL a request sets on `bucket` or one of its objects: refused under BucketOwnerEnforced
    unless it only gives the owner full control, and refused if public under BlockPublicAcls."""
    if acl is None:
        return
    if bucket.object_ownership == "BucketOwnerEnforced" and not acls.is_bucket_owner_full_control(acl, owner):
        raise S3Error("AccessControlListNotSupported")
    if _pab(bucket, "BlockPublicAcls") and acls.is_public(acl):
        raise S3Error("AccessDenied")


def new_object_owner(ctx: "RequestContext", bucket: BucketMD, account: Account | None | bool = False,
                     canned: str | None = None) -> tuple[str, str]:
    """(canonical id, display name) of the owner of an object a request writes: the writer (anonymous:
    the public id), the bucket owner under BucketOwnerEnforced, or under BucketOwnerPreferred when
    the writer gives it bucket-owner-full-control."""
    if account is False:
        account = ctx.account
    ownership = bucket.object_ownership
    if canned is None:
        canned = ctx.headers.get("x-amz-acl")
    if ownership == "BucketOwnerEnforced" or (
            ownership == "BucketOwnerPreferred" and canned == acls.BUCKET_OWNER_FULL_CONTROL):
        return bucket.owner, bucket.owner_display_name
    if account is None or account is True:
        return acls.PUBLIC_ID, ""
    return account.canonical_id, account.name
