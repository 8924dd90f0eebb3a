"""Listing actions: ListObjects (v1), ListObjectsV2, ListObjectVersions.

The algorithms (shared/listing) run where the keys are: `Store.list_objects` asks the metadata
backend for one page (the dmd's listObject call, the engine in process, SQL on PostgreSQL, or the
algorithm here over read streams against a dmd without that call). Parameter handling:
docs/listing.md#gateway-parameters. A listed value is the projection of the stored document to the
listing fields (a dict) or, on the read-stream path, its stored text; either is read as an ObjectMD.
"""
from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

from starlette.responses import Response

from gateway.context import RequestContext
from gateway.limits import MAX_PAGE
from gateway.models import BucketMD, ObjectMD
from gateway.router import action
from gateway.versioning import decode_version_id, external_version_id, null_version_id
from gateway.xml import XmlWriter, escape
from gateway.xml import text_of as _text
from shared import jsoncodec, versionid
from shared.errors import S3Error
from shared.listing import DELIMITER_MASTER, DELIMITER_VERSIONS

MAX_INT32 = 2 ** 31 - 1
_INTEGER_RE = re.compile(r"-?[0-9]+")


def parse_max_keys(query: dict[str, str], name: str = "max-keys") -> tuple[int, str]:
    """(effective, as requested) page size: default MAX_PAGE (1000), capped at MAX_PAGE."""
    raw = query.get(name)
    if raw is None or raw == "":
        return MAX_PAGE, str(MAX_PAGE)
    # int() alone would take "1_000", " 5" or non-ASCII digits; S3 wants a plain 32-bit integer.
    if not _INTEGER_RE.fullmatch(raw) or int(raw) > MAX_INT32:
        raise S3Error("InvalidArgument", f"Provided {name} not an integer or within integer range",
                      ArgumentName=name, ArgumentValue=raw)
    value = int(raw)
    if value < 0:
        raise S3Error("InvalidArgument", f"Argument {name} must be an integer between 0 and 2147483647",
                      ArgumentName=name, ArgumentValue=raw)
    return min(value, MAX_PAGE), raw


def url_encoder(query: dict[str, str]):
    enc = query.get("encoding-type")
    if enc is not None and enc.lower() != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request",
                      ArgumentName="encoding-type", ArgumentValue=enc)
    if enc is None:
        return lambda s: s
    return lambda s: quote(s, safe="/")


def _entry_md(entry: dict[str, Any]) -> ObjectMD:
    """The listed version of a listing entry (its projected fields, or its stored text)."""
    value = entry["value"]
    return ObjectMD(value if isinstance(value, dict) else jsoncodec.loads(value))


def _owner_xml(owner_id: Any, display_name: Any) -> str:
    return f"<Owner><ID>{escape(_text(owner_id))}</ID><DisplayName>{escape(_text(display_name))}</DisplayName></Owner>"


class _Fragments:
    """The XML of the values a page repeats (the owner, the storage class), built once per page:
    a page of 1000 objects usually has one owner and one storage class."""

    __slots__ = ("owners", "classes")

    def __init__(self) -> None:
        self.owners: dict[tuple[Any, Any], str] = {}
        self.classes: dict[Any, str] = {}

    def owner(self, md: ObjectMD) -> str:
        ident = (md.owner_id, md.owner_display_name)
        try:
            xml = self.owners.get(ident)
        except TypeError:   # a stored value that is not a string (unhashable): not cached
            return _owner_xml(*ident)
        if xml is None:
            xml = self.owners[ident] = _owner_xml(*ident)
        return xml

    def storage_class(self, md: ObjectMD) -> str:
        value = md.storage_class
        try:
            xml = self.classes.get(value)
        except TypeError:
            return f"<StorageClass>{escape(_text(value))}</StorageClass>"
        if xml is None:
            xml = self.classes[value] = f"<StorageClass>{escape(_text(value))}</StorageClass>"
        return xml


