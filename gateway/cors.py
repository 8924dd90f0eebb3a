"""CORS: a bucket's CORS configuration (the document, its validation, the stored rules), the
preflight answer (OPTIONS) and the CORS headers of an actual request.

The rules are stored in the bucket record as the original does (`cors`: a list of
{allowedMethods, allowedOrigins, allowedHeaders?, exposeHeaders?, maxAgeSeconds?, id?}) and read
from it on each request: gateways keep no state. Matching is the original's (and AWS's): the
first rule whose AllowedMethod holds the method, one of whose AllowedOrigin matches the Origin
(one `*` wildcard at most), and, for a preflight, each Access-Control-Request-Headers entry is
matched by an AllowedHeader (case-insensitive, wildcards).
"""
from __future__ import annotations

import re
from email.utils import formatdate
from typing import Any, Mapping

from starlette.responses import Response

from gateway.metrics import ACTION_SCOPE_KEY
from gateway.xml import local, parse, root, sub, to_bytes
from shared.errors import S3Error

MAX_RULES = 100
ALLOWED_METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
_EXPOSE_HEADER_RE = re.compile(r"^[A-Za-z0-9-]*$")
_RULE_FIELDS = ("AllowedMethod", "AllowedOrigin", "AllowedHeader", "ExposeHeader", "MaxAgeSeconds", "ID")
# The scope key under which the S3 pipeline leaves the request's loaded bucket (saves a lookup).
SCOPE_BUCKET = "pys3.bucket_md"
NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."


# ------------------------------------------------------------------ the configuration document

def parse_configuration(body: bytes) -> list[dict[str, Any]]:
    """A CORSConfiguration document -> the stored rules, validated as AWS and the original do:
    MalformedXML for a document of the wrong shape, InvalidRequest for values AWS refuses."""
    doc = parse(body)
    if local(doc.tag) != "CORSConfiguration":
        raise S3Error("MalformedXML", "Invalid cors configuration xml")
    rules_el = []
    for child in doc:
        if not isinstance(child.tag, str):
            continue
        if local(child.tag) != "CORSRule":
            raise S3Error("MalformedXML")
        rules_el.append(child)
    if not rules_el:
        raise S3Error("MalformedXML", "Invalid cors configuration xml")
    if len(rules_el) > MAX_RULES:
        raise S3Error("InvalidRequest", f"The number of CORS rules should not exceed allowed limit of {MAX_RULES} rules.")
    return [_parse_rule(el) for el in rules_el]


def _parse_rule(el: Any) -> dict[str, Any]:
    fields: dict[str, list[str]] = {name: [] for name in _RULE_FIELDS}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = local(child.tag)
        if name not in fields or len(child):
            raise S3Error("MalformedXML")
        fields[name].append((child.text or "").strip() if name in ("MaxAgeSeconds", "ID") else (child.text or ""))
    methods, origins = fields["AllowedMethod"], fields["AllowedOrigin"]
    if not methods or not origins:
        raise S3Error("MalformedXML", "Each CORSRule must identify at least one origin and one method.")
    for method in methods:
        if method not in ALLOWED_METHODS:
            raise S3Error("InvalidRequest",
                          f'Found unsupported HTTP method in CORS config. Unsupported method is "{method}"')
    rule: dict[str, Any] = {"allowedMethods": methods}
    _check_wildcards(origins, "AllowedOrigin")
    rule["allowedOrigins"] = origins
    if len(fields["ID"]) > 1:
        raise S3Error("MalformedXML")
    if fields["ID"] and fields["ID"][0]:
        if len(fields["ID"][0]) > 255:
            raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255")
        rule["id"] = fields["ID"][0]
    if fields["AllowedHeader"]:
        _check_wildcards(fields["AllowedHeader"], "AllowedHeader")
        rule["allowedHeaders"] = fields["AllowedHeader"]
    if len(fields["MaxAgeSeconds"]) > 1:
        raise S3Error("MalformedXML")
    if fields["MaxAgeSeconds"] and fields["MaxAgeSeconds"][0] != "":
        raw = fields["MaxAgeSeconds"][0]
        if not raw.isascii() or not raw.isdigit() or len(raw) > 10 or int(raw) > 2**31 - 1:
            raise S3Error("MalformedXML", f'MaxAgeSeconds "{raw}" is not a valid value.')
        rule["maxAgeSeconds"] = int(raw)
    if fields["ExposeHeader"]:
        for header in fields["ExposeHeader"]:
            if "*" in header:
                raise S3Error("InvalidRequest", f"ExposeHeader {header} contains a wildcard. "
                              "Wildcards are currently not supported for ExposeHeader.")
            if not _EXPOSE_HEADER_RE.match(header):
                raise S3Error("InvalidRequest", f"ExposeHeader {header} contains invalid character.")
        rule["exposeHeaders"] = fields["ExposeHeader"]
    return rule


