"""Object tagging (Put/Get/DeleteObjectTagging) and the x-amz-tagging header.

Tag writes update the addressed version in place through the engine's
`versionId` put, the reference's way of changing one version's metadata.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import Response

from gateway.api.common import get_object_md, read_xml_body, xml_response
from gateway.api.object_versions import get_version_md, resolve_version_options
from gateway.context import RequestContext
from gateway.models import BucketInfo
from gateway.router import action
from gateway.versioning import external_version_id
from gateway.xml import child_text, children, local, parse, root, sub
from shared.errors import S3Error

MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


def validate_tags(pairs: list[tuple[str, str]]) -> dict[str, str]:
    if len(pairs) > MAX_TAGS:
        raise S3Error("InvalidTag", "Object tags cannot be greater than 10")
    tags: dict[str, str] = {}
    for key, value in pairs:
        if not key or len(key) > MAX_TAG_KEY:
            raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
        if len(value) > MAX_TAG_VALUE:
            raise S3Error("InvalidTag", "The TagValue you have provided is invalid")
        if key in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[key] = value
    return tags


def tags_from_header(value: str | None) -> dict[str, str]:
    """The x-amz-tagging request header: a URL-encoded query string."""
    if not value:
        return {}
    return validate_tags(parse_qsl(value, keep_blank_values=True))


async def _target(ctx: RequestContext, writing: bool = False) -> tuple[BucketInfo, dict[str, Any]]:
    """The addressed version; on a delete marker: 405 for a write or any versionId request
    (the marker exists but takes no tags), NoSuchKey for a read of the latest."""
    bucket = await ctx.authorized_bucket()
    key = ctx.key or ""
    version = ctx.query.get("versionId")
    if version is not None:
        md = await get_version_md(ctx, bucket, key, await resolve_version_options(ctx, bucket, key, version), version)
    else:
        md = await get_object_md(ctx, bucket.name, key)
    if md.get("isDeleteMarker"):
        raise S3Error("MethodNotAllowed" if version is not None or writing else "NoSuchKey",
                      headers={"x-amz-delete-marker": "true"})
    return bucket, md


async def rewrite_version(ctx: RequestContext, bucket: BucketInfo, md: dict[str, Any]) -> None:
    """Store changed metadata of an existing version (and of the master when it is that version)."""
    options = {"versionId": md["versionId"]} if md.get("versionId") else {}
    await ctx.services.metadata.put([bucket.name], md["key"], json.dumps(md), options)


def _headers(bucket: BucketInfo, md: dict[str, Any]) -> dict[str, str]:
    return {"x-amz-version-id": external_version_id(md)} if bucket.versioning_status is not None else {}


@action("PutObjectTagging")
async def put_object_tagging(ctx: RequestContext) -> Response:
    doc = parse(await read_xml_body(ctx))
    if local(doc.tag) != "Tagging":
        raise S3Error("MalformedXML")
    tag_sets = children(doc, "TagSet")
    if len(tag_sets) != 1:
        raise S3Error("MalformedXML")
    pairs = []
    for tag in children(tag_sets[0], "Tag"):
        key, value = child_text(tag, "Key"), child_text(tag, "Value")
        if key is None or value is None:
            raise S3Error("MalformedXML")
        pairs.append((key, value))
    tags = validate_tags(pairs)
    bucket, md = await _target(ctx, writing=True)
    md["tags"] = tags
    await rewrite_version(ctx, bucket, md)
    return Response(status_code=200, headers=_headers(bucket, md))


@action("GetObjectTagging")
async def get_object_tagging(ctx: RequestContext) -> Response:
    bucket, md = await _target(ctx)
    doc = root("Tagging")
    tag_set = sub(doc, "TagSet")
    for key, value in (md.get("tags") or {}).items():
        tag = sub(tag_set, "Tag")
        sub(tag, "Key", key)
        sub(tag, "Value", value)
    return xml_response(doc, headers=_headers(bucket, md))


@action("DeleteObjectTagging")
async def delete_object_tagging(ctx: RequestContext) -> Response:
    bucket, md = await _target(ctx)
    if md.get("tags"):
        md["tags"] = {}
        await rewrite_version(ctx, bucket, md)
    return Response(status_code=204, headers=_headers(bucket, md))
