"""What several API families share: object lookup, conditional requests,
ranges, response headers of an object, and streaming an object's data."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from gateway.auth.payload import VerifiedBody
from gateway.auth.request import parse_http_date
from gateway.context import RequestContext
from gateway.limits import MAX_USER_METADATA_BYTES
from gateway.models import USER_META_PREFIX, BucketMD, ObjectMD, parse_iso
from gateway.server import FORBIDDEN_IN_HEADER_VALUE, sendable_header
from gateway.xml import MAX_XML_BYTES, to_bytes
from shared.errors import S3Error

RESPONSE_OVERRIDES = {
    "response-content-type": "content-type", "response-content-language": "content-language",
    "response-expires": "expires", "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition", "response-content-encoding": "content-encoding",
}
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# A range bound past this many digits is beyond any object's size (5 TiB has 13): compared as
# digit strings, never converted (int() refuses over 4300 digits, and needs no more than this).
_RANGE_BOUND_DIGITS = 20
_BEYOND_ANY_SIZE = 10 ** _RANGE_BOUND_DIGITS


def xml_response(el: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_bytes(el), status_code=status, headers=headers, media_type="application/xml")


async def save_bucket(ctx: RequestContext, bucket: BucketMD) -> None:
    """Write the changed attributes of the request's bucket; NoSuchBucket when it was deleted
    meanwhile (a write never brings a deleted bucket back)."""
    if not await ctx.store.put_bucket(bucket):
        raise S3Error("NoSuchBucket", BucketName=bucket.name)


async def read_xml_body(ctx: RequestContext, headers: Any = None) -> bytes:
    """A request document (bucket and object configuration XML), verified like any body:
    x-amz-content-sha256, Content-MD5 and checksums, aws-chunked decoding. Refused
    (MalformedXML) past MAX_XML_BYTES without reading the rest. `headers` replaces the
    request's headers as the verifier sees them (an object with `header(name)`)."""
    body = VerifiedBody(ctx.auth, headers or ctx.auth_request, ctx.request.stream())
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


@lru_cache(maxsize=4096)
def http_date(iso: str) -> str:
    """A stored ISO 8601 time as an HTTP date. Cached: every GET and HEAD of an object formats
    its Last-Modified, and the same few values come back again and again."""
    return format_datetime(parse_iso(iso).astimezone(timezone.utc), usegmt=True)


def _parse_http_date(value: str) -> datetime | None:
    """A condition's date: what request signing accepts (RFC 1123, ISO 8601 basic), or ISO 8601."""
    dt = parse_http_date(value)
    if dt is None:
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


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
    if_match = headers.get(prefix + "if-match")
    if_none_match = headers.get(prefix + "if-none-match")
    if_unmodified = headers.get(prefix + "if-unmodified-since")
    if_modified = headers.get(prefix + "if-modified-since")
    if if_match is None and if_none_match is None and if_unmodified is None and if_modified is None:
        return   # no condition (most requests): nothing to parse
    last_modified = parse_iso(last_modified_iso).replace(microsecond=0)
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


def _current_object(current: ObjectMD | None) -> ObjectMD | None:
    """The object a condition is evaluated against: a current delete marker counts as no object."""
    if current is not None and current.is_delete_marker:
        return None
    return current


def _check_if_match(if_match: str, current: ObjectMD | None, key: str) -> None:
    """If-Match: <etag>[, <etag>...] or *: the key must exist (404 NoSuchKey, as AWS answers
    conditional writes and deletes of a missing key) with one of these ETags (412)."""
    if current is None:
        raise S3Error("NoSuchKey", Key=key)
    if not _etag_matches(if_match, current.etag):
        raise S3Error("PreconditionFailed", Condition="If-Match")


def check_write_conditions(headers: dict[str, str], current: ObjectMD | None, key: str) -> None:
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
            and _etag_matches(if_none_match, current.etag):
        raise S3Error("PreconditionFailed", Condition="If-None-Match")
    if if_match is not None:
        _check_if_match(if_match, current, key)


