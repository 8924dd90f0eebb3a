"""Bucket policy, Block Public Access and Object Ownership actions:
Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus, Put/Get/DeletePublicAccessBlock,
Put/Get/DeleteBucketOwnershipControls.

Stored in the bucket record (BucketMD): `bucketPolicy` (the parsed JSON, the original's field) with
our `bucketPolicyId` (the parsed-policy cache key, gateway/authz.py), `publicAccessBlockConfiguration`
and `ownershipControls` (`{"Rules": [{"ObjectOwnership": ...}]}`).
"""
from __future__ import annotations

import json
import uuid

from starlette.responses import Response

from gateway import acl as acls
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.authz import bucket_policy
from gateway.context import RequestContext
from gateway.policy import BucketPolicy
from gateway.router import action
from gateway.xml import children, local, parse, root, sub
from shared.errors import S3Error

PUBLIC_ACCESS_BLOCK_FIELDS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
OBJECT_OWNERSHIPS = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")
MAX_POLICY_BYTES = 20 * 1024   # AWS: a bucket policy is at most 20 KB



# ---------------------------------------------------------------- bucket policy

@action("PutBucketPolicy")
async def put_bucket_policy(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    body = await read_xml_body(ctx)
    if len(body) > MAX_POLICY_BYTES:
        raise S3Error("MalformedPolicy", "Policy exceeds the maximum allowed document size.")
    policy = BucketPolicy.parse(body, info.name)   # MalformedPolicy with AWS's reason
    pab = info.public_access_block or {}
    if pab.get("BlockPublicPolicy") and policy.is_public():
        raise S3Error("AccessDenied", "User is not authorized to perform s3:PutBucketPolicy on this bucket because "
                      "public policies are blocked by the BlockPublicPolicy block public access setting.")
    info.set_policy(json.loads(body), uuid.uuid4().hex)
    await save_bucket(ctx, info)
    return Response(status_code=204)


@action("GetBucketPolicy")
async def get_bucket_policy(ctx: RequestContext) -> Response:
    doc = ctx.bucket_md.policy
    if doc is None:
        raise S3Error("NoSuchBucketPolicy", BucketName=ctx.bucket_md.name)
    return Response(json.dumps(doc), status_code=200, media_type="application/json")


@action("DeleteBucketPolicy")
async def delete_bucket_policy(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    if info.policy is not None:
        info.set_policy(None, None)
        await save_bucket(ctx, info)
    return Response(status_code=204)


@action("GetBucketPolicyStatus")
async def get_bucket_policy_status(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    if info.policy is None:
        raise S3Error("NoSuchBucketPolicy", BucketName=info.name)
    policy = bucket_policy(info)
    doc = root("PolicyStatus")
    sub(doc, "IsPublic", "true" if policy is not None and policy.is_public() else "false")
    return xml_response(doc)


# ---------------------------------------------------------------- Block Public Access

def _boolean(text: str | None) -> bool:
    value = (text or "").strip().lower()
    if value not in ("true", "false"):
        raise S3Error("MalformedXML")
    return value == "true"


@action("PutPublicAccessBlock")
async def put_public_access_block(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    doc = parse(await read_xml_body(ctx), root_tag="PublicAccessBlockConfiguration")
    config = dict.fromkeys(PUBLIC_ACCESS_BLOCK_FIELDS, False)
    for el in doc:
        name = local(el.tag)
        if name not in PUBLIC_ACCESS_BLOCK_FIELDS or len(children(doc, name)) > 1:
            raise S3Error("MalformedXML")
        config[name] = _boolean(el.text)
    info.public_access_block = config
    await save_bucket(ctx, info)
    return Response(status_code=200)


@action("GetPublicAccessBlock")
async def get_public_access_block(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    config = info.public_access_block
    if config is None:
        raise S3Error("NoSuchPublicAccessBlockConfiguration", BucketName=info.name)
    doc = root("PublicAccessBlockConfiguration")
    for name in PUBLIC_ACCESS_BLOCK_FIELDS:
        sub(doc, name, "true" if config.get(name) else "false")
    return xml_response(doc)


@action("DeletePublicAccessBlock")
async def delete_public_access_block(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    if info.public_access_block is not None:
        info.public_access_block = None
        await save_bucket(ctx, info)
    return Response(status_code=204)


# ---------------------------------------------------------------- Object Ownership

@action("PutBucketOwnershipControls")
async def put_bucket_ownership_controls(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    doc = parse(await read_xml_body(ctx), root_tag="OwnershipControls")
    rules = children(doc, "Rule")
    if len(rules) != 1 or len(list(doc)) != 1:
        raise S3Error("MalformedXML")
    values = children(rules[0], "ObjectOwnership")
    if len(values) != 1 or len(list(rules[0])) != 1:
        raise S3Error("MalformedXML")
    ownership = (values[0].text or "").strip()
    if ownership not in OBJECT_OWNERSHIPS:
        raise S3Error("MalformedXML")
    if ownership == "BucketOwnerEnforced" and not acls.is_bucket_owner_full_control(info.acl, info.owner):
        raise S3Error("InvalidBucketAclWithObjectOwnership")
    info.object_ownership = ownership
    await save_bucket(ctx, info)
    return Response(status_code=200)


@action("GetBucketOwnershipControls")
async def get_bucket_ownership_controls(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    ownership = info.object_ownership
    if ownership is None:
        raise S3Error("OwnershipControlsNotFoundError", BucketName=info.name)
    doc = root("OwnershipControls")
    rule = sub(doc, "Rule")
    sub(rule, "ObjectOwnership", ownership)
    return xml_response(doc)


@action("DeleteBucketOwnershipControls")
async def delete_bucket_ownership_controls(ctx: RequestContext) -> Response:
    info = ctx.bucket_md
    if info.object_ownership is not None:
        info.object_ownership = None
        await save_bucket(ctx, info)
    return Response(status_code=204)
