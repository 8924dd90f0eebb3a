"""Listing algorithms (docs/listing.md), shared by the dmd (the `listObject` call, over its engine), the
gateway's in-process engine (S3BACKEND=mem), PostgreSQL and, against a dmd without that call, the
gateway's read-stream path.

Use: `await list_page(open_stream, "DelimiterMaster", {"prefix": ..., "delimiter": ..., "maxKeys": ...})`
or, with an algorithm object, `await list_entries(open_stream, DelimiterMaster(prefix=..., max_keys=...))`.
"""
from shared.listing.common import (DEFAULT_MAX_KEYS, FILTER_ACCEPT, FILTER_END, FILTER_SKIP, MAX_PAGE,
                                   NULL_VERSION_ID, VERSION_SEPARATOR, ListingAlgorithm, SkipHint, inc,
                                   is_delete_marker, is_phd)
from shared.listing.delimiter import Delimiter, DelimiterMaster, common_prefix
from shared.listing.driver import ListingStats, OpenStream, list_entries
from shared.listing.mpu import MPU, MPU_OVERVIEW_PREFIX, SPLITTER, overview_key
from shared.listing.page import (DELIMITER, DELIMITER_MASTER, DELIMITER_VERSIONS, LISTING_MPU, LISTING_TYPES,
                                 OBJECT_LISTING_FIELDS, UPLOAD_LISTING_FIELDS, encode_page, list_page, make_algorithm,
                                 project_entries, project_value)
from shared.listing.versions import DelimiterVersions

__all__ = [
    "DEFAULT_MAX_KEYS", "FILTER_ACCEPT", "FILTER_END", "FILTER_SKIP", "MAX_PAGE", "NULL_VERSION_ID",
    "VERSION_SEPARATOR", "ListingAlgorithm", "SkipHint", "inc", "is_delete_marker", "is_phd", "Delimiter",
    "DelimiterMaster", "common_prefix", "ListingStats", "OpenStream", "list_entries", "MPU",
    "MPU_OVERVIEW_PREFIX", "SPLITTER", "overview_key", "DelimiterVersions", "DELIMITER", "DELIMITER_MASTER",
    "DELIMITER_VERSIONS", "LISTING_MPU", "LISTING_TYPES", "OBJECT_LISTING_FIELDS", "UPLOAD_LISTING_FIELDS",
    "encode_page", "list_page", "make_algorithm", "project_entries", "project_value",
]
