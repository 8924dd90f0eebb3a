"""The website endpoint: requests whose Host is `<bucket>.<one of websiteEndpoints>` are served as
a static web site from the bucket (AWS's s3-website endpoints), on the gateway's own port.

It runs in the generic request layer (gateway/server.py) with its own error renderer: errors
are HTML pages, never XML. What it does, in AWS's order:

- GET and HEAD only (OPTIONS is a CORS preflight; anything else 405);
- the bucket's website configuration (NoSuchWebsiteConfiguration without one), read from the
  bucket record on each request;
- RedirectAllRequestsTo, then the routing rules whose condition is a key prefix;
- the index document for `/` and `prefix/`; a 302 from `prefix` to `prefix/` when
  `prefix/<index>` exists;
- the object is read anonymously: it must be publicly readable (ACL or bucket policy). A
  missing key is 404 when anonymous users may list the bucket and 403 otherwise;
- an object with x-amz-website-redirect-location answers 301 to it;
- conditional GET and ranges as on the REST endpoint (the GetObject handler serves the bytes);
- on an error: the routing rules with an HttpErrorCodeReturnedEquals condition, then the
  error document (served with the error's status, if publicly readable), then an HTML page.
"""
from __future__ import annotations

import asyncio
import functools
import html
import http
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from gateway import cors, websiteconfig
from gateway.api.common import check_conditions
from gateway.api.object import get_object, head_object
from gateway.auth import AuthRequest
from gateway.auth.request import AuthResult
from gateway.authz import allowed
from gateway.context import RequestContext, Services
from gateway.limits import check_object_key
from gateway.metrics import ACTION_SCOPE_KEY
from gateway.models import BucketMD, ObjectMD
from gateway.router import ROUTES
from gateway.server import RequestRecord, hostname_of, location_header
from shared.config import Config
from shared.errors import S3Error

