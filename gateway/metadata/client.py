"""The gateway's metadata client: one narrow interface, two implementations.

`MetadataClient` is all the gateway knows about metadata: put/get/delete a
value in a sublevel, read a range as a stream, and the small admin calls.
`RemoteMetadataClient` speaks the dmd's socket.io RPC (docs/protocol.md;
the wire format itself lives in `shared.rpc`): one persistent connection per
process with calls multiplexed by ack id, a per-call timeout, immediate failure
of in-flight calls when the connection drops, automatic reconnection with
back-off, and read streams with backpressure (a packet is acked only when the
local buffer has room, so a consumer that stops reading stops the producer).
`LocalMetadataClient` runs the same engine in process (S3BACKEND=mem).

Conditional writes (`ifAbsent`, `ifMatch`, `returnPrevious` in the options of a plain put or
del, docs/protocol.md#conditional-writes) are checked by the engine, atomically. Against a dmd
whose manifest does not announce them (the original's), the remote client checks them itself
with a read before the write: same answers, without the atomicity.

Every call's params are shaped as the original gateway sends them (`call_params`): the original
dmd rejects `null` params and params without `subLevel`. A failed setup (the manifest refused,
or any later step) leaves no half-open socket behind: `connect()` drops it, and the next
`connect()` starts from a fresh connection (docs/protocol.md#handshake).
"""
from __future__ import annotations

import abc
import asyncio
import contextvars
import itertools
import logging
import ssl
from collections import deque
from typing import Any, AsyncIterator, Callable

import aiohttp
import socketio

from shared import jsoncodec, rpc
from shared.config import DEFAULT_RETRY_WINDOW_MS, DMD_SECRET_AUTH_FIELD
from shared.listing import list_page
from shared.log import get_logger, log_event
from shared.metastore.errors import MetadataError

logger = get_logger("gateway.metadata")

# Packets a stream may hold locally before acks are withheld. Together with the
# server's window this bounds a stream's memory to a few hundred KiB.
STREAM_BUFFER_PACKETS = 2
BUCKET_CACHE_MAX = 10_000   # bucket records a gateway keeps (the oldest goes first)
RECONNECT_DELAY_S = 0.1
RECONNECT_DELAY_MAX_S = 2.0
# socket.io handshake budget of one connection attempt.
CONNECT_ATTEMPT_TIMEOUT_S = 2.0
HEALTH_TIMEOUT_MS = 2000
# delete_many over one `delete` per key (a dmd without deleteMany, PostgreSQL): keys in flight.
DELETE_MANY_CONCURRENCY = 128

_REQUIRED_CALLS = (rpc.CALL_PUT, rpc.CALL_GET, rpc.CALL_DEL, rpc.CALL_CREATE_READ_STREAM)
# Calls that change nothing: retried, within the retry window, when the connection is lost
# (docs/durability.md#restarts). A read stream is retried only before its first item.
IDEMPOTENT_CALLS = frozenset({rpc.CALL_GET, rpc.CALL_GET_UUID, rpc.CALL_GET_DISK_USAGE, rpc.CALL_GET_STATS,
                              rpc.CALL_CREATE_READ_STREAM, rpc.CALL_RAW_LIST_KEYS, rpc.CALL_LIST_OBJECT})
# A skipped run (versions of one key) is jumped after this many entries where a jump is a seek in
# process (the engine in the gateway), not a round trip (shared/listing/driver.py).
LOCAL_MAX_SKIP_RUN = 8
# The in-process listing reads the engine synchronously: a turn of the event loop every this many entries.
LOCAL_YIELD_EVERY = 256
# What a lost or absent connection fails a call with (a call timeout included: the dmd may be gone).
CONNECTION_ERROR_TYPES = frozenset({"ECONNRESET", "ECONNREFUSED", "ETIMEDOUT"})
RETRY_DELAY_MAX_S = 0.5


def connection_lost(call_name: str) -> MetadataError:
    return MetadataError("ECONNRESET", 503, f"connection to the metadata daemon lost during {call_name}")


#: The reqUids of the calls made on behalf of the current request (the original gateway sends its
#: request's werelogs uids with every call it makes for a request; setup calls carry none).
request_uids: contextvars.ContextVar[str | None] = contextvars.ContextVar("metadata_request_uids", default=None)


