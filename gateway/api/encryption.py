"""Bucket default encryption: PutBucketEncryption, GetBucketEncryption, DeleteBucketEncryption.

As CloudServer: one rule, `AES256` or `aws:kms` (with an optional `KMSMasterKeyID`, which must
name a key of the KMS), `BucketKeyEnabled` accepted; without a configuration GetBucketEncryption
answers 404 ServerSideEncryptionConfigurationNotFoundError (no default encryption unless
config.json's defaultBucketEncryption asks for AWS's). The configuration is the bucket record's
`serverSideEncryption` (gateway/sse.py); objects already stored keep their own encryption.
"""
from __future__ import annotations

from starlette.responses import Response

from gateway import sse
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.context import RequestContext
from gateway.router import action
from gateway.xml import child_text, children, parse, root, sub
from shared.errors import S3Error


def parse_encryption_document(body: bytes) -> tuple[str, str | None, bool]:
    """(algorithm, KMSMasterKeyID or None, BucketKeyEnabled) of a ServerSideEncryptionConfiguration."""
    doc = parse(body, root_tag="ServerSideEncryptionConfiguration")
    rules = children(doc, "Rule")
    if len(rules) != 1:
        raise S3Error("MalformedXML")
    defaults = children(rules[0], "ApplyServerSideEncryptionByDefault")
    if len(defaults) != 1:
        raise S3Error("MalformedXML")
    algorithm = (child_text(defaults[0], "SSEAlgorithm") or "").strip()
    if algorithm not in sse.ALGORITHMS:
        raise S3Error("MalformedXML")
    key_id = child_text(defaults[0], "KMSMasterKeyID")
    if key_id is not None:
        key_id = key_id.strip()
        if algorithm != sse.AWS_KMS:
            raise S3Error("InvalidArgument", "a KMSMasterKeyID is not applicable if the default sse algorithm is "
                          "not aws:kms", ArgumentName="ApplyServerSideEncryptionByDefault")
        if not key_id:
            raise S3Error("MalformedXML")
    bucket_key_text = (child_text(rules[0], "BucketKeyEnabled") or "false").strip().lower()
    if bucket_key_text not in ("true", "false"):
        raise S3Error("MalformedXML")
    return algorithm, key_id, bucket_key_text == "true"



@action("PutBucketEncryption")
async def put_bucket_encryption(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    algorithm, key_id, bucket_key = parse_encryption_document(await read_xml_body(ctx))
    resolved = sse.kms_key(ctx, key_id) if key_id else None
    bucket.server_side_encryption = sse.bucket_config(algorithm, resolved, bucket_key)
    await save_bucket(ctx, bucket)
    return Response(status_code=200)


@action("GetBucketEncryption")
async def get_bucket_encryption(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    config = bucket.server_side_encryption
    if not config or not config.get("mandatory"):
        raise S3Error("ServerSideEncryptionConfigurationNotFoundError", BucketName=bucket.name)
    doc = root("ServerSideEncryptionConfiguration")
    rule = sub(doc, "Rule")
    defaults = sub(rule, "ApplyServerSideEncryptionByDefault")
    sub(defaults, "SSEAlgorithm", config.get("algorithm", sse.AES256))
    if config.get("configuredMasterKeyId"):
        sub(defaults, "KMSMasterKeyID", config["configuredMasterKeyId"])
    sub(rule, "BucketKeyEnabled", bool(config.get("bucketKeyEnabled")))
    return xml_response(doc)


@action("DeleteBucketEncryption")
async def delete_bucket_encryption(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if bucket.server_side_encryption is not None:
        bucket.server_side_encryption = None
        await save_bucket(ctx, bucket)
    return Response(status_code=204)
