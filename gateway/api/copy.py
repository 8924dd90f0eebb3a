"""CopyObject, and what UploadPartCopy shares with it: the copy source.

Owns the `x-amz-copy-source` grammar ("/bucket/key" or "bucket/key",
URL-encoded, optional "?versionId="), reading the source object as the
account may (delete markers answered as AWS does), the
`x-amz-copy-source-if-*` conditions and the data copy itself: the source's
bytes are streamed from its location list into ONE new blob of the
destination's location while hashing, so a copy of a multipart object is a
single-part object whose ETag is the MD5 of its data.

Copy by reference (issue 18, `_link_data`): when the new object's bytes would be exactly the
source blob's (same store, whole object, one piece, no re-encryption, no checksum to compute), the
store names the blob again under a new key (`DataBackend.copy_blob`: a hard link on the dmd) and
no byte moves; the metadata is what streaming would have written. Anything else streams.
"""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import unquote

from starlette.responses import Response

from gateway import checksums, encryption as enc, objectlock, placement, sse
from gateway.data.base import ObjectName
from gateway.api.common import (
    check_conditions,
    user_metadata,
    xml_response,
)
from gateway.api.tagging import tags_from_header
from gateway.authz import authorize, new_object_acl, new_object_owner
from gateway.context import RequestContext
from gateway.limits import MAX_SINGLE_UPLOAD_BYTES
from gateway.models import EMPTY_MD5, BucketMD, ObjectMD, checksum_record, new_object_md
from gateway.objectdata import (link_locations, location_record, part_md5_of_location, read_range, store_stream,
                                 stored_md5)
from gateway.router import action
from gateway.versioning import commit_new_object, external_version_id, get_current, get_version, refuse_version_id
from gateway.xml import root, sub
from shared.errors import S3Error

COPY_SOURCE_HEADER = "x-amz-copy-source"
COPY_SOURCE_PREFIX = "x-amz-copy-source-"          # x-amz-copy-source-if-match ... conditions
METADATA_DIRECTIVE_HEADER = "x-amz-metadata-directive"
TAGGING_DIRECTIVE_HEADER = "x-amz-tagging-directive"
DIRECTIVES = ("COPY", "REPLACE")
VERSION_ID_PARAM = "versionId="
_NOT_A_VERSION_ID = re.compile("[^\x20-\x7e]")     # as gateway/app.py refuses ?versionId= values
# Headers that, given on a copy onto itself, count as "changing" the object (AWS's list).
_SELF_COPY_CHANGES = ("x-amz-storage-class", "x-amz-website-redirect-location",
                      "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                      "x-amz-server-side-encryption-customer-algorithm")
_SELF_COPY_MESSAGE = ("This copy request is illegal because it is trying to copy an object to itself without "
                      "changing the object's metadata, storage class, website redirect location or encryption "
                      "attributes.")
_DELETE_MARKER_SOURCE_MESSAGE = "The source of a copy request may not specifically refer to a delete marker by version id."


@dataclass(frozen=True)
class CopySource:
    bucket: str
    key: str
    version_id: str | None      # the API form ("null" or an encoded id), None for the current version


@dataclass
class SourceObject:
    """The readable source of a copy: its bucket, its metadata and the version id to report."""
    bucket: BucketMD
    md: ObjectMD
    source: CopySource

    @property
    def size(self) -> int:
        return self.md.size

    @property
    def version_header(self) -> dict[str, str]:
        """x-amz-copy-source-version-id, sent when the source bucket has versioning configured."""
        if self.bucket.versioning_status is None:
            return {}
        return {"x-amz-copy-source-version-id": external_version_id(self.md)}


@dataclass
class CopiedData:
    locations: list[dict[str, Any]] | None     # None for an empty copy (never reaches the data store)
    size: int
    md5_hex: str
    checksum: tuple[str, str] | None           # (algorithm, base64) when one was asked for


def _invalid_source(value: str, message: str = "Invalid copy source object key") -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=COPY_SOURCE_HEADER, ArgumentValue=value)


