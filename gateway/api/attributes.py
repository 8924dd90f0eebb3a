"""GetObjectAttributes: GET /bucket/key?attributes, the x-amz-object-attributes header naming
what to answer among ETag, Checksum, ObjectParts, StorageClass and ObjectSize.

It reads the object as HeadObject does (same lookup, delete-marker answers and access), and
answers Last-Modified and, on a bucket with versioning configured, x-amz-version-id as
headers. The body's elements come in the schema's order whatever the header's order.

ObjectParts, as on AWS general purpose buckets: absent for an object that was not a multipart
upload; only TotalPartsCount (<PartsCount> on the wire) for a multipart object without an additional checksum; with one,
the page of parts (x-amz-max-parts, x-amz-part-number-marker) with each part's number, size
and, when stored, checksum. Parts are read from the object's location list (each location's
part number: objectdata.part_number_of_location).
"""
from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gateway.api.common import http_date, xml_response
from gateway.api.object import read_target
from gateway.context import RequestContext
from gateway.limits import MAX_PAGE
from gateway.models import ObjectMD
from gateway.objectdata import part_number_of_location
from gateway.router import action
from gateway.versioning import external_version_id
from gateway.xml import root, sub
from shared.errors import S3Error

ATTRIBUTES_HEADER = "x-amz-object-attributes"
MAX_PARTS_HEADER = "x-amz-max-parts"
PART_NUMBER_MARKER_HEADER = "x-amz-part-number-marker"
# The response's elements, in the schema's order.
ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
_MISSING_MESSAGE = ("The x-amz-object-attributes header specifying the attributes to be retrieved is either "
                    "missing or empty")


def parse_attributes(value: str | None) -> set[str]:
    """The attribute names of the header (comma separated, blanks ignored); an unknown name
    is InvalidArgument. An empty set when the header is missing or names nothing."""
    names = {name.strip() for name in (value or "").split(",")} - {""}
    for name in names:
        if name not in ATTRIBUTES:
            raise S3Error("InvalidArgument", "Invalid attribute name specified.")
    return names


def _int_header(ctx: RequestContext, name: str, default: int) -> int:
    raw = ctx.headers.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > 2 ** 31 - 1:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw)
    return int(raw)


def _parts_count_from_etag(md: ObjectMD) -> int:
    _, sep, count = str(md.etag).rpartition("-")
    return int(count) if sep and count.isdigit() else 0


def object_parts(md: ObjectMD) -> list[tuple[int, int, dict[str, Any] | None]]:
    """(part number, size, stored checksum or None) of each part of a multipart object."""
    parts: dict[int, list[Any]] = {}
    for loc in md.location or []:
        number = part_number_of_location(loc)
        if number is None:
            number = len(parts) + 1
        entry = parts.setdefault(number, [0, None])
        entry[0] += int(loc.get("size", 0))
        checksum = loc.get("checksum")
        if isinstance(checksum, dict) and checksum.get("checksumAlgorithm") and entry[1] is None:
            entry[1] = checksum
    return [(number, size, checksum) for number, (size, checksum) in sorted(parts.items())]


def _object_parts_element(parent: Any, md: ObjectMD, marker: int, max_parts: int) -> None:
    if not md.upload_id:
        return   # not a multipart upload: no ObjectParts
    parts = object_parts(md)
    total = max(_parts_count_from_etag(md), len(parts))
    el = sub(parent, "ObjectParts")
    sub(el, "PartsCount", total)   # TotalPartsCount's name on the wire (botocore: locationName PartsCount)
    if not md.checksum:
        return   # AWS lists parts only of an object carrying an additional checksum
    after = [p for p in parts if p[0] > marker]
    page = after[:max_parts]
    sub(el, "PartNumberMarker", marker)
    sub(el, "NextPartNumberMarker", page[-1][0] if page else marker)
    sub(el, "MaxParts", max_parts)
    sub(el, "IsTruncated", len(after) > len(page))
    for number, size, checksum in page:
        part = sub(el, "Part")
        sub(part, "PartNumber", number)
        sub(part, "Size", size)
        if checksum is not None:
            sub(part, f"Checksum{checksum['checksumAlgorithm']}", checksum.get("checksumValue", ""))


@action("GetObjectAttributes")
async def get_object_attributes(ctx: RequestContext) -> Response:
    names = parse_attributes(ctx.headers.get(ATTRIBUTES_HEADER))
    # A page of parts: MAX_PAGE by default and at most, as ListParts.
    max_parts = min(_int_header(ctx, MAX_PARTS_HEADER, MAX_PAGE), MAX_PAGE)
    marker = _int_header(ctx, PART_NUMBER_MARKER_HEADER, 0)
    if not names:   # after the pipeline's NoSuchBucket and AccessDenied, before NoSuchKey
        raise S3Error("InvalidRequest", _MISSING_MESSAGE)
    bucket, md = await read_target(ctx)
    doc = root("GetObjectAttributesResponse")
    if "ETag" in names:
        sub(doc, "ETag", md.etag)
    checksum = md.checksum
    if "Checksum" in names and checksum and checksum.get("checksumAlgorithm"):
        el = sub(doc, "Checksum")
        sub(el, f"Checksum{checksum['checksumAlgorithm']}", checksum.get("checksumValue", ""))
        sub(el, "ChecksumType", checksum.get("checksumType") or "FULL_OBJECT")
    if "ObjectParts" in names:
        _object_parts_element(doc, md, marker, max_parts)
    if "StorageClass" in names:
        sub(doc, "StorageClass", md.storage_class)
    if "ObjectSize" in names:
        sub(doc, "ObjectSize", md.size)
    headers = {"Last-Modified": http_date(md.last_modified)}
    if bucket.versioning_status is not None:
        headers["x-amz-version-id"] = external_version_id(md)
    return xml_response(doc, headers=headers)
