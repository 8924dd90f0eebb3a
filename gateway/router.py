"""THE routing table: (method, target, sub-resource, header) -> AWS action name.

Every S3 action has one row here, named exactly like the AWS API action. API
modules register the handler of an action with `@action("PutObject")`; a row
whose action has no handler answers NotImplemented (501). The access level
used for authorization comes from the same row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Literal, Mapping

from shared.errors import S3Error

Target = Literal["service", "bucket", "object"]
Access = Literal["read", "write", "owner"]

# Sub-resources that select an action (or NotImplemented); any other query
# parameter is an ordinary argument of the action.
_UNSUPPORTED_SUBRESOURCES = ("accelerate", "analytics", "inventory", "logging", "metrics",
                             "policyStatus", "publicAccessBlock", "requestPayment", "torrent",
                             "intelligent-tiering", "ownershipControls", "select", "restore",
                             "object-lock", "legal-hold", "retention", "notification",
                             "replication", "session")


@dataclass(frozen=True)
class Route:
    method: str
    target: Target
    action: str
    access: Access
    subresource: str | None = None       # query parameter that must be present
    header: str | None = None            # request header that must be present


def _r(method: str, target: Target, action: str, access: Access, sub: str | None = None,
       header: str | None = None) -> Route:
    return Route(method, target, action, access, sub, header)


# Order matters: the first matching row wins (most specific first).
ROUTES: tuple[Route, ...] = (
    _r("GET", "service", "ListBuckets", "read"),

    _r("GET", "bucket", "GetBucketAcl", "owner", "acl"),
    _r("GET", "bucket", "GetBucketCors", "owner", "cors"),
    _r("GET", "bucket", "GetBucketVersioning", "owner", "versioning"),
    _r("GET", "bucket", "GetBucketWebsite", "owner", "website"),
    _r("GET", "bucket", "GetBucketLifecycleConfiguration", "owner", "lifecycle"),
    _r("GET", "bucket", "GetBucketLocation", "owner", "location"),
    _r("GET", "bucket", "GetBucketTagging", "owner", "tagging"),
    _r("GET", "bucket", "GetBucketPolicy", "owner", "policy"),
    _r("GET", "bucket", "GetBucketEncryption", "owner", "encryption"),
    _r("GET", "bucket", "ListMultipartUploads", "read", "uploads"),
    _r("GET", "bucket", "ListObjectVersions", "read", "versions"),
    _r("GET", "bucket", "ListObjectsV2", "read", "list-type"),
    _r("GET", "bucket", "ListObjects", "read"),
    _r("HEAD", "bucket", "HeadBucket", "read"),
    _r("PUT", "bucket", "PutBucketAcl", "owner", "acl"),
    _r("PUT", "bucket", "PutBucketVersioning", "owner", "versioning"),
    _r("PUT", "bucket", "PutBucketWebsite", "owner", "website"),
    _r("PUT", "bucket", "PutBucketCors", "owner", "cors"),
    _r("PUT", "bucket", "PutBucketLifecycleConfiguration", "owner", "lifecycle"),
    _r("PUT", "bucket", "PutBucketTagging", "owner", "tagging"),
    _r("PUT", "bucket", "PutBucketPolicy", "owner", "policy"),
    _r("PUT", "bucket", "PutBucketEncryption", "owner", "encryption"),
    _r("PUT", "bucket", "CreateBucket", "write"),
    _r("POST", "bucket", "DeleteObjects", "write", "delete"),
    _r("POST", "bucket", "PostObject", "write"),
    _r("DELETE", "bucket", "DeleteBucketWebsite", "owner", "website"),
    _r("DELETE", "bucket", "DeleteBucketCors", "owner", "cors"),
    _r("DELETE", "bucket", "DeleteBucketLifecycle", "owner", "lifecycle"),
    _r("DELETE", "bucket", "DeleteBucketPolicy", "owner", "policy"),
    _r("DELETE", "bucket", "DeleteBucketEncryption", "owner", "encryption"),
    _r("DELETE", "bucket", "DeleteBucketTagging", "owner", "tagging"),
    _r("DELETE", "bucket", "DeleteBucket", "owner"),

    _r("GET", "object", "GetObjectAcl", "read", "acl"),
    _r("GET", "object", "GetObjectTagging", "read", "tagging"),
    _r("GET", "object", "ListParts", "read", "uploadId"),
    _r("GET", "object", "GetObjectAttributes", "read", "attributes"),
    _r("GET", "object", "GetObject", "read"),
    _r("HEAD", "object", "HeadObject", "read"),
    _r("PUT", "object", "UploadPartCopy", "write", "partNumber", "x-amz-copy-source"),
    _r("PUT", "object", "UploadPart", "write", "partNumber"),
    _r("PUT", "object", "PutObjectAcl", "write", "acl"),
    _r("PUT", "object", "PutObjectTagging", "write", "tagging"),
    _r("PUT", "object", "CopyObject", "write", None, "x-amz-copy-source"),
    _r("PUT", "object", "PutObject", "write"),
    _r("POST", "object", "CreateMultipartUpload", "write", "uploads"),
    _r("POST", "object", "CompleteMultipartUpload", "write", "uploadId"),
    _r("DELETE", "object", "AbortMultipartUpload", "write", "uploadId"),
    _r("DELETE", "object", "DeleteObjectTagging", "write", "tagging"),
    _r("DELETE", "object", "DeleteObject", "write"),
)

METHODS = frozenset(r.method for r in ROUTES) | {"OPTIONS"}

Handler = Callable[..., Awaitable[object]]
_HANDLERS: dict[str, Handler] = {}


def action(name: str) -> Callable[[Handler], Handler]:
    """Register the handler of an AWS action named in ROUTES."""
    if not any(r.action == name for r in ROUTES):
        raise ValueError(f"{name} is not an action of the routing table")

    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn
    return register


def handler_for(name: str) -> Handler:
    try:
        return _HANDLERS[name]
    except KeyError:
        raise S3Error("NotImplemented", f"{name} is not implemented") from None


def resolve(method: str, target: Target, query: Mapping[str, str], headers: Mapping[str, str]) -> Route:
    """Pick the route of a request, or raise the S3 error AWS gives."""
    if method not in METHODS:
        raise S3Error("MethodNotAllowed")
    for sub in _UNSUPPORTED_SUBRESOURCES:
        if sub in query:
            raise S3Error("NotImplemented", f"The {sub} sub-resource is not implemented")
    if "attributes" in query and not (method == "GET" and target == "object"):
        # Only GetObjectAttributes has it: never let another action take it for an argument.
        if target == "object":
            raise S3Error("MethodNotAllowed")
        raise S3Error("NotImplemented", "The attributes sub-resource is not implemented")
    if target != "object" and ("partNumber" in query or "uploadId" in query) and method != "GET":
        raise S3Error("InvalidRequest", "A key must be specified")
    for route in ROUTES:
        if route.method != method or route.target != target:
            continue
        if route.subresource is not None and route.subresource not in query:
            continue
        if route.header is not None and route.header not in headers:
            continue
        return route
    raise S3Error("MethodNotAllowed")
