"""Object bytes in data locations: the one way to store a stream, read a byte range
back, and free data that nothing references any more.

Every write of object bytes (PutObject, POST object, CopyObject, UploadPart,
UploadPartCopy) goes through `store_stream`, so a transform of stored bytes
(encryption) is added in one place. A location record (one entry of an
ObjectMD's `location` list) is built only by `location_record`.

A location record's `dataStoreName` names the location holding its bytes. Records written by
the original in S3BACKEND=file mode name the backend type instead ("file"); `Services.data_for`
maps such a name to a location of that type (`gateway.data.location_serving`). A read resolves
the backend of every piece before anything is sent (`read_range`), so a location this gateway
cannot serve is an S3 error, never a 200 followed by a broken body.

Encryption at rest (gateway/encryption.py, docs/encryption.md): `store_stream` given a
`KeySource` seals the stream and records how in the location; `read_range` opens the chunks
of encrypted locations it reads (SSE-C ones with the request's `customer_key`).
"""
from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, NamedTuple

from gateway import encryption
from gateway.kms import kms_for
from shared.errors import S3Error
from shared.metastore import MetadataError

if TYPE_CHECKING:
    from gateway.context import Services
    from gateway.data.base import DataBackend, ObjectName

DEFAULT_LOCATION = "us-east-1"


def location_record(data_key: str, size: int, location_name: str, md5_hex: str, *,
                    part_number: int = 1, start: int = 0) -> dict[str, Any]:
    """One piece of an object's data: `dataStoreETag` is "<part number>:<part md5>" (the original's)."""
    return {"key": data_key, "size": size, "start": start, "dataStoreName": location_name,
            "dataStoreETag": f"{part_number}:{md5_hex}"}


def part_number_of_location(loc: dict[str, Any]) -> int | None:
    """The part number a location belongs to, from its dataStoreETag (None when it has none)."""
    number_text = str(loc.get("dataStoreETag", "")).partition(":")[0]
    return int(number_text) if number_text.isdigit() else None


def part_md5_of_location(loc: dict[str, Any]) -> str:
    """The md5 (hex) of the part a location belongs to, from its dataStoreETag ("" when it has none)."""
    return str(loc.get("dataStoreETag", "")).partition(":")[2]


def part_location(loc: dict[str, Any], part_number: int, md5_hex: str, *, start: int | None = None) -> dict[str, Any]:
    """`loc` as a piece of part `part_number` (whose md5 is `md5_hex`), at object offset `start`
    (its own when None). Its other fields (the original's encryption fields, ...) are kept."""
    record = location_record(loc["key"], loc.get("size", 0), loc.get("dataStoreName", DEFAULT_LOCATION), md5_hex,
                             part_number=part_number, start=loc.get("start", 0) if start is None else start)
    return {**loc, **record}


async def store_stream(services: "Services", location_name: str, chunks: AsyncIterator[bytes],
                       size: int | None, digest: Callable[[], tuple[int, str]],
                       check: Callable[[], None] | None = None,
                       keys: "encryption.KeySource | None" = None,
                       name: "ObjectName | None" = None) -> list[dict[str, Any]]:
    """Write `chunks` as one blob of `location_name` and return its location list.

    `digest()` gives (size, md5 hex) of what passed, once it has all passed (the
    caller's stream computes them); `check()` may refuse what was stored (a short
    body, a size limit). A refused or failed write leaves no blob behind.
    With `keys`, the blob is sealed under a new data key (gateway/encryption.py): the
    location's `size` stays the plaintext's, its encryption fields say how to open it, and its
    md5 is the plaintext's, or for SSE-KMS and SSE-C (as AWS's ETags) the stored bytes'
    (`stored_md5` gives it to the caller for the ETag).
    """
    backend = services.data_for(location_name)
    sealed: dict[str, Any] | None = None
    if keys is not None:
        data_key, key_fields = keys.new_data_key()
        prefix = encryption.new_nonce_prefix()
        chunks = encryption.encrypt_stream(chunks, data_key, prefix)
        stored_hash = hashlib.md5() if keys.etag_of_stored_bytes else None
        if stored_hash is not None:
            chunks = _hashing(chunks, stored_hash)
        sealed = {"fields": key_fields, "prefix": prefix, "md5": stored_hash}
        size = None if size is None else encryption.stored_size(size)
    data_key = await backend.put(chunks, size, name)   # name: the object, for stores that name blobs after it
    try:
        if check is not None:
            check()
        plain_size, md5_hex = digest()
    except BaseException:
        await backend.delete(data_key)
        raise
    if sealed is not None and sealed["md5"] is not None:
        md5_hex = sealed["md5"].hexdigest()
    record = location_record(data_key, plain_size, location_name, md5_hex)
    if sealed is not None:
        record.update(encryption.encryption_fields(sealed["fields"], sealed["prefix"], plain_size))
    return [record]


