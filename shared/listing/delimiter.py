"""Delimiter and DelimiterMaster (docs/listing.md#delimiter, #delimitermaster): ListObjects v1/v2 pages over a bucket's keys.

Delimiter lists every key of a sublevel (used as is for the MPU shadow bucket and the users bucket);
DelimiterMaster lists only current versions of a v0 versioned bucket: master keys, with delete-marker
masters hidden and placeholder (PHD) masters replaced by the newest version that follows them.
"""
from __future__ import annotations

from typing import Any

from shared.listing.common import (FILTER_ACCEPT, FILTER_END, FILTER_SKIP, VERSION_SEPARATOR, Entry,
                                    ListingAlgorithm, SkipHint, after_versions, inc, is_delete_marker, is_phd,
                                    resolve_max_keys)

# Skipped versions of one key read before the driver reopens the stream past them: most keys have
# few versions, and a reopen costs a metadata round trip, so only long version runs are jumped.
VERSION_SKIP_AFTER = 100


def common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    """`key` up to and including the first `delimiter` found at or after len(prefix), or None."""
    if not delimiter:
        return None
    index = key.find(delimiter, len(prefix))
    if index == -1:
        return None
    return key[:index + len(delimiter)]


def folder_range(prefix: str, delimiter: str | None, marker: str | None) -> dict[str, str] | None:
    """The prefix bounds, raised past the "folder" holding `marker` (docs/listing.md#delimiter, range steps 1-2); None if empty.

    A marker inside a folder (it has a common prefix) skips the whole folder: that folder was
    already returned as one CommonPrefixes entry.
    """
    params: dict[str, str] = {}
    if prefix:
        params["gte"] = prefix
        upper = inc(prefix)
        if upper is not None:
            params["lt"] = upper
    if marker and delimiter:
        folder = common_prefix(marker, prefix, delimiter)
        if folder is not None:
            past_folder = inc(folder)
            if past_folder is None:
                return None
            if "gte" not in params or past_folder > params["gte"]:
                params["gte"] = past_folder
    return params


def marker_is_lower_bound(params: dict[str, str], marker: str | None) -> bool:
    """True when the marker, not the prefix or folder bound, is where the range starts (docs/listing.md#delimiter, range step 3)."""
    if not marker:
        return False
    return "gte" not in params or marker >= params["gte"]


def key_range(prefix: str, delimiter: str | None, marker: str | None) -> dict[str, str] | None:
    """The stream range of a prefix + marker listing (docs/listing.md#delimiter, "Range"); None when it is empty."""
    params = folder_range(prefix, delimiter, marker)
    if params is not None and marker and marker_is_lower_bound(params, marker):
        params.pop("gte", None)
        params["gt"] = marker
    return params


