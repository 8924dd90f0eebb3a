"""The metadata RPC wire format (docs/protocol.md), imported by both ends.

This module owns everything the dmd's socket.io server (`dmd/metadata.py`) and
the gateway's client (`gateway/metadata/client.py`) must agree on: the
namespace and event names, the `call` params envelope and its validation, the
per-call argument shapes, the stream marker and stream event payloads, the
manifest, the protocol constants and the error flattening. Keeping it in one
place means the two ends cannot drift.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from shared.config import (DEFAULT_CALL_TIMEOUT_MS, DEFAULT_STREAM_ACK_TIMEOUT_MS,
                           DEFAULT_STREAM_MAX_PENDING_ACK)
from shared.metastore.engine import (CONDITION_OPTIONS, MAX_DELETE_MANY_KEYS, MAX_DELETE_MANY_REPLY_BYTES,
                                     OPT_IF_ABSENT, OPT_IF_MATCH, OPT_RETURN_PREVIOUS, REPLY_TOO_LARGE)
from shared.metastore.errors import PRECONDITION_FAILED, MetadataError, invalid_argument

__all__ = [
    "NAMESPACE", "SOCKETIO_PATH", "MAX_HTTP_BUFFER_SIZE", "API_VERSION",
    "EVENT_CALL", "EVENT_STREAM_DATA", "EVENT_STREAM_END", "EVENT_STREAM_ERROR", "EVENT_STREAM_HANGUP",
    "DEFAULT_CALL_TIMEOUT_MS", "DEFAULT_STREAM_MAX_PENDING_ACK", "DEFAULT_STREAM_ACK_TIMEOUT_MS",
    "CALL_GET_MANIFEST", "CALL_PUT", "CALL_GET", "CALL_DEL", "CALL_CREATE_READ_STREAM",
    "CALL_RAW_LIST_KEYS", "CALL_GET_UUID", "CALL_GET_DISK_USAGE", "CALL_GET_STATS", "CALL_LIST_OBJECT",
    "CALL_DELETE_MANY", "MAX_DELETE_MANY_KEYS", "MAX_DELETE_MANY_REPLY_BYTES", "REPLY_TOO_LARGE",
    "MANIFEST_CALLS", "STREAM_CALLS", "CallParams", "build_params", "parse_params", "parse_call_args",
    "manifest", "stream_marker", "parse_stream_marker", "new_stream_id", "stream_id_of",
    "flatten_error", "unflatten_error", "timeout_error", "stream_timeout_error", "payload_size",
    "MAX_KEY_BYTES", "MAX_VALUE_BYTES", "EXTENSION_CONDITIONAL_WRITES", "EXTENSION_BUCKET_INVALIDATION",
    "EVENT_INVALIDATE", "INVALIDATED_SUBLEVEL", "OPT_IF_ABSENT", "OPT_IF_MATCH",
    "OPT_RETURN_PREVIOUS", "CONDITION_OPTIONS", "PRECONDITION_FAILED", "has_conditions", "supports", "offers",
]

# The metadata service lives on this socket.io namespace, default path (docs/protocol.md#transport).
NAMESPACE = "/MDFile/metadata"
SOCKETIO_PATH = "socket.io"
# Current Arsenal's server setting; larger transport frames are refused by engine.io.
MAX_HTTP_BUFFER_SIZE = 100_000_000
API_VERSION = "1.0"

# Event names (docs/protocol.md#call-envelope, #stream-events).
EVENT_CALL = "call"
EVENT_STREAM_DATA = "stream-data"
EVENT_STREAM_END = "stream-end"
EVENT_STREAM_ERROR = "stream-error"
EVENT_STREAM_HANGUP = "stream-hangup"

# Call names (docs/protocol.md#calls).
CALL_GET_MANIFEST = "getManifest"
CALL_PUT = "put"
CALL_GET = "get"
CALL_DEL = "del"
CALL_CREATE_READ_STREAM = "createReadStream"
CALL_RAW_LIST_KEYS = "rawListKeys"
CALL_GET_UUID = "getUUID"
CALL_GET_DISK_USAGE = "getDiskUsage"
# Ours, not the original's: batch and stream statistics of the dmd.
CALL_GET_STATS = "getStats"
# Ours: one listing page computed in the dmd (docs/protocol.md#listobject). A client uses it only when
# the manifest names it (the original dmd's does not) and reads streams otherwise.
CALL_LIST_OBJECT = "listObject"
# Ours: plain deletes of up to MAX_DELETE_MANY_KEYS keys of one sublevel, one reply once all are durable
# (docs/protocol.md#deletemany). Used only when the manifest names it; otherwise one `del` per key.
CALL_DELETE_MANY = "deleteMany"

# The manifest lists sync calls first, then async calls, without getManifest (docs/protocol.md#handshake).
MANIFEST_CALLS: tuple[str, ...] = (CALL_CREATE_READ_STREAM, CALL_RAW_LIST_KEYS, CALL_GET_UUID,
                                   CALL_PUT, CALL_DEL, CALL_GET, CALL_GET_DISK_USAGE, CALL_GET_STATS,
                                   CALL_LIST_OBJECT, CALL_DELETE_MANY)
# Calls whose result is a stream marker (docs/protocol.md#read-streams).
STREAM_CALLS = frozenset({CALL_CREATE_READ_STREAM, CALL_RAW_LIST_KEYS})

# Our extensions, named in the manifest's "extensions" list (the original's clients read only
# "api" and ignore it). conditionalWrites: the ifAbsent / ifMatch / returnPrevious options of a
# plain put or del, and the PreconditionFailed error (docs/protocol.md#conditional-writes).
EXTENSION_CONDITIONAL_WRITES = "conditionalWrites"
# bucketInvalidation: after every put or del in the INVALIDATED_SUBLEVEL (bucket records), before
# its reply, the dmd sends EVENT_INVALIDATE {"key": <bucket name>} to every connected client, so a
# client may cache those records while connected (docs/protocol.md#bucket-record-invalidation).
EXTENSION_BUCKET_INVALIDATION = "bucketInvalidation"
EXTENSIONS: tuple[str, ...] = (EXTENSION_CONDITIONAL_WRITES, EXTENSION_BUCKET_INVALIDATION)
EVENT_INVALIDATE = "md-invalidate"
INVALIDATED_SUBLEVEL = "__metastore"

# Input limits. S3 keys are at most 915 bytes (plus a version suffix); the
# largest legitimate value is an MPU object with 10 000 part locations, a few MB.
MAX_KEY_BYTES = 16 * 1024
MAX_VALUE_BYTES = 32 * 1024 * 1024

# Calls addressed to a sublevel must say which one; root calls may omit it.
_SUBLEVEL_REQUIRED = frozenset({CALL_PUT, CALL_GET, CALL_DEL, CALL_CREATE_READ_STREAM, CALL_LIST_OBJECT,
                                CALL_DELETE_MANY})


@dataclass(frozen=True)
class CallParams:
    """A decoded `call` params object (docs/protocol.md#call-envelope)."""
    rpc_args: list[Any]
    sub_level: list[str]
    req_uids: str | None = None


def build_params(rpc_args: list[Any], sub_level: list[str] | None = None,
                 req_uids: str | None = None) -> dict[str, Any]:
    """The params object of a `call` event; `reqUids` is omitted when unset, as the original."""
    params: dict[str, Any] = {"rpcArgs": list(rpc_args), "subLevel": list(sub_level or [])}
    if req_uids:
        params["reqUids"] = req_uids
    return params


def parse_params(name: str, params: Any) -> CallParams:
    """Validate the envelope of call `name`; raise InvalidArgument naming the problem."""
    if params is None and name not in _SUBLEVEL_REQUIRED:
        return CallParams([], [])
    if not isinstance(params, dict):
        raise invalid_argument(f"{name}: params must be an object, got {_json_type(params)}")
    rpc_args = params.get("rpcArgs", [])
    if not isinstance(rpc_args, list):
        raise invalid_argument(f"{name}: rpcArgs must be an array, got {_json_type(rpc_args)}")
    if "subLevel" not in params or params["subLevel"] is None:
        if name in _SUBLEVEL_REQUIRED:
            raise invalid_argument(f"{name}: missing subLevel")
        sub_level: Any = []
    else:
        sub_level = params["subLevel"]
    if not isinstance(sub_level, list):
        raise invalid_argument(f"{name}: subLevel must be an array of strings, got {_json_type(sub_level)}")
    for i, part in enumerate(sub_level):
        if not isinstance(part, str) or not part:
            raise invalid_argument(f"{name}: subLevel[{i}] must be a non-empty string")
    req_uids = params.get("reqUids")
    if req_uids is not None and not isinstance(req_uids, str):
        raise invalid_argument(f"{name}: reqUids must be a string")
    return CallParams(rpc_args, list(sub_level), req_uids)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _arg_key(name: str, args: list[Any], i: int) -> str:
    if len(args) <= i or not isinstance(args[i], str):
        got = _json_type(args[i]) if len(args) > i else "nothing"
        raise invalid_argument(f"{name}: rpcArgs[{i}] (key) must be a string, got {got}")
    if len(args[i].encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise invalid_argument(f"{name}: key longer than {MAX_KEY_BYTES} bytes")
    return args[i]


def _arg_options(name: str, args: list[Any], i: int) -> dict[str, Any]:
    # Absent or null options mean "no options", as a JS caller passing undefined.
    if len(args) <= i or args[i] is None:
        return {}
    if not isinstance(args[i], dict):
        raise invalid_argument(f"{name}: rpcArgs[{i}] (options) must be an object, got {_json_type(args[i])}")
    return args[i]


def parse_call_args(name: str, args: list[Any]) -> tuple[Any, ...]:
    """Check and normalise the positional rpcArgs of call `name` (docs/protocol.md#calls).

    put -> (key, value, options); get/del -> (key, options);
    createReadStream/rawListKeys -> (options,); listObject -> (params,) with params.listingType
    (checked by shared/listing/page.make_algorithm); deleteMany -> (keys, options), at most
    MAX_DELETE_MANY_KEYS keys, each checked as a del's key (the options by the engine); others -> ().
    """
    if name == CALL_PUT:
        key = _arg_key(name, args, 0)
        if len(args) <= 1 or not isinstance(args[1], str):
            got = _json_type(args[1]) if len(args) > 1 else "nothing"
            raise invalid_argument(f"{name}: rpcArgs[1] (value) must be a string, got {got}")
        if len(args[1]) > MAX_VALUE_BYTES:
            raise invalid_argument(f"{name}: value larger than {MAX_VALUE_BYTES} bytes")
        return key, args[1], _arg_options(name, args, 2)
    if name in (CALL_GET, CALL_DEL):
        return _arg_key(name, args, 0), _arg_options(name, args, 1)
    if name in STREAM_CALLS or name == CALL_LIST_OBJECT:
        return (_arg_options(name, args, 0),)
    if name == CALL_DELETE_MANY:
        keys = args[0] if args else None
        if not isinstance(keys, list):
            raise invalid_argument(f"{name}: rpcArgs[0] (keys) must be an array of strings, got {_json_type(keys)}")
        if len(keys) > MAX_DELETE_MANY_KEYS:
            raise invalid_argument(f"{name}: at most {MAX_DELETE_MANY_KEYS} keys per call, got {len(keys)}")
        for i, key in enumerate(keys):
            if not isinstance(key, str):
                raise invalid_argument(f"{name}: keys[{i}] must be a string, got {_json_type(key)}")
            if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
                raise invalid_argument(f"{name}: keys[{i}] longer than {MAX_KEY_BYTES} bytes")
        return keys, _arg_options(name, args, 1)
    return ()


def manifest(hidden: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The getManifest reply (docs/protocol.md#handshake), with our extensions; `hidden` calls left out
    (a dmd that plays an older one, for tests of the clients' fallbacks)."""
    return {"apiVersion": API_VERSION, "api": [{"name": n} for n in MANIFEST_CALLS if n not in hidden],
            "extensions": list(EXTENSIONS)}


def offers(manifest_reply: Any, call: str) -> bool:
    """Whether a getManifest reply lists `call` in its api."""
    api = manifest_reply.get("api") if isinstance(manifest_reply, dict) else None
    return isinstance(api, list) and any(isinstance(e, dict) and e.get("name") == call for e in api)


def supports(manifest_reply: Any, extension: str) -> bool:
    """Whether a getManifest reply announces `extension` (never for the original dmd)."""
    extensions = manifest_reply.get("extensions") if isinstance(manifest_reply, dict) else None
    return isinstance(extensions, list) and extension in extensions


def has_conditions(options: dict[str, Any] | None) -> bool:
    """Whether put/del options use the conditionalWrites extension."""
    return bool(options) and any(options.get(name) is not None for name in CONDITION_OPTIONS)


# ---- streams (docs/protocol.md#read-streams) -----------------------------------

def new_stream_id() -> str:
    return str(uuid.uuid4())


def stream_marker(stream_id: str) -> dict[str, Any]:
    """What a readable-stream result is replaced with inside the ack."""
    return {"$streamId": stream_id, "readable": True, "writable": False}


def parse_stream_marker(value: Any) -> str | None:
    """The stream id if `value` is a readable-stream marker, else None."""
    if isinstance(value, dict) and isinstance(value.get("$streamId"), str) and value.get("readable"):
        return value["$streamId"]
    return None


def stream_id_of(payload: Any) -> str | None:
    """The `streamId` of a stream event payload, or None if malformed."""
    if isinstance(payload, dict) and isinstance(payload.get("streamId"), str):
        return payload["streamId"]
    return None


def payload_size(item: Any) -> int:
    """Approximate encoded size of a stream item, to bound packet sizes cheaply."""
    if isinstance(item, str):
        return len(item) + 4
    if isinstance(item, dict):
        return sum(len(v) if isinstance(v, str) else 8 for v in item.values()) + 24
    return len(json.dumps(item))


# ---- errors (docs/protocol.md#errors, #call-timeout, #flow-control) ----------

def flatten_error(err: BaseException) -> dict[str, Any]:
    """The first ack value of a failed call (current Arsenal's form plus the legacy fields, docs/protocol.md#errors)."""
    if isinstance(err, MetadataError):
        return err.to_wire()
    return {"is_arsenal_error": True, "code": 500, "type": "InternalError", "message": "InternalError",
            "InternalError": True, "description": f"{type(err).__name__}: {err}"}


def unflatten_error(err: Any) -> MetadataError:
    """Rebuild a MetadataError from any era's flattened form (current Arsenal, classic Arsenal 2019, plain Error)."""
    if isinstance(err, dict) and not err.get("is_arsenal_error") and isinstance(err.get("code"), str):
        # A non-Arsenal Error such as the call timeout: {"message", "code": "ETIMEDOUT", "info"}.
        return _InfoError(err["code"], str(err.get("info") or err.get("message") or err["code"]))
    return MetadataError.from_wire(err)


class _InfoError(MetadataError):
    """A node-style system error (code string + info), e.g. ETIMEDOUT."""

    def __init__(self, code: str, info: str):
        super().__init__(code, 500, info)
        self.info = info

    def to_wire(self) -> dict[str, Any]:
        return {"message": self.info, "code": self.type, "info": self.info}


def timeout_error(call_name: str) -> MetadataError:
    """The client-side call timeout (docs/protocol.md#call-timeout)."""
    return _InfoError("ETIMEDOUT", f"operation {call_name} timed out")


def stream_timeout_error(ack_timeout_ms: int) -> MetadataError:
    """The producer's ack timeout, sent as stream-error (docs/protocol.md#flow-control)."""
    return _InfoError("ETIMEDOUT", f"stream timeout: did not receive ack after {ack_timeout_ms}ms")
