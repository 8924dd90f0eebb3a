"""Bucket actions: CreateBucket, DeleteBucket, HeadBucket, ListBuckets, GetBucketLocation,
Put/GetBucketVersioning. Bucket records are read and written through the store (gateway/store.py)."""
from __future__ import annotations

import base64
import ipaddress
import re

from starlette.responses import Response

from shared.errors import S3Error

from gateway import objectlock, placement
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.context import RequestContext
from gateway import sse
from gateway.acl import acl_from_headers, is_bucket_owner_full_control
from gateway.models import BucketMD, now_iso
from gateway.router import action
from gateway.store import BUCKET_HAS_UPLOADS, BUCKET_MISSING, SETTLED_DELETED
from gateway.xml import child_text, parse, root, sub

CREATE_ATTEMPTS = 4
OBJECT_OWNERSHIPS = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")
PUBLIC_ACCESS_BLOCK_FIELDS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> None:
    """AWS's bucket naming rules -> InvalidBucketName (the store's own names: CreateBucket)."""
    ok = bool(_BUCKET_NAME_RE.match(name)) and ".." not in name and ".-" not in name and "-." not in name
    if ok:
        try:
            ipaddress.IPv4Address(name)
            ok = False
        except ValueError:
            pass
    if ok and (name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3"))):
        ok = False
    if not ok:
        raise S3Error("InvalidBucketName", BucketName=name)


def _location_from_body(body: bytes) -> str | None:
    if not body.strip():
        return None
    doc = parse(body, root_tag="CreateBucketConfiguration")
    constraint = child_text(doc, "LocationConstraint")
    return constraint or None


@action("CreateBucket")
async def create_bucket(ctx: RequestContext) -> Response:
    name = ctx.bucket or ""
    validate_bucket_name(name)
    if ctx.store.reserves_bucket_name(name):   # internal keyspaces are never reachable as user buckets
        raise S3Error("InvalidBucketName", BucketName=name)
    acl = acl_from_headers(ctx.headers, ctx.config, bucket=True)
    ownership = ctx.headers.get("x-amz-object-ownership")
    if ownership is not None and ownership not in OBJECT_OWNERSHIPS:
        raise S3Error("InvalidArgument", "Invalid x-amz-object-ownership header", ArgumentName="x-amz-object-ownership",
                      ArgumentValue=ownership)
    aws2023 = ctx.config.bucket_defaults == "aws2023"
    if ownership is None and aws2023:
        ownership = "BucketOwnerEnforced"
    if ownership == "BucketOwnerEnforced" and acl is not None \
            and not is_bucket_owner_full_control(acl, ctx.account.canonical_id):
        raise S3Error("InvalidBucketAclWithObjectOwnership")
    requested = _location_from_body(await read_xml_body(ctx))
    constraint = requested or placement.endpoint_location(ctx) or "us-east-1"
    # A location's name or one of its aliases (locationConfig.json); the bucket stores the location.
    location = ctx.config.resolve_location(constraint)
    if location is None:
        raise S3Error("InvalidLocationConstraint", "The specified location constraint is not valid.",
                      LocationConstraint=constraint)
    encryption = sse.create_bucket_config(ctx)   # x-amz-scal-server-side-encryption, or config.json's default
    info = BucketMD(name, ctx.account.canonical_id, ctx.account.name, now_iso(), location_constraint=location)
    info.server_side_encryption = encryption
    if acl is not None:
        info.acl = acl
    if ownership is not None:
        info.object_ownership = ownership
    if aws2023:
        info.public_access_block = dict.fromkeys(PUBLIC_ACCESS_BLOCK_FIELDS, True)
    objectlock.enable_on_new_bucket(info, ctx.headers.get(objectlock.BUCKET_LOCK_HEADER))
    # The record is put only if absent: of concurrent creators exactly one wins, the others
    # then find the winner's bucket (a deletion in progress is settled by get_bucket first).
    for _ in range(CREATE_ATTEMPTS):
        existing = await ctx.store.get_bucket(name)
        if existing is not None:
            if existing.owner != ctx.account.canonical_id:
                raise S3Error("BucketAlreadyExists", BucketName=name)
            if ctx.config.locations[location].legacy_aws_behavior:
                return Response(status_code=200, headers={"Location": f"/{name}"})
            raise S3Error("BucketAlreadyOwnedByYou", BucketName=name)
        if await ctx.store.create_bucket(info):
            return Response(status_code=200, headers={"Location": f"/{name}"})
    raise S3Error("BucketAlreadyExists", BucketName=name)   # created and deleted again and again meanwhile


@action("DeleteBucket")
async def delete_bucket(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    # Empty as ListObjectVersions shows it: placeholder masters do not count (Store.bucket_has_versions).
    # The store marks the bucket deleted before checking, so a write either lands first (and
    # the delete answers BucketNotEmpty) or finds the bucket gone (Store.delete_bucket).
    outcome = await ctx.store.delete_bucket(info)
    if outcome == BUCKET_MISSING:
        raise S3Error("NoSuchBucket", BucketName=info.name)
    if outcome == BUCKET_HAS_UPLOADS:
        raise S3Error("BucketNotEmpty", "The bucket you tried to delete has ongoing multipart uploads.",
                      BucketName=info.name)
    if outcome != SETTLED_DELETED:
        raise S3Error("BucketNotEmpty", BucketName=info.name)
    return Response(status_code=204)


@action("HeadBucket")
async def head_bucket(ctx: RequestContext) -> Response:
    return Response(status_code=200, headers={"x-amz-bucket-region": ctx.bucket_md.location})


@action("GetBucketLocation")
async def get_bucket_location(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    doc = root("LocationConstraint")
    location = info.location_constraint or ""
    # us-east-1 is reported as an empty constraint, as AWS does.
    doc.text = "" if location == "us-east-1" else location
    return xml_response(doc)


MAX_BUCKETS_LIMIT = 10_000   # AWS: max-buckets 1..10000, and the page size of a paginated request without it
_LIST_BUCKETS_PARAMS = ("max-buckets", "continuation-token", "prefix", "bucket-region")
_TOKEN_TAG = "lb1:"          # continuation tokens: base64url of this tag + the last bucket name listed


def _max_buckets(query: dict[str, str]) -> int | None:
    raw = query.get("max-buckets")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_BUCKETS_LIMIT:
        raise S3Error("InvalidArgument", f"Argument max-buckets must be an integer between 1 and {MAX_BUCKETS_LIMIT}",
                      ArgumentName="max-buckets", ArgumentValue=raw)
    return int(raw)


def _list_buckets_token(name: str) -> str:
    """URL-safe without escaping: unpadded base64url."""
    return base64.urlsafe_b64encode((_TOKEN_TAG + name).encode()).decode().rstrip("=")


def _list_buckets_after(token: str) -> str:
    """The bucket name a ListBuckets continuation token resumes after, or InvalidArgument."""
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeError):   # binascii.Error is a ValueError
        text = ""
    name = text[len(_TOKEN_TAG):] if text.startswith(_TOKEN_TAG) else ""
    if not name or _list_buckets_token(name) != token:
        raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                      ArgumentName="continuation-token", ArgumentValue=token)
    return name


@action("ListBuckets")
async def list_buckets(ctx: RequestContext) -> Response:
    q = ctx.query
    paginated = any(p in q for p in _LIST_BUCKETS_PARAMS)
    limit = _max_buckets(q) or (MAX_BUCKETS_LIMIT if paginated else None)
    after = _list_buckets_after(q["continuation-token"]) if "continuation-token" in q else None
    name_prefix, region = q.get("prefix", ""), q.get("bucket-region") or None
    owner = ctx.account.canonical_id
    doc = root("ListAllMyBucketsResult")
    owner_el = sub(doc, "Owner")
    sub(owner_el, "ID", owner)
    sub(owner_el, "DisplayName", ctx.account.name)
    buckets = sub(doc, "Buckets")
    # Names come in order: start after the token's name, or at the first name the prefix allows.
    if after is not None and after >= name_prefix:
        names = ctx.store.owned_bucket_names(owner, after)
    else:
        names = ctx.store.owned_bucket_names(owner, first=name_prefix)
    listed: list[str] = []
    more = False
    try:
        async for name in names:
            if not name.startswith(name_prefix):
                break   # sorted: past the names with this prefix
            info = await ctx.store.get_bucket(name)
            if info is None:
                continue  # half-created or half-deleted bucket
            if info.owner != owner:
                continue
            bucket_region = info.location
            if region is not None and bucket_region != region:
                continue
            if limit is not None and len(listed) == limit:
                more = True   # one more bucket to show: the page is truncated
                break
            listed.append(name)
            b = sub(buckets, "Bucket")
            sub(b, "Name", name)
            sub(b, "CreationDate", info.creation_date)
            if paginated:
                sub(b, "BucketRegion", bucket_region)
    finally:
        await names.aclose()   # stops the store's read stream now, not when the generator is collected
    if more:
        sub(doc, "ContinuationToken", _list_buckets_token(listed[-1]))
    if "prefix" in q:
        sub(doc, "Prefix", name_prefix)
    return xml_response(doc)


VERSIONING_STATES = ("Enabled", "Suspended")


@action("PutBucketVersioning")
async def put_bucket_versioning(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    doc = parse(await read_xml_body(ctx), root_tag="VersioningConfiguration")
    status = child_text(doc, "Status")
    mfa_delete = child_text(doc, "MfaDelete")
    if status not in VERSIONING_STATES or mfa_delete not in (None, "Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    if mfa_delete == "Enabled":
        # MFA Delete needs an MFA device; there is none to check the x-amz-mfa header against.
        raise S3Error("NotImplemented", "MFA Delete is not supported")
    if info.object_lock_enabled and status == "Suspended":
        raise S3Error("InvalidBucketState", "An Object Lock configuration is present on this bucket, "
                      "so the versioning state cannot be changed.")
    if status == "Enabled":   # issue 16: the bucket's location must be able to keep versions
        await placement.refuse_versioned_write(ctx, info, info.location, enabling=True)
    info.versioning = {"Status": status, **({"MfaDelete": mfa_delete} if mfa_delete else {})}
    await save_bucket(ctx, info)
    return Response(status_code=200)


@action("GetBucketVersioning")
async def get_bucket_versioning(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    doc = root("VersioningConfiguration")
    if info.versioning_status:
        sub(doc, "Status", info.versioning_status)
        if (info.versioning or {}).get("MfaDelete"):
            sub(doc, "MfaDelete", info.versioning["MfaDelete"])
    return xml_response(doc)
