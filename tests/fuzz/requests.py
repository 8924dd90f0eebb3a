"""Hypothesis strategies for S3 requests over every routed action, and `run_fuzz`.

A drawn request is a `Spec`: symbolic where it names things of the server's state (a prepared
bucket, key, version id, upload id, ETag: `Ref`), concrete everywhere else (headers, query
parameters, XML bodies, odd bytes). `materialize` resolves the references against the current
`World`, encodes the path and query as a client would and signs the request (SigV4 with
botocore's signer for most; also unsigned payloads, aws-chunked bodies, SigV2, presigned V4/V2,
anonymous and wrong signatures).

Two thirds of the requests are near-valid (`near_valid_requests`: a request AWS would serve on
the prepared world, per action, then 0-2 mutations: an odd header, query parameter, body, key,
bucket, method, signature or raw framing), one third wild (`requests`: every part drawn from
odd values). `run_fuzz` sends them (a keep-alive httpx client; a fraction over raw sockets,
with framing httpx will not produce; optionally several clients at once) and checks every answer:

- no status >= 500 other than 501 NotImplemented (with its S3 error document) and 503;
- every answer >= 400 to a request other than HEAD is an S3 error document (<Error><Code>);
- every request gets an answer: no dropped connection, no hang;
- whatever a write answered 2xx for reads back (GET, HEAD, GetObjectAttributes: same rules);
- afterwards the gateway still answers a normal PUT and GET.

Reproducible: the requests are a function of the seed (hypothesis with a fixed seed, no
example database, the generate phase only); the world's ids (version ids, upload ids) are
whatever the server gave, resolved by index.
"""
from __future__ import annotations

import base64
import functools
import itertools
import queue
import hashlib
import json
import re
import socket
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence, Union
from urllib.parse import quote, urlsplit

import httpx
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, Phase, given, seed as hseed, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.router import ROUTES, Route

ACCESS_KEY, SECRET_KEY = "accessKey1", "verySecretKey1"
REGION = "us-east-1"
CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
WRONG_CREDENTIALS = Credentials(ACCESS_KEY, "notTheSecret")
UNKNOWN_CREDENTIALS = Credentials("noSuchAccessKey", SECRET_KEY)
TIMEOUT_S = 60.0                # an answer slower than this counts as a hang
RESEED_EVERY = 500              # requests between two repairs of the world

# ---------------------------------------------------------------- symbolic references


class Ref(NamedTuple):
    """Something of the server's state, by kind and index (modulo what the world holds)."""
    kind: str       # bucket | key | version | upload | upload-key | etag | md5 | checksum:<algo> | copy-source
    index: int = 0


Value = Union[str, bytes, Ref]
OMIT = "\x00omit"     # what a reference resolves to when the world has no such thing (the parameter is left out)
BodyPart = Union[str, bytes, Ref]


@dataclass
class World:
    """What the fuzzed server holds (prepare_world makes it; requests may change it)."""
    buckets: list[str]                              # [plain, versioned, suspended, other]
    keys: list[str]
    versions: list[str] = field(default_factory=list)
    uploads: list[tuple[str, str, str]] = field(default_factory=list)   # (bucket, key, upload id)
    etags: list[str] = field(default_factory=list)
    # consistent targets: (bucket, key, version id or None, etag, size)
    objects: list[tuple[str, str, str | None, str, int]] = field(default_factory=list)
    parts: dict[str, list[tuple[int, str]]] = field(default_factory=dict)   # upload id -> (number, etag)
    tokens: list[str] = field(default_factory=list)  # continuation tokens of ListObjectsV2


@dataclass
class Spec:
    """One drawn request, before it meets the world."""
    action: str
    method: str
    bucket: Value | None            # None: the service
    key: Value | None               # None: the bucket
    query: list[tuple[str, Value | None]]   # None: a bare sub-resource (?acl)
    headers: list[tuple[str, Value]]
    body: tuple[BodyPart, ...]
    filler: int                     # bytes appended to the body
    auth: str                       # v4 | v4-unsigned | v4-chunked | v4-badsha | v2 | v4-presign | v2-presign
                                    # | anonymous | bad-signature | unknown-key
    transport: str                  # httpx | raw
    virtual_host: bool
    path_style: str                 # canonical | raw | lower-hex | double-slash
    raw_quirk: str                  # raw transport only: none | short-length | chunked | lf-only | no-length
                                    # | http10 | dup-length


@dataclass
class Prepared:
    """A concrete request: what goes on the wire."""
    method: str
    target: str                      # request target: path and query, as sent
    headers: list[tuple[str, bytes]]
    body: bytes
    transport: str
    raw_quirk: str = "none"
    action: str = ""
    auth: str = ""

    def reproducer(self) -> dict[str, Any]:
        return {"method": self.method, "target": self.target, "transport": self.transport,
                "raw_quirk": self.raw_quirk, "action": self.action, "auth": self.auth,
                "headers": [(k, v.decode("latin-1")) for k, v in self.headers],
                "body_len": len(self.body), "body_prefix": self.body[:4096]}


# ---------------------------------------------------------------- odd values


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class _CachedStrategies:
    """`st`, building each strategy once: a composite draws thousands of times, and building
    (and validating) a strategy costs more than drawing from it. Arguments must be constants."""

    def __init__(self) -> None:
        self._cache: dict[Any, st.SearchStrategy[Any]] = {}

    def __getattr__(self, name: str) -> Callable[..., st.SearchStrategy[Any]]:
        factory = getattr(st, name)

        def make(*args: Any, **kwargs: Any) -> st.SearchStrategy[Any]:
            key = (name, _freeze(args), _freeze(kwargs))
            strategy = self._cache.get(key)
            if strategy is None:
                strategy = self._cache[key] = factory(*args, **kwargs)
            return strategy
        return make


cst = _CachedStrategies()

ODD_STRINGS = [
    "", " ", "a", "0", "-1", "1", "00001", "null", "None", "true", "TRUE", "%", "%00", "%zz", "\x00", "\t",
    "\x7f", "\x1b[0m", "é", "日本語", "\U0001F600", "\u202e", "\ufeff", "\ufffe", "\uffff", "\u0301", "../",
    "/", "//", "?", "#", "&", "=", "+", ";", "*", ",", "<", ">&'\"", "]]>", "&amp;", "&#0;", "&lt;",
    "A" * 1024, "A" * 1025, "9" * 30, "9" * 5000, "1e3", "0x10", " 1", "1 ", "1.5", "-0", "+1",
    "2147483648", "18446744073709551616", "NaN", "inf", "\r\n", "\n", "\\", "'", "$(id)", "%s%s%n",
    "{}", "[]", "null\x00", "a" * 300, "\x01\x02\x03", "\xa0", "\xff", "é" * 600,
]

odd_text = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=24),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet="abc/-_.~%+ =&?#", max_size=20),
)
small_int_text = st.one_of(
    st.integers(-3, 1003).map(str),
    st.sampled_from(["", "abc", "1.0", " 5", "5 ", "+5", "0x5", "1e2", "9" * 25, "٣", "-0", "1_000", "１"]),
)

# Characters a surrogate stands for: lone surrogates reach the wire as invalid UTF-8 bytes.
def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- header strategies

HTTP_DATES = ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
              "Fri, 01 Jan 2100 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "Mon, 32 Foo 2020 99:99:99 GMT",
              "2020-01-01T00:00:00Z", "20200101T000000Z", "0", "-1", "tomorrow", "Sat, 01 Jan 0001 00:00:00 GMT",
              "Fri, 31 Dec 9999 23:59:59 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"]

ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 300000), st.integers(0, 300000)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 300000)),
    st.builds(lambda b: f"bytes=-{b}", st.integers(0, 300000)),
    st.sampled_from(["bytes=0-0", "bytes=-0", "bytes=0-", "bytes=", "bytes=-", "bytes=0-1,3-4", "bytes=abc",
                     "bytes=5-1", "items=0-1", "bytes = 0-1", "bytes=0-1 ", "bytes=" + "9" * 40 + "-",
                     "bytes=-" + "9" * 5000, "bytes=1-" + "9" * 5000, "bytes=\x00-1", "bytes=0--1", "bytes=--1",
                     "bytes=0-1,", ",", "BYTES=0-1", "bytes=1e3-", "bytes=0x1-2", "bytes=١-٢"]),
    odd_text,
)

etag_values = st.one_of(
    st.builds(lambda i: Ref("etag", i), st.integers(0, 8)),
    st.sampled_from(["*", '"*"', '""', '"d41d8cd98f00b204e9800998ecf8427e"', "d41d8cd98f00b204e9800998ecf8427e",
                     'W/"abc"', '"a", "b"', '"abc', ",", '"abc"-2', '"' + "f" * 32 + '-10000"']),
    odd_text,
)
dates = st.one_of(st.sampled_from(HTTP_DATES), odd_text)
canned_acls = st.sampled_from(["private", "public-read", "public-read-write", "authenticated-read",
                               "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write",
                               "aws-exec-read", "PRIVATE", "", "garbage"])
storage_classes = st.sampled_from(["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
                                   "INTELLIGENT_TIERING", "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS",
                                   "EXPRESS_ONEZONE", "standard", "", "us-east-1", "legacy"])
