"""Request authentication: which scheme a request uses, and who signed it.

`authenticate(req, config, now)` picks Signature V4 (header or presigned query),
Signature V2 (header or presigned query) or anonymous, verifies the signature and the
clock rules, and returns an `AuthResult`. It raises `S3Error` for anything a client got
wrong. The body is checked afterwards, while it streams, by
`gateway.auth.payload.VerifiedBody` from that result.
"""
from __future__ import annotations

from datetime import datetime

from shared.config import Config
from shared.errors import S3Error

from . import v2, v4
from .request import AuthRequest, AuthResult, StreamingContext, xml_safe

__all__ = ["AuthRequest", "AuthResult", "StreamingContext", "authenticate", "detect_scheme"]

_V2_PREFIX = "AWS "


def detect_scheme(req: AuthRequest) -> str:
    """The scheme the request claims: "v4-header" | "v4-query" | "v2-header" | "v2-query" | "anonymous".

    A request carrying two mechanisms gets InvalidArgument, as AWS answers; an unknown
    Authorization scheme gets AccessDenied.
    """
    authorization = req.header("authorization")
    if req.query_string:
        v4_query = any(req.has_query(name) for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"))
        v2_query = req.has_query("Signature") or req.has_query("AWSAccessKeyId")
    else:   # no query (most requests): no parameter to look for
        v4_query = v2_query = False
    if sum((authorization is not None, v4_query, v2_query)) > 1:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                      "parameter, Signature query string parameter or the Authorization header should be specified",
                      ArgumentName="Authorization", ArgumentValue=xml_safe(authorization or ""))
    if authorization is not None:
        if authorization.startswith(v4.ALGORITHM):
            return "v4-header"
        if authorization.startswith(_V2_PREFIX):
            return "v2-header"
        raise S3Error("AccessDenied", "Unsupported Authorization Type")
    if v4_query:
        return "v4-query"
    if v2_query:
        return "v2-query"
    return "anonymous"


def _anonymous(req: AuthRequest) -> AuthResult:
    # No signature covers the body, but an unsigned aws-chunked body still has to be decoded.
    content_sha256 = req.header(v4.CONTENT_SHA256_HEADER)
    mode, sha = ("none", None) if content_sha256 is None else v4.payload_mode_of(content_sha256)
    if mode in ("streaming-signed", "streaming-signed-trailer"):
        raise S3Error("AccessDenied", "Streaming signed payloads need a signed request.")
    return AuthResult(None, None, "anonymous", mode, sha, None)


def authenticate(req: AuthRequest, config: Config, now: datetime | None = None) -> AuthResult:
    """Verify the request's signature; anonymous requests come back with scheme "anonymous"
    (the caller decides whether to deny them)."""
    scheme = detect_scheme(req)
    if scheme == "v4-header":
        return v4.authenticate_header(req, config, now)
    if scheme == "v4-query":
        return v4.authenticate_query(req, config, now)
    if scheme == "v2-header":
        return v2.authenticate_header(req, config, now)
    if scheme == "v2-query":
        return v2.authenticate_query(req, config, now)
    return _anonymous(req)
