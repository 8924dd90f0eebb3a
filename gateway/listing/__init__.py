"""Listing algorithms run by the gateway over metadata read streams (docs/listing.md).

Use: `await list_entries(ctx.store.object_stream(bucket), DelimiterMaster(prefix=..., delimiter=..., max_keys=...,
marker=...))`; ListMultipartUploads runs MPU over `ctx.store.upload_stream(bucket)`.
"""
from gateway.listing.common import (DEFAULT_MAX_KEYS, FILTER_ACCEPT, FILTER_END, FILTER_SKIP, NULL_VERSION_ID,
                                    VERSION_SEPARATOR, ListingAlgorithm, SkipHint, inc, is_delete_marker, is_phd)
from gateway.listing.delimiter import Delimiter, DelimiterMaster, common_prefix
from gateway.listing.driver import ListingStats, OpenStream, list_entries
from gateway.listing.mpu import MPU
from gateway.listing.versions import DelimiterVersions
# The key of an upload's overview record, which MPU lists (and its markers name): the store owns it.
from gateway.store import overview_key

__all__ = [
    "DEFAULT_MAX_KEYS", "FILTER_ACCEPT", "FILTER_END", "FILTER_SKIP", "NULL_VERSION_ID", "VERSION_SEPARATOR",
    "ListingAlgorithm", "SkipHint", "inc", "is_delete_marker", "is_phd", "Delimiter", "DelimiterMaster",
    "common_prefix", "ListingStats", "OpenStream", "list_entries", "MPU", "overview_key", "DelimiterVersions",
]