def parse_copy_source(value: str) -> CopySource:
    """"/bucket/key" or "bucket/key" (URL-encoded) with an optional "?versionId=<id>"."""
    raw_path, sep, raw_query = value.partition("?")
    version_id: str | None = None
    if sep:
        if not raw_query.startswith(VERSION_ID_PARAM):
            raise _invalid_source(value, "Invalid copy source version id")
        version_id = unquote(raw_query[len(VERSION_ID_PARAM):])
        if not version_id:
            raise _invalid_source(value, "Invalid copy source version id")
        if _NOT_A_VERSION_ID.search(version_id):   # a NUL, a control or non-ASCII character
            raise _invalid_source(value, "Invalid version id specified")
    try:
        path = unquote(raw_path, errors="strict")
    except UnicodeDecodeError:
        raise _invalid_source(value) from None
    path = path[1:] if path.startswith("/") else path
    bucket, _, key = path.partition("/")
    if not bucket or not key:
        raise _invalid_source(value, "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    return CopySource(bucket, key, version_id)


async def read_copy_source(ctx: RequestContext) -> SourceObject:
    """The source named by x-amz-copy-source, readable by this account, conditions checked."""
    source = parse_copy_source(ctx.headers.get(COPY_SOURCE_HEADER, ""))
    bucket = await ctx.store.get_bucket(source.bucket)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=source.bucket)
    action = "s3:GetObject" if source.version_id is None else "s3:GetObjectVersion"
    try:
        if source.version_id is not None:
            md = await get_version(ctx.store, bucket, source.key, source.version_id)
        else:
            md = await get_current(ctx.store, bucket, source.key)
    except S3Error:
        # Read access on the source first: who may not read it does not learn it is missing.
        authorize(ctx, bucket, action, key=source.key, obj=None)
        raise
    authorize(ctx, bucket, action, key=source.key, obj=None if md.is_delete_marker else md)
    if md.is_delete_marker:
        if source.version_id is not None:
            raise S3Error("InvalidRequest", _DELETE_MARKER_SOURCE_MESSAGE)
        raise S3Error("NoSuchKey", headers={"x-amz-delete-marker": "true"}, Key=source.key)
    check_conditions(ctx.headers, md.etag, md.last_modified, prefix=COPY_SOURCE_PREFIX)
    return SourceObject(bucket, md, source)


async def _hashed(chunks: AsyncIterator[bytes], md5: Any, hasher: checksums.Hasher | None) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        md5.update(chunk)
        if hasher is not None:
            hasher.update(chunk)
        yield chunk


async def copy_data(ctx: RequestContext, src: SourceObject, first: int, last: int, dest: BucketMD,
                    checksum_algorithm: str | None, *, source_key: bytes | None = None,
                    encryption: sse.Encryption | None = None, location: str | None = None,
                    name: ObjectName | None = None) -> CopiedData:
    """Stream bytes first..last of the source into one new blob of `dest`'s location: opened with
    the source's keys (`source_key`: its SSE-C key), sealed with `encryption` (gateway/sse.py)."""
    size = last - first + 1
    if size > 0 and first == 0 and last == src.size - 1 and source_key is None:
        linked = await _link_data(ctx, src, location or dest.location, checksum_algorithm, encryption)
        if linked is not None:
            return linked
    md5 = hashlib.md5()
    hasher = checksums.new_hasher(checksum_algorithm) if checksum_algorithm else None
    if size <= 0:
        checksum = (checksum_algorithm, checksums.b64(hasher.digest())) if hasher and checksum_algorithm else None
        return CopiedData(None, 0, EMPTY_MD5, checksum)
    chunks = _hashed(read_range(ctx.services, src.md.location, first, last, source_key), md5, hasher)
    locations = await store_stream(ctx.services, location or dest.location, chunks, size,
                                   lambda: (size, md5.hexdigest()),
                                   keys=encryption.keys(ctx.services) if encryption is not None else None, name=name)
    checksum = (checksum_algorithm, checksums.b64(hasher.digest())) if hasher and checksum_algorithm else None
    return CopiedData(locations, size, stored_md5(locations, md5.hexdigest()), checksum)


_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_ENCRYPTION_FIELDS = (enc.F_SCHEME, enc.F_KEY_ID, enc.F_DATA_KEY, enc.F_CONTEXT, enc.F_NONCE, enc.F_STORED_SIZE)


