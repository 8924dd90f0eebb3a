"""`AwsS3DataBackend`: object data kept in a bucket of any remote S3 (location type "aws_s3").

Owns the client side of an "aws_s3" location: validating its `details`
(`validate_aws_s3_details`), finding its credentials, signing requests with
Signature V4 (built from the primitives of gateway.auth.v4, with an
UNSIGNED-PAYLOAD body so uploads stream without being hashed first), and the
four DataBackend operations over one pooled aiohttp session (the HTTP plumbing
of `HttpDataBackend`, shared with the dmd backend). Metadata stays in
the dmd as for any location; only the bytes go to the remote bucket.

Remote key naming (issue 16): `details.dataLayout`, gateway/data/naming.py. In the default
"named" layout an object is stored under "<bucket>/<key>" (or "<key>" with bucketMatch) and the
remote bucket must keep versions, as CloudServer requires: each put records the remote version
id in its data key, and reads and deletes address that version, so an overwrite never loses or
serves the wrong bytes. Parts of multipart uploads get opaque keys. In the "opaque" layout every
put gets a fresh key of 40 random hex digits (160 bits). A key this backend did not make is
refused without a request.
"""
from __future__ import annotations

import asyncio
import configparser
import ipaddress
import math
import os
import re
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, NoReturn

import aiohttp
from yarl import URL

from shared.config import Location
from shared.errors import S3Error

from gateway import xml
from gateway.auth import v4
from gateway.limits import MAX_SINGLE_UPLOAD_BYTES
from gateway.data import naming
from gateway.data.base import (CONNECT_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, DELETE_DONE_STATUSES, KEY_HEX_LENGTH,
                               READ_TIMEOUT_S, TRANSPORT_ERRORS, DataError, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, DataUnavailable, HttpDataBackend, ObjectName,
                               is_valid_key)

LOCATION_TYPE = "aws_s3"
DEFAULT_REGION = "us-east-1"
MPU_PART_BYTES = 8 * 1024 ** 2  # parts of an upload of unknown size (>= AWS's 5 MiB minimum)
MAX_MPU_PARTS = 10_000
HEALTH_TIMEOUT_S = 3.0
MAX_ERROR_BODY_BYTES = 8192
CREDENTIALS_FILE_ENV = "AWS_SHARED_CREDENTIALS_FILE"
ACCESS_KEY_ENV, SECRET_KEY_ENV, SESSION_TOKEN_ENV = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"
SECURITY_TOKEN_HEADER = "x-amz-security-token"
SSE_HEADER, SSE_ALGORITHM = "x-amz-server-side-encryption", "AES256"
NO_SUCH_BUCKET = "NoSuchBucket"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# A bucket name that can be the first label(s) of a host name (else path-style is forced).
_DNS_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_BOOL_FIELDS = ("bucketMatch", "https", "pathStyle", "serverSideEncryption", "supportsVersioning")
VERSION_ID_HEADER = "x-amz-version-id"


# --- configuration ------------------------------------------------------------------------------

