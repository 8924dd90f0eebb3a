"""Pieces every listing algorithm shares: filter codes, key-range helpers, value predicates, the base class.

Key order is the metadata store's order: UTF-8 bytes. For valid Unicode text (no lone surrogates)
Python's `str` comparison (code points) is the same order, so bounds are kept as `str` and compared
with `<` directly; only `inc()` has to know about the gap the surrogate range leaves in UTF-8.
"""
from __future__ import annotations


from typing import Any, NamedTuple

from shared import jsoncodec, versionid
from shared.versionid import VERSIONS_END

# filter() return codes (Arsenal `constants`).
FILTER_ACCEPT = 1
FILTER_SKIP = 0
FILTER_END = -1

# AWS's page size of a listing (also ListParts and DeleteObjects): the default and the cap. Owned here
# because the dmd runs the listings too (it must not import gateway/); gateway/limits.py re-exports it.
MAX_PAGE = 1000
# S3 page size used when the caller gives none (the gateway also caps requests at this value).
DEFAULT_MAX_KEYS = MAX_PAGE

# Version key = master key + VERSION_SEPARATOR + versionId (docs/metadata-keys.md#object-keys); key + VERSIONS_END
# (shared/versionid.py) is the smallest string after every version key of key.
VERSION_SEPARATOR = versionid.SEPARATOR
# Version id listed for a master written without versioning.
NULL_VERSION_ID = versionid.EXTERNAL_NULL

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES_FIRST = 0xD800
_SURROGATES_LAST = 0xDFFF

Entry = dict[str, str]


def inc(s: str) -> str | None:
    """The smallest string greater than every string that starts with `s`, in UTF-8 byte order.

    Trailing U+10FFFF characters cannot be incremented, so they are dropped and the character before
    them is incremented instead; U+D7FF steps over the surrogates (not encodable) to U+E000.
    Returns None when no such string exists (`s` is empty or only U+10FFFF): the range is unbounded.
    """
    end = len(s)
    while end > 0 and ord(s[end - 1]) == _MAX_CODE_POINT:
        end -= 1
    if end == 0:
        return None
    code = ord(s[end - 1]) + 1
    if _SURROGATES_FIRST <= code <= _SURROGATES_LAST:
        code = _SURROGATES_LAST + 1
    return s[:end - 1] + chr(code)


def after_versions(key: str) -> str:
    """Lower bound (gte) just past `key` and all its version keys `key\\0<vid>`."""
    return key + VERSIONS_END


def _json_flag(value: str, field: str) -> bool:
    # Stored objects carry "isDeleteMarker": null and "isPHD": false: testing for the name alone
    # would parse nearly every value.
    if not jsoncodec.may_hold_true(value, field):
        return False
    try:
        parsed = jsoncodec.loads(value)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get(field) is True


def is_delete_marker(value: str) -> bool:
    return _json_flag(value, "isDeleteMarker")


def is_phd(value: str) -> bool:
    """A placeholder master left by a version-specific delete (docs/versioning.md#placeholders-and-repair)."""
    return _json_flag(value, "isPHD")


def version_id_of(value: str) -> str | None:
    """The `versionId` field of a stored value, None if absent or the value is not a JSON object."""
    if "versionId" not in value:
        return None
    try:
        parsed = jsoncodec.loads(value)
    except ValueError:
        return None
    vid = parsed.get("versionId") if isinstance(parsed, dict) else None
    return vid if isinstance(vid, str) and vid else None


class SkipHint(NamedTuple):
    """Where the driver may jump instead of reading entries the algorithm would only skip.

    gte: the new lower bound (None: nothing after, the listing can stop).
    after: how many more skipped entries to read before jumping; 0 jumps at once. Reopening a
    stream costs a round trip, so for runs that are usually short (versions of one key) the
    algorithm asks to read a few first.
    (A named tuple: the driver asks for it after every entry, a frozen dataclass costs ~1 us to build.)
    """
    gte: str | None
    after: int = 0


class ListingAlgorithm:
    """Base of the filter-style listings: gen_params() -> range, filter(entry) per entry, result()."""

    max_keys: int

    def gen_params(self) -> dict[str, str]:
        raise NotImplementedError

    def filter(self, entry: Entry) -> int:
        raise NotImplementedError

    def skip_hint(self) -> SkipHint | None:
        """Asked by the driver after each filter(); None while the algorithm wants every entry."""
        return None

    def result(self) -> dict[str, Any]:
        raise NotImplementedError


def resolve_max_keys(max_keys: int | None) -> int:
    """None -> DEFAULT_MAX_KEYS; 0 or negative stay as they are (empty, untruncated page)."""
    return DEFAULT_MAX_KEYS if max_keys is None else max_keys
