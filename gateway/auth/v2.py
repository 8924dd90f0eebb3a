"""AWS Signature Version 2 (HMAC-SHA1, "AWS <AK>:<sig>") for S3: header and presigned-query forms.

Owns the v2 string to sign: method, Content-MD5, Content-Type, date (or Expires),
the canonicalised x-amz-* headers and the canonicalised resource (`/<bucket><raw path>`
plus the S3 sub-resources of the query, sorted, values decoded). A 44-character
signature is HMAC-SHA256, as Arsenal accepts.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from typing import Iterable

from shared.config import Config
from shared.errors import S3Error

from .request import (
    MAX_PRESIGNED_EXPIRY_SECONDS,
    WIRE_ENCODING,
    AuthRequest,
    AuthResult,
    check_clock_skew,
    lookup_secret,
    parse_http_date,
    signatures_equal,
    utc_now,
    xml_safe,
)
from .v4 import CONTENT_SHA256_HEADER, payload_mode_of  # one place decides what that header means

# The sub-resources AWS documents for the v2 CanonicalizedResource, plus those botocore's
# HmacV1Auth signs; response-* overrides are matched by prefix below.
SUBRESOURCES = frozenset({
    "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory", "lifecycle", "location",
    "logging", "metrics", "notification", "object-lock", "partNumber", "policy", "replication", "requestPayment",
    "restore", "select", "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads", "versionId",
    "versioning", "versions", "website",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
})
# Newer sub-resources some v2 clients sign and others do not: tried as a second candidate.
EXTRA_SUBRESOURCES = frozenset({
    "encryption", "legal-hold", "retention", "ownershipControls", "publicAccessBlock", "intelligent-tiering",
    "policyStatus", "attributes",
})
QUERY_AUTH_PARAMS = ("AWSAccessKeyId", "Signature", "Expires")
_SHA256_SIGNATURE_LENGTH = 44  # base64 of 32 bytes; SHA1 signatures are 28 characters


def _canonical_resource(req: AuthRequest, subresources: frozenset[str], bucket_slash: bool = False) -> str:
    resource = req.raw_path or "/"
    if req.host_bucket:
        resource = f"/{req.host_bucket}{resource}"
    if bucket_slash:
        resource += "/"
    chosen = [(name, value, had_eq) for name, value, had_eq in req.query_params if name in subresources]
    if chosen:
        chosen.sort(key=lambda p: p[0])  # stable: repeats keep their order, as botocore's sort does
        resource += "?" + "&".join(f"{n}={v}" if had_eq else n for n, v, had_eq in chosen)
    return resource


def _amz_headers(pairs: Iterable[tuple[str, str]]) -> str:
    merged: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.startswith("x-amz-"):
            merged.setdefault(name, []).append(value.strip())
    return "".join(f"{name}:{','.join(merged[name])}\n" for name in sorted(merged))


def string_to_sign(method: str, content_md5: str, content_type: str, date: str, amz_headers: str,
                   resource: str) -> str:
    return f"{method}\n{content_md5}\n{content_type}\n{date}\n{amz_headers}{resource}"


def sign(secret: str, text: str, sha256: bool = False) -> str:
    digest = hmac.new(secret.encode(), text.encode(WIRE_ENCODING, "surrogateescape"),
                      hashlib.sha256 if sha256 else hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _resource_candidates(req: AuthRequest) -> list[str]:
    # botocore signs a bucket-level path-style request ("/bucket") as "/bucket/", the form
    # AWS documents for a bucket resource, while sending it without the slash.
    slash_options = [False, True] if not req.host_bucket and req.raw_path.count("/") == 1 \
        and len(req.raw_path) > 1 else [False]
    candidates: list[str] = []
    for slash in slash_options:
        for subresources in (SUBRESOURCES, SUBRESOURCES | EXTRA_SUBRESOURCES):
            resource = _canonical_resource(req, subresources, slash)
            if resource not in candidates:
                candidates.append(resource)
    return candidates


def _verify(secret: str, provided: str, access_key: str, candidates: list[str]) -> None:
    sha256 = len(provided) == _SHA256_SIGNATURE_LENGTH
    for sts in candidates:
        if signatures_equal(sign(secret, sts, sha256), provided):
            return
    raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=xml_safe(access_key), StringToSign=xml_safe(candidates[0]),
                  SignatureProvided=xml_safe(provided))


def _payload(req: AuthRequest) -> tuple[str, str | None]:
    """v2 does not sign the body, but a client may still announce its SHA-256 (or an aws-chunked body)."""
    value = req.header(CONTENT_SHA256_HEADER)
    if value is None:
        return "none", None
    mode, sha = payload_mode_of(value)
    if mode in ("streaming-signed", "streaming-signed-trailer"):
        raise S3Error("InvalidArgument", "Streaming signed payloads need Signature Version 4.",
                      ArgumentName=CONTENT_SHA256_HEADER, ArgumentValue=value)
    return mode, sha


def authenticate_header(req: AuthRequest, config: Config, now: datetime | None = None) -> AuthResult:
    """Authorization: AWS <access key>:<signature>."""
    now = utc_now(now)
    credentials = (req.header("authorization") or "")[4:].strip()
    access_key, colon, provided = credentials.rpartition(":")
    if not colon or not access_key or not provided:
        raise S3Error("InvalidArgument", "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature",
                      ArgumentName="Authorization", ArgumentValue=xml_safe(req.header("authorization") or ""))
    amz_date = req.header("x-amz-date")
    date_header = req.header("date")
    request_time = parse_http_date(amz_date or date_header or "")
    if request_time is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    mode, payload_sha256 = _payload(req)
    account, secret = lookup_secret(config, access_key)
    check_clock_skew(request_time, now)

    method, md5 = req.method, req.header("content-md5") or ""
    content_type = req.header("content-type") or ""
    amz = _amz_headers(req.headers)
    # AWS: with x-amz-date the Date line is empty; Arsenal (and some clients) keep the Date
    # header's value there. Accept both.
    dates = [date_header or ""]
    if amz_date is not None and date_header:
        dates.append("")
    candidates = [string_to_sign(method, md5, content_type, d, amz, r)
                  for d in dates for r in _resource_candidates(req)]
    _verify(secret, provided, access_key, candidates)
    return AuthResult(account, access_key, "v2-header", mode, payload_sha256, None)


def authenticate_query(req: AuthRequest, config: Config, now: datetime | None = None) -> AuthResult:
    """Presigned URL: AWSAccessKeyId, Expires (epoch seconds), Signature in the query."""
    now = utc_now(now)
    access_key, provided, expires_raw = (req.query(name) for name in QUERY_AUTH_PARAMS)
    if not access_key or not provided or not expires_raw:
        raise S3Error("AccessDenied", "Query-string authentication requires the Signature, Expires and "
                      "AWSAccessKeyId parameters")
    try:
        expires = int(expires_raw)
    except ValueError:
        raise S3Error("AccessDenied", "Invalid date (should be seconds since epoch): " + xml_safe(expires_raw)) from None
    account, secret = lookup_secret(config, access_key)
    now_epoch = int(now.timestamp())
    if now_epoch > expires:
        raise S3Error("AccessDenied", "Request has expired",
                      Expires=datetime.fromtimestamp(min(max(expires, 0), 253402300799), timezone.utc)
                      .strftime("%Y-%m-%dT%H:%M:%SZ"),
                      ServerTime=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if expires > now_epoch + MAX_PRESIGNED_EXPIRY_SECONDS:
        raise S3Error("AccessDenied", "Request expiry is more than "
                      f"{timedelta(seconds=MAX_PRESIGNED_EXPIRY_SECONDS).days} days in the future")
    mode, payload_sha256 = _payload(req)

    # botocore's HmacV1QueryAuth moves x-amz-*, Content-MD5 and Content-Type into the query
    # and signs them as if they were headers: a header, when present, wins.
    query_headers = [(name.lower(), value) for name, value, _ in req.query_params]
    header_names = {name for name, _ in req.headers}
    amz = _amz_headers(list(req.headers) + [(n, v) for n, v in query_headers if n not in header_names])
    from_query = dict(reversed(query_headers))
    md5 = req.header("content-md5") or from_query.get("content-md5", "")
    content_type = req.header("content-type") or from_query.get("content-type", "")
    candidates = [string_to_sign(req.method, md5, content_type, expires_raw, amz, r)
                  for r in _resource_candidates(req)]
    _verify(secret, provided, access_key, candidates)
    return AuthResult(account, access_key, "v2-query", mode, payload_sha256, None)