def validate_aws_s3_details(details: Any) -> None:
    """Check an aws_s3 location's `details`; ValueError naming the field otherwise.

    Required: awsEndpoint ("host" or "host:port", no scheme: `https` chooses it) and
    bucketName. Optional: region (string), credentials {accessKey, secretKey} or
    credentialsProfile (not both), and the booleans of _BOOL_FIELDS.
    """
    if not isinstance(details, Mapping):
        raise ValueError("aws_s3 location: 'details' must be an object")
    endpoint = details.get("awsEndpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("aws_s3 location: 'details.awsEndpoint' is required (host or host:port)")
    if "://" in endpoint:
        raise ValueError(f"aws_s3 location: 'details.awsEndpoint' {endpoint!r} must be host[:port] without a "
                         "scheme; set 'details.https' to false for http")
    split_endpoint(endpoint)  # raises ValueError on a bad host or port
    bucket = details.get("bucketName")
    if not isinstance(bucket, str) or not bucket or "/" in bucket or len(bucket) > 255:
        raise ValueError("aws_s3 location: 'details.bucketName' is required (an existing remote bucket name)")
    for name in _BOOL_FIELDS:
        if name in details and not isinstance(details[name], bool):
            raise ValueError(f"aws_s3 location: 'details.{name}' must be a boolean")
    naming.layout_of(LOCATION_TYPE, details)   # issue 16: "named" (default) or "opaque"
    if "region" in details and (not isinstance(details["region"], str) or not details["region"]):
        raise ValueError("aws_s3 location: 'details.region' must be a non-empty string")
    if "credentials" in details and "credentialsProfile" in details:
        raise ValueError("aws_s3 location: give either 'details.credentials' or 'details.credentialsProfile', "
                         "not both")
    if "credentials" in details:
        creds = details["credentials"]
        if not isinstance(creds, Mapping) or not all(
                isinstance(creds.get(f), str) and creds.get(f) for f in ("accessKey", "secretKey")):
            raise ValueError("aws_s3 location: 'details.credentials' must be {\"accessKey\": ..., "
                             "\"secretKey\": ...} with non-empty strings")
    if "credentialsProfile" in details and (not isinstance(details["credentialsProfile"], str)
                                            or not details["credentialsProfile"]):
        raise ValueError("aws_s3 location: 'details.credentialsProfile' must be a non-empty profile name")


def split_endpoint(endpoint: str) -> tuple[str, int | None]:
    """"host[:port]" -> (host, port or None); ValueError if either is malformed."""
    host, port_text = endpoint, None
    if endpoint.startswith("["):  # IPv6 literal, maybe with a port
        close = endpoint.find("]")
        host, rest = endpoint[:close + 1], endpoint[close + 1:]
        if close < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"aws_s3 location: 'details.awsEndpoint' {endpoint!r} is not host[:port]")
        port_text = rest[1:] if rest else None
    elif ":" in endpoint:
        host, port_text = endpoint.rsplit(":", 1)
    if not _HOST_RE.fullmatch(host):
        raise ValueError(f"aws_s3 location: 'details.awsEndpoint' host {host!r} is not a host name or address")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"aws_s3 location: 'details.awsEndpoint' port {port_text!r} must be 1-65535")
    return host, int(port_text)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret in logs
        return f"Credentials({self.access_key!r})"


def resolve_credentials(details: Mapping[str, Any], env: Mapping[str, str] | None = None,
                        home: Path | None = None) -> Credentials:
    """details.credentials, else the details.credentialsProfile section of the shared credentials
    file ($AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials), else $AWS_ACCESS_KEY_ID and
    $AWS_SECRET_ACCESS_KEY. ValueError when none gives a key pair."""
    env = os.environ if env is None else env
    creds = details.get("credentials")
    if isinstance(creds, Mapping):
        return Credentials(str(creds["accessKey"]), str(creds["secretKey"]))
    profile = details.get("credentialsProfile")
    if profile:
        path = Path(env.get(CREDENTIALS_FILE_ENV) or (home or Path.home()) / ".aws" / "credentials")
        parser = configparser.ConfigParser(interpolation=None)
        try:
            found = parser.read(path)
        except configparser.Error as exc:
            raise ValueError(f"aws_s3 location: cannot parse credentials file {path}: {exc}") from exc
        if not found:
            raise ValueError(f"aws_s3 location: credentials file {path} (profile {profile!r}) cannot be read")
        if not parser.has_section(profile):
            raise ValueError(f"aws_s3 location: profile {profile!r} not found in {path}")
        section = parser[profile]
        access, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if not access or not secret:
            raise ValueError(f"aws_s3 location: profile {profile!r} in {path} lacks aws_access_key_id "
                             "or aws_secret_access_key")
        return Credentials(access.strip(), secret.strip(), (section.get("aws_session_token") or "").strip() or None)
    access, secret = env.get(ACCESS_KEY_ENV), env.get(SECRET_KEY_ENV)
    if access and secret:
        return Credentials(access, secret, env.get(SESSION_TOKEN_ENV) or None)
    raise ValueError("aws_s3 location: no credentials: set 'details.credentials', 'details.credentialsProfile' "
                     f"or the {ACCESS_KEY_ENV}/{SECRET_KEY_ENV} environment variables")


# --- signing ------------------------------------------------------------------------------------

