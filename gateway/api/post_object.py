"""PostObject (POST /bucket, multipart/form-data): the browser form upload.

Owns the streaming multipart/form-data reader, the POST policy (base64 JSON:
expiration + conditions eq / starts-with / content-length-range / {field: value}),
the form's own authentication (Signature V4: x-amz-algorithm, x-amz-credential,
x-amz-date, x-amz-signature = hex HMAC-SHA256 of the base64 policy with the v4
signing key; Signature V2: AWSAccessKeyId, signature = base64 HMAC-SHA1 of it), and
the three success answers (204 default, 200 / 201 PostResponse, 303 redirect).

The request itself carries no Authorization header: the gateway lets PostObject
through anonymous and this module authenticates from the form before a single file
byte is stored. Fields precede the file (AWS ignores fields after it), so everything
is checked when the file part starts; the file is streamed into the data store
while its MD5 is computed, never held whole in memory.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, AsyncIterator
from urllib.parse import quote, urlencode, urlsplit

from starlette.responses import Response

from gateway.api.bucket import CANNED_ACLS
from gateway.api.common import (
    commit_new_object,
    delete_locations,
    user_metadata,
    xml_response,
)
from gateway.api.object import MAX_PUT_SIZE, object_location
from gateway.auth import v2, v4
from gateway.auth.request import lookup_secret, signatures_equal
from gateway.bytestream import ByteStream
from gateway.context import RequestContext
from gateway.models import EMPTY_MD5, MAX_KEY_BYTES, new_object_md
from gateway.router import action
from gateway.versioning import external_version_id
from gateway.xml import root, sub
from shared.config import Account
from shared.errors import S3Error

FORM_CONTENT_TYPE = "multipart/form-data"
FILE_FIELD = "file"
FILENAME_VARIABLE = "${filename}"
# AWS refuses more than this many bytes of fields before the file (MaxPostPreDataLengthExceeded).
MAX_PRE_DATA_BYTES = 20 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_BOUNDARY_LENGTH = 70              # RFC 2046
SUCCESS_STATUSES = (200, 201, 204)
DEFAULT_SUCCESS_STATUS = 204
# Form fields that need no policy condition (the signature cannot sign itself).
_UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", FILE_FIELD})
_IGNORED_PREFIX = "x-ignore-"
# Form fields that become object headers, as on PutObject.
_HEADER_FIELDS = ("cache-control", "content-type", "content-disposition", "content-encoding", "expires",
                  "x-amz-storage-class", "x-amz-website-redirect-location")
_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')
_POLICY_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


def _malformed(detail: str | None = None) -> S3Error:
    return S3Error("MalformedPOSTRequest", detail)


# --- the multipart/form-data reader ------------------------------------------------------------

@dataclass
class FormPart:
    name: str                    # lower-cased field name
    filename: str | None         # set on file parts
    content_type: str | None


def _header_line_too_long() -> S3Error:
    return _malformed("A part header line is too long.")


def _header_truncated() -> S3Error:
    return _malformed("The body ended inside a part header.")


class FormReader:
    """Reads multipart/form-data from an async byte stream, one part at a time.

    The buffer never holds more than one network read plus a delimiter's length
    of part data, so a file part of any size streams through.
    """

    def __init__(self, stream: AsyncIterator[bytes], boundary: str):
        # A leading CRLF makes the first delimiter look like every later one.
        self._stream = ByteStream(stream, initial=b"\r\n")
        self._buf = self._stream.buf
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._started = False
        self.finished = False

    async def _fill(self) -> bool:
        return await self._stream.fill()

    async def _readline(self) -> bytes:
        return await self._stream.readline(MAX_PART_HEADER_BYTES, _header_line_too_long, _header_truncated)

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, up to (and consuming) the next delimiter."""
        keep = len(self._delimiter) - 1
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                if at:
                    yield bytes(self._buf[:at])
                del self._buf[:at + len(self._delimiter)]
                return
            if len(self._buf) > keep:
                piece = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield piece
            if not await self._fill():
                raise _malformed("The body ended before the closing boundary.")

    async def read_value(self, limit: int) -> bytes:
        out = bytearray()
        async for piece in self.data():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxPostPreDataLengthExceeded", "Your POST request fields preceding the upload "
                              "file were too large.", status=400)
        return bytes(out)

    async def next_part(self) -> FormPart | None:
        """The next part's headers (its data is then read with `data()`), or None after the last."""
        if self.finished:
            return None
        if not self._started:
            async for _ in self.data():   # the preamble, ignored as RFC 2046 says
                pass
            self._started = True
        after_delimiter = await self._readline()
        if after_delimiter.startswith(b"--"):
            self.finished = True
            return None
        if after_delimiter.strip(b" \t"):
            raise _malformed("A boundary is followed by unexpected bytes.")
        headers: dict[str, str] = {}
        size = 0
        while True:
            line = await self._readline()
            if not line:
                break
            size += len(line)
            if size > MAX_PART_HEADER_BYTES:
                raise _malformed("The part headers are too large.")
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon:
                raise _malformed("A part header has no ':'.")
            headers[name.strip().lower()] = value.strip()
        return _part_from_headers(headers)


