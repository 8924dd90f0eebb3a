"""AWS Signature Version 4 for S3: the Authorization header form and the presigned-URL form.

Owns the canonical request as S3 computes it (the path is not normalised, only
re-encoded with AWS's strict URI encoding; the query is decoded, re-encoded and sorted;
signed headers as listed, values trimmed), the headers a signature must cover (host and
every x-amz-* header sent, else AccessDenied / HeadersNotSigned), the credential scope checks (service "s3",
terminator "aws4_request", date equal to x-amz-date's, any region), the clock rules,
the payload hash modes announced by x-amz-content-sha256, and the seed of the chunk
signature chain for aws-chunked bodies.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timedelta
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from shared.config import Config
from shared.errors import S3Error

from .request import (
    MAX_PRESIGNED_EXPIRY_SECONDS,
    WIRE_ENCODING,
    AuthRequest,
    AuthResult,
    StreamingContext,
    amz_timestamp,
    check_clock_skew,
    decode_component,
    iso8601,
    lookup_secret,
    parse_amz_date,
    parse_http_date,
    signatures_equal,
    split_raw_query,
    utc_now,
    xml_safe,
)

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_ECDSA = ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")
CONTENT_SHA256_HEADER = "x-amz-content-sha256"
SIGNATURE_PARAM = "X-Amz-Signature"
QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                     "X-Amz-SignedHeaders", "X-Amz-Expires")

_PAYLOAD_MODES = {
    UNSIGNED_PAYLOAD: "unsigned",
    STREAMING_SIGNED: "streaming-signed",
    STREAMING_SIGNED_TRAILER: "streaming-signed-trailer",
    STREAMING_UNSIGNED_TRAILER: "streaming-unsigned-trailer",
}
_SIGNED_STREAMING = ("streaming-signed", "streaming-signed-trailer")
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CREDENTIAL_FORMAT = '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"'
_UNRESERVED = "-_.~"  # with A-Z a-z 0-9: AWS's URI encoding leaves exactly these alone


def aws_uri_encode(raw: bytes, keep_slash: bool) -> str:
    return quote(raw, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_uri_candidates(raw_path: str) -> list[str]:
    """The canonical URI S3 would compute, then the path verbatim if it differs.

    S3 does not normalise the path (no '..' or '//' folding); it percent-decodes and
    re-encodes strictly, so a client that sent `$` raw and one that sent `%24` both
    match. A client that signed its own non-canonical encoding (e.g. `%2F`) is still
    accepted through the verbatim candidate.
    """
    path = raw_path or "/"
    encoded = aws_uri_encode(unquote_to_bytes(path.encode(WIRE_ENCODING, "surrogateescape")), keep_slash=True)
    return [encoded] if encoded == path else [encoded, path]


def canonical_query(req: AuthRequest, exclude_signature: bool, plus_is_space: bool = True) -> str:
    """Decoded then strictly re-encoded name=value pairs, sorted by name then value."""
    def encode(component: str) -> str:
        decoded = decode_component(component, plus_is_space)
        return aws_uri_encode(decoded.encode(WIRE_ENCODING, "surrogateescape"), keep_slash=False)

    pairs = sorted((encode(name), encode(value)) for name, value, _ in split_raw_query(req.query_string)
                   if not (exclude_signature and decode_component(name) == SIGNATURE_PARAM))
    return "&".join(f"{name}={value}" for name, value in pairs)


def canonical_query_candidates(req: AuthRequest, exclude_signature: bool) -> list[str]:
    """A raw '+' is read as a space first, then as a plus (clients disagree on it)."""
    first = canonical_query(req, exclude_signature)
    if "+" not in req.query_string:
        return [first]
    return [first, canonical_query(req, exclude_signature, plus_is_space=False)]


def canonical_headers(req: AuthRequest, signed_headers: list[str]) -> str:
    lines = []
    for name in signed_headers:
        # Repeated headers are joined with ','; each value is trimmed and inner runs of
        # spaces collapsed ("Trimall" in the spec).
        values = ",".join(" ".join(v.split()) for v in req.header_all(name))
        lines.append(f"{name}:{values}\n")
    return "".join(lines)


def canonical_request(method: str, uri: str, query: str, headers: str, signed_headers: str, payload: str) -> str:
    return "\n".join((method, uri, query, headers, signed_headers, payload))


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode(WIRE_ENCODING, "surrogateescape")).hexdigest()
    return "\n".join((ALGORITHM, timestamp, scope, digest))


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The derived key; cached because every request of a day for a region uses the same one."""
    key = hmac.new(f"AWS4{secret}".encode(), _wire(date), hashlib.sha256).digest()
    for part in (region, service, TERMINATOR):
        key = hmac.new(key, _wire(part), hashlib.sha256).digest()
    return key


