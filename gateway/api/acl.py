"""ACL actions: Get/PutBucketAcl, Get/PutObjectAcl (gateway/acl.py has the model and the documents).

The pipeline has already authorized the request (READ_ACP / WRITE_ACP, owners' implicit rights).
A Put takes exactly one of: a canned x-amz-acl header, x-amz-grant-* headers, or an
AccessControlPolicy body.
"""
from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gateway import acl as acls
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.authz import check_acl_change
from gateway.context import RequestContext
from gateway.models import BucketMD, ObjectMD
from gateway.router import action
from gateway.versioning import external_version_id, get_current, get_version
from shared.errors import S3Error


async def _requested_acl(ctx: RequestContext, owner: str, *, bucket: bool) -> dict[str, Any]:
    from_headers = acls.acl_from_headers(ctx.headers, ctx.config, bucket=bucket)
    body = await read_xml_body(ctx)
    if from_headers is not None:
        if body.strip():
            raise S3Error("UnexpectedContent", "This request does not support content")
        return from_headers
    if not body.strip():
        raise S3Error("MissingSecurityHeader", "Your request was missing a required header",
                      MissingHeaderName="x-amz-acl")
    return acls.acl_from_xml(body, ctx.config, owner, bucket=bucket)


def _display_name(ctx: RequestContext, canonical_id: str, stored: str) -> str:
    if stored:
        return stored
    account = ctx.config.account_by_canonical_id(canonical_id)
    return account.name if account is not None else ""


@action("GetBucketAcl")
async def get_bucket_acl(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    pairs = acls.grants(info.acl, info.owner, info.owner, bucket=True)
    doc = acls.acl_document(pairs, info.owner, _display_name(ctx, info.owner, info.owner_display_name), ctx.config)
    return xml_response(doc)


@action("PutBucketAcl")
async def put_bucket_acl(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    new_acl = await _requested_acl(ctx, info.owner, bucket=True)
    check_acl_change(info, new_acl, info.owner)
    info.acl = new_acl
    await save_bucket(ctx, info)
    return Response(status_code=200)


async def _object_target(ctx: RequestContext, writing: bool) -> tuple[BucketMD, ObjectMD]:
    """The addressed version; a delete marker answers 405 by version id (or for a write), NoSuchKey
    as the current version."""
    bucket = ctx.bucket_md
    key = ctx.key or ""
    version = ctx.query.get("versionId")
    md = await (get_version(ctx.store, bucket, key, version) if version is not None
                else get_current(ctx.store, bucket, key))
    if md.is_delete_marker:
        raise S3Error("MethodNotAllowed" if version is not None or writing else "NoSuchKey",
                      headers={"x-amz-delete-marker": "true"})
    return bucket, md


def _object_owner(bucket: BucketMD, md: ObjectMD) -> tuple[str, str]:
    if bucket.object_ownership == "BucketOwnerEnforced":
        return bucket.owner, bucket.owner_display_name
    return md.owner_id or bucket.owner, md.owner_display_name


def _version_headers(bucket: BucketMD, md: ObjectMD) -> dict[str, str]:
    return {"x-amz-version-id": external_version_id(md)} if bucket.versioning_status is not None else {}


@action("GetObjectAcl")
async def get_object_acl(ctx: RequestContext) -> Response:
    bucket, md = await _object_target(ctx, writing=False)
    owner, owner_name = _object_owner(bucket, md)
    acl = md.acl if bucket.object_ownership != "BucketOwnerEnforced" else {"Canned": "private"}
    pairs = acls.grants(acl, owner, bucket.owner, bucket=False)
    doc = acls.acl_document(pairs, owner, _display_name(ctx, owner, owner_name), ctx.config)
    return xml_response(doc, headers=_version_headers(bucket, md))


@action("PutObjectAcl")
async def put_object_acl(ctx: RequestContext) -> Response:
    bucket, md = await _object_target(ctx, writing=True)
    owner, _ = _object_owner(bucket, md)
    new_acl = await _requested_acl(ctx, owner, bucket=False)
    check_acl_change(bucket, new_acl, bucket.owner)
    md.acl = new_acl
    await ctx.store.put_object(bucket.name, md.key, md, version_id=md.version_id)
    return Response(status_code=200, headers=_version_headers(bucket, md))
