"""Object tagging (Put/Get/DeleteObjectTagging), bucket tagging (Put/Get/DeleteBucketTagging),
the x-amz-tagging header and CopyObject's x-amz-tagging-directive.

Tag writes update the addressed version in place (Store.put_object with its version id, the
reference's way of changing one version's metadata); a bucket's tags are a field of its BucketMD.
"""
from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from starlette.responses import Response

from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.context import RequestContext
from gateway.models import BucketMD, ObjectMD
from gateway.router import action
from gateway.versioning import external_version_id, get_current, get_version
from gateway.xml import children, local, parse, root, sub
from shared.errors import S3Error

MAX_TAGS = 10                 # per object (AWS: "Object tags cannot be greater than 10")
MAX_BUCKET_TAGS = 50          # per bucket
MAX_TAG_KEY = 128             # characters, counted as AWS does: UTF-16 code units
MAX_TAG_VALUE = 256
SYSTEM_PREFIX = "aws:"        # reserved for AWS-generated tags
_HEADER_MESSAGE = ("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters "
                   "without tag name duplicates.")


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_tag(key: str, value: str) -> None:
    if not key or _utf16_length(key) > MAX_TAG_KEY:
        raise S3Error("InvalidTag", "The TagKey you have provided is invalid")
    if _utf16_length(value) > MAX_TAG_VALUE:
        raise S3Error("InvalidTag", "The TagValue you have provided is invalid")


def validate_tags(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """An object's tag set: at most 10 tags (else BadRequest, as AWS), keys of 1..128 and
    values of 0..256 characters, no `aws:` key, no key twice (else InvalidTag)."""
    if len(pairs) > MAX_TAGS:
        raise S3Error("BadRequest", f"Object tags cannot be greater than {MAX_TAGS}")
    tags: dict[str, str] = {}
    for key, value in pairs:
        _check_tag(key, value)
        if key.startswith(SYSTEM_PREFIX):
            raise S3Error("InvalidTag", "Your TagKey cannot be prefixed with aws:")
        if key in tags:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        tags[key] = value
    return tags


def tags_from_header(value: str | None) -> dict[str, str]:
    """The x-amz-tagging request header (PutObject, CopyObject, CreateMultipartUpload): a
    URL-encoded query string, "k1=v1&k2=v2" ("k" alone is k with the empty value).
    A pair with several "=" or an empty key, and a key given twice, are InvalidArgument."""
    if not value:
        return {}
    pairs: list[tuple[str, str]] = []
    for pair in value.split("&"):
        if not pair:
            continue
        if pair.count("=") > 1:
            raise _header_error(value)
        parsed = parse_qsl(pair, keep_blank_values=True)
        if len(parsed) != 1 or not parsed[0][0]:
            raise _header_error(value)
        pairs.append(parsed[0])
    if len({key for key, _ in pairs}) != len(pairs):
        raise _header_error(value)
    return validate_tags(pairs)


def _header_error(value: str) -> S3Error:
    return S3Error("InvalidArgument", _HEADER_MESSAGE, ArgumentName="x-amz-tagging", ArgumentValue=value)


def parse_tagging_document(body: bytes) -> list[tuple[str, str]]:
    """(key, value) of each Tag of a <Tagging><TagSet>...</TagSet></Tagging> request document,
    in document order; MalformedXML unless it is exactly that shape."""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="Tagging")
    tag_sets = children(doc, "TagSet")
    if len(tag_sets) != 1 or len(doc) != 1:
        raise S3Error("MalformedXML")
    pairs = []
    for tag in tag_sets[0]:
        if local(tag.tag) != "Tag":
            raise S3Error("MalformedXML")
        keys, values = children(tag, "Key"), children(tag, "Value")
        if len(keys) != 1 or len(values) != 1 or len(tag) != 2:
            raise S3Error("MalformedXML")
        pairs.append((keys[0].text or "", values[0].text or ""))
    return pairs


def tagging_response(pairs: Iterable[tuple[str, str]], headers: dict[str, str] | None = None) -> Response:
    doc = root("Tagging")
    tag_set = sub(doc, "TagSet")
    for key, value in pairs:
        tag = sub(tag_set, "Tag")
        sub(tag, "Key", key)
        sub(tag, "Value", value)
    return xml_response(doc, headers=headers)


