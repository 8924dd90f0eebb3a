"""DeleteObjects (POST /bucket?delete): the multi-object delete.

Owns the request document (`<Delete><Quiet/>?<Object><Key/><VersionId/>?<ETag/>?</Object>...`),
its integrity requirement (AWS refuses the call without Content-MD5 or an
x-amz-checksum-* value, and verifies whichever is given), and the result document.
Each key is deleted with DeleteObject's outcome (`versioning.delete_object`, or the batch below,
which is that function's non-versioned branch for many keys at once); a per-key failure is an
`<Error>` entry, never a failure of the whole request.

Speed (issue 18): on a non-versioned bucket without Object Lock, the entries that are plain
deletes of a key (no VersionId, no ETag, a valid key the requester may delete) are removed in
ONE metadata call (`Store.remove_objects`: the dmd's `deleteMany`, committed in one batch),
which answers what each key held; a key listed twice is removed once and answered twice.
Every other entry is deleted as DeleteObject would, DELETE_CONCURRENCY at a time, so the dmd
group-commits many of them into one fsync. The data they unreference is not freed on
the way but collected, and freed after every metadata delete of the request has
returned, by one background task per request: each store's blobs in one
`DataBackend.delete_many` (the dmd's batch delete, `POST /DataFile?delete`, 1,000 blobs a call),
FREE_CONCURRENCY such calls in flight per gateway process, at most MAX_BACKGROUND_FREES such tasks
before a request frees its own data before answering. Data is only ever freed after the metadata commit that
unreferenced it; a blob that cannot be freed (dmd down, gateway stopped) is logged and
left for the scrub (dmd/scrub.py): an orphan, never a lost object.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from lxml import etree
from starlette.responses import Response

from gateway import checksums
from gateway.api.common import check_delete_conditions, read_xml_body, xml_response
from gateway.api.objectlock import may_bypass_governance
from gateway.authz import actor, allowed
from gateway.context import RequestContext
from gateway.limits import MAX_PAGE, check_object_key
from gateway.models import BucketMD
from gateway.objectdata import free_many
from gateway.versioning import Deleted, Locations, delete_object
from gateway.router import action
from gateway.xml import parse, root, sub
from shared.errors import S3Error
from shared.log import get_logger

log = get_logger("gateway")

MAX_KEYS_PER_DELETE = MAX_PAGE    # AWS: "a list of up to 1000 keys"
DELETE_CONCURRENCY = 128          # keys in flight for one request (the dmd group-commits their writes)
FREE_CONCURRENCY = 8              # delete_many calls in flight for all DeleteObjects of this process
MAX_BACKGROUND_FREES = 16         # requests whose data is being freed after their response; beyond: inline
MISSING_INTEGRITY_MESSAGE = "Missing required header for this request: Content-MD5"


@dataclass(frozen=True)
class DeleteTarget:
    key: str
    version_id: str | None
    etag: str | None = None      # <ETag>: delete only if the current version has it (conditional delete)


@dataclass
class DeleteOutcome:
    target: DeleteTarget
    deleted: Deleted | None = None
    error: S3Error | None = None


def _has_integrity_header(ctx: RequestContext) -> bool:
    """Content-MD5, an x-amz-checksum-* header, or a checksum announced as a trailer."""
    if "content-md5" in ctx.headers:
        return True
    if any(checksums.header_name(a) in ctx.headers for a in checksums.ALGORITHMS):
        return True
    trailer = ctx.headers.get("x-amz-trailer", "")
    return any(checksums.algorithm_from_header(n.strip().lower()) for n in trailer.split(",") if n.strip())


def _local(tag: Any) -> str:
    """gateway.xml.local without building a QName: a document of 1000 objects has 3000 tags."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _parse_quiet(quiet: list[etree._Element]) -> bool:
    if not quiet:
        return False
    if len(quiet) > 1:
        raise S3Error("MalformedXML")
    value = (quiet[0].text or "").strip().lower()
    if value not in ("true", "false"):
        raise S3Error("MalformedXML")
    return value == "true"


