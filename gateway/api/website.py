"""Bucket website configuration: Put/Get/DeleteBucketWebsite (the document: gateway/websiteconfig.py;
the website endpoint that serves it: gateway/website.py)."""
from __future__ import annotations

from starlette.responses import Response

from gateway import websiteconfig
from gateway.api.common import read_xml_body, save_bucket
from gateway.context import RequestContext
from gateway.router import action
from shared.errors import S3Error


@action("PutBucketWebsite")
async def put_bucket_website(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    bucket.website = websiteconfig.parse_configuration(await read_xml_body(ctx))
    await save_bucket(ctx, bucket)
    return Response(status_code=200)


@action("GetBucketWebsite")
async def get_bucket_website(ctx: RequestContext) -> Response:
    config = ctx.bucket_md.website
    if not config:
        raise S3Error("NoSuchWebsiteConfiguration", BucketName=ctx.bucket_md.name)
    return Response(websiteconfig.configuration_document(config), media_type="application/xml")


@action("DeleteBucketWebsite")
async def delete_bucket_website(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if bucket.website:
        bucket.website = None
        await save_bucket(ctx, bucket)
    return Response(status_code=204)
