"""The Starlette application: Host/path -> bucket/key, request -> routed action.

Everything a client can get wrong ends here as an S3 error document with a
request id; nothing escapes as a 500 with a traceback.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from shared.config import Config, load_config
from shared.errors import S3Error
from shared.log import get_logger, log_event, new_request_id, setup_logging
from shared.metastore.errors import MetadataError

from gateway import api  # noqa: F401  (registers the action handlers)
from gateway import metrics
from gateway.auth import AuthRequest, authenticate
from gateway.context import RequestContext, Services
from gateway.data.base import DataError, DataNotFound
from gateway.models import MAX_KEY_BYTES
from gateway.router import METHODS, handler_for, resolve
from gateway.xml import root, sub, to_bytes

log = get_logger("gateway")


def make_services(config: Config) -> Services:
    if config.metadata_backend == "mem":
        from gateway.metadata import LocalMetadataClient
        from shared.metastore import MemoryKV, MetaStore
        store = MetaStore(MemoryKV(), replication_group_id=config.replication_group_id,
                          version_id_suffix=config.version_id_encoding == "hex")
        return Services(config, LocalMetadataClient(store))
    from gateway.metadata import RemoteMetadataClient
    return Services(config, RemoteMetadataClient(config.metadata_client.host, config.metadata_client.port,
                                                  call_timeout_ms=config.call_timeout_ms))


def error_response(err: S3Error, request_id: str, resource: str, head: bool) -> Response:
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": request_id, **err.headers}
    if head or err.status == 304:
        return Response(status_code=err.status, headers=headers)
    doc = root("Error", namespaced=False)
    sub(doc, "Code", err.code)
    sub(doc, "Message", err.message)
    for name, value in err.extra.items():
        sub(doc, name, value)
    sub(doc, "Resource", resource)
    sub(doc, "RequestId", request_id)
    return Response(to_bytes(doc), status_code=err.status, headers=headers, media_type="application/xml")


def split_bucket_key(host: str, path: str, config: Config) -> tuple[str | None, str | None, bool]:
    """(bucket, key, virtual-hosted?) from a virtual-hosted Host header or a path-style path."""
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    hostname = hostname.lower()
    for endpoint in config.rest_endpoints:
        if hostname.endswith("." + endpoint):
            bucket = hostname[: -len(endpoint) - 1]
            key = path[1:] if path.startswith("/") else path
            return bucket, (key or None), True
    trimmed = path[1:] if path.startswith("/") else path
    if not trimmed:
        return None, None, False
    bucket, _, key = trimmed.partition("/")
    return bucket, (key or None), False


def _map_internal_error(exc: Exception) -> S3Error:
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


async def s3_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    config = services.config
    request_id = new_request_id()
    started = time.monotonic()
    scope = request.scope
    raw_path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    raw_path = raw_path.split("?", 1)[0]
    method = request.method
    bucket = key = None
    ctx: RequestContext | None = None
    response: Response
    try:
        try:
            path = unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI") from None
        bucket, key, virtual_hosted = split_bucket_key(request.headers.get("host", ""), path, config)
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        if key is not None and len(key.encode()) > MAX_KEY_BYTES:
            raise S3Error("KeyTooLongError")
        if key is not None and "\x00" in key:
            # NUL separates a key from its version id in the metadata key space.
            raise S3Error("InvalidArgument", "Object key names may not contain a NUL character")
        target = "object" if key is not None else ("bucket" if bucket else "service")
        route = resolve(method, target, query, headers)
        scope[metrics.ACTION_SCOPE_KEY] = route.action
        auth_req = AuthRequest.from_scope(scope, host_bucket=bucket if virtual_hosted else None)
        auth = authenticate(auth_req, config)
        if auth.account is None and route.action != "PostObject":
            # A browser form POST carries its signature in the form, which PostObject checks itself.
            await _deny_anonymous(services, bucket, route.action)
        ctx = RequestContext(request, services, request_id, route, bucket, key, query, headers, auth, auth_req,
                             auth.account)
        handler = handler_for(route.action)
        response = await handler(ctx)
    except Exception as exc:  # every failure becomes an S3 error document
        err = _map_internal_error(exc)
        if err.code == "InternalError" or not isinstance(exc, S3Error):
            log.error("request failed", exc_info=exc, extra={"fields": {"requestId": request_id}})
        response = error_response(err, request_id, raw_path, method == "HEAD")
    if status_is_error(response) and _body_left_unread(request):
        # The client may still send (or, with Expect: 100-continue, be waiting to send)
        # a body we never read: closing is the only way to keep the next request intact.
        response.headers["connection"] = "close"
    response.headers.setdefault("x-amz-request-id", request_id)
    response.headers.setdefault("x-amz-id-2", request_id)
    response.headers.setdefault("server", "pys3")
    fields: dict[str, object] = {
        "requestId": request_id, "method": method, "bucket": bucket, "key": key, "status": response.status_code,
        "bytes": response.headers.get("content-length"), "elapsedMs": round((time.monotonic() - started) * 1000, 2)}
    if ctx is not None and ctx.extra_log:
        fields.update(request_fields(ctx.extra_log, fields))
    log_event(log, logging.INFO, "request", **fields)
    return response


def request_fields(extra: dict[str, object], base: dict[str, object]) -> dict[str, object]:
    """The fields a handler recorded in ctx.extra_log, for the request's log line. A name that
    the line already has (requestId, status, ...) is kept under "extra.<name>", never dropped."""
    return {(f"extra.{name}" if name in base else name): value for name, value in extra.items()}


async def _deny_anonymous(services: Services, bucket: str | None, action: str) -> None:
    """Anonymous requests are denied (no public ACLs yet), but, as AWS, one on a bucket that does not
    exist learns that first: NoSuchBucket. One metadata lookup, for anonymous requests only."""
    if bucket is not None and action != "CreateBucket" and await services.find_bucket(bucket) is None:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    raise S3Error("AccessDenied")


def status_is_error(response: Response) -> bool:
    return response.status_code >= 300


def _body_left_unread(request: Request) -> bool:
    headers = request.headers
    has_body = headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in headers
    return has_body and not getattr(request, "_stream_consumed", False)


def _allowed(client: str | None, allow_from: tuple[str, ...]) -> bool:
    if client is None:
        return False
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return False
    for net in allow_from:
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


async def healthcheck(request: Request) -> Response:
    """/_/healthcheck (shallow) and /_/healthcheck/deep, as the CloudServer 2021 gateway (docs/operations.md#health-and-metrics)."""
    return await health_response(request.app.state.services, request.client.host if request.client else None,
                                 deep=request.url.path.endswith("/deep"))


async def health_response(services: Services, client: str | None, deep: bool) -> Response:
    """The shallow (metadata reachable) or deep (every backend) check; also /live and /ready."""
    if not _allowed(client, services.config.health_checks_allow_from):
        return Response("[]", status_code=403, media_type="application/json")
    md_ok = await services.metadata.healthy()
    if not deep:
        body = {"metadata": {"code": 200 if md_ok else 500, "message": "OK" if md_ok else "unreachable"}}
        return Response(json.dumps(body) if md_ok else "[]", status_code=200 if md_ok else 500,
                        media_type="application/json")
    results: dict[str, dict[str, object]] = {}
    failed = not md_ok
    for name in services.config.locations:
        try:
            ok = await services.data_for(name).healthy()
        except Exception:  # a location we cannot even build counts as down
            ok = False
        results[name] = {"code": 200, "message": "OK"} if ok else {"error": "unreachable"}
        failed |= not ok
    results["bucketfile"] = {"code": 200, "message": "OK"} if md_ok else {"error": "unreachable"}
    return Response(json.dumps(results), status_code=500 if failed else 200, media_type="application/json")


async def internal_unknown(request: Request) -> Response:
    err = S3Error("InvalidURI")
    return error_response(err, new_request_id(), request.url.path, request.method == "HEAD")


class S3App:
    """The ASGI entry: S3 requests go straight to `s3_endpoint`; the internal
    routes (/_/...) and the lifespan go through Starlette's router.

    Skipping the router and its middleware stack on the S3 path is worth ~10%
    of a small request's CPU; behaviour is the same (s3_endpoint catches everything).
    """

    def __init__(self, starlette_app: Starlette):
        self.starlette = starlette_app
        self.state = starlette_app.state

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        # A method S3 does not know goes to s3_endpoint even on /_/ paths: it answers
        # MethodNotAllowed as an S3 error document, where Starlette would answer plain text.
        if scope["type"] == "http" and (not scope["path"].startswith("/_/") or scope["method"] not in METHODS):
            scope["app"] = self
            request = Request(scope, receive)
            with metrics.RequestTimer(scope) as timer:  # the body's sending counts in the duration
                response = await s3_endpoint(request)
                timer.status = response.status_code
                await response(scope, receive, send)
            return
        await self.starlette(scope, receive, send)


def create_app(config: Config | None = None) -> S3App:
    config = config or load_config()
    setup_logging(config.log_level)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = make_services(config)
        app.state.services = services
        metrics_server = metrics.MetricsServer(config, services, health_response)
        metrics_server.start()  # before setup: /ready answers 500 while the dmd is unreachable
        await services.setup()
        try:
            yield
        finally:
            await metrics_server.stop()
            await services.close()

    methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]
    routes = [
        StarletteRoute("/_/healthcheck", healthcheck, methods=["GET", "POST"]),
        StarletteRoute("/_/healthcheck/deep", healthcheck, methods=["GET", "POST"]),
        StarletteRoute("/_/{rest:path}", internal_unknown, methods=methods),
    ]
    return S3App(Starlette(routes=routes, lifespan=lifespan))