CHECKSUM_ALGOS = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"]
checksum_values = st.one_of(
    st.builds(lambda a: Ref("checksum:" + a), st.sampled_from(CHECKSUM_ALGOS)),
    st.sampled_from(["AAAAAA==", "AAAAAAAAAAA=", "", "!!!!", "=", "AAAA", "A" * 44, "A" * 43 + "=",
                     "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
    odd_text,
)
md5_values = st.one_of(
    st.just(Ref("md5")),
    st.sampled_from(["1B2M2Y8AsgTpgAmY7PhCfg==", "1B2M2Y8AsgTpgAmY7PhCfg", "AAAA", "", "not base64!",
                     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "d41d8cd98f00b204e9800998ecf8427e"]),
    odd_text,
)
algorithms = st.sampled_from(["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256", "crc32", "MD5", "", "SHA512",
                              "CRC32,SHA1"])
tag_sets = st.one_of(
    st.lists(st.tuples(odd_text, odd_text), max_size=12).map(
        lambda kv: "&".join(f"{quote(utf8(k), safe='')}={quote(utf8(v), safe='')}" for k, v in kv)),
    st.sampled_from(["a=b", "a=b&a=c", "=", "a", "a=", "=b", "%zz=1", "a=b&&c=d", "&", "a=%00", "a=b=c",
                     "&".join(f"k{i}=v" for i in range(11)), "k" * 129 + "=v", "k=" + "v" * 257,
                     "aws:tag=1", "a+b=c+d", "a%20b=c"]),
    odd_text,
)
copy_sources = st.one_of(
    st.builds(lambda i: Ref("copy-source", i), st.integers(0, 20)),
    st.sampled_from(["/", "", "bucket", "/nosuchbucket/k", "nosuchbucket/k", "/%00/k", "%2F", "/b/%zz",
                     "/b/k?versionId=", "/b/k?versionId=%00", "/b/k?versionId=null", "/b/k?foo=bar",
                     "arn:aws:s3:::b/k", "/" + "a" * 2000, "//k", "/b//", "/b/../x"]),
    odd_text,
)
directives = st.sampled_from(["COPY", "REPLACE", "copy", "", "MERGE"])
object_attributes = st.one_of(
    st.lists(st.sampled_from(["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize", "etag",
                              "Bogus", "", " ETag"]), max_size=6).map(",".join),
    odd_text,
)
sse_values = st.sampled_from(["AES256", "aws:kms", "aws:kms:dsse", "", "aes256", "none"])
meta_names = st.one_of(st.sampled_from(["a", "A", "foo-bar", "x", "_", "1", "a.b", "a" * 200, "ümlaut"]),
                       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12))

# name -> value strategy; the names S3 reads, plus some it does not.
HEADER_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "range": ranges,
    "if-match": etag_values, "if-none-match": etag_values,
    "if-modified-since": dates, "if-unmodified-since": dates,
    "x-amz-acl": canned_acls,
    "x-amz-grant-read": st.sampled_from(['id="abc"', 'uri="http://acs.amazonaws.com/groups/global/AllUsers"',
                                         'emailAddress="a@b.c"', "garbage", "", 'id=""']),
    "x-amz-grant-full-control": st.sampled_from(['id="79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"',
                                                 "id=", "x"]),
    "x-amz-storage-class": storage_classes,
    "x-amz-tagging": tag_sets,
    "x-amz-copy-source": copy_sources,
    "x-amz-copy-source-range": ranges,
    "x-amz-copy-source-if-match": etag_values, "x-amz-copy-source-if-none-match": etag_values,
    "x-amz-copy-source-if-modified-since": dates, "x-amz-copy-source-if-unmodified-since": dates,
    "x-amz-metadata-directive": directives, "x-amz-tagging-directive": directives,
    "content-md5": md5_values,
    "content-type": st.one_of(st.sampled_from(["application/xml", "text/plain", "application/octet-stream",
                                                "multipart/form-data; boundary=xyz", "multipart/form-data",
                                                "application/x-www-form-urlencoded", "", "a/b; c=d; e"]), odd_text),
    "content-encoding": st.sampled_from(["aws-chunked", "gzip", "aws-chunked,gzip", "identity", "", "br"]),
    "content-disposition": odd_text, "content-language": odd_text, "cache-control": odd_text, "expires": dates,
    "x-amz-checksum-crc32": checksum_values, "x-amz-checksum-crc32c": checksum_values,
    "x-amz-checksum-crc64nvme": checksum_values, "x-amz-checksum-sha1": checksum_values,
    "x-amz-checksum-sha256": checksum_values,
    "x-amz-sdk-checksum-algorithm": algorithms, "x-amz-checksum-algorithm": algorithms,
    "x-amz-checksum-type": st.sampled_from(["COMPOSITE", "FULL_OBJECT", "composite", "", "BOTH"]),
    "x-amz-checksum-mode": st.sampled_from(["ENABLED", "enabled", "DISABLED", ""]),
    "x-amz-trailer": st.sampled_from(["x-amz-checksum-crc32", "x-amz-checksum-sha256", "x-amz-checksum-bogus",
                                      "", "x-amz-meta-a", "x-amz-checksum-crc32,x-amz-checksum-crc32c"]),
    "x-amz-decoded-content-length": small_int_text,
    "x-amz-server-side-encryption": sse_values,
    "x-amz-server-side-encryption-aws-kms-key-id": odd_text,
    "x-amz-server-side-encryption-customer-algorithm": st.sampled_from(["AES256", "", "x"]),
    "x-amz-server-side-encryption-customer-key": st.sampled_from(["", "AAAA", "A" * 44]),
    "x-amz-server-side-encryption-customer-key-md5": md5_values,
    "x-amz-website-redirect-location": st.one_of(st.sampled_from(["/x", "http://example.com/", "x", ""]), odd_text),
    "x-amz-mfa": st.sampled_from(["serial 123456", "", "x", "arn:aws:iam::1:mfa/root 000000"]),
    "x-amz-bypass-governance-retention": st.sampled_from(["true", "false", "x"]),
    "x-amz-object-lock-mode": st.sampled_from(["GOVERNANCE", "COMPLIANCE", "x"]),
    "x-amz-object-lock-retain-until-date": dates,
    "x-amz-object-lock-legal-hold": st.sampled_from(["ON", "OFF", "x"]),
    "x-amz-bucket-object-lock-enabled": st.sampled_from(["true", "false", "x"]),
    "x-amz-object-ownership": st.sampled_from(["BucketOwnerEnforced", "ObjectWriter", "x"]),
    "x-amz-object-attributes": object_attributes,
    "x-amz-max-parts": small_int_text, "x-amz-part-number-marker": small_int_text,
    "x-amz-expected-bucket-owner": st.sampled_from(["123456789012", "000000000000", "x", ""]),
    "x-amz-source-expected-bucket-owner": st.sampled_from(["123456789012", "x"]),
    "x-amz-request-payer": st.sampled_from(["requester", "x"]),
    "x-amz-write-offset-bytes": small_int_text,
    "x-amz-security-token": st.sampled_from(["", "token", "A" * 500]),
    "x-amz-date": st.sampled_from(["20200101T000000Z", "garbage", "", "99999999T999999Z"]),
    "date": dates,
    "expect": st.sampled_from(["100-continue", "200-ok", ""]),
    "x-amz-user-agent": odd_text, "user-agent": odd_text,
    "origin": st.sampled_from(["http://example.com", "null", ""]),
    "access-control-request-method": st.sampled_from(["GET", "PUT", "X", ""]),
    "x-amz-content-sha256": st.sampled_from(["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                             "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "0" * 64, "x", ""]),
    "x-forwarded-for": st.sampled_from(["1.2.3.4", "garbage", ""]),
    "connection": st.sampled_from(["keep-alive", "close", "upgrade"]),
}
GENERIC_HEADERS = sorted(HEADER_VALUES)

# The headers each family of actions reads: most draws come from these.
GET_OBJECT_HEADERS = ["range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
                      "x-amz-checksum-mode", "x-amz-server-side-encryption-customer-algorithm",
                      "x-amz-request-payer", "x-amz-expected-bucket-owner"]
PUT_OBJECT_HEADERS = ["content-md5", "content-type", "x-amz-acl", "x-amz-storage-class", "x-amz-tagging",
                      "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
                      "x-amz-checksum-sha1", "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm",
                      "x-amz-server-side-encryption", "x-amz-website-redirect-location", "if-none-match",
                      "if-match", "content-disposition", "content-encoding", "cache-control", "expires",
                      "content-language", "x-amz-grant-read", "x-amz-object-lock-mode", "x-amz-trailer",
                      "x-amz-decoded-content-length", "x-amz-write-offset-bytes", "expect",
                      "x-amz-checksum-type", "x-amz-checksum-algorithm"]
COPY_HEADERS = ["x-amz-copy-source", "x-amz-copy-source-range", "x-amz-copy-source-if-match",
                "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since",
                "x-amz-copy-source-if-unmodified-since", "x-amz-metadata-directive", "x-amz-tagging-directive",
                "x-amz-tagging", "x-amz-storage-class", "content-type", "x-amz-checksum-algorithm",
                "x-amz-website-redirect-location", "x-amz-acl", "if-none-match", "if-match"]
ATTRIBUTES_HEADERS = ["x-amz-object-attributes", "x-amz-max-parts", "x-amz-part-number-marker"]
BUCKET_HEADERS = ["x-amz-acl", "x-amz-bucket-object-lock-enabled", "x-amz-object-ownership",
                  "x-amz-grant-full-control", "content-md5", "x-amz-mfa", "x-amz-expected-bucket-owner",
                  "x-amz-sdk-checksum-algorithm", "x-amz-checksum-crc32", "content-type"]

# ---------------------------------------------------------------- query strategies

QUERY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "list-type": st.sampled_from(["2", "1", "3", "", "abc", "02"]),
    "max-keys": small_int_text, "max-uploads": small_int_text, "max-parts": small_int_text,
    "max-buckets": small_int_text,
    "marker": odd_text, "key-marker": odd_text, "prefix": odd_text, "delimiter": odd_text,
    "start-after": odd_text, "upload-id-marker": st.one_of(st.builds(lambda i: Ref("upload", i), st.integers(0, 5)),
                                                          odd_text),
    "continuation-token": st.one_of(odd_text, st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                                    st.sampled_from(["AQ==", "eyJrIjoiYSJ9", "bnVsbA==", "e30=", "W10=",
                                                     base64.b64encode(b'{"key":"obj"}').decode()])),
    "version-id-marker": st.one_of(st.builds(lambda i: Ref("version", i), st.integers(0, 10)), odd_text),
    "part-number-marker": small_int_text,
    "encoding-type": st.sampled_from(["url", "URL", "", "base64", "url "]),
    "fetch-owner": st.sampled_from(["true", "false", "", "1", "x"]),
    "versionId": st.one_of(st.builds(lambda i: Ref("version", i), st.integers(0, 10)),
                           st.sampled_from(["null", "", "3939393939393939393939393939393939393939", "x" * 40]),
                           odd_text),
    "uploadId": st.one_of(st.builds(lambda i: Ref("upload", i), st.integers(0, 5)), odd_text),
    "partNumber": st.one_of(st.integers(-1, 10002).map(str), small_int_text),
    "response-content-type": odd_text, "response-content-disposition": odd_text,
    "response-cache-control": odd_text, "response-content-encoding": odd_text,
    "response-content-language": odd_text, "response-expires": st.one_of(dates, odd_text),
    "x-id": st.sampled_from(["GetObject", "PutObject", "x", ""]),
    "select-type": st.sampled_from(["2", "x"]),
}
SUBRESOURCES = ["acl", "tagging", "versioning", "versions", "uploads", "delete", "cors", "website", "lifecycle",
                "location", "policy", "encryption", "attributes", "list-type", "uploadId", "partNumber",
                "accelerate", "logging", "notification", "replication", "object-lock", "retention",
                "legal-hold", "restore", "select", "torrent", "requestPayment", "ownershipControls",
                "publicAccessBlock", "analytics", "metrics", "inventory", "intelligent-tiering", "session",
                "policyStatus", "website", "x-amz-bogus", "foo"]
LISTING_PARAMS = ["max-keys", "marker", "prefix", "delimiter", "encoding-type", "start-after",
                  "continuation-token", "fetch-owner"]
VERSIONS_PARAMS = ["max-keys", "key-marker", "version-id-marker", "prefix", "delimiter", "encoding-type"]
UPLOADS_PARAMS = ["max-uploads", "key-marker", "upload-id-marker", "prefix", "delimiter", "encoding-type"]
PARTS_PARAMS = ["max-parts", "part-number-marker", "encoding-type"]
GET_PARAMS = ["versionId", "partNumber", "response-content-type", "response-content-disposition",
              "response-cache-control", "response-content-encoding", "response-content-language",
              "response-expires"]

# ---------------------------------------------------------------- XML bodies


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")




PART_NUMBERS = st.one_of(st.integers(0, 3).map(str), small_int_text)
def _maybe_ns(draw: Callable, tag: str) -> str:
    choice = draw(cst.integers(0, 5))
    if choice == 0:
        return f"<{tag}>"
    if choice == 1:
        return f'<{tag} xmlns="http://wrong.example/">'
    return f'<{tag} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'


xml_texts = st.one_of(odd_text.map(_xml_text), st.sampled_from(["", "&#0;", "&#x1;", "&bogus;", "<x/>", "]]>",
                                                                "<![CDATA[a]]>", "&#xD800;", "&#1114112;"]))
VERSION_REF_OR_TEXT = st.one_of(st.builds(lambda j: Ref("version", j), st.integers(0, 9)), xml_texts)
ETAG_REF_OR_TEXT = st.one_of(st.builds(lambda j: Ref("etag", j), st.integers(0, 9)), xml_texts)
QUERY_NAMES = st.sampled_from(sorted(QUERY_VALUES)) | odd_text.filter(lambda s: s != "")


@st.composite
def delete_xml(draw: Callable) -> tuple[BodyPart, ...]:
    parts: list[BodyPart] = [_maybe_ns(draw, "Delete")]
    if draw(cst.booleans()):
        parts.append(f"<Quiet>{draw(cst.sampled_from(['true', 'false', 'TRUE', 'x', '']))}</Quiet>")
    n = draw(cst.one_of(cst.integers(0, 6), cst.sampled_from([1000, 1001])))
    for i in range(n):
        parts.append("<Object>")
        kind = draw(cst.integers(0, 4)) if i < 8 else 0
        if kind == 0:
            parts += ["<Key>", Ref("key", draw(cst.integers(0, 20)) if i < 8 else i), "</Key>"]
        elif kind == 1:
            parts.append(f"<Key>{draw(xml_texts)}</Key>")
        elif kind == 2:
            parts += ["<Key>", Ref("key", draw(cst.integers(0, 9))), "</Key><VersionId>",
                      draw(VERSION_REF_OR_TEXT),
                      "</VersionId>"]
        elif kind == 3:
            parts.append("<VersionId>null</VersionId>")
        else:
            parts.append(f"<Key>k</Key><ETag>{draw(xml_texts)}</ETag><Size>{draw(small_int_text)}</Size>")
        parts.append("</Object>")
    parts.append("</Delete>")
    return tuple(parts)


@st.composite
def complete_xml(draw: Callable) -> tuple[BodyPart, ...]:
    parts: list[BodyPart] = [_maybe_ns(draw, "CompleteMultipartUpload")]
    for _ in range(draw(cst.integers(0, 5))):
        parts.append("<Part>")
        if draw(cst.integers(0, 5)):
            parts.append(f"<PartNumber>{draw(PART_NUMBERS)}</PartNumber>")
        if draw(cst.integers(0, 5)):
            parts += ["<ETag>", draw(ETAG_REF_OR_TEXT), "</ETag>"]
        if draw(cst.integers(0, 3)) == 0:
            algo = draw(cst.sampled_from(["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME", "Bogus"]))
            parts.append(f"<Checksum{algo}>{draw(cst.sampled_from(['AAAAAA==', '', 'x', '====']))}</Checksum{algo}>")
        parts.append("</Part>")
    parts.append("</CompleteMultipartUpload>")
    return tuple(parts)


@st.composite
def versioning_xml(draw: Callable) -> tuple[BodyPart, ...]:
    status = draw(cst.sampled_from(["Enabled", "Suspended", "enabled", "", "Disabled", "<x/>"]))
    mfa = draw(cst.sampled_from(["", "<MfaDelete>Disabled</MfaDelete>", "<MfaDelete>Enabled</MfaDelete>",
                                "<MfaDelete>x</MfaDelete>"]))
    return (_maybe_ns(draw, "VersioningConfiguration"), f"<Status>{status}</Status>" if status != "" else "",
            mfa, "</VersioningConfiguration>")


