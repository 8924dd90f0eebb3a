"""Object actions: PutObject, GetObject, HeadObject, DeleteObject.

Write order (docs/durability.md#write-order-on-the-gateway): body -> data store while hashing and
verifying; on any mismatch the new blob is deleted and metadata untouched;
then the metadata commit; only then the replaced data is freed.
"""
from __future__ import annotations

from typing import Any

from starlette.responses import Response, StreamingResponse

from gateway import objectlock
from gateway.lifecycle import rules as lifecycle
from gateway.api.common import (
    check_conditions,
    check_delete_conditions,
    check_write_conditions,
    object_headers,
    parse_range,
    user_metadata,
)
from gateway.api.objectlock import may_bypass_governance
from gateway.api.parts import parse_part_number, part_range
from gateway.api.tagging import tags_from_header
from gateway import placement, sse
from gateway.data.base import ObjectName
from gateway.auth.payload import VerifiedBody
from gateway.authz import actor, new_object_acl, new_object_owner
from gateway.context import RequestContext
from gateway.limits import MAX_SINGLE_UPLOAD_BYTES
from gateway.models import EMPTY_MD5, BucketMD, ObjectMD, checksum_record, new_object_md
from gateway.objectdata import open_range, refuse_oversized, store_stream, stored_md5
from gateway.router import action
from gateway.websiteconfig import check_redirect_location
from gateway.versioning import (
    commit_new_object,
    delete_object as delete_object_version,
    external_version_id,
    get_version,
    refuse_version_id,
)
from shared.errors import S3Error

SMALL_BODY_BYTES = 256 * 1024  # GET bodies up to this size are sent whole (bounded memory per request)


async def store_body(ctx: RequestContext, bucket: BucketMD, encryption: sse.Encryption | None = None,
                     location: str | None = None, name: ObjectName | None = None,
                     ) -> tuple[VerifiedBody, list[dict[str, Any]] | None]:
    """Stream the request body into the bucket's data location, verified (and sealed with
    `encryption`, gateway/sse.py).

    Returns the body (size, md5, checksum) and the location list (None for an
    empty object, which never reaches the data store).
    """
    body = VerifiedBody(ctx.auth, ctx.auth_request, ctx.request.stream())
    size = body.expected_size
    if size is None:
        raise S3Error("MissingContentLength")
    refuse_oversized(size, MAX_SINGLE_UPLOAD_BYTES)
    if size == 0:
        async for _ in body:
            pass
        return body, None

    def check() -> None:
        # `complete`: verified to the end (VerifiedBody lets the last byte through only then).
        if body.size != size or not body.complete:
            raise S3Error("IncompleteBody")

    return body, await store_stream(ctx.services, location or bucket.location, body.__aiter__(), size,
                                    lambda: (body.size, body.md5_hex), check,
                                    keys=encryption.keys(ctx.services) if encryption is not None else None,
                                    name=name)


def full_object_checksum(body: VerifiedBody) -> dict[str, Any] | None:
    """The stored checksum of a body verified against an x-amz-checksum-* value (None without one)."""
    return None if body.checksum is None else checksum_record(*body.checksum)


@action("PutObject")
async def put_object(ctx: RequestContext) -> Response:
    refuse_version_id(ctx.query)   # before any data moves
    bucket = ctx.bucket_md
    key = ctx.key or ""
    check_redirect_location(ctx.headers.get("x-amz-website-redirect-location"))
    meta = user_metadata(ctx.headers)
    tags = tags_from_header(ctx.headers.get("x-amz-tagging"))
    conditional = "if-none-match" in ctx.headers or "if-match" in ctx.headers
    if conditional:   # refuse early, before any data moves
        check_write_conditions(ctx.headers, await ctx.current_object(), key)
    acl = new_object_acl(ctx, bucket)   # refused before any data moves
    owner_id, owner_name = new_object_owner(ctx, bucket)
    lock = objectlock.check_write(ctx.headers, bucket)
    encryption = sse.for_write(ctx, bucket)   # refused before any data moves
    placed = await placement.object_location(ctx, bucket)   # issue 16: the placement header, else the bucket's
    body, location = await store_body(ctx, bucket, encryption, placed, ObjectName(bucket.name, key))
    md5 = stored_md5(location, EMPTY_MD5)   # the plaintext's MD5, but not for SSE-KMS and SSE-C (as AWS)
    md = new_object_md(key, owner_id, owner_name, size=body.size, md5=md5,
                       location=location, data_store_name=placed,
                       headers=ctx.headers, user_meta=meta)
    md.acl = acl
    md.checksum = full_object_checksum(body)
    md.tags = tags
    if encryption is not None:
        md.update(encryption.stored_fields())
    objectlock.apply_to_new_version(md, bucket, lock)
    # The conditions are checked again against what is there now: the body took time.
    committed = await commit_new_object(
        ctx.services, bucket, key, md, location,
        (lambda current: check_write_conditions(ctx.headers, current, key)) if conditional else None,
        ctx.extra_log)
    headers = {"ETag": f'"{md5}"'}
    if committed.version_id is not None:
        headers["x-amz-version-id"] = external_version_id(md, committed.version_id)
    if body.checksum is not None:
        headers[f"x-amz-checksum-{body.checksum[0].lower()}"] = body.checksum[1]
    if encryption is not None:
        headers.update(encryption.response_headers())
    headers.update(lifecycle.expiration_header(bucket, md, ctx.config.lifecycle_day_seconds))
    return Response(status_code=200, headers=headers)