def _part_from_headers(headers: dict[str, str]) -> FormPart:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _malformed("A part has no Content-Disposition header.")
    kind, _, rest = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise _malformed("A part is not form-data.")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "").strip()
        params.setdefault(match.group(1).lower(), value)
    if not params.get("name"):
        raise _malformed("A part has no field name.")
    return FormPart(params["name"].lower(), params.get("filename"), headers.get("content-type"))


def form_boundary(content_type: str | None) -> str:
    """The boundary of a multipart/form-data Content-Type, or the error AWS gives."""
    if not content_type or content_type.split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                      Condition="Bucket POST must be of the enclosure-type multipart/form-data")
    match = _BOUNDARY_RE.search(content_type)
    boundary = (match.group(1) or match.group(2)) if match else ""
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise _malformed("The multipart/form-data boundary is missing or invalid.")
    return boundary


async def read_fields(reader: FormReader) -> tuple[dict[str, str], FormPart | None]:
    """Every field before the file, and the file part (None if the form has none)."""
    fields: dict[str, str] = {}
    total = 0
    while True:
        part = await reader.next_part()
        if part is None:
            return fields, None
        if part.name == FILE_FIELD:
            return fields, part
        raw = await reader.read_value(MAX_PRE_DATA_BYTES - total)
        total += len(raw)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed(f"The value of field {part.name} is not UTF-8.") from None
        if part.name in fields:
            raise S3Error("InvalidArgument", f"The form field {part.name} appears more than once.",
                          ArgumentName=part.name, ArgumentValue=value)
        fields[part.name] = value


# --- the POST policy ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    op: str                      # "eq" | "starts-with" | "content-length-range"
    field: str                   # lower-case field name without '$' ("" for content-length-range)
    value: str = ""
    low: int = 0
    high: int = 0

    def describe(self) -> str:
        if self.op == "content-length-range":
            return json.dumps([self.op, self.low, self.high])
        return json.dumps([self.op, f"${self.field}", self.value])


@dataclass
class PostPolicy:
    expiration: datetime
    conditions: list[Condition] = field(default_factory=list)


def _invalid_policy(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}")


def _policy_time(value: Any) -> datetime:
    if isinstance(value, str):
        for fmt in _POLICY_TIME_FORMATS:
            try:
                return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
    raise _invalid_policy(f"Invalid 'expiration' value: '{value}'")


def _length_bound(value: Any) -> int:
    if isinstance(value, bool):
        raise _invalid_policy("Invalid content-length-range condition.")
    if isinstance(value, int):
        bound = value
    elif isinstance(value, str) and value.strip().isdigit():
        bound = int(value.strip())
    else:
        raise _invalid_policy("Invalid content-length-range condition.")
    if bound < 0:
        raise _invalid_policy("Invalid content-length-range condition.")
    return bound