@st.composite
def tagging_xml(draw: Callable) -> tuple[BodyPart, ...]:
    parts: list[BodyPart] = [_maybe_ns(draw, "Tagging"), "<TagSet>"]
    n = draw(cst.one_of(cst.integers(0, 4), cst.sampled_from([10, 11, 50, 51])))
    for i in range(n):
        key = draw(xml_texts) if i < 4 else f"k{i}"
        value = draw(xml_texts) if i < 4 else "v"
        parts.append(f"<Tag><Key>{key}</Key><Value>{value}</Value></Tag>")
    if draw(cst.integers(0, 6)) == 0:
        parts.append("<Tag><Key>dup</Key><Value>1</Value></Tag><Tag><Key>dup</Key><Value>2</Value></Tag>")
    if draw(cst.integers(0, 8)) == 0:
        parts.append("<Tag><Value>nokey</Value></Tag>")
    parts.append("</TagSet></Tagging>")
    return tuple(parts)


@st.composite
def acl_xml(draw: Callable) -> tuple[BodyPart, ...]:
    grantee = draw(cst.sampled_from([
        '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>'
        '79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be</ID></Grantee>',
        '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group"><URI>'
        'http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee>',
        '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Bogus"/>',
        "<Grantee><ID>x</ID></Grantee>", ""]))
    perm = draw(cst.sampled_from(["FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP", "x", ""]))
    return (_maybe_ns(draw, "AccessControlPolicy"),
            "<Owner><ID>79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be</ID></Owner>"
            if draw(cst.booleans()) else "",
            f"<AccessControlList><Grant>{grantee}<Permission>{perm}</Permission></Grant></AccessControlList>",
            "</AccessControlPolicy>")


SIMPLE_CONFIGS = [
    '<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin>'
    '</CORSRule></CORSConfiguration>',
    '<CORSConfiguration><CORSRule><AllowedMethod>BOGUS</AllowedMethod></CORSRule></CORSConfiguration>',
    '<LifecycleConfiguration><Rule><ID>r</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status>'
    '<Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>',
    '<LifecycleConfiguration><Rule><Status>x</Status><Expiration><Days>-1</Days></Expiration></Rule>'
    '</LifecycleConfiguration>',
    '<WebsiteConfiguration><IndexDocument><Suffix>index.html</Suffix></IndexDocument></WebsiteConfiguration>',
    '<WebsiteConfiguration><RedirectAllRequestsTo><HostName></HostName></RedirectAllRequestsTo>'
    '</WebsiteConfiguration>',
    '<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256'
    '</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>',
    '<ServerSideEncryptionConfiguration><Rule/></ServerSideEncryptionConfiguration>',
    '<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>',
    '<CreateBucketConfiguration><LocationConstraint>us-west-2</LocationConstraint></CreateBucketConfiguration>',
    '<CreateBucketConfiguration><LocationConstraint></LocationConstraint></CreateBucketConfiguration>',
    '<CreateBucketConfiguration><LocationConstraint>nowhere</LocationConstraint></CreateBucketConfiguration>',
    '<CreateBucketConfiguration/>',
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject",'
    '"Resource":"arn:aws:s3:::b/*"}]}',
    '{"Version": 1}', '{', '[]', 'null',
]

MALFORMED_BODIES = [
    b"", b"<", b"<a>", b"</a>", b"<a><b></a>", b"\xef\xbb\xbf<Delete/>", b"<?xml version='1.0'?>",
    b"<?xml version=\"1.0\" encoding=\"UTF-16\"?><Delete/>", "<Delete/>".encode("utf-16"),
    b"\xff\xfe\x00\x00", b"\x00" * 64, b"<Delete>\xff\xfe</Delete>", b"<Delete>\xed\xa0\x80</Delete>",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;'
    b'&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<Delete><Object><Key>&lol3;</Key></Object></Delete>",
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<Tagging><TagSet><Tag><Key>&xxe;</Key><Value>v</Value></Tag></TagSet></Tagging>",
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "http://127.0.0.1:1/x">]><Delete>&xxe;</Delete>',
    b'<!DOCTYPE d SYSTEM "http://127.0.0.1:1/dtd"><VersioningConfiguration/>',
    b"<?xml-stylesheet href='x'?><Delete><!-- c --><?pi x?><Object><Key>a</Key></Object></Delete>",
    b"<a:Delete xmlns:a='x'><a:Object><a:Key>k</a:Key></a:Object></a:Delete>",
    b"<Delete xmlns:b='urn:x' b:attr='1' attr='2'><Object Key='k'/></Delete>",
    b"<" + b"a" * 70000 + b"/>",
    b"<Delete>" + b"<Object>" * 5000 + b"</Delete>",
    b"<x>" * 300 + b"</x>" * 300,
    b"<Delete><![CDATA[<Object><Key>k</Key></Object>]]></Delete>",
    b"<Tagging><TagSet><Tag><Key>\xc3\xa9</Key><Value>&#x10FFFF;</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>garbage",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload><x/>",
    b"<VersioningConfiguration><Status>Enabled</Status><Status>Suspended</Status></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>Enabled<x/></Status></VersioningConfiguration>",
    b"<CompleteMultipartUpload><Part><PartNumber>1<PartNumber>2</PartNumber></PartNumber></Part>"
    b"</CompleteMultipartUpload>",
    b"<Delete><Object><Key><Key>a</Key></Key></Object></Delete>",
    b"<Delete><Object><Key></Key></Object></Delete>",
    b"<Delete><Object/></Delete>",
    b"<Tagging><TagSet><Tag><Key/><Value/></Tag></TagSet></Tagging>",
    b"<Tagging/>", b"<TagSet/>", b"<Delete/>", b"<CompleteMultipartUpload/>", b"<VersioningConfiguration/>",
]

generic_bodies = st.one_of(
    st.sampled_from(MALFORMED_BODIES).map(lambda b: (b,)),
    st.sampled_from(SIMPLE_CONFIGS).map(lambda s: (s,)),
    st.binary(max_size=64).map(lambda b: (b,)),
    xml_texts.map(lambda t: (t,)),
)


