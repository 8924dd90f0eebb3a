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

Races between gateways are settled with the engine's conditional writes (docs/protocol.md#conditional-writes):
- CreateBucket puts the bucket record only if absent: one creator wins;
- DeleteBucket marks the record deleted (a unique `deletionId`), checks that the bucket is empty,
  then removes the record only if it still holds that mark, or else unmarks it. Whoever finds a
  mark settles it the same way (`_settle`): reads (`get_bucket`), a writer checking that its
  write landed in a live bucket (`bucket_alive`), a second DeleteBucket, a crashed delete's
  leftover. So a write that lands before the emptiness check makes the delete fail, and a delete
  that wins makes the write fail (docs/versioning.md#races);
- a plain object put or delete returns the value it replaced, so the data freed is exactly the data
  that write replaced;
- multipart Complete and Abort claim the upload record with a write conditional on the value read.
"""
from __future__ import annotations

import functools
import json
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from gateway.models import BucketMD, ObjectMD, PartMD, UploadMD, now_iso
from shared import jsoncodec, rpc, versionid
from shared.listing import LISTING_MPU, MPU_OVERVIEW_PREFIX, SPLITTER, overview_key  # the shadow bucket's layout
from shared.metastore.errors import PRECONDITION_FAILED, MetadataError

if TYPE_CHECKING:
    from gateway.metadata.client import MetadataClient
    from shared.config import Config

METASTORE = rpc.INVALIDATED_SUBLEVEL   # "__metastore": bucket records (the dmd announces their changes)
USERS_BUCKET = "users..bucket"
MPU_SHADOW_PREFIX = "mpuShadowBucket"
PART_NUMBER_DIGITS = 5
ADMIN_OWNER = "admin"
VERSIONS_END = versionid.VERSIONS_END
DELETED = "deleted"                  # BucketMD: the bucket is being removed (answered as missing)
DELETION_ID = "deletionId"           # ours: which DeleteBucket set the mark (a fresh uuid per attempt)
# Rounds of read-then-conditional-write before giving up on a contended bucket record.
BUCKET_RECORD_ATTEMPTS = 8

# Outcomes of settling a bucket marked deleted (Store._settle) and of Store.delete_bucket.
SETTLED_DELETED = "deleted"
SETTLED_KEPT = "kept"
SETTLED_LOST = "lost"                # the record changed meanwhile: look again
BUCKET_MISSING = "missing"
BUCKET_HAS_VERSIONS = "versions"
BUCKET_HAS_UPLOADS = "uploads"

OpenStream = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]


def shadow_bucket(bucket: str) -> str:
    """The sublevel holding a bucket's multipart uploads."""
    return MPU_SHADOW_PREFIX + bucket


def part_key(upload_id: str, part_number: int) -> str:
    return f"{upload_id}{SPLITTER}{part_number:0{PART_NUMBER_DIGITS}d}"


def part_number_of(key: str) -> int:
    return int(key.rpartition(SPLITTER)[2])


def users_bucket_key(canonical_id: str, bucket: str) -> str:
    return f"{canonical_id}{SPLITTER}{bucket}"


def _users_entry(creation_date: str) -> str:
    return json.dumps({"creationDate": creation_date, "ingestion": None})


def _same_bucket(doc: dict[str, Any], info: BucketMD) -> bool:
    """Whether a stored bucket record is the bucket `info` was read from, not a later one of
    the same name."""
    return (doc.get("uid"), doc.get("owner"), doc.get("creationDate")) == \
        (info.raw.get("uid"), info.owner, info.creation_date)


def _after(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def _absent_as_none(read: Awaitable[str]) -> str | None:
    """The text a metadata read answers, None when the key is absent (ObjNotFound)."""
    try:
        return await read
    except MetadataError as exc:
        if exc.type == "ObjNotFound":
            return None
        raise


def _previous_object(reply: Any) -> ObjectMD | None:
    """The replaced value of a returnPrevious reply, as an object (None: nothing, or not JSON)."""
    previous = reply.get("previous") if isinstance(reply, dict) else None
    if not isinstance(previous, str):
        return None
    try:
        doc = jsoncodec.loads(previous)
    except ValueError:
        return None
    return ObjectMD(doc) if isinstance(doc, dict) else None


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
        if config.metadata_backend == "postgres":   # issue 19: SQL behind the same client interface
            from gateway.metadata.postgres import PostgresMetadataClient
            return cls(PostgresMetadataClient(config.metadata_url, config.replication_group_id,
                                              version_id_suffix=config.version_id_encoding == "hex",
                                              retry_window_ms=config.retry_window_ms), config.replication_group_id)
        from gateway.metadata import RemoteMetadataClient
        from shared import dmd_tls
        client = RemoteMetadataClient(config.metadata_client.host, config.metadata_client.port,
                                      call_timeout_ms=config.call_timeout_ms, secret=config.dmd_secret,
                                      retry_window_ms=config.retry_window_ms,
                                      ssl_context=dmd_tls.client_context(config),   # TLS to the dmd
                                      socket_path=config.metadata_client.socket_path)   # METADATA_SOCKET
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
        raw = await _absent_as_none(self.client.get(sublevel, key, options or {}))
        return None if raw is None else jsoncodec.loads(raw)

    async def _raw(self, sublevel: list[str], key: str) -> str | None:
        """The stored text of a key, None when absent."""
        return await _absent_as_none(self.client.get(sublevel, key, {}))

    async def _cached_bucket_record(self, name: str) -> str | None:
        return await _absent_as_none(self.client.get_bucket_record(name))

    async def _write_if(self, sublevel: list[str], key: str, value: str | None, *, absent: bool = False,
                        match: str | None = None) -> bool:
        """Put `value` (None: delete) only if the key is absent / holds exactly `match`; False when
        the condition did not hold."""
        options: dict[str, Any] = {"ifAbsent": True} if absent else {"ifMatch": match}
        try:
            if value is None:
                await self.client.delete(sublevel, key, options)
            else:
                await self.client.put(sublevel, key, value, options)
        except MetadataError as exc:
            if exc.type == PRECONDITION_FAILED:
                return False
            raise
        return True

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
        """The bucket's attributes; None when it does not exist. A bucket marked deleted by a
        DeleteBucket in progress (or interrupted) is settled first: gone if it is empty, else
        unmarked and returned."""
        for attempt in range(BUCKET_RECORD_ATTEMPTS):
            # The first read may come from the client's coherent cache; after a settlement, fresh.
            raw = await (self._cached_bucket_record(name) if attempt == 0 else self._raw([METASTORE], name))
            if raw is None:
                return None
            doc = jsoncodec.loads(raw)
            if not doc.get(DELETED):
                return BucketMD.from_doc(doc)
            if await self._settle(name, raw, doc) == SETTLED_DELETED:
                return None
        return None   # deleted and re-marked over and over: a bucket being deleted is missing

    async def create_bucket(self, info: BucketMD) -> bool:
        """Create the bucket unless a record of that name exists (then False: the caller reads it)."""
        info.raw.setdefault("uid", str(uuid.uuid4()))   # the bucket's identity (bucket_alive), fixed before the write
        entry_key = users_bucket_key(info.owner, info.name)
        entry = _users_entry(info.creation_date)
        # users..bucket first: a crash in between leaves an entry ListBuckets skips, never an unlisted bucket.
        await self.client.put([USERS_BUCKET], entry_key, entry, {})
        if await self._write_if([METASTORE], info.name, info.serialize(), absent=True):
            return True
        winner = await self._raw([METASTORE], info.name)
        if winner is None or jsoncodec.loads(winner).get("owner") != info.owner:
            # Our entry lists a bucket we do not own (one of the same owner shares its key).
            await self._write_if([USERS_BUCKET], entry_key, None, match=entry)
        return False

    async def _same_bucket_record(self, info: BucketMD) -> tuple[str, dict[str, Any]] | None:
        """The stored record (raw, parsed) of the bucket `info` was read from; None when that
        bucket is gone (no record, or one of a bucket created since under the same name)."""
        raw = await self._raw([METASTORE], info.name)
        if raw is None:
            return None
        doc = jsoncodec.loads(raw)
        return (raw, doc) if doc is not None and _same_bucket(doc, info) else None

    async def put_bucket(self, info: BucketMD) -> bool:
        """Rewrite the attributes of the bucket `info` was read from; False (nothing written) when
        that bucket is gone: a write never brings a deleted bucket back, nor clears a deletion mark."""
        value = info.serialize()
        for _ in range(BUCKET_RECORD_ATTEMPTS):
            record = await self._same_bucket_record(info)
            if record is None:
                return False
            raw, doc = record
            if doc.get(DELETED):
                await self._settle(info.name, raw, doc)
                continue
            if await self._write_if([METASTORE], info.name, value, match=raw):
                return True
        raise MetadataError("InternalError", 503, f"bucket {info.name} record kept changing")

    async def delete_bucket(self, info: BucketMD) -> str:
        """DeleteBucket: mark, check emptiness, remove or unmark (see the module docstring).
        SETTLED_DELETED, BUCKET_MISSING, BUCKET_HAS_VERSIONS or BUCKET_HAS_UPLOADS."""
        marked = False
        outcome = BUCKET_HAS_VERSIONS
        for _ in range(BUCKET_RECORD_ATTEMPTS):
            record = await self._same_bucket_record(info)
            if record is None:
                # Gone while we were at it: removed by whoever settled our mark, or by a concurrent delete.
                return SETTLED_DELETED if marked else BUCKET_MISSING
            raw, doc = record
            if not doc.get(DELETED):
                mark = json.dumps({**doc, DELETED: True, DELETION_ID: uuid.uuid4().hex}, separators=(",", ":"))
                if not await self._write_if([METASTORE], info.name, mark, match=raw):
                    continue
                marked = True
                raw, doc = mark, jsoncodec.loads(mark)
            outcome = await self._settle(info.name, raw, doc)
            if outcome != SETTLED_LOST:
                break
        if outcome == SETTLED_DELETED:
            return SETTLED_DELETED
        return BUCKET_HAS_UPLOADS if await self.bucket_has_uploads(info.name) \
            and not await self.bucket_has_versions(info.name) else BUCKET_HAS_VERSIONS

    async def _settle(self, name: str, raw: str, doc: dict[str, Any]) -> str:
        """Finish or undo the deletion that marked the record `raw`: remove the bucket if it is
        empty, else unmark it; both only if the record still holds that mark (SETTLED_LOST if not).
        Anyone may do it, any number of times: the conditional writes let one settlement win."""
        if await self.bucket_has_versions(name) or await self.bucket_has_uploads(name):
            unmarked = {k: v for k, v in doc.items() if k != DELETION_ID}
            unmarked[DELETED] = False
            if await self._write_if([METASTORE], name, json.dumps(unmarked, separators=(",", ":")), match=raw):
                return SETTLED_KEPT
            return SETTLED_LOST
        if not await self._write_if([METASTORE], name, None, match=raw):
            return SETTLED_LOST
        owner, created = doc.get("owner"), doc.get("creationDate")
        if isinstance(owner, str) and isinstance(created, str):
            # Only the entry of this bucket: a bucket of the same name and owner created since has its own date.
            await self._write_if([USERS_BUCKET], users_bucket_key(owner, name), None, match=_users_entry(created))
        return SETTLED_DELETED

    def bucket_watch(self) -> int | None:
        """Taken before a write into a bucket, passed to bucket_alive after it."""
        return self.client.bucket_watch()

    async def bucket_alive(self, info: BucketMD, since: int | None = None) -> bool:
        """After a write into the bucket `info` was read from: whether that bucket still exists.
        A deletion mark is settled: the write is in the bucket, so a pending delete fails
        (BucketNotEmpty) unless it already removed the record, in which case the writer undoes its
        write (NoSuchBucket).

        `since` (bucket_watch() before the write): when no bucket record changed since (the dmd
        announces every change ahead of the replies that follow it, docs/protocol.md#bucket-record-
        invalidation), the write landed while the cached record held, and no read is needed."""
        cached = self.client.bucket_unchanged_since(info.name, since)
        if cached is not None:
            doc = jsoncodec.loads(cached)
            if not doc.get(DELETED) and _same_bucket(doc, info):
                return True
        for _ in range(BUCKET_RECORD_ATTEMPTS):
            record = await self._same_bucket_record(info)
            if record is None:
                return False
            raw, doc = record
            if not doc.get(DELETED):
                return True
            outcome = await self._settle(info.name, raw, doc)
            if outcome != SETTLED_LOST:
                return outcome == SETTLED_KEPT
        return False

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

    async def replace_object(self, bucket: str, key: str, md: ObjectMD) -> tuple[ObjectMD | None, str]:
        """Plain put of `md` (non-versioned bucket): (the master it replaced, or None; the text
        stored). The replaced master is read and overwritten in one step, so of two concurrent
        writes each gets a different one and its data is freed exactly once."""
        text = md.to_json()
        reply = await self.client.put([bucket], key, text, {"returnPrevious": True})
        return _previous_object(reply), text

    async def remove_object(self, bucket: str, key: str) -> ObjectMD | None:
        """Plain delete of the master (non-versioned bucket): the master it removed, or None."""
        return _previous_object(await self.client.delete([bucket], key, {"returnPrevious": True}))

    async def remove_objects(self, bucket: str, keys: list[str]) -> list[ObjectMD | None]:
        """`remove_object` of every key (non-versioned bucket), in metadata calls of at most
        rpc.MAX_DELETE_MANY_KEYS keys (one `deleteMany` each when the dmd has it): per key, in
        order, the master removed or None (a key listed twice is removed by its first entry)."""
        removed: list[ObjectMD | None] = []
        for start in range(0, len(keys), rpc.MAX_DELETE_MANY_KEYS):
            chunk = keys[start:start + rpc.MAX_DELETE_MANY_KEYS]
            previous = await self.client.delete_many([bucket], chunk, {"returnPrevious": True})
            removed.extend(_previous_object({"previous": value}) for value in previous)
        return removed

    async def delete_object_if(self, bucket: str, key: str, text: str) -> bool:
        """Delete the master only if it is still exactly `text` (undoing our own plain put)."""
        return await self._write_if([bucket], key, None, match=text)

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None) -> None:
        """Remove the master (version_id None) or one version (the engine repairs the master)."""
        await self.client.delete([bucket], key, {"versionId": version_id} if version_id is not None else {})

    def object_stream(self, bucket: str) -> OpenStream:
        """Opens read streams over a bucket's keys (masters and versions), for the listing algorithms."""
        return functools.partial(self.client.read_stream, [bucket])

    async def list_objects(self, bucket: str, listing_type: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of a bucket's listing (`listing_type` Delimiter, DelimiterMaster or
        DelimiterVersions, `params` under their wire names: docs/listing.md), computed where the
        keys are. Listed values are the listing fields (dicts) or the stored text."""
        return await self.client.list_page([bucket], listing_type, params)

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

    async def get_upload_record(self, bucket: str, key: str, upload_id: str) -> tuple[UploadMD, str] | None:
        """The overview and its stored text (for replace_upload / delete_upload_if), None when absent."""
        raw = await self._raw([shadow_bucket(bucket)], overview_key(key, upload_id))
        return None if raw is None else (UploadMD(jsoncodec.loads(raw)), raw)

    async def put_upload(self, bucket: str, key: str, upload_id: str, overview: UploadMD) -> None:
        await self.client.put([shadow_bucket(bucket)], overview_key(key, upload_id), json.dumps(overview), {})

    async def replace_upload(self, bucket: str, key: str, upload_id: str, overview: UploadMD, expected: str) -> bool:
        """Write the overview only if it is still exactly `expected` (Complete's and Abort's claim)."""
        return await self._write_if([shadow_bucket(bucket)], overview_key(key, upload_id), json.dumps(overview),
                                    match=expected)

    async def delete_upload(self, bucket: str, key: str, upload_id: str, expected: str | None = None) -> bool:
        """Remove the overview (only if it is still exactly `expected`, when given)."""
        if expected is not None:
            return await self._write_if([shadow_bucket(bucket)], overview_key(key, upload_id), None, match=expected)
        await self.client.delete([shadow_bucket(bucket)], overview_key(key, upload_id), {})
        return True

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

    async def list_uploads(self, bucket: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of ListMultipartUploads (the MPU listing over the bucket's shadow sublevel)."""
        return await self.client.list_page([shadow_bucket(bucket)], LISTING_MPU, params)

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
        (shared/listing/common.is_phd: `"isPHD": true`), so that DeleteBucket agrees with them."""
        if "isPHD" not in value:   # the common case, without a JSON parse
            return False
        try:
            doc = jsoncodec.loads(value)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("isPHD") is True

    # ------------------------------------------------------------ whole-store scans (dmd/scrub.py; read-only)

    async def all_bucket_names(self) -> AsyncIterator[str]:
        """Every bucket record's name in `__metastore`, in name order (records marked deleted
        included; the store's own `users..bucket` attributes excluded)."""
        stream = self.client.read_stream([METASTORE], {})
        try:
            async for entry in stream:
                if entry["key"] != USERS_BUCKET:
                    yield entry["key"]
        finally:
            await stream.aclose()

    async def all_object_records(self, bucket: str) -> AsyncIterator[tuple[str, str | None, ObjectMD]]:
        """(object key, version id or None for a master, document) of every key of a bucket: masters
        (placeholders included) and version keys, in key order. Values that are not JSON objects
        are skipped."""
        stream = self.client.read_stream([bucket], {})
        try:
            async for entry in stream:
                key, sep, vid = entry["key"].partition(versionid.SEPARATOR)
                try:
                    doc = jsoncodec.loads(entry["value"])
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    yield key, (vid if sep else None), ObjectMD(doc)
        finally:
            await stream.aclose()

    async def all_upload_records(self, bucket: str) -> AsyncIterator[tuple[str, str, str | int, dict[str, Any]]]:
        """Every record of a bucket's multipart shadow sublevel, in key order:
        ("overview", object key, upload id, UploadMD) or ("part", upload id, part number, PartMD).
        Keys of neither shape, and values that are not JSON objects, are skipped."""
        stream = self.client.read_stream([shadow_bucket(bucket)], {})
        try:
            async for entry in stream:
                key = entry["key"]
                try:
                    doc = jsoncodec.loads(entry["value"])
                except ValueError:
                    continue
                if not isinstance(doc, dict):
                    continue
                if key.startswith(MPU_OVERVIEW_PREFIX):
                    object_key, sep, upload_id = key[len(MPU_OVERVIEW_PREFIX):].rpartition(SPLITTER)
                    if sep:
                        yield "overview", object_key, upload_id, UploadMD(doc)
                    continue
                upload_id, sep, number = key.rpartition(SPLITTER)
                if sep and number.isdigit():
                    yield "part", upload_id, int(number), PartMD(doc)
        finally:
            await stream.aclose()

    async def remove_part_if(self, bucket: str, upload_id: str, part_number: int, doc: dict[str, Any]) -> bool:
        """Delete one part record only if it still holds exactly the document `doc` (the scrub's
        repair of a part whose upload is gone); False when it changed or is gone."""
        key = part_key(upload_id, part_number)
        raw = await self._raw([shadow_bucket(bucket)], key)
        if raw is None:
            return False
        try:
            if jsoncodec.loads(raw) != doc:
                return False
        except ValueError:
            return False
        return await self._write_if([shadow_bucket(bucket)], key, None, match=raw)

    async def upload_exists(self, bucket: str, upload_id: str) -> bool:
        """Whether any overview of the bucket names `upload_id` (the scrub's re-check)."""
        stream = self.client.read_stream([shadow_bucket(bucket)],
                                         {"gte": MPU_OVERVIEW_PREFIX, "lt": _after(MPU_OVERVIEW_PREFIX)})
        try:
            async for entry in stream:
                if entry["key"].endswith(SPLITTER + upload_id):
                    return True
            return False
        finally:
            await stream.aclose()
