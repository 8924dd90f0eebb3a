"""`MemoryDataBackend`: blobs in a dict, for S3BACKEND=mem (tests, demos).

Same contract as the dmd backend (keys are 40 lowercase hex chosen here, a
failed upload stores nothing), so tests of the S3 layer over memory hold
over the dmd too. Bodies live whole in memory: not for large objects.
"""
from __future__ import annotations

import os
from typing import AsyncIterator

from gateway.data.base import (KEY_HEX_LENGTH, DataBackend, ObjectName, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, check_range, is_valid_key)

GET_CHUNK_BYTES = 1 << 20  # slice size of a read, so readers see several chunks as from the dmd


class MemoryDataBackend(DataBackend):
    def __init__(self, location_name: str = "mem") -> None:
        self.location_name = location_name
        self._blobs: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._blobs)

    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        parts: list[bytes] = []
        total = 0
        async for chunk in chunks:  # an exception here leaves nothing stored
            total += len(chunk)
            if size is not None and total > size:
                raise DataIntegrityError(f"body longer than the announced {size} bytes", "IncompleteBody")
            parts.append(bytes(chunk))
        if size is not None and total != size:
            raise DataIntegrityError(f"body of {total} bytes, {size} announced", "IncompleteBody")
        key = os.urandom(KEY_HEX_LENGTH // 2).hex()
        self._blobs[key] = b"".join(parts)
        return key

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        blob = self._blobs.get(key) if is_valid_key(key) else None
        if blob is None:
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        first = start or 0
        if (start is not None or end is not None) and first >= len(blob):
            raise DataRangeNotSatisfiable(f"range start {first} past blob size {len(blob)}", "InvalidRange", 416)
        last = len(blob) - 1 if end is None else min(end, len(blob) - 1)
        view = memoryview(blob)
        for pos in range(first, last + 1, GET_CHUNK_BYTES):
            yield bytes(view[pos:min(pos + GET_CHUNK_BYTES, last + 1)])

    async def copy_blob(self, key: str) -> str | None:
        """The same immutable bytes under a new key (nothing is copied)."""
        blob = self._blobs.get(key) if is_valid_key(key) else None
        if blob is None:
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        new = os.urandom(KEY_HEX_LENGTH // 2).hex()
        self._blobs[new] = blob
        return new

    async def delete(self, key: str) -> None:
        self._blobs.pop(key, None)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        """Nothing to release; the blobs stay (the process-wide instance outlives its users)."""
