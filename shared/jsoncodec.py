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
from socketio import packet as _sio_packet

JSONDecodeError = orjson.JSONDecodeError   # a ValueError subclass, like json.JSONDecodeError


def loads(data: str | bytes, **_ignored: Any) -> Any:
    return orjson.loads(data)


_MEMBER_NAMES: dict[str, str] = {}
_COLON_TRUE = re.compile(r"[ \t\n\r]*:[ \t\n\r]*true")


def may_hold_true(text: str, name: str) -> bool:
    """False when the JSON `text` cannot have the member `name` set to `true` (no `"name": true` in
    it: JSON writers never escape plain ASCII letters), so that the common case needs no parse;
    True means parse to know (the text may sit inside another string)."""
    needle = _MEMBER_NAMES.get(name)
    if needle is None:
        needle = _MEMBER_NAMES[name] = f'"{name}"'
    # Every occurrence of the quoted name, then an anchored match right after it (stored documents
    # say `"isPHD": false`: one find and one short match, not a search of the whole text).
    at = text.find(needle)
    while at != -1:
        at += len(needle)
        if _COLON_TRUE.match(text, at) is not None:
            return True
        at = text.find(needle, at)
    return False


def dumps(obj: Any, **_ignored: Any) -> str:
    """Compact JSON text (the `separators` callers pass are orjson's only form)."""
    return orjson.dumps(obj).decode()


class RpcPacket(_sio_packet.Packet):
    """python-socketio's packet with this module as its JSON and a cheaper test for binary
    payloads (both ends of the metadata RPC: `serializer=RpcPacket`). The stock test builds a list
    at every level of every packet's data to find bytes; this one walks it once and stops at the
    first bytes, with the same answer (bytes inside lists and dict values, as the stock one)."""

    json = _sio_packet.Packet.json   # replaced by `json=` of the client/server, as for the stock class

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        stack = [data]
        while stack:
            item = stack.pop()
            kind = type(item)
            if kind is str or item is None or kind is int or kind is bool or kind is float:
                continue
            if kind is list:
                stack.extend(item)
            elif kind is dict:
                stack.extend(item.values())
            elif isinstance(item, (bytes, bytearray)):
                return True
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, dict):
                stack.extend(item.values())
        return False
