"""The one interface every data backend implements, and its errors.

The gateway's S3 code only sees `DataBackend`: put a stream of bytes and get
back a key, read a key (whole or one inclusive byte range) as a stream,
delete a key. Which store holds the bytes (the dmd's /DataFile service,
process memory, another S3) is chosen once, in `make_data_backend`.

`HttpDataBackend` owns what the two HTTP backends (dmd.py, aws_s3.py) do the
same way: the pooled keep-alive aiohttp session, the streamed upload body
(length check, and getting the caller's own error back out of aiohttp), the
Range header of a read, and the delete retry loop. Each backend keeps its own
URLs, signing and error-answer parsing.
"""
from __future__ import annotations

import abc
import asyncio
import re
import ssl
from contextlib import AbstractAsyncContextManager
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple, NoReturn

import aiohttp

from shared.config import DEFAULT_RETRY_WINDOW_MS

KEY_HEX_LENGTH = 40  # keys are 20 random bytes in lowercase hex, named by the store
_KEY_RE = re.compile(r"[0-9a-f]{%d}" % KEY_HEX_LENGTH)

# --- HTTP backends (docs/protocol.md#data-client; the same client settings serve the aws_s3 location) ---
DELETE_ATTEMPTS = 3  # the reference's DataWrapper: MAX_RETRY = 2 retries
DELETE_RETRY_DELAY_S = 0.05  # doubled after each failed attempt
DELETE_DONE_STATUSES = (200, 204, 404)  # 404: an earlier attempt or another caller already deleted it
DELETE_MANY_CONCURRENCY = 16  # blob deletes in flight for one delete_many of a store without a batch call
FREE_SOCKET_TIMEOUT_S = 55.0  # the reference's keep-alive agent; below the dmd's 60 s
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # silence on an open exchange; an fsync of a large body fits in it
DEFAULT_MAX_CONNECTIONS = 100
READ_RETRY_DELAY_S = 0.1  # first pause of a read retried while the store is away; doubled up to the max
READ_RETRY_DELAY_MAX_S = 0.5

#: what the HTTP clients raise when the store cannot be reached or stops answering: aiohttp's
#: errors (aws_s3), and gateway/data/httpconn.py's HttpClientError (dmd), an OSError
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
#: makes one request of a backend, with these extra headers; used as `async with send(headers) as resp`
#: (an aiohttp.ClientResponse, or an httpconn.Response)
SendRequest = Callable[[dict[str, str]], AbstractAsyncContextManager[Any]]


