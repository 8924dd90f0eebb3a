"""DelimiterVersions (docs/listing.md#delimiterversions): ListObjectVersions pages over a v0 versioned bucket.

Each object appears as its master (version id from the value, "null" when it has none) followed by
its version keys `key\\0<vid>` in id order (newest first); the version key that duplicates the master
is not listed twice, and PHD masters are ignored. The null-key branches of current Arsenal (2023+) are
not implemented: this project stores null versions in ordinary version keys (classic model,
docs/versioning.md#null-versions).
"""
from __future__ import annotations

from typing import Any

from shared.listing.common import (FILTER_ACCEPT, FILTER_END, FILTER_SKIP, NULL_VERSION_ID, VERSION_SEPARATOR, Entry,
                                    ListingAlgorithm, SkipHint, after_versions, inc, is_phd, resolve_max_keys,
                                    version_id_of)
from shared.listing.delimiter import common_prefix, folder_range, marker_is_lower_bound


class DelimiterVersions(ListingAlgorithm):
    """All versions (and delete markers) of the range, folded into CommonPrefixes by `delimiter`.

    Pages continue from (`key_marker`, `version_id_marker`); the version id marker is the internal
    id (the gateway decodes the external form first).
    """

    def __init__(self, *, prefix: str | None = None, delimiter: str | None = None, max_keys: int | None = None,
                 key_marker: str | None = None, version_id_marker: str | None = None) -> None:
        self.prefix = prefix or ""
        self.delimiter = delimiter or None
        self.max_keys = resolve_max_keys(max_keys)
        self.key_marker = key_marker or None
        self.version_id_marker = (version_id_marker or None) if self.key_marker else None
        self.common_prefixes: list[str] = []
        self.versions: list[dict[str, str]] = []
        self.is_truncated = False
        self.next_key_marker: str | None = None
        self.next_version_id_marker: str | None = None
        self.keys = 0
        self._skipping_prefix: str | None = None
        self._skipping_to_marker = self.version_id_marker is not None
        self._master_key: str | None = None
        self._master_version_id: str | None = None

    def gen_params(self) -> dict[str, str] | None:
        params = folder_range(self.prefix, self.delimiter, self.key_marker)
        if params is None or not self.key_marker:
            return params
        if marker_is_lower_bound(params, self.key_marker):
            if self.version_id_marker is not None:
                # Start at the marker version itself (current Arsenal starts at `key\0` to see a null key, which
                # this project does not have); filter() drops it and anything older.
                params["gte"] = self.key_marker + VERSION_SEPARATOR + self.version_id_marker
            else:
                # gte, not current Arsenal's gt: `key_marker + "\x01"` is itself a valid key and must be listed.
                params["gte"] = after_versions(self.key_marker)
        return params

    def filter(self, entry: Entry) -> int:
        key, value = entry["key"], entry["value"]
        base, sep, version_id = key.partition(VERSION_SEPARATOR)
        vid: str | None = None
        if sep:
            # An empty id would be a 2023+ null key; the classic model never writes one.
            vid = version_id or version_id_of(value) or NULL_VERSION_ID
        if self._skipping_prefix is not None:
            if key.startswith(self._skipping_prefix):
                return FILTER_SKIP
            self._skipping_prefix = None
        if self._skipping_to_marker:
            if base == self.key_marker and vid is not None and self.version_id_marker is not None:
                if vid < self.version_id_marker:
                    return FILTER_SKIP
                if vid == self.version_id_marker:
                    # Returned on the previous page.
                    return FILTER_ACCEPT
            self._skipping_to_marker = False
        return self._on_key(base, vid, value)

    def skip_hint(self) -> SkipHint | None:
        if self._skipping_prefix is not None:
            return SkipHint(inc(self._skipping_prefix))
        return None

    def _on_key(self, base: str, vid: str | None, value: str) -> int:
        if is_phd(value):
            return FILTER_ACCEPT
        if vid is None:
            vid = version_id_of(value) or NULL_VERSION_ID
            is_master = True
        else:
            if base == self._master_key and vid == self._master_version_id:
                return FILTER_ACCEPT
            is_master = False
        # Checked after the duplicate test so that a lone duplicate never marks the page truncated.
        if self.keys >= self.max_keys:
            self.is_truncated = self.max_keys > 0
            return FILTER_END
        if is_master:
            self._master_key, self._master_version_id = base, vid
        folder = common_prefix(base, self.prefix, self.delimiter)
        if folder is not None:
            self.common_prefixes.append(folder)
            self.next_key_marker, self.next_version_id_marker = folder, None
            self._skipping_prefix = folder
        else:
            self.versions.append({"key": base, "versionId": vid, "value": value})
            self.next_key_marker, self.next_version_id_marker = base, vid
        self.keys += 1
        return FILTER_ACCEPT

    def result(self) -> dict[str, Any]:
        res: dict[str, Any] = {"CommonPrefixes": self.common_prefixes, "Versions": self.versions,
                               "IsTruncated": self.is_truncated}
        if self.delimiter:
            res["Delimiter"] = self.delimiter
        if self.is_truncated:
            res["NextKeyMarker"] = self.next_key_marker
            if self.next_version_id_marker is not None:
                res["NextVersionIdMarker"] = self.next_version_id_marker
        return res
