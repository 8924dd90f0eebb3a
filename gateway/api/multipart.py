"""Multipart upload: CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
AbortMultipartUpload, ListParts, ListMultipartUploads.

Upload state is the store's upload records (gateway/store.py, docs/metadata-keys.md#mpu-shadow-bucket):
one overview per upload (models.UploadMD) and one record per uploaded part (models.PartMD). Part data
is written once; Complete builds the object's location list from the chosen parts (no data copy).

Data is never freed while something may still reference it (docs/durability.md#multipart-uploads):
- a re-uploaded part frees the data it replaced only after the new part metadata is committed, and
  not at all if a completion started meanwhile (that completion may use either);
- Complete marks the overview `completeInProgress` before committing the object. A gateway killed
  after that leaves the overview behind; Abort, a retried Complete and a late UploadPart then free
  only data that no object version carrying this `uploadId` references. Failures leak, never lose.

Complete and Abort claim the overview with a write conditional on the text they read
(Store.replace_upload): Complete sets `completeInProgress` (and `completeStartedAt`), Abort sets
`abortInProgress` before deleting anything. Of a Complete and an Abort racing, exactly one claim
succeeds; the other answers NoSuchUpload having freed nothing. An Abort that finds a claim younger
than COMPLETE_CLAIM_LEASE_S answers NoSuchUpload too (that Complete is running: it wins); an older
claim is a Complete that died, and Abort cleans up after it as above. Parts, uploads and
listings take an upload marked `abortInProgress` as gone.

A Complete repeated once the upload is gone (an SDK retrying after a timeout) is recognised by the
current object's `uploadId` (ObjectMD of multipart objects records it, as the original's does) and,
if it lists the same parts, answered like the first one; otherwise NoSuchUpload.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from gateway import checksums, objectlock, placement, sse
from gateway.data.base import ObjectName
from gateway.api.common import check_write_conditions, read_xml_body, user_metadata, xml_response
from gateway.api.copy import check_copy_size, copy_data, read_copy_source
from gateway.api.listing import parse_max_keys, url_encoder
from gateway.api.object import store_body
from gateway.api.parts import MAX_PART_NUMBER, MIN_PART_NUMBER, parse_part_number, part_number_argument_error
from gateway.api.tagging import tags_from_header
from gateway.context import RequestContext
from gateway.limits import MAX_PAGE, capped_int
from gateway.authz import actor, new_object_acl, new_object_owner
from gateway.models import (EMPTY_MD5, BucketMD, ObjectMD, PartMD, UploadMD, checksum_record,
                            new_object_md)
from gateway.objectdata import (commit_outcome_unknown, commit_upload, data_present, free_locations, free_new_data,
                                part_location, part_md5_of_location, part_number_of_location, stored_md5)
from gateway.router import action
from gateway.versioning import commit_version, external_version_id, refuse_version_id
from gateway.xml import child_text, children, parse, root, sub
from shared import jsoncodec
from shared.errors import S3Error

COMPLETE_STARTED_AT = "completeStartedAt"          # ours: ms since the epoch of Complete's claim
ABORT_IN_PROGRESS = "abortInProgress"               # ours: an Abort claimed the upload
COMPLETE_CLAIM_LEASE_S = 60.0                       # a younger Complete claim is a Complete still running
MIN_PART_SIZE = 5 * 1024 * 1024                     # AWS: every part but the last >= 5 MiB
CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_COPY_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d+)$")
_COPY_RANGE_MESSAGE = ("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last "
                       "are the zero-based offsets of the first and last bytes to copy")
VALID_STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                         "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR", "OUTPOSTS", "EXPRESS_ONEZONE")


# ---------------------------------------------------------------- upload records

def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", UploadId=upload_id)


async def _find_record(ctx: RequestContext, bucket: BucketMD, key: str,
                       upload_id: str) -> tuple[UploadMD, str] | None:
    """The upload's overview and its stored text (aborting or not), or None (also for ids we
    could never have issued)."""
    if not _UPLOAD_ID_RE.match(upload_id):
        return None
    return await ctx.store.get_upload_record(bucket.name, key, upload_id)


def _aborting(overview: UploadMD | None) -> bool:
    return overview is not None and bool(overview.get(ABORT_IN_PROGRESS))


def _complete_running(overview: UploadMD) -> bool:
    """Whether the overview carries a Complete's claim young enough to be a Complete at work."""
    started = overview.get(COMPLETE_STARTED_AT)
    if not overview.complete_in_progress or not isinstance(started, (int, float)):
        return False
    return time.time() * 1000 - started < COMPLETE_CLAIM_LEASE_S * 1000


