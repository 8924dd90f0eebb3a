"""`DmdDataBackend`: blobs on a dmd's `/DataFile` REST service (port 9991).

The client side of dmd-protocol.md section 6.5: one pooled keep-alive
aiohttp session per backend, streaming uploads (Content-Length when the size
is known, chunked otherwise), streaming reads with a `Range` header, deletes
retried up to 3 attempts (a 404 means already deleted). Every failure is
turned into a `DataError` subclass here, so callers never see aiohttp errors.
"""
from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, NoReturn

import aiohttp

from gateway.data.base import (DataBackend, DataError, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, DataUnavailable, check_range, is_valid_key)

SERVICE_PATH = "/DataFile"
DISK_USAGE_QUERY = "diskUsage"
DELETE_ATTEMPTS = 3  # the reference's DataWrapper: MAX_RETRY = 2 retries
DELETE_RETRY_DELAY_S = 0.05  # doubled after each failed attempt
FREE_SOCKET_TIMEOUT_S = 55.0  # the reference's keep-alive agent; below the server's 60 s
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # silence on an open exchange; an fsync of a large body fits in it
HEALTH_TIMEOUT_S = 2.0
READ_CHUNK_BYTES = 1 << 18
MAX_ERROR_BODY_BYTES = 4096

_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class _SourceFailed(Exception):
    """Carries the caller's own exception out of aiohttp, which wraps body errors."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


class DmdDataBackend(DataBackend):
    def __init__(self, host: str, port: int, location_name: str, *,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int = 100) -> None:
        self.host, self.port, self.location_name = host, port, location_name
        self.base_url = f"http://{host}:{port}{SERVICE_PATH}"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"DmdDataBackend({self.host}:{self.port}, location={self.location_name!r})"

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the loop running at creation.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=FREE_SOCKET_TIMEOUT_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  auto_decompress=False, skip_auto_headers=("User-Agent",))
        return self._session

    # --- put ------------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterator[bytes], size: int | None) -> str:
        failures: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
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
                # Raising here makes aiohttp drop the connection mid-body: the dmd sees a
                # short or unterminated body and keeps nothing.
                failures.append(exc)
                raise _SourceFailed(exc) from exc

        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)  # aiohttp then sends the body as is, not chunked
        try:
            async with self._get_session().put(self.base_url, data=body(), headers=headers) as resp:
                if resp.status != 201:
                    await self._raise_for_response(resp)
                location = resp.headers.get("Location", "")
        except Exception as exc:
            if failures:  # aiohttp wraps what the body raised in its own errors; unwrap
                raise failures[0] from None
            if isinstance(exc, _TRANSPORT_ERRORS):
                raise DataUnavailable(f"data PUT to {self.host}:{self.port} failed: {exc!r}",
                                      "ServiceUnavailable") from exc
            raise
        if failures:  # the server answered before reading the broken body
            raise failures[0]
        prefix = SERVICE_PATH + "/"
        key = location[len(prefix):] if location.startswith(prefix) else ""
        if not is_valid_key(key):
            raise DataIntegrityError(f"data PUT answered an unusable Location {location!r}")
        return key

    # --- get ------------------------------------------------------------------------------------
    async def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        if not is_valid_key(key):
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        headers = {}
        if start is not None or end is not None:
            headers["Range"] = f"bytes={start or 0}-{'' if end is None else end}"
        try:
            async with self._get_session().get(f"{self.base_url}/{key}", headers=headers) as resp:
                if resp.status not in (200, 206):
                    await self._raise_for_response(resp)
                async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
                    yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise DataUnavailable(f"data GET {key} from {self.host}:{self.port} failed: {exc!r}",
                                  "ServiceUnavailable") from exc

    # --- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        if not is_valid_key(key):
            return  # nothing can be stored under it
        url = f"{self.base_url}/{key}"
        delay = DELETE_RETRY_DELAY_S
        last: DataError | None = None
        for attempt in range(DELETE_ATTEMPTS):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._get_session().delete(url) as resp:
                    if resp.status in (200, 204, 404):  # 404: an earlier attempt or caller did it
                        return
                    try:
                        await self._raise_for_response(resp)
                    except DataError as err:
                        if resp.status < 500:
                            raise  # a request problem: retrying changes nothing
                        last = err
            except _TRANSPORT_ERRORS as exc:
                last = DataUnavailable(f"data DELETE {key} on {self.host}:{self.port} failed: {exc!r}",
                                       "ServiceUnavailable")
        assert last is not None
        raise last

    # --- misc -----------------------------------------------------------------------------------
    async def disk_usage(self) -> dict[str, int]:
        try:
            async with self._get_session().get(f"{self.base_url}?{DISK_USAGE_QUERY}") as resp:
                if resp.status != 200:
                    await self._raise_for_response(resp)
                return json.loads(await resp.read())
        except _TRANSPORT_ERRORS as exc:
            raise DataUnavailable(f"diskUsage on {self.host}:{self.port} failed: {exc!r}", "ServiceUnavailable") from exc
        except ValueError as exc:
            raise DataIntegrityError(f"diskUsage answered non-JSON: {exc}") from exc

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await self.disk_usage()
            return True
        except (DataError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        raise cls(f"data server: {code}: {message}", code, resp.status)
