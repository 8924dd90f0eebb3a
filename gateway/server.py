"""The generic request layer any endpoint of the gateway runs in: request id, the error
mapping, connection hygiene and the request's log line.

The S3 endpoint (gateway/app.py) renders errors as S3 XML documents; a second endpoint
(a website endpoint) passes its own renderer. Nothing a handler raises escapes as a
traceback or a dropped connection: it becomes an error response.
"""
from __future__ import annotations

import asyncio
import http
import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.data.base import DataError, DataInsufficientStorage, DataNotFound
from gateway.limits import HttpLimits
from gateway.xml import root, sub, to_bytes
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
# Run on every response, error documents included, before it is logged (CORS headers).
Finisher = Callable[[Request, Response, RequestRecord], Awaitable[None]]


def hostname_of(host: str) -> str:
    """The lower-cased host name of a Host header, without its port ("[::1]:8000" -> "[::1]")."""
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return hostname.lower()


def map_internal_error(exc: Exception) -> S3Error:
    """The S3 error a failure is answered with."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, ClientDisconnect):
        # The client went away before its body was complete (or its body could not be parsed:
        # the connection answered BadRequest): nobody reads this answer, the log line says why.
        return S3Error("IncompleteBody")
    if isinstance(exc, MetadataError):
        if exc.type == "ObjNotFound":
            return S3Error("NoSuchKey")
        if exc.type == "InsufficientStorage" or exc.code == 507:
            return S3Error("InsufficientStorage")
        if exc.type in ("ECONNRESET", "ECONNREFUSED", "ETIMEDOUT") or exc.code == 503:
            # The dmd is away (restart) or the outcome of a write is unknown: SDKs retry a 503.
            return S3Error("ServiceUnavailable", "The metadata service is unavailable")
        return S3Error("InternalError")
    if isinstance(exc, DataInsufficientStorage) or (isinstance(exc, DataError) and exc.status == 507):
        return S3Error("InsufficientStorage")
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


# What a response header value may not hold (uvicorn refuses it and drops the connection):
# control characters but TAB, among them CR and LF (no header injection).
FORBIDDEN_IN_HEADER_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_FORBIDDEN_IN_RAW_HEADER_VALUE = re.compile(FORBIDDEN_IN_HEADER_VALUE.pattern.encode("latin-1"))


def sendable_header(value: str) -> bool:
    """Whether `value` can be sent as an HTTP header value (ISO-8859-1, no control character)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not FORBIDDEN_IN_HEADER_VALUE.search(value)


# What a URL may hold as it is (RFC 3986 reserved and unreserved characters, and `%`).
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def location_header(url: str) -> str:
    """`url` as a Location header value: what a URL cannot hold (a space, a control character,
    non-ASCII) percent-encoded, as a browser would, so the header is always sendable."""
    return quote(url, safe=_URL_SAFE)


def _unsendable_header(response: Response) -> bool:
    return _FORBIDDEN_IN_RAW_HEADER_VALUE.search(b"\t".join([value for _, value in response.raw_headers])) is not None


def _render(render_error: ErrorRenderer, err: S3Error, record: RequestRecord) -> Response:
    """The endpoint's error document; a bare InternalError document if even that fails."""
    try:
        response = render_error(err, record)
        if not _unsendable_header(response):
            return response
        raise RuntimeError("error response header value not sendable")
    except Exception as exc:
        log.error("error rendering failed", exc_info=exc, extra={"fields": {"requestId": record.request_id}})
        body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>'
                b"We encountered an internal error. Please try again.</Message></Error>")
        return Response(body, status_code=500, media_type="application/xml")


