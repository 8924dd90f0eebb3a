"""One listing page by name: the `listObject` call of the dmd (docs/protocol.md#listobject) and its
in-process twins (S3BACKEND=mem, PostgreSQL), all through `list_page`.

`listing_type` names the algorithm (Arsenal's bucketd `listingType`): Delimiter, DelimiterMaster,
DelimiterVersions or MPU; `params` are that algorithm's parameters under their wire (camelCase)
names. The page's listed values are projected (`project_entries`): only the stored fields the
listing handlers and the algorithms read, under their stored names, so `ObjectMD(value)` /
`UploadMD(value)` over a projection reads exactly what it would over the full document, while the
locations, user metadata, ACLs and tags of the listed objects stay where they are.
"""
from __future__ import annotations

from typing import Any

import msgspec

from shared.listing.common import ListingAlgorithm
from shared.listing.delimiter import Delimiter, DelimiterMaster
from shared.listing.driver import ListingStats, OpenStream, list_entries
from shared.listing.mpu import MPU
from shared.listing.versions import DelimiterVersions
from shared.metastore.errors import invalid_argument

DELIMITER = "Delimiter"
DELIMITER_MASTER = "DelimiterMaster"
DELIMITER_VERSIONS = "DelimiterVersions"
LISTING_MPU = "MPU"
LISTING_TYPES = (DELIMITER, DELIMITER_MASTER, DELIMITER_VERSIONS, LISTING_MPU)
# The params object's listing type field (the other fields are the algorithm's).
LISTING_TYPE_PARAM = "listingType"

# Wire name -> (algorithm keyword, expected type) per listing type.
_STR, _INT, _BOOL = str, int, bool
_MARKERS = {"prefix": ("prefix", _STR), "delimiter": ("delimiter", _STR), "maxKeys": ("max_keys", _INT)}
_PARAMS: dict[str, dict[str, tuple[str, type]]] = {
    DELIMITER: {**_MARKERS, "marker": ("marker", _STR), "v2": ("v2", _BOOL),
                "continuationToken": ("continuation_token", _STR), "startAfter": ("start_after", _STR)},
    DELIMITER_VERSIONS: {**_MARKERS, "keyMarker": ("key_marker", _STR),
                         "versionIdMarker": ("version_id_marker", _STR)},
    LISTING_MPU: {**_MARKERS, "keyMarker": ("key_marker", _STR), "uploadIdMarker": ("upload_id_marker", _STR)},
}
_PARAMS[DELIMITER_MASTER] = _PARAMS[DELIMITER]
_ALGORITHMS: dict[str, type[ListingAlgorithm]] = {
    DELIMITER: Delimiter, DELIMITER_MASTER: DelimiterMaster, DELIMITER_VERSIONS: DelimiterVersions, LISTING_MPU: MPU,
}

# The stored fields a listed object shows (gateway/api/listing.py: Contents, Version, DeleteMarker; the
# version id and IsNull rules of gateway/versioning.external_version_id) and those the algorithms test.
OBJECT_LISTING_FIELDS = ("versionId", "isNull", "isDeleteMarker", "isPHD", "content-length", "content-md5",
                         "last-modified", "x-amz-storage-class", "owner-id", "owner-display-name", "checksum")
# The stored fields a listed upload shows (gateway/api/multipart.py, ListMultipartUploads).
UPLOAD_LISTING_FIELDS = ("initiated", "owner-id", "owner-display-name", "initiator", "x-amz-storage-class",
                         "checksumAlgorithm", "checksumType")
# Where each listing type's entries are in its result, and which fields they keep.
_ENTRIES = {DELIMITER: ("Contents", OBJECT_LISTING_FIELDS), DELIMITER_MASTER: ("Contents", OBJECT_LISTING_FIELDS),
            DELIMITER_VERSIONS: ("Versions", OBJECT_LISTING_FIELDS), LISTING_MPU: ("Uploads", UPLOAD_LISTING_FIELDS)}


def listing_fields(listing_type: str) -> tuple[str, ...]:
    return _ENTRIES[listing_type][1]