def _content_xml(key: str, md: ObjectMD, enc, with_owner: bool, frags: _Fragments) -> str:
    """One <Contents> entry (LastModified, ETag and Size are written as they are: never escaped)."""
    checksum = md.checksum
    return (f"<Contents><Key>{escape(enc(key))}</Key><LastModified>{_text(md.last_modified)}</LastModified>"
            f"<ETag>\"{md.etag}\"</ETag><Size>{_text(md.size)}</Size>{frags.owner(md) if with_owner else ''}"
            f"{frags.storage_class(md)}"
            f"{'<ChecksumAlgorithm>' + escape(_text(checksum.get('checksumAlgorithm'))) + '</ChecksumAlgorithm>' if checksum else ''}"
            f"</Contents>")


def _version_xml(key: str, md: ObjectMD, is_latest: bool, enc, frags: _Fragments) -> str:
    """One <Version> or <DeleteMarker> entry (every leaf escaped, the ETag's quotes too)."""
    head = (f"<Key>{escape(_text(enc(key)))}</Key><VersionId>{escape(_text(external_version_id(md)))}</VersionId>"
            f"<IsLatest>{'true' if is_latest else 'false'}</IsLatest>"
            f"<LastModified>{escape(_text(md.last_modified))}</LastModified>")
    if md.is_delete_marker:
        return f"<DeleteMarker>{head}{frags.owner(md)}</DeleteMarker>"
    etag = f'"{md.etag}"'
    return (f"<Version>{head}<ETag>{escape(etag)}</ETag><Size>{_text(md.size)}</Size>"
            f"{frags.storage_class(md)}{frags.owner(md)}</Version>")


def _common_prefixes(w: XmlWriter, prefixes: list[str], enc) -> None:
    for cp in prefixes:
        w.open("CommonPrefixes")
        w.leaf("Prefix", enc(cp))
        w.close("CommonPrefixes")


async def _list_masters(ctx: RequestContext, v2: bool) -> Response:
    bucket = ctx.bucket_md
    q = ctx.query
    enc = url_encoder(q)
    max_keys, max_keys_raw = parse_max_keys(q)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    params: dict[str, Any] = {"prefix": prefix, "delimiter": delimiter, "maxKeys": max_keys, "v2": v2}
    token = None
    if v2:
        if q.get("list-type") != "2":
            raise S3Error("InvalidArgument", "Invalid List Type specified in Request",
                          ArgumentName="list-type", ArgumentValue=q.get("list-type", ""))
        if "continuation-token" in q:
            token = q["continuation-token"]
            try:
                params["continuationToken"] = base64.b64decode(token, validate=True).decode()
            except (ValueError, UnicodeDecodeError):   # binascii.Error; a non-ASCII token: ValueError
                raise S3Error("InvalidArgument", "The continuation token provided is incorrect",
                              ArgumentName="continuation-token") from None
        params["startAfter"] = q.get("start-after") or None
    else:
        params["marker"] = q.get("marker") or None
    if max_keys == 0:
        result: dict[str, Any] = {"Contents": [], "CommonPrefixes": [], "IsTruncated": False}
    else:
        result = await ctx.store.list_objects(bucket.name, DELIMITER_MASTER, params)
    w = XmlWriter("ListBucketResult")
    w.leaf("Name", bucket.name)
    # v1 gives the prefix back as sent, even with encoding-type=url (AWS does; botocore decodes
    # Delimiter, Marker, NextMarker, keys and common prefixes of a v1 listing, not Prefix).
    w.leaf("Prefix", enc(prefix) if v2 else prefix)
    if v2:
        if token is not None:
            w.leaf("ContinuationToken", token)
        if q.get("start-after"):
            w.leaf("StartAfter", enc(q["start-after"]))
        w.leaf("KeyCount", len(result["Contents"]) + len(result["CommonPrefixes"]))
    else:
        w.leaf("Marker", enc(q.get("marker", "")))
        if result.get("NextMarker"):
            w.leaf("NextMarker", enc(result["NextMarker"]))
    w.leaf("MaxKeys", max_keys_raw)
    if delimiter:
        w.leaf("Delimiter", enc(delimiter))
    w.leaf("IsTruncated", result["IsTruncated"])
    if v2 and result.get("NextContinuationToken"):
        w.leaf("NextContinuationToken", base64.b64encode(result["NextContinuationToken"].encode()).decode())
    if "encoding-type" in q:
        w.leaf("EncodingType", "url")
    with_owner = (not v2) or q.get("fetch-owner", "").lower() == "true"
    frags = _Fragments()
    w.raw("".join([_content_xml(entry["key"], _entry_md(entry), enc, with_owner, frags)
                   for entry in result["Contents"]]))
    _common_prefixes(w, result["CommonPrefixes"], enc)
    return Response(w.to_bytes(), media_type="application/xml")


