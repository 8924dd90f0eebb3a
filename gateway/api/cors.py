"""Bucket CORS configuration: Put/Get/DeleteBucketCors (the rules and their matching: gateway/cors.py)."""
from __future__ import annotations

from starlette.responses import Response

from gateway import cors
from gateway.api.common import read_xml_body, save_bucket
from gateway.context import RequestContext
from gateway.router import action
from shared.errors import S3Error


@action("PutBucketCors")
async def put_bucket_cors(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    bucket.cors = cors.parse_configuration(await read_xml_body(ctx))
    await save_bucket(ctx, bucket)
    return Response(status_code=200)


@action("GetBucketCors")
async def get_bucket_cors(ctx: RequestContext) -> Response:
    rules = ctx.bucket_md.cors
    if not rules:
        raise S3Error("NoSuchCORSConfiguration", BucketName=ctx.bucket_md.name)
    return Response(cors.configuration_document(rules), media_type="application/xml")


@action("DeleteBucketCors")
async def delete_bucket_cors(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if bucket.cors:
        bucket.cors = None
        await save_bucket(ctx, bucket)
    return Response(status_code=204)