def _wire(text: str) -> bytes:
    """Back to the bytes the client sent (undecodable bytes travel as surrogates)."""
    return text.encode(WIRE_ENCODING, "surrogateescape")


def sign(key: bytes, text: str) -> str:
    return hmac.digest(key, _wire(text), "sha256").hex()


# --- parsing -------------------------------------------------------------------------------------

def _header_malformed(detail: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}")


def _query_error(detail: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", detail)


def split_credential(credential: str) -> tuple[str, str, str, str, str] | None:
    """access_key/date/region/service/terminator (the access key itself may hold '/')."""
    parts = credential.split("/")
    if len(parts) < 5 or not all(parts[-4:]):
        return None
    return "/".join(parts[:-4]), parts[-4], parts[-3], parts[-2], parts[-1]


def _check_scope(date: str, service: str, terminator: str, timestamp: str, in_query: bool) -> None:
    fail = (lambda d: _query_error(f"Error parsing the X-Amz-Credential parameter; {d}")) if in_query \
        else _header_malformed
    if date != timestamp[:8]:
        raise fail("Invalid credential date. Date is not the same as X-Amz-Date.")
    if service != SERVICE:
        raise fail(f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminator != TERMINATOR:
        raise fail(f'incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".')


def _parse_signed_headers(value: str) -> list[str] | None:
    names = value.split(";")
    if not value or any(not n or n != n.lower() or n != n.strip() for n in names):
        return None
    return names


def parse_authorization(value: str) -> tuple[str, list[str], str]:
    """`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` -> (credential, signed, signature)."""
    rest = value[len(ALGORITHM):]
    if not rest[:1].isspace():
        raise _header_malformed("the authorization header must start with the algorithm and a space.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, val = part.strip().partition("=")
        if not eq:
            raise _header_malformed(f'expecting "<name>=<value>" components, got "{part.strip()}".')
        fields[name.strip()] = val.strip()
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise _header_malformed(f"missing {required}.")
    signed = _parse_signed_headers(fields["SignedHeaders"])
    if signed is None:
        raise _header_malformed("SignedHeaders must be a ';'-separated list of lower-case header names.")
    return fields["Credential"], signed, fields["Signature"]


# --- which headers must be signed ------------------------------------------------------------
#
# AWS refuses a SigV4 request (Authorization header or presigned URL alike) whose signature
# leaves out `host` or any `x-amz-*` header the request carries: 403 AccessDenied, "There
# were headers present in the request which were not signed", with a HeadersNotSigned
# element listing them, joined by ", ". Without this a signed request could be replayed on
# another bucket (virtual-hosted Host) or grow unsigned x-amz-copy-source / x-amz-meta-* /
# x-amz-tagging headers. Sources: AWS's sigv4-query-string-auth and sig-v4-header-based-auth
# pages (host and every x-amz-* header sent are required in the signature); AWS answers quoted
# in brendanhay/amazonka#272 (presigned, HeadersNotSigned host), coda/packs-sdk#3093 (header
# auth, host), badslug/Paw-AWSSignature4DynamicValue#4 (x-amz-copy-source); localstack's
# services/s3/presigned_url.py (create_access_denied_headers_not_signed); Arsenal
# lib/auth/v4/validateInputs.ts areSignedHeadersComplete (same rule, plain AccessDenied).
# x-amz-content-sha256 is the exception: AWS accepts it unsigned (scality/Arsenal#2590,
# "In practice AWS does not require x-amz-content-sha256 to be signed"; localstack's
# IGNORED_SIGV4_HEADERS) because its value is the payload line of the canonical request,
# so changing it breaks the signature anyway.
HEADERS_NOT_SIGNED_MESSAGE = "There were headers present in the request which were not signed"
_MUST_SIGN_PREFIX = "x-amz-"
_MAY_GO_UNSIGNED = frozenset({CONTENT_SHA256_HEADER})


def headers_not_signed(req: AuthRequest, signed: list[str]) -> list[str]:
    """`host` (if not signed) then every unsigned x-amz-* header present, in request order."""
    signed_set = set(signed)
    missing = [] if "host" in signed_set else ["host"]
    for name, _ in req.headers:
        if name.startswith(_MUST_SIGN_PREFIX) and name not in signed_set and name not in _MAY_GO_UNSIGNED \
                and name not in missing:
            missing.append(name)
    return missing


def check_signed_headers(req: AuthRequest, signed: list[str]) -> None:
    """AccessDenied with HeadersNotSigned unless host and every x-amz-* header present are signed."""
    missing = headers_not_signed(req, signed)
    if missing:
        raise S3Error("AccessDenied", HEADERS_NOT_SIGNED_MESSAGE, HeadersNotSigned=xml_safe(", ".join(missing)))


def payload_mode_of(content_sha256: str) -> tuple[str, str | None]:
    """x-amz-content-sha256 value -> (payload mode, expected hex sha256 or None); InvalidArgument if bad."""
    if content_sha256 in _PAYLOAD_MODES:
        return _PAYLOAD_MODES[content_sha256], None
    if _HEX_SHA256.fullmatch(content_sha256):
        return "sha256", content_sha256.lower()
    if content_sha256 in STREAMING_ECDSA:
        raise S3Error("NotImplemented", "SigV4a (ECDSA) streaming signatures are not supported.")
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
                  ArgumentName=CONTENT_SHA256_HEADER, ArgumentValue=xml_safe(content_sha256))


def _verify(req: AuthRequest, key: bytes, timestamp: str, scope: str, in_query: bool, signed: list[str],
            payload: str, provided: str, access_key: str) -> str:
    """The matching signature, or SignatureDoesNotMatch (with the strings AWS shows to debug a client)."""
    headers = canonical_headers(req, signed)
    signed_str = ";".join(signed)
    first_canonical = first_sts = None
    for uri in canonical_uri_candidates(req.raw_path):
        for query in canonical_query_candidates(req, exclude_signature=in_query):
            canonical = canonical_request(req.method, uri, query, headers, signed_str, payload)
            sts = string_to_sign(timestamp, scope, canonical)
            expected = sign(key, sts)
            if signatures_equal(expected, provided.lower()):
                return expected
            if first_canonical is None:
                first_canonical, first_sts = canonical, sts
    raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=xml_safe(access_key), StringToSign=xml_safe(first_sts or ""),
                  SignatureProvided=xml_safe(provided), CanonicalRequest=xml_safe(first_canonical or ""))


# --- the two forms -----------------------------------------------------------------------------

def authenticate_header(req: AuthRequest, config: Config, now: datetime | None = None) -> AuthResult:
    """Authorization: AWS4-HMAC-SHA256 ... ."""
    now = utc_now(now)
    credential, signed, provided = parse_authorization(req.header("authorization") or "")
    parts = split_credential(credential)
    if parts is None:
        raise _header_malformed(f"the Credential is mal-formed; expecting {_CREDENTIAL_FORMAT}.")
    access_key, date, region, service, terminator = parts
    check_signed_headers(req, signed)

    raw_date = req.header("x-amz-date") or req.header("date")
    request_time = parse_http_date(raw_date) if raw_date else None
    if request_time is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    # Clients that sign a Date header (no x-amz-date) still use the ISO basic form in the scope.
    timestamp = amz_timestamp(request_time)
    _check_scope(date, service, terminator, timestamp, in_query=False)

    content_sha256 = req.header(CONTENT_SHA256_HEADER)
    if content_sha256 is None:
        raise S3Error("MissingSecurityHeader", MissingHeaderName=CONTENT_SHA256_HEADER)
    mode, payload_sha256 = payload_mode_of(content_sha256)
    if mode == "streaming-signed" and req.method != "PUT":
        raise S3Error("InvalidArgument", "Streaming signed payloads are only allowed on PUT requests.",
                      ArgumentName=CONTENT_SHA256_HEADER, ArgumentValue=xml_safe(content_sha256))

    account, secret = lookup_secret(config, access_key)
    check_clock_skew(request_time, now)
    key = signing_key(secret, date, region)
    scope = f"{date}/{region}/{SERVICE}/{TERMINATOR}"
    signature = _verify(req, key, timestamp, scope, False, signed, content_sha256, provided, access_key)
    streaming = StreamingContext(signature, key, scope, timestamp) if mode in _SIGNED_STREAMING else None
    return AuthResult(account, access_key, "v4-header", mode, payload_sha256, streaming)


def authenticate_query(req: AuthRequest, config: Config, now: datetime | None = None) -> AuthResult:
    """Presigned URL: X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders,
    X-Amz-Signature in the query."""
    now = utc_now(now)
    params = {name: req.query(name) for name in QUERY_AUTH_PARAMS}
    # An empty X-Amz-SignedHeaders is present: AWS answers it HeadersNotSigned "host" (below).
    if any(value is None or (not value and name != "X-Amz-SignedHeaders") for name, value in params.items()):
        raise _query_error("Query-string authentication version 4 requires the X-Amz-Algorithm, "
                           "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
                           "and X-Amz-Expires parameters.")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    parts = split_credential(params["X-Amz-Credential"] or "")
    if parts is None:
        raise _query_error("Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
                           f"expecting {_CREDENTIAL_FORMAT}.")
    access_key, date, region, service, terminator = parts
    timestamp = params["X-Amz-Date"] or ""
    request_time = parse_amz_date(timestamp)
    if request_time is None:
        raise _query_error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    _check_scope(date, service, terminator, timestamp, in_query=True)
    try:
        expires = int(params["X-Amz-Expires"] or "")
    except ValueError:
        raise _query_error("X-Amz-Expires should be a number") from None
    if expires < 0:
        raise _query_error("X-Amz-Expires must be non-negative")
    if expires > MAX_PRESIGNED_EXPIRY_SECONDS:
        raise _query_error(f"X-Amz-Expires must be less than a week (in seconds) that is "
                           f"{MAX_PRESIGNED_EXPIRY_SECONDS}")
    signed_headers = params["X-Amz-SignedHeaders"] or ""
    signed = _parse_signed_headers(signed_headers) if signed_headers else []
    if signed is None:
        raise _query_error("X-Amz-SignedHeaders must be a ';'-separated list of lower-case header names.")
    check_signed_headers(req, signed)

    account, secret = lookup_secret(config, access_key)
    if request_time - now > timedelta(minutes=15):
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > request_time + timedelta(seconds=expires):
        raise S3Error("AccessDenied", "Request has expired", **{"X-Amz-Expires": str(expires)},
                      Expires=iso8601(request_time + timedelta(seconds=expires)), ServerTime=iso8601(now))

    # A presigned URL does not sign the body unless the client also sent the header.
    content_sha256 = req.header(CONTENT_SHA256_HEADER)
    payload = content_sha256 if content_sha256 is not None else UNSIGNED_PAYLOAD
    mode, payload_sha256 = payload_mode_of(payload)
    if mode in _SIGNED_STREAMING:
        raise S3Error("InvalidArgument", "Streaming signed payloads need the Authorization header.",
                      ArgumentName=CONTENT_SHA256_HEADER, ArgumentValue=payload)
    key = signing_key(secret, date, region)
    scope = f"{date}/{region}/{SERVICE}/{TERMINATOR}"
    _verify(req, key, timestamp, scope, True, signed, payload, params["X-Amz-Signature"] or "", access_key)
    return AuthResult(account, access_key, "v4-query", mode, payload_sha256, None)
