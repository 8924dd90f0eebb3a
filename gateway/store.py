"""The store layer: S3 metadata as domain calls, over one metadata client.

This is the only gateway module that talks to a `MetadataClient` (the dmd's
RPC or the in-process engine). It owns the sublevel names, the key layout and
the encoding of stored values (docs/metadata-keys.md):

- `__metastore`: one key per bucket, its BucketMD document;
- `users..bucket`: `<ownerCanonicalId>..|..<bucket>` per bucket, for ListBuckets;
- `<bucket>`: one master key per object and, for versioned buckets, one
  `<key>\\0<versionId>` key per version (the engine keeps them in step);
- `mpuShadowBucket<bucket>`: one overview key `overview..|..<key>..|..<uploadId>`
  per multipart upload and one `<uploadId>..|..<NNNNN>` key per part.

Handlers and the S3 rules (gateway/versioning.py) call these methods with
typed models; a second metadata store (PostgreSQL) implements the same class.
"""
from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from gateway.models import BucketMD, ObjectMD, PartMD, UploadMD, now_iso
from shared import jsoncodec, versionid
from shared.metastore.errors import MetadataError

if TYPE_CHECKING:
    from gateway.metadata.client import MetadataClient
    from shared.config import Config

METASTORE = "__metastore"
USERS_BUCKET = "users..bucket"
SPLITTER = "..|.."
MPU_SHADOW_PREFIX = "mpuShadowBucket"
MPU_OVERVIEW_PREFIX = "overview" + SPLITTER
PART_NUMBER_DIGITS = 5
ADMIN_OWNER = "admin"
VERSIONS_END = versionid.VERSIONS_END

OpenStream = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def shadow_bucket(bucket: str) -> str:
    """The sublevel holding a bucket's multipart uploads."""
    return MPU_SHADOW_PREFIX + bucket


def overview_key(object_key: str, upload_id: str) -> str:
    return MPU_OVERVIEW_PREFIX + object_key + SPLITTER + upload_id


def part_key(upload_id: str, part_number: int) -> str:
    return f"{upload_id}{SPLITTER}{part_number:0{PART_NUMBER_DIGITS}d}"


def part_number_of(key: str) -> int:
    return int(key.rpartition(SPLITTER)[2])


def users_bucket_key(canonical_id: str, bucket: str) -> str:
    return f"{canonical_id}{SPLITTER}{bucket}"


