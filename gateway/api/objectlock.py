"""Object Lock actions: Put/GetObjectLockConfiguration, Put/GetObjectRetention, Put/GetObjectLegalHold.

HTTP in and out only: the request documents and their errors (MalformedXML for a bad mode or
status inside a document, InvalidArgument for a bad value), the responses. The rules live in
gateway/objectlock.py.
"""
from __future__ import annotations

from datetime import datetime

from starlette.responses import Response

from gateway import objectlock
from gateway.api.common import read_xml_body, xml_response, save_bucket
from gateway.api.tagging import rewrite_version
from gateway.authz import allowed
from gateway.context import RequestContext
from gateway.models import BucketMD, ObjectMD
from gateway.router import action
from gateway.versioning import get_current, get_version
from gateway.xml import children, parse, root, sub
from shared.errors import S3Error

CONFIG_INTEGRITY_MESSAGE = "Content-MD5 OR x-amz-checksum- HTTP header is required for this request"


def _only_child_text(el, name: str) -> str | None:
    found = children(el, name)
    if len(found) > 1:
        raise S3Error("MalformedXML")
    return (found[0].text or "").strip() if found else None


def _positive(text: str, what: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise S3Error("MalformedXML")
    value = int(text)
    if value <= 0:
        raise S3Error("InvalidArgument", "Default retention period must be a positive integer value",
                      ArgumentName=what, ArgumentValue=text)
    return value


def parse_lock_configuration(body: bytes) -> objectlock.DefaultRetention | None:
    """<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>
    [<Rule><DefaultRetention><Mode/>(<Days/>|<Years/>)</DefaultRetention></Rule>]</ObjectLockConfiguration>"""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="ObjectLockConfiguration")
    if _only_child_text(doc, "ObjectLockEnabled") != "Enabled":
        raise S3Error("MalformedXML")
    rules = children(doc, "Rule")
    if not rules:
        return None
    if len(rules) > 1:
        raise S3Error("MalformedXML")
    retentions = children(rules[0], "DefaultRetention")
    if len(retentions) != 1:
        raise S3Error("MalformedXML")
    retention = retentions[0]
    mode = _only_child_text(retention, "Mode")
    days, years = _only_child_text(retention, "Days"), _only_child_text(retention, "Years")
    if mode not in objectlock.MODES or (days is None) == (years is None):
        raise S3Error("MalformedXML")
    if days is not None:
        value = _positive(days, "Days")
        if value > objectlock.MAX_RETENTION_DAYS:
            raise S3Error("InvalidArgument", "Default retention period is too large.", ArgumentName="Days",
                          ArgumentValue=days)
        return objectlock.DefaultRetention(mode, days=value)
    value = _positive(years or "", "Years")
    if value * objectlock.DAYS_PER_YEAR > objectlock.MAX_RETENTION_DAYS:
        raise S3Error("InvalidArgument", "Default retention period is too large.", ArgumentName="Years",
                      ArgumentValue=years or "")
    return objectlock.DefaultRetention(mode, years=value)