def check_delete_conditions(if_match: str | None, current: ObjectMD | None, key: str) -> None:
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

    A syntactically invalid header or several ranges are ignored, as S3 does. Bounds of any
    length are accepted (bytes=0-<thousands of digits> reads to the end, as S3 does).
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = _digits(m.group(1)), _digits(m.group(2))
    if first_s is not None:
        if last_s is not None and (len(last_s), last_s) < (len(first_s), first_s):
            return None   # last < first: invalid, ignored
        first = _bound(first_s)
        if first >= size:
            raise _invalid_range(size)
        return first, (min(_bound(last_s), size - 1) if last_s is not None else size - 1)
    assert last_s is not None
    suffix = _bound(last_s)
    if suffix == 0:
        raise _invalid_range(size)
    if size == 0:
        return None
    return max(size - suffix, 0), size - 1


def _digits(text: str) -> str | None:
    """A range bound without its leading zeros ("0" for zero), None when absent."""
    return (text.lstrip("0") or "0") if text else None


def _bound(digits: str) -> int:
    """The value of a range bound, or a number past every object size when it is that large."""
    return int(digits) if len(digits) <= _RANGE_BOUND_DIGITS else _BEYOND_ANY_SIZE


def _invalid_range(size: int) -> S3Error:
    return S3Error("InvalidRange", headers={"Content-Range": f"bytes */{size}"}, ActualObjectSize=str(size))


def object_headers(md: ObjectMD, query: dict[str, str] | None = None) -> dict[str, str]:
    """Response headers describing an object (GET and HEAD)."""
    content_type = md.content_type or "application/octet-stream"
    headers = {
        "ETag": f'"{md.etag}"',
        "Last-Modified": http_date(md.last_modified),
        "Accept-Ranges": "bytes",
        "Content-Type": content_type if sendable_header(content_type) else "application/octet-stream",
    }
    # A value stored from a POST form field may be no legal header value (a control character,
    # a character past ISO-8859-1): left out rather than break the response.
    headers.update({k: v for k, v in md.stored_headers.items() if sendable_header(v)})
    missing = 0
    for name, value in md.user_metadata.items():
        if _HEADER_NAME.fullmatch(name) and sendable_header(str(value)):
            headers[name] = str(value)
        else:
            missing += 1
    if missing:
        # S3: "the number of metadata entries not returned in x-amz-meta headers" (names or
        # values that are not legal in an HTTP header, as a browser form can give them)
        headers["x-amz-missing-meta"] = str(missing)
    if md.storage_class != "STANDARD" and sendable_header(md.storage_class):
        headers["x-amz-storage-class"] = md.storage_class
    if md.website_redirect_location and sendable_header(md.website_redirect_location):
        headers["x-amz-website-redirect-location"] = md.website_redirect_location
    if md.tags:   # "The number of tags, if any, on the object"
        headers["x-amz-tagging-count"] = str(len(md.tags))
    if query:
        for q, h in RESPONSE_OVERRIDES.items():
            if q in query:
                headers["Content-Type" if h == "content-type" else h] = response_override(q, query[q])
    return headers


# An HTTP header name (RFC 9110 token)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def response_override(param: str, value: str) -> str:
    """A response-* query parameter's value as a header value: 400 InvalidArgument for one a header
    cannot carry, as S3 answers ("Header value cannot be represented using ISO-8859-1.");
    control characters (CR, LF, NUL...) likewise, so no header can be injected."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise S3Error("InvalidArgument", "Header value cannot be represented using ISO-8859-1.",
                      ArgumentName=param, ArgumentValue=value) from None
    if FORBIDDEN_IN_HEADER_VALUE.search(value):
        raise S3Error("InvalidArgument", "Header value contains invalid characters.",
                      ArgumentName=param, ArgumentValue=value)
    return value


def user_metadata(headers: dict[str, str]) -> dict[str, str]:
    meta = {k: v for k, v in headers.items() if k.startswith(USER_META_PREFIX)}
    if sum(len(k) - len(USER_META_PREFIX) + len(v.encode()) for k, v in meta.items()) > MAX_USER_METADATA_BYTES:
        raise S3Error("MetadataTooLarge")
    return meta