@st.composite
def form_body(draw: Callable) -> tuple[BodyPart, ...]:
    """A multipart/form-data body for PostObject (boundary "xyz"; the content-type header names it)."""
    fields = draw(cst.lists(cst.sampled_from(["key", "Content-Type", "acl", "policy", "x-amz-signature",
                                            "x-amz-credential", "x-amz-algorithm", "x-amz-date", "success_action_status",
                                            "success_action_redirect", "AWSAccessKeyId", "signature", "tagging",
                                            "x-amz-meta-a", "bogus", "Policy"]), max_size=8))
    parts: list[BodyPart] = []
    for name in fields:
        value = draw(cst.one_of(odd_text, cst.sampled_from(["eyJleHBpcmF0aW9uIjoiMjA5OS0wMS0wMVQwMDowMDowMFoiLCJj"
                                                          "b25kaXRpb25zIjpbXX0=", "AWS4-HMAC-SHA256", "201",
                                                          "accessKey1/20200101/us-east-1/s3/aws4_request"])))
        parts.append(f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    if draw(cst.booleans()):
        parts.append('--xyz\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                     "Content-Type: text/plain\r\n\r\ndata\r\n")
    ending = draw(cst.sampled_from(["--xyz--\r\n", "--xyz--", "", "--xyz\r\n", "--xy", "\r\n--xyz--\r\n"]))
    parts.append(ending)
    return tuple(parts)


BODIES_BY_ACTION: dict[str, st.SearchStrategy[tuple[BodyPart, ...]]] = {
    "DeleteObjects": delete_xml(),
    "CompleteMultipartUpload": complete_xml(),
    "PutBucketVersioning": versioning_xml(),
    "PutBucketTagging": tagging_xml(),
    "PutObjectTagging": tagging_xml(),
    "PutBucketAcl": acl_xml(),
    "PutObjectAcl": acl_xml(),
    "PostObject": form_body(),
}
DATA_ACTIONS = {"PutObject", "UploadPart"}

# ---------------------------------------------------------------- keys and buckets

odd_keys = st.one_of(
    st.sampled_from(["obj", "dir/a", "dir/b", "empty", "big", "nosuchkey", "a b", "a+b", "a%2Fb", "%", "..",
                     ".", "./x", "../x", "//", "a//b", "/", "dir/", "\x00", "a\x00b", "é", "e\u0301",
                     "\U0001F600", "\ud800", "\udfff", "\ufffe", "k" * 1024, "k" * 1025, "é" * 512, "é" * 513,
                     "?", "#", "a?b", "a#b", "\r\n", "\t", "\x7f", "\x01", "~", "*", "key&acl", "<Key>"]),
    st.text(max_size=30).filter(lambda k: k != ""),
    st.text(alphabet="ab/%._-~+ ", min_size=1, max_size=12),
)
odd_buckets = st.sampled_from(["nosuchbucket", "a", "ab", "a" * 64, "a" * 63, "UPPER", "under_score", "-dash",
                               "dot.", "192.168.1.1", "xn--abc", "a..b", "bucket-", "%00", "é", "_", ".",
                               "fz-new-bucket", "fz-new.bucket"])

# ---------------------------------------------------------------- the request strategy

AUTH_MODES = st.sampled_from(["v4"] * 30 + ["v4-unsigned", "v4-unsigned", "v4-chunked", "v4-chunked",
                              "v4-badsha", "v2", "v2", "v4-presign", "v4-presign", "v2-presign", "anonymous",
                              "anonymous", "bad-signature", "unknown-key"])
PATH_STYLES = st.sampled_from(["canonical"] * 20 + ["raw", "lower-hex", "double-slash"])
RAW_QUIRKS = st.sampled_from(["none", "none", "short-length", "chunked", "lf-only", "no-length", "http10",
                              "dup-length", "bare-cr", "obs-fold", "space-before-colon", "garbage-line",
                              "absolute-uri", "pipelined", "bad-chunked", "upgrade", "expect-wait"])
OTHER_METHODS = ["PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO", "get", "PROPFIND"]


@functools.lru_cache(maxsize=None)
def _route_strategy() -> st.SearchStrategy[Route]:
    """Every row of the routing table, alike (the sequence of a seed changes only with the table)."""
    return st.sampled_from(list(ROUTES))


@st.composite
def requests(draw: Callable) -> Spec:
    """One S3 request: a routed action, then perturbations."""
    route: Route = draw(_route_strategy())
    action = route.action
    method = route.method
    if draw(cst.integers(0, 60)) == 0:
        method = draw(cst.sampled_from(OTHER_METHODS))

    # target
    bucket: Value | None = None
    key: Value | None = None
    if route.target != "service":
        bucket = Ref("bucket", draw(cst.integers(0, 3))) if draw(cst.integers(0, 12)) else draw(odd_buckets)
        if action == "CreateBucket" and draw(cst.integers(0, 2)) == 0:
            bucket = draw(odd_buckets)
    if route.target == "object":
        key = Ref("key", draw(cst.integers(0, 12))) if draw(cst.integers(0, 3)) else draw(odd_keys)
    elif draw(cst.integers(0, 40)) == 0:
        key = draw(odd_keys)          # the wrong target for the action

    # query: the routing sub-resource, the action's parameters, noise
    query: list[tuple[str, Value | None]] = []
    if route.subresource is not None:
        sub = route.subresource
        if sub == "list-type":
            query.append((sub, draw(QUERY_VALUES["list-type"])))
        elif sub == "uploadId":
            query.append((sub, draw(QUERY_VALUES["uploadId"])))
        elif sub == "partNumber":
            query.append((sub, draw(QUERY_VALUES["partNumber"])))
        elif draw(cst.integers(0, 15)):
            query.append((sub, None))
        else:
            query.append((sub, draw(odd_text)))
    if action == "UploadPart" or action == "UploadPartCopy":
        query.append(("uploadId", draw(QUERY_VALUES["uploadId"])))
    params: list[str] = []
    if action in ("ListObjects", "ListObjectsV2"):
        params = LISTING_PARAMS
    elif action == "ListObjectVersions":
        params = VERSIONS_PARAMS
    elif action == "ListMultipartUploads":
        params = UPLOADS_PARAMS
    elif action == "ListParts":
        params = PARTS_PARAMS
    elif action in ("GetObject", "HeadObject"):
        params = GET_PARAMS
    elif action in ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", "DeleteObject",
                    "GetObjectAcl", "PutObjectAcl", "GetObjectAttributes"):
        params = ["versionId"]
    elif action == "ListBuckets":
        params = ["max-buckets", "continuation-token", "prefix", "bucket-region"]
    if params:
        for name in draw(cst.lists(cst.sampled_from(params), max_size=4, unique=True)):
            query.append((name, draw(QUERY_VALUES.get(name, odd_text))))
    for _ in range(draw(cst.integers(0, 2)) if draw(cst.integers(0, 4)) == 0 else 0):
        if draw(cst.booleans()):
            query.append((draw(cst.sampled_from(SUBRESOURCES)), None))
        else:
            name = draw(QUERY_NAMES)
            query.append((name, draw(QUERY_VALUES.get(name, odd_text))))
    if draw(cst.integers(0, 20)) == 0 and query:
        query.append(query[0])       # a repeated parameter

    # headers
    family: list[str] = []
    if action in ("GetObject", "HeadObject"):
        family = GET_OBJECT_HEADERS
    elif action in ("PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"):
        family = PUT_OBJECT_HEADERS
    elif action in ("CopyObject", "UploadPartCopy"):
        family = COPY_HEADERS
    elif action in ("GetObjectAttributes",):
        family = ATTRIBUTES_HEADERS
    elif route.target == "bucket":
        family = BUCKET_HEADERS
    else:
        family = ["content-md5", "x-amz-expected-bucket-owner", "x-amz-mfa", "x-amz-bypass-governance-retention"]
    headers: list[tuple[str, Value]] = []
    if route.header is not None:
        headers.append((route.header, draw(HEADER_VALUES.get(route.header, odd_text))))
    if action == "GetObjectAttributes" and draw(cst.integers(0, 6)):
        headers.append(("x-amz-object-attributes", draw(object_attributes)))
    for name in draw(cst.lists(cst.sampled_from(family), max_size=5, unique=True)):
        headers.append((name, draw(HEADER_VALUES.get(name, odd_text))))
    if draw(cst.integers(0, 3)) == 0:
        for name in draw(cst.lists(cst.sampled_from(GENERIC_HEADERS), max_size=3, unique=True)):
            headers.append((name, draw(HEADER_VALUES[name])))
    if action in ("PutObject", "CopyObject", "CreateMultipartUpload") and draw(cst.integers(0, 2)) == 0:
        for _ in range(draw(cst.integers(1, 4))):
            headers.append(("x-amz-meta-" + draw(meta_names), draw(odd_text)))
        if draw(cst.integers(0, 10)) == 0:
            headers.append(("x-amz-meta-big", "v" * 2100))
    if draw(cst.integers(0, 30)) == 0:
        name = draw(cst.text(alphabet="abcdefghijklmnopqrstuvwxyz-_.!#$%&'*+^`|~0123456789", min_size=1, max_size=20))
        headers.append((name, draw(odd_text)))

    # body
    filler = 0
    if action in BODIES_BY_ACTION and draw(cst.integers(0, 7)):
        body = draw(BODIES_BY_ACTION[action])
    elif action in DATA_ACTIONS:
        body = ()
        filler = draw(cst.one_of(cst.integers(0, 64), cst.sampled_from([0, 1, 1023, 1024, 65535, 65536, 200001])))
        if draw(cst.integers(0, 10)) == 0:
            body = draw(generic_bodies)
    elif route.method in ("PUT", "POST") and draw(cst.integers(0, 2)):
        body = draw(generic_bodies)
    elif draw(cst.integers(0, 20)) == 0:
        body = draw(generic_bodies)
        filler = draw(cst.sampled_from([0, 10, 5000]))
    else:
        body = ()
    if action == "PostObject" and draw(cst.integers(0, 4)):
        headers.append(("content-type", draw(cst.sampled_from(["multipart/form-data; boundary=xyz",
                                                              "multipart/form-data; boundary=\"xyz\"",
                                                              "multipart/form-data", "multipart/form-data; boundary=",
                                                              "multipart/mixed; boundary=xyz", "text/plain"]))))

    auth = draw(AUTH_MODES)
    transport = "raw" if draw(cst.integers(0, 30)) == 0 else "httpx"
    raw_quirk = draw(RAW_QUIRKS) if transport == "raw" else "none"
    return Spec(action=action, method=method, bucket=bucket, key=key, query=query, headers=headers, body=body,
                filler=filler, auth=auth, transport=transport, virtual_host=draw(cst.integers(0, 15)) == 0,
                path_style=draw(PATH_STYLES), raw_quirk=raw_quirk)


# ---------------------------------------------------------------- near-valid requests
# A request AWS would serve (on the prepared world), then at most a couple of mutations: the way
# to reach the code behind the first check of each handler.

VALID_TAGS = st.lists(st.tuples(st.sampled_from(["a", "b", "k 1", "é", "x" * 128]),
                                st.sampled_from(["", "1", "v v", "ü", "y" * 256])), min_size=0, max_size=3,
                      unique_by=lambda kv: kv[0])
VALID_RANGES = st.one_of(st.builds(lambda a, b: f"bytes={a}-{a + b}", st.integers(0, 200), st.integers(0, 200)),
                         st.builds(lambda b: f"bytes=-{b}", st.integers(1, 200)),
                         st.builds(lambda a: f"bytes={a}-", st.integers(0, 200)))
VALID_DATES = st.sampled_from(["Sun, 06 Nov 1994 08:49:37 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"])
VALID_ACLS = st.sampled_from(["private", "public-read", "public-read-write", "authenticated-read",
                              "bucket-owner-read", "bucket-owner-full-control"])
VALID_ATTRIBUTES = st.lists(st.sampled_from(["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]),
                            min_size=1, max_size=5, unique=True).map(",".join)
VALID_CHECKSUM_HEADER = st.sampled_from(CHECKSUM_ALGOS).map(lambda a: ("x-amz-checksum-" + a, Ref("checksum:" + a)))
PUBLIC_ACCESS_BLOCK = ("<PublicAccessBlockConfiguration><BlockPublicAcls>{}</BlockPublicAcls><IgnorePublicAcls>false"
                       "</IgnorePublicAcls><BlockPublicPolicy>{}</BlockPublicPolicy><RestrictPublicBuckets>false"
                       "</RestrictPublicBuckets></PublicAccessBlockConfiguration>")


def _tagging_doc(tags: list[tuple[str, str]]) -> str:
    return ("<Tagging><TagSet>" + "".join(f"<Tag><Key>{_xml_text(k)}</Key><Value>{_xml_text(v)}</Value></Tag>"
                                           for k, v in tags) + "</TagSet></Tagging>")


_NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
FUTURE = Ref("future-date", 1)
CONFIG_BODIES: dict[str, list[tuple[BodyPart, ...]]] = {
    "PutBucketCors": [
        (f"<CORSConfiguration{_NS}><CORSRule><AllowedMethod>GET</AllowedMethod><AllowedOrigin>*</AllowedOrigin>"
         "</CORSRule></CORSConfiguration>",),
        ("<CORSConfiguration><CORSRule><ID>r</ID><AllowedHeader>*</AllowedHeader><AllowedMethod>PUT</AllowedMethod>"
         "<AllowedMethod>POST</AllowedMethod><AllowedOrigin>http://www.example.com</AllowedOrigin>"
         "<ExposeHeader>x-amz-request-id</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>"
         "<CORSRule><AllowedMethod>DELETE</AllowedMethod><AllowedOrigin>https://*.example.com</AllowedOrigin>"
         "</CORSRule></CORSConfiguration>",)],
    "PutBucketWebsite": [
        ("<WebsiteConfiguration><IndexDocument><Suffix>index.html</Suffix></IndexDocument><ErrorDocument><Key>"
         "error.html</Key></ErrorDocument></WebsiteConfiguration>",),
        ("<WebsiteConfiguration><RedirectAllRequestsTo><HostName>example.com</HostName><Protocol>https</Protocol>"
         "</RedirectAllRequestsTo></WebsiteConfiguration>",),
        ("<WebsiteConfiguration><IndexDocument><Suffix>index.html</Suffix></IndexDocument><RoutingRules>"
         "<RoutingRule><Condition><KeyPrefixEquals>docs/</KeyPrefixEquals></Condition><Redirect>"
         "<ReplaceKeyPrefixWith>documents/</ReplaceKeyPrefixWith></Redirect></RoutingRule><RoutingRule>"
         "<Condition><HttpErrorCodeReturnedEquals>404</HttpErrorCodeReturnedEquals></Condition><Redirect>"
         "<HostName>example.com</HostName><HttpRedirectCode>302</HttpRedirectCode></Redirect></RoutingRule>"
         "</RoutingRules></WebsiteConfiguration>",)],
    "PutBucketLifecycleConfiguration": [
        ("<LifecycleConfiguration><Rule><ID>a</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>"
         "<Expiration><Days>30</Days></Expiration></Rule></LifecycleConfiguration>",),
        ("<LifecycleConfiguration><Rule><ID>b</ID><Filter><And><Prefix>x</Prefix><Tag><Key>k</Key><Value>v</Value>"
         "</Tag><Tag><Key>k2</Key><Value>v2</Value></Tag></And></Filter><Status>Disabled</Status>"
         "<NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration>"
         "<AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation>"
         "</AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>",),
        ("<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status><Expiration><Date>2030-01-01T00:00:00Z"
         "</Date></Expiration></Rule><Rule><Filter><Tag><Key>t</Key><Value></Value></Tag></Filter><Status>Enabled"
         "</Status><Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>"
         "</LifecycleConfiguration>",)],
    "PutBucketEncryption": [
        ("<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256"
         "</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",),
        ("<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms"
         "</SSEAlgorithm><KMSMasterKeyID>arn:aws:kms:us-east-1:123456789012:key/x</KMSMasterKeyID>"
         "</ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule>"
         "</ServerSideEncryptionConfiguration>",)],
    "PutObjectLockConfiguration": [
        ("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>"
         "GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>",),
        ("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",),
        ("<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>"
         "COMPLIANCE</Mode><Years>1</Years></DefaultRetention></Rule></ObjectLockConfiguration>",)],
    "PutObjectRetention": [
        ("<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>", FUTURE, "</RetainUntilDate></Retention>",),
        ("<Retention><Mode>GOVERNANCE</Mode><RetainUntilDate>2001-01-01T00:00:00Z</RetainUntilDate></Retention>",),
        ("<Retention/>",)],
    "PutObjectLegalHold": [("<LegalHold><Status>ON</Status></LegalHold>",),
                           ("<LegalHold><Status>OFF</Status></LegalHold>",)],
}
LOCK_ACTIONS = {"GetObjectRetention", "GetObjectLegalHold", "PutObjectRetention", "PutObjectLegalHold"}

ValueMaker = Union[st.SearchStrategy[Any], Callable[[int], Value]]
VALID_GET_HEADERS: dict[str, ValueMaker] = {
    "range": VALID_RANGES, "if-match": lambda i: Ref("obj-etag", i), "if-none-match": st.just('"0123"'),
    "if-modified-since": VALID_DATES, "if-unmodified-since": VALID_DATES, "x-amz-checksum-mode": st.just("ENABLED")}
VALID_PUT_HEADERS: dict[str, ValueMaker] = {
    "x-amz-acl": VALID_ACLS,
    "x-amz-tagging": VALID_TAGS.map(lambda t: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in t)),
    "content-type": st.just("text/plain"), "x-amz-storage-class": st.just("STANDARD"),
    "content-md5": lambda i: Ref("md5"), "x-amz-meta-a": st.sampled_from(["1", "é", "a b"]),
    "cache-control": st.just("no-cache"), "content-disposition": st.just("inline"), "if-none-match": st.just("*"),
    "x-amz-website-redirect-location": st.just("/x")}
VALID_COPY_HEADERS: dict[str, ValueMaker] = {
    "x-amz-metadata-directive": st.sampled_from(["COPY", "REPLACE"]),
    "x-amz-tagging-directive": st.sampled_from(["COPY", "REPLACE"]),
    "x-amz-copy-source-if-match": lambda i: Ref("obj-etag", i), "x-amz-copy-source-if-none-match": st.just('"0123"'),
    "x-amz-copy-source-if-modified-since": VALID_DATES, "x-amz-tagging": st.just("a=b"), "x-amz-meta-b": st.just("2"),
    "x-amz-storage-class": st.just("STANDARD"), "x-amz-checksum-algorithm": st.just("SHA256")}
_LIST_COMMON: dict[str, ValueMaker] = {
    "prefix": st.sampled_from(["", "dir/", "d", "é", "odd", "mpu"]), "delimiter": st.sampled_from(["/", "e", "é"]),
    "encoding-type": st.just("url")}
VALID_LIST_PARAMS: dict[str, dict[str, ValueMaker]] = {
    "ListObjects": {**_LIST_COMMON, "max-keys": st.sampled_from(["0", "1", "2", "1000"]),
                    "marker": st.sampled_from(["dir/a", "big", "é"])},
    "ListObjectsV2": {**_LIST_COMMON, "max-keys": st.sampled_from(["0", "1", "2", "1000"]),
                      "start-after": st.sampled_from(["dir/a", "big", "é"]), "fetch-owner": st.just("true")},
    "ListObjectVersions": {**_LIST_COMMON, "max-keys": st.sampled_from(["0", "1", "2"]),
                           "key-marker": st.sampled_from(["dir/a", "mpu", "big"]),
                           "version-id-marker": lambda i: Ref("obj-vid", i)},
    "ListMultipartUploads": {**_LIST_COMMON, "max-uploads": st.sampled_from(["0", "1", "2"]),
                             "key-marker": st.sampled_from(["dir/a", "mpu", "big"]),
                             "upload-id-marker": lambda i: Ref("up-id", i)},
}


def _some(draw: Callable, options: dict[str, ValueMaker], i: int, most: int) -> list[tuple[str, Value]]:
    """Up to `most` of the options, each with a value (a strategy's draw, or made from the index)."""
    names = draw(cst.lists(cst.sampled_from(tuple(options)), max_size=most, unique=True))
    out: list[tuple[str, Value]] = []
    for name in names:
        maker = options[name]
        out.append((name, draw(maker) if isinstance(maker, st.SearchStrategy) else maker(i)))
    return out


@st.composite
def valid_parts(draw: Callable, route: Route) -> dict[str, Any]:
    """bucket, key, query, headers, body, filler of a request AWS would serve on the world."""
    a = route.action
    i = draw(cst.integers(0, 63))           # which object / upload of the world
    b = draw(cst.integers(0, 2))            # which bucket
    bucket: Value | None = Ref("bucket", b) if route.target != "service" else None
    key: Value | None = None
    q: list[tuple[str, Value | None]] = []
    h: list[tuple[str, Value]] = []
    body: tuple[BodyPart, ...] = ()
    filler = 0
    if route.subresource and route.subresource not in ("uploadId", "partNumber", "list-type"):
        q.append((route.subresource, None))
    obj = (Ref("obj-bucket", i), Ref("obj-key", i))
    upload = (Ref("up-bucket", i), Ref("up-key", i))
    if a in ("GetObject", "HeadObject"):
        bucket, key = obj
        if draw(cst.booleans()):
            q.append(("versionId", Ref("obj-vid", i)))
        h += _some(draw, VALID_GET_HEADERS, i, 2)
        if draw(cst.integers(0, 5)) == 0:
            q.append(("partNumber", draw(cst.sampled_from(["1", "2"]))))
        if draw(cst.integers(0, 4)) == 0:
            q.append((draw(cst.sampled_from(["response-content-type", "response-content-disposition",
                                             "response-cache-control", "response-expires",
                                             "response-content-language", "response-content-encoding"])),
                      draw(cst.sampled_from(["text/plain", "attachment; filename=\"a b.txt\"", "no-cache",
                                             "Fri, 01 Jan 2100 00:00:00 GMT", "é"]))))
    elif a in LOCK_ACTIONS:
        locked = draw(cst.integers(0, 3)) > 0
        bucket, key = (Ref("lobj-bucket", i), Ref("lobj-key", i)) if locked else obj
        if draw(cst.booleans()):
            q.append(("versionId", Ref("lobj-vid" if locked else "obj-vid", i)))
        if a in CONFIG_BODIES:
            body = draw(cst.sampled_from(CONFIG_BODIES[a]))
            h.append(("content-md5", Ref("md5")) if draw(cst.integers(0, 3)) else draw(VALID_CHECKSUM_HEADER))
            if draw(cst.integers(0, 3)) == 0:
                h.append(("x-amz-bypass-governance-retention", "true"))
    elif a in CONFIG_BODIES:
        body = draw(cst.sampled_from(CONFIG_BODIES[a]))
        if a == "PutObjectLockConfiguration":
            bucket = Ref("bucket", draw(cst.sampled_from([4, 4, 0])))
        if draw(cst.integers(0, 3)):
            h.append(("content-md5", Ref("md5")))
    elif a in ("GetObjectAcl", "GetObjectTagging", "DeleteObjectTagging", "PutObjectTagging", "PutObjectAcl",
               "DeleteObject", "GetObjectAttributes"):
        bucket, key = obj
        if draw(cst.booleans()):
            q.append(("versionId", Ref("obj-vid", i)))
        if a == "PutObjectTagging":
            body = (_tagging_doc(draw(VALID_TAGS)),)
        elif a == "PutObjectAcl":
            if draw(cst.booleans()):
                h.append(("x-amz-acl", draw(VALID_ACLS)))
            else:
                body = draw(acl_xml())
        elif a == "GetObjectAttributes":
            h.append(("x-amz-object-attributes", draw(VALID_ATTRIBUTES)))
            if draw(cst.booleans()):
                h.append(("x-amz-max-parts", draw(cst.sampled_from(["1", "2", "1000"]))))
        elif a == "DeleteObject" and draw(cst.integers(0, 3)) == 0:
            h.append(("if-match", Ref("obj-etag", i)))
    elif a in ("PutObject", "CreateMultipartUpload"):
        key = draw(cst.one_of(cst.just(Ref("key", i)), cst.sampled_from(["new", "dir/new", "é/ü", "a b+c"])))
        filler = draw(cst.sampled_from([0, 1, 17, 1000, 70000])) if a == "PutObject" else 0
        h += _some(draw, VALID_PUT_HEADERS, i, 3)
        if a == "PutObject" and draw(cst.integers(0, 2)) == 0:
            h.append(draw(VALID_CHECKSUM_HEADER))
        if a == "CreateMultipartUpload" and draw(cst.integers(0, 2)) == 0:
            h.append(("x-amz-checksum-algorithm", draw(cst.sampled_from(["CRC32", "CRC32C", "SHA1", "SHA256",
                                                                        "CRC64NVME"]))))
            if draw(cst.booleans()):
                h.append(("x-amz-checksum-type", draw(cst.sampled_from(["COMPOSITE", "FULL_OBJECT"]))))
    elif a in ("UploadPart", "UploadPartCopy", "ListParts", "AbortMultipartUpload", "CompleteMultipartUpload"):
        bucket, key = upload
        q.append(("uploadId", Ref("up-id", i)))
        if a in ("UploadPart", "UploadPartCopy"):
            q.append(("partNumber", draw(cst.sampled_from(["1", "2", "3", "10000"]))))
        if a == "UploadPart":
            filler = draw(cst.sampled_from([0, 5, 100, 5000]))
            if draw(cst.integers(0, 3)) == 0:
                h.append(draw(VALID_CHECKSUM_HEADER))
        elif a == "UploadPartCopy":
            h.append(("x-amz-copy-source", Ref("obj-copy", i)))
            if draw(cst.booleans()):
                h.append(("x-amz-copy-source-range", Ref("obj-range", i)))
        elif a == "ListParts":
            if draw(cst.booleans()):
                q.append(("max-parts", draw(cst.sampled_from(["1", "2", "1000"]))))
            if draw(cst.booleans()):
                q.append(("part-number-marker", draw(cst.sampled_from(["0", "1", "2"]))))
        elif a == "CompleteMultipartUpload":
            body = (Ref("up-complete", i),)
    elif a == "CopyObject":
        key = draw(cst.one_of(cst.just(Ref("key", i)), cst.sampled_from(["copy", "dir/copy"])))
        h.append(("x-amz-copy-source", Ref("obj-copy", i)))
        h += _some(draw, VALID_COPY_HEADERS, i, 3)
    elif a in ("ListObjects", "ListObjectsV2"):
        if a == "ListObjectsV2":
            q.append(("list-type", "2"))
            if draw(cst.integers(0, 3)) == 0:
                q.append(("continuation-token", Ref("token", i)))
        q += _some(draw, VALID_LIST_PARAMS[a], i, 3)
    elif a in ("ListObjectVersions", "ListMultipartUploads"):
        q += _some(draw, VALID_LIST_PARAMS[a], i, 3)
    elif a == "ListBuckets":
        if draw(cst.booleans()):
            q.append(("max-buckets", draw(cst.sampled_from(["1", "2", "1000"]))))
        if draw(cst.booleans()):
            q.append(("prefix", "fz"))
    elif a == "DeleteObjects":
        parts: list[BodyPart] = ["<Delete>"]
        if draw(cst.booleans()):
            parts.append("<Quiet>true</Quiet>")
        for j in draw(cst.lists(cst.integers(0, 63), min_size=1, max_size=3)):
            parts += ["<Object><Key>", Ref("obj-key", j), "</Key>", Ref("obj-vid-xml", j), "</Object>"]
        body = tuple(parts + ["</Delete>"])
        bucket = Ref("obj-bucket", i)    # keys of one bucket or another: both answer per key
        h.append(("content-md5", Ref("md5")) if draw(cst.booleans()) else draw(VALID_CHECKSUM_HEADER))
    elif a in ("PutBucketTagging",):
        body = (_tagging_doc(draw(VALID_TAGS)),)
    elif a == "PutBucketVersioning":
        body = ("<VersioningConfiguration><Status>", draw(cst.sampled_from(["Enabled", "Suspended"])),
                "</Status></VersioningConfiguration>")
        bucket = Ref("bucket", draw(cst.sampled_from([1, 2, 3])))   # the plain bucket stays unversioned
    elif a == "PutBucketAcl":
        if draw(cst.booleans()):
            h.append(("x-amz-acl", draw(VALID_ACLS)))
        else:
            body = draw(acl_xml())
    elif a == "PutBucketPolicy":
        body = ('{"Version":"2012-10-17","Statement":[{"Sid":"s","Effect":"Allow","Principal":"*",'
                '"Action":"s3:GetObject","Resource":"', Ref("bucket-arn", b), '"}]}')
    elif a == "PutPublicAccessBlock":
        body = (PUBLIC_ACCESS_BLOCK.format(draw(cst.sampled_from(["true", "false"])),
                                           draw(cst.sampled_from(["true", "false"]))),)
    elif a == "PutBucketOwnershipControls":
        body = ("<OwnershipControls><Rule><ObjectOwnership>", draw(cst.sampled_from(
            ["BucketOwnerPreferred", "ObjectWriter", "BucketOwnerEnforced"])), "</ObjectOwnership></Rule>"
            "</OwnershipControls>")
    elif a == "CreateBucket":
        bucket = draw(cst.sampled_from(["fz-new-a", "fz-new-b", "fz-new.c"]))
        if draw(cst.booleans()):
            body = (draw(cst.sampled_from(SIMPLE_CONFIGS[8:13])),)
        if draw(cst.integers(0, 3)) == 0:
            h.append(("x-amz-acl", draw(VALID_ACLS)))
    elif a == "DeleteBucket":
        bucket = draw(cst.sampled_from(["fz-new-a", "fz-new-b", "fz-new.c", Ref("bucket", 3)]))
    elif a == "PostObject":
        body = (Ref("post-form", i),)
        h.append(("content-type", "multipart/form-data; boundary=xyz"))
    elif route.method == "PUT" and route.target == "bucket":
        body = (draw(cst.sampled_from(SIMPLE_CONFIGS)),)
    return {"bucket": bucket, "key": key, "query": q, "headers": h, "body": body, "filler": filler}


WRITE_ACTIONS = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload", "PostObject", "PutObjectTagging",
                           "PutObjectAcl"})
