"""The request as the signature code sees it, and what authentication concluded about it.

`AuthRequest`: method, raw path, raw query, raw headers. Signatures are computed over the
bytes the client sent, so nothing here is normalised: the path stays percent-encoded, the
query string is kept verbatim and repeated headers are kept in order. The gateway builds
one from Starlette's ASGI scope with `AuthRequest.from_scope(scope)`.

`AuthResult` / `StreamingContext`: the outcome of `gateway.auth.authenticate`, including
what `gateway.auth.payload.VerifiedBody` needs to check the body. Also the clock rules
shared by v2 and v4 (15 min skew, 7 days presign limit).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

from shared.config import Account, Config
from shared.errors import S3Error
from urllib.parse import quote, unquote_to_bytes

# Raw bytes are decoded as UTF-8 with surrogateescape so that re-encoding the same way
# (as the canonical request does) gives back exactly the bytes the client signed.
WIRE_ENCODING = "utf-8"


def decode_component(component: str, plus_is_space: bool = True) -> str:
    """Percent-decode one query component.

    A raw '+' is a space, as in form encoding and as S3 reads query strings (SDKs send a
    real plus as %2B); `plus_is_space=False` gives the other reading, which the
    signature check also tries.
    """
    if plus_is_space:
        component = component.replace("+", " ")
    raw = unquote_to_bytes(component.encode(WIRE_ENCODING, "surrogateescape"))
    return raw.decode(WIRE_ENCODING, "surrogateescape")


def split_raw_query(query_string: str) -> list[tuple[str, str, bool]]:
    """Raw query -> [(raw name, raw value, had '=')], order and repeats kept, empty parts dropped."""
    pairs = []
    for part in query_string.split("&"):
        if part:
            name, eq, value = part.partition("=")
            pairs.append((name, value, bool(eq)))
    return pairs


def split_query(query_string: str) -> list[tuple[str, str, bool]]:
    """Raw query -> [(decoded name, decoded value, had '=')], order and repeats kept, empty parts dropped."""
    return [(decode_component(n), decode_component(v), eq) for n, v, eq in split_raw_query(query_string)]


@dataclass
class AuthRequest:
    method: str
    raw_path: str  # exactly as sent, percent-encoded, without the query
    query_string: str  # raw, as sent, without the '?'
    headers: list[tuple[str, str]]  # lower-case names, values as received, repeats kept
    # For virtual-hosted-style requests the gateway puts here the bucket it took from Host:
    # the v2 string to sign names the resource as /<bucket><path> whatever the addressing.
    host_bucket: str | None = None
    _query: list[tuple[str, str, bool]] | None = field(default=None, repr=False, compare=False)
    # name -> its values in order, built on the first lookup (signing asks for a header a dozen
    # times); rebuilt when `headers` is replaced or grown, as tests do to forge requests.
    _index: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)
    _indexed: tuple[Any, int] = field(default=(None, -1), repr=False, compare=False)

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], host_bucket: str | None = None) -> "AuthRequest":
        """Build from an ASGI HTTP scope (raw_path falls back to the decoded path re-encoded)."""
        raw_path_bytes = scope.get("raw_path")
        if raw_path_bytes:
            raw_path = raw_path_bytes.decode(WIRE_ENCODING, "surrogateescape").split("?", 1)[0]
        else:
            raw_path = quote(scope.get("path", "/"), safe="/~")
        headers = [(k.decode("latin-1").lower(), v.decode(WIRE_ENCODING, "surrogateescape"))
                   for k, v in scope.get("headers", [])]
        query = scope.get("query_string", b"").decode(WIRE_ENCODING, "surrogateescape")
        return cls(scope.get("method", "GET"), raw_path, query, headers, host_bucket)

    def _header_index(self) -> dict[str, list[str]]:
        headers = self.headers
        index = self._index
        indexed, count = self._indexed
        if index is None or indexed is not headers or count != len(headers):
            index = {}
            for key, value in headers:
                values = index.get(key)
                if values is None:
                    index[key] = [value]
                else:
                    values.append(value)
            self._index, self._indexed = index, (headers, len(headers))
        return index

    def header(self, name: str) -> str | None:
        """The first value of a header (name is case-insensitive), or None."""
        values = self._header_index().get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return list(self._header_index().get(name.lower(), ()))

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    @property
    def query_params(self) -> list[tuple[str, str, bool]]:
        """Decoded query parameters: (name, value, had '='), order and repeats kept."""
        if self._query is None:
            self._query = split_query(self.query_string)
        return self._query

    def query(self, name: str) -> str | None:
        """The first decoded value of a query parameter (exact, case-sensitive name), or None."""
        for key, value, _ in self.query_params:
            if key == name:
                return value
        return None

    def has_query(self, name: str) -> bool:
        return any(key == name for key, _, _ in self.query_params)


# --- authentication outcome -----------------------------------------------------------------

SCHEMES = ("v4-header", "v4-query", "v2-header", "v2-query", "anonymous")
PAYLOAD_MODES = ("unsigned", "sha256", "streaming-signed", "streaming-unsigned-trailer",
                 "streaming-signed-trailer", "none")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"


@dataclass(frozen=True)
class StreamingContext:
    """What chunk and trailer signatures of an aws-chunked body are chained from."""
    seed_signature: str  # the request's own (hex) signature
    signing_key: bytes = field(repr=False)  # secret-derived: kept out of logs
    scope: str  # "<yyyymmdd>/<region>/s3/aws4_request"
    timestamp: str  # x-amz-date, "yyyymmddThhmmssZ"

    def _sign(self, string_to_sign: str) -> str:
        return hmac.digest(self.signing_key, string_to_sign.encode(WIRE_ENCODING, "surrogateescape"),
                           "sha256").hex()

    def chunk_signature(self, previous_signature: str, chunk_sha256_hex: str) -> str:
        return self._sign("\n".join((CHUNK_ALGORITHM, self.timestamp, self.scope, previous_signature,
                                      EMPTY_SHA256, chunk_sha256_hex)))

    def trailer_signature(self, previous_signature: str, canonical_trailers: bytes) -> str:
        """canonical_trailers: b"name:value\\n" per trailing header, as the client hashed them."""
        return self._sign("\n".join((TRAILER_ALGORITHM, self.timestamp, self.scope, previous_signature,
                                      hashlib.sha256(canonical_trailers).hexdigest())))


@dataclass(frozen=True)
class AuthResult:
    account: Account | None  # None = anonymous
    access_key: str | None
    scheme: str  # one of SCHEMES
    payload_mode: str  # one of PAYLOAD_MODES
    payload_sha256: str | None = None  # lower-case hex, in "sha256" mode
    streaming: StreamingContext | None = None  # in the signed streaming modes

    @property
    def is_anonymous(self) -> bool:
        return self.account is None


# --- clock rules --------------------------------------------------------------------------------

MAX_CLOCK_SKEW = timedelta(minutes=15)
MAX_PRESIGNED_EXPIRY_SECONDS = 604800  # 7 days, for X-Amz-Expires and v2 Expires alike
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


_AMZ_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z\Z")


def parse_amz_date(value: str) -> datetime | None:
    """ISO 8601 basic ("20130524T000000Z") -> aware datetime, or None."""
    # A regex and the constructor: strptime costs several times more on every request.
    m = _AMZ_DATE_RE.match(value.strip())
    if m is None:
        return None
    try:
        return datetime(*map(int, m.groups()), tzinfo=timezone.utc)
    except ValueError:
        return None


def parse_http_date(value: str) -> datetime | None:
    """An x-amz-date / Date header in any form clients use (ISO 8601 basic or RFC 1123), or None."""
    parsed = parse_amz_date(value)
    if parsed is not None:
        return parsed
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def amz_timestamp(moment: datetime) -> str:
    """`moment` in ISO 8601 basic form ("20130524T000000Z"), its own fields (no conversion):
    what strftime("%Y%m%dT%H%M%SZ") gives, at a fraction of its cost (every signed request)."""
    if moment.year < 1000:   # strftime does not pad the year: keep its form exactly
        return moment.strftime(AMZ_DATE_FORMAT)
    return (f"{moment.year}{moment.month:02d}{moment.day:02d}"
            f"T{moment.hour:02d}{moment.minute:02d}{moment.second:02d}Z")


def iso8601(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_clock_skew(request_time: datetime, now: datetime) -> None:
    """RequestTimeTooSkewed when the request time is more than 15 minutes from ours."""
    if abs(request_time - now) > MAX_CLOCK_SKEW:
        raise S3Error("RequestTimeTooSkewed", RequestTime=iso8601(request_time), ServerTime=iso8601(now),
                      MaxAllowedSkewMilliseconds=str(int(MAX_CLOCK_SKEW.total_seconds() * 1000)))


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """Client-supplied text echoed in an error document: no surrogates or control characters."""
    return _NOT_XML.sub("?", text)


def signatures_equal(expected: str, provided: str) -> bool:
    """Constant-time comparison (a timing leak would let a client guess a signature byte by byte)."""
    return hmac.compare_digest(expected.encode("ascii"), provided.encode("utf-8", "surrogateescape"))


def lookup_secret(config: Config, access_key: str) -> tuple[Account, str]:
    """(account, secret) for an access key; InvalidAccessKeyId if unknown."""
    found = config.account_for_access_key(access_key)
    if found is None:
        raise S3Error("InvalidAccessKeyId", AWSAccessKeyId=xml_safe(access_key))
    return found