class Delimiter(ListingAlgorithm):
    """Every key of the range, folded into CommonPrefixes by `delimiter` (S3 ListObjects semantics).

    v1 pages continue from `marker`; v2 from `continuation_token`, else `start_after` (both already
    decoded by the gateway).
    """

    def __init__(self, *, prefix: str | None = None, delimiter: str | None = None, max_keys: int | None = None,
                 marker: str | None = None, v2: bool = False, continuation_token: str | None = None,
                 start_after: str | None = None) -> None:
        self.prefix = prefix or ""
        self.delimiter = delimiter or None
        self.max_keys = resolve_max_keys(max_keys)
        self.v2 = v2
        self.marker = (continuation_token or start_after or None) if v2 else (marker or None)
        self.common_prefixes: list[str] = []
        self.contents: list[Entry] = []
        self.is_truncated = False
        self.next_marker: str | None = None
        self.keys = 0
        self._skipping_prefix: str | None = None

    def gen_params(self) -> dict[str, str] | None:
        return key_range(self.prefix, self.delimiter, self.marker)

    def filter(self, entry: Entry) -> int:
        key = entry["key"]
        if self._skipping_prefix is not None:
            if key.startswith(self._skipping_prefix):
                return FILTER_SKIP
            self._skipping_prefix = None
        return self._on_key(key, entry["value"])

    def skip_hint(self) -> SkipHint | None:
        if self._skipping_prefix is not None:
            return SkipHint(inc(self._skipping_prefix))
        return None

    def _reached_max_keys(self) -> bool:
        # Called only with an eligible entry in hand: that entry is the look-ahead proving truncation.
        if self.keys >= self.max_keys:
            self.is_truncated = self.max_keys > 0
            return True
        return False

    def _on_key(self, key: str, value: str) -> int:
        if self._reached_max_keys():
            return FILTER_END
        self._add(key, value)
        return FILTER_ACCEPT

    def _add(self, key: str, value: str) -> str | None:
        """Adds the key or its common prefix; returns the common prefix when one was added."""
        folder = common_prefix(key, self.prefix, self.delimiter)
        if folder is not None:
            self.common_prefixes.append(folder)
            self.next_marker = folder
            self._skipping_prefix = folder
        else:
            self.contents.append({"key": key, "value": value})
            self.next_marker = key
        self.keys += 1
        return folder

    def result(self) -> dict[str, Any]:
        res: dict[str, Any] = {"CommonPrefixes": self.common_prefixes, "Contents": self.contents,
                               "IsTruncated": self.is_truncated, "Delimiter": self.delimiter}
        if self.v2:
            if self.is_truncated:
                res["NextContinuationToken"] = self.next_marker
        elif self.is_truncated and self.delimiter:
            # v1 clients without a delimiter continue from the last key themselves (S3 behaviour).
            res["NextMarker"] = self.next_marker
        return res


class DelimiterMaster(Delimiter):
    """Current versions of a v0 versioned bucket (master key first, then `key\\0<vid>` versions).

    States besides Delimiter's SkippingPrefix: skipping the versions of a master already handled,
    and waiting for the version that replaces a PHD master.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # The marker's own versions follow it in the range (gt = marker): skip them.
        self._skipping_versions_of: str | None = self.marker
        self._phd_key: str | None = None

    def filter(self, entry: Entry) -> int:
        key, value = entry["key"], entry["value"]
        if self._skipping_prefix is not None:
            if key.startswith(self._skipping_prefix):
                return FILTER_SKIP
            self._skipping_prefix = None
        elif self._skipping_versions_of is not None:
            if VERSION_SEPARATOR in key:
                return FILTER_SKIP
            self._skipping_versions_of = None
        elif self._phd_key is not None:
            phd_key, self._phd_key = self._phd_key, None
            base, sep, _ = key.partition(VERSION_SEPARATOR)
            if sep and base == phd_key:
                # The newest version of a PHD master is its current version (docs/versioning.md#placeholders-and-repair).
                return self._on_master(phd_key, value)
        return self._on_master(key, value)

    def skip_hint(self) -> SkipHint | None:
        if self._skipping_prefix is not None:
            return SkipHint(inc(self._skipping_prefix))
        if self._skipping_versions_of is not None:
            return SkipHint(after_versions(self._skipping_versions_of), VERSION_SKIP_AFTER)
        return None

    def _on_master(self, key: str, value: str) -> int:
        base, sep, _ = key.partition(VERSION_SEPARATOR)
        if sep:
            # A version without its master (e.g. the master was removed by a plain delete): the
            # object has no current version. Current Arsenal would list "key\0vid" as an object; we never do.
            self._skipping_versions_of = base
            return FILTER_SKIP
        if "true" in value:   # both flags need the literal (most values have none: one scan, not two)
            if is_delete_marker(value):
                self._skipping_versions_of = key
                return FILTER_ACCEPT
            if is_phd(value):
                self._phd_key = key
                return FILTER_ACCEPT
        if self._reached_max_keys():
            return FILTER_END
        if self._add(key, value) is None:
            self._skipping_versions_of = key
        return FILTER_ACCEPT
