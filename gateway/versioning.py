"""How an object write becomes metadata calls, per the bucket's versioning state.

This is the gateway half of the reference's "Versioning" design (the engine
half is shared/metastore): null versions, `nullVersionId` bookkeeping and the
choice of `versioning` / `versionId` options. Every write path (PutObject,
CopyObject, CompleteMultipartUpload, delete markers) goes through
`commit_version`, so the rules live in one place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.context import RequestContext
from gateway.models import BucketInfo
from shared import versionid
from shared.errors import S3Error


@dataclass
class Committed:
    version_id: str | None                   # internal id; None for non-versioned buckets
    freed: list[list[dict[str, Any]]] = field(default_factory=list)   # locations no longer referenced


def null_version_id(ctx: RequestContext, master: dict[str, Any]) -> str:
    """The internal id of a null or pre-versioning master (the max-epoch id when it has none)."""
    if master.get("isNull") and master.get("versionId"):
        return master["versionId"]
    return versionid.get_inf_vid(ctx.config.replication_group_id)


VERSION_ID_PARAM = "versionId"


def refuse_version_id(ctx: RequestContext) -> None:
    """Writes of a new version never name one: PutObject, CopyObject and CompleteMultipartUpload
    with ?versionId= answer 400 InvalidArgument (reference, "Specifying Versions in APIs for
    Putting Versions"). Handlers should call this before moving any data; commit_version calls
    it again so that no write path can miss it."""
    version = ctx.query.get(VERSION_ID_PARAM)
    if version is not None:
        raise S3Error("InvalidArgument", "This operation does not accept a version id", ArgumentName=VERSION_ID_PARAM,
                      ArgumentValue=version)


async def commit_version(ctx: RequestContext, bucket: BucketInfo, key: str, md: dict[str, Any],
                         master: dict[str, Any] | None) -> Committed:
    """Write `md` as the new current version of `key`; `master` is the current one (or None).

    The caller frees the data in `freed` only after this returns: a crash in
    between leaks data, never loses an object.
    """
    refuse_version_id(ctx)
    md_client = ctx.services.metadata
    status = bucket.versioning_status
    sublevel = [bucket.name]
    if status is None:
        await md_client.put(sublevel, key, json.dumps(md), {})
        freed = [master["location"]] if master and master.get("location") and not master.get("isDeleteMarker") else []
        return Committed(None, freed)
    if status == "Enabled":
        if master is not None and (not master.get("versionId") or master.get("isNull")):
            # Preserve the null (or pre-versioning) master as a version of its own.
            null_vid = null_version_id(ctx, master)
            old = {**master, "versionId": null_vid, "isNull": True}
            await md_client.put(sublevel, key, json.dumps(old), {"versionId": null_vid})
            md["nullVersionId"] = null_vid
        elif master is not None and master.get("nullVersionId"):
            md["nullVersionId"] = master["nullVersionId"]
        reply = await md_client.put(sublevel, key, json.dumps(md), {"versioning": True})
        return Committed(json.loads(reply)["versionId"], [])
    # Suspended: the new object is the null version; the previous null version goes.
    freed: list[list[dict[str, Any]]] = []
    if master is not None:
        if master.get("isNull") or not master.get("versionId"):
            if master.get("versionId"):
                await md_client.delete(sublevel, key, {"versionId": master["versionId"]})
            if master.get("location") and not master.get("isDeleteMarker"):
                freed.append(master["location"])
        elif master.get("nullVersionId"):
            null_md = await ctx.find_metadata(sublevel, key, {"versionId": master["nullVersionId"]})
            await md_client.delete(sublevel, key, {"versionId": master["nullVersionId"]})
            if null_md and null_md.get("location") and not null_md.get("isDeleteMarker"):
                freed.append(null_md["location"])
    md["isNull"] = True
    reply = await md_client.put(sublevel, key, json.dumps(md), {"versionId": ""})
    return Committed(json.loads(reply)["versionId"] if reply else None, freed)


def external_version_id(md: dict[str, Any]) -> str:
    """The version id an API response shows for a stored version ("null" for null versions)."""
    vid = md.get("versionId")
    if not vid or md.get("isNull"):
        return "null"
    return versionid.encode(vid)