MUTATIONS = ["header", "header", "query", "body", "key", "auth", "drop", "method", "raw", "bucket", "dup-header"]


@st.composite
def near_valid_requests(draw: Callable) -> Spec:
    """A request AWS would serve, with 0 to 2 mutations."""
    route: Route = draw(_route_strategy())
    parts = draw(valid_parts(route))
    spec = Spec(action=route.action, method=route.method, bucket=parts["bucket"], key=parts["key"],
                query=list(parts["query"]), headers=list(parts["headers"]), body=tuple(parts["body"]),
                filler=parts["filler"], auth="v4", transport="httpx", virtual_host=draw(cst.integers(0, 15)) == 0,
                path_style="canonical", raw_quirk="none")
    for mutation in draw(cst.lists(cst.sampled_from(MUTATIONS), max_size=2)):
        if mutation == "header":
            name = draw(cst.sampled_from(GENERIC_HEADERS))
            spec.headers.append((name, draw(HEADER_VALUES[name])))
        elif mutation == "dup-header" and spec.headers:
            name, _ = spec.headers[draw(cst.integers(0, len(spec.headers) - 1))]
            spec.headers.append((name, draw(HEADER_VALUES.get(name, odd_text))))
        elif mutation == "query":
            name = draw(QUERY_NAMES)
            spec.query.append((name, draw(QUERY_VALUES.get(name, odd_text))))
        elif mutation == "body":
            if spec.body and draw(cst.booleans()):
                whole = b"".join(p if isinstance(p, bytes) else p.encode() for p in spec.body if not isinstance(p, Ref))
                cut = draw(cst.integers(0, max(len(whole) - 1, 0)))
                spec.body = (whole[:cut] + draw(cst.sampled_from([b"", b"<", b"\x00", b"&", b"</x>", b"\xff"])),)
            else:
                spec.body = draw(generic_bodies)
        elif mutation == "key":
            spec.key = draw(odd_keys)
        elif mutation == "bucket":
            spec.bucket = draw(odd_buckets)
        elif mutation == "auth":
            spec.auth = draw(AUTH_MODES)
        elif mutation == "drop":
            if spec.query and draw(cst.booleans()):
                spec.query.pop(draw(cst.integers(0, len(spec.query) - 1)))
            elif spec.headers:
                spec.headers.pop(draw(cst.integers(0, len(spec.headers) - 1)))
        elif mutation == "method":
            spec.method = draw(cst.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", *OTHER_METHODS]))
        elif mutation == "raw":
            spec.transport, spec.raw_quirk = "raw", draw(RAW_QUIRKS)
    return spec


fuzz_requests = st.one_of(near_valid_requests(), near_valid_requests(), requests())


# ---------------------------------------------------------------- materialize: resolve, encode, sign


def _pick(items: Sequence[Any], index: int, default: Any) -> Any:
    return items[index % len(items)] if items else default


def filler_bytes(n: int) -> bytes:
    if n <= 0:
        return b""
    block = hashlib.sha256(str(n).encode()).digest() * 64   # 2 KiB, deterministic
    return (block * (n // len(block) + 1))[:n]


def checksum_b64(algo: str, data: bytes) -> str:
    """The base64 checksum a client sends (CRC32C / CRC64NVME by the gateway's own tables)."""
    if algo == "crc32":
        return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    if algo == "sha1":
        return base64.b64encode(hashlib.sha1(data).digest()).decode()
    if algo == "sha256":
        return base64.b64encode(hashlib.sha256(data).digest()).decode()
    from gateway import checksums
    return checksums.checksum_b64(algo.upper(), data)


def aws_quote(text: str | bytes, safe: str = "") -> str:
    raw = utf8(text) if isinstance(text, str) else text
    return quote(raw, safe="-_.~" + safe)


class Materializer:
    """Turns specs into signed, concrete requests for one endpoint and world."""

    def __init__(self, endpoint: str, world: World):
        parts = urlsplit(endpoint)
        self.host = parts.netloc
        self.port = parts.port or 80
        self.world = world

    def resolve(self, value: Value | None, body: bytes = b"") -> str | bytes | None:
        if not isinstance(value, Ref):
            return value
        w = self.world
        kind, i = value
        if kind == "bucket":
            return _pick(w.buckets, i, "nosuchbucket") if i < len(w.buckets) else "fz-absent-bucket"
        if kind == "key":
            return _pick(w.keys, i, "obj") if i < 2 * len(w.keys) else f"absent-{i}"
        if kind == "version":
            return _pick(w.versions, i, "null")
        if kind == "upload":
            return _pick([u[2] for u in w.uploads], i, "nosuchupload")
        if kind == "etag":
            return '"' + _pick(w.etags, i, "0" * 32) + '"'
        if kind == "md5":
            return base64.b64encode(hashlib.md5(body).digest()).decode()
        if kind.startswith("checksum:"):
            return checksum_b64(kind.split(":", 1)[1], body)
        if kind.startswith("lobj-"):          # an object of the bucket with object lock
            locked = [o for o in w.objects if len(w.buckets) > 4 and o[0] == w.buckets[4]]
            return self._object_ref(locked, "obj-" + kind[5:], i)
        if kind.startswith("obj-"):
            return self._object_ref(w.objects, kind, i)
        if kind.startswith("up-"):
            if not w.uploads:
                return "nosuchupload"
            bucket, key, upload_id = w.uploads[i % len(w.uploads)]
            if kind == "up-complete":
                parts = w.parts.get(upload_id, [])
                return ("<CompleteMultipartUpload>" + "".join(
                    f"<Part><PartNumber>{n}</PartNumber><ETag>\"{e}\"</ETag></Part>" for n, e in parts)
                    + "</CompleteMultipartUpload>")
            return {"up-bucket": bucket, "up-key": key, "up-id": upload_id}[kind]
        if kind == "future-date":
            from datetime import datetime, timedelta, timezone
            return (datetime.now(timezone.utc) + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if kind == "token":
            return _pick(w.tokens, i, "AAAA")
        if kind == "bucket-arn":
            return f"arn:aws:s3:::{_pick(w.buckets, i, 'b')}/*"
        if kind == "post-form":
            return self.post_form(i)
        if kind == "copy-source":
            bucket = _pick(w.buckets, i, "b")
            key = _pick(w.keys, i // 2, "obj")
            src = f"/{bucket}/{aws_quote(key, '/')}"
            if i % 3 == 2 and w.versions:
                src += "?versionId=" + _pick(w.versions, i, "null")
            return src
        return "?"

    @staticmethod
    def _object_ref(objects: list[tuple[str, str, str | None, str, int]], kind: str, i: int) -> str | None:
        """One part of the i-th object (bucket, key, version id...): parts of one index agree."""
        if not objects:
            return OMIT if kind in ("obj-vid", "obj-vid-xml") else "missing"
        bucket, key, vid, etag, size = objects[i % len(objects)]
        return {"obj-bucket": bucket, "obj-key": key, "obj-vid": vid if vid else OMIT, "obj-etag": f'"{etag}"',
                "obj-vid-xml": f"<VersionId>{vid}</VersionId>" if vid else "",
                "obj-range": f"bytes={i % max(size, 1)}-{(i * 7) % max(size, 1) + i % max(size, 1)}",
                "obj-copy": f"/{bucket}/{aws_quote(key, '/')}" + (f"?versionId={vid}" if vid else "")}[kind]

    def post_form(self, i: int) -> str:
        """A browser-form upload (PostObject) signed with SigV4 for the i-th variant of fields."""
        from datetime import datetime, timedelta, timezone
        import hmac
        bucket = _pick(self.world.buckets, i % 3, "b")
        now = datetime.now(timezone.utc)
        date, stamp = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
        credential = f"{ACCESS_KEY}/{date}/{REGION}/s3/aws4_request"
        extra = [("acl", "private"), ("Content-Type", "text/plain"), ("x-amz-meta-a", "b"),
                 ("success_action_status", "201"), ("tagging", "<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value>"
                                                               "</Tag></TagSet></Tagging>"),
                 ("success_action_status", "200"), ("x-amz-meta-é", "ü"), ("Cache-Control", "no-cache"),
                 ("x-amz-meta-a", "日本"), ("x-amz-meta-b", "a\r\nb"), ("Content-Type", "a\x01b"),
                 ("x-amz-meta-c d", "v"), ("Content-Disposition", "日本"), ("Expires", "garbage"),
                 ("x-amz-storage-class", "GLACIER"), ("x-amz-website-redirect-location", "/日本"),
                 ("success_action_redirect", "http://example.com/日本?a=b"),
                 ("success_action_redirect", "http://example.com/a\r\nb"),
                 ("success_action_redirect", "https://x/\x00"), ("redirect", "http://e.com/é"),
                 ("Content-Encoding", "\x7f"), ("x-amz-meta-big", "v" * 2100), ("acl", "bogus"),
                 ("x-amz-server-side-encryption", "AES256"), ("Content-Language", "a\tb"),
                 ("x-amz-meta-" + "n" * 300, "v"), ("x-amz-meta-\x00", "v"), ("x-amz-meta-x", "\ud800")]
        fields = [("key", ["post/${filename}", "post/key", "dir/a", "obj"][i % 4])]
        fields += [extra[(i // 4 + j * 7) % len(extra)] for j in range(i % 3)]
        conditions: list[Any] = [{"bucket": bucket}, ["starts-with", "$key", ""],
                                 {"x-amz-algorithm": "AWS4-HMAC-SHA256"}, {"x-amz-credential": credential},
                                 {"x-amz-date": stamp}]
        conditions += [{name: value} for name, value in fields if name != "key"]
        if i % 5 == 0:
            conditions.append(["content-length-range", 0, 10 + i])
        policy = base64.b64encode(json.dumps({"expiration": (now + timedelta(hours=1)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"), "conditions": conditions}).encode()).decode()
        key = ("AWS4" + SECRET_KEY).encode()
        for part in (date, REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
        fields += [("policy", policy), ("x-amz-algorithm", "AWS4-HMAC-SHA256"), ("x-amz-credential", credential),
                   ("x-amz-date", stamp), ("x-amz-signature", signature)]
        out = "".join(f'--xyz\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields)
        data = "x" * (i * 3 % 50)
        return (out + '--xyz\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n'
                "Content-Type: text/plain\r\n\r\n" + data + "\r\n--xyz--\r\n")

    def read_back(self, spec: Spec, p: Prepared, answer: Answer) -> list[Prepared]:
        """GET and HEAD (plain and with ?attributes) of the object a write just answered 2xx for:
        whatever a write accepted must be servable."""
        if answer.status is None or not 200 <= answer.status < 400 or spec.action not in WRITE_ACTIONS \
                or p.method not in ("PUT", "POST"):
            return []
        host = dict(p.headers).get("host", b"").decode("latin-1")
        path = p.target.split("?", 1)[0]
        if spec.action == "PostObject":
            location = answer.headers.get("location", "")
            if "key=" in location:       # a redirect: ?bucket=..&key=..
                from urllib.parse import parse_qs
                qs = parse_qs(urlsplit(location).query)
                path = "/" + aws_quote(qs.get("bucket", [""])[0]) + "/" + aws_quote(qs.get("key", [""])[0], "/")
                host = self.host
            elif location:
                path, host = urlsplit(location).path, self.host   # path-style: /bucket/key
            else:
                return []
        out = []
        for method, query, extra in (("GET", "", {}), ("HEAD", "", {}),
                                     ("GET", "attributes", {"x-amz-object-attributes": "ETag,ObjectSize,Checksum"})):
            url = f"http://{host}{path}" + (f"?{query}" if query else "")
            req = AWSRequest(method=method, url=url, data=b"", headers=dict(extra))
            _PayloadV4(CREDENTIALS, None).add_auth(req)
            out.append(Prepared(method, _target(req.url), _wire_headers(dict(req.headers.items()), host), b"",
                                "httpx", action=f"read-back {spec.action}", auth="v4/canonical"))
        return out

    def path_for(self, spec: Spec) -> tuple[str, str]:
        """(host, path) as the client sends them."""
        bucket = self.resolve(spec.bucket)
        key = self.resolve(spec.key)
        host = self.host
        segs: list[str] = []
        if bucket is not None and spec.virtual_host and isinstance(bucket, str) and bucket.isascii() \
                and "/" not in bucket and bucket:
            host = f"{bucket}.localhost:{self.port}"
        elif bucket is not None:
            segs.append(aws_quote(bucket) if spec.path_style != "raw" else str(bucket))
        if key is not None:
            if spec.path_style == "raw":
                segs.append(quote(utf8(key) if isinstance(key, str) else key, safe="/-_.~!$&'()*+,;=:@"))
            else:
                segs.append(aws_quote(key, "/"))
        path = "/" + "/".join(segs)
        if spec.path_style == "lower-hex":
            path = "".join(c.lower() if i > 0 and path[i - 1] == "%" or (i > 1 and path[i - 2] == "%") else c
                           for i, c in enumerate(path))
        elif spec.path_style == "double-slash":
            path = "/" + path
        return host, path

    def body_of(self, spec: Spec) -> bytes:
        out = []
        for part in spec.body:
            value = self.resolve(part)
            if value is None or value is OMIT:
                continue
            if isinstance(value, str):
                escape = isinstance(part, Ref) and part.kind not in ("up-complete", "post-form", "bucket-arn",
                                                                     "obj-vid-xml", "future-date")
                value = utf8(_xml_text(value) if escape else value)
            out.append(value)
        return b"".join(out) + filler_bytes(spec.filler)

    def materialize(self, spec: Spec) -> Prepared:
        body = self.body_of(spec)
        host, path = self.path_for(spec)
        qparts = []
        for name, value in spec.query:
            v = self.resolve(value)
            if v is OMIT:
                continue
            if v is None:
                qparts.append(aws_quote(name))
            else:
                qparts.append(f"{aws_quote(name)}={aws_quote(v)}")
        headers: dict[str, str] = {}
        for name, value in spec.headers:
            v = self.resolve(value, body)
            if v is OMIT:
                continue
            if isinstance(v, bytes):
                v = v.decode("latin-1")
            headers[name] = v or ""      # signed as text, sent as its UTF-8 (_wire_headers)
        body = self._frame(spec, body, headers)
        target, headers_out = self._sign(spec, host, path, "&".join(qparts), headers, body)
        return Prepared(spec.method, target, headers_out, body, spec.transport, spec.raw_quirk, spec.action,
                        f"{spec.auth}/{spec.path_style}")

    def _frame(self, spec: Spec, body: bytes, headers: dict[str, str]) -> bytes:
        """aws-chunked framing for the chunked auth mode (unsigned trailer or garbage signatures)."""
        if spec.auth != "v4-chunked":
            return body
        signed = (len(body) % 2) == 1
        chunks = [body[i:i + 8192] for i in range(0, len(body), 8192)]
        out = bytearray()
        for c in chunks:
            out += f"{len(c):x}".encode() + (b";chunk-signature=" + b"0" * 64 if signed else b"") + b"\r\n" + c + b"\r\n"
        out += b"0" + (b";chunk-signature=" + b"0" * 64 if signed else b"") + b"\r\n"
        if not signed:
            out += b"x-amz-checksum-crc32:" + checksum_b64("crc32", body).encode() + b"\r\n"
            headers.setdefault("x-amz-trailer", "x-amz-checksum-crc32")
        out += b"\r\n"
        headers.setdefault("content-encoding", "aws-chunked")
        headers.setdefault("x-amz-decoded-content-length", str(len(body)))
        headers["x-amz-content-sha256"] = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD" if signed
                                           else "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
        return bytes(out)

    def _sign(self, spec: Spec, host: str, path: str, qs: str, headers: dict[str, str],
              body: bytes) -> tuple[str, list[tuple[str, bytes]]]:
        url = f"http://{host}{path}" + (f"?{qs}" if qs else "")
        auth = spec.auth
        if auth == "anonymous":
            out = dict(headers)
            return _target(url), _wire_headers(out, host)
        req = AWSRequest(method=spec.method, url=url, data=body, headers=dict(headers))
        if host != self.host and auth.startswith("v2"):
            # SigV2 signs the bucket of a virtual-hosted request in its resource, as botocore's client does
            req.auth_path = "/" + host.split(".localhost:")[0] + path
        creds = {"bad-signature": WRONG_CREDENTIALS, "unknown-key": UNKNOWN_CREDENTIALS}.get(auth, CREDENTIALS)
        try:
            if auth in ("v2",):
                HmacV1Auth(creds).add_auth(req)
            elif auth == "v2-presign":
                HmacV1QueryAuth(creds, expires=3600).add_auth(req)
            elif auth == "v4-presign":
                S3SigV4QueryAuth(creds, "s3", REGION, expires=3600).add_auth(req)
            else:
                payload = None
                if auth == "v4-unsigned":
                    payload = "UNSIGNED-PAYLOAD"
                elif auth == "v4-badsha":
                    payload = hashlib.sha256(body + b"x").hexdigest()
                elif auth == "v4-chunked":
                    payload = headers["x-amz-content-sha256"]
                elif "x-amz-content-sha256" in headers:
                    payload = headers["x-amz-content-sha256"]
                _PayloadV4(creds, payload).add_auth(req)
        except Exception:
            # botocore cannot sign it (a value it cannot encode): send it unsigned
            return _target(url), _wire_headers(dict(headers), host)
        out = {k: v for k, v in req.headers.items()}
        return _target(req.url), _wire_headers(out, host)


class _PayloadV4(S3SigV4Auth):
    def __init__(self, creds: Credentials, payload: str | None):
        super().__init__(creds, "s3", REGION)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload if self._payload is not None else super().payload(request)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _wire_headers(headers: dict[str, str], host: str) -> list[tuple[str, bytes]]:
    out = [("host", host.encode("latin-1"))]
    for k, v in headers.items():
        if k.lower() == "host":
            continue
        out.append((k, utf8(v) if isinstance(v, str) else v))
    return out


# ---------------------------------------------------------------- sending and checking

@dataclass
class Answer:
    status: int | None          # None: no answer (dropped / hang)
    headers: dict[str, str]
    body: bytes
    failure: str | None = None  # dropped | timeout | client-error


class RawClient:
    """One request per connection, bytes exactly as given."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    def send(self, p: Prepared) -> Answer:
        head_lines, body, expect_answers = self._encode(p)
        try:
            with socket.create_connection((self.host, self.port), timeout=TIMEOUT_S) as sock:
                initial = b""
                if p.raw_quirk == "expect-wait":
                    # the head alone; the body after "100 Continue" (or never, after a final answer)
                    sock.sendall(head_lines)
                    sock.settimeout(5.0)
                    try:
                        initial = sock.recv(65536)
                    except TimeoutError:
                        initial = b""
                    sock.settimeout(TIMEOUT_S)
                    if not initial or initial.startswith(b"HTTP/1.1 100"):
                        sock.sendall(body)
                else:
                    sock.sendall(head_lines + body)
                return self._read(sock, p.method, expect_answers, initial)
        except TimeoutError:
            return Answer(None, {}, b"", "timeout")
        except OSError as exc:
            return Answer(None, {}, b"", f"dropped: {exc!r}")

    def _encode(self, p: Prepared) -> tuple[bytes, bytes, int]:
        q = p.raw_quirk
        version = "HTTP/1.0" if q == "http10" else "HTTP/1.1"
        target = p.target
        if q == "absolute-uri":
            host = dict(p.headers).get("host", b"127.0.0.1").decode("latin-1")
            target = f"http://{host}{target}"
        eol = b"\n" if q == "lf-only" else b"\r\n"
        lines = [f"{p.method} {target} {version}".encode("latin-1", "replace")]
        body = p.body
        for k, v in p.headers:
            sep = b" : " if q == "space-before-colon" and k.startswith("x-amz-meta") else b": "
            lines.append(k.encode("latin-1", "replace") + sep + v)
        if q == "chunked":
            lines.append(b"transfer-encoding: chunked")
            body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        elif q == "bad-chunked":
            lines.append(b"transfer-encoding: chunked")
            body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
        elif q == "short-length":
            lines.append(b"content-length: %d" % max(0, len(body) - 3))
        elif q == "dup-length":
            lines += [b"content-length: %d" % len(body), b"content-length: %d" % (len(body) + 1)]
        elif q != "no-length":
            lines.append(b"content-length: %d" % len(body))
        if q == "bare-cr":
            lines.append(b"x-odd: a\rb")
        elif q == "obs-fold":
            lines.append(b"x-folded: a")
            lines.append(b" continued")
        elif q == "garbage-line":
            lines.append(b"this is not a header")
        elif q == "upgrade":
            lines.append(b"upgrade: " + (b"websocket" if len(body) % 2 else b"h2c"))
            lines.append(b"connection: upgrade")
        if q == "expect-wait":
            lines.append(b"expect: 100-continue")
        lines.append(b"connection: close")
        answers = 1
        head = eol.join(lines) + eol + eol
        if q == "pipelined":
            head = head.replace(b"connection: close", b"connection: keep-alive")
            second = (f"GET /?x=1 HTTP/1.1\r\nhost: {self.host}:{self.port}\r\nconnection: close\r\n\r\n").encode()
            body = body + second
            answers = 2
        return head, body, answers

    def _read(self, sock: socket.socket, method: str, answers: int, initial: bytes = b"") -> Answer:
        buf = initial
        deadline = time.monotonic() + TIMEOUT_S
        first: Answer | None = None
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    if first is not None:
                        return first
                    return Answer(None, {}, buf, "dropped: closed before an answer" if not buf else
                                  f"dropped: partial head {buf[:200]!r}")
                buf += chunk
                if time.monotonic() > deadline:
                    return Answer(None, {}, buf, "timeout")
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            try:
                status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                return Answer(None, {}, buf, f"dropped: not an HTTP answer {lines[0][:100]!r}")
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().decode("latin-1").lower()] = v.strip().decode("latin-1")
            if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                length = 0
            elif "content-length" in hdrs:
                length = int(hdrs["content-length"])
            else:
                length = -1
            body = rest
            while length < 0 or len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
                if time.monotonic() > deadline:
                    return Answer(None, hdrs, body, "timeout")
            if 100 <= status < 200:
                buf = body
                continue
            if length >= 0 and len(body) < length:
                return Answer(None, hdrs, body, "dropped: truncated body")
            answer = Answer(status, hdrs, body[:length] if length >= 0 else body)
            answers -= 1
            if answers <= 0:
                return first or answer
            first = first or answer
            buf = body[length:] if length >= 0 else b""


class HttpxSender:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.client = httpx.Client(base_url=endpoint, timeout=TIMEOUT_S)
        parts = urlsplit(endpoint)
        self.raw = RawClient(parts.hostname or "127.0.0.1", parts.port or 80)
        self.fallbacks = 0

    def close(self) -> None:
        self.client.close()

    def send(self, p: Prepared) -> Answer:
        if p.transport == "raw":
            return self.raw.send(p)
        try:
            req = self.client.build_request(p.method, self.endpoint + "/", headers=p.headers, content=p.body,
                                            extensions={"target": p.target.encode("latin-1", "replace")})
            r = self.client.send(req)
            return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        except httpx.LocalProtocolError:
            # h11 will not send it (a control character in a header value): the raw socket will
            self.fallbacks += 1
            p.transport = "raw"
            return self.raw.send(p)
        except (UnicodeEncodeError, ValueError) as exc:
            if isinstance(exc, httpx.HTTPError):
                raise
            self.fallbacks += 1
            p.transport = "raw"
            return self.raw.send(p)
        except httpx.TimeoutException:
            return Answer(None, {}, b"", "timeout")
        except httpx.TransportError as exc:
            return Answer(None, {}, b"", f"dropped: {exc!r}")


# A character reference to a character XML 1.0 has not (S3 writes them for what a request held).
_CHAR_REF = re.compile(rb"&#(x[0-9a-fA-F]+|[0-9]+);")


def error_code_of(body: bytes) -> str | None:
    """The <Code> of an S3 error document; None when the body is not one."""
    try:
        doc = etree.fromstring(_CHAR_REF.sub(b"?", body), etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    if doc.tag != "Error":
        return None
    return doc.findtext("Code")


def check_answer(p: Prepared, a: Answer) -> str | None:
    """What is wrong with the answer, or None."""
    if a.status is None:
        return a.failure or "dropped"
    if a.status >= 500:
        if a.status == 503:
            return None
        code = error_code_of(a.body) if p.method != "HEAD" else "HEAD: no body"
        if a.status == 501 and (p.method == "HEAD" or code == "NotImplemented"):
            return None
        return f"status {a.status} ({code})"
    if a.status >= 400 and p.method != "HEAD":
        if error_code_of(a.body) is None:
            return f"status {a.status} without an S3 error document: {a.body[:200]!r}"
    return None


@dataclass
class FuzzReport:
    seed: int
    total: int = 0
    by_class: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    by_code: Counter = field(default_factory=Counter)
    by_action: Counter = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    follow_ups: int = 0             # GET / HEAD of what a write answered 2xx for (they must be servable)
    raw_requests: int = 0
    elapsed_s: float = 0.0
    alive_after: bool | None = None
    alive_detail: str = ""
    action_classes: Counter = field(default_factory=Counter)  # (action, "2xx") -> answers
    time_by: Counter = field(default_factory=Counter)       # seconds spent per transport / raw quirk
    slow: list[tuple[float, int | None, dict[str, Any]]] = field(default_factory=list)   # answers > 1 s

    @property
    def server_errors(self) -> list[dict[str, Any]]:
        return [f for f in self.failures if "status 5" in f["problem"]]

    def action_table(self) -> str:
        """One line per routed action: answers by class (2xx: the request reached and passed the handler)."""
        rows = []
        for action in sorted(self.by_action):
            classes = {c: self.action_classes[(action, c)] for c in ("2xx", "3xx", "4xx", "5xx")}
            rows.append(f"    {action:34} " + " ".join(f"{c}={v:<5}" for c, v in classes.items()))
        return "\n".join(rows)

    def summary(self) -> str:
        lines = [f"fuzz seed={self.seed}: {self.total} requests in {self.elapsed_s:.1f}s "
                 f"({self.total / max(self.elapsed_s, 1e-9):.0f}/s), raw-socket {self.raw_requests}, "
                 f"read-backs {self.follow_ups}",
                 "  by class: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_class.items())),
                 "  by status: " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_status.items())),
                 "  top error codes: " + ", ".join(f"{k}={v}" for k, v in self.by_code.most_common(25)),
                 f"  failures: {len(self.failures)} (5xx: {len(self.server_errors)}, dropped/hang: {self.dropped})",
                 f"  alive after: {self.alive_after} {self.alive_detail}",
                 "  seconds by transport: " + ", ".join(f"{k}={v:.1f}" for k, v in self.time_by.most_common(8)),
                 f"  answers slower than 1 s: {len(self.slow)}"]
        for f in self.failures[:20]:
            lines.append(f"    {f['problem']}: {f['request']}")
        return "\n".join(lines)


# ---------------------------------------------------------------- the world


def _signed(client: httpx.Client, endpoint: str, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> httpx.Response:
    url = endpoint + path
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    S3SigV4Auth(CREDENTIALS, "s3", REGION).add_auth(req)
    return client.request(method, url, headers=dict(req.headers.items()), content=body)


WORLD_KEYS = ["obj", "dir/a", "dir/b", "empty", "big", "odd é+key %", "sp ace", "deep/er/key"]


_RECOVER = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)


def _parse(content: bytes) -> Any:
    """A listing of the server: keys of fuzzed objects may hold characters XML 1.0 has not, written
    as character references (as S3 does): those are dropped."""
    return etree.fromstring(content, _RECOVER)


def _list_versions(client: httpx.Client, endpoint: str, bucket: str) -> list[tuple[str, str, str, int, bool]]:
    """(key, version id, etag, size, is latest) of the bucket's object versions (first page)."""
    r = _signed(client, endpoint, "GET", f"/{bucket}?versions")
    if r.status_code != 200:
        return []
    out = []
    for v in _parse(r.content).iterfind("{*}Version"):
        out.append((v.findtext("{*}Key") or "", v.findtext("{*}VersionId") or "null",
                    (v.findtext("{*}ETag") or "").strip('"'), int(v.findtext("{*}Size") or 0),
                    v.findtext("{*}IsLatest") == "true"))
    return out


def _list_uploads(client: httpx.Client, endpoint: str, bucket: str) -> dict[str, str]:
    """key -> upload id of the bucket's open uploads (one per key: the first listed)."""
    r = _signed(client, endpoint, "GET", f"/{bucket}?uploads")
    if r.status_code != 200:
        return {}
    out: dict[str, str] = {}
    for u in _parse(r.content).iterfind("{*}Upload"):
        out.setdefault(u.findtext("{*}Key") or "", u.findtext("{*}UploadId") or "")
    return out


def prepare_world(endpoint: str, prefix: str, client: httpx.Client | None = None) -> World:
    """Buckets (plain, versioned, suspended, and one more plain), objects (two versions each in the
    versioned bucket), open uploads with parts, continuation tokens; idempotent, so it also repairs
    what fuzzed requests deleted or changed."""
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_S)
    try:
        buckets = [f"{prefix}-plain", f"{prefix}-versioned", f"{prefix}-suspended", f"{prefix}-other",
                   f"{prefix}-locked"]
        world = World(buckets=buckets, keys=list(WORLD_KEYS))
        vconf = {1: "Enabled", 2: "Suspended"}
        for i, b in enumerate(buckets):
            _signed(client, endpoint, "PUT", f"/{b}",
                    headers={"x-amz-bucket-object-lock-enabled": "true"} if i == 4 else None)
            # what fuzzed requests may have set and that would lock the world's requests out
            for sub in ("policy", "publicAccessBlock", "ownershipControls"):
                _signed(client, endpoint, "DELETE", f"/{b}?{sub}")
            if i in vconf:
                doc = (f'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                       f"<Status>{vconf[i]}</Status></VersioningConfiguration>").encode()
                _signed(client, endpoint, "PUT", f"/{b}?versioning", doc)
        for bi, b in enumerate(buckets[:3] + buckets[4:]):
            bi = buckets.index(b)
            # what is there (one listing), then only what is missing is written again
            have = _list_versions(client, endpoint, b)
            current = {key for key, _, _, _, latest in have if latest}
            for key in WORLD_KEYS:
                if key in current and not (bi == 1 and sum(1 for k, *_ in have if k == key) < 2):
                    continue
                size = {"empty": 0, "big": 150_000}.get(key, 11)
                for _ in range(2 if bi == 1 else 1):
                    _signed(client, endpoint, "PUT", f"/{b}/{aws_quote(key, '/')}", filler_bytes(size))
            for key, vid, etag, size, _ in _list_versions(client, endpoint, b):
                world.etags.append(etag)
                if vid and vid != "null":
                    world.versions.append(vid)
                world.objects.append((b, key, vid if vid != "null" else None, etag, size))
        # open uploads (two per bucket) with parts, on the plain and the versioned bucket
        for b in buckets[:2]:
            uploads = _list_uploads(client, endpoint, b)
            for key in ("mpu", "dir/mpu"):
                if key in uploads:
                    continue
                r = _signed(client, endpoint, "POST", f"/{b}/{key}?uploads")
                if r.status_code != 200:
                    continue
                upload_id = _parse(r.content).findtext("{*}UploadId") or ""
                # one upload whose completion needs a part of the 5 MiB minimum; the others one small part
                big = b == buckets[0] and key == "mpu"
                for n, size in ((1, 5 * 1024 * 1024), (2, 100)) if big else ((1, 100),):
                    _signed(client, endpoint, "PUT", f"/{b}/{key}?partNumber={n}&uploadId={aws_quote(upload_id)}",
                            filler_bytes(size))
                uploads[key] = upload_id
            for key, upload_id in sorted(uploads.items()):
                world.uploads.append((b, key, upload_id))
                r = _signed(client, endpoint, "GET", f"/{b}/{aws_quote(key, '/')}?uploadId={aws_quote(upload_id)}")
                if r.status_code == 200:
                    doc = _parse(r.content)
                    parts = [(int(part.findtext("{*}PartNumber") or 0), (part.findtext("{*}ETag") or "").strip('"'))
                             for part in doc.iterfind("{*}Part")]
                    world.parts[upload_id] = parts
                    world.etags += [etag for _, etag in parts]
        world.keys += ["mpu", "dir/mpu"]
        for b in buckets[:2]:
            for q in ("list-type=2&max-keys=1", "list-type=2&max-keys=2&prefix=dir%2F", "list-type=2&max-keys=1&start-after=dir%2Fa"):
                r = _signed(client, endpoint, "GET", f"/{b}?{q}")
                if r.status_code == 200:
                    token = _parse(r.content).findtext("{*}NextContinuationToken")
                    if token:
                        world.tokens.append(token)
        return world
    finally:
        if own:
            client.close()


def check_alive(endpoint: str, prefix: str) -> tuple[bool, str]:
    """A normal PUT then GET of an object, answered as they should be."""
    try:
        with httpx.Client(timeout=TIMEOUT_S) as client:
            b = f"{prefix}-alive"
            r = _signed(client, endpoint, "PUT", f"/{b}")
            if r.status_code not in (200, 409):
                return False, f"create bucket: {r.status_code} {r.text[:200]}"
            r = _signed(client, endpoint, "PUT", f"/{b}/alive", b"still here")
            if r.status_code != 200:
                return False, f"put: {r.status_code} {r.text[:200]}"
            r = _signed(client, endpoint, "GET", f"/{b}/alive")
            if r.status_code != 200 or r.content != b"still here":
                return False, f"get: {r.status_code} {r.content[:200]!r}"
            return True, "PUT+GET ok"
    except httpx.HTTPError as exc:
        return False, repr(exc)


# ---------------------------------------------------------------- the run


def generate(n: int, seed: int) -> list[Spec]:
    """The first n specs of `seed` (hypothesis, reproducible)."""
    out: list[Spec] = []

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(fuzz_requests)
    def collect(spec: Spec) -> None:
        if len(out) < n:
            out.append(spec)

    while len(out) < n:
        before = len(out)
        collect()
        if len(out) == before:
            break
    return out


def iter_specs(n: int, seed: int, batch: int = 1000) -> Iterable[Spec]:
    """n specs, generated in batches (memory stays flat for a soak of 100,000)."""
    done = 0
    round_ = 0
    while done < n:
        take = min(batch, n - done)
        specs = generate(take, seed * 1_000_003 + round_)
        if not specs:
            return
        yield from specs
        done += len(specs)
        round_ += 1


def produce_specs(n: int, seed: int, maxsize: int = 2000) -> Iterable[Spec]:
    """iter_specs(n, seed), generated by a thread ahead of the consumer: drawing the requests
    overlaps with waiting for the server's answers."""
    out: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
    done = object()

    def work() -> None:
        try:
            for spec in iter_specs(n, seed):
                out.put(spec)
        except BaseException as exc:   # handed to the consumer
            out.put(exc)
        finally:
            out.put(done)

    threading.Thread(target=work, name="fuzz-generate", daemon=True).start()
    while True:
        item = out.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def run_fuzz(endpoint: str, n: int, seed: int, *, prefix: str | None = None,
             progress: Callable[[int, FuzzReport], None] | None = None,
             alive: Callable[[], bool] | None = None,
             record: Callable[[Prepared, Answer], None] | None = None,
             concurrency: int = 1) -> FuzzReport:
    """Send n fuzzed requests to `endpoint`; count and check the answers (see the module docstring).

    `alive` (optional) says whether the server's processes still run (the caller owns them);
    it is asked every RESEED_EVERY requests and at the end. With `concurrency` > 1 that many
    clients (each its own keep-alive connection) send the same sequence of requests between
    them, racing on the same world; the answers are checked alike."""
    endpoint = endpoint.rstrip("/")
    prefix = prefix or f"fz{seed % 100000}"
    report = FuzzReport(seed=seed)
    started = time.monotonic()
    with httpx.Client(timeout=TIMEOUT_S) as client:
        mat = Materializer(endpoint, prepare_world(endpoint, prefix, client))
    specs = iter(produce_specs(n, seed))
    lock = threading.Lock()
    counter = itertools.count()
    stop = threading.Event()

    def next_spec() -> tuple[int, Spec] | None:
        with lock:
            t0 = time.monotonic()
            spec = None if stop.is_set() else next(specs, None)
            report.time_by["generate"] += time.monotonic() - t0
            return None if spec is None else (next(counter), spec)

    def worker() -> None:
        sender = HttpxSender(endpoint)
        previous: Prepared | None = None
        try:
            while (item := next_spec()) is not None:
                i, spec = item
                if i and i % RESEED_EVERY == 0:
                    t0 = time.monotonic()
                    mat.world = prepare_world(endpoint, prefix, sender.client)
                    with lock:
                        report.time_by["prepare world"] += time.monotonic() - t0
                    if alive is not None and not alive():
                        with lock:
                            report.failures.append({"problem": "server process died",
                                                    "request": previous.reproducer() if previous else None})
                        stop.set()
                        return
                    if progress:
                        progress(i, report)
                previous = _send_one(spec, mat, sender, report, lock, record, previous)
        finally:
            sender.close()

    try:
        if concurrency <= 1:
            worker()
        else:
            threads = [threading.Thread(target=worker, name=f"fuzz-{j}") for j in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        report.elapsed_s = time.monotonic() - started
    ok, detail = check_alive(endpoint, prefix)
    if alive is not None and not alive():
        ok, detail = False, "a server process is gone"
    report.alive_after, report.alive_detail = ok, detail
    return report


def _send_one(spec: Spec, mat: Materializer, sender: HttpxSender, report: FuzzReport, lock: threading.Lock,
              record: Callable[[Prepared, Answer], None] | None, previous: Prepared | None) -> Prepared | None:
    """Build, send and check one request (and the read-backs of a write it answered 2xx)."""
    try:
        t0 = time.monotonic()
        p = mat.materialize(spec)
        took_sign = time.monotonic() - t0
    except Exception as exc:   # a bug of the fuzzer, not of the server
        with lock:
            report.failures.append({"problem": f"fuzzer could not build the request: {exc!r}",
                                    "request": repr(spec)[:1000]})
        return previous
    sent_at = time.monotonic()
    answer = sender.send(p)
    took = time.monotonic() - sent_at
    problem = check_answer(p, answer)
    if record is not None:
        record(p, answer)
    with lock:
        report.time_by["sign"] += took_sign
        report.time_by[p.transport if p.transport == "httpx" else f"raw:{p.raw_quirk}"] += took
        if took > 1.0:
            report.slow.append((round(took, 2), answer.status, p.reproducer()))
        report.total += 1
        report.by_action[spec.action] += 1
        if p.transport == "raw":
            report.raw_requests += 1
        _count(report, p, answer)
        if answer.status is not None:
            report.action_classes[(spec.action, f"{answer.status // 100}xx")] += 1
        if problem is not None:
            entry = {"problem": problem, "request": p.reproducer()}
            if answer.status is None and previous is not None and p.transport == "httpx":
                entry["previous"] = previous.reproducer()     # a keep-alive connection it may have spoiled
            report.failures.append(entry)
    previous = p
    for q in mat.read_back(spec, p, answer):
        a2 = sender.send(q)
        problem = check_answer(q, a2)
        with lock:
            report.follow_ups += 1
            _count(report, q, a2)
            if problem is not None:
                report.failures.append({"problem": f"reading back what {spec.action} wrote: {problem}",
                                        "request": q.reproducer(), "write": p.reproducer()})
        previous = q
    return previous


def _count(report: FuzzReport, p: Prepared, answer: Answer) -> None:
    if answer.status is None:
        report.by_class["no answer"] += 1
        report.dropped += 1
        return
    report.by_status[answer.status] += 1
    report.by_class[f"{answer.status // 100}xx"] += 1
    if answer.status >= 400 and p.method != "HEAD":
        report.by_code[error_code_of(answer.body) or "?"] += 1


def replay(endpoint: str, reproducer: dict[str, Any]) -> Answer:
    """Send one reproducer (as a FuzzReport records it) again, as it was sent."""
    p = Prepared(reproducer["method"], reproducer["target"],
                 [(k, v.encode("latin-1")) for k, v in reproducer["headers"]], reproducer["body_prefix"],
                 reproducer["transport"], reproducer.get("raw_quirk", "none"))
    sender = HttpxSender(endpoint.rstrip("/"))
    try:
        return sender.send(p)
    finally:
        sender.close()


def dump_json(report: FuzzReport) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, bytes):
            return o.decode("latin-1")
        return repr(o)
    return json.dumps({"seed": report.seed, "total": report.total, "by_class": report.by_class,
                       "by_status": report.by_status, "by_code": report.by_code, "dropped": report.dropped,
                       "elapsed_s": report.elapsed_s, "alive_after": report.alive_after,
                       "failures": report.failures}, default=default, indent=1)

