"""Put/Get/DeleteBucketLifecycleConfiguration: the request document in and out; the model and its
validation are gateway/lifecycle/rules.py, the worker that applies it gateway/lifecycle/worker.py."""
from __future__ import annotations

from starlette.responses import Response

from gateway import objectlock
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.context import RequestContext
from gateway.lifecycle import rules as lifecycle
from gateway.router import action
from shared.errors import S3Error

INTEGRITY_MESSAGE = "Content-MD5 OR x-amz-checksum- HTTP header is required for this request"


async def _store(ctx: RequestContext, rules: list[lifecycle.Rule] | None) -> None:
    bucket = ctx.bucket_md
    lifecycle.store_rules(bucket, rules)
    await save_bucket(ctx, bucket)


@action("PutBucketLifecycleConfiguration")
async def put_bucket_lifecycle(ctx: RequestContext) -> Response:
    objectlock.require_integrity(ctx.headers, INTEGRITY_MESSAGE)   # AWS requires Content-MD5 or a checksum
    await _store(ctx, lifecycle.parse_configuration(await read_xml_body(ctx)))
    return Response(status_code=200)


@action("GetBucketLifecycleConfiguration")
async def get_bucket_lifecycle(ctx: RequestContext) -> Response:
    rules = lifecycle.rules_of(ctx.bucket_md)
    if not rules:
        raise S3Error("NoSuchLifecycleConfiguration", BucketName=ctx.bucket_md.name)
    return xml_response(lifecycle.configuration_document(rules))


@action("DeleteBucketLifecycle")
async def delete_bucket_lifecycle(ctx: RequestContext) -> Response:
    if ctx.bucket_md.raw.get(lifecycle.STORED_FIELD) is not None:
        await _store(ctx, None)
    return Response(status_code=204)
