"""The one interface every data backend implements, and its errors.

The gateway's S3 code only sees `DataBackend`: put a stream of bytes and get
back a key, read a key (whole or one inclusive byte range) as a stream,
delete a key. Which store holds the bytes (the dmd's /DataFile service,
process memory, later another S3) is chosen once, in `make_data_backend`.
"""
from __future__ import annotations

import abc
import re
from typing import AsyncIterator

KEY_HEX_LENGTH = 40  # keys are 20 random bytes in lowercase hex, named by the store
_KEY_RE = re.compile(r"[0-9a-f]{%d}" % KEY_HEX_LENGTH)


def is_valid_key(key: str) -> bool:
    """True for a key a data store could have produced (anything else cannot exist)."""
    return isinstance(key, str) and _KEY_RE.fullmatch(key) is not None


def check_range(start: int | None, end: int | None) -> None:
    """Reject a range no caller should build (a programming error, not a client one)."""
    if (start is not None and start < 0) or (end is not None and end < 0):
        raise ValueError(f"negative byte range {start}-{end}")
    if start is not None and end is not None and start > end:
        raise ValueError(f"byte range start {start} after end {end}")


class DataError(Exception):
    """A data backend failed. `code` is the store's error name (e.g. "InternalError")."""

    def __init__(self, message: str, code: str = "InternalError", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class DataNotFound(DataError):
    """No blob under that key."""


class DataUnavailable(DataError):
    """The store could not be reached or did not answer in time (connection, timeout)."""


class DataIntegrityError(DataError):
    """The bytes do not add up: a body of the wrong length, a malformed answer from the store."""


class DataRangeNotSatisfiable(DataError):
    """The requested range starts at or past the end of the blob."""


class DataBackend(abc.ABC):
    """A blob store. Keys are chosen by the store, never by the caller."""

    #: the location name written as `dataStoreName` in object metadata
    location_name: str = ""

    @abc.abstractmethod
    async def put(self, chunks: AsyncIterator[bytes], size: int | None) -> str:
        """Store the bytes `chunks` yields and return the new key.

        `size`, when given, is the exact body length; a different total raises
        DataIntegrityError. If `chunks` raises, the upload is aborted, nothing is
        stored, and the same exception propagates.
        """

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream a blob, or bytes start..end inclusive (end clamped to the blob's last byte).

        Errors (DataNotFound, DataRangeNotSatisfiable, DataUnavailable...) surface on
        the first iteration. Iterate to the end or `aclose()` the iterator.
        """

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove a blob. A missing key is not an error (already deleted)."""

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when the store answers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
