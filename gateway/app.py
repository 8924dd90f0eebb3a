"""The S3 endpoint: the ASGI application and the request pipeline.

decode -> route -> authenticate -> load the bucket -> authorize -> handler, inside the
generic layer of gateway/server.py (request id, error rendering, logging). Every
action's handler gets a RequestContext whose bucket is already loaded and authorized
(docs/architecture.md).
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from contextlib import asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl, unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from shared.config import Config, load_config
from shared.errors import S3Error
from shared.log import get_logger, new_request_id, setup_logging

from gateway import api  # noqa: F401  (registers the action handlers)
from gateway import metrics
from gateway import cors, website  # CORS and the website endpoint (issue 14)
from gateway.auth import AuthRequest, authenticate
from gateway.authz import OBJECT_LEVEL_ACTIONS, authorize, needs_object
from gateway.context import RequestContext, Services
from gateway.limits import HttpLimits, check_object_key, http_limits
from gateway.models import BucketMD, ObjectMD
from gateway.router import METHODS, handler_for, resolve
from gateway.server import RequestRecord, hostname_of, serve
from gateway.versioning import get_version
from gateway.xml import root, sub, to_bytes

log = get_logger("gateway")

# Actions that read the current version of their key: the pipeline fetches it alongside the
# bucket (one metadata round trip instead of two); bucket errors still come first.
PREFETCH_OBJECT_ACTIONS = frozenset({"GetObject", "HeadObject", "GetObjectAttributes"})
# A browser form upload is signed inside its body: the handler authenticates, then authorizes;
# DeleteObjects authorizes each key (a key refused is that key's AccessDenied).
AUTHORIZED_BY_HANDLER = frozenset({"PostObject", "DeleteObjects"})


# What an error document leaves out rather than write: a value holding a character no XML
# document can carry, not even as a reference (NUL, lone surrogates). The document stays
# parseable by every SDK; the value came from the request anyway.
_NOT_IN_ERROR_DOCUMENT = re.compile("[\x00\ud800-\udfff]")
# An id (version id, upload id) is printable ASCII; anything else names nothing. Refused before
# it reaches the store: a NUL is the key/version separator of the metadata key space.
_NOT_AN_ID = re.compile("[^\x20-\x7e]")
_VERSION_ID_PARAMS = ("versionId", "version-id-marker")
_UPLOAD_ID_PARAM = "uploadId"


def error_response(err: S3Error, record: RequestRecord) -> Response:
    """An S3 error document (no body for HEAD and 304)."""
    headers = {"x-amz-request-id": record.request_id, "x-amz-id-2": record.request_id, **err.headers}
    if record.method == "HEAD" or err.status == 304:
        return Response(status_code=err.status, headers=headers)
    doc = root("Error", namespaced=False)
    sub(doc, "Code", err.code)
    sub(doc, "Message", err.message)
    for name, value in err.extra.items():
        if not _NOT_IN_ERROR_DOCUMENT.search(str(value)):
            sub(doc, name, value)
    sub(doc, "Resource", record.resource)
    sub(doc, "RequestId", record.request_id)
    return Response(to_bytes(doc), status_code=err.status, headers=headers, media_type="application/xml")


def check_query_ids(query: dict[str, str]) -> None:
    """Ids of the query that cannot be ids: a versionId / version-id-marker answers 400
    InvalidArgument ("Invalid version id specified"), an uploadId 404 NoSuchUpload, as S3
    answers any id it does not know the form of."""
    for param in _VERSION_ID_PARAMS:
        value = query.get(param)
        if value is not None and _NOT_AN_ID.search(value):
            raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName=param, ArgumentValue=value)
    upload_id = query.get(_UPLOAD_ID_PARAM)
    if upload_id is not None and _NOT_AN_ID.search(upload_id):
        raise S3Error("NoSuchUpload", UploadId=upload_id)


def split_bucket_key(host: str, path: str, config: Config) -> tuple[str | None, str | None, bool]:
    """(bucket, key, virtual-hosted?) from a virtual-hosted Host header or a path-style path."""
    hostname = hostname_of(host)
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


async def load_and_authorize(ctx: RequestContext) -> None:
    """Load the request's bucket (NoSuchBucket) and authorize the route's IAM action on it
    (gateway/authz.py); object-level actions (GetObject, GetObjectAcl, ...) are authorized against
    the addressed version, loaded here (GET/HEAD: the prefetched current version).

    An anonymous request on a bucket that does not exist learns that first, as on AWS.
    """
    route = ctx.route
    if route.target == "service" or route.action == "CreateBucket":
        if ctx.account is None:
            raise S3Error("AccessDenied")
        return
    assert ctx.bucket is not None
    prefetch = None
    if route.action in PREFETCH_OBJECT_ACTIONS and "versionId" not in ctx.query:
        prefetch = asyncio.ensure_future(ctx.store.get_object(ctx.bucket, ctx.key or ""))
    try:
        bucket = await ctx.store.get_bucket(ctx.bucket)
        if bucket is None:
            raise S3Error("NoSuchBucket", BucketName=ctx.bucket)
        ctx.request.scope[cors.SCOPE_BUCKET] = bucket   # its CORS rules, for the response (gateway/cors.py)
        action = route.iam_action(ctx.query)
        if route.action in AUTHORIZED_BY_HANDLER:
            pass
        elif action in OBJECT_LEVEL_ACTIONS and (prefetch is not None or needs_object(ctx.account, bucket, action)):
            obj = await (prefetch if prefetch is not None else _addressed_version(ctx, bucket))
            authorize(ctx, bucket, action, obj=None if obj is None or obj.is_delete_marker else obj)
        else:
            authorize(ctx, bucket, action)
    except BaseException:
        await _discard(prefetch)
        raise
    ctx.target_bucket = bucket
    ctx.prefetched_object = prefetch


async def _addressed_version(ctx: RequestContext, bucket: BucketMD) -> ObjectMD | None:
    """The version an object-level action addresses (?versionId or the current one), None if none."""
    version = ctx.query.get("versionId")
    if version is None:
        return await ctx.store.get_object(bucket.name, ctx.key or "")
    try:
        return await get_version(ctx.store, bucket, ctx.key or "", version)
    except S3Error:   # no such version, or no version id at all: the handler answers
        return None


async def _discard(task: "asyncio.Future | None") -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def s3_request(request: Request, record: RequestRecord) -> Response:
    """The S3 pipeline of one request."""
    services: Services = request.app.state.services
    config = services.config
    scope = request.scope
    try:
        path = unquote(record.resource, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
    bucket, key, virtual_hosted = split_bucket_key(first_header(scope, b"host"), path, config)
    record.bucket, record.key = bucket, key
    query_string = scope.get("query_string", b"")
    query = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)) if query_string else {}
    # Straight from the ASGI list (what Starlette's Headers.items() would decode): the last of a
    # repeated header wins, as before.
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if key is not None:
        check_object_key(key)
    target = "object" if key is not None else ("bucket" if bucket else "service")
    if request.method == "OPTIONS":   # a CORS preflight: unauthenticated (gateway/cors.py)
        return await cors.preflight_request(services.store, bucket, headers, scope)
    route = resolve(request.method, target, query, headers)
    scope[metrics.ACTION_SCOPE_KEY] = route.action
    auth_req = AuthRequest.from_scope(scope, host_bucket=bucket if virtual_hosted else None)
    auth = authenticate(auth_req, config)
    handler = handler_for(route.action)
    ctx = RequestContext(request, services, record.request_id, route, bucket, key, query, headers, auth, auth_req,
                         auth.account, extra_log=record.fields)
    try:
        await load_and_authorize(ctx)
        check_query_ids(query)   # after the bucket's errors and authorization, as for an id S3 does not know
        return await handler(ctx)
    finally:
        await _discard(ctx.prefetched_object)   # a handler that failed before reading it


def first_header(scope: dict, name: bytes) -> str:
    """The first value of a (lower-case) header in the ASGI scope, "" if absent: what
    `request.headers.get(name, "")` answers, without building Starlette's Headers."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def s3_endpoint(request: Request) -> Response:
    if website.website_bucket(first_header(request.scope, b"host"), request.app.state.services.config) is not None:
        return await serve(request, website.website_request, website.error_page, cors.finish)
    return await serve(request, s3_request, error_response, cors.finish)


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
    md_ok = await services.store.healthy()
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
    record = RequestRecord(new_request_id(), request.method, request.url.path)
    return error_response(S3Error("InvalidURI"), record)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if (name == b"content-length" and value.strip() not in (b"0", b"")) or name == b"transfer-encoding":
            return True
    return False


