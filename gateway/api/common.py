"""What several API families share: object lookup, conditional requests,
ranges, response headers of an object, and streaming an object's data."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, AsyncIterator, Callable

from starlette.responses import Response

from gateway.auth.payload import VerifiedBody
from gateway.context import RequestContext
from gateway.models import BucketInfo, parse_iso
from gateway.versioning import Committed, commit_version
from gateway.xml import MAX_XML_BYTES, to_bytes
from shared.errors import S3Error

# Headers copied from ObjectMD to GET/HEAD responses, in the original's names.
STORED_RESPONSE_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                           "content-language", "expires")
RESPONSE_OVERRIDES = {
    "response-content-type": "content-type", "response-content-language": "content-language",
    "response-expires": "expires", "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition", "response-content-encoding": "content-encoding",
}
USER_META_PREFIX = "x-amz-meta-"
MAX_USER_METADATA_BYTES = 2048
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def xml_response(el: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_bytes(el), status_code=status, headers=headers, media_type="application/xml")


async def read_xml_body(ctx: RequestContext) -> bytes:
    """A request document (bucket and object configuration XML), verified like any body:
    x-amz-content-sha256, Content-MD5 and checksums, aws-chunked decoding. Refused
    (MalformedXML) past MAX_XML_BYTES without reading the rest."""
    body = VerifiedBody(ctx.auth, ctx.auth_request, ctx.request.stream())
    if body.expected_size is not None and body.expected_size > MAX_XML_BYTES:
        raise S3Error("MalformedXML", "The XML you provided was too large")
    pieces: list[bytes] = []
    total = 0
    async for piece in body:
        total += len(piece)
        if total > MAX_XML_BYTES:   # no declared length (chunked): stop reading early
            raise S3Error("MalformedXML", "The XML you provided was too large")
        pieces.append(piece)
    return b"".join(pieces)


async def get_object_md(ctx: RequestContext, bucket: str, key: str, options: dict | None = None) -> dict[str, Any]:
    """The object's metadata (master, or a version with options), or NoSuchKey."""
    md = await ctx.find_metadata([bucket], key, options)
    if md is None:
        raise S3Error("NoSuchKey", Key=key)
    return md


async def find_object_md(ctx: RequestContext, bucket: str, key: str) -> dict[str, Any] | None:
    return await ctx.find_metadata([bucket], key)


def http_date(iso: str) -> str:
    return format_datetime(parse_iso(iso).astimezone(timezone.utc), usegmt=True)


def _parse_http_date(value: str) -> datetime | None:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _etag_matches(header: str, etag: str) -> bool:
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.strip('"') == etag:
            return True
    return False


def check_conditions(headers: dict[str, str], etag: str, last_modified_iso: str, prefix: str = "",
                     read: bool = True) -> None:
    """If-Match / If-None-Match / If-(Un)Modified-Since with AWS's precedence.

    `prefix` is "x-amz-copy-source-" for CopyObject's source conditions, which
    answer 412 in every failing case.
    """
    last_modified = parse_iso(last_modified_iso).replace(microsecond=0)
    if_match = headers.get(prefix + "if-match")
    if_none_match = headers.get(prefix + "if-none-match")
    if_unmodified = headers.get(prefix + "if-unmodified-since")
    if_modified = headers.get(prefix + "if-modified-since")
    not_modified = "PreconditionFailed" if prefix else "NotModified"
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            raise S3Error("PreconditionFailed", Condition="If-Match")
    elif if_unmodified is not None:
        dt = _parse_http_date(if_unmodified)
        if dt is not None and last_modified > dt:
            raise S3Error("PreconditionFailed", Condition="If-Unmodified-Since")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            raise _not_modified(not_modified, etag, last_modified_iso)
    elif if_modified is not None:
        dt = _parse_http_date(if_modified)
        if dt is not None and dt <= datetime.now(timezone.utc) and last_modified <= dt:
            raise _not_modified(not_modified, etag, last_modified_iso)


