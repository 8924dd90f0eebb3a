"""The generic request layer any endpoint of the gateway runs in: request id, the error
mapping, connection hygiene and the request's log line.

The S3 endpoint (gateway/app.py) renders errors as S3 XML documents; a second endpoint
(a website endpoint) passes its own renderer. Nothing a handler raises escapes as a
traceback or a dropped connection: it becomes an error response.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.data.base import DataError, DataNotFound
from shared.errors import S3Error
from shared.log import get_logger, log_event, new_request_id
from shared.metastore.errors import MetadataError

log = get_logger("gateway")


@dataclass
class RequestRecord:
    """What the request's log line says; endpoints fill in what they learn (bucket, key, fields)."""
    request_id: str
    method: str
    resource: str                                    # the raw path, as error documents name it
    bucket: str | None = None
    key: str | None = None
    fields: dict[str, object] = field(default_factory=dict)   # recorded by handlers (leaked blobs, ...)


Endpoint = Callable[[Request, RequestRecord], Awaitable[Response]]
ErrorRenderer = Callable[[S3Error, RequestRecord], Response]


def map_internal_error(exc: Exception) -> S3Error:
    """The S3 error a failure is answered with."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, MetadataError):
        if exc.type == "ObjNotFound":
            return S3Error("NoSuchKey")
        return S3Error("InternalError")
    if isinstance(exc, DataNotFound):
        return S3Error("InternalError", "Object data is missing from the data store")
    if isinstance(exc, DataError):
        return S3Error("ServiceUnavailable", "The data store is unavailable")
    return S3Error("InternalError")


def request_fields(extra: dict[str, object], base: dict[str, object]) -> dict[str, object]:
    """The fields a handler recorded, for the request's log line. A name that the line
    already has (requestId, status, ...) is kept under "extra.<name>", never dropped."""
    return {(f"extra.{name}" if name in base else name): value for name, value in extra.items()}


def _body_left_unread(request: Request) -> bool:
    headers = request.headers
    has_body = headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in headers
    return has_body and not getattr(request, "_stream_consumed", False)


async def serve(request: Request, endpoint: Endpoint, render_error: ErrorRenderer) -> Response:
    """Run one request through `endpoint`, render whatever it raises, and log it."""
    scope = request.scope
    raw_path = (scope.get("raw_path", b"").decode("latin-1") or scope["path"]).split("?", 1)[0]
    record = RequestRecord(new_request_id(), request.method, raw_path)
    started = time.monotonic()
    try:
        response = await endpoint(request, record)
    except Exception as exc:  # every failure becomes an error document
        err = map_internal_error(exc)
        if err.code == "InternalError" or not isinstance(exc, S3Error):
            log.error("request failed", exc_info=exc, extra={"fields": {"requestId": record.request_id}})
        response = render_error(err, record)
    if response.status_code >= 300 and _body_left_unread(request):
        # The client may still send (or, with Expect: 100-continue, be waiting to send)
        # a body we never read: closing is the only way to keep the next request intact.
        response.headers["connection"] = "close"
    response.headers.setdefault("x-amz-request-id", record.request_id)
    response.headers.setdefault("x-amz-id-2", record.request_id)
    response.headers.setdefault("server", "pys3")
    line: dict[str, object] = {
        "requestId": record.request_id, "method": record.method, "bucket": record.bucket, "key": record.key,
        "status": response.status_code, "bytes": response.headers.get("content-length"),
        "elapsedMs": round((time.monotonic() - started) * 1000, 2)}
    if record.fields:
        line.update(request_fields(record.fields, line))
    log_event(log, logging.INFO, "request", **line)
    return response