def _parse_condition(raw: Any) -> list[Condition]:
    if isinstance(raw, dict):
        if not raw:
            raise _invalid_policy("Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                                  "specified.")
        out = []
        for name, value in raw.items():
            if not isinstance(value, str):
                raise _invalid_policy(f"Invalid Simple-Condition: value of {name} must be a string.")
            out.append(Condition("eq", name.lower().lstrip("$"), value))
        return out
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        op = raw[0].lower()
        if op == "content-length-range":
            if len(raw) != 3:
                raise _invalid_policy("Invalid content-length-range condition.")
            low, high = _length_bound(raw[1]), _length_bound(raw[2])
            if low > high:
                raise _invalid_policy("Invalid content-length-range condition.")
            return [Condition(op, "", low=low, high=high)]
        if op in ("eq", "starts-with"):
            if len(raw) != 3 or not isinstance(raw[1], str) or not raw[1].startswith("$") \
                    or not isinstance(raw[2], str):
                raise _invalid_policy(f"Invalid {op} condition: {json.dumps(raw)}")
            return [Condition(op, raw[1][1:].lower(), raw[2])]
        raise _invalid_policy(f"Invalid condition operator: {raw[0]}")
    raise _invalid_policy(f"Invalid condition: {json.dumps(raw)}")


def parse_policy(encoded: str) -> PostPolicy:
    """The policy form field (base64 JSON) -> PostPolicy, or InvalidPolicyDocument."""
    try:
        doc = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid_policy("Invalid JSON.")
    if "expiration" not in doc:
        raise _invalid_policy("Policy missing expiration.")
    if "conditions" not in doc:
        raise _invalid_policy("Policy missing conditions.")
    if not isinstance(doc["conditions"], list):
        raise _invalid_policy("Invalid 'conditions' value: must be a list.")
    policy = PostPolicy(_policy_time(doc["expiration"]))
    for raw in doc["conditions"]:
        policy.conditions.extend(_parse_condition(raw))
    return policy


def _denied(detail: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {detail}")


def _condition_holds(condition: Condition, value: str) -> bool:
    if condition.op == "eq":
        return value == condition.value
    if condition.field == "content-type":
        # AWS: a Content-Type with several comma-separated values must start with the prefix in each.
        return all(v.strip().startswith(condition.value) for v in value.split(","))
    return value.startswith(condition.value)


def check_policy_fields(policy: PostPolicy, fields: dict[str, str], bucket: str,
                        now: datetime | None = None) -> None:
    """Expiration, every eq / starts-with condition, and no form field without a condition."""
    now = now or datetime.now(timezone.utc)
    if policy.expiration < now:
        raise _denied("Policy expired.")
    values = {**fields, "bucket": bucket}
    for condition in policy.conditions:
        if condition.op != "content-length-range" and \
                not _condition_holds(condition, values.get(condition.field, "")):
            raise _denied(f"Policy Condition failed: {condition.describe()}")
    covered = {c.field for c in policy.conditions}
    extra = [name for name in fields
             if name not in covered and name not in _UNCONDITIONED_FIELDS and not name.startswith(_IGNORED_PREFIX)]
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


def length_range(policy: PostPolicy | None) -> tuple[int, int | None]:
    """(min, max) file size allowed by every content-length-range condition."""
    low, high = 0, None
    for condition in (policy.conditions if policy else []):
        if condition.op == "content-length-range":
            low = max(low, condition.low)
            high = condition.high if high is None else min(high, condition.high)
    return low, high


# --- authentication from the form --------------------------------------------------------------

def _missing_field(name: str) -> S3Error:
    return S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'.  If it is specified, "
                   "please check the order of the fields.", ArgumentName=name, ArgumentValue="")


def _authenticate_v4(fields: dict[str, str], config: Any) -> Account:
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "policy"):
        if not fields.get(name):
            raise _missing_field(name)
    if fields["x-amz-algorithm"] != v4.ALGORITHM:
        raise S3Error("InvalidArgument", "Only AWS4-HMAC-SHA256 is supported for POST form signatures.",
                      ArgumentName="x-amz-algorithm", ArgumentValue=fields["x-amz-algorithm"])
    credential = fields["x-amz-credential"]
    # Private helper of gateway.auth.v4 (lead asked to expose it): access key/date/region/service/terminator.
    parts = v4.split_credential(credential)
    if parts is None or parts[3] != v4.SERVICE or parts[4] != v4.TERMINATOR \
            or parts[1] != fields["x-amz-date"][:8]:
        raise S3Error("InvalidArgument", "The X-Amz-Credential form field is malformed.",
                      ArgumentName="x-amz-credential", ArgumentValue=credential)
    access_key, date, region = parts[0], parts[1], parts[2]
    account, secret = lookup_secret(config, access_key)
    expected = v4.sign(v4.signing_key(secret, date, region), fields["policy"])
    provided = fields["x-amz-signature"]
    if not signatures_equal(expected, provided.lower()):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"],
                      SignatureProvided=provided)
    return account


def _authenticate_v2(fields: dict[str, str], config: Any) -> Account:
    for name in ("awsaccesskeyid", "signature", "policy"):
        if not fields.get(name):
            raise _missing_field("AWSAccessKeyId" if name == "awsaccesskeyid" else name)
    access_key = fields["awsaccesskeyid"]
    account, secret = lookup_secret(config, access_key)
    provided = fields["signature"]
    if not signatures_equal(v2.sign(secret, fields["policy"]), provided):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"],
                      SignatureProvided=provided)
    return account


def authenticate_form(fields: dict[str, str], config: Any) -> tuple[Account, PostPolicy]:
    """The account that signed the form's policy, and the policy (anonymous forms are denied:
    only owners can write to a bucket until bucket ACLs exist)."""
    if "x-amz-signature" in fields:
        account = _authenticate_v4(fields, config)
    elif "signature" in fields or "awsaccesskeyid" in fields:
        account = _authenticate_v2(fields, config)
    else:
        raise S3Error("AccessDenied", "Anonymous POST uploads are not allowed on this bucket.")
    return account, parse_policy(fields["policy"])