async def read_target(ctx: RequestContext) -> tuple[BucketMD, ObjectMD]:
    """The version a GET/HEAD (or GetObjectAttributes) reads: ?versionId's, else the current one.
    A delete marker answers 404 NoSuchKey (current) or 405 MethodNotAllowed (by version id)."""
    key = ctx.key or ""
    bucket = ctx.bucket_md
    version = ctx.query.get("versionId")
    if version is not None:
        md = await get_version(ctx.store, bucket, key, version)
    else:
        md = await ctx.current_object()
        if md is None:
            raise S3Error("NoSuchKey", Key=key)
    if md.is_delete_marker:
        headers = {"x-amz-delete-marker": "true", "x-amz-version-id": external_version_id(md)}
        if version is not None:
            raise S3Error("MethodNotAllowed", headers={**headers, "Last-Modified": md.last_modified})
        raise S3Error("NoSuchKey", headers=headers, Key=key)
    return bucket, md


def _response_headers(ctx: RequestContext, bucket: BucketMD, md: ObjectMD) -> dict[str, str]:
    headers = object_headers(md, ctx.query)
    if bucket.versioning_status is not None:
        headers["x-amz-version-id"] = external_version_id(md)
    headers.update(objectlock.response_headers(bucket, md))
    if "versionId" not in ctx.query:   # the current version: when a lifecycle rule expires it
        headers.update(lifecycle.expiration_header(bucket, md, ctx.config.lifecycle_day_seconds))
    checksum = md.checksum
    if checksum and ctx.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
        headers[f"x-amz-checksum-{checksum['checksumAlgorithm'].lower()}"] = checksum["checksumValue"]
        headers["x-amz-checksum-type"] = checksum.get("checksumType") or "FULL_OBJECT"
    return headers


def _selected_bytes(ctx: RequestContext, md: ObjectMD, headers: dict[str, str]) -> tuple[int, int, int]:
    """(first, last, status) of a GET/HEAD, from the Range header or ?partNumber; sets Content-Range."""
    size = md.size
    if "partNumber" in ctx.query:
        if "range" in ctx.headers:
            raise S3Error("InvalidRequest", "Cannot specify both Range header and partNumber query parameter")
        first, last, count = part_range(md, parse_part_number(ctx.query["partNumber"]))
        if md.upload_id:
            headers["x-amz-mp-parts-count"] = str(count)
        if size == 0:
            return 0, -1, 200
    else:
        byte_range = parse_range(ctx.headers.get("range"), size)
        if byte_range is None:
            return 0, size - 1, 200
        first, last = byte_range
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    # A checksum describes the whole object, not a range of it.
    for name in [h for h in headers if h.startswith("x-amz-checksum-")]:
        del headers[name]
    return first, last, 206


async def _read_response(ctx: RequestContext) -> tuple[ObjectMD, dict[str, str], int, int, int]:
    """What GetObject and HeadObject answer alike: (metadata, headers, first, last, status)."""
    bucket, md = await read_target(ctx)
    customer = sse.check_customer(ctx, md)   # SSE-C: the key it was written with
    check_conditions(ctx.headers, md.etag, md.last_modified)
    headers = _response_headers(ctx, bucket, md)
    headers.update(sse.object_headers(md, customer))
    first, last, status = _selected_bytes(ctx, md, headers)
    headers["Content-Length"] = str(last - first + 1)
    return md, headers, first, last, status


@action("GetObject")
async def get_object(ctx: RequestContext) -> Response:
    md, headers, first, last, status = await _read_response(ctx)
    # Opened before the status is chosen: a location not served here, or a first blob that cannot be
    # read, is an S3 error rather than a 200 with a broken body.
    customer = sse.check_customer(ctx, md)
    chunks = await open_range(ctx.services, md.location, first, last, customer.key if customer else None)
    if last - first + 1 <= SMALL_BODY_BYTES:
        # Small bodies in one piece: a streaming response costs a task group per request.
        return Response(b"".join([c async for c in chunks]), status_code=status, headers=headers)
    return StreamingResponse(chunks, status_code=status, headers=headers)


@action("HeadObject")
async def head_object(ctx: RequestContext) -> Response:
    _md, headers, _first, _last, status = await _read_response(ctx)
    return Response(status_code=status, headers=headers)


@action("DeleteObject")
async def delete_object(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    key = ctx.key or ""
    if_match = ctx.headers.get("if-match")
    if if_match is not None:   # conditional delete: against the current version, even with ?versionId
        check_delete_conditions(if_match, await ctx.current_object(), key)
    deleted = await delete_object_version(ctx.services, bucket, key, ctx.query.get("versionId"), actor(ctx.account),
                                          ctx.extra_log, bypass_governance=may_bypass_governance(ctx, bucket))
    headers = {}
    if deleted.version_id is not None:
        headers["x-amz-version-id"] = deleted.version_id
    if deleted.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return Response(status_code=204, headers=headers)
