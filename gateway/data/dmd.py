"""`DmdDataBackend`: blobs on a dmd's `/DataFile` REST service (port 9991).

The client side of the /DataFile protocol (docs/protocol.md#data-client): one pooled keep-alive
aiohttp session per backend, streaming uploads (Content-Length when the size
is known, chunked otherwise), streaming reads with a `Range` header, deletes
retried up to 3 attempts (a 404 means already deleted), the dmd secret (when configured)
in the `x-dmd-secret` header of every request; that plumbing is
`HttpDataBackend`'s, shared with the aws_s3 backend. Every failure is turned
into a `DataError` subclass here, so callers never see aiohttp errors.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from contextlib import AbstractAsyncContextManager
from typing import AsyncIterator, NoReturn

import aiohttp

from gateway.data.base import (CONNECT_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, DELETE_DONE_STATUSES, READ_TIMEOUT_S,
                               TRANSPORT_ERRORS, DataBackend, DataError, DataIntegrityError, DataNotFound,
                               DataInsufficientStorage, DataRangeNotSatisfiable, DataUnavailable, HttpDataBackend, ObjectName,
                               is_valid_key)
from shared.config import DEFAULT_RETRY_WINDOW_MS, DMD_SECRET_HEADER

SERVICE_PATH = "/DataFile"
DISK_USAGE_QUERY = "diskUsage"
COPY_QUERY = "copy"   # POST /DataFile/<key>?copy: a hard link under a new key (docs/protocol.md#copy-by-reference)
# What a dmd without the copy call answers (the original: 405 MethodNotAllowed for any POST).
COPY_UNSUPPORTED_STATUSES = (400, 405, 501)
HEALTH_TIMEOUT_S = 2.0
MAX_ERROR_BODY_BYTES = 4096


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
        if socket_path:
            self.host, self.port = "unix", socket_path   # what messages name: "unix:<path>"
            self.base_url = f"http://localhost{SERVICE_PATH}"
        else:
            self.base_url = f"{'https' if ssl_context is not None else 'http'}://{host}:{port}{SERVICE_PATH}"
        self.copy_supported = True   # False once the dmd answered the copy call as one that lacks it

    def __repr__(self) -> str:
        return f"DmdDataBackend({self.host}:{self.port}, location={self.location_name!r})"

    def _unavailable(self, what: str, exc: BaseException) -> DataUnavailable:
        return DataUnavailable(f"{what} failed: {exc!r}", "ServiceUnavailable")

    # --- put ------------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        failures: list[BaseException] = []
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)  # aiohttp then sends the body as is, not chunked
        try:
            async with self._get_session().put(self.base_url, data=self._sized_body(chunks, size, failures),
                                               headers=headers) as resp:
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
            async with self._get_session().post(f"{self.base_url}/{key}?{COPY_QUERY}") as resp:
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
        def send(headers: dict[str, str]) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
            return self._get_session().get(f"{self.base_url}/{key}", headers=headers)

        async def check(resp: aiohttp.ClientResponse) -> None:
            if resp.status not in (200, 206):
                await self._raise_for_response(resp)

        return self._read_blob(key, start, end, f"data GET {key} from {self.host}:{self.port}", send, check)

    # --- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return  # nothing can be stored under it
        url = f"{self.base_url}/{key}"

        async def attempt() -> None:
            async with self._get_session().delete(url) as resp:
                if resp.status not in DELETE_DONE_STATUSES:
                    await self._raise_for_response(resp)

        await self._delete_with_retries(f"data DELETE {key} on {self.host}:{self.port}", attempt)

    # --- misc -----------------------------------------------------------------------------------
    async def disk_usage(self) -> dict[str, int]:
        try:
            async with self._get_session().get(f"{self.base_url}?{DISK_USAGE_QUERY}") as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp)
                return json.loads(await resp.read())
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
    async def _raise_for_response(resp: aiohttp.ClientResponse) -> NoReturn:
        """Rebuild the dmd's `{"errorType","errorMessage"}` answer as a DataError."""
        code, message = "InternalError", f"HTTP {resp.status}"
        try:
            raw = await resp.content.read(MAX_ERROR_BODY_BYTES)
            doc = json.loads(raw)
            if isinstance(doc, dict):
                code = str(doc.get("errorType") or code)
                message = str(doc.get("errorMessage") or message)
        except (ValueError, aiohttp.ClientError, asyncio.TimeoutError):
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