def _check_wildcards(values: list[str], what: str) -> None:
    for value in values:
        if value == "":
            raise S3Error("MalformedXML")
        if value.count("*") > 1:
            raise S3Error("InvalidRequest", f'{what} "{value}" can not have more than one wildcard.')


def configuration_document(rules: list[dict[str, Any]]) -> bytes:
    """The stored rules as GetBucketCors answers them."""
    doc = root("CORSConfiguration")
    for rule in rules:
        el = sub(doc, "CORSRule")
        if rule.get("id"):
            sub(el, "ID", rule["id"])
        for key, tag in (("allowedHeaders", "AllowedHeader"), ("allowedMethods", "AllowedMethod"),
                         ("allowedOrigins", "AllowedOrigin"), ("exposeHeaders", "ExposeHeader")):
            for value in rule.get(key) or ():
                sub(el, tag, value)
        if rule.get("maxAgeSeconds") is not None:
            sub(el, "MaxAgeSeconds", rule["maxAgeSeconds"])
    return to_bytes(doc)


# ------------------------------------------------------------------ matching

def _matches(allowed: str, value: str) -> bool:
    star = allowed.find("*")
    if star < 0:
        return allowed == value
    head, tail = allowed[:star], allowed[star + 1:]
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def find_rule(rules: list[dict[str, Any]] | None, origin: str, method: str,
              request_headers: list[str] | None = None) -> dict[str, Any] | None:
    """The first rule allowing `method` from `origin` (and, for a preflight, every requested header)."""
    for rule in rules or ():
        if method not in (rule.get("allowedMethods") or ()):
            continue
        if not any(_matches(o, origin) for o in rule.get("allowedOrigins") or ()):
            continue
        if request_headers:
            allowed = [h.lower() for h in rule.get("allowedHeaders") or ()]
            if not all(any(_matches(a, h) for a in allowed) for h in request_headers):
                continue
        return rule
    return None


def rule_headers(rule: dict[str, Any], origin: str, request_headers: list[str] | None = None) -> dict[str, str]:
    """The CORS response headers a matching rule gives."""
    headers = {"Access-Control-Allow-Methods": ", ".join(rule["allowedMethods"]), "Vary": VARY}
    if "*" in rule["allowedOrigins"]:
        headers["Access-Control-Allow-Origin"] = "*"
    else:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"   # never with the * origin
    if request_headers:
        headers["Access-Control-Allow-Headers"] = ", ".join(request_headers)
    if rule.get("exposeHeaders"):
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["exposeHeaders"])
    if rule.get("maxAgeSeconds") is not None:
        headers["Access-Control-Max-Age"] = str(rule["maxAgeSeconds"])
    return headers


def requested_headers(value: str | None) -> list[str]:
    """Access-Control-Request-Headers as a list of lower-case names (empty entries dropped)."""
    return [h.strip().lower() for h in (value or "").split(",") if h.strip()]