async def _aiohttp_pieces(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk, _ in resp.content.iter_chunks():
        yield chunk


def is_valid_key(key: str) -> bool:
    """True for a key a data store could have produced (anything else cannot exist)."""
    return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None


def check_range(start: int | None, end: int | None) -> None:
    """Reject a range no caller should build (a programming error, not a client one)."""
    if (start is not None and start < 0) or (end is not None and end < 0):
        raise ValueError(f"negative byte range {start}-{end}")
    if start is not None and end is not None and start > end:
        raise ValueError(f"byte range start {start} after end {end}")


class DataError(Exception):
    """A data backend failed. `code` is the store's error name (e.g. "InternalError")."""

    def __init__(self, message: str, code: str = "InternalError", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class DataNotFound(DataError):
    """No blob under that key."""


class DataUnavailable(DataError):
    """The store could not be reached or did not answer in time (connection, timeout)."""


class DataIntegrityError(DataError):
    """The bytes do not add up: a body of the wrong length, a malformed answer from the store."""


class DataRangeNotSatisfiable(DataError):
    """The requested range starts at or past the end of the blob."""


class DataInsufficientStorage(DataError):
    """The store has no room left for the blob (507); nothing of it was kept."""


class ObjectName(NamedTuple):
    """The S3 object a put stores the bytes of: a hint for stores that name their blobs after
    it (the "named" layout of aws_s3 and azure locations); others ignore it. For a part of a
    multipart upload, `upload_id` and `part_number` say which (`commit_parts` joins them)."""
    bucket: str
    key: str
    upload_id: str | None = None
    part_number: int | None = None

    @property
    def is_part(self) -> bool:
        return self.part_number is not None


class DataBackend(abc.ABC):
    """A blob store. Keys are chosen by the store, never by the caller; a store may build them
    from the object's name (`ObjectName`), but a key always designates the bytes of this one put."""

    #: the location name written as `dataStoreName` in object metadata
    location_name: str = ""

    @abc.abstractmethod
    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        """Store the bytes `chunks` yields and return the new key.

        `size`, when given, is the exact body length; a different total raises
        DataIntegrityError. If `chunks` raises, the upload is aborted, nothing is
        stored, and the same exception propagates. `name`: the object the bytes are
        the data of (None for a part of a multipart upload).
        """

    async def exists(self, key: str) -> bool:
        """Whether the blob of `key` is still there (by default: one byte of it can be read)."""
        try:
            async for _ in self.get(key, 0, 0):
                pass
        except DataNotFound:
            return False
        return True

    async def commit_parts(self, name: ObjectName, keys: list[str]) -> list[str] | None:
        """For a store that stages the parts of an upload as pieces of the object's own blob (azure):
        join the parts of `keys` (in order) into the object `name` and return the data key of each
        piece in it. None (the default): parts stay blobs of their own, the object lists them."""
        return None

    async def copy_blob(self, key: str) -> str | None:
        """A new key naming the same bytes as `key`, without moving them (copy by reference:
        the dmd hard-links the blob). The new key is independent: deleting either leaves the
        other readable. None (the default): this store cannot, the caller streams the bytes.
        DataNotFound when `key` is absent."""
        return None

    def shares_store_with(self, other: "DataBackend") -> bool:
        """Whether keys of `other` are keys of this store too (a `copy_blob` here can take them)."""
        return other is self

    async def keeps_versions(self) -> bool:
        """Whether the bytes of several versions of one object can live side by side here (every put a
        key of its own). False for a store that names blobs after objects and keeps no versions: a
        versioning-enabled bucket cannot write there (gateway/placement.py)."""
        return True

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream a blob, or bytes start..end inclusive (end clamped to the blob's last byte).

        Errors (DataNotFound, DataRangeNotSatisfiable, DataUnavailable...) surface on
        the first iteration. Iterate to the end or `aclose()` the iterator.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove a blob. A missing key is not an error (already deleted)."""

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when the store answers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""

    async def delete_many(self, keys: list[str]) -> list[str]:
        """Remove many blobs; the keys that could not be (an absent one is not a failure). By
        default one `delete` per key, DELETE_MANY_CONCURRENCY at a time; a store with a batch call
        (the dmd's `POST /DataFile?delete`) does them in few requests."""
        failed: list[str] = []
        pending = iter(keys)

        async def worker() -> None:
            for key in pending:
                try:
                    await self.delete(key)
                except Exception:   # noqa: BLE001 - the caller logs what was not freed (orphans)
                    failed.append(key)

        await asyncio.gather(*(worker() for _ in range(min(DELETE_MANY_CONCURRENCY, len(keys)))))
        return failed


class _SourceFailed(Exception):
    """Carries the caller's own exception out of aiohttp, which wraps body errors.

    Wrapping also keeps a caller's OSError from looking like a broken connection
    to aiohttp (which would then try the request again on a fresh one).
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


class HttpDataBackend(DataBackend):
    """A DataBackend talking HTTP over one pooled aiohttp session (created on first use)."""

    def __init__(self, *, connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, headers: dict[str, str] | None = None,
                 retry_window_ms: int = DEFAULT_RETRY_WINDOW_MS, ssl_context: ssl.SSLContext | None = None,
                 socket_path: str = "") -> None:
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True   # TLS: shared/dmd_tls.py
        # A Unix-domain socket instead of TCP (the dmd on this host: DATA_SOCKET, docs/operations.md#unix-sockets).
        self._socket_path = socket_path
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._headers = dict(headers or {})   # sent with every request of the session
        self._session: aiohttp.ClientSession | None = None
        # A read that finds the store away (restart) is tried again for this long (docs/durability.md#restarts).
        self.retry_window_s = retry_window_ms / 1000

    @abc.abstractmethod
    def _unavailable(self, what: str, exc: BaseException) -> DataUnavailable:
        """The DataUnavailable for transport error `exc` during `what` (its message names the store)."""

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the loop running at creation.
        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector
            if self._socket_path:
                connector = aiohttp.UnixConnector(path=self._socket_path, limit=self._max_connections,
                                                  keepalive_timeout=FREE_SOCKET_TIMEOUT_S)
            else:
                connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=FREE_SOCKET_TIMEOUT_S,
                                                 ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers,
                                                  auto_decompress=False, skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- put ------------------------------------------------------------------------------------
    @staticmethod
    async def _sized_body(chunks: AsyncIterator[bytes], size: int | None,
                          failures: list[BaseException] | None = None) -> AsyncIterator[bytes]:
        """`chunks`, checked to add up to `size` bytes when it is known (DataIntegrityError otherwise).

        With `failures` (the body of a request): whatever goes wrong, in `chunks` or the
        check, is appended to it and raised wrapped, which makes aiohttp drop the
        connection mid-body so the store sees a short body and keeps nothing;
        `_unwrap_failure` then raises the original to the caller.
        """
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                if size is not None and sent > size:
                    raise DataIntegrityError(f"body longer than the announced {size} bytes", "IncompleteBody")
                yield chunk
            if size is not None and sent != size:
                raise DataIntegrityError(f"body of {sent} bytes, {size} announced", "IncompleteBody")
        except Exception as exc:
            if failures is None:
                raise
            failures.append(exc)
            raise _SourceFailed(exc) from exc

    def _unwrap_failure(self, exc: Exception, failures: list[BaseException], what: str) -> NoReturn:
        """Raise what really failed an upload that raised `exc`: the body's own error when
        `_sized_body` recorded one, DataUnavailable for a transport error, else `exc`."""
        if failures:  # aiohttp wraps what the body raised in its own errors; unwrap
            raise failures[0] from None
        if isinstance(exc, TRANSPORT_ERRORS):
            raise self._unavailable(what, exc) from exc
        raise exc

    # --- get ------------------------------------------------------------------------------------
    def valid_key(self, key: str) -> bool:
        """Whether this store could have produced `key` (anything else is refused without a request)."""
        return is_valid_key(key)

    def _range_headers(self, key: str, start: int | None, end: int | None) -> dict[str, str]:
        """The headers of a GET of `key` (bytes start..end inclusive, when given).

        DataNotFound for a key no store makes (no request needed), ValueError for a bad range.
        """
        check_range(start, end)
        if not self.valid_key(key):
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        if start is None and end is None:
            return {}
        return {"Range": f"bytes={start or 0}-{'' if end is None else end}"}

    async def _read_blob(self, key: str, start: int | None, end: int | None, what: str, send: SendRequest,
                         check: Callable[[Any], Awaitable[None]],
                         pieces: Callable[[Any], AsyncIterator[bytes]] | None = None) -> AsyncIterator[bytes]:
        """The body of a GET of `key` (start..end), as `DataBackend.get` streams it.

        `send(headers)` makes the request; `check(resp)` raises the store's DataError
        for an answer that does not carry the bytes asked for; `pieces(resp)` yields
        the body (default: an aiohttp response's chunks). Everything, the key
        and range checks included, happens on the first iteration; a transport
        error, even mid-body, becomes `_unavailable(what)`.
        """
        headers = self._range_headers(key, start, end)
        loop = asyncio.get_running_loop()
        window_end = loop.time() + self.retry_window_s
        delay = READ_RETRY_DELAY_S
        yielded = False
        while True:
            try:
                async with send(headers) as resp:
                    await check(resp)
                    # The pieces as the HTTP parser produced them (bounded by the session's read
                    # buffer): no re-joining into fixed-size chunks, a copy per piece saved.
                    body = pieces(resp) if pieces is not None else _aiohttp_pieces(resp)
                    async for chunk in body:
                        yielded = True
                        yield chunk
                return
            except TRANSPORT_ERRORS as exc:
                err: DataError = self._unavailable(what, exc)
                err.__cause__ = exc
            except DataUnavailable as exc:   # the store answered 502/503/504
                err = exc
            # Nothing sent yet: the store is away (a restart), try again within the window.
            # Once bytes went out the response cannot be resumed: the error is the caller's.
            if yielded or loop.time() + delay >= window_end:
                raise err
            await asyncio.sleep(delay)
            delay = min(delay * 2, READ_RETRY_DELAY_MAX_S)

    # --- delete ---------------------------------------------------------------------------------
    async def _delete_with_retries(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run `attempt` (one DELETE) up to DELETE_ATTEMPTS times, backing off between tries.

        `attempt` returns when the blob is gone (a status of DELETE_DONE_STATUSES) and
        raises the store's DataError otherwise. A 4xx error is final (retrying changes
        nothing); a 5xx or a transport error is retried, the last one raised.
        """
        delay = DELETE_RETRY_DELAY_S
        last: DataError | None = None
        for number in range(DELETE_ATTEMPTS):
            if number:
                await asyncio.sleep(delay)
                delay *= 2
            try:
                await attempt()
                return
            except DataError as err:
                if err.status is None or err.status < 500:
                    raise  # a request problem (403...): retrying changes nothing
                last = err
            except TRANSPORT_ERRORS as exc:
                last = self._unavailable(what, exc)
        assert last is not None
        raise last
