"""The record log's RPC: socket.io namespace `/MDFile/recordLog` (docs/protocol.md#record-log).

Served by the dmd when `recordLog.enabled` is true, on the metadata port, as the original's
`RecordLogService` (Arsenal `lib/storage/metadata/file/RecordLog.js`): every call carries
`{"rpcArgs": [...], "logName": "<name>"}`; `getManifest` lists `createLogRecordOps`,
`pruneRecords` and `readRecords`. `readRecords({startSeq, endSeq, limit})` answers
`{"info": {"start", "end"}, "log": <stream marker>}` and then streams the records
`{timestamp, db, entries: [{type, key, value}]}` with the metadata namespace's stream protocol
(stream-data / stream-end, acked, hangup): the streams are the MetadataServer's.

The records themselves are written by the engine, in the batch of the ops they describe
(shared/metastore/recordlog.py). backbeat's queue populator is the consumer: it reads from
`startSeq` = its saved offset with `limit` = its page size and saves `info.start + records read`.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import socketio

from shared import rpc
from shared.config import DMD_SECRET_AUTH_FIELD, secret_matches
from shared.log import get_logger, log_event
from shared.metastore.errors import MetadataError, invalid_argument
from shared.metastore.recordlog import (RECORD_LOG_PREFIX, format_record, format_seq, parse_seq_param,
                                        timestamp_now)

logger = get_logger("dmd.recordlog")

NAMESPACE = "/MDFile/recordLog"
CALL_CREATE_LOG_RECORD_OPS = "createLogRecordOps"
CALL_PRUNE_RECORDS = "pruneRecords"
CALL_READ_RECORDS = "readRecords"
# The original registers these three async calls, in this order, and no sync call.
MANIFEST_CALLS = (CALL_CREATE_LOG_RECORD_OPS, CALL_PRUNE_RECORDS, CALL_READ_RECORDS)
# Arsenal's errors.NotImplemented, which the original's pruneRecords answers.
NOT_IMPLEMENTED_DESCRIPTION = "A header you provided implies functionality that is not implemented"

_END = object()


def manifest() -> dict[str, Any]:
    return {"apiVersion": rpc.API_VERSION, "api": [{"name": n} for n in MANIFEST_CALLS]}


class RecordLogService:
    """`/MDFile/recordLog` on the MetadataServer's socket.io server, over the store's record log."""

    def __init__(self, server: Any, store: Any, log_name: str) -> None:
        self.server = server
        self.store = store
        self.log_name = log_name
        sio = server.sio
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        sio.on(rpc.EVENT_CALL, self._on_call, namespace=NAMESPACE)
        # Streams are the MetadataServer's: its hangup handler checks the stream's owner sid.
        sio.on(rpc.EVENT_STREAM_HANGUP, server._on_hangup, namespace=NAMESPACE)

    async def _on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        presented = auth.get(DMD_SECRET_AUTH_FIELD) if isinstance(auth, dict) else None
        if self.server.secret and not secret_matches(self.server.secret, presented):
            log_event(logger, logging.WARNING, "record log connection refused: dmd secret missing or wrong",
                      sid=sid, peer=environ.get("REMOTE_ADDR"))
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: dmd secret missing or wrong")
        log_event(logger, logging.DEBUG, "record log client connected", sid=sid, peer=environ.get("REMOTE_ADDR"))

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        freed = self.server.free_streams(sid)
        log_event(logger, logging.DEBUG, "record log client disconnected", sid=sid, freed_streams=freed)

    async def _on_call(self, sid: str, *args: Any) -> tuple[Any, ...]:
        name = args[0] if args else None
        params = args[1] if len(args) > 1 else None
        try:
            result = await self._dispatch(sid, name, params)
        except MetadataError as err:
            return (rpc.flatten_error(err),)
        except Exception as err:  # a bug must cost one reply, not the connection
            logger.exception("record log call %s failed", name)
            return (rpc.flatten_error(err),)
        return (None, result)

    async def _dispatch(self, sid: str, name: Any, params: Any) -> Any:
        if not isinstance(name, str):
            raise invalid_argument("call name must be a string")
        if name == rpc.CALL_GET_MANIFEST:
            return manifest()
        if name not in MANIFEST_CALLS:
            raise invalid_argument(f"Unknown remote call {name} in namespace {NAMESPACE}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise invalid_argument(f"{name}: params must be an object")
        rpc_args = params.get("rpcArgs", [])
        if not isinstance(rpc_args, list):
            raise invalid_argument(f"{name}: rpcArgs must be an array")
        # backbeat always names the log; a call without logName reads the configured one.
        log_name = params.get("logName") or self.log_name
        if not isinstance(log_name, str):
            raise invalid_argument(f"{name}: logName must be a string")
        arg = rpc_args[0] if rpc_args else None
        if name == CALL_PRUNE_RECORDS:
            raise MetadataError("NotImplemented", 501, NOT_IMPLEMENTED_DESCRIPTION)
        if name == CALL_CREATE_LOG_RECORD_OPS:
            return self._create_log_record_ops(log_name, arg)
        return await self._read_records(sid, log_name, arg)

    def _create_log_record_ops(self, log_name: str, ops: Any) -> list[dict[str, Any]]:
        """The original's createLogRecordOps: the record-log batch ops for `ops`, numbered from the
        log's counter (numbers taken here and never written leave a gap, as in the original)."""
        record_log = self.store.record_log
        if record_log is None or log_name != record_log.name:
            raise invalid_argument(f"createLogRecordOps: only the log this dmd writes ({self.log_name})")
        if not isinstance(ops, list):
            raise invalid_argument("createLogRecordOps: rpcArgs[0] must be an array of batch ops")
        for op in ops:
            prefix = op.get("prefix") if isinstance(op, dict) else None
            if not isinstance(prefix, list) or not prefix or not isinstance(prefix[0], str) \
                    or not isinstance(op.get("key"), str) or op.get("type", "put") not in ("put", "del", None) \
                    or not isinstance(op.get("value", ""), (str, type(None))):
                raise invalid_argument("createLogRecordOps: each op needs type put|del, key, value and prefix")
        first = record_log.reserve(len(ops))
        result = []
        timestamp = timestamp_now()
        for i, op in enumerate(ops):
            value = format_record(op.get("type") or "put", op["prefix"][0], op["key"], op.get("value"), timestamp)
            result.append({"type": "put", "prefix": [RECORD_LOG_PREFIX, log_name], "key": format_seq(first + i),
                           "value": value})
        return result

    async def _read_records(self, sid: str, log_name: str, arg: Any) -> dict[str, Any]:
        if arg is None:
            arg = {}
        if not isinstance(arg, dict):
            raise invalid_argument("readRecords: rpcArgs[0] must be an object {startSeq, endSeq, limit}")
        start = parse_seq_param(arg, "startSeq")
        end = parse_seq_param(arg, "endSeq")
        limit = parse_seq_param(arg, "limit")
        last, source = await self.store.read_records(log_name, start, end, limit)
        try:
            first = await anext(source, _END)
        except BaseException:
            await source.aclose()
            raise
        if first is _END:
            info: dict[str, Any] = {"start": None, "end": None}
        else:
            first_seq = first[0]
            if limit is not None and limit > 0 and first_seq + limit <= last:
                last = first_seq + limit - 1
            info = {"start": first_seq, "end": last}
        marker = await self.server._open_stream(sid, _records(first, source), namespace=NAMESPACE,
                                                sizer=record_size)
        log_event(logger, logging.DEBUG, "readRecords", sid=sid, logName=log_name, startSeq=start, endSeq=end,
                  limit=limit, info=info)
        return {"info": info, "log": marker}


def record_size(record: dict) -> int:
    """Approximate encoded size of a streamed record (its value can be an MPU object's megabytes)."""
    return 64 + sum(len(e.get("key") or "") + len(e.get("value") or "") for e in record["entries"])


async def _records(first: Any, source: AsyncIterator[tuple[int, dict]]) -> AsyncIterator[dict]:
    """The stream items: the record objects, the first one already read."""
    try:
        if first is _END:
            return
        yield first[1]
        async for _seq, record in source:
            yield record
    finally:
        await source.aclose()