# ------------------------------------------------------------------ the preflight and actual requests

def preflight(bucket_cors: list[dict[str, Any]] | None, headers: Mapping[str, str]) -> Response:
    """The answer to an OPTIONS request on a bucket (or one of its objects) whose rules are
    `bucket_cors`: 200 with the matching rule's headers, 400 without Origin or
    Access-Control-Request-Method, 403 AccessForbidden when no rule matches."""
    origin = headers.get("origin")
    if not origin:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.")
    method = headers.get("access-control-request-method")
    if not method:
        raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null")
    if method not in ALLOWED_METHODS:
        raise S3Error("BadRequest", f"Invalid Access-Control-Request-Method: {method}")
    if not bucket_cors:
        raise S3Error("AccessForbidden", NOT_ENABLED, Method=method, ResourceType="BUCKET")
    wanted = requested_headers(headers.get("access-control-request-headers"))
    rule = find_rule(bucket_cors, origin, method, wanted)
    if rule is None:
        raise S3Error("AccessForbidden", Method=method, ResourceType="OBJECT")
    out = rule_headers(rule, origin, wanted)
    out["Date"] = formatdate(usegmt=True)
    return Response(status_code=200, headers=out)


def actual_request_headers(bucket_cors: list[dict[str, Any]] | None, origin: str, method: str) -> dict[str, str]:
    """The headers an actual (non-OPTIONS) request from `origin` gets: those of the first rule
    allowing its method and origin, none when no rule does."""
    rule = find_rule(bucket_cors, origin, method)
    return rule_headers(rule, origin) if rule is not None else {}


async def add_headers(request: Any, response: Response, bucket: str | None, load_bucket: Any) -> None:
    """Give `response` (any response, an error document too) the CORS headers of the request's
    Origin, from the rules of `bucket`: the record the pipeline loaded (scope[SCOPE_BUCKET]) or,
    when the request failed before loading it, read now with `load_bucket(name)`."""
    if not bucket or request.method == "OPTIONS" or not _has_origin(request.scope):
        return
    origin = request.headers.get("origin")
    if not origin:
        return
    if "access-control-allow-origin" in response.headers:
        return
    info = request.scope.get(SCOPE_BUCKET)
    if info is None or info.name != bucket:
        try:
            info = await load_bucket(bucket)
        except Exception:   # the answer stands without CORS headers
            return
    if info is None:
        return
    for name, value in actual_request_headers(info.cors, origin, request.method).items():
        response.headers[name] = value


async def preflight_request(store: Any, bucket: str | None, headers: Mapping[str, str], scope: dict) -> Response:
    """OPTIONS on the S3 endpoint: unauthenticated, answered from the addressed bucket's rules."""
    scope[ACTION_SCOPE_KEY] = "PreflightRequest"   # its label in the request metrics
    if not headers.get("origin") or not headers.get("access-control-request-method"):
        return preflight(None, headers)   # the 400 it answers
    if not bucket:
        raise S3Error("AccessForbidden", NOT_ENABLED, Method=headers["access-control-request-method"],
                      ResourceType="BUCKET")
    info = await store.get_bucket(bucket)
    if info is None:
        raise S3Error("NoSuchBucket", BucketName=bucket)
    scope[SCOPE_BUCKET] = info
    return preflight(info.cors, headers)


def _has_origin(scope: Mapping[str, Any]) -> bool:
    """Whether the request sent an Origin: looked for in the raw (lower-cased) header list,
    cheaper than building the request's Headers view (every response asks)."""
    for name, _ in scope["headers"]:
        if name == b"origin":
            return True
    return False


async def finish(request: Any, response: Response, record: Any) -> None:
    """serve()'s finisher of both endpoints: the CORS headers of an actual request."""
    if not record.bucket or not _has_origin(request.scope):   # most requests: no CORS to add
        return
    await add_headers(request, response, record.bucket, request.app.state.services.store.get_bucket)