def _same_encryption(ctx: RequestContext, src_md: ObjectMD, loc: dict[str, Any],
                     encryption: sse.Encryption | None) -> bool:
    """Whether the source blob `loc` is, byte for byte, what a write with `encryption` may store.
    Plaintext to plaintext; SSE-S3/SSE-KMS only under the same master key, context and algorithm
    (the algorithm decides what the ETag is the MD5 of). SSE-C never (its key is the customer's).
    Sharing the sealed blob shares its data key and nonces, but only for identical plaintext."""
    if loc.get("cipheredDataKey"):   # the original's own encryption: streaming refuses it properly
        return False
    if encryption is None:
        return not enc.is_encrypted(loc)
    if encryption.customer is not None or not enc.is_encrypted(loc) or loc.get(enc.F_CUSTOMER):
        return False
    if src_md.get(sse.MD_ALGORITHM) != (encryption.algorithm or sse.AES256):
        return False
    keys = encryption.keys(ctx.services)
    if not isinstance(keys, enc.KmsKeys) or loc.get(enc.F_KEY_ID) != keys.key_id:
        return False
    context = base64.b64encode(keys.context).decode() if keys.context else None
    return loc.get(enc.F_CONTEXT) == context


async def _link_data(ctx: RequestContext, src: SourceObject, location: str, checksum_algorithm: str | None,
                     encryption: sse.Encryption | None) -> CopiedData | None:
    """The whole source copied by reference into `location`, or None when its bytes must be streamed.

    The result is what `copy_data` would make by streaming: one piece, ETag md5 of the stored blob's
    (the piece's recorded md5, which is what streaming computes for the same bytes and encryption),
    the same checksum; the source must be one piece (a multipart source streams: its copy is one
    blob whose ETag is the MD5 of all its data)."""
    locations = src.md.location or []
    if len(locations) != 1:
        return None
    loc = locations[0]
    size, md5_hex = loc.get("size"), part_md5_of_location(loc)
    if (size != src.size or int(loc.get("start") or 0) != 0 or not _MD5_HEX.fullmatch(md5_hex)
            or not isinstance(loc.get("key"), str) or not _same_encryption(ctx, src.md, loc, encryption)):
        return None
    checksum: tuple[str, str] | None = None
    if checksum_algorithm is not None:   # only one the source already has, of its whole data
        record = src.md.checksum or {}
        value = str(record.get("checksumValue") or "")
        if (record.get("checksumAlgorithm") != checksum_algorithm or not value or "-" in value
                or record.get("checksumType", "FULL_OBJECT") != "FULL_OBJECT"):
            return None
        checksum = (checksum_algorithm, value)
    linked = await link_locations(ctx.services, location, [loc])
    if linked is None:
        return None
    record = location_record(linked[0]["key"], size, location, md5_hex)
    record.update({f: loc[f] for f in _ENCRYPTION_FIELDS if f in loc})
    ctx.extra_log["copyByReference"] = True
    return CopiedData([record], size, md5_hex, checksum)


def check_copy_size(size: int) -> None:
    if size > MAX_SINGLE_UPLOAD_BYTES:
        raise S3Error("InvalidRequest", "The specified copy source is larger than the maximum allowable size "
                      f"for a copy source: {MAX_SINGLE_UPLOAD_BYTES}")


def _directive(ctx: RequestContext, header: str, what: str) -> str:
    """A copy directive header (x-amz-metadata-directive, x-amz-tagging-directive): COPY (the
    default) or REPLACE, else InvalidArgument."""
    value = ctx.headers.get(header, "COPY")
    if value not in DIRECTIVES:
        raise S3Error("InvalidArgument", f"Unknown {what} directive.", ArgumentName=header, ArgumentValue=value)
    return value


def _copy_checksum_algorithm(ctx: RequestContext, src_md: ObjectMD) -> str | None:
    """The algorithm asked for on the copy, else the source's (AWS keeps the source's checksum)."""
    asked = ctx.headers.get("x-amz-checksum-algorithm")
    if asked is not None:
        algorithm = checksums.normalize_algorithm(asked)
        if algorithm is None:
            raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please try again with any "
                          f"of the valid types: [{', '.join(checksums.ALGORITHMS)}]")
        return algorithm
    source = (src_md.checksum or {}).get("checksumAlgorithm")
    return source if source in checksums.DIGEST_SIZES else None


