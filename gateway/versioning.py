"""The S3 rules of object versions, outside HTTP: how a write or a delete becomes
store calls per the bucket's versioning state, and which data it frees.

This is the gateway half of the reference's "Versioning" design (the engine
half is shared/metastore; docs/versioning.md): null versions, `nullVersionId`
bookkeeping, delete markers and version-specific deletes. Every write path
(PutObject, POST object, CopyObject, CompleteMultipartUpload, delete markers)
commits through `commit_version`; DeleteObject and DeleteObjects through
`delete_object`. They take plain arguments (services, bucket, key, the acting
account), so a lifecycle worker or a test runs them without a request.

Write order (docs/durability.md): data first, then the metadata commit, and
only then the replaced data is freed: a crash in between leaks data, never
loses an object.

Races (docs/versioning.md#races): a plain (non-versioned) write or delete learns from the store
which master it replaced, and frees that one's data, so two concurrent overwrites never free the
same data twice nor leak one. After a write, `Store.bucket_alive` checks that the bucket it wrote
into still exists (settling a DeleteBucket in progress): if a DeleteBucket won, the write is
undone and answers NoSuchBucket; otherwise that DeleteBucket answers BucketNotEmpty.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from gateway.models import BucketMD, ObjectMD
from gateway.objectdata import free_locations, free_new_data
from gateway.objectlock import check_removable
from shared import versionid
from shared.config import Account
from shared.errors import S3Error

if TYPE_CHECKING:
    from gateway.context import Services
    from gateway.store import Store

VERSION_ID_PARAM = "versionId"
Locations = list[dict[str, Any]]


@dataclass
class Committed:
    version_id: str | None                   # internal id; None for non-versioned buckets
    freed: list[Locations] = field(default_factory=list)   # locations no longer referenced
    stored: str | None = None                # the master text a plain put stored (to undo it)


@dataclass
class Deleted:
    """What one delete did, for DeleteObject's headers and DeleteObjects' result entries."""
    version_id: str | None = None          # external id of the version removed or the marker created
    delete_marker: bool = False            # a delete marker was created or removed


def null_version_id(master: ObjectMD, replication_group_id: str) -> str:
    """The internal id of a null or pre-versioning master (the max-epoch id when it has none)."""
    if master.is_null and master.version_id:
        return master.version_id
    return versionid.get_inf_vid(replication_group_id)


def external_version_id(md: ObjectMD, version_id: str | None = None) -> str:
    """The version id an API response shows for a stored version ("null" for null versions);
    `version_id` is the id the store just gave `md`, when it has not been set on it."""
    vid = version_id or md.version_id
    if not vid or md.is_null:
        return "null"
    return versionid.encode(vid)


def decode_version_id(version: str) -> str:
    """The internal id of an API version id (not "null"), or InvalidArgument."""
    try:
        vid = versionid.decode(version)
    except ValueError:
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName=VERSION_ID_PARAM,
                      ArgumentValue=version) from None
    if not vid:
        raise S3Error("InvalidArgument", "Invalid version id specified")
    return vid


def refuse_version_id(query: dict[str, str]) -> None:
    """Writes of a new version never name one: PutObject, CopyObject and CompleteMultipartUpload
    with ?versionId= answer 400 InvalidArgument (reference, "Specifying Versions in APIs for
    Putting Versions"). Handlers call this before moving any data."""
    version = query.get(VERSION_ID_PARAM)
    if version is not None:
        raise S3Error("InvalidArgument", "This operation does not accept a version id", ArgumentName=VERSION_ID_PARAM,
                      ArgumentValue=version)


async def resolve_version(store: "Store", bucket: BucketMD, key: str, version: str) -> str | None:
    """The internal id to read for an API versionId; None means the master ("null" when the null
    version is the master). NoSuchVersion for a "null" that does not exist."""
    if version == versionid.EXTERNAL_NULL:
        master = await store.get_object(bucket.name, key)
        if master is not None and master.is_null_or_unversioned:
            return None
        if master is not None and master.null_version_id:
            return master.null_version_id
        raise S3Error("NoSuchVersion", Key=key, VersionId=version)
    return decode_version_id(version)


async def get_version(store: "Store", bucket: BucketMD, key: str, version: str) -> ObjectMD:
    """The stored version an API versionId names, or NoSuchVersion."""
    md = await store.get_object(bucket.name, key, await resolve_version(store, bucket, key, version))
    if md is None:
        raise S3Error("NoSuchVersion", Key=key, VersionId=version)
    return md


async def get_current(store: "Store", bucket: BucketMD, key: str) -> ObjectMD:
    """The current version (master) of `key`, or NoSuchKey."""
    md = await store.get_object(bucket.name, key)
    if md is None:
        raise S3Error("NoSuchKey", Key=key)
    return md


async def commit_version(store: "Store", bucket: BucketMD, key: str, md: ObjectMD,
                         master: ObjectMD | None) -> Committed:
    """Write `md` as the new current version of `key`; `master` is the current one (or None).

    The caller frees the data in `freed` only after this returns.
    """
    status = bucket.versioning_status
    if status is None:
        # Free what this put replaced, which may not be `master` if another write came in between.
        replaced, stored = await store.replace_object(bucket.name, key, md)
        freed = [replaced.data_locations] if replaced is not None and replaced.data_locations else []
        return Committed(None, freed, stored)
    if status == "Enabled":
        if master is not None and master.is_null_or_unversioned:
            # Preserve the null (or pre-versioning) master as a version of its own.
            null_vid = null_version_id(master, store.replication_group_id)
            old = ObjectMD({**master, "versionId": null_vid, "isNull": True})
            await store.put_object(bucket.name, key, old, version_id=null_vid)
            md.null_version_id = null_vid
        elif master is not None and master.null_version_id:
            md.null_version_id = master.null_version_id
        return Committed(await store.put_object(bucket.name, key, md, versioning=True), [])
    # Suspended: the new object is the null version; the previous null version goes.
    freed: list[Locations] = []
    if master is not None:
        if master.is_null_or_unversioned:
            if master.version_id:
                await store.delete_object(bucket.name, key, master.version_id)
            if master.data_locations:
                freed.append(master.data_locations)
        elif master.null_version_id:
            null_md = await store.get_object(bucket.name, key, master.null_version_id)
            await store.delete_object(bucket.name, key, master.null_version_id)
            if null_md is not None and null_md.data_locations:
                freed.append(null_md.data_locations)
    md.is_null = True
    return Committed(await store.put_object(bucket.name, key, md, version_id=""), freed)


async def commit_new_object(services: "Services", bucket: BucketMD, key: str, md: ObjectMD,
                            new_locations: Locations | None,
                            check: Callable[[ObjectMD | None], None] | None = None,
                            log: dict[str, Any] | None = None) -> Committed:
    """Commit `md` (whose data is already stored at `new_locations`) as the current version of `key`.

    `check` sees the current version first (conditional writes). On a failure
    the new data is freed and metadata is untouched, unless the commit's outcome
    is unknown (its answer lost: then the data stays, a leak rather than an
    object without data); on success the data the write replaced is freed, after
    the commit.
    """
    try:
        # An unversioned bucket's commit reads what it replaces in the same step (replace_object):
        # only a condition needs the master beforehand.
        master = None
        if check is not None or bucket.versioning_status is not None:
            master = await services.store.get_object(bucket.name, key)
        if check is not None:
            check(master)
    except BaseException:
        await free_locations(services, new_locations, log)
        raise
    since = services.store.bucket_watch()
    try:
        committed = await commit_version(services.store, bucket, key, md, master)
    except BaseException as exc:
        await free_new_data(services, new_locations, exc, log)
        raise
    for freed in committed.freed:
        await free_locations(services, freed, log)
    if not await services.store.bucket_alive(bucket, since):
        await undo_commit(services.store, bucket, key, committed)
        await free_locations(services, new_locations, log)
        raise S3Error("NoSuchBucket", BucketName=bucket.name)
    return committed


async def undo_commit(store: "Store", bucket: BucketMD, key: str, committed: Committed) -> None:
    """Remove what a commit wrote into a bucket deleted meanwhile (only that: a later write stays)."""
    if committed.version_id is not None:
        await store.delete_object(bucket.name, key, committed.version_id)
    elif committed.stored is not None:
        await store.delete_object_if(bucket.name, key, committed.stored)


async def delete_object(services: "Services", bucket: BucketMD, key: str, version: str | None,
                        actor: Account, log: dict[str, Any] | None = None,
                        bypass_governance: bool = False,
                        free: Callable[[Locations], Awaitable[None]] | None = None) -> Deleted:
    """Delete `key` (or the version an API versionId names) as DeleteObject does; shared with
    DeleteObjects and anything that expires objects. A version under Object Lock (gateway/objectlock.py)
    is not removed (AccessDenied); `bypass_governance`: the request may bypass GOVERNANCE retention.
    `free` gets the data no longer referenced, only after the metadata commit (default: freed here;
    DeleteObjects frees a whole request's data later, off the response path)."""
    store = services.store
    if free is None:
        async def free(locations: Locations) -> None:
            await free_locations(services, locations, log)
    if version is None:
        if bucket.versioning_status is None:
            # The removal returns what it removed (None: nothing was there), in one step.
            removed = await store.remove_object(bucket.name, key)
            if removed is not None:
                await free(removed.data_locations)
            return Deleted()
        master = await store.get_object(bucket.name, key)
        marker = ObjectMD.delete_marker(key, actor.canonical_id, actor.name)
        since = store.bucket_watch()
        committed = await commit_version(store, bucket, key, marker, master)
        for freed in committed.freed:
            await free(freed)
        if not await store.bucket_alive(bucket, since):
            await undo_commit(store, bucket, key, committed)
            raise S3Error("NoSuchBucket", BucketName=bucket.name)
        vid = external_version_id(marker, committed.version_id) if committed.version_id else None
        return Deleted(vid, True)
    try:
        version_id = await resolve_version(store, bucket, key, version)
    except S3Error as exc:
        if exc.code == "NoSuchVersion":   # deleting an absent version succeeds, as on AWS
            return Deleted(version)
        raise
    md = await store.get_object(bucket.name, key, version_id)
    if md is None:
        return Deleted(version)
    check_removable(md, bypass_governance)
    # The null version as the master is removed as a version, so that the engine repairs the master.
    await store.delete_object(bucket.name, key, version_id or md.version_id)
    await free(md.data_locations)
    return Deleted(version, md.is_delete_marker)