async def _target(ctx: RequestContext, writing: bool = False) -> tuple[BucketMD, ObjectMD]:
    """The addressed version; on a delete marker: 405 for a write or any versionId request
    (the marker exists but takes no tags), NoSuchKey for a read of the latest."""
    bucket = ctx.bucket_md
    key = ctx.key or ""
    version = ctx.query.get("versionId")
    if version is not None:
        md = await get_version(ctx.store, bucket, key, version)
    else:
        md = await get_current(ctx.store, bucket, key)
    if md.is_delete_marker:
        raise S3Error("MethodNotAllowed" if version is not None or writing else "NoSuchKey",
                      headers={"x-amz-delete-marker": "true"})
    return bucket, md


async def rewrite_version(ctx: RequestContext, bucket: BucketMD, md: ObjectMD) -> None:
    """Store changed metadata of an existing version (and of the master when it is that version);
    a version-less master is rewritten as the master alone."""
    await ctx.store.put_object(bucket.name, md.key, md, version_id=md.version_id)


def _headers(bucket: BucketMD, md: ObjectMD) -> dict[str, str]:
    return {"x-amz-version-id": external_version_id(md)} if bucket.versioning_status is not None else {}


@action("PutObjectTagging")
async def put_object_tagging(ctx: RequestContext) -> Response:
    tags = validate_tags(parse_tagging_document(await read_xml_body(ctx)))
    bucket, md = await _target(ctx, writing=True)
    md.tags = tags
    await rewrite_version(ctx, bucket, md)
    return Response(status_code=200, headers=_headers(bucket, md))


@action("GetObjectTagging")
async def get_object_tagging(ctx: RequestContext) -> Response:
    bucket, md = await _target(ctx)
    return tagging_response(md.tags.items(), headers=_headers(bucket, md))


@action("DeleteObjectTagging")
async def delete_object_tagging(ctx: RequestContext) -> Response:
    bucket, md = await _target(ctx)
    if md.tags:
        md.tags = {}
        await rewrite_version(ctx, bucket, md)
    return Response(status_code=204, headers=_headers(bucket, md))


# ---------------------------------------------------------------- bucket tagging

def validate_bucket_tags(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    """A bucket's tag set as stored in its attributes (`tags`, the original's BucketInfo shape:
    [{"Value": v, "Key": k}, ...] in request order): at most 50 tags, keys of 1..128 and
    values of 0..256 characters, no `aws:` key, no key twice; else InvalidTag."""
    if len(pairs) > MAX_BUCKET_TAGS:
        raise S3Error("InvalidTag", f"Bucket tag count cannot be greater than {MAX_BUCKET_TAGS}")
    seen: set[str] = set()
    for key, value in pairs:
        _check_tag(key, value)
        if key.startswith(SYSTEM_PREFIX):
            raise S3Error("InvalidTag", "System tags cannot be added/updated by requester")
        if key in seen:
            raise S3Error("InvalidTag", "Cannot provide multiple Tags with the same key")
        seen.add(key)
    return [{"Value": value, "Key": key} for key, value in pairs]


def _stored_bucket_tags(bucket: BucketMD) -> list[tuple[str, str]]:
    tags = bucket.tags
    if isinstance(tags, dict):   # tolerate the object form {key: value}
        return list(tags.items())
    return [(str(t.get("Key", "")), str(t.get("Value", ""))) for t in tags if isinstance(t, dict)]


async def _store_bucket_tags(ctx: RequestContext, bucket: BucketMD, tags: list[dict[str, str]]) -> None:
    bucket.tags = tags
    await save_bucket(ctx, bucket)


@action("PutBucketTagging")
async def put_bucket_tagging(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    tags = validate_bucket_tags(parse_tagging_document(await read_xml_body(ctx)))
    await _store_bucket_tags(ctx, bucket, tags)
    return Response(status_code=204)


@action("GetBucketTagging")
async def get_bucket_tagging(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    pairs = _stored_bucket_tags(bucket)
    if not pairs:
        raise S3Error("NoSuchTagSet", BucketName=bucket.name)
    return tagging_response(pairs)


@action("DeleteBucketTagging")
async def delete_bucket_tagging(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if bucket.tags:
        await _store_bucket_tags(ctx, bucket, [])
    return Response(status_code=204)