@action("ListObjects")
async def list_objects(ctx: RequestContext) -> Response:
    return await _list_masters(ctx, v2=False)


@action("ListObjectsV2")
async def list_objects_v2(ctx: RequestContext) -> Response:
    return await _list_masters(ctx, v2=True)


@action("ListObjectVersions")
async def list_object_versions(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    q = ctx.query
    enc = url_encoder(q)
    max_keys, max_keys_raw = parse_max_keys(q)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter") or None
    key_marker = q.get("key-marker") or None
    vid_marker_raw = q.get("version-id-marker") or None
    if vid_marker_raw and not key_marker:
        raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.",
                      ArgumentName="version-id-marker", ArgumentValue=vid_marker_raw)
    vid_marker = None
    if vid_marker_raw == versionid.EXTERNAL_NULL:
        vid_marker = await _null_version_marker(ctx, bucket, key_marker or "")
    elif vid_marker_raw:
        vid_marker = decode_version_id(vid_marker_raw)
    if max_keys == 0:
        result: dict[str, Any] = {"Versions": [], "CommonPrefixes": [], "IsTruncated": False}
    else:
        result = await ctx.store.list_objects(bucket.name, DELIMITER_VERSIONS, {
            "prefix": prefix, "delimiter": delimiter, "maxKeys": max_keys, "keyMarker": key_marker,
            "versionIdMarker": vid_marker})
    w = XmlWriter("ListVersionsResult")
    w.leaf("Name", bucket.name)
    w.leaf("Prefix", enc(prefix))
    w.leaf("KeyMarker", enc(key_marker or ""))
    w.leaf("VersionIdMarker", vid_marker_raw or "")
    if result.get("NextKeyMarker") is not None:
        w.leaf("NextKeyMarker", enc(result["NextKeyMarker"]))
    if result.get("NextVersionIdMarker") is not None:
        w.leaf("NextVersionIdMarker", _next_version_id_marker(result))
    w.leaf("MaxKeys", max_keys_raw)
    if delimiter:
        w.leaf("Delimiter", enc(delimiter))
    w.leaf("IsTruncated", result["IsTruncated"])
    if "encoding-type" in q:
        w.leaf("EncodingType", "url")
    # A page that resumes inside a key's versions does not start with its latest.
    last_key = key_marker if vid_marker_raw else None
    frags = _Fragments()
    entries = []
    for entry in result["Versions"]:
        md = _entry_md(entry)
        is_latest = entry["key"] != last_key
        last_key = entry["key"]
        entries.append(_version_xml(entry["key"], md, is_latest, enc, frags))
    w.raw("".join(entries))
    _common_prefixes(w, result["CommonPrefixes"], enc)
    return Response(w.to_bytes(), media_type="application/xml")


def _next_version_id_marker(result: dict[str, Any]) -> str:
    """The external form of the page's last version id: "null" for a null version (whose internal id
    is real, e.g. the max-epoch id of a pre-versioning object), so the next page resumes through
    `_null_version_marker` exactly as ListObjectVersions shows that version."""
    nv = result["NextVersionIdMarker"]
    last = result["Versions"][-1] if result["Versions"] else None
    if last is not None and last["versionId"] == nv:
        return external_version_id(_entry_md(last))
    return nv if nv == versionid.EXTERNAL_NULL else versionid.encode(nv)


async def _null_version_marker(ctx: RequestContext, bucket: BucketMD, key: str) -> str | None:
    """The internal id behind version-id-marker=null (the reference's quirk, fixed)."""
    master = await ctx.store.get_object(bucket.name, key)
    if master is None:
        return None
    if master.is_null_or_unversioned:
        return null_version_id(master, ctx.store.replication_group_id)
    return master.null_version_id