def call_params(rpc_args: list[Any], sublevel: list[str] | None, req_uids: str | None) -> dict[str, Any]:
    """The params object of a `call`, as the original gateway sends it (wire-transcript.jsonl):
    `{"rpcArgs": [...], "reqUids": "...", "subLevel": [...]}`, in that order; `reqUids` only when
    the call is made for a request (explicit, else `request_uids`), `subLevel` always (`[]` for a
    root call such as getManifest: the original dmd answers `null` params, or params without
    `subLevel`, with an error)."""
    params: dict[str, Any] = {"rpcArgs": list(rpc_args)}
    uids = req_uids or request_uids.get()
    if uids:
        params["reqUids"] = uids
    params["subLevel"] = list(sublevel or [])
    return params


class MetadataClient(abc.ABC):
    """What the gateway needs from a metadata backend (the dmd or the in-process engine)."""

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def put(self, sublevel: list[str], key: str, value: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> Any:
        """None for a plain put; the string '{"versionId":"<vid>"}' for versioned puts;
        {"previous": <value replaced or None>} with returnPrevious. A failed ifAbsent/ifMatch
        raises MetadataError("PreconditionFailed", 412)."""

    @abc.abstractmethod
    async def get(self, sublevel: list[str], key: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> str:
        """The stored value; raises MetadataError("ObjNotFound", 404) when absent."""

    @abc.abstractmethod
    async def delete(self, sublevel: list[str], key: str, options: dict | None = None, *,
                     req_uids: str | None = None) -> Any:
        """As put: ifMatch and returnPrevious apply to a plain delete."""

    async def delete_many(self, sublevel: list[str], keys: list[str], options: dict | None = None, *,
                          req_uids: str | None = None) -> list[str | None]:
        """Plain deletes of `keys` (at most rpc.MAX_DELETE_MANY_KEYS; option returnPrevious only):
        the same answers as one `delete` per key in that order. The list holds, per key, the value
        deleted (None: absent, or without returnPrevious). Bad arguments raise InvalidArgument
        before anything is deleted.

        This default runs the deletes over `delete`, DELETE_MANY_CONCURRENCY keys at a time, the
        entries of one key one after the other in order (against a dmd without deleteMany, and
        PostgreSQL). Not atomic as a whole: a failure fails the call, some deletes done."""
        keys, opts = rpc.parse_call_args(rpc.CALL_DELETE_MANY, [keys, options])
        return_previous = opts.get(rpc.OPT_RETURN_PREVIOUS)
        if any(v is not None for n, v in opts.items() if n != rpc.OPT_RETURN_PREVIOUS) \
                or (return_previous is not None and not isinstance(return_previous, bool)):
            raise MetadataError("InvalidArgument", 400, "deleteMany: the only option is returnPrevious (a boolean)")
        by_key: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            by_key.setdefault(key, []).append(index)
        results: list[str | None] = [None] * len(keys)
        limit = asyncio.Semaphore(DELETE_MANY_CONCURRENCY)

        async def run_key(key: str, indexes: list[int]) -> None:
            async with limit:
                for index in indexes:
                    reply = await self.delete(sublevel, key, {rpc.OPT_RETURN_PREVIOUS: True} if return_previous else {},
                                              req_uids=req_uids)
                    if return_previous:
                        previous = reply.get("previous") if isinstance(reply, dict) else None
                        results[index] = previous if isinstance(previous, str) else None

        await asyncio.gather(*(run_key(key, indexes) for key, indexes in by_key.items()))
        return results

    async def _delete_halves(self, sublevel: list[str], keys: list[str], options: dict | None,
                             req_uids: str | None) -> list[str | None]:
        """After a deleteMany refused as REPLY_TOO_LARGE (nothing deleted): the first half of the
        keys, then the second, each as its own delete_many; one key alone through `delete`."""
        if len(keys) <= 1:
            return await MetadataClient.delete_many(self, sublevel, keys, options, req_uids=req_uids)
        half = len(keys) // 2
        first = await self.delete_many(sublevel, keys[:half], options, req_uids=req_uids)
        return first + await self.delete_many(sublevel, keys[half:], options, req_uids=req_uids)

    @abc.abstractmethod
    def read_stream(self, sublevel: list[str], options: dict, *,
                    req_uids: str | None = None) -> AsyncIterator[Any]:
        """{key, value} items of a range (levelup options); aclose() ends it early."""

    async def get_bucket_record(self, key: str, *, req_uids: str | None = None) -> str:
        """get() of a bucket record (rpc.INVALIDATED_SUBLEVEL), which a client may answer from a
        cache it keeps coherent (RemoteMetadataClient with the dmd's bucketInvalidation extension).
        Only for reads that may be a moment behind another gateway's write: the write paths'
        checks read with get()."""
        return await self.get([rpc.INVALIDATED_SUBLEVEL], key, {}, req_uids=req_uids)

    def bucket_watch(self) -> int | None:
        """A token to take before a write into a bucket, for bucket_unchanged_since; None when this
        client keeps no coherent cache of bucket records."""
        return None

    def bucket_unchanged_since(self, key: str, token: int | None) -> str | None:
        """The cached record of bucket `key` if no bucket record changed (no invalidation, no
        reconnection) since `token` was taken, else None. Announcements travel on the connection of
        the calls, ahead of the replies that follow them: a write answered since `token` without one
        landed while the bucket held this record."""
        return None

    @abc.abstractmethod
    def raw_list_keys(self, options: dict) -> AsyncIterator[str]:
        """Physical keys of the whole database."""

    async def list_page(self, sublevel: list[str], listing_type: str, params: dict[str, Any], *,
                        req_uids: str | None = None) -> dict[str, Any]:
        """One listing page (docs/listing.md, shared/listing/page.py): `listing_type` Delimiter,
        DelimiterMaster, DelimiterVersions or MPU over `sublevel`, `params` under their wire names.
        Listed values are the listing fields (dicts), or the stored text (this default: the
        algorithm run here over read streams, as against a dmd without listObject)."""
        def open_stream(options: dict[str, Any]) -> AsyncIterator[Any]:
            return self.read_stream(sublevel, options, req_uids=req_uids)
        return await list_page(open_stream, listing_type, params, project=False)

    @abc.abstractmethod
    async def get_uuid(self) -> str: ...

    @abc.abstractmethod
    async def get_disk_usage(self) -> dict: ...

    @abc.abstractmethod
    async def healthy(self) -> bool: ...


class LocalMetadataClient(MetadataClient):
    """The engine in process: same interface, no network (S3BACKEND=mem)."""

    def __init__(self, store: Any, *, owns_store: bool = True) -> None:
        self.store = store
        self._owns_store = owns_store
        self._closed = False

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        if not self._closed and self._owns_store:
            await self.store.close()
        self._closed = True

    async def put(self, sublevel: list[str], key: str, value: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> str | None:
        return await self.store.put(sublevel, key, value, options or {})

    async def get(self, sublevel: list[str], key: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> str:
        return await self.store.get(sublevel, key, options or {})

    async def delete(self, sublevel: list[str], key: str, options: dict | None = None, *,
                     req_uids: str | None = None) -> str | None:
        return await self.store.delete(sublevel, key, options or {})

    async def delete_many(self, sublevel: list[str], keys: list[str], options: dict | None = None, *,
                          req_uids: str | None = None) -> list[str | None]:
        """The engine's deleteMany, in process (one delete per key when the values are too large)."""
        try:
            reply = await self.store.delete_many(sublevel, keys, options or {})
        except MetadataError as exc:
            if exc.type != rpc.REPLY_TOO_LARGE:
                raise
            return await self._delete_halves(sublevel, keys, options, req_uids)
        return [None] * len(keys) if reply is None else reply

    async def read_stream(self, sublevel: list[str], options: dict, *,
                          req_uids: str | None = None) -> AsyncIterator[Any]:
        source = self.store.read_stream(sublevel, options or {})
        try:
            async for item in source:
                yield item
        finally:
            await source.aclose()

    async def list_page(self, sublevel: list[str], listing_type: str, params: dict[str, Any], *,
                        req_uids: str | None = None) -> dict[str, Any]:
        """The dmd's listObject, in process: the shared listing over the engine's streams."""
        with self.store.scanner(sublevel) as scan:   # synchronous, one entry at a time
            return await list_page(scan, listing_type, params, max_skip_run=LOCAL_MAX_SKIP_RUN,
                                   yield_every=LOCAL_YIELD_EVERY)

    async def raw_list_keys(self, options: dict) -> AsyncIterator[str]:
        source = self.store.raw_list_keys(options or {})
        try:
            async for key in source:
                yield key
        finally:
            await source.aclose()

    async def get_uuid(self) -> str:
        return await self.store.get_uuid()

    async def get_disk_usage(self) -> dict:
        return await self.store.get_disk_usage()

    async def healthy(self) -> bool:
        return not self._closed


def _expire(fut: asyncio.Future, name: str) -> None:
    if not fut.done():
        fut.set_exception(rpc.timeout_error(name))


class _InStream:
    """Client-side state of one incoming read stream."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.packets: deque[list[Any]] = deque()
        self.ended = False
        self.closed = False
        self.error: MetadataError | None = None
        self.data = asyncio.Event()   # something for the consumer
        self.room = asyncio.Event()   # the consumer took a packet

    def fail(self, err: MetadataError) -> None:
        if self.error is None and not self.ended:
            self.error = err
        self.data.set()
        self.room.set()


class RemoteMetadataClient(MetadataClient):
    """The dmd's socket.io RPC, one persistent multiplexed connection."""

    def __init__(self, host: str, port: int, call_timeout_ms: int = rpc.DEFAULT_CALL_TIMEOUT_MS, *,
                 stream_buffer_packets: int = STREAM_BUFFER_PACKETS,
                 reconnect_delay_s: float = RECONNECT_DELAY_S,
                 reconnect_delay_max_s: float = RECONNECT_DELAY_MAX_S, secret: str = "",
                 retry_window_ms: int = DEFAULT_RETRY_WINDOW_MS, ssl_context: ssl.SSLContext | None = None,
                 socket_path: str = "") -> None:
        # A Unix-domain socket (METADATA_SOCKET, docs/operations.md#unix-sockets): the websocket goes over
        # an aiohttp session on a UnixConnector (a new one per connection: engine.io closes its session
        # on a disconnect); host and port are unused, and so is TLS (TCP only, shared/dmd_tls.py).
        # Otherwise TLS to the dmd: https, the context given to the websocket connection.
        self.socket_path = socket_path
        if socket_path:
            ssl_context = None
            self.url = f"unix:{socket_path}"   # for messages and logs
            self._connect_url = "http://localhost"
        else:
            self.url = self._connect_url = f"{'https' if ssl_context is not None else 'http'}://{host}:{port}"
        # The dmd secret, sent as the handshake's auth payload (also on every reconnection).
        self._auth = {DMD_SECRET_AUTH_FIELD: secret} if secret else None
        self.call_timeout_ms = call_timeout_ms
        # How long an idempotent call keeps trying while the dmd is away (restart, network blip).
        self.retry_window_ms = retry_window_ms
        self.stream_buffer_packets = stream_buffer_packets
        self.manifest: dict[str, Any] | None = None
        self.conditional_writes = False   # the dmd checks put/del conditions itself (manifest extension)
        self.list_object = False          # the dmd computes listing pages itself (listObject in its manifest)
        self.delete_many_call = False     # the dmd deletes many keys in one call (deleteMany in its manifest)
        # Bucket records cached while connected to a dmd that announces every change of them
        # (rpc.EXTENSION_BUCKET_INVALIDATION); _bucket_gen counts invalidations, so that a read
        # that overlapped one is not cached.
        self._bucket_cache_on = False
        self._bucket_cache: dict[str, str] = {}
        self._bucket_gen = 0
        self._sio = socketio.AsyncClient(reconnection=True, reconnection_attempts=0,
                                         reconnection_delay=reconnect_delay_s,
                                         reconnection_delay_max=reconnect_delay_max_s,
                                         randomization_factor=0.5, logger=False, engineio_logger=False,
                                         json=jsoncodec, serializer=jsoncodec.RpcPacket,
                                         websocket_extra_options={"ssl": ssl_context} if ssl_context else {},
                                         **({"http_session": self._unix_session} if socket_path else {}))
        self._reconnect_delay_s = reconnect_delay_s
        self._reconnect_delay_max_s = reconnect_delay_max_s
        self._connected = asyncio.Event()
        self._closing = False
        self._ids = itertools.count()
        self._inflight: dict[int, tuple[str, asyncio.Future]] = {}
        self._streams: dict[str, _InStream] = {}
        self._reconnect_task: asyncio.Task | None = None
        self._dropping = False   # connect() is dropping a failed setup's connection on purpose
        ns = rpc.NAMESPACE
        self._sio.on("connect", self._on_connect, namespace=ns)
        self._sio.on("disconnect", self._on_disconnect, namespace=ns)
        # python-socketio's event when it will not reconnect by itself (the
        # server said "disconnect"): we still want the daemon back.
        self._sio.on("__disconnect_final", self._on_disconnect_final, namespace=ns)
        self._sio.on(rpc.EVENT_STREAM_DATA, self._on_stream_data, namespace=ns)
        self._sio.on(rpc.EVENT_STREAM_END, self._on_stream_end, namespace=ns)
        self._sio.on(rpc.EVENT_STREAM_ERROR, self._on_stream_error, namespace=ns)
        self._sio.on(rpc.EVENT_INVALIDATE, self._on_invalidate, namespace=ns)

    # ---- connection ------------------------------------------------------------

    def _unix_session(self) -> aiohttp.ClientSession:
        """engine.io's session factory when the dmd is reached through a Unix-domain socket."""
        return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.socket_path))

    async def connect(self) -> None:
        """Connect (retrying with back-off for up to the call timeout), then fetch the manifest.

        Always from a fresh connection: one left by an earlier, failed setup is dropped first (the
        caller retries setup after a failure of any step). A refused or failed manifest drops the
        connection before raising, so the caller's next attempt reconnects instead of finding the
        socket "Already connected"."""
        await self._drop_connection()
        try:
            await self._connect_with_backoff(self.call_timeout_ms / 1000)
        except socketio.exceptions.ConnectionError as err:
            raise MetadataError("ECONNREFUSED", 503,
                                f"cannot connect to the metadata daemon at {self.url}: {err}") from err
        try:
            manifest = await self._call_once(rpc.CALL_GET_MANIFEST, [], [])
            names = {entry.get("name") for entry in manifest.get("api", []) if isinstance(entry, dict)} \
                if isinstance(manifest, dict) else set()
            missing = [n for n in _REQUIRED_CALLS if n not in names]
            if missing:
                raise MetadataError("InternalError", 500, f"metadata daemon manifest lacks {missing}")
        except BaseException as exc:
            log_event(logger, logging.WARNING, "metadata manifest failed, dropping the connection",
                      url=self.url, error=str(exc))
            await self._drop_connection()
            raise
        self.manifest = manifest
        self.conditional_writes = rpc.supports(manifest, rpc.EXTENSION_CONDITIONAL_WRITES)
        self._forget_buckets()
        self._bucket_cache_on = rpc.supports(manifest, rpc.EXTENSION_BUCKET_INVALIDATION)
        self.list_object = rpc.offers(manifest, rpc.CALL_LIST_OBJECT)
        self.delete_many_call = rpc.offers(manifest, rpc.CALL_DELETE_MANY)

    async def _drop_connection(self) -> None:
        """Close the socket on purpose and stop any reconnection loop (ours or python-socketio's),
        so that the next connect is the only one."""
        ours = self._reconnect_task
        if ours is not None and not ours.done():
            ours.cancel()
            await asyncio.gather(ours, return_exceptions=True)
        self._reconnect_task = None
        if not self._sio.connected and self._sio.eio.state == "disconnected" \
                and not getattr(self._sio, "_reconnect_task", None):
            return
        self._dropping = True
        try:
            await self._sio.shutdown()   # disconnects, or aborts python-socketio's reconnection loop
        except Exception:   # a socket already half gone: what matters is that it is gone
            log_event(logger, logging.DEBUG, "metadata disconnect failed", url=self.url)
        finally:
            self._dropping = False
        self._connected.clear()
        self.manifest = None

    async def _connect_with_backoff(self, budget_s: float | None) -> None:
        """Connect attempts with exponential back-off; raise the last error once `budget_s` is spent."""
        loop = asyncio.get_running_loop()
        deadline = None if budget_s is None else loop.time() + budget_s
        delay = self._reconnect_delay_s
        while not self._closing:
            try:
                await self._sio.connect(self._connect_url, namespaces=[rpc.NAMESPACE], transports=["websocket"],
                                        socketio_path=rpc.SOCKETIO_PATH, wait_timeout=CONNECT_ATTEMPT_TIMEOUT_S,
                                        auth=self._auth)
                return
            except socketio.exceptions.ConnectionError:
                if deadline is not None and loop.time() + delay >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_delay_max_s)

    async def _on_disconnect_final(self, *_: Any) -> None:
        if self._closing or self._dropping or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.create_task(self._reconnect_forever())

    async def _reconnect_forever(self) -> None:
        # Give python-socketio time to finish tearing the old connection down.
        await asyncio.sleep(self._reconnect_delay_s)
        try:
            await self._connect_with_backoff(None)
        except Exception:   # the socket.io client in an unexpected state: its own loop may be at work
            logger.warning("metadata reconnect loop ended", exc_info=True)

    async def close(self) -> None:
        self._closing = True
        self._fail_all(MetadataError("ECONNRESET", 503, "metadata client closed"))
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            await asyncio.gather(self._reconnect_task, return_exceptions=True)
        await self._sio.shutdown()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _on_connect(self) -> None:
        self._connected.set()
        log_event(logger, logging.DEBUG, "metadata connected", url=self.url)

    async def _on_disconnect(self, *_: Any) -> None:
        self._connected.clear()
        self._forget_buckets()   # invalidations sent while we are away are lost
        # Nothing in flight can be answered on a new connection: fail it now
        # rather than at its timeout.
        self._fail_all(None)
        if not self._closing and not self._dropping:
            log_event(logger, logging.WARNING, "metadata connection lost, reconnecting", url=self.url)

    # ---- bucket records cache (rpc.EXTENSION_BUCKET_INVALIDATION) -----------------

    def _forget_buckets(self) -> None:
        self._bucket_gen += 1
        self._bucket_cache.clear()

    async def _on_invalidate(self, payload: Any = None) -> None:
        key = payload.get("key") if isinstance(payload, dict) else None
        self._bucket_gen += 1
        if isinstance(key, str):
            self._bucket_cache.pop(key, None)
        else:   # not ours to understand: forget everything
            self._bucket_cache.clear()

    async def get_bucket_record(self, key: str, *, req_uids: str | None = None) -> str:
        if not self._bucket_cache_on:
            return await self.get([rpc.INVALIDATED_SUBLEVEL], key, {}, req_uids=req_uids)
        cached = self._bucket_cache.get(key)
        if cached is not None:
            return cached
        generation = self._bucket_gen
        value = await self.get([rpc.INVALIDATED_SUBLEVEL], key, {}, req_uids=req_uids)
        # An invalidation (or a reconnection) while the read was out may mean `value` is older
        # than what the dmd holds now: keep it only if none came.
        if generation == self._bucket_gen and self._bucket_cache_on and isinstance(value, str):
            if len(self._bucket_cache) >= BUCKET_CACHE_MAX:
                self._bucket_cache.pop(next(iter(self._bucket_cache)))
            self._bucket_cache[key] = value
        return value

    def bucket_watch(self) -> int | None:
        return self._bucket_gen if self._bucket_cache_on else None

    def bucket_unchanged_since(self, key: str, token: int | None) -> str | None:
        if token is None or token != self._bucket_gen or not self._bucket_cache_on:
            return None
        return self._bucket_cache.get(key)

    def _fail_all(self, err: MetadataError | None) -> None:
        for name, fut in list(self._inflight.values()):
            if not fut.done():
                fut.set_exception(err or connection_lost(name))
        for st in list(self._streams.values()):
            st.fail(err or connection_lost(rpc.CALL_CREATE_READ_STREAM))

    # ---- calls -----------------------------------------------------------------

    def _retryable(self, name: str, err: MetadataError) -> bool:
        return name in IDEMPOTENT_CALLS and err.type in CONNECTION_ERROR_TYPES and not self._closing

    async def _call(self, name: str, rpc_args: list[Any], sublevel: list[str] | None,
                    req_uids: str | None = None) -> Any:
        """One RPC with the retry policy: an idempotent call whose connection is lost (or absent)
        is tried again until the retry window is spent; anything else fails at once."""
        if name not in IDEMPOTENT_CALLS:
            return await self._call_once(name, rpc_args, sublevel, req_uids)
        loop = asyncio.get_running_loop()
        window_end = loop.time() + self.retry_window_ms / 1000
        delay = self._reconnect_delay_s
        while True:
            try:
                return await self._call_once(name, rpc_args, sublevel, req_uids, window_end)
            except MetadataError as err:
                if not self._retryable(name, err) or loop.time() + delay >= window_end:
                    raise
            log_event(logger, logging.DEBUG, "metadata call retried", call=name, url=self.url)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX_S)

    async def _call_once(self, name: str, rpc_args: list[Any], sublevel: list[str] | None,
                         req_uids: str | None = None, window_end: float | None = None) -> Any:
        """One RPC: (error, result) ack -> result, or raise MetadataError.

        While disconnected it waits for the reconnection until the call timeout or, sooner, the
        end of the retry window (a write never waits longer than the window either)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_timeout_ms / 1000
        if window_end is None:
            window_end = loop.time() + self.retry_window_ms / 1000
        connect_deadline = min(deadline, window_end)
        params = call_params(rpc_args, sublevel, req_uids)
        fut: asyncio.Future = loop.create_future()
        call_id = next(self._ids)
        on_ack = self._ack_handler(name, fut)
        try:
            while True:
                if self._closing:
                    raise MetadataError("ECONNRESET", 503, "metadata client closed")
                if not self._connected.is_set():
                    # Calls made while disconnected wait for the reconnection.
                    try:
                        await asyncio.wait_for(self._connected.wait(), max(connect_deadline - loop.time(), 0))
                    except asyncio.TimeoutError:
                        if connect_deadline < deadline:
                            raise MetadataError("ECONNREFUSED", 503,
                                                f"metadata daemon at {self.url} unreachable for {name}") from None
                        raise rpc.timeout_error(name) from None
                self._inflight[call_id] = (name, fut)
                try:
                    await self._sio.emit(rpc.EVENT_CALL, (name, params), namespace=rpc.NAMESPACE,
                                         callback=on_ack)
                    break
                except (socketio.exceptions.BadNamespaceError, socketio.exceptions.ConnectionError):
                    # Lost between the check and the send: wait for the next connection.
                    self._inflight.pop(call_id, None)
                    self._connected.clear()
            # A timer rather than wait_for: no extra task per call on the hot path.
            timer = loop.call_later(max(deadline - loop.time(), 0), _expire, fut, name)
            try:
                return await fut
            finally:
                timer.cancel()
        finally:
            self._inflight.pop(call_id, None)

    def _ack_handler(self, name: str, fut: asyncio.Future) -> Callable[..., None]:
        def on_ack(*data: Any) -> None:
            err = data[0] if data else None
            result = data[1] if len(data) > 1 else None
            stream_id = rpc.parse_stream_marker(result) if name in rpc.STREAM_CALLS and not err else None
            if fut.done():
                # A late ack (after the timeout or a failure) is ignored; a stream
                # it opened would never be read, so tell the server to drop it.
                if stream_id is not None:
                    asyncio.ensure_future(self._hangup(stream_id))
                return
            if err:
                fut.set_exception(rpc.unflatten_error(err))
                return
            if stream_id is not None:
                # Registered here, not in the caller, because stream-data may be
                # handled before the caller's task resumes.
                self._streams[stream_id] = _InStream(stream_id)
            fut.set_result(result)
        return on_ack

    async def put(self, sublevel: list[str], key: str, value: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> Any:
        if rpc.has_conditions(options) and not self.conditional_writes:
            return await self._emulated(rpc.CALL_PUT, sublevel, key, value, options or {}, req_uids)
        return await self._call(rpc.CALL_PUT, [key, value, options or {}], sublevel, req_uids)

    async def get(self, sublevel: list[str], key: str, options: dict | None = None, *,
                  req_uids: str | None = None) -> str:
        return await self._call(rpc.CALL_GET, [key, options or {}], sublevel, req_uids)

    async def delete(self, sublevel: list[str], key: str, options: dict | None = None, *,
                     req_uids: str | None = None) -> Any:
        if rpc.has_conditions(options) and not self.conditional_writes:
            return await self._emulated(rpc.CALL_DEL, sublevel, key, None, options or {}, req_uids)
        return await self._call(rpc.CALL_DEL, [key, options or {}], sublevel, req_uids)

    async def delete_many(self, sublevel: list[str], keys: list[str], options: dict | None = None, *,
                          req_uids: str | None = None) -> list[str | None]:
        """One deleteMany call when the dmd's manifest offers it; otherwise one `del` per key (the
        default). Like `del`, never retried: a retry after a lost answer would find the keys gone
        and answer null for them, so their data would never be freed."""
        if not self.delete_many_call:
            return await super().delete_many(sublevel, keys, options, req_uids=req_uids)
        try:
            reply = await self._call(rpc.CALL_DELETE_MANY, [list(keys), options or {}], sublevel, req_uids)
        except MetadataError as exc:
            if exc.type != rpc.REPLY_TOO_LARGE:
                raise
            return await self._delete_halves(sublevel, keys, options, req_uids)
        if reply is None:
            return [None] * len(keys)
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise MetadataError("InternalError", 500, f"deleteMany reply is not a list of {len(keys)} values")
        return reply

    async def _emulated(self, name: str, sublevel: list[str], key: str, value: str | None,
                        options: dict[str, Any], req_uids: str | None) -> Any:
        """A conditional put/del on a dmd without the extension: read, check, write (not atomic)."""
        plain = {k: v for k, v in options.items() if k not in rpc.CONDITION_OPTIONS}
        try:
            current: str | None = await self._call(rpc.CALL_GET, [key, {}], sublevel, req_uids)
        except MetadataError as exc:
            if exc.type != "ObjNotFound":
                raise
            current = None
        if options.get(rpc.OPT_IF_ABSENT) and current is not None:
            raise MetadataError(rpc.PRECONDITION_FAILED, 412, "the key exists")
        expected = options.get(rpc.OPT_IF_MATCH)
        if expected is not None and current != expected:
            raise MetadataError(rpc.PRECONDITION_FAILED, 412, "the stored value differs")
        args = [key, plain] if value is None else [key, value, plain]
        await self._call(name, args, sublevel, req_uids)
        return {"previous": current} if options.get(rpc.OPT_RETURN_PREVIOUS) else None

    async def list_page(self, sublevel: list[str], listing_type: str, params: dict[str, Any], *,
                        req_uids: str | None = None) -> dict[str, Any]:
        """One listing page: the dmd's listObject (one round trip, projected values) when its
        manifest offers it; otherwise the algorithm here over createReadStream (the original dmd)."""
        if not self.list_object:
            return await super().list_page(sublevel, listing_type, params, req_uids=req_uids)
        page = await self._call(rpc.CALL_LIST_OBJECT, [{**params, "listingType": listing_type}], sublevel, req_uids)
        return jsoncodec.loads(page) if isinstance(page, str) else page   # the page as one JSON text

    async def get_uuid(self) -> str:
        return await self._call(rpc.CALL_GET_UUID, [], [])

    async def get_disk_usage(self) -> dict:
        return await self._call(rpc.CALL_GET_DISK_USAGE, [], [])

    async def get_stats(self) -> dict:
        """The dmd's batch and stream statistics (our extension, `getStats`)."""
        return await self._call(rpc.CALL_GET_STATS, [], [])

    async def healthy(self) -> bool:
        if not self._connected.is_set():
            return False
        try:
            await asyncio.wait_for(self.get_uuid(), HEALTH_TIMEOUT_MS / 1000)
            return True
        except (MetadataError, asyncio.TimeoutError):
            return False

    # ---- streams (docs/protocol.md#read-streams) ------------------------------------

    def read_stream(self, sublevel: list[str], options: dict, *,
                    req_uids: str | None = None) -> AsyncIterator[Any]:
        return self._stream(rpc.CALL_CREATE_READ_STREAM, [options or {}], sublevel, req_uids)

    def raw_list_keys(self, options: dict) -> AsyncIterator[str]:
        return self._stream(rpc.CALL_RAW_LIST_KEYS, [options or {}], [], None)

    async def _stream(self, name: str, rpc_args: list[Any], sublevel: list[str],
                      req_uids: str | None) -> AsyncIterator[Any]:
        """The items of a stream call; a connection lost before the first item is retried (as
        `_call` retries), after it the error is the consumer's (it cannot be resumed)."""
        loop = asyncio.get_running_loop()
        window_end = loop.time() + self.retry_window_ms / 1000
        delay = self._reconnect_delay_s
        yielded = False
        while True:
            inner = self._stream_once(name, rpc_args, sublevel, req_uids)
            try:
                async for item in inner:
                    yielded = True
                    yield item
                return
            except MetadataError as err:
                if yielded or not self._retryable(name, err) or loop.time() + delay >= window_end:
                    raise
            finally:
                await inner.aclose()   # an early aclose() of ours must hang the stream up now
            log_event(logger, logging.DEBUG, "metadata stream retried", call=name, url=self.url)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX_S)

    async def _stream_once(self, name: str, rpc_args: list[Any], sublevel: list[str],
                           req_uids: str | None) -> AsyncIterator[Any]:
        marker = await self._call_once(name, rpc_args, sublevel, req_uids)
        stream_id = rpc.parse_stream_marker(marker)
        st = self._streams.get(stream_id) if stream_id else None
        if st is None:
            raise MetadataError("InternalError", 500, f"{name} reply carries no stream: {str(marker)[:200]}")
        try:
            while True:
                if st.packets:
                    packet = st.packets.popleft()
                    st.room.set()
                    for item in packet:
                        yield item
                elif st.error is not None:
                    raise st.error
                elif st.ended:
                    return
                else:
                    st.data.clear()
                    await st.data.wait()
        finally:
            st.closed = True
            st.room.set()
            self._streams.pop(stream_id, None)
            if not st.ended and st.error is None:
                await self._hangup(stream_id)

    async def _hangup(self, stream_id: str) -> None:
        if not self._connected.is_set():
            return   # the server frees streams of a lost connection itself
        try:
            await self._sio.emit(rpc.EVENT_STREAM_HANGUP, {"streamId": stream_id}, namespace=rpc.NAMESPACE)
        except (socketio.exceptions.BadNamespaceError, socketio.exceptions.ConnectionError):
            pass

    async def _on_stream_data(self, payload: Any = None) -> None:
        stream_id = rpc.stream_id_of(payload)
        st = self._streams.get(stream_id) if stream_id else None
        if st is None:
            # A stream we no longer read (closed, timed out): ask the producer to stop.
            log_event(logger, logging.DEBUG, "stream-data for unknown stream", streamId=stream_id)
            if stream_id:
                await self._hangup(stream_id)
            return
        data = payload.get("data")
        st.packets.append(data if isinstance(data, list) else [data])
        st.data.set()
        # The return value is the ack: withhold it while the local buffer is full.
        while len(st.packets) > self.stream_buffer_packets and not st.closed:
            st.room.clear()
            await st.room.wait()

    async def _on_stream_end(self, payload: Any = None) -> None:
        st = self._streams.get(rpc.stream_id_of(payload) or "")
        if st is not None:
            st.ended = True
            st.data.set()

    async def _on_stream_error(self, payload: Any = None) -> None:
        st = self._streams.get(rpc.stream_id_of(payload) or "")
        if st is not None:
            err = payload.get("error") if isinstance(payload, dict) else None
            st.fail(rpc.unflatten_error(err))
