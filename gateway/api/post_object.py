"""PostObject (POST /bucket, multipart/form-data): the browser form upload.

The form is read by gateway/formdata.py and authenticated by gateway/auth/form.py
(the policy and its signature) before a single file byte is stored. Fields precede
the file (AWS ignores fields after it), so everything is checked when the file part
starts; the file is streamed into the data store while its MD5 is computed, never
held whole in memory. Three success answers: 204 (default), 200 / 201 PostResponse,
303 redirect.
"""
from __future__ import annotations

import hashlib
from typing import AsyncIterator
from urllib.parse import quote, urlencode, urlsplit

from starlette.responses import Response

from gateway.api.common import user_metadata, xml_response
from gateway import objectlock
from gateway.auth.form import authenticate_form, check_policy_fields, length_range, missing_field
from gateway.authz import authorize, new_object_acl, new_object_owner
from gateway.context import RequestContext
from gateway.formdata import FormReader, form_boundary, read_fields
from gateway.limits import MAX_SINGLE_UPLOAD_BYTES, check_object_key
from gateway.models import EMPTY_MD5, USER_META_PREFIX, new_object_md
from gateway.objectdata import store_stream, stored_md5
from gateway import placement, sse
from gateway.data.base import ObjectName
from gateway.router import action
from gateway.server import location_header
from gateway.versioning import commit_new_object, external_version_id
from gateway.xml import root, sub
from shared.errors import S3Error

FILENAME_VARIABLE = "${filename}"
SUCCESS_STATUSES = (200, 201, 204)
DEFAULT_SUCCESS_STATUS = 204
# Form fields that become object headers, as on PutObject.
_HEADER_FIELDS = ("cache-control", "content-type", "content-disposition", "content-encoding", "expires",
                  "x-amz-storage-class", "x-amz-website-redirect-location")


class _SizedFile:
    """The file part's bytes, hashed and held to the policy's and AWS's size limits as they pass."""

    def __init__(self, source: AsyncIterator[bytes], high: int):
        self._source = source
        self._high = high
        self.size = 0
        self.md5 = hashlib.md5()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._source:
            self.size += len(piece)
            if self.size > self._high:
                raise S3Error("EntityTooLarge", MaxSizeAllowed=str(self._high), ProposedSize=str(self.size))
            self.md5.update(piece)
            yield piece


async def _first_piece(source: AsyncIterator[bytes]) -> bytes:
    async for piece in source:
        if piece:
            return piece
    return b""


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for piece in rest:
        yield piece


def _object_key(fields: dict[str, str], filename: str | None) -> str:
    template = fields.get("key")
    if template is None:
        raise missing_field("key")
    key = template.replace(FILENAME_VARIABLE, filename or "")
    if not key:
        raise S3Error("InvalidArgument", "User key must have a length greater than 0.", ArgumentName="key",
                      ArgumentValue="")
    check_object_key(key)
    return key


def _success_response(ctx: RequestContext, fields: dict[str, str], key: str, etag: str,
                      headers: dict[str, str]) -> Response:
    location = f"{ctx.request.url.scheme}://{ctx.request.headers.get('host', '')}/{ctx.bucket}/{quote(key)}"
    headers = {**headers, "ETag": etag, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        redirect = location_header(redirect)   # as a browser would send it
        parts = urlsplit(redirect)
        if parts.scheme in ("http", "https") and parts.netloc:
            query = urlencode({"bucket": ctx.bucket, "key": key, "etag": etag})
            headers["Location"] = f"{redirect}{'&' if parts.query else '?'}{query}"
            return Response(status_code=303, headers=headers)
    raw_status = fields.get("success_action_status", "")
    status = int(raw_status) if raw_status.isdigit() and int(raw_status) in SUCCESS_STATUSES \
        else DEFAULT_SUCCESS_STATUS
    if status != 201:
        return Response(status_code=status, headers=headers)
    doc = root("PostResponse", namespaced=False)
    sub(doc, "Location", location)
    sub(doc, "Bucket", ctx.bucket)
    sub(doc, "Key", key)
    sub(doc, "ETag", etag)
    return xml_response(doc, 201, headers)


@action("PostObject")
async def post_object(ctx: RequestContext) -> Response:
    reader = FormReader(ctx.request.stream(), form_boundary(ctx.headers.get("content-type")))
    fields, file_part = await read_fields(reader)
    if file_part is None:
        raise S3Error("IncorrectNumberOfFilesInPostRequest")
    key = _object_key(fields, file_part.filename)
    account, policy = authenticate_form(fields, ctx.config)
    if policy is not None:
        check_policy_fields(policy, fields, ctx.bucket or "")
    ctx.account = account
    bucket = ctx.bucket_md
    authorize(ctx, bucket, "s3:PutObject", key=key, account=account)
    acl = fields.get("acl")
    object_acl = new_object_acl(ctx, bucket, fields, canned_name="acl")
    owner_id, owner_name = new_object_owner(ctx, bucket, account, canned=acl)
    meta = user_metadata({name: value for name, value in fields.items() if name.startswith(USER_META_PREFIX)})
    lock = objectlock.lock_from_headers({name.lower(): value for name, value in fields.items()}, bucket)
    low, high = length_range(policy)
    encryption = sse.for_write(ctx, bucket, fields)   # x-amz-server-side-encryption* form fields

    body = _SizedFile(reader.data(), min(high, MAX_SINGLE_UPLOAD_BYTES) if high is not None
                      else MAX_SINGLE_UPLOAD_BYTES)
    chunks = body.__aiter__()
    first = await _first_piece(chunks)

    def check() -> None:
        if body.size < low:
            raise S3Error("EntityTooSmall", MinSizeAllowed=str(low), ProposedSize=str(body.size))

    location = None
    # issue 16: the x-amz-meta-scal-location-constraint form field places the object, as the header does
    placed = await placement.object_location(ctx, bucket, {n.lower(): v for n, v in fields.items()})
    if first:
        location = await store_stream(ctx.services, placed, _chained(first, chunks), None,
                                      lambda: (body.size, body.md5.hexdigest()), check,
                                      keys=encryption.keys(ctx.services) if encryption is not None else None,
                                      name=ObjectName(bucket.name, key))
    else:
        check()
    md5 = stored_md5(location, EMPTY_MD5)   # not the plaintext's for SSE-KMS and SSE-C (as AWS)
    object_headers = {name: fields[name] for name in _HEADER_FIELDS if name in fields}
    md = new_object_md(key, owner_id, owner_name, size=body.size, md5=md5, location=location,
                       data_store_name=placed, headers=object_headers, user_meta=meta)
    md.origin_op = "s3:ObjectCreated:Post"
    if encryption is not None:
        md.update(encryption.stored_fields())
    md.acl = object_acl
    objectlock.apply_to_new_version(md, bucket, lock)
    committed = await commit_new_object(ctx.services, bucket, key, md, location, log=ctx.extra_log)
    headers = encryption.response_headers() if encryption is not None else {}
    if committed.version_id is not None:
        headers["x-amz-version-id"] = external_version_id(md, committed.version_id)
    return _success_response(ctx, fields, key, f'"{md5}"', headers)
