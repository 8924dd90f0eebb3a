"""MetaStore: the one metadata versioning engine, over an OrderedKV.

It owns, for both the dmd (RocksDB) and the in-memory backend:
- the put/get/del semantics of the versioning options (docs/versioning.md#metadata-options, #engine-algorithms):
  master key `key`, version keys `key\\0<vid>`, placeholder-for-deletion (PHD) masters and their repair;
- group commit (docs/durability.md#group-commit): every write is queued; one committer takes everything queued (up to
  `write_batch_max_ops` ops) as ONE synchronous batch, run in a worker thread, and answers each
  caller only once its batch is durable;
- a write cache of queued-but-uncommitted values, so read-modify-write operations see every
  write queued before them (the original's WriteCache), plus per-key locks that serialise the
  read-modify-write operations of one key until their batch is committed;
- lazy range reads (levelup options) and raw key listings, fetched off the event loop in chunks;
- the instance UUID file and disk usage.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import Any, TypeVar

from shared import jsoncodec, versionid
from shared.log import get_logger, log_event
from shared.metastore.errors import MetadataError, invalid_argument, obj_not_found, precondition_failed
from shared.metastore.keyspace import (
    NO_LIMIT,
    RangeQuery,
    decode_text,
    encode_text,
    parse_range_options,
    sublevel_prefix,
)
from shared.metastore.kv import KVNoSpaceError, MemoryKV, Op, OrderedKV
from shared.metastore.recordlog import RecordLog, format_seq, last_seq, log_prefix, stream_record

T = TypeVar("T")

UUID_FILENAME = "uuid"
INITIAL_INSTANCE_ID_ENV = "INITIAL_INSTANCE_ID"
DEFAULT_REPAIR_DELAY_S = 15.0          # repair of a PHD master is scheduled 15000 ms after the delete (docs/versioning.md#engine-algorithms)
DEFAULT_WRITE_BATCH_MAX_OPS = 1_000
MAX_DELETE_MANY_KEYS = 1_000           # keys of one deleteMany (docs/protocol.md#deletemany): AWS's DeleteObjects page
# The values one deleteMany with returnPrevious may answer (and holds while it runs), counted as
# encoded in the reply (quotes and backslashes escaped): beyond, it fails REPLY_TOO_LARGE with nothing
# written, and the client asks again for halves of the keys. A value of an MPU object of 10,000 parts is
# a few MB (1000 of them: gigabytes), and the gateway's websocket takes messages of at most 4 MiB.
MAX_DELETE_MANY_REPLY_BYTES = 2 * 1024 * 1024
REPLY_TOO_LARGE = "ReplyTooLarge"
PHD_LISTING_LIMIT = 3                  # current Arsenal lists 3 entries (master + 2 versions) to resolve a PHD
VERSIONS_UPPER = versionid.VERSIONS_END.encode()   # docs/metadata-keys.md#object-keys
VERSION_SEPARATOR = versionid.SEPARATOR.encode()
# Read streams: first chunk small for latency, then larger to amortise the thread hops.
STREAM_FIRST_CHUNK = 32
STREAM_MAX_CHUNK = 256
# How often a read-modify-write read is retried when commits keep landing during it, before
# falling back to one read on the event loop (atomic with the caller's next step).
_RMW_READ_ATTEMPTS = 3

_log = get_logger("metastore")


async def _no_records() -> AsyncIterator[Any]:
    return
    yield  # an empty async generator


def _commit_error(error: BaseException) -> MetadataError:
    """What the callers of a failed batch get: InsufficientStorage (507) when the disk is full
    (the batch applied nothing and the store recovers once space is back), else InternalError."""
    cause = error.__cause__ if isinstance(error, MetadataError) else error
    if isinstance(error, KVNoSpaceError) or isinstance(cause, KVNoSpaceError):
        return MetadataError("InsufficientStorage", 507, f"metadata write failed: {cause}")
    return MetadataError("InternalError", 500, f"metadata write failed: {error}")


def _phd_value(vid: str) -> str:
    # The literal format of the original, spaces included (docs/versioning.md#placeholders-and-repair).
    return f'{{ "isPHD": true, "versionId": "{vid}" }}'


def _version_reply(vid: str) -> str:
    return json.dumps({"versionId": vid}, separators=(",", ":"), ensure_ascii=False)


def append_version_id(value: str, vid: str) -> str:
    """Insert `"versionId":"<vid>"` before the final '}' of a JSON object string, without re-serialising it (docs/versioning.md#version-fields-in-values)."""
    end = value.rfind("}")
    head = value[:end]
    field = '"versionId":' + json.dumps(vid, ensure_ascii=False)
    if head.rstrip().endswith("{"):
        return f"{head}{field}{value[end:]}"
    return f"{head},{field}{value[end:]}"


def _version_fields(raw: str | None) -> tuple[str | None, bool]:
    """(versionId, isPHD) of a stored value; a value that is not a JSON object has neither."""
    if raw is None:
        return None, False
    try:
        obj = jsoncodec.loads(raw)
    except ValueError:
        return None, False
    if not isinstance(obj, dict):
        return None, False
    vid = obj.get("versionId")
    return (vid if isinstance(vid, str) else None), obj.get("isPHD") is True


def _is_set(options: dict[str, Any], name: str) -> bool:
    """JS `options[name] || options[name] === ''`: how Arsenal tests the versioning options."""
    value = options.get(name)
    if isinstance(value, (str, list, dict)):
        return True   # '' counts as set; JS objects and arrays are truthy
    return bool(value)


def _check_options(options: object) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise invalid_argument("options must be an object")
    return options


def _requested_version(options: dict[str, Any]) -> str | None:
    """The versionId option as a string, or None when unset (None, False, 0 are unset, '' is set)."""
    if not _is_set(options, "versionId"):
        return None
    value = options["versionId"]
    if not isinstance(value, str):
        raise invalid_argument("option versionId must be a string")
    return value


# Conditional writes, our extension (docs/protocol.md#conditional-writes): options of a plain put or del.
OPT_IF_ABSENT = "ifAbsent"
OPT_IF_MATCH = "ifMatch"
OPT_RETURN_PREVIOUS = "returnPrevious"
CONDITION_OPTIONS = (OPT_IF_ABSENT, OPT_IF_MATCH, OPT_RETURN_PREVIOUS)


class _Condition:
    """What a conditional put or del asks: the key must be absent, or hold exactly `if_match`;
    and whether the reply carries the value it replaced."""
    __slots__ = ("if_absent", "if_match", "return_previous")

    def __init__(self, if_absent: bool, if_match: bytes | None, return_previous: bool):
        self.if_absent = if_absent
        self.if_match = if_match
        self.return_previous = return_previous

    def check(self, current: bytes | None) -> None:
        if self.if_absent and current is not None:
            raise precondition_failed("the key exists")
        if self.if_match is not None and current != self.if_match:
            raise precondition_failed("the key is missing" if current is None else "the stored value differs")


def _condition(options: dict[str, Any], call: str, versioned: bool) -> _Condition | None:
    """The conditions of a put or del, None when it sends none (every original client)."""
    if not any(options.get(name) is not None for name in CONDITION_OPTIONS):
        return None
    if_absent = options.get(OPT_IF_ABSENT)
    if_match = options.get(OPT_IF_MATCH)
    return_previous = options.get(OPT_RETURN_PREVIOUS)
    if versioned:
        raise invalid_argument(f"{call}: ifAbsent, ifMatch and returnPrevious apply to plain (non-versioned) writes")
    for name, value in ((OPT_IF_ABSENT, if_absent), (OPT_RETURN_PREVIOUS, return_previous)):
        if value is not None and not isinstance(value, bool):
            raise invalid_argument(f"{call}: option {name} must be a boolean")
    if if_match is not None and not isinstance(if_match, str):
        raise invalid_argument(f"{call}: option ifMatch must be a string (the stored value)")
    if if_absent and if_match is not None:
        raise invalid_argument(f"{call}: ifAbsent and ifMatch are exclusive")
    if if_absent and call == "del":
        raise invalid_argument("del: ifAbsent makes no sense on a delete")
    return _Condition(bool(if_absent), None if if_match is None else encode_text(if_match, "ifMatch"),
                      bool(return_previous))


def _check_json_object(value: str) -> None:
    stripped = value.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        raise invalid_argument("a versioned value must be a JSON object string")


class _KeyLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _QueuedWrite:
    __slots__ = ("future", "ops")

    def __init__(self, ops: list[Op], future: asyncio.Future[None]):
        self.ops = ops
        self.future = future


class _Cursor:
    """A blocking KV iterator consumed in chunks on the event loop.

    A chunk of entries takes well under a millisecond to read, less than a hop to a worker
    thread and back (root delimiter listing, which reopens its stream past every common
    prefix: 106 -> 150 req/s when reads stopped hopping); the stream yields to other clients
    between chunks. Commits, which fsync, still run in a thread.
    """

    def __init__(self, it: Iterator[tuple[bytes, bytes]]):
        self._it = it

    def take(self, n: int) -> list[tuple[bytes, bytes]]:
        return list(islice(self._it, n))

    def close(self) -> None:
        self._it.close()  # type: ignore[attr-defined]


class MetaStore:
    """The metadata engine: sublevels, versioning options, PHD repair and group commit over an OrderedKV."""

    def __init__(self, kv: OrderedKV, *, metadata_path: str | None = None,
                 replication_group_id: str = versionid.DEFAULT_REPLICATION_GROUP_ID,
                 write_batch_max_ops: int = DEFAULT_WRITE_BATCH_MAX_OPS,
                 repair_delay_s: float = DEFAULT_REPAIR_DELAY_S,
                 version_id_suffix: bool = True, record_log_name: str | None = None) -> None:
        """`version_id_suffix`: append the in-process counter to generated ids (S3_VERSION_ID_ENCODING_TYPE
        unset or "hex", docs/versioning.md#version-ids); without it ids are 27 chars and encode to base62.
        `record_log_name`: keep the original's record log under that name (recordLog.enabled,
        shared/metastore/recordlog.py): every committed op gets a record in the same batch."""
        if write_batch_max_ops < 1:
            raise ValueError("write_batch_max_ops must be >= 1")
        self._kv = kv
        # An in-memory store answers in microseconds: calling it inline beats a thread hop.
        self._inline = isinstance(kv, MemoryKV)
        self._metadata_path = metadata_path
        self._rg = replication_group_id
        self._max_ops = write_batch_max_ops
        self._repair_delay_s = repair_delay_s
        self._vid_suffix = version_id_suffix
        self._vid_counter = 0
        self._closed = False
        # group commit state
        self._queue: collections.deque[_QueuedWrite] = collections.deque()
        self._committer: asyncio.Task[None] | None = None
        self._pending: dict[bytes, list[Any]] = {}   # key -> [latest queued value | None, queued count]
        self._commits_done = 0
        self._stats = {"batches": 0, "ops": 0, "max_batch_ops": 0, "last_batch_ops": 0}
        # versioning state
        self._key_locks: dict[bytes, _KeyLock] = {}
        self._repair_timers: dict[bytes, asyncio.TimerHandle] = {}
        self._repair_tasks: set[asyncio.Task[None]] = set()
        self._uuid = self._init_uuid()
        self.record_log = RecordLog(kv, record_log_name) if record_log_name else None

    # --- public API ---------------------------------------------------------------------------

    async def put(self, sublevel: list[str], key: str, value: str, options: dict | None) -> Any:
        """Store `value`; None for a plain put, the string '{"versionId":"<vid>"}' for versioned puts.

        A plain put may carry conditions (ifAbsent, ifMatch: PreconditionFailed when they do not
        hold) and returnPrevious (reply {"previous": <replaced value or null>}); docs/protocol.md#conditional-writes."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        master = prefix + encode_text(key, "key")
        encode_text(value, "value")
        opts = _check_options(options)
        version = _requested_version(opts)
        condition = _condition(opts, "put", version is not None or _is_set(opts, "versioning"))
        if condition is not None:
            return await self._conditional_write(master, value.encode(), condition)
        if version is not None:
            if version == "":
                # Versioning suspended: overwrite the master only, with an internal fresh id.
                _check_json_object(value)
                vid = self._new_vid()
                await self._write([(master, append_version_id(value, vid).encode())])
                return _version_reply(vid)
            if version == versionid.EXTERNAL_NULL:
                raise MetadataError("NotImplemented", 501, "null-key versions are not supported")
            return await self._put_version(master, value, version)
        if _is_set(opts, "versioning"):
            _check_json_object(value)
            vid = self._new_vid()
            stored = append_version_id(value, vid).encode()
            await self._write([(master, stored), (master + VERSION_SEPARATOR + vid.encode(), stored)])
            return _version_reply(vid)
        await self._write([(master, value.encode())])
        return None

    async def get(self, sublevel: list[str], key: str, options: dict | None) -> str:
        """The master (PHD resolved) or, with versionId, that version. Raises ObjNotFound."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        master = prefix + encode_text(key, "key")
        version = _requested_version(_check_options(options))
        if version:
            suffix = b"" if version == versionid.EXTERNAL_NULL else encode_text(version, "versionId")
            raw = self._point_read(master + VERSION_SEPARATOR + suffix)
            if raw is None:
                raise obj_not_found()
            return decode_text(raw)
        raw = self._point_read(master)
        if raw is None:
            raise obj_not_found()
        text = decode_text(raw)
        # Most masters are not placeholders (objects carry "isPHD": false): skip the parse unless
        # the text can hold a true one.
        if not jsoncodec.may_hold_true(text, "isPHD") or not _version_fields(text)[1]:
            return text
        resolved = await self._resolve_phd(master)
        if resolved is None:
            raise obj_not_found()
        return resolved

    async def delete(self, sublevel: list[str], key: str, options: dict | None) -> Any:
        """Delete the master, or with versionId that version (placing a PHD if it was the master's).

        A plain delete may carry ifMatch and returnPrevious, as a plain put."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        master = prefix + encode_text(key, "key")
        opts = _check_options(options)
        version = _requested_version(opts)
        condition = _condition(opts, "del", bool(version))
        if condition is not None:
            return await self._conditional_write(master, None, condition)
        if not version:
            await self._write([(master, None)])   # deleting a missing key is not an error
            return None
        if version == versionid.EXTERNAL_NULL:
            raise MetadataError("NotImplemented", 501, "null-key versions are not supported")
        return await self._delete_version(master, version)

    async def delete_many(self, sublevel: list[str], keys: list[str], options: dict | None) -> list[str | None] | None:
        """Plain deletes of `keys` in one step (deleteMany, docs/protocol.md#deletemany): the same
        answers as len(keys) `del` calls in that order, with one reply once all are durable.

        Under the key locks of every key (taken in byte order: two callers never wait on each
        other crosswise), each key is read through the write cache and every delete is queued as
        one write, so they commit in one batch. With returnPrevious the reply is the list of the
        values deleted, in key order (None: absent; a key listed twice is deleted by its first
        entry, the second gets None); without it, None. An absent key writes nothing. Bad
        arguments raise InvalidArgument before anything is read or written; values of more than
        MAX_DELETE_MANY_REPLY_BYTES in all to return raise REPLY_TOO_LARGE (413), nothing written."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        if not isinstance(keys, list):
            raise invalid_argument("deleteMany: keys must be an array of strings")
        if len(keys) > MAX_DELETE_MANY_KEYS:
            raise invalid_argument(f"deleteMany: at most {MAX_DELETE_MANY_KEYS} keys per call")
        opts = _check_options(options)
        for name, value in opts.items():
            if name != OPT_RETURN_PREVIOUS and value is not None:
                raise invalid_argument(f"deleteMany: unknown option {name} (plain deletes only)")
        return_previous = opts.get(OPT_RETURN_PREVIOUS)
        if return_previous is not None and not isinstance(return_previous, bool):
            raise invalid_argument(f"deleteMany: option {OPT_RETURN_PREVIOUS} must be a boolean")
        masters = [prefix + encode_text(key, "key") for key in keys]
        previous: list[bytes | None] = []
        if masters:
            unique = sorted(set(masters))
            async with contextlib.AsyncExitStack() as locks:
                for master in unique:
                    await locks.enter_async_context(self._key_lock(master))
                current = self._read_many_for_update(unique, MAX_DELETE_MANY_REPLY_BYTES if return_previous else None)
                # Nothing awaits from the reads to the enqueue: no write slips in between.
                ops: list[Op] = [(m, None) for m in unique if current[m] is not None or m in self._pending]
                for master in masters:
                    previous.append(current[master])
                    current[master] = None   # a second entry of the key finds it deleted
                if ops:
                    await self._durable(self._enqueue(ops))
        if not return_previous:
            return None
        return [None if value is None else decode_text(value) for value in previous]

    def _read_many_for_update(self, keys: list[bytes], budget: int | None) -> dict[bytes, bytes | None]:
        """`_read_for_update` of many keys: each as it will be once every queued write is committed
        (the write cache, else the store). Synchronous, point reads on the event loop (1000 cached
        reads take about a millisecond, less than a thread hop that a landing commit could make
        stale): nothing runs between these reads and the caller's enqueue. With a `budget`, the
        values are kept, at most that many bytes of them (REPLY_TOO_LARGE beyond); without, only
        whether each key exists (b"")."""
        result: dict[bytes, bytes | None] = {}
        total = 0
        for key in keys:
            entry = self._pending.get(key)
            value = entry[0] if entry is not None else self._point_read(key)
            if value is not None:
                if budget is None:
                    value = b""
                else:
                    total += len(value) + value.count(b'"') + value.count(b"\\")
                    if total > budget:
                        raise MetadataError(REPLY_TOO_LARGE, 413, f"deleteMany: the values to return exceed "
                                            f"{budget} bytes; delete fewer keys per call")
            result[key] = value
        return result

    def read_stream(self, sublevel: list[str], options: dict) -> AsyncIterator[Any]:
        """levelup createReadStream on a sublevel: {"key","value"} items (or bare keys / values)."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        query = parse_range_options(options, prefix)
        skip = len(prefix)

        def shape(k: bytes, v: bytes) -> Any:
            if query.keys and query.values:
                return {"key": decode_text(k[skip:]), "value": decode_text(v)}
            return decode_text(k[skip:]) if query.keys else decode_text(v)
        return self._stream(query, shape)

    @contextlib.contextmanager
    def scanner(self, sublevel: list[str]) -> Iterator[Callable[[dict], Iterator[dict[str, str]]]]:
        """read_stream's {"key","value"} entries of one sublevel as synchronous iterators that read
        one entry at a time (no chunk read ahead), for the listings run over the engine (shared/
        listing's driver: they close a range after a few entries when they skip past a common
        prefix, and give the event loop a turn themselves). The successive ranges of a listing
        (each opened after the previous one is closed) share one store iterator: on RocksDB a jump
        past a common prefix is then a seek, not a new iterator.
        `with store.scanner(sub) as scan: ... scan(options) ...`; forward ranges only."""
        self._check_open()
        prefix = sublevel_prefix(sublevel)
        cursor = self._kv.cursor()

        def scan(options: dict) -> Iterator[dict[str, str]]:
            self._check_open()
            query = parse_range_options(options, prefix)
            if query.reverse:
                raise invalid_argument("scanner: forward ranges only")
            try:
                it = cursor.range(gt=query.gt, gte=query.gte, lt=query.lt, lte=query.lte)
            except Exception as exc:
                raise MetadataError("InternalError", 500, f"cannot read metadata: {exc}") from exc
            return self._scan(it, len(prefix), query.limit)
        try:
            yield scan
        finally:
            cursor.close()

    def _scan(self, it: Iterator[tuple[bytes, bytes]], skip: int, limit: int) -> Iterator[dict[str, str]]:
        remaining = limit
        try:
            if limit == 0:
                return
            try:
                for k, v in it:
                    yield {"key": decode_text(k[skip:]), "value": decode_text(v)}
                    if remaining != NO_LIMIT:
                        remaining -= 1
                        if remaining <= 0:
                            return
            except MetadataError:
                raise
            except Exception as exc:
                raise MetadataError("InternalError", 500, f"metadata read failed: {exc}") from exc
            if self._closed:
                raise MetadataError("InternalError", 500, "metadata store closed during a read")
        finally:
            it.close()  # type: ignore[attr-defined]

    def raw_list_keys(self, options: dict | None = None) -> AsyncIterator[str]:
        """Physical keys ("!sub!key") of the whole database, levelup range options on those keys."""
        self._check_open()
        query = parse_range_options(options, None)
        return self._stream(query, lambda k, _v: decode_text(k))

    async def get_uuid(self) -> str:
        return self._uuid

    async def read_records(self, log_name: str, start_seq: int | None, end_seq: int | None,
                           limit: int | None) -> tuple[int, AsyncIterator[tuple[int, dict]]]:
        """readRecords of the original's RecordLogService: the last sequence number of the range
        (`end_seq`, capped at the last number handed out; 0 when nothing can be read) and the
        records (seq, {timestamp, db, entries}) from `start_seq` up to it, at most `limit`.

        Any log name can be read (an unknown one is empty); the one this store writes is
        `record_log.name`. Bad parameters raise InvalidArgument before anything is read."""
        self._check_open()
        if not isinstance(log_name, str) or not log_name or "!" in log_name or "#" in log_name:
            raise invalid_argument("logName must be a non-empty string without '!' or '#'")
        prefix = log_prefix(log_name)
        if self.record_log is not None and log_name == self.record_log.name:
            next_seq = self.record_log.next_seq
        else:
            next_seq = await self._run(last_seq, self._kv, prefix) + 1
        last = next_seq - 1
        if end_seq is not None:
            last = 0 if end_seq <= 0 else min(end_seq, last)
        if last <= 0 or limit == 0:
            return max(last, 0), _no_records()
        lower = prefix + format_seq(start_seq).encode() if start_seq else prefix
        query = RangeQuery(gt=None, gte=lower, lt=None, lte=prefix + format_seq(last).encode(),
                           limit=NO_LIMIT if limit is None or limit < 0 else limit, reverse=False,
                           keys=True, values=True)
        skip = len(prefix)

        def shape(k: bytes, v: bytes) -> tuple[int, dict]:
            return int(k[skip:]), stream_record(decode_text(v))
        return last, self._stream(query, shape)

    async def get_disk_usage(self) -> dict:
        return await self._run(self._kv.disk_usage)

    def stats(self) -> dict:
        return dict(self._stats)

    async def close(self) -> None:
        """Commit what is queued, stop the repair timers, and close the store."""
        if self._closed:
            return
        self._closed = True
        for handle in self._repair_timers.values():
            handle.cancel()
        self._repair_timers.clear()
        for task in list(self._repair_tasks):
            task.cancel()
        if self._repair_tasks:
            await asyncio.gather(*self._repair_tasks, return_exceptions=True)
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._run(self._kv.close)
        log_event(_log, logging.INFO, "metastore closed", **self._stats)

    # --- versioning algorithms (docs/versioning.md#engine-algorithms) ---------------------------

    async def _conditional_write(self, master: bytes, value: bytes | None, condition: _Condition) -> Any:
        """Check the condition against the key as it will be once every queued write is committed
        and queue the write in the same step, under the key lock held until it is durable: two
        conditional writes of one key never both see the same value."""
        async with self._key_lock(master):
            current = await self._read_for_update(master)
            # Nothing awaits between the read and the enqueue: no write can slip in between.
            condition.check(current)
            # Deleting a key that is absent on disk (no queued write of it either) writes nothing.
            if value is not None or current is not None or master in self._pending:
                await self._durable(self._enqueue([(master, value)]))
        if condition.return_previous:
            return {"previous": None if current is None else decode_text(current)}
        return None

    async def _put_version(self, master: bytes, value: str, version: str) -> str:
        version_key = master + VERSION_SEPARATOR + encode_text(version, "versionId")
        async with self._key_lock(master):
            current = await self._read_for_update(master)
            ops: list[Op] = [(version_key, value.encode())]
            master_vid = _version_fields(None if current is None else decode_text(current))[0]
            # Ids sort newest-first: a master id >= the put one means the master is this version or older.
            if current is None or (master_vid is not None and master_vid.encode() >= version.encode()):
                ops.append((master, value.encode()))
            await self._durable(self._enqueue(ops))
        return _version_reply(version)

    async def _delete_version(self, master: bytes, version: str) -> str:
        version_key = master + VERSION_SEPARATOR + encode_text(version, "versionId")
        async with self._key_lock(master):
            current = await self._read_for_update(master)
            # From here to the enqueue nothing awaits: the master read above, the version scan
            # below and the batch describe one state of the key (see _has_other_versions).
            ops: list[Op] = [(version_key, None)]
            master_vid, master_is_phd = _version_fields(None if current is None else decode_text(current))
            placed_phd = False
            if current is not None and (master_is_phd or master_vid == version):
                if self._has_other_versions(master, version_key):
                    ops.append((master, _phd_value(self._new_vid()).encode()))
                    placed_phd = True
                else:
                    # The last version goes, and so does the master: a placeholder would resolve to
                    # nothing anyway ("PHD only, no versions": del key, docs/versioning.md#placeholders-and-repair),
                    # but until its repair it would keep the bucket from looking empty.
                    ops.append((master, None))
                    self._cancel_repair(master)
            await self._durable(self._enqueue(ops))
        if placed_phd:
            self._schedule_repair(master)
        return _version_reply(version)

    def _has_other_versions(self, master: bytes, version_key: bytes) -> bool:
        """Whether a version key of `master` other than `version_key` exists once every queued
        write is committed: the store's keys, overlaid with the queued (write cache) values.

        Synchronous on purpose, like a stream chunk: it runs between the caller's master read and
        its enqueue with no other coroutine in between, so no write can slip past both. Version
        keys are written under the key lock (held by the caller), or together with the master by
        a `versioning` put, which the master read already sees."""
        lower, upper = master + VERSION_SEPARATOR, master + VERSIONS_UPPER
        for key, entry in self._pending.items():
            if entry[0] is not None and lower <= key < upper and key != version_key:
                return True
        try:
            it = self._kv.iterate(gte=lower, lt=upper)
            try:
                for key, _value in it:
                    if key == version_key:
                        continue
                    entry = self._pending.get(key)
                    if entry is None or entry[0] is not None:
                        return True
            finally:
                it.close()  # type: ignore[attr-defined]
        except MetadataError:
            raise
        except Exception as exc:
            raise MetadataError("InternalError", 500, f"metadata store error: {exc}") from exc
        return False

    async def _resolve_phd(self, master: bytes) -> str | None:
        """Resolve (and repair) a PHD master: the newest version's value, or None when no version is left.

        Runs under the key lock, so one resolution per key at a time; a later caller finds it repaired."""
        async with self._key_lock(master):
            while True:
                listing = await self._list_versions(master)
                if not listing:
                    return None
                first_key, first_value = listing[0]
                if first_key != master:
                    # No master but versions exist: a plain delete removed it; nothing to resolve.
                    return None
                seen = first_value
                if not _version_fields(decode_text(seen))[1]:
                    return decode_text(seen)
                current = await self._read_for_update(master)
                if current is None:
                    return None
                if current != seen:
                    if _version_fields(decode_text(current))[1]:
                        # Another PHD was queued meanwhile: let it land, then list again.
                        await self._flush()
                        continue
                    return decode_text(current)
                # Same PHD as listed: apply the repair in the same step as the re-check.
                newest = listing[1][1] if len(listing) > 1 else None
                fut = self._enqueue([(master, newest)])
                try:
                    await self._durable(fut)
                except MetadataError as exc:
                    log_event(_log, logging.WARNING, "PHD repair failed", key=decode_text(master),
                              error=exc.description)
                return None if newest is None else decode_text(newest)

    async def _list_versions(self, master: bytes) -> list[tuple[bytes, bytes]]:
        def scan() -> list[tuple[bytes, bytes]]:
            it = self._kv.iterate(gte=master, lt=master + VERSIONS_UPPER)
            try:
                return list(islice(it, PHD_LISTING_LIMIT))
            finally:
                it.close()  # type: ignore[attr-defined]
        return await self._run(scan)

    def _schedule_repair(self, master: bytes) -> None:
        if self._closed:
            return
        old = self._repair_timers.pop(master, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._repair_timers[master] = loop.call_later(self._repair_delay_s, self._start_repair, master)

    def _cancel_repair(self, master: bytes) -> None:
        handle = self._repair_timers.pop(master, None)
        if handle is not None:
            handle.cancel()

    def _start_repair(self, master: bytes) -> None:
        self._repair_timers.pop(master, None)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._repair(master))
        self._repair_tasks.add(task)
        task.add_done_callback(self._repair_tasks.discard)

    async def _repair(self, master: bytes) -> None:
        try:
            raw = await self._read_for_update(master)
            if raw is not None and _version_fields(decode_text(raw))[1]:
                await self._resolve_phd(master)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background repair must never crash the loop; get() repairs later
            log_event(_log, logging.WARNING, "PHD repair failed", key=decode_text(master), error=str(exc))

    # --- group commit -------------------------------------------------------------------------------

    async def _write(self, ops: list[Op]) -> None:
        await self._enqueue(ops)

    def _enqueue(self, ops: list[Op]) -> asyncio.Future[None]:
        """Queue one caller's ops (committed together in one batch); the future resolves once durable."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        for key, value in ops:
            entry = self._pending.get(key)
            if entry is None:
                self._pending[key] = [value, 1]
            else:
                entry[0] = value
                entry[1] += 1
        self._queue.append(_QueuedWrite(ops, future))
        if self._committer is None or self._committer.done():
            # No commit in flight: commit now (on the next loop turn, gathering what this turn queues).
            self._committer = loop.create_task(self._commit_loop())
        return future

    async def _commit_loop(self) -> None:
        while self._queue:
            batch: list[_QueuedWrite] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].ops) <= self._max_ops):
                write = self._queue.popleft()
                batch.append(write)
                count += len(write.ops)
            ops = [op for write in batch for op in write.ops]
            error: BaseException | None = None
            log_ops: list[Op] = []
            log_first = 0
            if self.record_log is not None:
                # One record per op, committed in the same batch (docs/protocol.md#record-log).
                log_ops, log_first = self.record_log.record_ops(ops)
            try:
                await self._run(self._kv.write, ops + log_ops if log_ops else ops, True)
            except asyncio.CancelledError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - any store failure fails this batch's callers
                error = exc
                log_event(_log, logging.ERROR, "metadata batch failed", ops=len(ops), error=str(exc))
            if error is not None and log_ops and self.record_log is not None:
                self.record_log.give_back(log_first, len(log_ops))   # nothing of the batch was applied
            for key, _value in ops:
                entry = self._pending[key]
                entry[1] -= 1
                if entry[1] == 0:
                    del self._pending[key]
            self._commits_done += 1
            if error is None:
                self._stats["batches"] += 1
                self._stats["ops"] += len(ops)
                self._stats["last_batch_ops"] = len(ops)
                self._stats["max_batch_ops"] = max(self._stats["max_batch_ops"], len(ops))
            for write in batch:
                if write.future.done():
                    continue
                if error is None:
                    write.future.set_result(None)
                else:
                    write.future.set_exception(_commit_error(error))
            if isinstance(error, asyncio.CancelledError):
                raise error

    async def _flush(self) -> None:
        """Wait until every write queued so far is committed (or failed)."""
        if self._queue:
            await asyncio.wait([self._queue[-1].future])
        elif self._committer is not None and not self._committer.done():
            await asyncio.wait([self._committer])

    @staticmethod
    async def _durable(future: asyncio.Future[None]) -> None:
        """Await a commit; if the caller is cancelled, still hold its key lock until the batch is done."""
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await asyncio.wait([future])
            raise

    async def _read_for_update(self, key: bytes) -> bytes | None:
        """Read `key` as it will be once every queued write is committed (the write cache, docs/durability.md#group-commit)."""
        for _ in range(_RMW_READ_ATTEMPTS):
            entry = self._pending.get(key)
            if entry is not None:
                return entry[0]
            commits_before = self._commits_done
            value = await self._run(self._kv.get, key)
            entry = self._pending.get(key)
            if entry is not None:
                return entry[0]
            if self._commits_done == commits_before:
                # No commit finished during the read, so no queued write to this key was missed.
                return value
        return self._kv.get(key)

    @contextlib.asynccontextmanager
    async def _key_lock(self, master: bytes) -> AsyncIterator[None]:
        entry = self._key_locks.get(master)
        if entry is None:
            entry = self._key_locks[master] = _KeyLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._key_locks[master]   # no waiter left: free it so idle keys cost no memory

    # --- streams ------------------------------------------------------------------------------

    async def _stream(self, query: RangeQuery, shape: Callable[[bytes, bytes], T]) -> AsyncIterator[T]:
        if query.limit == 0:
            return
        try:
            it = self._kv.iterate(gt=query.gt, gte=query.gte, lt=query.lt, lte=query.lte, reverse=query.reverse)
        except Exception as exc:
            raise MetadataError("InternalError", 500, f"cannot read metadata: {exc}") from exc
        cursor = _Cursor(it)
        remaining = query.limit
        size = STREAM_FIRST_CHUNK
        try:
            while True:
                want = size if remaining == NO_LIMIT else min(size, remaining)
                try:
                    chunk = cursor.take(want)
                except Exception as exc:
                    raise MetadataError("InternalError", 500, f"metadata read failed: {exc}") from exc
                for k, v in chunk:
                    yield shape(k, v)
                if remaining != NO_LIMIT:
                    remaining -= len(chunk)
                    if remaining <= 0:
                        return
                if len(chunk) < want:
                    if self._closed:
                        raise MetadataError("InternalError", 500, "metadata store closed during a read")
                    return
                size = min(size * 2, STREAM_MAX_CHUNK)
        finally:
            cursor.close()

    # --- helpers ------------------------------------------------------------------------------

    def _point_read(self, key: bytes) -> bytes | None:
        """A get of one key, on the event loop even for RocksDB: a cached point read takes
        microseconds, a hop to a worker thread and back costs ~10x that (and a GIL round trip)."""
        try:
            return self._kv.get(key)
        except Exception as exc:
            raise MetadataError("InternalError", 500, f"metadata store error: {exc}") from exc

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the store: inline for memory, in a worker thread for RocksDB; store failures become InternalError."""
        try:
            if self._inline:
                return fn(*args)
            return await asyncio.to_thread(fn, *args)
        except MetadataError:
            raise
        except Exception as exc:
            raise MetadataError("InternalError", 500, f"metadata store error: {exc}") from exc

    def _new_vid(self) -> str:
        info = ""
        if self._vid_suffix:
            info = str(self._vid_counter)
            self._vid_counter += 1
        return versionid.generate(self._rg, info)

    def _check_open(self) -> None:
        if self._closed:
            raise MetadataError("InternalError", 500, "metadata store is closed")

    def _init_uuid(self) -> str:
        """<metadata_path>/uuid, created on first open (INITIAL_INSTANCE_ID, else a uuid4)."""
        if self._metadata_path is None:
            return os.environ.get(INITIAL_INSTANCE_ID_ENV) or str(uuid.uuid4())
        path = os.path.join(self._metadata_path, UUID_FILENAME)
        try:
            with open(path, encoding="utf-8") as f:
                existing = f.read().strip()
            if existing:
                return existing
        except FileNotFoundError:
            pass
        instance_id = os.environ.get(INITIAL_INSTANCE_ID_ENV) or str(uuid.uuid4())
        os.makedirs(self._metadata_path, exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(instance_id)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)   # atomic: a crash never leaves a half-written uuid
        return instance_id
