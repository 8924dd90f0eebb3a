"""The dmd's metadata RPC server: socket.io on port 9990 in front of the MetaStore.

This module owns the server side of docs/protocol.md (metadata RPC, read streams): it decodes
`call` events (envelope and arguments checked by `shared.rpc`), runs them on
the engine (which does the write batching, docs/durability.md#group-commit), answers through the socket.io
ack with `(error, result)`, and serves read streams with an ack window. It
fixes the original's stream flaws: a source read error is forwarded as
`stream-error`, and a consumer's disconnect frees its streams and iterators.
The record log's namespace (/MDFile/recordLog, dmd/recordlog.py) sends its streams through the same
machinery (`_open_stream(..., namespace=...)`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import socketio
from aiohttp import web

from shared import jsoncodec, rpc
from shared.config import DMD_SECRET_AUTH_FIELD, secret_matches
from shared.listing import ListingStats, encode_page, list_page
from shared.log import get_logger, log_event
from shared.metastore.errors import MetadataError, invalid_argument

logger = get_logger("dmd.metadata")

# Packing of stream-data packets: several items per packet keeps the per-packet
# overhead (one socket.io frame and one ack) small; the byte cap keeps a packet
# of large values from blocking the connection for long.
PACKET_MAX_ITEMS = 1000
PACKET_MAX_BYTES = 64 * 1024
# Slow start: a stream's first packet holds at most this many items and each next one twice
# as many; and only one packet is in flight until acks open the window up to
# streamMaxPendingAck. A listing that reopens its stream past a common prefix reads one or
# two entries of it: shipping 5 x 1000 entries it throws away cost 35 ms a delimiter listing.
FIRST_PACKET_ITEMS = 16
# listObject (docs/protocol.md#listobject): a skip of a run of versions is a seek here, not a round trip,
# so it is taken after this many skipped entries; and the listing gives the event loop a turn every
# LISTING_YIELD_EVERY entries read (the engine's reads are synchronous: a bucket of a million delete
# markers must not hold up the other clients for the whole scan).
LISTING_MAX_SKIP_RUN = 8
LISTING_YIELD_EVERY = 256
# Calls left out of the manifest and refused as unknown, comma-separated: for tests of the clients'
# fallbacks against a dmd that predates them (e.g. DMD_HIDDEN_CALLS=listObject). Never set in production.
HIDDEN_CALLS_ENV = "DMD_HIDDEN_CALLS"
# How often batch statistics are logged at info level (only when they changed).
STATS_LOG_INTERVAL_S = 60.0
# How long aiohttp waits for open connections at shutdown; clients are
# disconnected first, so this only bounds a misbehaving peer.
SHUTDOWN_TIMEOUT_S = 1.0

_END = object()


@dataclass(eq=False)
class _OutStream:
    """Server-side state of one read stream being sent to one consumer."""
    stream_id: str
    sid: str
    source: AsyncIterator[Any]
    first: Any
    unacked: dict[int, float] = field(default_factory=dict)   # packet seq -> ack deadline (monotonic s)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 0
    window: int = 1            # packets allowed in flight, grows by one per ack (slow start)
    packets: int = 0
    items: int = 0
    task: asyncio.Task | None = None
    namespace: str = rpc.NAMESPACE   # the socket.io namespace the consumer called on (also /MDFile/recordLog)
    sizer: Callable[[Any], int] = rpc.payload_size   # approximate encoded size of an item (packet byte cap)


class _AckTimeout(Exception):
    pass


class MetadataServer:
    """socket.io AsyncServer on an aiohttp app, serving namespace /MDFile/metadata."""

    def __init__(self, store: Any, *, stream_max_pending_ack: int = rpc.DEFAULT_STREAM_MAX_PENDING_ACK,
                 stream_ack_timeout_ms: int = rpc.DEFAULT_STREAM_ACK_TIMEOUT_MS,
                 stats_interval_s: float = STATS_LOG_INTERVAL_S, secret: str = "",
                 hidden_calls: frozenset[str] | None = None) -> None:
        self.store = store
        if hidden_calls is None:
            hidden_calls = frozenset(n.strip() for n in os.environ.get(HIDDEN_CALLS_ENV, "").split(",") if n.strip())
        self.hidden_calls = hidden_calls
        self._listing_stats = ListingStats()
        self._listings = 0
        self.secret = secret   # the dmd secret a client's handshake must present; "" = none required
        self.max_pending_ack = stream_max_pending_ack
        self.ack_timeout_ms = stream_ack_timeout_ms
        self.stats_interval_s = stats_interval_s
        self.sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=rpc.MAX_HTTP_BUFFER_SIZE,
                                        logger=False, engineio_logger=False, json=jsoncodec,
                                        serializer=jsoncodec.RpcPacket)
        self.app = web.Application(client_max_size=rpc.MAX_HTTP_BUFFER_SIZE)
        self.sio.attach(self.app, socketio_path=rpc.SOCKETIO_PATH)
        self._streams: dict[str, _OutStream] = {}
        self._streams_by_sid: dict[str, set[str]] = {}
        self._connections = 0
        self._calls = 0
        self._call_errors = 0
        self._runner: web.AppRunner | None = None
        self._stats_task: asyncio.Task | None = None
        self._last_logged_stats: dict[str, Any] | None = None
        ns = rpc.NAMESPACE
        self.sio.on("connect", self._on_connect, namespace=ns)
        self.sio.on("disconnect", self._on_disconnect, namespace=ns)
        self.sio.on(rpc.EVENT_CALL, self._on_call, namespace=ns)
        self.sio.on(rpc.EVENT_STREAM_HANGUP, self._on_hangup, namespace=ns)

    # ---- lifecycle -----------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()   # TLS: shared/dmd_tls.py
        self._stats_task = asyncio.create_task(self._log_stats_periodically())
        return self._runner

    async def close(self) -> None:
        """Stop serving: free every stream, disconnect clients, log final statistics."""
        if self._stats_task is not None:
            self._stats_task.cancel()
        for st in list(self._streams.values()):
            self._cancel_stream(st)
        tasks = [st.task for st in self._streams.values() if st.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Transports are aborted without a socket.io "disconnect" packet:
        # socket.io clients take a server disconnect as final and would not
        # reconnect to the restarted daemon; a dropped transport makes them retry.
        for sock in list(self.sio.eio.sockets.values()):
            try:
                await sock.close(wait=False, abort=True)
                # engine.io's websocket writer closes the websocket when it
                # dequeues None; without it aiohttp waits SHUTDOWN_TIMEOUT_S.
                sock.queue.put_nowait(None)
            except Exception:  # a half-closed transport must not block shutdown
                logger.debug("aborting a transport failed", exc_info=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._log_stats(force=True)

    def stats(self) -> dict[str, Any]:
        return {**self.store.stats(), "open_streams": len(self._streams), "connections": self._connections,
                "calls": self._calls, "call_errors": self._call_errors, "listings": self._listings,
                "listing_entries_read": self._listing_stats.entries_read,
                "listing_seeks": self._listing_stats.streams_opened}

    def _log_stats(self, force: bool = False) -> None:
        stats = self.stats()
        if force or stats != self._last_logged_stats:
            log_event(logger, logging.INFO, "metadata stats", **stats)
            self._last_logged_stats = stats

    async def _log_stats_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval_s)
            self._log_stats()

    # ---- connections -----------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        # The dmd secret, as the handshake's auth payload {"secret": ...}: a refused client
        # never joins the namespace, so socket.io drops every call it sends.
        presented = auth.get(DMD_SECRET_AUTH_FIELD) if isinstance(auth, dict) else None
        if self.secret and not secret_matches(self.secret, presented):
            log_event(logger, logging.WARNING, "metadata connection refused: dmd secret missing or wrong",
                      sid=sid, peer=environ.get("REMOTE_ADDR"))
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: dmd secret missing or wrong")
        self._connections += 1
        log_event(logger, logging.DEBUG, "client connected", sid=sid, peer=environ.get("REMOTE_ADDR"))

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self._connections -= 1
        ids = self._streams_by_sid.pop(sid, set())
        for stream_id in ids:
            st = self._streams.get(stream_id)
            if st is not None:
                self._cancel_stream(st)
        log_event(logger, logging.DEBUG, "client disconnected", sid=sid, reason=str(reason),
                  freed_streams=len(ids))

    # ---- calls -----------------------------------------------------------------

    async def _on_call(self, sid: str, *args: Any) -> tuple[Any, ...]:
        """One `call` event: reply (null, result) or (flattened error,) through the ack."""
        started = time.monotonic()
        name = args[0] if args else None
        params = args[1] if len(args) > 1 else None
        self._calls += 1
        try:
            if not isinstance(name, str):
                raise invalid_argument(f"call name must be a string, got {json.dumps(name)[:100]}")
            result = await self._dispatch(sid, name, params)
        except MetadataError as err:
            self._call_errors += 1
            self._log_call(sid, name, params, started, error=err.type)
            return (rpc.flatten_error(err),)
        except Exception as err:  # an engine bug must cost one reply, not the connection
            self._call_errors += 1
            logger.exception("call %s failed", name)
            return (rpc.flatten_error(err),)
        self._log_call(sid, name, params, started)
        return (None, result)

    def _log_call(self, sid: str, name: Any, params: Any, started: float, error: str | None = None) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return
        try:
            size = len(json.dumps(params))
        except (TypeError, ValueError):
            size = -1
        sub = params.get("subLevel") if isinstance(params, dict) else None
        uids = params.get("reqUids") if isinstance(params, dict) else None
        log_event(logger, logging.DEBUG, "rpc call", sid=sid, call=name, subLevel=sub, reqUids=uids,
                  params_bytes=size, duration_ms=round((time.monotonic() - started) * 1000, 3), error=error)

    async def _dispatch(self, sid: str, name: str, params: Any) -> Any:
        if name == rpc.CALL_GET_MANIFEST:
            return rpc.manifest(self.hidden_calls)
        if name not in rpc.MANIFEST_CALLS or name in self.hidden_calls:
            raise invalid_argument(f"Unknown remote call {name} in namespace {rpc.NAMESPACE}")
        p = rpc.parse_params(name, params)
        args = rpc.parse_call_args(name, p.rpc_args)
        if name in (rpc.CALL_PUT, rpc.CALL_DEL, rpc.CALL_DELETE_MANY):
            write = {rpc.CALL_PUT: self.store.put, rpc.CALL_DEL: self.store.delete,
                     rpc.CALL_DELETE_MANY: self.store.delete_many}[name]
            try:
                return await write(p.sub_level, *args)
            finally:   # whatever the outcome (a failed write may still have landed): before the reply
                if p.sub_level == [rpc.INVALIDATED_SUBLEVEL]:
                    for key in dict.fromkeys(args[0]) if name == rpc.CALL_DELETE_MANY else (args[0],):
                        await self._invalidate(key)
        if name == rpc.CALL_GET:
            return await self.store.get(p.sub_level, *args)
        if name == rpc.CALL_CREATE_READ_STREAM:
            return await self._open_stream(sid, self.store.read_stream(p.sub_level, args[0]))
        if name == rpc.CALL_RAW_LIST_KEYS:
            return await self._open_stream(sid, self.store.raw_list_keys(args[0]))
        if name == rpc.CALL_GET_UUID:
            return await self.store.get_uuid()
        if name == rpc.CALL_GET_DISK_USAGE:
            return await self.store.get_disk_usage()
        if name == rpc.CALL_GET_STATS:
            return self.stats()
        if name == rpc.CALL_LIST_OBJECT:
            return await self._list_object(p.sub_level, args[0])
        raise invalid_argument(f"Unknown remote call {name} in namespace {rpc.NAMESPACE}")

    async def _list_object(self, sub_level: list[str], params: dict[str, Any]) -> dict[str, Any]:
        """listObject: one page of `params.listingType` over the sublevel, run here over the engine's
        streams (a skip past a common prefix is a seek), values projected to the listing fields."""
        if not sub_level:
            raise invalid_argument(f"{rpc.CALL_LIST_OBJECT}: subLevel must name the bucket's sublevel")
        stats = ListingStats()
        listing_type = params.get("listingType")
        try:
            # The engine's scans read one entry at a time over one store iterator: a skip past a
            # common prefix is a seek that reads one entry, where a read stream would create an
            # iterator and read a chunk ahead (32 entries) before it is closed.
            with self.store.scanner(sub_level) as scan:
                page = await list_page(scan, listing_type, params, project=False, stats=stats,
                                       max_skip_run=LISTING_MAX_SKIP_RUN, yield_every=LISTING_YIELD_EVERY)
            # One JSON text, values projected as it is written: socket.io would otherwise walk the
            # page's every entry looking for binary attachments before encoding it (a quarter of a
            # listing's cost here).
            return encode_page(listing_type, page)
        finally:
            self._listings += 1
            self._listing_stats.add(stats)

    async def _invalidate(self, key: str) -> None:
        """Tell every client that a bucket record may have changed (the bucketInvalidation extension).
        Queued on each connection before the writer's reply: socket.io keeps per-connection order."""
        try:
            await self.sio.emit(rpc.EVENT_INVALIDATE, {"key": key}, namespace=rpc.NAMESPACE)
        except Exception:   # a client going away; a dead connection's cache dies with it
            logger.debug("invalidation not sent", exc_info=True)

    # ---- streams (docs/protocol.md#read-streams) ----------------------------------

    async def _open_stream(self, sid: str, source: AsyncIterator[Any], namespace: str = rpc.NAMESPACE,
                           sizer: Callable[[Any], int] = rpc.payload_size) -> dict[str, Any]:
        """Reply with a stream marker and start pumping the source to the consumer.

        The first item is read before replying so that bad options (which the
        engine reports lazily) become a call error, not a stream error.
        """
        try:
            first = await anext(source, _END)
        except BaseException:
            await _aclose(source)
            raise
        stream_id = rpc.new_stream_id()
        st = _OutStream(stream_id, sid, source, first, namespace=namespace, sizer=sizer)
        self._streams[stream_id] = st
        self._streams_by_sid.setdefault(sid, set()).add(stream_id)
        # The ack carrying the marker is queued when this handler returns, before
        # the task's first packet: socket.io keeps per-connection order.
        st.task = asyncio.create_task(self._pump(st))
        log_event(logger, logging.DEBUG, "stream open", sid=sid, streamId=stream_id)
        return rpc.stream_marker(stream_id)

    async def _on_hangup(self, sid: str, payload: Any = None) -> None:
        stream_id = rpc.stream_id_of(payload)
        st = self._streams.get(stream_id) if stream_id else None
        log_event(logger, logging.DEBUG, "stream hangup", sid=sid, streamId=stream_id, known=st is not None)
        if st is not None and st.sid == sid:
            self._cancel_stream(st)

    def free_streams(self, sid: str) -> int:
        """Cancel every stream of a consumer connection (another namespace's disconnect); how many."""
        ids = self._streams_by_sid.pop(sid, set())
        for stream_id in ids:
            st = self._streams.get(stream_id)
            if st is not None:
                self._cancel_stream(st)
        return len(ids)

    def _cancel_stream(self, st: _OutStream) -> None:
        if st.task is not None and not st.task.done():
            st.task.cancel()

    async def _pump(self, st: _OutStream) -> None:
        outcome = "end"
        try:
            item = st.first
            while item is not _END:
                batch, size = [item], st.sizer(item)
                item = _END
                max_items = min(PACKET_MAX_ITEMS, FIRST_PACKET_ITEMS << min(st.packets, 7))
                while len(batch) < max_items and size < PACKET_MAX_BYTES:
                    nxt = await anext(st.source, _END)
                    if nxt is _END:
                        break
                    batch.append(nxt)
                    size += st.sizer(nxt)
                else:
                    item = await anext(st.source, _END)
                await self._wait_window(st)
                await self._send_with_ack(st, rpc.EVENT_STREAM_DATA, {"streamId": st.stream_id, "data": batch})
                st.items += len(batch)
            await self._wait_window(st)
            await self._send_with_ack(st, rpc.EVENT_STREAM_END, {"streamId": st.stream_id})
            await self._wait_all_acked(st)
        except asyncio.CancelledError:
            outcome = "cancelled"   # hangup, disconnect or shutdown: nothing more to send
        except _AckTimeout:
            outcome = "ack-timeout"
            await self._send_error(st, rpc.stream_timeout_error(self.ack_timeout_ms))
        except Exception as err:   # a read error of the source is the consumer's to know (a fix: docs/protocol.md#flow-control)
            outcome = "source-error"
            logger.warning("stream %s source failed: %s", st.stream_id, err, exc_info=True)
            await self._send_error(st, err)
        finally:
            await _aclose(st.source)
            self._streams.pop(st.stream_id, None)
            ids = self._streams_by_sid.get(st.sid)
            if ids is not None:
                ids.discard(st.stream_id)
                if not ids:
                    self._streams_by_sid.pop(st.sid, None)
            log_event(logger, logging.DEBUG, "stream closed", sid=st.sid, streamId=st.stream_id,
                      outcome=outcome, packets=st.packets, items=st.items)

    async def _send_with_ack(self, st: _OutStream, event: str, payload: dict[str, Any]) -> None:
        seq = st.seq
        st.seq += 1
        st.unacked[seq] = time.monotonic() + self.ack_timeout_ms / 1000

        def on_ack(*_: Any) -> None:
            st.unacked.pop(seq, None)
            st.window = min(st.window + 1, self.max_pending_ack)
            st.acked.set()

        st.packets += 1
        if logger.isEnabledFor(logging.DEBUG):
            log_event(logger, logging.DEBUG, event, sid=st.sid, streamId=st.stream_id, seq=seq,
                      items=len(payload.get("data", ())), pending=len(st.unacked))
        await self.sio.emit(event, payload, to=st.sid, namespace=st.namespace, callback=on_ack)

    async def _wait_window(self, st: _OutStream) -> None:
        """Block while the window (at most `max_pending_ack`) is full of un-acked packets;
        raise _AckTimeout on a late ack."""
        self._check_deadlines(st)
        while len(st.unacked) >= st.window:
            await self._wait_ack(st)

    async def _wait_all_acked(self, st: _OutStream) -> None:
        try:
            while st.unacked:
                await self._wait_ack(st)
        except _AckTimeout:
            # Everything was sent and the end marker with it; a consumer that
            # stops acking now only loses our bookkeeping, so just free it.
            log_event(logger, logging.DEBUG, "stream end not acked", streamId=st.stream_id)

    async def _wait_ack(self, st: _OutStream) -> None:
        remaining = self._check_deadlines(st)
        st.acked.clear()
        try:
            await asyncio.wait_for(st.acked.wait(), remaining)
        except asyncio.TimeoutError:
            self._check_deadlines(st)

    def _check_deadlines(self, st: _OutStream) -> float:
        """Seconds until the oldest un-acked packet times out; raise if it already has."""
        if not st.unacked:
            return self.ack_timeout_ms / 1000
        remaining = min(st.unacked.values()) - time.monotonic()
        if remaining <= 0:
            raise _AckTimeout()
        return remaining

    async def _send_error(self, st: _OutStream, err: BaseException) -> None:
        try:
            await self.sio.emit(rpc.EVENT_STREAM_ERROR, {"streamId": st.stream_id, "error": rpc.flatten_error(err)},
                                to=st.sid, namespace=st.namespace)
        except Exception:  # the consumer may be gone already
            logger.debug("stream-error not delivered", exc_info=True)


async def _aclose(source: Any) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:   # closing a failed iterator must not mask the original outcome
        logger.debug("closing stream source failed", exc_info=True)
