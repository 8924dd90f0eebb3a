"""`DmdDataBackend`: blobs on a dmd's `/DataFile` REST service (port 9991).

The client side of the /DataFile protocol (docs/protocol.md#data-client): one pool of keep-alive
connections per backend (gateway/data/httpconn.py: a lean HTTP/1.1 client on httptools, about
half the CPU of aiohttp's per exchange), streaming uploads (Content-Length when the size is known,
chunked otherwise), streaming reads with a `Range` header, deletes retried up to 3 attempts (a 404
means already deleted), the dmd secret (when configured) in the `x-dmd-secret` header of every
request. The length check of a body, the read retry window and the delete retries are
`HttpDataBackend`'s, shared with the aws_s3 backend (which stays on aiohttp). Every failure is
turned into a `DataError` subclass here, so callers never see transport errors.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from typing import AsyncIterator, NoReturn

from gateway.data.base import (CONNECT_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, DELETE_DONE_STATUSES,
                               FREE_SOCKET_TIMEOUT_S, READ_TIMEOUT_S, TRANSPORT_ERRORS, DataBackend, DataError,
                               DataIntegrityError, DataNotFound, DataInsufficientStorage, DataRangeNotSatisfiable,
                               DataUnavailable, HttpDataBackend, ObjectName, is_valid_key)
from gateway.data.httpconn import ConnectionPool, HttpClientError, Response
from shared.config import DEFAULT_RETRY_WINDOW_MS, DMD_SECRET_HEADER

SERVICE_PATH = "/DataFile"
DISK_USAGE_QUERY = "diskUsage"
COPY_QUERY = "copy"   # POST /DataFile/<key>?copy: a hard link under a new key (docs/protocol.md#copy-by-reference)
# What a dmd without the copy call answers (the original: 405 MethodNotAllowed for any POST).
COPY_UNSUPPORTED_STATUSES = (400, 405, 501)
DELETE_MANY_QUERY = "delete"   # POST /DataFile?delete: many blobs a call (docs/protocol.md#batch-delete)
DELETE_MANY_MAX_KEYS = 1000
DELETE_MANY_UNSUPPORTED_STATUSES = (405, 501)   # the original answers 405 to any POST
MAX_DELETE_MANY_ANSWER_BYTES = 256 * 1024
HEALTH_TIMEOUT_S = 2.0
MAX_ERROR_BODY_BYTES = 4096
MAX_DISK_USAGE_BYTES = 64 * 1024
PUT_HEADERS = {"Content-Type": "application/octet-stream"}


class DmdDataBackend(HttpDataBackend):
    """Blobs as files of one dmd's /DataFile service, at host:port."""

    def __init__(self, host: str, port: int, location_name: str, *,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, secret: str = "",
                 retry_window_ms: int = DEFAULT_RETRY_WINDOW_MS, ssl_context: ssl.SSLContext | None = None,
                 socket_path: str = "") -> None:
        # socket_path: the dmd's Unix-domain socket (DATA_SOCKET); plain HTTP there (TLS is TCP only),
        # host and port unused.
        if socket_path:
            ssl_context = None
        super().__init__(connect_timeout=connect_timeout, read_timeout=read_timeout,
                         max_connections=max_connections, headers={DMD_SECRET_HEADER: secret} if secret else None,
                         retry_window_ms=retry_window_ms, ssl_context=ssl_context, socket_path=socket_path)
        self.host, self.port, self.location_name = host, port, location_name
        self.socket_path = socket_path
        self._ssl_context = ssl_context
        self._pool: ConnectionPool | None = None
        if socket_path:
            self.host, self.port = "unix", socket_path   # what messages name: "unix:<path>"
            self.base_url = f"http://localhost{SERVICE_PATH}"
        else:
            self.base_url = f"{'https' if ssl_context is not None else 'http'}://{host}:{port}{SERVICE_PATH}"
        self.copy_supported = True   # False once the dmd answered the copy call as one that lacks it
        self.delete_many_supported = True   # likewise for the batch delete

    def __repr__(self) -> str:
        return f"DmdDataBackend({self.host}:{self.port}, location={self.location_name!r})"

    def _unavailable(self, what: str, exc: BaseException) -> DataUnavailable:
        return DataUnavailable(f"{what} failed: {exc!r}", "ServiceUnavailable")

    def _get_pool(self) -> ConnectionPool:
        """The connection pool, created on first use: it belongs to the loop running then."""
        pool = self._pool
        if pool is None or pool.closed or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = ConnectionPool(
                self.host, self.port, ssl=self._ssl_context, socket_path=self.socket_path,
                max_connections=self._max_connections, connect_timeout=self._timeout.sock_connect,
                read_timeout=self._timeout.sock_read, idle_timeout=FREE_SOCKET_TIMEOUT_S, headers=self._headers)
        return pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().close()

    # --- put ------------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        failures: list[BaseException] = []
        try:
            # `size` known: sent with Content-Length, else chunked. When the caller's `chunks` raise,
            # the connection is dropped mid-body: the dmd sees a short body and keeps nothing.
            async with self._get_pool().request("PUT", SERVICE_PATH, PUT_HEADERS,
                                                self._sized_body(chunks, size, failures), size) as resp:
                if resp.status != 201:
                    await self._raise_for_response(resp)
                location = resp.headers.get("Location", "")
        except Exception as exc:
            self._unwrap_failure(exc, failures, f"data PUT to {self.host}:{self.port}")
        if failures:  # the server answered before reading the broken body
            raise failures[0]
        prefix = SERVICE_PATH + "/"
        key = location[len(prefix):] if location.startswith(prefix) else ""
        if not is_valid_key(key):
            raise DataIntegrityError(f"data PUT answered an unusable Location {location!r}")
        return key

    # --- copy by reference ------------------------------------------------------------------------
    async def copy_blob(self, key: str) -> str | None:
        """`POST /DataFile/<key>?copy`: the dmd hard-links the blob under a new key, durable before
        it answers. None when this dmd lacks the call (an original CloudServer dmd answers 405): it is
        remembered, and the callers stream the bytes from then on."""
        if not self.copy_supported:
            return None
        if not is_valid_key(key):
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        try:
            async with self._get_pool().request("POST", f"{SERVICE_PATH}/{key}?{COPY_QUERY}") as resp:
                if resp.status in COPY_UNSUPPORTED_STATUSES:
                    self.copy_supported = False
                    return None
                if resp.status != 201:
                    await self._raise_for_response(resp)
                location = resp.headers.get("Location", "")
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable(f"data copy of {key} on {self.host}:{self.port}", exc) from exc
        prefix = SERVICE_PATH + "/"
        new = location[len(prefix):] if location.startswith(prefix) else ""
        if not is_valid_key(new):
            raise DataIntegrityError(f"data copy answered an unusable Location {location!r}")
        return new

    def shares_store_with(self, other: "DataBackend") -> bool:
        """Two locations on the same dmd /DataFile service share its keys."""
        return other is self or (isinstance(other, DmdDataBackend) and other.base_url == self.base_url)

    # --- get ------------------------------------------------------------------------------------
    def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        target = f"{SERVICE_PATH}/{key}"

        def send(headers: dict[str, str]):
            return self._get_pool().request("GET", target, headers)

        async def check(resp: Response) -> None:
            if resp.status not in (200, 206):
                await self._raise_for_response(resp)

        return self._read_blob(key, start, end, f"data GET {key} from {self.host}:{self.port}", send, check,
                               Response.iter_pieces)

    # --- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return  # nothing can be stored under it
        target = f"{SERVICE_PATH}/{key}"

        async def attempt() -> None:
            async with self._get_pool().request("DELETE", target) as resp:
                if resp.status not in DELETE_DONE_STATUSES:
                    await self._raise_for_response(resp)

        await self._delete_with_retries(f"data DELETE {key} on {self.host}:{self.port}", attempt)

    async def delete_many(self, keys: list[str]) -> list[str]:
        """`POST /DataFile?delete` (docs/protocol.md#batch-delete), DELETE_MANY_MAX_KEYS keys a call,
        each call retried as a DELETE is; the keys not freed are returned. A dmd without the call
        (the original answers 405 to any POST) is remembered and gets one DELETE per key from then on."""
        failed: list[str] = []
        valid = [k for k in keys if is_valid_key(k)]   # anything else cannot be stored: nothing to free
        for start in range(0, len(valid), DELETE_MANY_MAX_KEYS):
            if not self.delete_many_supported:
                failed.extend(await super().delete_many(valid[start:]))
                break
            chunk = valid[start:start + DELETE_MANY_MAX_KEYS]
            try:
                failed.extend(await self._delete_batch(chunk))
            except DataError:
                failed.extend(chunk)
        return failed

    async def _delete_batch(self, keys: list[str]) -> list[str]:
        body = json.dumps({"keys": keys}, separators=(",", ":")).encode()
        outcome: list[str] = []

        async def attempt() -> None:
            async with self._get_pool().request("POST", f"{SERVICE_PATH}?{DELETE_MANY_QUERY}",
                                                {"Content-Type": "application/json"}, body) as resp:
                if resp.status in DELETE_MANY_UNSUPPORTED_STATUSES:
                    self.delete_many_supported = False
                    outcome[:] = await super(DmdDataBackend, self).delete_many(keys)
                    return
                if resp.status != 200:
                    await self._raise_for_response(resp)
                try:
                    doc = json.loads(await resp.read(MAX_DELETE_MANY_ANSWER_BYTES))
                    outcome[:] = [str(entry["key"]) for entry in doc["failed"]]
                except (ValueError, TypeError, KeyError) as exc:
                    raise DataIntegrityError(f"batch delete answered an unusable document: {exc}") from exc

        await self._delete_with_retries(f"data batch delete of {len(keys)} blobs on {self.host}:{self.port}",
                                        attempt)
        return outcome

    # --- misc -----------------------------------------------------------------------------------
    async def disk_usage(self) -> dict[str, int]:
        try:
            async with self._get_pool().request("GET", f"{SERVICE_PATH}?{DISK_USAGE_QUERY}") as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp)
                return json.loads(await resp.read(MAX_DISK_USAGE_BYTES))
        except TRANSPORT_ERRORS as exc:
            raise self._unavailable(f"diskUsage on {self.host}:{self.port}", exc) from exc
        except ValueError as exc:
            raise DataIntegrityError(f"diskUsage answered non-JSON: {exc}") from exc

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await self.disk_usage()
            return True
        except (DataError, TimeoutError):
            return False

    @staticmethod
    async def _raise_for_response(resp: Response) -> NoReturn:
        """Rebuild the dmd's `{"errorType","errorMessage"}` answer as a DataError."""
        code, message = "InternalError", f"HTTP {resp.status}"
        try:
            doc = json.loads(await resp.read(MAX_ERROR_BODY_BYTES))
            if isinstance(doc, dict):
                code = str(doc.get("errorType") or code)
                message = str(doc.get("errorMessage") or message)
        except (ValueError, HttpClientError):
            pass
        cls: type[DataError] = DataError
        if resp.status == 404:
            cls = DataNotFound
        elif resp.status == 416:
            cls = DataRangeNotSatisfiable
        elif resp.status in (502, 503, 504):
            cls = DataUnavailable
        elif resp.status == 507:
            cls = DataInsufficientStorage
        raise cls(f"data server: {code}: {message}", code, resp.status)