async def serve(request: Request, endpoint: Endpoint, render_error: ErrorRenderer,
                finish: Finisher | None = None) -> Response:
    """Run one request through `endpoint`, render whatever it raises, `finish` the response, log it."""
    scope = request.scope
    raw_path = (scope.get("raw_path", b"").decode("latin-1") or scope["path"]).split("?", 1)[0]
    record = RequestRecord(new_request_id(), request.method, raw_path)
    started = time.monotonic()
    try:
        response = await endpoint(request, record)
        if _unsendable_header(response):
            # uvicorn would refuse it mid-response and drop the connection: a 500 instead.
            raise RuntimeError(f"response header value not sendable: {response.raw_headers!r:.500}")
    except Exception as exc:  # every failure becomes an error document
        err = map_internal_error(exc)
        if err.code == "InternalError" or not isinstance(exc, (S3Error, ClientDisconnect)):
            log.error("request failed", exc_info=exc, extra={"fields": {"requestId": record.request_id}})
        response = _render(render_error, err, record)
    if finish is not None:
        try:
            await finish(request, response, record)
        except Exception as exc:   # the answer stands as it is
            log.error("finishing the response failed", exc_info=exc, extra={"fields": {"requestId": record.request_id}})
    if response.status_code >= 300 and _body_left_unread(request):
        # The client may still send (or, with Expect: 100-continue, be waiting to send)
        # a body we never read: closing is the only way to keep the next request intact.
        response.headers["connection"] = "close"
    content_length = _add_default_headers(response.raw_headers, record.request_id)
    if log.isEnabledFor(logging.INFO):   # the line is built only when it is written
        line: dict[str, object] = {
            "requestId": record.request_id, "method": record.method, "bucket": record.bucket, "key": record.key,
            "status": response.status_code, "bytes": content_length,
            "elapsedMs": round((time.monotonic() - started) * 1000, 2)}
        if record.fields:
            line.update(request_fields(record.fields, line))
        log_event(log, logging.INFO, "request", **line)
    return response


def _add_default_headers(raw_headers: list[tuple[bytes, bytes]], request_id: str) -> str | None:
    """x-amz-request-id, x-amz-id-2 (the request id) and server (pys3) unless the response has
    them, as `response.headers.setdefault` would add them, in one pass over the raw list (which
    Starlette's MutableHeaders views); returns the first Content-Length value (None if absent)."""
    has_id = has_id2 = has_server = False
    content_length = None
    for name, value in raw_headers:
        if name == b"x-amz-request-id":
            has_id = True
        elif name == b"x-amz-id-2":
            has_id2 = True
        elif name == b"server":
            has_server = True
        elif name == b"content-length" and content_length is None:
            content_length = value.decode("latin-1")
    if not (has_id and has_id2):
        encoded = request_id.encode("latin-1")
        if not has_id:
            raw_headers.append((b"x-amz-request-id", encoded))
        if not has_id2:
            raw_headers.append((b"x-amz-id-2", encoded))
    if not has_server:
        raw_headers.append((b"server", b"pys3"))
    return content_length


# ------------------------------------------------------------ the connection (uvicorn + httptools)

LINGER_S = 2.0   # after refusing a request head: how long its remaining bytes are read and dropped
COALESCE_MAX_BYTES = 64 * 1024   # a first body write up to this size goes out with the head, in one send