# --- the upload --------------------------------------------------------------------------------

class _SizedFile:
    """The file part's bytes, hashed and held to the policy's and AWS's size limits as they pass."""

    def __init__(self, source: AsyncIterator[bytes], high: int):
        self._source = source
        self._high = high
        self.size = 0
        self.md5 = hashlib.md5()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._source:
            self.size += len(piece)
            if self.size > self._high:
                raise S3Error("EntityTooLarge", MaxSizeAllowed=str(self._high), ProposedSize=str(self.size))
            self.md5.update(piece)
            yield piece


async def _first_piece(source: AsyncIterator[bytes]) -> bytes:
    async for piece in source:
        if piece:
            return piece
    return b""


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for piece in rest:
        yield piece


def _object_key(fields: dict[str, str], filename: str | None) -> str:
    template = fields.get("key")
    if template is None:
        raise _missing_field("key")
    key = template.replace(FILENAME_VARIABLE, filename or "")
    if not key:
        raise S3Error("InvalidArgument", "User key must have a length greater than 0.", ArgumentName="key",
                      ArgumentValue="")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    return key


def _success_response(ctx: RequestContext, fields: dict[str, str], key: str, etag: str,
                      headers: dict[str, str]) -> Response:
    location = f"{ctx.request.url.scheme}://{ctx.request.headers.get('host', '')}/{ctx.bucket}/{quote(key)}"
    headers = {**headers, "ETag": etag, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        parts = urlsplit(redirect)
        if parts.scheme in ("http", "https") and parts.netloc:
            query = urlencode({"bucket": ctx.bucket, "key": key, "etag": etag})
            headers["Location"] = f"{redirect}{'&' if parts.query else '?'}{query}"
            return Response(status_code=303, headers=headers)
    raw_status = fields.get("success_action_status", "")
    status = int(raw_status) if raw_status.isdigit() and int(raw_status) in SUCCESS_STATUSES \
        else DEFAULT_SUCCESS_STATUS
    if status != 201:
        return Response(status_code=status, headers=headers)
    doc = root("PostResponse", namespaced=False)
    sub(doc, "Location", location)
    sub(doc, "Bucket", ctx.bucket)
    sub(doc, "Key", key)
    sub(doc, "ETag", etag)
    return xml_response(doc, 201, headers)


@action("PostObject")
async def post_object(ctx: RequestContext) -> Response:
    reader = FormReader(ctx.request.stream(), form_boundary(ctx.headers.get("content-type")))
    fields, file_part = await read_fields(reader)
    if file_part is None:
        raise S3Error("IncorrectNumberOfFilesInPostRequest")
    key = _object_key(fields, file_part.filename)
    account, policy = authenticate_form(fields, ctx.config)
    check_policy_fields(policy, fields, ctx.bucket or "")
    ctx.account = account
    bucket = await ctx.authorized_bucket()
    acl = fields.get("acl")
    if acl is not None and acl not in CANNED_ACLS:
        raise S3Error("InvalidArgument", ArgumentName="acl", ArgumentValue=acl)
    meta = user_metadata({name: value for name, value in fields.items() if name.startswith("x-amz-meta-")})
    low, high = length_range(policy)

    body = _SizedFile(reader.data(), min(high, MAX_PUT_SIZE) if high is not None else MAX_PUT_SIZE)
    chunks = body.__aiter__()
    first = await _first_piece(chunks)
    location_name = object_location(bucket)
    location = None
    if first:
        backend = ctx.services.data_for(location_name)
        data_key = await backend.put(_chained(first, chunks), None)
        location = [{"key": data_key, "size": body.size, "start": 0, "dataStoreName": location_name,
                     "dataStoreETag": f"1:{body.md5.hexdigest()}"}]
    try:
        if body.size < low:
            raise S3Error("EntityTooSmall", MinSizeAllowed=str(low), ProposedSize=str(body.size))
        md5 = body.md5.hexdigest() if location is not None else EMPTY_MD5
        object_headers = {name: fields[name] for name in _HEADER_FIELDS if name in fields}
        md = new_object_md(key, account.canonical_id, account.name, size=body.size, md5=md5, location=location,
                           data_store_name=location_name, headers=object_headers, user_meta=meta)
        md["originOp"] = "s3:ObjectCreated:Post"
        if acl is not None:
            md["acl"]["Canned"] = acl
    except BaseException:
        await delete_locations(ctx, location)
        raise
    committed = await commit_new_object(ctx, bucket, key, md, location)
    headers = {}
    if committed.version_id is not None:
        headers["x-amz-version-id"] = external_version_id({**md, "versionId": committed.version_id})
    return _success_response(ctx, fields, key, f'"{md5}"', headers)