async def _find_overview(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> UploadMD | None:
    """The upload's overview, or None (also for ids we could never have issued, and uploads being aborted)."""
    record = await _find_record(ctx, bucket, key, upload_id)
    if record is None or _aborting(record[0]):
        return None
    return record[0]


async def _overview(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> UploadMD:
    """The upload's overview, or NoSuchUpload."""
    found = await _find_overview(ctx, bucket, key, upload_id)
    if found is None:
        raise _no_such_upload(upload_id)
    return found


async def _completed_versions(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> list[ObjectMD]:
    """Stored versions of `key` (the master and its versions) that a Complete of this upload committed."""
    return [md async for md in ctx.store.versions_of(bucket.name, key)
            if md.upload_id == upload_id and not md.is_phd]


async def _completed_data_keys(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> set[str]:
    """Data keys referenced by versions of `key` completed from this upload."""
    return {loc["key"] for md in await _completed_versions(ctx, bucket, key, upload_id)
            for loc in md.location or []}


async def _free(ctx: RequestContext, locations: list[dict[str, Any]] | None) -> None:
    await free_locations(ctx.services, locations, ctx.extra_log)


async def _free_unless(ctx: RequestContext, locations: list[dict[str, Any]] | None, keep: set[str]) -> None:
    await _free(ctx, [loc for loc in locations or [] if loc.get("key") not in keep])


# ---------------------------------------------------------------- CreateMultipartUpload

def _requested_checksum(ctx: RequestContext) -> tuple[str | None, str | None]:
    raw_algorithm = ctx.headers.get("x-amz-checksum-algorithm")
    raw_type = ctx.headers.get("x-amz-checksum-type")
    algorithm = None
    if raw_algorithm is not None:
        algorithm = checksums.normalize_algorithm(raw_algorithm)
        if algorithm is None:
            raise S3Error("InvalidRequest", "Checksum algorithm provided is unsupported. Please try again with any "
                          f"of the valid types: [{', '.join(checksums.ALGORITHMS)}]")
    checksum_type = None
    if raw_type is not None:
        checksum_type = raw_type.strip().upper()
        if checksum_type not in CHECKSUM_TYPES:
            raise S3Error("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
        if algorithm is None:
            raise S3Error("InvalidRequest", "The x-amz-checksum-type header can only be used with the "
                          "x-amz-checksum-algorithm header.")
    if algorithm is not None:
        checksum_type = checksum_type or ("FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
        if checksum_type == "FULL_OBJECT" and algorithm not in checksums.CRC_ALGORITHMS:
            raise S3Error("InvalidRequest", f"The {algorithm} algorithm is not supported for the FULL_OBJECT "
                          "checksum type.")
        if checksum_type == "COMPOSITE" and algorithm == "CRC64NVME":
            raise S3Error("InvalidRequest", "The CRC64NVME algorithm is not supported for the COMPOSITE "
                          "checksum type.")
    return algorithm, checksum_type


@action("CreateMultipartUpload")
async def create_multipart_upload(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    key = ctx.key or ""
    meta = user_metadata(ctx.headers)
    storage_class = ctx.headers.get("x-amz-storage-class") or "STANDARD"
    if storage_class not in VALID_STORAGE_CLASSES:
        raise S3Error("InvalidStorageClass", StorageClassRequested=storage_class)
    algorithm, checksum_type = _requested_checksum(ctx)
    tags_from_header(ctx.headers.get("x-amz-tagging"))   # refused here as PutObject refuses it; applied on Complete
    acl = new_object_acl(ctx, bucket)   # the completed object's ACL
    owner_id, owner_name = new_object_owner(ctx, bucket)
    lock = objectlock.check_write(ctx.headers, bucket, has_body=False)   # applied on Complete
    encryption = sse.for_write(ctx, bucket)   # the parts' and the object's (gateway/sse.py)
    placed = await placement.object_location(ctx, bucket)   # issue 16: where the parts go
    upload_id = uuid.uuid4().hex
    overview = UploadMD.new(upload_id, key, bucket.name, owner_id=owner_id,
                            owner_name=owner_name, storage_class=storage_class, location=placed,
                            acl=acl, headers=ctx.headers, user_meta=meta, checksum_algorithm=algorithm,
                            checksum_type=checksum_type)
    overview.update(objectlock.lock_record(lock))
    if encryption is not None:
        overview.update(encryption.stored_fields())
    since = ctx.store.bucket_watch()
    await ctx.store.put_upload(bucket.name, key, upload_id, overview)
    if not await ctx.store.bucket_alive(bucket, since):
        # A DeleteBucket removed the bucket before it could see this upload.
        await ctx.store.delete_upload(bucket.name, key, upload_id)
        raise S3Error("NoSuchBucket", BucketName=bucket.name)
    doc = root("InitiateMultipartUploadResult")
    sub(doc, "Bucket", bucket.name)
    sub(doc, "Key", key)
    sub(doc, "UploadId", upload_id)
    headers = {}
    if algorithm is not None:
        headers = {"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": checksum_type or ""}
    if encryption is not None:
        headers.update(encryption.response_headers())
    return xml_response(doc, headers=headers)


# ---------------------------------------------------------------- UploadPart / UploadPartCopy

def _check_part_checksum(overview: UploadMD, checksum: tuple[str, str] | None) -> None:
    """A part of an upload created with a checksum algorithm carries that algorithm's checksum."""
    algorithm = overview.checksum_algorithm
    if algorithm is None:
        return   # parts may carry any checksum (SDKs add CRC32 by default); it is kept, not required
    actual = checksum[0] if checksum is not None else None
    if actual != algorithm:
        raise S3Error("InvalidRequest", "Checksum Type mismatch occurred, expected checksum Type: "
                      f"{algorithm.lower()}, actual checksum Type: {(actual or 'null').lower()}")


async def _commit_part(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str, part_number: int,
                       part: PartMD) -> None:
    """Write a part's metadata, then free the data of the part it replaced (see the module docstring)."""
    new_locations = part.locations
    try:
        previous = await ctx.store.get_part(bucket.name, upload_id, part_number)
    except BaseException:
        await _free(ctx, new_locations)
        raise
    try:
        await ctx.store.put_part(bucket.name, upload_id, part_number, part)
    except BaseException as exc:   # a part record whose answer was lost may exist: its data stays
        await free_new_data(ctx.services, new_locations, exc, ctx.extra_log)
        raise
    overview = await ctx.store.get_upload(bucket.name, key, upload_id)
    if overview is None or _aborting(overview):
        # Aborted or completed while the data streamed: our part belongs to nothing, unless a
        # completion that read it is now the object.
        await ctx.store.delete_part(bucket.name, upload_id, part_number)
        keep = await _completed_data_keys(ctx, bucket, key, upload_id)
        await _free_unless(ctx, new_locations, keep)
        raise _no_such_upload(upload_id)
    if previous is not None and not overview.complete_in_progress:
        new_keys = {loc["key"] for loc in new_locations}
        await _free_unless(ctx, previous.locations, new_keys)


def _part_response_headers(checksum: tuple[str, str] | None, etag: str) -> dict[str, str]:
    headers = {"ETag": f'"{etag}"'}
    if checksum is not None:
        headers[checksums.header_name(checksum[0])] = checksum[1]
    return headers


async def _upload_target(ctx: RequestContext) -> tuple[BucketMD, str, str, UploadMD]:
    """(bucket, key, upload id, overview) a request addresses: authorized, and the upload exists."""
    bucket = ctx.bucket_md
    key = ctx.key or ""
    upload_id = ctx.query.get("uploadId", "")
    return bucket, key, upload_id, await _overview(ctx, bucket, key, upload_id)


async def _part_target(ctx: RequestContext) -> tuple[BucketMD, str, str, int, UploadMD]:
    """(bucket, key, upload id, part number, overview) a part request addresses, all checked."""
    part_number = parse_part_number(ctx.query.get("partNumber"))
    bucket, key, upload_id, overview = await _upload_target(ctx)
    return bucket, key, upload_id, part_number, overview


@action("UploadPart")
async def upload_part(ctx: RequestContext) -> Response:
    bucket, key, upload_id, part_number, overview = await _part_target(ctx)
    encryption = sse.stored_encryption(overview, sse.check_customer(ctx, overview, upload=True))
    body, locations = await store_body(ctx, bucket, encryption, overview.location or None,   # issue 16
                                       ObjectName(bucket.name, key, upload_id, part_number))
    checksum = body.checksum
    try:
        _check_part_checksum(overview, checksum)
    except S3Error:
        await _free(ctx, locations)
        raise
    md5_hex = stored_md5(locations, EMPTY_MD5)   # not the plaintext's for SSE-KMS and SSE-C (as AWS)
    part = PartMD.new(body.size, md5_hex, _numbered(locations, part_number, md5_hex), checksum)
    await _commit_part(ctx, bucket, key, upload_id, part_number, part)
    headers = _part_response_headers(checksum, md5_hex)
    if encryption is not None:
        headers.update(encryption.response_headers())
    return Response(status_code=200, headers=headers)


def _numbered(locations: list[dict[str, Any]] | None, part_number: int, md5_hex: str) -> list[dict[str, Any]] | None:
    """Part data locations tagged with their part number, as Complete will list them."""
    if locations is None:
        return None
    return [part_location(loc, part_number, md5_hex) for loc in locations]


def _copy_range(header: str | None, size: int) -> tuple[int, int]:
    """(first, last) of x-amz-copy-source-range, the whole source without it."""
    if header is None:
        return 0, size - 1
    m = _COPY_RANGE_RE.match(header.strip())
    if not m:
        raise S3Error("InvalidArgument", _COPY_RANGE_MESSAGE, ArgumentName="x-amz-copy-source-range",
                      ArgumentValue=header)
    first, last = capped_int(m.group(1), size), capped_int(m.group(2), size)
    if first > last or last >= size:
        raise S3Error("InvalidArgument", f"Range specified is not valid for source object of size: {size}",
                      ArgumentName="x-amz-copy-source-range", ArgumentValue=header)
    return first, last


@action("UploadPartCopy")
async def upload_part_copy(ctx: RequestContext) -> Response:
    bucket, key, upload_id, part_number, overview = await _part_target(ctx)
    encryption = sse.stored_encryption(overview, sse.check_customer(ctx, overview, upload=True))
    src = await read_copy_source(ctx)
    source_key = sse.check_customer(ctx, src.md, sse.COPY_SOURCE_SSEC_PREFIX)
    first, last = _copy_range(ctx.headers.get("x-amz-copy-source-range"), src.size)
    check_copy_size(last - first + 1)
    copied = await copy_data(ctx, src, first, last, bucket, overview.checksum_algorithm,
                             source_key=source_key.key if source_key else None, encryption=encryption,
                             location=overview.location or None,   # issue 16: the upload's location
                             name=ObjectName(bucket.name, key, upload_id, part_number))
    part = PartMD.new(copied.size, copied.md5_hex, _numbered(copied.locations, part_number, copied.md5_hex),
                      copied.checksum)
    await _commit_part(ctx, bucket, key, upload_id, part_number, part)
    doc = root("CopyPartResult")
    sub(doc, "LastModified", part.last_modified)
    sub(doc, "ETag", f'"{copied.md5_hex}"')
    if copied.checksum is not None:
        sub(doc, f"Checksum{copied.checksum[0]}", copied.checksum[1])
    headers = dict(src.version_header)
    if encryption is not None:
        headers.update(encryption.response_headers())
    return xml_response(doc, headers=headers)


# ---------------------------------------------------------------- CompleteMultipartUpload

class _CompleteBodyHeaders:
    """The request's headers as the body verifier sees them on Complete: there an
    x-amz-checksum-<algorithm> header states the checksum of the object being assembled,
    not of the XML body (a body checksum can still come as a trailer)."""

    def __init__(self, ctx: RequestContext):
        self._source = ctx.auth_request

    def header(self, name: str) -> str | None:
        if checksums.algorithm_from_header(name) is not None:
            return None
        return self._source.header(name)


def _parse_complete(body: bytes, algorithm: str | None) -> list[tuple[int, str, str | None]]:
    """(part number, ETag without quotes, checksum or None) of each listed part, in request order."""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="CompleteMultipartUpload")
    parts: list[tuple[int, str, str | None]] = []
    for el in children(doc, "Part"):
        number_text, etag = child_text(el, "PartNumber"), child_text(el, "ETag")
        if number_text is None or etag is None:
            raise S3Error("MalformedXML")
        number_text = number_text.strip()
        if not number_text.isascii() or not number_text.isdigit():
            raise S3Error("MalformedXML")
        checksum = child_text(el, f"Checksum{algorithm}") if algorithm else None
        parts.append((capped_int(number_text, MAX_PART_NUMBER), etag.strip().strip('"'),
                      checksum.strip() if checksum else None))
    if not parts or len(parts) > MAX_PART_NUMBER:
        raise S3Error("MalformedXML")
    return parts


def _check_order(parts: list[tuple[int, str, str | None]]) -> None:
    previous = 0
    for number, _, _ in parts:
        if not MIN_PART_NUMBER <= number <= MAX_PART_NUMBER:
            raise part_number_argument_error(str(number))
        if number <= previous:
            raise S3Error("InvalidPartOrder")
        previous = number


def _part_checksum_missing(algorithm: str, number: int) -> S3Error:
    return S3Error("InvalidRequest", f"The upload was created using a {algorithm.lower()} checksum. The complete "
                   f"request must include the checksum for each part. It was missing for part {number} in the request.")


def _choose_parts(requested: list[tuple[int, str, str | None]], stored: dict[int, PartMD],
                  overview: UploadMD, upload_id: str) -> list[tuple[int, PartMD]]:
    """The stored parts named by the request: existing, ETag- and checksum-matched, big enough."""
    algorithm, checksum_type = overview.checksum_algorithm, overview.checksum_type
    chosen: list[tuple[int, PartMD]] = []
    for index, (number, etag, checksum) in enumerate(requested):
        part = stored.get(number)
        if part is None or part.etag != etag:
            raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
        if algorithm is not None:
            if checksum is None and checksum_type == "COMPOSITE":
                raise _part_checksum_missing(algorithm, number)
            if checksum is not None and checksum != part.checksum_value:
                raise S3Error("InvalidPart", UploadId=upload_id, PartNumber=str(number), ETag=etag)
        size = part.size
        if index < len(requested) - 1 and size < MIN_PART_SIZE:
            raise S3Error("EntityTooSmall", ProposedSize=str(size), MinSizeAllowed=str(MIN_PART_SIZE),
                          PartNumber=str(number), ETag=etag)
        chosen.append((number, part))
    return chosen


def _object_checksum(overview: UploadMD, chosen: list[tuple[int, PartMD]]) -> dict[str, Any] | None:
    algorithm, checksum_type = overview.checksum_algorithm, overview.checksum_type
    if algorithm is None:
        return None
    digests: list[bytes] = []
    for _, part in chosen:
        value = part.checksum_value
        digest = checksums.decode_b64_digest(algorithm, value) if value else None
        if digest is None:
            raise S3Error("InvalidPart", "A part of this upload has no stored checksum.")
        digests.append(digest)
    if checksum_type == "FULL_OBJECT":
        value = checksums.full_object_crc(algorithm, [(d, p.size) for d, (_, p) in zip(digests, chosen)])
    else:
        value = checksums.composite(algorithm, digests)
    return checksum_record(algorithm, value, checksum_type)


def _check_checksum_type(ctx: RequestContext, algorithm: str | None, checksum_type: str | None) -> None:
    """x-amz-checksum-type on Complete, when given, must name the upload's checksum type."""
    declared = ctx.headers.get("x-amz-checksum-type")
    if declared is None or algorithm is None:
        return
    if declared.strip().upper() != checksum_type:
        raise S3Error("InvalidRequest", f"The upload was created using the {checksum_type} checksum mode. "
                      "The complete request must use the same checksum mode.")


def _check_declared_checksum(ctx: RequestContext, checksum: dict[str, Any] | None) -> None:
    """An x-amz-checksum-<alg> header on Complete must equal the object checksum we computed:
    the full-object CRC as `<base64>`, a composite checksum as `<base64>-<N>` or `<base64>`."""
    for algorithm in checksums.ALGORITHMS:
        name = checksums.header_name(algorithm)
        declared = ctx.headers.get(name)
        if declared is None:
            continue
        if checksum is None or checksum["checksumAlgorithm"] != algorithm:
            raise S3Error("InvalidRequest", f"The upload was not created with a {algorithm.lower()} checksum.")
        stated = checksums.parse_multipart_value(algorithm, declared)
        composite = checksum.get("checksumType", "COMPOSITE") == "COMPOSITE"
        if stated is None or (stated[1] is not None and not composite):
            raise S3Error("InvalidRequest", f"Value for {name} header is invalid.")
        ours = checksums.parse_multipart_value(algorithm, checksum["checksumValue"])
        if ours is None or stated[0] != ours[0] or stated[1] not in (None, ours[1]):
            raise S3Error("BadDigest", f"The {name} you specified did not match the calculated checksum.")


def _object_md(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str, overview: UploadMD,
               chosen: list[tuple[int, PartMD]]) -> ObjectMD:
    locations: list[dict[str, Any]] = []
    offset = 0
    md5s = hashlib.md5()
    for number, part in chosen:
        md5s.update(bytes.fromhex(part.etag))
        for loc in part.locations:
            locations.append(part_location(loc, number, part.etag, start=offset))
            offset += int(loc.get("size", 0))
    etag = f"{md5s.hexdigest()}-{len(chosen)}"
    headers = overview.headers
    headers["x-amz-storage-class"] = overview.storage_class
    # Every overview names its owner (ours and the original's); the requester stands in for a record without.
    requester = actor(ctx.account)
    md = new_object_md(key, overview.owner_id or requester.canonical_id,
                       overview.owner_display_name or requester.name, size=offset, md5=etag,
                       location=locations or None, data_store_name=overview.data_store_name or bucket.location,
                       headers=headers, user_meta=overview.user_metadata)
    md.upload_id = upload_id
    md.acl = overview.acl   # the ACL CreateMultipartUpload was given
    md.origin_op = "s3:ObjectCreated:CompleteMultipartUpload"
    md.tags = tags_from_header(overview.tagging)
    md.checksum = _object_checksum(overview, chosen)
    md.update({name: overview[name] for name in sse.STORED_FIELDS if overview.get(name)})
    objectlock.apply_to_new_version(md, bucket, objectlock.lock_of_record(overview))
    return md


async def _cleanup(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str,
                   parts: list[tuple[int, PartMD]], keep: set[str]) -> None:
    """Forget the upload (part records, then the overview), then free the part data not kept."""
    for number, _ in parts:
        await ctx.store.delete_part(bucket.name, upload_id, number)
    await ctx.store.delete_upload(bucket.name, key, upload_id)
    for _, part in parts:
        await _free_unless(ctx, part.locations, keep)


def _location_url(ctx: RequestContext, bucket: str, key: str) -> str:
    host = ctx.headers.get("host", "localhost")
    return f"{ctx.request.url.scheme}://{host}/{bucket}/{quote(key, safe='/')}"


def _complete_response(ctx: RequestContext, bucket: BucketMD, key: str, md: ObjectMD,
                       version_id: str | None) -> Response:
    doc = root("CompleteMultipartUploadResult")
    sub(doc, "Location", _location_url(ctx, bucket.name, key))
    sub(doc, "Bucket", bucket.name)
    sub(doc, "Key", key)
    sub(doc, "ETag", f'"{md.etag}"')
    headers: dict[str, str] = {}
    checksum = md.checksum
    if checksum:
        sub(doc, f"Checksum{checksum['checksumAlgorithm']}", checksum["checksumValue"])
        sub(doc, "ChecksumType", checksum.get("checksumType", "COMPOSITE"))
    if version_id is not None:
        headers["x-amz-version-id"] = version_id
    headers.update(sse.object_headers(md, sse.customer_key(ctx) if md.get(sse.MD_CUSTOMER_ALGORITHM) else None))
    return xml_response(doc, headers=headers)


def _completed_parts(md: ObjectMD) -> list[tuple[int | None, str, int]]:
    """(part number, part ETag, size) of the non-empty parts a completed object is made of, in
    order, from the part each of its locations records."""
    parts: list[tuple[int | None, str, int]] = []
    for loc in md.location or []:
        number, etag = part_number_of_location(loc), part_md5_of_location(loc)
        size = int(loc.get("size", 0))
        if parts and parts[-1][:2] == (number, etag):
            parts[-1] = (number, etag, parts[-1][2] + size)
        else:
            parts.append((number, etag, size))
    return parts


def _lists_parts_of(requested: list[tuple[int, str, str | None]], md: ObjectMD) -> bool:
    """Whether a Complete's part list names the parts the completed object `md` was made of:
    the same ETags in the same order (so the same multipart ETag), the same part numbers and,
    where the request states part checksums, the same object checksum."""
    try:
        etags = b"".join(bytes.fromhex(etag) for _, etag, _ in requested)
    except ValueError:
        return False
    if f"{hashlib.md5(etags).hexdigest()}-{len(requested)}" != md.etag:
        return False
    stored = _completed_parts(md)
    if [(n, e) for n, e, _ in stored] != [(n, e) for n, e, _ in requested if e != EMPTY_MD5]:
        return False   # empty parts have no data location: only the others are on record
    checksum = md.checksum
    stated = [c for _, _, c in requested]
    if not checksum or not all(stated):
        return True
    algorithm = checksum["checksumAlgorithm"]
    digests: list[bytes] = []
    for value in stated:
        digest = checksums.decode_b64_digest(algorithm, value or "")
        if digest is None:
            return False
        digests.append(digest)
    if checksum.get("checksumType") == "FULL_OBJECT":
        sizes = {n: size for n, _, size in stored}
        combined = checksums.full_object_crc(algorithm, [(d, sizes.get(n, 0))
                                                         for d, (n, _, _) in zip(digests, requested)])
    else:
        combined = checksums.composite(algorithm, digests)
    return combined == checksum["checksumValue"]


def _check_repeated(ctx: RequestContext, requested: list[tuple[int, str, str | None]], md: ObjectMD,
                    upload_id: str) -> None:
    """A Complete repeated after this upload completed into `md` must ask for what was done."""
    checksum = md.checksum or {}
    algorithm, checksum_type = checksum.get("checksumAlgorithm"), checksum.get("checksumType")
    if algorithm and checksum_type == "COMPOSITE":
        for number, _, stated in requested:
            if stated is None:
                raise _part_checksum_missing(algorithm, number)
    if not _lists_parts_of(requested, md):
        raise S3Error("InvalidPart", UploadId=upload_id)
    _check_declared_checksum(ctx, md.checksum)


async def _repeated_complete(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> Response:
    """Complete of an upload that no longer exists. When the current object is what this upload
    completed into (it records its `uploadId`) and the request lists the same parts, this is a
    retry of a Complete that succeeded (an SDK retrying after a timeout): AWS answers it as the
    first time. Otherwise (never existed, aborted, or since overwritten) NoSuchUpload."""
    master = await ctx.store.get_object(bucket.name, key) if _UPLOAD_ID_RE.match(upload_id) else None
    if master is None or master.is_delete_marker or master.is_phd or master.upload_id != upload_id:
        raise _no_such_upload(upload_id)
    checksum = master.checksum or {}
    _check_checksum_type(ctx, checksum.get("checksumAlgorithm"), checksum.get("checksumType"))
    body = await read_xml_body(ctx, _CompleteBodyHeaders(ctx))
    requested = _parse_complete(body, checksum.get("checksumAlgorithm"))
    _check_order(requested)
    _check_repeated(ctx, requested, master, upload_id)
    vid = external_version_id(master) if bucket.versioning_status is not None else None
    return _complete_response(ctx, bucket, key, master, vid)


@action("CompleteMultipartUpload")
async def complete_multipart_upload(ctx: RequestContext) -> Response:
    refuse_version_id(ctx.query)
    bucket = ctx.bucket_md
    key = ctx.key or ""
    upload_id = ctx.query.get("uploadId", "")
    record = await _find_record(ctx, bucket, key, upload_id)
    if record is None or _aborting(record[0]):
        return await _repeated_complete(ctx, bucket, key, upload_id)
    overview, stored_overview = record
    if any(name.startswith(sse.SSEC_PREFIX) for name in ctx.headers):
        sse.check_customer(ctx, overview, upload=True)   # optional on Complete; when given, the upload's key
    _check_checksum_type(ctx, overview.checksum_algorithm, overview.checksum_type)
    requested = _parse_complete(await read_xml_body(ctx, _CompleteBodyHeaders(ctx)), overview.checksum_algorithm)
    stored_list = await ctx.store.parts(bucket.name, upload_id)

    if overview.complete_in_progress:
        # A previous Complete got at least as far as marking the upload: if it also committed
        # the object, only the clean-up is left to do.
        completed = await _completed_versions(ctx, bucket, key, upload_id)
        if completed:
            done = completed[0]
            keep = {loc["key"] for loc in done.location or []}
            await _cleanup(ctx, bucket, key, upload_id, stored_list, keep)
            _check_order(requested)
            _check_repeated(ctx, requested, done, upload_id)
            vid = external_version_id(done) if bucket.versioning_status is not None else None
            return _complete_response(ctx, bucket, key, done, vid)

    _check_order(requested)
    chosen = _choose_parts(requested, dict(stored_list), overview, upload_id)
    md = _object_md(ctx, bucket, key, upload_id, overview, chosen)
    _check_declared_checksum(ctx, md.checksum)
    if overview.complete_in_progress and not await data_present(ctx.services, md.location):
        # An earlier completion committed this upload and its object has been replaced since,
        # freeing the parts' data: the upload is over. Its leftover records go, with the data of
        # parts no object uses (none, unless a concurrent completion has just committed).
        keep = await _completed_data_keys(ctx, bucket, key, upload_id)
        await _cleanup(ctx, bucket, key, upload_id, stored_list, keep)
        raise _no_such_upload(upload_id)
    master = await ctx.store.get_object(bucket.name, key)
    check_write_conditions(ctx.headers, master, key)

    # Claim the upload: only if its overview is still what we read (no Abort, no other Complete since).
    claim = UploadMD(dict(overview))
    claim.complete_in_progress = True
    claim[COMPLETE_STARTED_AT] = int(time.time() * 1000)
    if not await ctx.store.replace_upload(bucket.name, key, upload_id, claim, stored_overview):
        raise _no_such_upload(upload_id)
    try:
        # issue 16: a store that staged the parts in the object's own blob (azure) joins them now
        md.location = await commit_upload(ctx.services, overview.location or bucket.location,
                                          ObjectName(bucket.name, key), md.location)
        committed = await commit_version(ctx.store, bucket, key, md, master)
    except BaseException as exc:
        # Nothing committed: give the upload back as it was (unless someone moved on since). When
        # the commit's answer was lost the object may exist: the claim stays, so that an Abort
        # keeps the data a committed completion uses (and a retried Complete finds it).
        if not commit_outcome_unknown(exc):
            await ctx.store.replace_upload(bucket.name, key, upload_id, overview, json.dumps(claim))
        raise
    keep = {loc["key"] for loc in md.location or []}
    # A replaced master may be an earlier completion of this same upload sharing our data.
    for freed in committed.freed:
        await _free_unless(ctx, freed, keep)
    # Data of parts another completion of this upload (a concurrent retry) committed stays too.
    keep |= await _completed_data_keys(ctx, bucket, key, upload_id)
    await _cleanup(ctx, bucket, key, upload_id, stored_list, keep)
    vid = external_version_id(md, committed.version_id) if committed.version_id else None
    return _complete_response(ctx, bucket, key, md, vid)


# ---------------------------------------------------------------- AbortMultipartUpload

@action("AbortMultipartUpload")
async def abort_multipart_upload(ctx: RequestContext) -> Response:
    await abort_upload(ctx, ctx.bucket_md, ctx.key or "", ctx.query.get("uploadId", ""))
    return Response(status_code=204)


async def abort_upload(ctx: RequestContext, bucket: BucketMD, key: str, upload_id: str) -> None:
    """Abort one upload (NoSuchUpload when it is gone or a Complete is at work). Uses only
    `ctx.store`, `ctx.services` and `ctx.extra_log`, so the lifecycle worker calls it with a
    context of its own (gateway/lifecycle/worker.py)."""
    record = await _find_record(ctx, bucket, key, upload_id)
    if record is None:
        raise _no_such_upload(upload_id)
    overview, stored_overview = record
    if not _aborting(overview):   # (an Abort that died marked it: finish its work)
        if _complete_running(overview):
            raise _no_such_upload(upload_id)   # a Complete claimed it and is at work: it wins
        # Claim it before deleting anything: a Complete claiming meanwhile makes this fail, and
        # once this succeeds no Complete can claim it any more.
        if not await ctx.store.replace_upload(bucket.name, key, upload_id,
                                              UploadMD({**overview, ABORT_IN_PROGRESS: True}), stored_overview):
            raise _no_such_upload(upload_id)
    parts = await ctx.store.parts(bucket.name, upload_id)
    keep: set[str] = set()
    if overview.complete_in_progress:
        # A Complete was interrupted (or is running): its object may already use these parts.
        keep = await _completed_data_keys(ctx, bucket, key, upload_id)
    await _cleanup(ctx, bucket, key, upload_id, parts, keep)


# ---------------------------------------------------------------- ListParts

def _owner_elements(parent: Any, overview: UploadMD) -> None:
    el = sub(parent, "Initiator")
    sub(el, "ID", overview.initiator_id)
    sub(el, "DisplayName", overview.initiator_display_name)
    el = sub(parent, "Owner")
    sub(el, "ID", overview.owner_id)
    sub(el, "DisplayName", overview.owner_display_name)


def _non_negative_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw)
    return int(raw)


@action("ListParts")
async def list_parts(ctx: RequestContext) -> Response:
    marker = _non_negative_int(ctx.query, "part-number-marker", 0)
    max_parts = min(_non_negative_int(ctx.query, "max-parts", MAX_PAGE), MAX_PAGE)
    enc = url_encoder(ctx.query)
    bucket, key, upload_id, overview = await _upload_target(ctx)
    parts = await ctx.store.parts(bucket.name, upload_id, after=min(marker, MAX_PART_NUMBER), limit=max_parts + 1) \
        if max_parts > 0 else []
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    doc = root("ListPartsResult")
    sub(doc, "Bucket", bucket.name)
    sub(doc, "Key", enc(key))
    sub(doc, "UploadId", upload_id)
    sub(doc, "PartNumberMarker", marker)
    sub(doc, "NextPartNumberMarker", parts[-1][0] if parts else marker)
    sub(doc, "MaxParts", max_parts)
    sub(doc, "IsTruncated", truncated)
    if "encoding-type" in ctx.query:
        sub(doc, "EncodingType", "url")
    for number, part in parts:
        el = sub(doc, "Part")
        sub(el, "PartNumber", number)
        sub(el, "LastModified", part.last_modified)
        sub(el, "ETag", f'"{part.etag}"')
        sub(el, "Size", part.size)
        if part.checksum_algorithm:
            sub(el, f"Checksum{part.checksum_algorithm}", part.checksum_value or "")
    _owner_elements(doc, overview)
    sub(doc, "StorageClass", overview.storage_class)
    if overview.checksum_algorithm is not None:
        sub(doc, "ChecksumAlgorithm", overview.checksum_algorithm)
        sub(doc, "ChecksumType", overview.checksum_type or "COMPOSITE")
    return xml_response(doc)


# ---------------------------------------------------------------- ListMultipartUploads

@action("ListMultipartUploads")
async def list_multipart_uploads(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    q = ctx.query
    enc = url_encoder(q)
    max_uploads, _ = parse_max_keys(q, "max-uploads")
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    key_marker, upload_id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    if max_uploads == 0:
        result: dict[str, Any] = {"Uploads": [], "CommonPrefixes": [], "IsTruncated": False}
    else:
        result = await ctx.store.list_uploads(bucket.name, {
            "prefix": prefix, "delimiter": delimiter, "maxKeys": max_uploads, "keyMarker": key_marker,
            "uploadIdMarker": upload_id_marker})
    doc = root("ListMultipartUploadsResult")
    sub(doc, "Bucket", bucket.name)
    sub(doc, "KeyMarker", enc(key_marker))
    sub(doc, "UploadIdMarker", upload_id_marker if key_marker else "")
    sub(doc, "NextKeyMarker", enc(result.get("NextKeyMarker") or ""))
    sub(doc, "NextUploadIdMarker", result.get("NextUploadIdMarker") or "")
    if delimiter is not None:
        sub(doc, "Delimiter", enc(delimiter))
    sub(doc, "Prefix", enc(prefix))
    sub(doc, "MaxUploads", max_uploads)
    sub(doc, "IsTruncated", result["IsTruncated"])
    if "encoding-type" in q:
        sub(doc, "EncodingType", "url")
    for upload in result["Uploads"]:
        raw = upload["value"]
        overview = UploadMD(jsoncodec.loads(raw) if isinstance(raw, str) else raw)
        el = sub(doc, "Upload")
        sub(el, "Key", enc(upload["key"]))
        sub(el, "UploadId", upload["uploadId"])
        _owner_elements(el, overview)
        sub(el, "StorageClass", overview.storage_class)
        sub(el, "Initiated", overview.initiated)
        if overview.checksum_algorithm:
            sub(el, "ChecksumAlgorithm", overview.checksum_algorithm)
            sub(el, "ChecksumType", overview.checksum_type or "COMPOSITE")
    for common in result["CommonPrefixes"]:
        sub(sub(doc, "CommonPrefixes"), "Prefix", enc(common))
    return xml_response(doc)

