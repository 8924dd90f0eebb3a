"""The physical key space: level-sublevel key codec and levelup range options.

A logical location (sublevel path, key) is stored under the physical key
`"!" + "#".join(path) + "!" + key` in UTF-8 (docs/metadata-keys.md#physical-keys), the layout of
the original dmd's LevelDB, so `rawListKeys` output matches it. This module
turns sublevel paths, keys and levelup read-stream options into bytes and
bounds, rejecting malformed input with InvalidArgument.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.metastore.errors import invalid_argument

SUBLEVEL_MARK = "!"      # opens and closes the sublevel path in a physical key
SUBLEVEL_JOIN = "#"      # joins the elements of a nested sublevel path
# UTF-8 never produces 0xff, so prefix + 0xff is above every key inside the prefix.
UPPER_SENTINEL = b"\xff"
RANGE_OPTIONS = ("gt", "gte", "lt", "lte")
NO_LIMIT = -1            # levelup: a negative limit means "no limit"


def encode_text(value: object, what: str) -> bytes:
    """UTF-8 bytes of a string argument; anything else (or a lone surrogate) is InvalidArgument."""
    if not isinstance(value, str):
        raise invalid_argument(f"{what} must be a string, got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid_argument(f"{what} is not valid unicode text") from exc


def decode_text(raw: bytes) -> str:
    # Everything we write is valid UTF-8; `replace` only guards against foreign bytes in an old DB.
    return raw.decode("utf-8", errors="replace")


def sublevel_prefix(sublevel: object) -> bytes:
    """Physical prefix of a sublevel path (a list of non-empty strings without '!')."""
    if not isinstance(sublevel, (list, tuple)):
        raise invalid_argument(f"subLevel must be a list of strings, got {type(sublevel).__name__}")
    for part in sublevel:
        if not isinstance(part, str) or not part:
            raise invalid_argument("subLevel must be a list of non-empty strings")
        if SUBLEVEL_MARK in part:
            # A '!' inside a name would make this sublevel's keys fall into another sublevel's range.
            raise invalid_argument(f"subLevel name {part!r} must not contain {SUBLEVEL_MARK!r}")
    return encode_text(SUBLEVEL_MARK + SUBLEVEL_JOIN.join(sublevel) + SUBLEVEL_MARK, "subLevel")


@dataclass(frozen=True)
class RangeQuery:
    """A read-stream request in physical bytes: bounds, limit (-1 = none), direction, item shape."""

    gt: bytes | None
    gte: bytes | None
    lt: bytes | None
    lte: bytes | None
    limit: int
    reverse: bool
    keys: bool
    values: bool


def _option_flag(options: dict[str, Any], name: str, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid_argument(f"option {name} must be a boolean")
    return value


def parse_range_options(options: object, prefix: bytes | None) -> RangeQuery:
    """levelup options -> physical range. With a prefix, bounds apply to the key part and never leave it."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise invalid_argument("read stream options must be an object")
    bounds: dict[str, bytes | None] = {}
    for name in RANGE_OPTIONS:
        value = options.get(name)
        bounds[name] = None if value is None else (prefix or b"") + encode_text(value, f"option {name}")
    if prefix is not None:
        # level-sublevel confines every range to the sublevel: default bounds are the prefix itself.
        if bounds["gt"] is None and bounds["gte"] is None:
            bounds["gte"] = prefix
        if bounds["lt"] is None and bounds["lte"] is None:
            bounds["lt"] = prefix + UPPER_SENTINEL
    limit = options.get("limit")
    if limit is None:
        limit = NO_LIMIT
    elif isinstance(limit, bool) or not isinstance(limit, (int, float)) \
            or (isinstance(limit, float) and not limit.is_integer()):
        raise invalid_argument("option limit must be an integer")
    limit = int(limit)
    if limit < 0:
        limit = NO_LIMIT
    keys = _option_flag(options, "keys", True)
    values = _option_flag(options, "values", True)
    if not keys and not values:
        raise invalid_argument("options keys and values cannot both be false")
    return RangeQuery(gt=bounds["gt"], gte=bounds["gte"], lt=bounds["lt"], lte=bounds["lte"], limit=limit,
                      reverse=_option_flag(options, "reverse", False), keys=keys, values=values)
