"""Listing algorithms run by the gateway over metadata read streams (docs/listing.md).

Use: `await list_entries(open_stream, DelimiterMaster(prefix=..., delimiter=..., max_keys=..., marker=...))`.
"""
from gateway.listing.common import (DEFAULT_MAX_KEYS, FILTER_ACCEPT, FILTER_END, FILTER_SKIP, NULL_VERSION_ID,
                                    VERSION_SEPARATOR, ListingAlgorithm, SkipHint, inc, is_delete_marker, is_phd)
from gateway.listing.delimiter import Delimiter, DelimiterMaster, common_prefix
from gateway.listing.driver import ListingStats, OpenStream, list_entries
from gateway.listing.mpu import MPU, MPU_OVERVIEW_PREFIX, MPU_SPLITTER, overview_key
from gateway.listing.versions import DelimiterVersions

__all__ = [
    "DEFAULT_MAX_KEYS", "FILTER_ACCEPT", "FILTER_END", "FILTER_SKIP", "NULL_VERSION_ID", "VERSION_SEPARATOR",
    "ListingAlgorithm", "SkipHint", "inc", "is_delete_marker", "is_phd", "Delimiter", "DelimiterMaster",
    "common_prefix", "ListingStats", "OpenStream", "list_entries", "MPU", "MPU_OVERVIEW_PREFIX", "MPU_SPLITTER",
    "overview_key", "DelimiterVersions",
]
