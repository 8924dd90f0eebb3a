"""AWS's S3 limits, each named once (Amazon S3 User Guide, "Amazon S3 multipart upload limits",
"Object key naming", "Working with object metadata"; API reference of each action)."""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import DEFAULT_MAX_REQUEST_HEADER_BYTES, DEFAULT_REQUEST_BODY_TIMEOUT_MS, Config
from shared.errors import S3Error
# Listings, ListParts, DeleteObjects: the default and cap of a page (owned by shared/listing: the dmd lists too).
from shared.listing.common import MAX_PAGE  # noqa: F401

MAX_KEY_BYTES = 1024                    # an object key, in UTF-8
MAX_SINGLE_UPLOAD_BYTES = 5 * 1024 ** 3  # one PutObject, POST object, CopyObject, UploadPart(Copy) body
MAX_USER_METADATA_BYTES = 2048          # x-amz-meta-* names (without the prefix) and values together


def capped_int(digits: str, cap: int) -> int:
    """The value of a string of ASCII digits, or cap + 1 when it is larger than `cap`, without
    parsing thousands of digits (int() refuses more than 4300, and the value is out of range anyway)."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= len(str(cap)) else cap + 1


def check_object_key(key: str) -> None:
    """KeyTooLongError past 1024 UTF-8 bytes; a NUL is refused because it separates a key from
    its version id in the metadata key space (docs/metadata-keys.md)."""
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "Object key names may not contain a NUL character")


# ------------------------------------------------------------ the HTTP connection

MAX_REQUEST_HEADER_BYTES = DEFAULT_MAX_REQUEST_HEADER_BYTES   # the header section (config: maxRequestHeaderBytes)
MAX_REQUEST_LINE_BYTES = 16384          # ours: the request line (a 1024-byte key percent-encoded, a presigned query)
KEEP_ALIVE_TIMEOUT_S = 65               # an idle keep-alive connection; above the 60 s of common load balancers

@dataclass(frozen=True)
class HttpLimits:
    """What one connection may cost: the size of a request's head, how long the head may take
    to arrive and how long a request body may stay silent (gateway/server.py enforces them)."""
    max_header_bytes: int = MAX_REQUEST_HEADER_BYTES
    max_request_line_bytes: int = MAX_REQUEST_LINE_BYTES
    request_body_timeout_ms: int = DEFAULT_REQUEST_BODY_TIMEOUT_MS
    keep_alive_timeout_s: int = KEEP_ALIVE_TIMEOUT_S

    @property
    def request_body_timeout_s(self) -> float:
        return self.request_body_timeout_ms / 1000


def http_limits(config: Config) -> HttpLimits:
    """The limits config.json sets (`maxRequestHeaderBytes`, `requestBodyTimeoutMs`; environment
    S3_MAX_REQUEST_HEADER_BYTES, S3_REQUEST_BODY_TIMEOUT_MS)."""
    return HttpLimits(max_header_bytes=config.max_request_header_bytes,
                      request_body_timeout_ms=config.request_body_timeout_ms)