def _current_object(current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object a condition is evaluated against: a current delete marker counts as no object."""
    if current is not None and current.get("isDeleteMarker"):
        return None
    return current


def _check_if_match(if_match: str, current: dict[str, Any] | None, key: str) -> None:
    """If-Match: <etag>[, <etag>...] or *: the key must exist (404 NoSuchKey, as AWS answers
    conditional writes and deletes of a missing key) with one of these ETags (412)."""
    if current is None:
        raise S3Error("NoSuchKey", Key=key)
    if not _etag_matches(if_match, current.get("content-md5", "")):
        raise S3Error("PreconditionFailed", Condition="If-Match")


def check_write_conditions(headers: dict[str, str], current: dict[str, Any] | None, key: str) -> None:
    """Conditional writes (PutObject, CompleteMultipartUpload) against the current version.

    - If-None-Match: * creates only: 412 if the key exists;
    - If-None-Match: <etag>[, ...] as HTTP defines it: 412 if the current ETag is one of them,
      else the write goes on, also on a missing key (AWS answers 501 NotImplemented; RGW accepts it);
    - If-Match: <etag>[, ...] or *: see _check_if_match.
    A current delete marker counts as no object.
    """
    current = _current_object(current)
    if_none_match = headers.get("if-none-match")
    if_match = headers.get("if-match")
    if if_none_match is not None and current is not None \
            and _etag_matches(if_none_match, current.get("content-md5", "")):
        raise S3Error("PreconditionFailed", Condition="If-None-Match")
    if if_match is not None:
        _check_if_match(if_match, current, key)


def check_delete_conditions(if_match: str | None, current: dict[str, Any] | None, key: str) -> None:
    """Conditional deletes (DeleteObject's If-Match header, a DeleteObjects <ETag>): evaluated
    against the current version only, as AWS does; 404 NoSuchKey when there is none (or it is a
    delete marker), 412 PreconditionFailed when its ETag differs. No condition, no check."""
    if if_match is not None:
        _check_if_match(if_match, _current_object(current), key)


def _not_modified(code: str, etag: str, last_modified_iso: str) -> S3Error:
    if code == "NotModified":
        return S3Error("NotModified", headers={"ETag": f'"{etag}"', "Last-Modified": http_date(last_modified_iso)})
    return S3Error(code)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive, None for the whole object; InvalidRange (416) if unsatisfiable.

    A syntactically invalid header or several ranges are ignored, as S3 does.
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.group(1), m.group(2)
    if first_s:
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
        if last_s and last < first:
            return None
        if first >= size:
            raise _invalid_range(size)
        return first, min(last, size - 1)
    suffix = int(last_s)
    if suffix == 0:
        raise _invalid_range(size)
    if size == 0:
        return None
    return max(size - suffix, 0), size - 1


def _invalid_range(size: int) -> S3Error:
    return S3Error("InvalidRange", headers={"Content-Range": f"bytes */{size}"}, ActualObjectSize=str(size))


def object_headers(md: dict[str, Any], query: dict[str, str] | None = None) -> dict[str, str]:
    """Response headers describing an object (GET and HEAD)."""
    headers = {
        "ETag": f'"{md.get("content-md5", "")}"',
        "Last-Modified": http_date(md["last-modified"]),
        "Accept-Ranges": "bytes",
        "Content-Type": md.get("content-type") or "application/octet-stream",
    }
    for name in STORED_RESPONSE_HEADERS:
        if md.get(name):
            headers[name] = str(md[name])
    for name, value in md.items():
        if name.startswith(USER_META_PREFIX):
            headers[name] = str(value)
    storage_class = md.get("x-amz-storage-class")
    if storage_class and storage_class != "STANDARD":
        headers["x-amz-storage-class"] = storage_class
    if md.get("x-amz-website-redirect-location"):
        headers["x-amz-website-redirect-location"] = md["x-amz-website-redirect-location"]
    if md.get("tags"):   # "The number of tags, if any, on the object"
        headers["x-amz-tagging-count"] = str(len(md["tags"]))
    for q, h in RESPONSE_OVERRIDES.items():
        if query and q in query:
            headers["Content-Type" if h == "content-type" else h] = query[q]
    return headers


def user_metadata(headers: dict[str, str]) -> dict[str, str]:
    meta = {k: v for k, v in headers.items() if k.startswith(USER_META_PREFIX)}
    if sum(len(k) - len(USER_META_PREFIX) + len(v.encode()) for k, v in meta.items()) > MAX_USER_METADATA_BYTES:
        raise S3Error("MetadataTooLarge")
    return meta


async def stream_locations(ctx: RequestContext, locations: list[dict[str, Any]] | None,
                           first: int, last: int) -> AsyncIterator[bytes]:
    """The bytes first..last (inclusive) of an object stored as a list of data locations."""
    if not locations or last < first:
        return
    offset = 0
    for loc in locations:
        size = int(loc.get("size", 0))
        start, end = offset, offset + size - 1
        offset += size
        if size == 0 or end < first or start > last:
            continue
        backend = ctx.services.data_for(loc.get("dataStoreName") or "us-east-1")
        lo, hi = max(first, start) - start, min(last, end) - start
        whole = lo == 0 and hi == size - 1
        async for chunk in backend.get(loc["key"], None if whole else lo, None if whole else hi):
            yield chunk


async def commit_new_object(ctx: RequestContext, bucket: BucketInfo, key: str, md: dict[str, Any],
                            new_locations: list[dict[str, Any]] | None,
                            check: Callable[[dict[str, Any] | None], None] | None = None) -> Committed:
    """Commit `md` (whose data is already stored at `new_locations`) as the current version of `key`.

    `check` sees the current version first (conditional writes). On any failure
    the new data is freed and metadata is untouched; on success the data the
    write replaced is freed, after the commit.
    """
    try:
        master = await find_object_md(ctx, bucket.name, key)
        if check is not None:
            check(master)
        committed = await commit_version(ctx, bucket, key, md, master)
    except BaseException:
        await delete_locations(ctx, new_locations)
        raise
    for freed in committed.freed:
        await delete_locations(ctx, freed)
    return committed


async def delete_locations(ctx: RequestContext, locations: list[dict[str, Any]] | None) -> None:
    """Free the data of an object that is no longer referenced. Failures leak, never lose."""
    for loc in locations or []:
        try:
            await ctx.services.data_for(loc.get("dataStoreName") or "us-east-1").delete(loc["key"])
        except Exception:  # a blob we fail to free is garbage, not an error for the client
            ctx.extra_log.setdefault("leakedBlobs", []).append(loc.get("key"))