def sign_v4(creds: Credentials, region: str, method: str, host: str, canonical_uri: str,
            query: list[tuple[str, str]], headers: Mapping[str, str], payload_hash: str,
            amz_date: str | None = None) -> dict[str, str]:
    """`headers` plus host, x-amz-date, x-amz-content-sha256, the token if any, and Authorization.

    Every header given is signed. `canonical_uri` is already URI-encoded (as sent);
    `query` holds decoded name/value pairs.
    """
    amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    day = amz_date[:8]
    out = {k.lower(): v for k, v in headers.items()}
    out.update({"host": host, "x-amz-date": amz_date, v4.CONTENT_SHA256_HEADER: payload_hash})
    if creds.session_token:
        out[SECURITY_TOKEN_HEADER] = creds.session_token
    names = sorted(out)
    canonical_query = encode_query(sorted(query))
    canonical_headers = "".join(f"{n}:{' '.join(str(out[n]).split())}\n" for n in names)
    signed = ";".join(names)
    creq = v4.canonical_request(method, canonical_uri, canonical_query, canonical_headers, signed, payload_hash)
    scope = f"{day}/{region}/{v4.SERVICE}/{v4.TERMINATOR}"
    signature = v4.sign(v4.signing_key(creds.secret_key, day, region), v4.string_to_sign(amz_date, scope, creq))
    out["authorization"] = (f"{v4.ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={signed}, "
                            f"Signature={signature}")
    return out


def encode_query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{v4.aws_uri_encode(k.encode(), False)}={v4.aws_uri_encode(v.encode(), False)}"
                    for k, v in pairs)


# --- the backend --------------------------------------------------------------------------------