def _dest_headers(ctx: RequestContext, src_md: ObjectMD, directive: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers for new_object_md, user metadata) of the destination under the metadata directive."""
    if directive == "REPLACE":
        headers = dict(ctx.headers)
        meta = user_metadata(ctx.headers)
    else:
        headers = {**src_md.stored_headers, "content-type": src_md.content_type}
        meta = src_md.user_metadata
        headers["x-amz-website-redirect-location"] = ctx.headers.get("x-amz-website-redirect-location", "")
    # As on AWS, a copy is STANDARD unless the request names a storage class.
    headers["x-amz-storage-class"] = ctx.headers.get("x-amz-storage-class") or "STANDARD"
    return headers, meta


@action("CopyObject")
async def copy_object(ctx: RequestContext) -> Response:
    refuse_version_id(ctx.query)
    dest = ctx.bucket_md
    key = ctx.key or ""
    directive = _directive(ctx, METADATA_DIRECTIVE_HEADER, "metadata")
    tag_directive = _directive(ctx, TAGGING_DIRECTIVE_HEADER, "tagging")
    # Refused before any data moves; with COPY the header is ignored, as on AWS.
    replaced_tags = tags_from_header(ctx.headers.get("x-amz-tagging")) if tag_directive == "REPLACE" else None
    acl = new_object_acl(ctx, dest)
    owner_id, owner_name = new_object_owner(ctx, dest)
    lock = objectlock.check_write(ctx.headers, dest, has_body=False)
    encryption = sse.for_write(ctx, dest)   # the copy's own, never the source's (as AWS)
    src = await read_copy_source(ctx)
    source_key = sse.check_customer(ctx, src.md, sse.COPY_SOURCE_SSEC_PREFIX)
    if (src.bucket.name == dest.name and src.source.key == key and src.source.version_id is None
            and directive == "COPY" and not any(h in ctx.headers for h in _SELF_COPY_CHANGES)):
        raise S3Error("InvalidRequest", _SELF_COPY_MESSAGE)
    check_copy_size(src.size)
    headers, meta = _dest_headers(ctx, src.md, directive)
    # issue 16: the copy's user metadata (the source's with COPY, as CloudServer) may place it elsewhere
    placed = await placement.object_location(ctx, dest, meta)
    copied = await copy_data(ctx, src, 0, src.size - 1, dest, _copy_checksum_algorithm(ctx, src.md),
                             source_key=source_key.key if source_key else None, encryption=encryption,
                             location=placed, name=ObjectName(dest.name, key))
    md = new_object_md(key, owner_id, owner_name, size=copied.size, md5=copied.md5_hex,
                       location=copied.locations, data_store_name=placed, headers=headers,
                       user_meta=meta)
    md.acl = acl   # a copy gets the ACL the request gives (private by default), never the source's
    md.origin_op = "s3:ObjectCreated:Copy"
    md.tags = replaced_tags if replaced_tags is not None else dict(src.md.tags)
    if copied.checksum is not None:
        md.checksum = checksum_record(*copied.checksum)
    if encryption is not None:
        md.update(encryption.stored_fields())
    objectlock.apply_to_new_version(md, dest, lock)   # the destination's lock, never the source's
    committed = await commit_new_object(ctx.services, dest, key, md, copied.locations, log=ctx.extra_log)
    doc = root("CopyObjectResult")
    sub(doc, "LastModified", md.last_modified)
    sub(doc, "ETag", f'"{copied.md5_hex}"')
    if copied.checksum is not None:
        sub(doc, f"Checksum{copied.checksum[0]}", copied.checksum[1])
    response_headers = dict(src.version_header)
    if encryption is not None:
        response_headers.update(encryption.response_headers())
    if committed.version_id is not None:
        response_headers["x-amz-version-id"] = external_version_id(md, committed.version_id)
    return xml_response(doc, headers=response_headers)