@action("PutObjectLockConfiguration")
async def put_object_lock_configuration(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    objectlock.require_integrity(ctx.headers, CONFIG_INTEGRITY_MESSAGE)
    rule = parse_lock_configuration(await read_xml_body(ctx))
    objectlock.set_configuration(bucket, rule)
    await save_bucket(ctx, bucket)
    return Response(status_code=200)


@action("GetObjectLockConfiguration")
async def get_object_lock_configuration(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if not objectlock.bucket_lock_enabled(bucket):
        raise S3Error("ObjectLockConfigurationNotFoundError", BucketName=bucket.name)
    doc = root("ObjectLockConfiguration")
    sub(doc, "ObjectLockEnabled", "Enabled")
    default = objectlock.default_retention(bucket)
    if default is not None:
        retention = sub(sub(doc, "Rule"), "DefaultRetention")
        sub(retention, "Mode", default.mode)
        if default.days is not None:
            sub(retention, "Days", default.days)
        else:
            sub(retention, "Years", default.years)
    return xml_response(doc)


async def _target(ctx: RequestContext) -> tuple[BucketMD, ObjectMD]:
    """The addressed version of a bucket with Object Lock (InvalidRequest without); a delete marker
    takes no lock (MethodNotAllowed)."""
    bucket = ctx.bucket_md
    objectlock.require_lock_bucket(bucket)
    key = ctx.key or ""
    version = ctx.query.get("versionId")
    md = await (get_version(ctx.store, bucket, key, version) if version is not None
                else get_current(ctx.store, bucket, key))
    if md.is_delete_marker:
        raise S3Error("MethodNotAllowed", headers={"x-amz-delete-marker": "true"})
    return bucket, md


def parse_retention(body: bytes) -> tuple[str | None, datetime | None]:
    """<Retention><Mode/><RetainUntilDate/></Retention>: both, or neither (a removal)."""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="Retention")
    mode = _only_child_text(doc, "Mode")
    date = _only_child_text(doc, "RetainUntilDate")
    if mode is None and date is None:
        return None, None
    if mode not in objectlock.MODES or date is None:
        raise S3Error("MalformedXML")
    until = objectlock.parse_date(date)
    if until is None:
        raise S3Error("MalformedXML")
    if until <= objectlock.now_utc():
        raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                      ArgumentName="RetainUntilDate", ArgumentValue=date)
    return mode, until


def may_bypass_governance(ctx: RequestContext, bucket: BucketMD, key: str | None = None) -> bool:
    """The request asks to bypass GOVERNANCE retention (x-amz-bypass-governance-retention: true) and
    its account has s3:BypassGovernanceRetention on the key (DeleteObject, DeleteObjects, PutObjectRetention)."""
    return objectlock.bypass_requested(ctx.headers) and allowed(ctx, bucket, objectlock.BYPASS_ACTION,
                                                                key=key if key is not None else ctx.key)


@action("PutObjectRetention")
async def put_object_retention(ctx: RequestContext) -> Response:
    objectlock.require_lock_bucket(ctx.bucket_md)
    objectlock.require_integrity(ctx.headers, CONFIG_INTEGRITY_MESSAGE)
    mode, until = parse_retention(await read_xml_body(ctx))
    bucket, md = await _target(ctx)
    objectlock.check_retention_change(md, mode, until, may_bypass_governance(ctx, bucket))
    objectlock.set_retention(md, mode, until)
    await rewrite_version(ctx, bucket, md)
    return Response(status_code=200)


@action("GetObjectRetention")
async def get_object_retention(ctx: RequestContext) -> Response:
    _bucket, md = await _target(ctx)
    retention = objectlock.retention_of(md)
    if retention is None:
        raise S3Error("NoSuchObjectLockConfiguration")
    doc = root("Retention")
    sub(doc, "Mode", retention[0])
    sub(doc, "RetainUntilDate", objectlock.format_date(retention[1]))
    return xml_response(doc)


def parse_legal_hold(body: bytes) -> bool:
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="LegalHold")
    status = _only_child_text(doc, "Status")
    if status not in objectlock.LEGAL_HOLD_STATUSES:
        raise S3Error("MalformedXML")
    return status == "ON"


@action("PutObjectLegalHold")
async def put_object_legal_hold(ctx: RequestContext) -> Response:
    objectlock.require_lock_bucket(ctx.bucket_md)
    objectlock.require_integrity(ctx.headers, CONFIG_INTEGRITY_MESSAGE)
    on = parse_legal_hold(await read_xml_body(ctx))
    bucket, md = await _target(ctx)
    objectlock.set_legal_hold(md, on)
    await rewrite_version(ctx, bucket, md)
    return Response(status_code=200)


@action("GetObjectLegalHold")
async def get_object_legal_hold(ctx: RequestContext) -> Response:
    _bucket, md = await _target(ctx)
    hold = objectlock.legal_hold_of(md)
    if hold is None:
        raise S3Error("NoSuchObjectLockConfiguration")
    doc = root("LegalHold")
    sub(doc, "Status", "ON" if hold else "OFF")
    return xml_response(doc)