def make_algorithm(listing_type: Any, params: Any) -> ListingAlgorithm:
    """The algorithm `listing_type` over `params` (wire names); InvalidArgument naming the problem."""
    if not isinstance(listing_type, str) or listing_type not in _ALGORITHMS:
        raise invalid_argument(f"listingType must be one of {', '.join(LISTING_TYPES)}, got {str(listing_type)[:100]}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise invalid_argument("listing params must be an object")
    known = _PARAMS[listing_type]
    kwargs: dict[str, Any] = {}
    for name, value in params.items():
        if name == LISTING_TYPE_PARAM:
            continue
        spec = known.get(name)
        if spec is None:
            raise invalid_argument(f"{listing_type}: unknown listing parameter {str(name)[:100]}")
        keyword, kind = spec
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is _INT and isinstance(value, bool)):
            raise invalid_argument(f"{listing_type}: {name} must be a {kind.__name__}")
        kwargs[keyword] = value
    return _ALGORITHMS[listing_type](**kwargs)


def _projection_decoder(name: str, fields: tuple[str, ...]) -> msgspec.json.Decoder:
    """A decoder of stored values that keeps only `fields` (each any JSON value, unset when absent).
    It skips the rest of the document without building it, where a full parse builds every nested
    ACL, tag and location object only to drop them (2.5x faster than orjson.loads + a dict
    comprehension on a 1 KiB object); encoded, a struct is the JSON object of its present fields in
    `fields` order, the same text the projected dict gives."""
    struct = msgspec.defstruct(name, [(f"f{i}", Any, msgspec.field(default=msgspec.UNSET, name=field))
                                      for i, field in enumerate(fields)], kw_only=True, omit_defaults=True)
    return msgspec.json.Decoder(struct)


_DECODERS = {OBJECT_LISTING_FIELDS: _projection_decoder("ObjectListingFields", OBJECT_LISTING_FIELDS),
             UPLOAD_LISTING_FIELDS: _projection_decoder("UploadListingFields", UPLOAD_LISTING_FIELDS)}
_ENCODER = msgspec.json.Encoder()


def _decoder(fields: tuple[str, ...]) -> msgspec.json.Decoder:
    decoder = _DECODERS.get(fields)
    if decoder is None:
        decoder = _DECODERS[fields] = _projection_decoder("ListingFields", fields)
    return decoder


def _project(value: Any, decoder: msgspec.json.Decoder) -> Any:
    """The listing fields of a stored value (JSON text) as a struct; a value that is not a JSON
    object is passed on unchanged (the handler then fails on it exactly as on the full value)."""
    if not isinstance(value, str):
        return value
    try:
        return decoder.decode(value)
    except msgspec.DecodeError:   # malformed, or not an object
        return value


def project_value(value: Any, fields: tuple[str, ...]) -> Any:
    """The listing fields of a stored value (JSON text) as a dict (the stored names, in `fields`
    order); a value that is not a JSON object is passed on unchanged."""
    projected = _project(value, _decoder(fields))
    return msgspec.to_builtins(projected) if isinstance(projected, msgspec.Struct) else projected


def project_entries(listing_type: str, result: dict[str, Any]) -> dict[str, Any]:
    """`result` with each listed entry's value projected to the listing fields (in place)."""
    name, fields = _ENTRIES[listing_type]
    for entry in result.get(name) or ():
        entry["value"] = project_value(entry["value"], fields)
    return result


def encode_page(listing_type: str, result: dict[str, Any]) -> str:
    """The page (values as stored text) as one JSON text with each listed value projected: what
    `jsoncodec.dumps(project_entries(listing_type, result))` gives, without building the dicts."""
    name, fields = _ENTRIES[listing_type]
    decoder = _decoder(fields)
    for entry in result.get(name) or ():
        entry["value"] = _project(entry["value"], decoder)
    return _ENCODER.encode(result).decode()


async def list_page(open_stream: OpenStream, listing_type: Any, params: Any, *, project: bool = True,
                    stats: ListingStats | None = None, max_skip_run: int | None = None,
                    yield_every: int | None = None) -> dict[str, Any]:
    """One page of `listing_type` over `open_stream` (the sublevel's read streams), values projected
    unless `project` is false (then they are the stored text)."""
    algorithm = make_algorithm(listing_type, params)
    result = await list_entries(open_stream, algorithm, stats, max_skip_run=max_skip_run, yield_every=yield_every)
    return project_entries(listing_type, result) if project else result