def _after(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store:
    """Bucket, object and multipart records of one metadata backend."""

    def __init__(self, client: "MetadataClient", replication_group_id: str) -> None:
        self.client = client
        self.replication_group_id = replication_group_id

    @classmethod
    def from_config(cls, config: "Config") -> "Store":
        """Over the dmd's metadata RPC, or over the engine in process (S3METADATA=mem)."""
        if config.metadata_backend == "mem":
            from gateway.metadata import LocalMetadataClient
            from shared.metastore import MemoryKV, MetaStore
            engine = MetaStore(MemoryKV(), replication_group_id=config.replication_group_id,
                               version_id_suffix=config.version_id_encoding == "hex")
            return cls(LocalMetadataClient(engine), config.replication_group_id)
        from gateway.metadata import RemoteMetadataClient
        client = RemoteMetadataClient(config.metadata_client.host, config.metadata_client.port,
                                      call_timeout_ms=config.call_timeout_ms)
        return cls(client, config.replication_group_id)

    # ------------------------------------------------------------ service

    async def connect(self) -> None:
        await self.client.connect()

    async def close(self) -> None:
        await self.client.close()

    async def setup(self) -> None:
        """(Re)write the users..bucket attributes, as the original does at start-up."""
        info = BucketMD(USERS_BUCKET, ADMIN_OWNER, ADMIN_OWNER, now_iso())
        await self.client.put([METASTORE], USERS_BUCKET, info.serialize(), {})

    async def healthy(self) -> bool:
        return await self.client.healthy()

    async def disk_usage(self) -> dict:
        return await self.client.get_disk_usage()

    async def _find(self, sublevel: list[str], key: str, options: dict[str, Any] | None = None) -> Any:
        try:
            return jsoncodec.loads(await self.client.get(sublevel, key, options or {}))
        except MetadataError as exc:
            if exc.type == "ObjNotFound":
                return None
            raise

    async def _first_key(self, sublevel: str, options: dict[str, Any] | None = None) -> str | None:
        stream = self.client.read_stream([sublevel], {**(options or {}), "limit": 1})
        try:
            async for entry in stream:
                return entry["key"]
            return None
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ buckets

    async def get_bucket(self, name: str) -> BucketMD | None:
        """The bucket's attributes; None when it does not exist (or is being deleted)."""
        doc = await self._find([METASTORE], name)
        if doc is None or doc.get("deleted"):
            return None
        return BucketMD.from_doc(doc)

    async def create_bucket(self, info: BucketMD) -> None:
        # users..bucket first: a crash in between leaves an entry ListBuckets skips, never an unlisted bucket.
        await self.client.put([USERS_BUCKET], users_bucket_key(info.owner, info.name),
                              json.dumps({"creationDate": info.creation_date, "ingestion": None}), {})
        await self.put_bucket(info)

    async def put_bucket(self, info: BucketMD) -> None:
        await self.client.put([METASTORE], info.name, info.serialize(), {})

    async def delete_bucket(self, info: BucketMD) -> None:
        await self.client.delete([METASTORE], info.name, {})
        await self.client.delete([USERS_BUCKET], users_bucket_key(info.owner, info.name), {})

    async def bucket_has_uploads(self, name: str) -> bool:
        return await self._first_key(shadow_bucket(name)) is not None

    async def owned_bucket_names(self, canonical_id: str, after: str | None = None,
                                 first: str = "") -> AsyncIterator[str]:
        """Names of the buckets listed for an owner, in name order, after the name `after` or from
        the name `first` on (entries of half-created or half-deleted buckets included: callers check
        the bucket itself)."""
        prefix = users_bucket_key(canonical_id, "")
        options: dict[str, Any] = {"lt": _after(prefix)}
        if after is None:
            options["gte"] = prefix + first
        else:
            options["gt"] = prefix + after
        stream = self.client.read_stream([USERS_BUCKET], options)
        try:
            async for entry in stream:
                yield entry["key"][len(prefix):]
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ objects

    async def get_object(self, bucket: str, key: str, version_id: str | None = None) -> ObjectMD | None:
        """The master of `key` (version_id None) or one stored version; None when absent."""
        doc = await self._find([bucket], key, {"versionId": version_id} if version_id is not None else None)
        return None if doc is None else ObjectMD(doc)

    async def put_object(self, bucket: str, key: str, md: ObjectMD, *, versioning: bool = False,
                         version_id: str | None = None) -> str | None:
        """Write `md`: plain (the master only), as a new version (`versioning`), or over one version
        (`version_id`; "" makes it the null version of a suspended bucket). The new version's id, if any."""
        options: dict[str, Any] = {}
        if versioning:
            options["versioning"] = True
        if version_id is not None:
            options["versionId"] = version_id
        reply = await self.client.put([bucket], key, md.to_json(), options)
        return jsoncodec.loads(reply)["versionId"] if reply else None

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None) -> None:
        """Remove the master (version_id None) or one version (the engine repairs the master)."""
        await self.client.delete([bucket], key, {"versionId": version_id} if version_id is not None else {})

    def object_stream(self, bucket: str) -> OpenStream:
        """Opens read streams over a bucket's keys (masters and versions), for the listing algorithms."""
        return functools.partial(self.client.read_stream, [bucket])

    async def versions_of(self, bucket: str, key: str) -> AsyncIterator[ObjectMD]:
        """Every stored document of `key`: the master, then its versions (placeholders included)."""
        stream = self.client.read_stream([bucket], {"gte": key, "lt": key + VERSIONS_END})
        try:
            async for entry in stream:
                try:
                    doc = jsoncodec.loads(entry["value"])
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    yield ObjectMD(doc)
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ multipart uploads

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadMD | None:
        doc = await self._find([shadow_bucket(bucket)], overview_key(key, upload_id))
        return None if doc is None else UploadMD(doc)

    async def put_upload(self, bucket: str, key: str, upload_id: str, overview: UploadMD) -> None:
        await self.client.put([shadow_bucket(bucket)], overview_key(key, upload_id), json.dumps(overview), {})

    async def delete_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self.client.delete([shadow_bucket(bucket)], overview_key(key, upload_id), {})

    async def put_part(self, bucket: str, upload_id: str, part_number: int, value: PartMD) -> None:
        key = part_key(upload_id, part_number)
        # The original's part value carries its own store key.
        await self.client.put([shadow_bucket(bucket)], key, json.dumps({**value, "key": key}), {})

    async def delete_part(self, bucket: str, upload_id: str, part_number: int) -> None:
        await self.client.delete([shadow_bucket(bucket)], part_key(upload_id, part_number), {})

    async def parts(self, bucket: str, upload_id: str, after: int = 0,
                    limit: int | None = None) -> list[tuple[int, PartMD]]:
        """(part number, record) of the upload's parts numbered above `after`, in order."""
        prefix = upload_id + SPLITTER
        options: dict[str, Any] = {"gt": part_key(upload_id, after), "lt": _after(prefix)}
        if limit is not None:
            options["limit"] = limit
        found: list[tuple[int, PartMD]] = []
        stream = self.client.read_stream([shadow_bucket(bucket)], options)
        try:
            async for entry in stream:
                found.append((part_number_of(entry["key"]), PartMD(jsoncodec.loads(entry["value"]))))
                if limit is not None and len(found) >= limit:
                    break
        finally:
            await stream.aclose()
        return found

    def upload_stream(self, bucket: str) -> OpenStream:
        """Opens read streams over a bucket's upload records, for the MPU listing algorithm."""
        return functools.partial(self.client.read_stream, [shadow_bucket(bucket)])

    async def get_part(self, bucket: str, upload_id: str, part_number: int) -> PartMD | None:
        """One part's record, None when the part was never uploaded (or is gone)."""
        doc = await self._find([shadow_bucket(bucket)], part_key(upload_id, part_number))
        return None if doc is None else PartMD(doc)

    # ------------------------------------------------------------ buckets (CreateBucket, DeleteBucket, ListBuckets)

    def reserves_bucket_name(self, name: str) -> bool:
        """A name no user bucket may take: one of the store's own sublevels, or the prefix of its
        multipart shadow sublevels (refused in any case, as the original does)."""
        return name in (METASTORE, USERS_BUCKET) or name.lower().startswith(MPU_SHADOW_PREFIX.lower())

    async def bucket_has_versions(self, name: str) -> bool:
        """Whether ListObjectVersions would show anything (DeleteBucket's emptiness): any key of the
        bucket except placeholder (PHD) masters, which listings skip (docs/versioning.md#placeholders-and-repair,
        docs/listing.md). A placeholder with versions behind it is followed by their keys, which
        count; one with none (its repair timer lost to a dmd restart, or left by another gateway) is
        read once through a get, which repairs it away ("PHD only, no versions": del key).

        The original's DeleteBucket likewise lists versions (DelimiterVersions, maxKeys 1), not keys."""
        placeholders: list[str] = []
        stream = self.client.read_stream([name], {})
        try:
            async for entry in stream:
                if versionid.SEPARATOR not in entry["key"] and self._is_placeholder(entry["value"]):
                    placeholders.append(entry["key"])
                    continue
                return True
        finally:
            await stream.aclose()
        for key in placeholders:
            if await self.get_object(name, key) is not None:
                return True   # a version was put since the scan
        return False

    @staticmethod
    def _is_placeholder(value: str) -> bool:
        """A PHD master's stored value, tested exactly as the listing algorithms test it
        (gateway/listing/common.is_phd: `"isPHD": true`), so that DeleteBucket agrees with them."""
        if "isPHD" not in value:   # the common case, without a JSON parse
            return False
        try:
            doc = jsoncodec.loads(value)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("isPHD") is True
