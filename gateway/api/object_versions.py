"""Version-addressed object calls: versionId resolution, delete markers and
version-specific deletes (the reference's "Behavior of Object-Targeting APIs",
"Null Version Mapping" and "DELETE Example")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.api.common import delete_locations, find_object_md
from gateway.context import RequestContext
from gateway.models import BucketInfo, now_iso
from gateway.versioning import commit_version, external_version_id
from shared import versionid
from shared.errors import S3Error


def decode_version_id(version: str) -> str:
    try:
        vid = versionid.decode(version)
    except ValueError:
        raise S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=version) from None
    if not vid:
        raise S3Error("InvalidArgument", "Invalid version id specified")
    return vid


async def resolve_version_options(ctx: RequestContext, bucket: BucketInfo, key: str, version: str) -> dict[str, Any]:
    """Metadata get options for an API versionId ("null" maps to the null version)."""
    if version == versionid.EXTERNAL_NULL:
        master = await find_object_md(ctx, bucket.name, key)
        if master is not None and (master.get("isNull") or not master.get("versionId")):
            return {}
        if master is not None and master.get("nullVersionId"):
            return {"versionId": master["nullVersionId"]}
        raise S3Error("NoSuchVersion", Key=key, VersionId=version)
    return {"versionId": decode_version_id(version)}


async def get_version_md(ctx: RequestContext, bucket: BucketInfo, key: str, options: dict[str, Any],
                         version: str) -> dict[str, Any]:
    md = await ctx.find_metadata([bucket.name], key, options)
    if md is None:
        raise S3Error("NoSuchVersion", Key=key, VersionId=version)
    return md


def delete_marker_md(ctx: RequestContext, key: str) -> dict[str, Any]:
    ts = now_iso()
    return {"owner-display-name": ctx.account.name, "owner-id": ctx.account.canonical_id,
            "content-length": 0, "content-md5": "", "content-type": "", "creation-time": ts,
            "last-modified": ts, "key": key, "location": None, "isDeleteMarker": True,
            "x-amz-storage-class": "STANDARD", "md-model-version": 6, "dataStoreName": "",
            "originOp": "s3:ObjectRemoved:DeleteMarkerCreated", "tags": {}}


@dataclass
class Deleted:
    """What one delete did, for DeleteObject's headers and DeleteObjects' result entries."""
    version_id: str | None = None          # external id of the version removed or the marker created
    delete_marker: bool = False            # a delete marker was created or removed


async def delete_one(ctx: RequestContext, bucket: BucketInfo, key: str, version: str | None) -> Deleted:
    """Delete `key` (or one version of it) the way DeleteObject does; shared with DeleteObjects."""
    if version is None:
        master = await find_object_md(ctx, bucket.name, key)
        if bucket.versioning_status is None:
            if master is not None:
                await ctx.services.metadata.delete([bucket.name], key, {})
                await delete_locations(ctx, master.get("location"))
            return Deleted()
        md = delete_marker_md(ctx, key)
        committed = await commit_version(ctx, bucket, key, md, master)
        for freed in committed.freed:
            await delete_locations(ctx, freed)
        vid = external_version_id({**md, "versionId": committed.version_id}) if committed.version_id else None
        return Deleted(vid, True)
    try:
        options = await resolve_version_options(ctx, bucket, key, version)
    except S3Error as exc:
        if exc.code == "NoSuchVersion":   # deleting an absent version succeeds, as on AWS
            return Deleted(version)
        raise
    md = await ctx.find_metadata([bucket.name], key, options)
    if md is None:
        return Deleted(version)
    if "versionId" in options:
        await ctx.services.metadata.delete([bucket.name], key, {"versionId": options["versionId"]})
    elif md.get("versionId"):
        # The null version is the master: remove it as a version so the engine repairs the master.
        await ctx.services.metadata.delete([bucket.name], key, {"versionId": md["versionId"]})
    else:
        await ctx.services.metadata.delete([bucket.name], key, {})
    await delete_locations(ctx, md.get("location"))
    return Deleted(version, bool(md.get("isDeleteMarker")))