def body_timeout_receive(receive: Callable[[], Awaitable[dict]], timeout_s: float) -> Callable[[], Awaitable[dict]]:
    """`receive` with an idle timeout while the request body is still coming: a client silent
    for `timeout_s` gets 400 RequestTimeout (and the connection closed), as S3 answers after ~20 s.
    Once the body is complete, receive is the server's own (waiting for a disconnect is no idling)."""
    body_done = False

    async def timed_receive() -> dict:
        nonlocal body_done
        if body_done:
            return await receive()
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise S3Error("RequestTimeout", headers={"connection": "close"}) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return timed_receive


class S3App:
    """The ASGI entry: S3 requests go straight to `s3_endpoint`; the internal
    routes (/_/...) and the lifespan go through Starlette's router.

    Skipping the router and its middleware stack on the S3 path is worth ~10%
    of a small request's CPU; behaviour is the same (s3_endpoint catches everything).
    """

    def __init__(self, starlette_app: Starlette, limits: HttpLimits | None = None):
        self.starlette = starlette_app
        self.state = starlette_app.state
        self.body_timeout_s = (limits or HttpLimits()).request_body_timeout_s

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        # A method S3 does not know goes to s3_endpoint even on /_/ paths: it answers
        # MethodNotAllowed as an S3 error document, where Starlette would answer plain text.
        if scope["type"] == "http" and (not scope["path"].startswith("/_/") or scope["method"] not in METHODS):
            scope["app"] = self
            if _has_body(scope["headers"]):
                receive = body_timeout_receive(receive, self.body_timeout_s)
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
        services = Services.from_config(config)
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
    return S3App(Starlette(routes=routes, lifespan=lifespan), http_limits(config))