class AwsS3DataBackend(HttpDataBackend):
    """Blobs as objects of one remote bucket (details.bucketName at details.awsEndpoint)."""

    def __init__(self, location: Location, *, env: Mapping[str, str] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        super().__init__(connect_timeout=connect_timeout, read_timeout=read_timeout,
                         max_connections=max_connections)
        details = location.details
        validate_aws_s3_details(details)
        self.location_name = location.name
        self.bucket: str = details["bucketName"]
        self.region: str = details.get("region") or DEFAULT_REGION
        self.https: bool = details.get("https", True)
        self.server_side_encryption: bool = details.get("serverSideEncryption", False)
        self.bucket_match: bool = details.get("bucketMatch", False)  # see the module docstring
        self.named: bool = naming.layout_of(LOCATION_TYPE, details) == "named"
        self._remote_versioned: bool | None = None   # learnt on the first named put
        self._creds = resolve_credentials(details, env)
        host, port = split_endpoint(details["awsEndpoint"])
        default_port = 443 if self.https else 80
        endpoint = host if port in (None, default_port) else f"{host}:{port}"  # Host as a client signs it
        # Virtual-hosted style needs the bucket to be a DNS label and the endpoint a name, not an address.
        self.path_style: bool = (details.get("pathStyle", False) or _is_ip(host)
                                 or not _DNS_BUCKET_RE.fullmatch(self.bucket))
        self.host = endpoint if self.path_style else f"{self.bucket}.{endpoint}"
        self._bucket_path = "/" + v4.aws_uri_encode(self.bucket.encode(), False) if self.path_style else ""
        self._base = f"{'https' if self.https else 'http'}://{self.host}"

    def __repr__(self) -> str:
        return f"AwsS3DataBackend({self._base}, bucket={self.bucket!r}, location={self.location_name!r})"

    def _request(self, method: str, key: str | None, query: list[tuple[str, str]] | None = None,
                 headers: Mapping[str, str] | None = None, data: Any = None,
                 payload_hash: str = v4.UNSIGNED_PAYLOAD) -> Any:
        """A signed request on the bucket (key None) or one of its objects; use with `async with`."""
        path = self._bucket_path + "/" + (v4.aws_uri_encode(key.encode(), True) if key is not None else "")
        signed = sign_v4(self._creds, self.region, method, self.host, path, query or [], headers or {},
                         payload_hash)
        qs = encode_query(query or [])
        url = URL(self._base + path + ("?" + qs if qs else ""), encoded=True)
        return self._get_session().request(method, url, headers=signed, data=data)

    def _unavailable(self, what: str, exc: BaseException) -> DataUnavailable:
        return DataUnavailable(f"{what} on {self._base} bucket {self.bucket} failed: {exc!r}", "ServiceUnavailable")

    def _write_headers(self) -> dict[str, str]:
        return {SSE_HEADER: SSE_ALGORITHM} if self.server_side_encryption else {}

    # --- put ------------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        body = self._sized_body(chunks, size)
        named = self.named and name is not None and not name.is_part   # parts: opaque keys (naming.py)
        key = naming.remote_name(name, self.bucket_match) if named and name is not None else new_key()
        if named:
            await self._require_remote_versioning()
        if size is not None and size <= MAX_SINGLE_UPLOAD_BYTES:
            resp = await self._put_stream(key, body, size, [])
            return self._stored_key(key, named, resp.headers.get(VERSION_ID_HEADER))
        # Size unknown (a browser POST) or above one PUT: read a part first; a small body
        # still goes as one PUT, a larger one as a remote multipart upload.
        part_size = MPU_PART_BYTES if size is None else max(MPU_PART_BYTES, math.ceil(size / MAX_MPU_PARTS))
        parts = _fixed_parts(body, part_size)
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            resp = await self._put_stream(key, _once(first), len(first), [])
            return self._stored_key(key, named, resp.headers.get(VERSION_ID_HEADER))
        version = await self._multipart(key, _prepend((first, second), parts))
        return self._stored_key(key, named, version)

    def _stored_key(self, remote: str, named: bool, version: str | None) -> str:
        """The data key of a put: the opaque key, or the remote name with its version id."""
        if not named:
            return remote
        if not version or version == "null":
            raise DataIntegrityError(f"remote S3 PUT {remote} on {self._base} bucket {self.bucket}: no version id "
                                     "in the answer, the remote bucket does not keep versions")
        return naming.named_key(remote, version)

    async def _require_remote_versioning(self) -> None:
        """The named layout needs the remote bucket to keep versions (see the module docstring);
        InvalidBucketState with the reason otherwise (checked once per process, until it passes)."""
        if self._remote_versioned:
            return
        try:
            async with self._request("GET", None, [("versioning", "")], payload_hash=EMPTY_SHA256) as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp, "GET ?versioning")
                status = _xml_field(await resp.read(), "Status")
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable("GET ?versioning", exc) from exc
        self._remote_versioned = status == "Enabled"
        if not self._remote_versioned:
            raise S3Error("InvalidBucketState", f"Location {self.location_name!r} stores objects under their names "
                          f"(dataLayout \"named\") in remote bucket {self.bucket!r}, which must have versioning "
                          "enabled; enable it there or set dataLayout to \"opaque\".")

    def valid_key(self, key: str) -> bool:
        return is_valid_key(key) or naming.parse_named_key(key) is not None

    async def keeps_versions(self) -> bool:
        """Opaque keys: always; named: when the remote bucket keeps versions (InvalidBucketState otherwise)."""
        if self.named:
            await self._require_remote_versioning()
        return True

    @staticmethod
    def _address(key: str) -> tuple[str, list[tuple[str, str]]]:
        """(remote object name, query) of a data key: a named key addresses its own version."""
        parsed = naming.parse_named_key(key)
        return (key, []) if parsed is None else (parsed[0], [("versionId", parsed[1])])

    async def _put_stream(self, key: str, body: AsyncIterator[bytes], size: int, query: list[tuple[str, str]],
                          ) -> aiohttp.ClientResponse:
        """One PUT of `size` bytes (an object, or a part when `query` names one); returns the response
        (already closed). The caller's own exception from `body` propagates unchanged."""
        failures: list[BaseException] = []
        headers = {"content-length": str(size), **({} if query else self._write_headers())}
        # `body` is already checked against the whole object's size (put); here only its failures are kept.
        guarded = self._sized_body(body, None, failures)
        try:
            async with self._request("PUT", key, query, headers, data=guarded) as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp, f"PUT {key}")
                await resp.read()
                return resp
        except Exception as exc:
            self._unwrap_failure(exc, failures, f"PUT {key}")

    async def _multipart(self, key: str, parts: AsyncIterator[bytes]) -> str | None:
        upload_id = await self._create_upload(key)
        etags: list[str] = []
        try:
            async for part in parts:
                number = len(etags) + 1
                query = [("partNumber", str(number)), ("uploadId", upload_id)]
                resp = await self._put_stream(key, _once(part), len(part), query)
                etags.append(resp.headers.get("ETag", ""))
            return await self._complete_upload(key, upload_id, etags)
        except BaseException:
            await self._abort_upload(key, upload_id)
            raise

    async def _create_upload(self, key: str) -> str:
        try:
            async with self._request("POST", key, [("uploads", "")], self._write_headers(),
                                     payload_hash=EMPTY_SHA256) as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp, f"CreateMultipartUpload {key}")
                upload_id = _xml_field(await resp.read(), "UploadId")
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable(f"CreateMultipartUpload {key}", exc) from exc
        if not upload_id:
            raise DataIntegrityError(f"CreateMultipartUpload {key}: no UploadId in the answer")
        return upload_id

    async def _complete_upload(self, key: str, upload_id: str, etags: list[str]) -> str | None:
        """Complete the remote upload; the remote version id of the object (None without one)."""
        doc = xml.root("CompleteMultipartUpload")
        for number, etag in enumerate(etags, 1):
            part = xml.sub(doc, "Part")
            xml.sub(part, "PartNumber", number)
            xml.sub(part, "ETag", etag)
        payload = xml.to_bytes(doc)
        try:
            async with self._request("POST", key, [("uploadId", upload_id)], {}, data=payload) as resp:
                body = await resp.read()
                # S3 may answer 200 and still fail: the error document comes in the body.
                if resp.status != 200 or _xml_field(body, "Code", root_tag="Error") is not None:
                    raise DataError(f"CompleteMultipartUpload {key}: HTTP {resp.status} {body[:200]!r}",
                                    "InternalError", resp.status)
                return resp.headers.get(VERSION_ID_HEADER)
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable(f"CompleteMultipartUpload {key}", exc) from exc

    async def _abort_upload(self, key: str, upload_id: str) -> None:
        try:
            async with self._request("DELETE", key, [("uploadId", upload_id)], payload_hash=EMPTY_SHA256) as resp:
                await resp.read()
        except TRANSPORT_ERRORS:
            pass  # the remote's lifecycle rules are the backstop for an upload we cannot abort

    # --- get ------------------------------------------------------------------------------------
    def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        remote, query = self._address(key)

        def send(headers: dict[str, str]) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            return self._request("GET", remote, query, headers=headers, payload_hash=EMPTY_SHA256)

        async def check(resp: aiohttp.ClientResponse) -> None:
            if resp.status not in (200, 206):
                await self._raise_for_response(resp, f"GET {key}")
            if resp.status == 200 and (start or end is not None):
                # A store that ignored the Range would hand over the wrong bytes (bytes=0- is the whole).
                raise DataIntegrityError(f"remote S3 GET {key}: asked bytes {start}-{end}, got the whole object")

        return self._read_blob(key, start, end, f"GET {key}", send, check)

    # --- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        if not self.valid_key(key):
            return  # this backend never stored anything under it
        remote, query = self._address(key)

        async def attempt() -> None:
            async with self._request("DELETE", remote, query, payload_hash=EMPTY_SHA256) as resp:
                if resp.status not in DELETE_DONE_STATUSES:  # S3 answers 204 for a missing key too
                    await self._raise_for_response(resp, f"DELETE {key}")

        await self._delete_with_retries(f"DELETE {key}", attempt)

    # --- misc -----------------------------------------------------------------------------------
    async def healthy(self) -> bool:
        """A HEAD of the remote bucket answers 200 (reachable, bucket exists, credentials good)."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                async with self._request("HEAD", None, payload_hash=EMPTY_SHA256) as resp:
                    return resp.status == 200
        except (*TRANSPORT_ERRORS, TimeoutError):
            return False

    async def _raise_for_response(self, resp: aiohttp.ClientResponse, what: str) -> NoReturn:
        """An S3 error answer as a DataError: 404 not found, 416 bad range, 5xx unavailable."""
        code, message = f"HTTP{resp.status}", ""
        try:
            raw = await resp.content.read(MAX_ERROR_BODY_BYTES)
            code = _xml_field(raw, "Code", root_tag="Error") or code
            message = _xml_field(raw, "Message", root_tag="Error") or ""
        except TRANSPORT_ERRORS:
            pass
        cls: type[DataError] = DataError
        if resp.status == 404 and code != NO_SUCH_BUCKET:
            # A missing remote bucket is a broken location (503 to clients), not a missing blob.
            cls = DataNotFound
        elif resp.status == 416:
            cls = DataRangeNotSatisfiable
        elif resp.status >= 500:
            cls = DataUnavailable
        raise cls(f"remote S3 {what} on {self._base} bucket {self.bucket}: HTTP {resp.status} {code} {message}",
                  code, resp.status)


# --- helpers ------------------------------------------------------------------------------------

def new_key() -> str:
    return os.urandom(KEY_HEX_LENGTH // 2).hex()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _xml_field(body: bytes, field: str, root_tag: str | None = None) -> str | None:
    """The text of `field` under the root of an S3 XML document (None if absent or not XML)."""
    if not body:
        return None
    try:
        doc = xml.parse(body)
    except S3Error:
        return None
    if root_tag is not None and xml.local(doc.tag) != root_tag:
        return None
    return xml.child_text(doc, field)


async def _fixed_parts(chunks: AsyncIterator[bytes], part_size: int) -> AsyncIterator[bytes]:
    """The bytes of `chunks` regrouped in parts of exactly `part_size` (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
    if buffer:
        yield bytes(buffer)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _prepend(head: tuple[bytes, ...], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for item in head:
        yield item
    async for item in rest:
        yield item
