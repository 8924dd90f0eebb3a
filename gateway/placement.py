"""Where an object's bytes go (S3DATA=multiple): the one rule every write follows.

The controlling location of a new object (PutObject, POST object, CopyObject, CreateMultipartUpload;
its parts follow the upload's) is, as CloudServer's BackendInfo chooses it:

1. the `x-amz-meta-scal-location-constraint` header of the request, when present: a location
   name (or alias) of locationConfig.json, else 400 InvalidArgument ("Object Location Error");
2. else the bucket's LocationConstraint;
3. else the location `restEndpoints` maps the request's Host to (a bucket recorded without a
   constraint), else us-east-1.

The header is user metadata too: it stays on the object, as CloudServer keeps it.

A location whose remote keeps no versions (an "azure" location, an "aws_s3" one in the named
layout over an unversioned bucket) cannot hold versions of a versioned bucket: such a write is
refused with 501 NotImplemented, CloudServer's answer (`refuse_versioned_write`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from gateway.server import hostname_of
from shared.errors import S3Error

if TYPE_CHECKING:
    from gateway.context import RequestContext
    from gateway.models import BucketMD

PLACEMENT_HEADER = "x-amz-meta-scal-location-constraint"
DEFAULT_LOCATION = "us-east-1"
EXTERNAL_VERSIONING_MESSAGE = ("We do not currently support putting a versioned object to a location-constraint "
                               "whose remote does not keep versions (type azure, or aws_s3 over an unversioned "
                               "bucket).")


def requested_location(ctx: "RequestContext", headers: Mapping[str, str] | None = None) -> str | None:
    """The location the placement header names (resolved through aliases), None without the header;
    InvalidArgument for a name no location has."""
    value = (ctx.headers if headers is None else headers).get(PLACEMENT_HEADER)
    if value is None:
        return None
    location = ctx.config.resolve_location(value.strip())
    if location is None:
        raise S3Error("InvalidArgument", f'Object Location Error - Your object location "{value}" is not in your '
                      "location config - Please update.", ArgumentName=PLACEMENT_HEADER, ArgumentValue=value)
    return location


def endpoint_location(ctx: "RequestContext") -> str | None:
    """The location `restEndpoints` maps the request's Host to (path-style or virtual-hosted)."""
    hostname = hostname_of(ctx.headers.get("host", ""))
    for endpoint, location in ctx.config.rest_endpoints.items():
        if hostname == endpoint or hostname.endswith("." + endpoint):
            return location
    return None


async def object_location(ctx: "RequestContext", bucket: "BucketMD", headers: Mapping[str, str] | None = None) -> str:
    """The controlling location of a new object of `bucket` (see the module docstring).
    `headers`: the request's own when None (CopyObject passes the same)."""
    location = (requested_location(ctx, headers) or bucket.location_constraint or endpoint_location(ctx)
                or DEFAULT_LOCATION)
    await refuse_versioned_write(ctx, bucket, location)
    return location


async def refuse_versioned_write(ctx: "RequestContext", bucket: "BucketMD", location: str, *,
                                 enabling: bool = False) -> None:
    """501 NotImplemented for a new version of a versioning-enabled bucket (or for enabling
    versioning, `enabling`) on a location whose remote cannot keep versions; an aws_s3 location in
    the named layout over an unversioned remote bucket answers 409 InvalidBucketState (its backend)."""
    if bucket.versioning_status != "Enabled" and not enabling:
        return
    try:
        backend = ctx.services.data_for(location)
    except S3Error:
        return   # a location this gateway does not serve: the write itself says so
    if not await backend.keeps_versions():
        raise S3Error("NotImplemented", EXTERNAL_VERSIONING_MESSAGE)
