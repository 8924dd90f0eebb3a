"""Fast JSON (orjson) with the stdlib `json` module's calling convention.

Used where JSON is the hot path: socket.io packets on both ends of the
metadata RPC (python-socketio's `json=` hook), and stored metadata values
the gateway parses for every listed entry. orjson parses and writes 3-10x
faster than the stdlib; its output is plain compact JSON, so the wire and the
stored values stay what the original produces.
"""
from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError   # a ValueError subclass, like json.JSONDecodeError


def loads(data: str | bytes, **_ignored: Any) -> Any:
    return orjson.loads(data)


def dumps(obj: Any, **_ignored: Any) -> str:
    """Compact JSON text (the `separators` callers pass are orjson's only form)."""
    return orjson.dumps(obj).decode()