async def link_locations(services: "Services", location_name: str,
                         locations: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Copy by reference: each blob of `locations` named again under a new key of `location_name`
    (`DataBackend.copy_blob`; the dmd hard-links it), and the new pieces' records: the same
    fields (size, start, dataStoreETag, encryption fields) with the new key and location.
    None when it cannot be done without moving bytes (a piece on another store, a store
    without the call): the caller streams. Nothing it made is left behind when it fails."""
    target = services.data_for(location_name)
    for loc in locations:
        if not target.shares_store_with(_backend_of(services, loc)):
            return None
    made: list[dict[str, Any]] = []
    try:
        for loc in locations:
            new_key = await target.copy_blob(loc["key"])
            if new_key is None:
                await free_locations(services, made)
                return None
            made.append({**loc, "key": new_key, "dataStoreName": location_name})
    except BaseException:
        await asyncio.shield(free_locations(services, made))
        raise
    return made


async def _hashing(chunks: AsyncIterator[bytes], md5: Any) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        md5.update(chunk)
        yield chunk


def stored_md5(locations: list[dict[str, Any]] | None, plaintext_md5: str) -> str:
    """The ETag md5 of what `store_stream` stored: its location's md5 (the stored bytes' for
    SSE-KMS and SSE-C), `plaintext_md5` for an object without data."""
    return part_md5_of_location(locations[0]) if locations else plaintext_md5


class _Piece(NamedTuple):
    """One blob read of a range: its backend, key, and byte range (None, None: the whole blob);
    for an encrypted blob, the stored range and what opens it (`_Sealed`)."""
    backend: "DataBackend"
    key: str
    lo: int | None
    hi: int | None
    sealed: "_Sealed | None" = None


class _Sealed(NamedTuple):
    """How to open plaintext bytes first..last of an encrypted blob of `size` plaintext bytes."""
    data_key: bytes
    prefix: bytes
    size: int
    first: int
    last: int


def _backend_of(services: "Services", loc: dict[str, Any]) -> "DataBackend":
    """The backend holding a stored location (its `dataStoreName`, us-east-1 when it names none)."""
    return services.data_for(loc.get("dataStoreName") or DEFAULT_LOCATION)


def _reader_for(services: "Services", loc: dict[str, Any]) -> "DataBackend":
    """The backend holding a stored location; an S3 error when no configured location serves it."""
    try:
        return _backend_of(services, loc)
    except S3Error:
        raise S3Error("InternalError", f"The object's data is in location "
                      f"{loc.get('dataStoreName') or DEFAULT_LOCATION!r}, which this server "
                      "does not serve") from None


def read_range(services: "Services", locations: list[dict[str, Any]] | None,
               first: int, last: int, customer_key: bytes | None = None) -> AsyncIterator[bytes]:
    """The bytes first..last (inclusive) of an object stored as a list of data locations.

    The backend of every piece is resolved here, before the first byte: a location this gateway
    cannot serve raises S3Error now (the caller has not sent a status yet); so are the data keys
    of encrypted pieces (an SSE-C piece without its `customer_key`, or with another, fails here)."""
    pieces: list[_Piece] = []
    offset = 0
    for loc in (locations or []) if last >= first else []:
        size = int(loc.get("size", 0))
        start, end = offset, offset + size - 1
        offset += size
        if size == 0 or end < first or start > last:
            continue
        lo, hi = max(first, start) - start, min(last, end) - start
        whole = lo == 0 and hi == size - 1
        if loc.get("cipheredDataKey") and not encryption.is_encrypted(loc):
            # The original's own encryption (AES-256-CTR under its KMS): never served as if plaintext.
            raise S3Error("NotImplemented", "This object was encrypted by the original CloudServer; "
                          "this server cannot decrypt it")
        if encryption.is_encrypted(loc):
            data_key = encryption.data_key_of(loc, kms_for(services.config), customer_key)
            sealed = _Sealed(data_key, encryption.nonce_prefix_of(loc), size, lo, hi)
            slo, shi = encryption.stored_range(loc, lo, hi)
            whole = slo == 0 and shi == encryption.stored_size(size) - 1
            pieces.append(_Piece(_reader_for(services, loc), loc["key"], None if whole else slo,
                                 None if whole else shi, sealed))
            continue
        pieces.append(_Piece(_reader_for(services, loc), loc["key"], None if whole else lo, None if whole else hi))
    return _read_pieces(pieces)


async def _read_pieces(pieces: list[_Piece]) -> AsyncIterator[bytes]:
    for piece in pieces:
        chunks = piece.backend.get(piece.key, piece.lo, piece.hi)
        if piece.sealed is not None:
            s = piece.sealed
            chunks = encryption.decrypt_stream(chunks, s.data_key, s.prefix, s.size, s.first, s.last, piece.key)
        async for chunk in chunks:
            yield chunk


async def open_range(services: "Services", locations: list[dict[str, Any]] | None,
                     first: int, last: int, customer_key: bytes | None = None) -> AsyncIterator[bytes]:
    """`read_range`, with its first chunk already read: what fails before any byte arrives (a location
    not served here, the first blob missing or its store away) raises here, before a response status
    is chosen. Iterate the result to the end or `aclose()` it."""
    chunks = read_range(services, locations, first, last, customer_key)
    try:
        head = await anext(chunks, None)
    except BaseException:
        await chunks.aclose()
        raise
    return _prepend(head, chunks)


async def _prepend(head: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if head is None:
            return
        yield head
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()   # type: ignore[attr-defined]


async def free_locations(services: "Services", locations: list[dict[str, Any]] | None,
                         log: dict[str, Any] | None = None) -> None:
    """Free the data of an object version nothing references any more. A failure leaks the
    blob (named in `log["leakedBlobs"]`, the request's log fields), never loses data."""
    for loc in locations or []:
        try:
            await _backend_of(services, loc).delete(loc["key"])
        except Exception:  # a blob we fail to free is garbage, not an error for the client
            if log is not None:
                log.setdefault("leakedBlobs", []).append(loc.get("key"))


async def free_many(services: "Services", locations: list[dict[str, Any]]) -> list[Any]:
    """Free the blobs of many locations nothing references any more (DeleteObjects), grouped by
    store, each group in `DataBackend.delete_many` (the dmd: batches of its batch delete call).
    Returns the keys that were not freed (orphans for the scrub), never raises for a store's error."""
    groups: dict[int, tuple["DataBackend", list[str]]] = {}
    leaked: list[Any] = []
    for loc in locations:
        try:
            backend = _backend_of(services, loc)
        except Exception:   # a location no configured store serves: nothing to ask
            leaked.append(loc.get("key"))
            continue
        groups.setdefault(id(backend), (backend, []))[1].append(loc["key"])
    for backend, keys in groups.values():
        try:
            leaked.extend(await backend.delete_many(keys))
        except Exception:   # noqa: BLE001 - garbage, not an error for anyone
            leaked.extend(keys)
    return leaked


# Metadata errors after which a write may or may not have been applied: the call was sent and its
# answer lost (the dmd died after committing, the connection dropped, the answer timed out).
_OUTCOME_UNKNOWN_TYPES = frozenset({"ECONNRESET", "ETIMEDOUT"})


def commit_outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed metadata write may nevertheless have been committed: then the data it
    references must not be freed (a leak the scrub finds is the price; freeing could lose an object)."""
    if isinstance(exc, asyncio.CancelledError):   # the request went away while the call was out
        return True
    return isinstance(exc, MetadataError) and exc.type in _OUTCOME_UNKNOWN_TYPES


async def free_new_data(services: "Services", locations: list[dict[str, Any]] | None, exc: BaseException,
                        log: dict[str, Any] | None = None) -> None:
    """Roll back the data of a write whose metadata commit failed with `exc`: freed when the
    commit certainly did not happen, left in place (named in `log["leakedBlobs"]`) when it may have."""
    if not commit_outcome_unknown(exc):
        await free_locations(services, locations, log)
    elif log is not None and locations:
        log.setdefault("leakedBlobs", []).extend(loc.get("key") for loc in locations)


async def data_present(services: "Services", locations: list[dict[str, Any]] | None) -> bool:
    """Whether every blob of `locations` still exists (asked of its backend: a part staged in
    Azure cannot be read, only looked up)."""
    for loc in locations or []:
        if not loc.get("size"):
            continue
        if not await _backend_of(services, loc).exists(loc["key"]):
            return False
    return True


async def commit_upload(services: "Services", location_name: str, name: "ObjectName",
                        locations: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The location list of a completed upload once its store has joined the parts (issue 16: azure
    commits the staged blocks as one blob, `DataBackend.commit_parts`); unchanged where parts stay
    blobs of their own. Only the keys change: each piece keeps its part, size and offset."""
    if not locations:
        return locations
    keys = await services.data_for(location_name).commit_parts(name, [loc["key"] for loc in locations])
    if keys is None:
        return locations
    return [{**loc, "key": key} for loc, key in zip(locations, keys)]


def refuse_oversized(size: int, limit: int) -> None:
    if size > limit:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(limit), ProposedSize=str(size))