def parse_delete_request(body: bytes) -> tuple[bool, list[DeleteTarget]]:
    """(quiet, targets in request order) from a `<Delete>` document; MalformedXML if invalid."""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="Delete")
    quiet: list[etree._Element] = []
    objects: list[etree._Element] = []
    for el in doc:
        name = _local(el.tag)
        if name == "Object":
            objects.append(el)
        elif name == "Quiet":
            quiet.append(el)
    is_quiet = _parse_quiet(quiet)
    if not objects or len(objects) > MAX_KEYS_PER_DELETE:
        raise S3Error("MalformedXML")
    targets = []
    for obj in objects:
        keys: list[str] = []
        versions: list[str] = []
        etags: list[str] = []
        for el in obj:
            name = _local(el.tag)
            if name == "Key":
                keys.append(el.text or "")
            elif name == "VersionId":
                versions.append(el.text or "")
            elif name == "ETag":
                etags.append((el.text or "").strip())
        if len(keys) != 1 or len(versions) > 1 or len(etags) > 1:
            raise S3Error("MalformedXML")
        targets.append(DeleteTarget(keys[0], versions[0] if versions else None, etags[0] if etags else None))
    return is_quiet, targets


class DataFreer:
    """The data one request's deletes unreferenced: collected during the request (`add`, given to
    `versioning.delete_object` as its `free`), freed once all its metadata deletes are done."""

    def __init__(self) -> None:
        self.locations: Locations = []

    async def add(self, locations: Locations | None) -> None:
        self.locations.extend(locations or [])


_background: set[asyncio.Task[None]] = set()
_free_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _free_limit() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    sem = _free_slots.get(loop)
    if sem is None:
        _free_slots.clear()    # one loop per process; a new one (tests) replaces the old
        sem = _free_slots[loop] = asyncio.Semaphore(FREE_CONCURRENCY)
    return sem


async def free_all(services: Any, locations: Locations, request_id: str) -> None:
    """Free `locations` (blobs nothing references any more): each store's share in one
    `delete_many` (the dmd's batch delete), at most FREE_CONCURRENCY such calls at once in this
    process; what fails is logged by blob key (orphans: the scrub reclaims them)."""
    leaked: list[Any] = []
    try:
        async with _free_limit():
            leaked = await free_many(services, locations)
    except asyncio.CancelledError:   # shutdown: what was not freed is left for the scrub
        leaked = [loc.get("key") for loc in locations]
        raise
    finally:
        if leaked:
            log.warning("data of deleted objects not freed (orphans for the scrub)",
                        extra={"fields": {"requestId": request_id, "leakedBlobs": leaked}})


