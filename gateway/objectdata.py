"""Object bytes in data locations: the one way to store a stream, read a byte range
back, and free data that nothing references any more.

Every write of object bytes (PutObject, POST object, CopyObject, UploadPart,
UploadPartCopy) goes through `store_stream`, so a transform of stored bytes
(encryption) is added in one place. A location record (one entry of an
ObjectMD's `location` list) is built only by `location_record`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from shared.errors import S3Error

if TYPE_CHECKING:
    from gateway.context import Services

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
                       check: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Write `chunks` as one blob of `location_name` and return its location list.

    `digest()` gives (size, md5 hex) of what passed, once it has all passed (the
    caller's stream computes them); `check()` may refuse what was stored (a short
    body, a size limit). A refused or failed write leaves no blob behind.
    """
    backend = services.data_for(location_name)
    data_key = await backend.put(chunks, size)
    try:
        if check is not None:
            check()
        stored_size, md5_hex = digest()
    except BaseException:
        await backend.delete(data_key)
        raise
    return [location_record(data_key, stored_size, location_name, md5_hex)]


async def read_range(services: "Services", locations: list[dict[str, Any]] | None,
                     first: int, last: int) -> AsyncIterator[bytes]:
    """The bytes first..last (inclusive) of an object stored as a list of data locations."""
    if not locations or last < first:
        return
    offset = 0
    for loc in locations:
        size = int(loc.get("size", 0))
        start, end = offset, offset + size - 1
        offset += size
        if size == 0 or end < first or start > last:
            continue
        backend = services.data_for(loc.get("dataStoreName") or DEFAULT_LOCATION)
        lo, hi = max(first, start) - start, min(last, end) - start
        whole = lo == 0 and hi == size - 1
        async for chunk in backend.get(loc["key"], None if whole else lo, None if whole else hi):
            yield chunk


async def free_locations(services: "Services", locations: list[dict[str, Any]] | None,
                         log: dict[str, Any] | None = None) -> None:
    """Free the data of an object version nothing references any more. A failure leaks the
    blob (named in `log["leakedBlobs"]`, the request's log fields), never loses data."""
    for loc in locations or []:
        try:
            await services.data_for(loc.get("dataStoreName") or DEFAULT_LOCATION).delete(loc["key"])
        except Exception:  # a blob we fail to free is garbage, not an error for the client
            if log is not None:
                log.setdefault("leakedBlobs", []).append(loc.get("key"))


def refuse_oversized(size: int, limit: int) -> None:
    if size > limit:
        raise S3Error("EntityTooLarge", MaxSizeAllowed=str(limit), ProposedSize=str(size))
