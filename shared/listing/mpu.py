"""MPU (docs/listing.md#mpu): ListMultipartUploads over a bucket's MPU shadow bucket.

The shadow bucket holds one overview key per upload, `overview..|..<objectKey>..|..<uploadId>`, next to
the part keys `<uploadId>..|..<NNNNN>`; only the overview keys are read. Uploads come out in overview
key order, as in the reference. That differs from object-key order where a key continues with a
character below "." right after a shorter key, and it can interleave another key's uploads into a
"folder" whose name ends in splitter characters (object "a" -> "overview..|..a..|..<id>" sorts inside
folder "a." with delimiter "."). Folders are therefore tracked by object key, and the stream only jumps
past a folder when no such interleaving is possible. For the same reason a page that ends on a folder
gives the folder's first upload as (NextKeyMarker, NextUploadIdMarker), an exact position in overview
order, rather than the folder name; S3 only asks that clients send NextKeyMarker back. Uploads are
never lost or repeated across pages; in the interleaved case only, a folder seen on an earlier page
can be reported again on a later one (the reference has the same limit).
"""
from __future__ import annotations

from typing import Any

from shared.listing.common import (DEFAULT_MAX_KEYS, FILTER_ACCEPT, FILTER_END, FILTER_SKIP, Entry, ListingAlgorithm,
                                    SkipHint, inc, resolve_max_keys)
from shared.listing.delimiter import common_prefix

# The MPU shadow bucket's key layout (docs/metadata-keys.md#mpu-shadow-bucket), owned here because the
# dmd walks it too; gateway/store.py imports it.
SPLITTER = "..|.."
MPU_SPLITTER = SPLITTER
MPU_OVERVIEW_PREFIX = "overview" + SPLITTER


def overview_key(object_key: str, upload_id: str) -> str:
    """The key of an upload's overview record, which MPU lists (and its markers name)."""
    return MPU_OVERVIEW_PREFIX + object_key + SPLITTER + upload_id


def _folder_is_contiguous(folder_tail: str) -> bool:
    """True when only uploads of keys under the folder have overview keys starting with it.

    An upload of a shorter key k shares that overview prefix when folder = k + r with r a non-empty
    prefix of `..|..<uploadId>`; `folder_tail` is the folder past the listing prefix (k has it too).
    """
    if MPU_SPLITTER in folder_tail:
        return False
    return not any(MPU_SPLITTER.startswith(folder_tail[-n:]) for n in range(1, len(MPU_SPLITTER) + 1)
                   if n <= len(folder_tail))


class MPU(ListingAlgorithm):
    """In-progress uploads whose object key starts with `prefix`, folded by `delimiter`.

    Each upload is returned as {"key", "uploadId", "value"} where value is the stored overview JSON
    string (docs/metadata-keys.md#mpu-overview), parsed by the gateway.
    """

    def __init__(self, *, prefix: str | None = None, delimiter: str | None = None, max_keys: int | None = None,
                 key_marker: str | None = None, upload_id_marker: str | None = None) -> None:
        self.prefix = prefix or ""
        self.delimiter = delimiter or None
        self.max_keys = min(resolve_max_keys(max_keys), DEFAULT_MAX_KEYS)
        self.key_marker = key_marker or None
        # S3 ignores upload-id-marker without key-marker.
        self.upload_id_marker = (upload_id_marker or "") if self.key_marker else ""
        self.common_prefixes: list[str] = []
        self.uploads: list[dict[str, str]] = []
        self.is_truncated = False
        self.next_key_marker: str | None = None
        self.next_upload_id_marker: str | None = None
        self.keys = 0
        self._skipping_prefix: str | None = None
        # Folders already returned (this page, or the marker's folder on the previous one): a folder
        # that is not contiguous in overview order can show up again after other uploads.
        self._folders_done: set[str] = set()
        marker_folder = common_prefix(self.key_marker, self.prefix, self.delimiter) if self.key_marker else None
        if marker_folder is not None:
            self._folders_done.add(marker_folder)

    def gen_params(self) -> dict[str, str] | None:
        range_prefix = MPU_OVERVIEW_PREFIX + self.prefix
        lower = range_prefix
        upper = inc(range_prefix)
        assert upper is not None  # the range prefix starts with "overview"
        if self.key_marker:
            # Past the marker upload (or all uploads of key_marker when no upload id is given).
            candidates = [inc(overview_key(self.key_marker, self.upload_id_marker))]
            folder = common_prefix(self.key_marker, self.prefix, self.delimiter)
            if folder is not None and _folder_is_contiguous(folder[len(self.prefix):]):
                # A marker inside a folder (e.g. a NextKeyMarker that is a common prefix) skips the folder.
                candidates.append(inc(MPU_OVERVIEW_PREFIX + folder))
            lower = max([lower] + [c for c in candidates if c is not None])
        if lower >= upper:
            return None
        return {"gte": lower, "lt": upper}

    def filter(self, entry: Entry) -> int:
        key = entry["key"]
        if not key.startswith(MPU_OVERVIEW_PREFIX):
            return FILTER_SKIP
        # Upload ids never contain the splitter; object keys may.
        object_key, splitter, upload_id = key[len(MPU_OVERVIEW_PREFIX):].rpartition(MPU_SPLITTER)
        if not splitter:
            return FILTER_SKIP
        if self._skipping_prefix is not None:
            if object_key.startswith(self._skipping_prefix):
                return FILTER_SKIP
            self._skipping_prefix = None
        folder = common_prefix(object_key, self.prefix, self.delimiter)
        if folder is not None and folder in self._folders_done:
            self._skipping_prefix = folder
            return FILTER_SKIP
        if self.keys >= self.max_keys:
            self.is_truncated = self.max_keys > 0
            return FILTER_END
        if folder is not None:
            self.common_prefixes.append(folder)
            self._folders_done.add(folder)
            # The first upload of the folder: resuming after it cannot re-list an interleaved upload.
            self.next_key_marker, self.next_upload_id_marker = object_key, upload_id
            self._skipping_prefix = folder
        else:
            self.uploads.append({"key": object_key, "uploadId": upload_id, "value": entry["value"]})
            self.next_key_marker, self.next_upload_id_marker = object_key, upload_id
        self.keys += 1
        return FILTER_ACCEPT

    def skip_hint(self) -> SkipHint | None:
        if self._skipping_prefix is not None and _folder_is_contiguous(self._skipping_prefix[len(self.prefix):]):
            return SkipHint(inc(MPU_OVERVIEW_PREFIX + self._skipping_prefix))
        return None

    def result(self) -> dict[str, Any]:
        return {"CommonPrefixes": self.common_prefixes, "Uploads": self.uploads, "IsTruncated": self.is_truncated,
                "NextKeyMarker": self.next_key_marker, "NextUploadIdMarker": self.next_upload_id_marker,
                "MaxKeys": self.max_keys, "Delimiter": self.delimiter}
