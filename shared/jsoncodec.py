"""Fast JSON (orjson) with the stdlib `json` module's calling convention.

Used where JSON is the hot path: socket.io packets on both ends of the
metadata RPC (python-socketio's `json=` hook), and stored metadata values
the gateway parses for every listed entry. orjson parses and writes 3-10x
faster than the stdlib; its output is plain compact JSON, so the wire and the
stored values stay what the original produces.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError   # a ValueError subclass, like json.JSONDecodeError


def loads(data: str | bytes, **_ignored: Any) -> Any:
    return orjson.loads(data)


_TRUE_MEMBER: dict[str, re.Pattern[str]] = {}


def may_hold_true(text: str, name: str) -> bool:
    """False when the JSON `text` cannot have the member `name` set to `true` (no `"name": true` in
    it: JSON writers never escape plain ASCII letters), so that the common case needs no parse;
    True means parse to know (the text may sit inside another string)."""
    pattern = _TRUE_MEMBER.get(name)
    if pattern is None:
        pattern = _TRUE_MEMBER[name] = re.compile(f'"{re.escape(name)}"\\s*:\\s*true')
    return f'"{name}"' in text and pattern.search(text) is not None


def dumps(obj: Any, **_ignored: Any) -> str:
    """Compact JSON text (the `separators` callers pass are orjson's only form)."""
    return orjson.dumps(obj).decode()