_GET_OBJECT = next(r for r in ROUTES if r.action == "GetObject")
_HEAD_OBJECT = next(r for r in ROUTES if r.action == "HeadObject")
# Request headers that select part of an object or make its GET conditional: an error document
# is served whole and unconditionally, whatever the failed request asked.
_SELECTING_HEADERS = ("range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def website_bucket(host: str, config: Config) -> str | None:
    """The bucket a Host header names on a website endpoint (`bucket.s3-website.localhost:8000`),
    or None when the Host is not on one of config.website_endpoints."""
    if not config.website_endpoints or not host:
        return None
    return _website_bucket(host, config.website_endpoints)


@functools.lru_cache(maxsize=1024)
def _website_bucket(host: str, endpoints: tuple[str, ...]) -> str | None:
    """website_bucket's answer, cached: every request asks, and a client sends the same Host
    again and again (bounded: the Host is the client's to choose)."""
    suffixes = _suffixes(endpoints)
    hostname = hostname_of(host).rstrip(".")
    if not hostname.endswith(suffixes):   # every request asks: one C call for the common "no"
        return None
    for suffix in suffixes:
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return hostname[: -len(suffix)]
    return None


@functools.lru_cache(maxsize=8)
def _suffixes(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("." + endpoint.lower() for endpoint in endpoints)


def error_page(err: S3Error, record: RequestRecord) -> Response:
    """The website endpoint's error renderer: an HTML page as AWS's (no body for HEAD and 304)."""
    headers = {"x-amz-request-id": record.request_id, "x-amz-id-2": record.request_id, **err.headers}
    if record.method == "HEAD" or err.status == 304:
        return Response(status_code=err.status, headers=headers)
    try:
        phrase = http.HTTPStatus(err.status).phrase
    except ValueError:
        phrase = ""
    title = html.escape(f"{err.status} {phrase}".strip())
    items = [("Code", err.code), ("Message", err.message), *[(k, str(v)) for k, v in err.extra.items()],
             ("RequestId", record.request_id), ("HostId", record.request_id)]
    lines = "\n".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in items)
    body = (f"<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<ul>\n{lines}\n</ul>\n"
            "<hr/>\n</body>\n</html>\n")
    return Response(body.encode("utf-8", "replace"), status_code=err.status, headers=headers,
                    media_type="text/html; charset=utf-8")


def _redirect(status: int, location: str) -> Response:
    # What a URL cannot hold (a space, a control character, non-ASCII from a stored redirect
    # location or a host name) percent-encoded, as a browser would: the header is always sendable.
    return Response(status_code=status, headers={"Location": location_header(location), "Content-Length": "0"})


class _Site:
    """One website request: its bucket, configuration and an anonymous context for reads."""

    def __init__(self, request: Request, record: RequestRecord, services: Services, bucket: BucketMD,
                 config: dict[str, Any], key: str):
        self.request, self.record, self.services = request, record, services
        self.bucket, self.config, self.key = bucket, config, key
        self.scheme = request.url.scheme or "http"
        self.host = request.headers.get("host", "")
        self.headers = {k.lower(): v for k, v in request.headers.items()}

    def context(self, key: str, obj: ObjectMD | None, headers: dict[str, str] | None = None) -> RequestContext:
        """An anonymous GetObject (HeadObject) context on `key`, its version already read."""
        route = _HEAD_OBJECT if self.request.method == "HEAD" else _GET_OBJECT
        auth = AuthResult(None, None, "anonymous", "none", None, None)
        ctx = RequestContext(self.request, self.services, self.record.request_id, route, self.bucket.name, key, {},
                             self.headers if headers is None else headers, auth,
                             AuthRequest.from_scope(self.request.scope), None, extra_log=self.record.fields)
        ctx.target_bucket = self.bucket
        done: asyncio.Future[ObjectMD | None] = asyncio.get_running_loop().create_future()
        done.set_result(obj)
        ctx.prefetched_object = done
        return ctx

    async def current(self, key: str) -> ObjectMD | None:
        try:
            check_object_key(key)
        except S3Error:
            return None
        md = await self.services.store.get_object(self.bucket.name, key)
        return None if md is None or md.is_delete_marker else md

    def public(self, ctx: RequestContext, md: ObjectMD | None) -> bool:
        if md is None:   # a missing key: whoever may list the bucket learns it is missing
            return allowed(ctx, self.bucket, "s3:ListBucket", account=None)
        return allowed(ctx, self.bucket, "s3:GetObject", obj=md, account=None)

    async def serve(self) -> Response:
        config, key = self.config, self.key
        redirect_all = config.get("redirectAllRequestsTo")
        if redirect_all:
            return _redirect(301, websiteconfig.redirect_all_location(redirect_all, key, self.scheme))
        rule = websiteconfig.find_routing_rule(config, key)
        if rule is not None:
            return _redirect(*websiteconfig.rule_location(rule, key, self.scheme, self.host))
        index = config.get("indexDocument") or "index.html"
        target = key + index if key == "" or key.endswith("/") else key
        md = await self.current(target)
        ctx = self.context(target, md)
        if md is None:
            if key and not key.endswith("/") and await self.current(f"{key}/{index}") is not None:
                return _redirect(302, "/" + key + "/")
            err = S3Error("NoSuchKey", Key=target) if self.public(ctx, None) else S3Error("AccessDenied")
            return await self.failed(err)
        if not self.public(ctx, md):
            return await self.failed(S3Error("AccessDenied"))
        try:
            if md.website_redirect_location:
                # Conditions first: a redirect is the object's answer, as its bytes would be.
                check_conditions(self.headers, md.etag, md.last_modified)
                return _redirect(301, md.website_redirect_location)
            return await (head_object(ctx) if self.request.method == "HEAD" else get_object(ctx))
        except S3Error as err:
            if err.status < 400:
                raise   # 304 Not Modified
            return await self.failed(err)

    async def failed(self, err: S3Error) -> Response:
        """What an error answers: a routing rule on its status, else the error document, else `err`."""
        rule = websiteconfig.find_routing_rule(self.config, self.key, err.status)
        if rule is not None:
            return _redirect(*websiteconfig.rule_location(rule, self.key, self.scheme, self.host))
        doc_key = self.config.get("errorDocument")
        if doc_key:
            md = await self.current(doc_key)
            headers = {k: v for k, v in self.headers.items() if k not in _SELECTING_HEADERS}
            ctx = self.context(doc_key, md, headers)
            if md is not None and self.public(ctx, md):
                response = await (head_object(ctx) if self.request.method == "HEAD" else get_object(ctx))
                response.status_code = err.status
                self.record.fields["errorDocument"] = doc_key
                self.record.fields["error"] = err.code
                return response
        raise err


async def website_request(request: Request, record: RequestRecord) -> Response:
    """The website endpoint's request (inside gateway/server.py's serve)."""
    services: Services = request.app.state.services
    bucket_name = website_bucket(request.headers.get("host", ""), services.config) or ""
    record.bucket = bucket_name
    try:
        path = unquote(record.resource, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI") from None
    key = path[1:] if path.startswith("/") else path
    record.key = key or None
    method = request.method
    request.scope[ACTION_SCOPE_KEY] = {"GET": "WebsiteGet", "HEAD": "WebsiteHead"}.get(method, "Website")
    if method not in ("GET", "HEAD", "OPTIONS"):
        raise S3Error("MethodNotAllowed", Method=method, ResourceType="OBJECT")
    bucket = await services.store.get_bucket(bucket_name)
    if bucket is None:
        raise S3Error("NoSuchBucket", BucketName=bucket_name)
    request.scope[cors.SCOPE_BUCKET] = bucket
    if method == "OPTIONS":
        return cors.preflight(bucket.cors, request.headers)
    config = bucket.website
    if not config:
        raise S3Error("NoSuchWebsiteConfiguration", BucketName=bucket_name)
    return await _Site(request, record, services, bucket, config, key).serve()