async def free_after_response(ctx: RequestContext, freer: DataFreer) -> None:
    """Free the request's data in a background task, or before answering when too many are running."""
    if not freer.locations:
        return
    if len(_background) >= MAX_BACKGROUND_FREES:
        await free_all(ctx.services, freer.locations, ctx.request_id)
        return
    task = asyncio.get_running_loop().create_task(free_all(ctx.services, freer.locations, ctx.request_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _delete_target(ctx: RequestContext, bucket: BucketMD, target: DeleteTarget,
                         freer: DataFreer) -> DeleteOutcome:
    if not target.key:
        return DeleteOutcome(target, error=S3Error("UserKeyMustBeSpecified", "The key must not be empty",
                                                   status=400))
    try:
        check_object_key(target.key)
        action = "s3:DeleteObjectVersion" if target.version_id is not None else "s3:DeleteObject"
        if not allowed(ctx, bucket, action, key=target.key):
            raise S3Error("AccessDenied")
        if target.etag is not None:   # as DeleteObject's If-Match header: against the current version
            current = await ctx.store.get_object(bucket.name, target.key)
            check_delete_conditions(target.etag, current, target.key)
        deleted = await delete_object(ctx.services, bucket, target.key, target.version_id, actor(ctx.account),
                                      ctx.extra_log, bypass_governance=may_bypass_governance(ctx, bucket, target.key),
                                      free=freer.add)
        return DeleteOutcome(target, deleted=deleted)
    except S3Error as exc:
        return DeleteOutcome(target, error=exc)
    except Exception as exc:  # one key's store failure is that key's error, not the request's
        log.error("delete of one key failed", exc_info=exc,
                  extra={"fields": {"requestId": ctx.request_id, "key": target.key}})
        return DeleteOutcome(target, error=S3Error("InternalError"))


def _plain_delete(ctx: RequestContext, bucket: BucketMD, target: DeleteTarget) -> bool:
    """Whether `target` is a plain delete of a key the requester may delete: no VersionId, no
    ETag condition, a valid key (anything else, errors included, takes the per-key path)."""
    if target.version_id is not None or target.etag is not None or not target.key:
        return False
    try:
        check_object_key(target.key)
    except S3Error:
        return False
    return allowed(ctx, bucket, "s3:DeleteObject", key=target.key)


async def _remove_batch(ctx: RequestContext, bucket: BucketMD, keys: list[str],
                        freer: DataFreer) -> S3Error | None:
    """Remove `keys` (distinct) from a non-versioned bucket in one metadata call per
    MAX_KEYS_PER_DELETE keys; the data of what was removed goes to `freer`. None, or the
    error of every key (the call failed: what it removed, if anything, leaks its data)."""
    try:
        removed = await ctx.store.remove_objects(bucket.name, keys)
    except S3Error as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - the keys' error, not the request's
        log.error("batch delete failed", exc_info=exc,
                  extra={"fields": {"requestId": ctx.request_id, "keys": len(keys)}})
        return S3Error("InternalError")
    for md in removed:
        if md is not None:
            await freer.add(md.data_locations)
    return None


async def delete_all(ctx: RequestContext, bucket: BucketMD, targets: list[DeleteTarget],
                     freer: DataFreer) -> list[DeleteOutcome]:
    """Delete every target's metadata; outcomes in request order. The data the deletes
    unreferenced is in `freer` afterwards (the caller frees it).

    On a non-versioned bucket without Object Lock, the keys whose every entry is a plain delete
    go through one `Store.remove_objects` call (each key once, every entry answered). The other
    entries run with bounded concurrency; entries naming the same key run one after the other,
    in request order: two concurrent deletes of one key would each read the same current
    version and race in the versioning bookkeeping.
    """
    by_key: dict[str, list[int]] = {}
    for index, target in enumerate(targets):
        by_key.setdefault(target.key, []).append(index)
    batch: list[str] = []
    if bucket.versioning_status is None and not bucket.object_lock_enabled:
        batch = [key for key, indexes in by_key.items()
                 if all(_plain_delete(ctx, bucket, targets[i]) for i in indexes)]
    outcomes: list[DeleteOutcome | None] = [None] * len(targets)
    limit = asyncio.Semaphore(DELETE_CONCURRENCY)

    async def run_key(indexes: list[int]) -> None:
        async with limit:
            for index in indexes:
                outcomes[index] = await _delete_target(ctx, bucket, targets[index], freer)

    async def run_batch() -> None:
        error = await _remove_batch(ctx, bucket, batch, freer)
        for key in batch:
            for index in by_key[key]:
                outcomes[index] = DeleteOutcome(targets[index], deleted=None if error else Deleted(), error=error)

    in_batch = set(batch)
    singles = [indexes for key, indexes in by_key.items() if key not in in_batch]
    await asyncio.gather(*([run_batch()] if batch else []), *(run_key(indexes) for indexes in singles))
    return [o for o in outcomes if o is not None]


def _deleted_entry(result: etree._Element, outcome: DeleteOutcome) -> None:
    target, deleted = outcome.target, outcome.deleted
    assert deleted is not None
    entry = sub(result, "Deleted")
    sub(entry, "Key", target.key)
    if target.version_id is not None:
        sub(entry, "VersionId", target.version_id)
        if deleted.delete_marker:   # the version removed was itself a delete marker
            sub(entry, "DeleteMarker", True)
            sub(entry, "DeleteMarkerVersionId", target.version_id)
    elif deleted.delete_marker:     # versioned bucket: a delete marker was created
        sub(entry, "DeleteMarker", True)
        if deleted.version_id is not None:
            sub(entry, "DeleteMarkerVersionId", deleted.version_id)


def _error_entry(result: etree._Element, outcome: DeleteOutcome) -> None:
    assert outcome.error is not None
    entry = sub(result, "Error")
    sub(entry, "Key", outcome.target.key)
    if outcome.target.version_id is not None:
        sub(entry, "VersionId", outcome.target.version_id)
    sub(entry, "Code", outcome.error.code)
    sub(entry, "Message", outcome.error.message)


def delete_result(outcomes: list[DeleteOutcome], quiet: bool) -> etree._Element:
    """The `<DeleteResult>` document; quiet mode lists only the errors."""
    result = root("DeleteResult")
    for outcome in outcomes:
        if outcome.error is not None:
            _error_entry(result, outcome)
        elif not quiet:
            _deleted_entry(result, outcome)
    return result


@action("DeleteObjects")
async def delete_objects(ctx: RequestContext) -> Response:
    bucket = ctx.bucket_md
    if not _has_integrity_header(ctx):
        raise S3Error("InvalidRequest", MISSING_INTEGRITY_MESSAGE)
    quiet, targets = parse_delete_request(await read_xml_body(ctx))
    freer = DataFreer()
    try:
        outcomes = await delete_all(ctx, bucket, targets, freer)
    finally:   # even when the request is cancelled: what was unreferenced so far is freed
        await free_after_response(ctx, freer)
    if any(o.error is not None for o in outcomes):
        ctx.extra_log["deleteErrors"] = sum(o.error is not None for o in outcomes)
    return xml_response(delete_result(outcomes, quiet))