class HeadCoalescingTransport:
    """The connection's transport as one request's uvicorn cycle sees it: the response head (the
    cycle's first write once its response has started) is held, and goes out with the first body
    write in one send: a small GET answer is one syscall and one segment, not two. The head is
    never held longer than the current event-loop step (a callback sends it then), nor past a
    close or the end of the response; everything else passes through unchanged."""

    __slots__ = ("transport", "cycle", "loop", "held", "head_seen", "on_response")

    def __init__(self, transport: Any, cycle: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.cycle, self.loop = transport, cycle, loop
        self.held: bytes | None = None
        self.head_seen = False
        self.on_response: Callable[[], None] = cycle.on_response

    def response_complete(self) -> None:
        """The cycle's on_response: a HEAD answer has no body write, its head goes now."""
        self.flush()
        self.on_response()

    def write(self, data: Any) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if len(data) <= COALESCE_MAX_BYTES:
                self.transport.write(b"".join((held, data)))
                return
            self.transport.write(held)
        elif not self.head_seen and self.cycle.response_started:
            self.head_seen = True
            self.held = data
            self.loop.call_soon(self.flush)
            return
        self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            if not self.transport.is_closing():
                self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits httptools does not have (gateway/limits.py):

    - the request line and the header section are counted as they arrive; past the limit the
      request is answered 400 (RequestHeaderSectionTooLarge, as S3; InvalidURI for the line)
      and the connection closed: a 64 MiB header is never held, whatever its pace;
    - the head must arrive within the request-body timeout (a client trickling its headers);
    - a connection that never sends anything is closed after the keep-alive timeout.

    The body's idle timeout is the ASGI application's (S3App: 400 RequestTimeout)."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: HttpLimits | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits or HttpLimits()
        self._refused = False
        self._deferred_refusal: S3Error | None = None   # sent once the answers in progress are out
        self._head_timer: asyncio.TimerHandle | None = None
        self._new_head()

    def _new_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0                 # bytes of the current head seen so far
        self._line_bytes: int | None = None  # length of its request line, once its end is seen
        self._tail = b""                     # the last bytes seen: a CRLF may straddle two reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: a silent new connection too.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return   # lingering: dropped
        if self._in_head:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.request_body_timeout_s, self._head_timeout)
            refusal = self._count_head(data)
            if refusal is not None:
                self._unset_keepalive_if_required()
                try:
                    self._refuse(refusal)
                except Exception as exc:   # never the transport's fatal error: a closed connection
                    log.error("refusing a request head failed", exc_info=exc)
                    self.transport.close()
                return
        super().data_received(data)

    def _count_head(self, data: bytes) -> S3Error | None:
        """Count `data` into the current head; the error to answer once a limit is passed."""
        buf = self._tail + data
        offset = self._head_bytes - len(self._tail)    # where buf starts in the head
        limits = self.limits
        if self._line_bytes is None:
            end = buf.find(b"\r\n")
            line = offset + (end if end >= 0 else len(buf))
            if line > limits.max_request_line_bytes:
                return S3Error("InvalidURI", "The request line is too long.")
            if end >= 0:
                self._line_bytes = line
        if self._line_bytes is not None:
            end = buf.find(b"\r\n\r\n", max(0, self._line_bytes - offset))
            head = offset + (end + 4 if end >= 0 else len(buf))
            if head - self._line_bytes - 2 > limits.max_header_bytes:
                return S3Error("RequestHeaderSectionTooLarge", MaxSizeAllowed=str(limits.max_header_bytes))
        self._head_bytes += len(data)
        self._tail = buf[-3:]
        return None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._in_head and not self._refused and not self.transport.is_closing():
            self._refuse(S3Error("RequestTimeout"))

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:   # the new request's cycle
            coalescing = HeadCoalescingTransport(self.transport, cycle, self.loop)
            cycle.transport = coalescing
            cycle.on_response = coalescing.response_complete

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._new_head()

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse (a control character in a header value, a bad
        request line, conflicting lengths): S3's answer, an error document, not uvicorn's text."""
        self._refuse(S3Error("BadRequest", "An error occurred when parsing the HTTP request."))

    def _refuse(self, err: S3Error) -> None:
        """Answer an S3 error document and close: after a linger, so that a client still sending
        its head reads the answer rather than a connection reset."""
        self._refused = True
        self._cancel_head_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:
                # The refused head is a pipelined request's: the answers in progress go first.
                self._deferred_refusal = err
                return
            if cycle.response_started:
                cycle.transport.close()   # its answer is half sent (its head held: sent first): no interleaving
                return
            # The refused bytes are the body of the request in progress: it gets the refusal, and
            # the application sees a disconnect (whatever it answers then is dropped).
            cycle.disconnected = True
            cycle.message_event.set()
        self._send_refusal(err)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        err = self._deferred_refusal
        if err is not None and not self.pipeline and (self.cycle is None or self.cycle.response_complete) \
                and not self.transport.is_closing():
            self._deferred_refusal = None
            self._send_refusal(err)

    def _send_refusal(self, err: S3Error) -> None:
        request_id = new_request_id()
        doc = root("Error", namespaced=False)
        sub(doc, "Code", err.code)
        sub(doc, "Message", err.message)
        for name, value in err.extra.items():
            sub(doc, name, value)
        sub(doc, "RequestId", request_id)
        body = to_bytes(doc)
        head = (f"HTTP/1.1 {err.status} {http.HTTPStatus(err.status).phrase}\r\n"
                f"content-type: application/xml\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
                f"x-amz-request-id: {request_id}\r\nx-amz-id-2: {request_id}\r\nserver: pys3\r\n\r\n")
        self.transport.write(head.encode() + body)
        log_event(log, logging.INFO, "request", requestId=request_id, method=None, bucket=None, key=None,
                  status=err.status, bytes=str(len(body)), error=err.code)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()
