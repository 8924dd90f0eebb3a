"""THE routing table: (method, target, sub-resource, header) -> AWS action name.

Every S3 action has one row here, named exactly like the AWS API action. API
modules register the handler of an action with `@action("PutObject")`; a row
whose action has no handler answers NotImplemented (501). The IAM action
authorized (gateway/authz.py) comes from the same row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Literal, Mapping

from shared.errors import S3Error

Target = Literal["service", "bucket", "object"]

# Sub-resources that select an action (or NotImplemented); any other query
# parameter is an ordinary argument of the action.
_UNSUPPORTED_SUBRESOURCES = ("accelerate", "analytics", "inventory", "logging", "metrics",
                             "requestPayment", "torrent",
                             "intelligent-tiering", "select", "restore",
                             "notification",
                             "replication", "session")


@dataclass(frozen=True)
class Route:
    method: str
    target: Target
    action: str
    iam: str                             # the IAM action authorized (AWS's "Actions ... for Amazon S3")
    subresource: str | None = None       # query parameter that must be present
    header: str | None = None            # request header that must be present

    def iam_action(self, query: Mapping[str, str]) -> str:
        """The IAM action of this request: a ?versionId picks the *Version* action where AWS has one
        (GetObject -> s3:GetObjectVersion, DeleteObject -> s3:DeleteObjectVersion, ...)."""
        if "versionId" in query:
            return _VERSION_ACTIONS.get(self.iam, self.iam)
        return self.iam


_VERSION_ACTIONS = {
    "s3:GetObject": "s3:GetObjectVersion", "s3:DeleteObject": "s3:DeleteObjectVersion",
    "s3:GetObjectAcl": "s3:GetObjectVersionAcl", "s3:PutObjectAcl": "s3:PutObjectVersionAcl",
    "s3:GetObjectTagging": "s3:GetObjectVersionTagging", "s3:PutObjectTagging": "s3:PutObjectVersionTagging",
    "s3:DeleteObjectTagging": "s3:DeleteObjectVersionTagging",
    "s3:GetObjectAttributes": "s3:GetObjectVersionAttributes",
}


def _r(method: str, target: Target, action: str, iam: str, sub: str | None = None,
       header: str | None = None) -> Route:
    return Route(method, target, action, iam, sub, header)


# Order matters: the first matching row wins (most specific first).
ROUTES: tuple[Route, ...] = (
    _r("GET", "service", "ListBuckets", "s3:ListAllMyBuckets"),

    _r("GET", "bucket", "GetBucketAcl", "s3:GetBucketAcl", "acl"),
    _r("GET", "bucket", "GetBucketCors", "s3:GetBucketCORS", "cors"),
    _r("GET", "bucket", "GetBucketVersioning", "s3:GetBucketVersioning", "versioning"),
    _r("GET", "bucket", "GetBucketWebsite", "s3:GetBucketWebsite", "website"),
    _r("GET", "bucket", "GetBucketLifecycleConfiguration", "s3:GetLifecycleConfiguration", "lifecycle"),
    _r("GET", "bucket", "GetBucketLocation", "s3:GetBucketLocation", "location"),
    _r("GET", "bucket", "GetObjectLockConfiguration", "s3:GetBucketObjectLockConfiguration", "object-lock"),
    _r("GET", "bucket", "GetBucketTagging", "s3:GetBucketTagging", "tagging"),
    _r("GET", "bucket", "GetBucketPolicy", "s3:GetBucketPolicy", "policy"),
    _r("GET", "bucket", "GetBucketPolicyStatus", "s3:GetBucketPolicyStatus", "policyStatus"),
    _r("GET", "bucket", "GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock", "publicAccessBlock"),
    _r("GET", "bucket", "GetBucketOwnershipControls", "s3:GetBucketOwnershipControls", "ownershipControls"),
    _r("GET", "bucket", "GetBucketEncryption", "s3:GetEncryptionConfiguration", "encryption"),
    _r("GET", "bucket", "ListMultipartUploads", "s3:ListBucketMultipartUploads", "uploads"),
    _r("GET", "bucket", "ListObjectVersions", "s3:ListBucketVersions", "versions"),
    _r("GET", "bucket", "ListObjectsV2", "s3:ListBucket", "list-type"),
    _r("GET", "bucket", "ListObjects", "s3:ListBucket"),
    _r("HEAD", "bucket", "HeadBucket", "s3:ListBucket"),
    _r("PUT", "bucket", "PutBucketAcl", "s3:PutBucketAcl", "acl"),
    _r("PUT", "bucket", "PutBucketVersioning", "s3:PutBucketVersioning", "versioning"),
    _r("PUT", "bucket", "PutBucketWebsite", "s3:PutBucketWebsite", "website"),
    _r("PUT", "bucket", "PutBucketCors", "s3:PutBucketCORS", "cors"),
    _r("PUT", "bucket", "PutBucketLifecycleConfiguration", "s3:PutLifecycleConfiguration", "lifecycle"),
    _r("PUT", "bucket", "PutBucketTagging", "s3:PutBucketTagging", "tagging"),
    _r("PUT", "bucket", "PutObjectLockConfiguration", "s3:PutBucketObjectLockConfiguration", "object-lock"),
    _r("PUT", "bucket", "PutBucketPolicy", "s3:PutBucketPolicy", "policy"),
    _r("PUT", "bucket", "PutPublicAccessBlock", "s3:PutBucketPublicAccessBlock", "publicAccessBlock"),
    _r("PUT", "bucket", "PutBucketOwnershipControls", "s3:PutBucketOwnershipControls", "ownershipControls"),
    _r("PUT", "bucket", "PutBucketEncryption", "s3:PutEncryptionConfiguration", "encryption"),
    _r("PUT", "bucket", "CreateBucket", "s3:CreateBucket"),
    _r("POST", "bucket", "DeleteObjects", "s3:DeleteObject", "delete"),
    _r("POST", "bucket", "PostObject", "s3:PutObject"),
    _r("DELETE", "bucket", "DeleteBucketWebsite", "s3:DeleteBucketWebsite", "website"),
    _r("DELETE", "bucket", "DeleteBucketCors", "s3:PutBucketCORS", "cors"),
    _r("DELETE", "bucket", "DeleteBucketLifecycle", "s3:PutLifecycleConfiguration", "lifecycle"),
    _r("DELETE", "bucket", "DeleteBucketPolicy", "s3:DeleteBucketPolicy", "policy"),
    _r("DELETE", "bucket", "DeletePublicAccessBlock", "s3:PutBucketPublicAccessBlock", "publicAccessBlock"),
    _r("DELETE", "bucket", "DeleteBucketOwnershipControls", "s3:PutBucketOwnershipControls", "ownershipControls"),
    _r("DELETE", "bucket", "DeleteBucketEncryption", "s3:PutEncryptionConfiguration", "encryption"),
    _r("DELETE", "bucket", "DeleteBucketTagging", "s3:PutBucketTagging", "tagging"),
    _r("DELETE", "bucket", "DeleteBucket", "s3:DeleteBucket"),

    _r("GET", "object", "GetObjectAcl", "s3:GetObjectAcl", "acl"),
    _r("GET", "object", "GetObjectTagging", "s3:GetObjectTagging", "tagging"),
    _r("GET", "object", "GetObjectRetention", "s3:GetObjectRetention", "retention"),
    _r("GET", "object", "GetObjectLegalHold", "s3:GetObjectLegalHold", "legal-hold"),
    _r("GET", "object", "ListParts", "s3:ListMultipartUploadParts", "uploadId"),
    _r("GET", "object", "GetObjectAttributes", "s3:GetObjectAttributes", "attributes"),
    _r("GET", "object", "GetObject", "s3:GetObject"),
    _r("HEAD", "object", "HeadObject", "s3:GetObject"),
    _r("PUT", "object", "UploadPartCopy", "s3:PutObject", "partNumber", "x-amz-copy-source"),
    _r("PUT", "object", "UploadPart", "s3:PutObject", "partNumber"),
    _r("PUT", "object", "PutObjectAcl", "s3:PutObjectAcl", "acl"),
    _r("PUT", "object", "PutObjectTagging", "s3:PutObjectTagging", "tagging"),
    _r("PUT", "object", "PutObjectRetention", "s3:PutObjectRetention", "retention"),
    _r("PUT", "object", "PutObjectLegalHold", "s3:PutObjectLegalHold", "legal-hold"),
    _r("PUT", "object", "CopyObject", "s3:PutObject", None, "x-amz-copy-source"),
    _r("PUT", "object", "PutObject", "s3:PutObject"),
    _r("POST", "object", "CreateMultipartUpload", "s3:PutObject", "uploads"),
    _r("POST", "object", "CompleteMultipartUpload", "s3:PutObject", "uploadId"),
    _r("DELETE", "object", "AbortMultipartUpload", "s3:AbortMultipartUpload", "uploadId"),
    _r("DELETE", "object", "DeleteObjectTagging", "s3:DeleteObjectTagging", "tagging"),
    _r("DELETE", "object", "DeleteObject", "s3:DeleteObject"),
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
