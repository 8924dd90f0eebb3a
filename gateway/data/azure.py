"""`AzureDataBackend`: object data as block blobs of one Azure Blob Storage container
(location type "azure"), with the `azure-storage-blob` package (its asyncio client).

Details, as the reference documents them: `azureStorageEndpoint` (the account's blob endpoint,
e.g. https://<account>.blob.core.windows.net/, or Azurite's http://127.0.0.1:10000/devstoreaccount1),
`azureStorageAccountName`, `azureStorageAccessKey`, `azureContainerName` (an existing container),
`bucketMatch` and our `dataLayout` (gateway/data/naming.py). The environment overrides them per
location: `<location>_AZURE_STORAGE_ACCOUNT_NAME`, `<location>_AZURE_STORAGE_ACCESS_KEY`,
`<location>_AZURE_STORAGE_ENDPOINT`.

Writes stream: the body is staged as blocks of BLOCK_BYTES (one in memory at a time) and
committed with one block list; a body of one block is a single upload. A failed write commits
nothing (staged blocks that are never committed are dropped by Azure after a week).

Multipart uploads (named layout): UploadPart stages its blocks on the object's blob without
committing them (a `b1:` key names them); CompleteMultipartUpload commits the chosen parts'
blocks as one block list (`commit_parts`), so the object is one blob under its name and no
byte is copied; its pieces are `p1:<offset>:<length>:<ETag>:<name>` keys. Parts not chosen, and the
parts of an aborted upload, are dropped by Azure with the uncommitted blocks. Azure discards
the uncommitted blocks of a blob when the blob is written: a PutObject of the same key while
an upload is in progress makes that upload's Complete fail (InvalidPart), as on CloudServer.

In the named layout the data key carries the blob's ETag: reads and deletes are conditional on
it (`If-Match`), so the bytes an overwrite replaced are never served, and freeing them never
deletes the newer blob. The overwrite itself replaces the blob before the metadata commit: a
failed commit leaves the previous version without its bytes (docs/backends.md, the caveat). Azure blobs keep no versions here, so a versioning-enabled bucket cannot
write to a named azure location (`keeps_versions`; gateway/placement.py answers 501, as
CloudServer does); in the opaque layout every put is a blob of its own and versions work.
"""
from __future__ import annotations

import asyncio
import base64
import os
from typing import Any, AsyncIterator, Mapping

from shared.config import Location

from gateway.data import naming
from gateway.data.base import (KEY_HEX_LENGTH, DataBackend, DataError, DataIntegrityError, DataNotFound,
                               DataRangeNotSatisfiable, DataUnavailable, ObjectName, check_range)

LOCATION_TYPE = "azure"
BLOCK_BYTES = 4 * 1024 * 1024      # staged block size; also the download chunk size
MAX_BLOCKS = 50_000                # Azure's limit of blocks per blob
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
# The SDK's own retries (its default waits 15 s, then 45 s): a few quick ones, so a location that is
# down answers 503 in about a second (SDKs retry a 503) instead of holding the request.
RETRY_TOTAL = 2
RETRY_BACKOFF_S = 0.3
HEALTH_TIMEOUT_S = 3.0
ENV_OVERRIDES = {"azureStorageAccountName": "AZURE_STORAGE_ACCOUNT_NAME",
                 "azureStorageAccessKey": "AZURE_STORAGE_ACCESS_KEY",
                 "azureStorageEndpoint": "AZURE_STORAGE_ENDPOINT"}
_REQUIRED = ("azureStorageEndpoint", "azureStorageAccountName", "azureStorageAccessKey", "azureContainerName")


def azure_details(location: Location, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The location's details with the environment overrides applied, checked; ValueError names
    the field at fault."""
    env = os.environ if env is None else env
    details = dict(location.details)
    for field, suffix in ENV_OVERRIDES.items():
        value = env.get(f"{location.name}_{suffix}")
        if value:
            details[field] = value
    for field in _REQUIRED:
        if not isinstance(details.get(field), str) or not details[field]:
            raise ValueError(f"azure location {location.name!r}: 'details.{field}' is required (a non-empty string)")
    if not details["azureStorageEndpoint"].startswith(("http://", "https://")):
        raise ValueError(f"azure location {location.name!r}: 'details.azureStorageEndpoint' must be an http(s) URL")
    if "bucketMatch" in details and not isinstance(details["bucketMatch"], bool):
        raise ValueError(f"azure location {location.name!r}: 'details.bucketMatch' must be a boolean")
    naming.layout_of(LOCATION_TYPE, details)
    return details


class AzureDataBackend(DataBackend):
    """Blobs of one Azure container (details.azureContainerName)."""

    def __init__(self, location: Location, *, env: Mapping[str, str] | None = None) -> None:
        details = azure_details(location, env)
        self.location_name = location.name
        self.endpoint: str = details["azureStorageEndpoint"].rstrip("/")
        self.container: str = details["azureContainerName"]
        self.bucket_match: bool = details.get("bucketMatch", False)
        self.named: bool = naming.layout_of(LOCATION_TYPE, details) == "named"
        self._account = details["azureStorageAccountName"]
        self._access_key = details["azureStorageAccessKey"]
        self._client: Any = None   # ContainerClient, made on first use (it belongs to the running loop)

    def __repr__(self) -> str:
        return f"AzureDataBackend({self.endpoint}, container={self.container!r}, location={self.location_name!r})"

    def _container(self) -> Any:
        if self._client is None:
            from azure.core.credentials import AzureNamedKeyCredential
            from azure.storage.blob.aio import ContainerClient, LinearRetry
            retry = LinearRetry(backoff=RETRY_BACKOFF_S, random_jitter_range=0, retry_total=RETRY_TOTAL)
            self._client = ContainerClient(
                self.endpoint, self.container, credential=AzureNamedKeyCredential(self._account, self._access_key),
                retry_policy=retry, connection_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                max_single_get_size=BLOCK_BYTES, max_chunk_get_size=BLOCK_BYTES, max_block_size=BLOCK_BYTES,
                max_single_put_size=BLOCK_BYTES)
        return self._client

    def _error(self, what: str, exc: BaseException) -> DataError:
        """An SDK exception as a DataError (missing blob, bad range, store away, anything else)."""
        from azure.core.exceptions import (HttpResponseError, ResourceModifiedError, ResourceNotFoundError,
                                           ServiceRequestError, ServiceResponseError)
        message = f"azure {what} on {self.endpoint} container {self.container}: {exc!r}"[:1000]
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError, asyncio.TimeoutError)):
            return DataUnavailable(message, "ServiceUnavailable")
        if isinstance(exc, ResourceModifiedError):   # If-Match failed: those bytes were replaced
            return DataNotFound(message, "ObjNotFound", 404)
        if isinstance(exc, ResourceNotFoundError):
            code = getattr(exc, "error_code", None) or ""
            if code == "ContainerNotFound":   # a broken location (503), not a missing blob
                return DataUnavailable(message, "ServiceUnavailable", 503)
            return DataNotFound(message, "ObjNotFound", 404)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, HttpResponseError) and status == 416:
            return DataRangeNotSatisfiable(message, "InvalidRange", 416)
        if status is not None and status >= 500:
            return DataUnavailable(message, "ServiceUnavailable", status)
        return DataError(message, "InternalError", status)

    def valid_key(self, key: str) -> bool:
        return naming.is_cloud_key(key)

    @staticmethod
    def _address(key: str) -> tuple[str, str | None, int, int | None]:
        """(blob name, ETag the blob must still have or None, offset of the bytes in it, their length
        or None for the whole blob) of a data key."""
        piece = naming.parse_piece_key(key)
        if piece is not None:
            return piece[3], piece[2], piece[0], piece[1]
        parsed = naming.parse_named_key(key)
        return (key, None, 0, None) if parsed is None else (parsed[0], parsed[1], 0, None)

    # --- put ------------------------------------------------------------------------------------
    async def put(self, chunks: AsyncIterator[bytes], size: int | None, name: ObjectName | None = None) -> str:
        named = self.named and name is not None
        blob = naming.remote_name(name, self.bucket_match) if named and name is not None \
            else os.urandom(KEY_HEX_LENGTH // 2).hex()
        client = self._container().get_blob_client(blob)
        prefix = os.urandom(8).hex()   # block ids of this put only: concurrent puts of one name never mix
        if named and name is not None and name.is_part:
            return await self._stage_part(client, blob, prefix, chunks, size)
        block_ids: list[str] = []
        total = 0
        pending: bytes | None = None
        try:
            async for block in _blocks(chunks, BLOCK_BYTES):
                total += len(block)
                if size is not None and total > size:
                    raise DataIntegrityError(f"body longer than the announced {size} bytes", "IncompleteBody")
                if pending is not None:   # two blocks or more: stage them; one alone is a single upload
                    block_ids.append(await self._stage(client, prefix, len(block_ids), pending))
                pending = block
            if size is not None and total != size:
                raise DataIntegrityError(f"body of {total} bytes, {size} announced", "IncompleteBody")
            if len(block_ids) + 1 > MAX_BLOCKS:
                raise DataIntegrityError(f"body of {total} bytes needs more than {MAX_BLOCKS} blocks", "EntityTooLarge")
            if not block_ids:
                result = await client.upload_blob(pending or b"", overwrite=True, length=len(pending or b""))
            else:
                if pending is not None:
                    block_ids.append(await self._stage(client, prefix, len(block_ids), pending))
                result = await client.commit_block_list(block_ids)
        except DataError:
            raise
        except Exception as exc:
            from azure.core.exceptions import AzureError
            if isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                raise self._error(f"PUT {blob}", exc) from exc
            raise   # the caller's own error from `chunks`: nothing was committed
        if not named:
            return blob
        etag = (result or {}).get("etag")
        if not etag:
            raise DataIntegrityError(f"azure PUT {blob}: no ETag in the answer")
        return naming.named_key(blob, etag)

    @staticmethod
    async def _stage(client: Any, prefix: str, index: int, data: bytes) -> str:
        block_id = _block_id(prefix, index)
        await client.stage_block(block_id, data, length=len(data))
        return block_id

    async def _stage_part(self, client: Any, blob: str, prefix: str, chunks: AsyncIterator[bytes],
                          size: int | None) -> str:
        """Stage a part as uncommitted blocks of the object's blob; its `b1:` key names them."""
        total = count = 0
        try:
            async for block in _blocks(chunks, BLOCK_BYTES):
                total += len(block)
                if size is not None and total > size:
                    raise DataIntegrityError(f"body longer than the announced {size} bytes", "IncompleteBody")
                await self._stage(client, prefix, count, block)
                count += 1
        except DataError:
            raise
        except Exception as exc:
            from azure.core.exceptions import AzureError
            if isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                raise self._error(f"PUT block of {blob}", exc) from exc
            raise
        if size is not None and total != size:
            raise DataIntegrityError(f"body of {total} bytes, {size} announced", "IncompleteBody")
        return naming.staged_key(prefix, count, total, blob)

    async def commit_parts(self, name: ObjectName, keys: list[str]) -> list[str] | None:
        """Commit the staged blocks of `keys` (parts, in order) as the object's blob: one block list."""
        staged = [naming.parse_staged_key(k) for k in keys]
        if not staged or any(s is None for s in staged):
            return None   # parts of their own (opaque layout): the object lists them
        blob = naming.remote_name(name, self.bucket_match)
        if any(s is not None and s[3] != blob for s in staged):
            raise DataIntegrityError(f"azure: parts staged on another blob than {blob!r}")
        from azure.storage.blob import BlobBlock, BlockState
        blocks = [BlobBlock(_block_id(s[0], i), BlockState.Latest) for s in staged if s is not None
                  for i in range(s[1])]
        if len(blocks) > MAX_BLOCKS:
            raise DataIntegrityError(f"azure: {len(blocks)} blocks, more than {MAX_BLOCKS} in one blob",
                                     "EntityTooLarge")
        try:
            result = await self._container().get_blob_client(blob).commit_block_list(blocks)
        except Exception as exc:
            from azure.core.exceptions import AzureError, HttpResponseError
            if isinstance(exc, HttpResponseError) and getattr(exc, "error_code", None) == "InvalidBlockList":
                from shared.errors import S3Error
                raise S3Error("InvalidPart", "The staged data of a part is gone from Azure: the object was "
                              "written while this upload was in progress. Upload the parts again.") from exc
            if isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                raise self._error(f"commit block list of {blob}", exc) from exc
            raise
        etag = (result or {}).get("etag")
        if not etag:
            raise DataIntegrityError(f"azure commit block list of {blob}: no ETag in the answer")
        out, offset = [], 0
        for s in staged:
            assert s is not None
            out.append(naming.piece_key(offset, s[2], etag, blob))
            offset += s[2]
        return out

    async def exists(self, key: str) -> bool:
        staged = naming.parse_staged_key(key)
        if staged is None:
            return await super().exists(key)
        nonce, count, _, blob = staged   # a staged part cannot be read: look its blocks up
        try:
            committed, uncommitted = await self._container().get_blob_client(blob).get_block_list("all")
        except Exception as exc:
            from azure.core.exceptions import AzureError
            if not isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                raise
            err = self._error(f"GET block list of {blob}", exc)
            if isinstance(err, DataNotFound):
                return False
            raise err from exc
        present = {b.id for b in committed} | {b.id for b in uncommitted}
        return all(_block_id(nonce, i) in present for i in range(count))

    # --- get ------------------------------------------------------------------------------------
    async def get(self, key: str, start: int | None = None, end: int | None = None) -> AsyncIterator[bytes]:
        check_range(start, end)
        if not self.valid_key(key):
            raise DataNotFound(f"no blob {key!r}", "ObjNotFound", 404)
        if naming.parse_staged_key(key) is not None:
            raise DataNotFound(f"azure: {key!r} is a part staged for an upload, not readable", "ObjNotFound", 404)
        blob, etag, base, length = self._address(key)
        kwargs: dict[str, Any] = {}
        if length is not None:   # a piece of a blob: its range within the piece, then within the blob
            first = start or 0
            if first >= length:
                raise DataRangeNotSatisfiable(f"range start {first} past piece size {length}", "InvalidRange", 416)
            last = length - 1 if end is None else min(end, length - 1)
            kwargs.update(offset=base + first, length=last - first + 1)
        elif start is not None or end is not None:
            kwargs["offset"] = start or 0
            if end is not None:
                kwargs["length"] = end - (start or 0) + 1
        if etag is not None:
            from azure.core import MatchConditions
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        yielded = False
        try:
            downloader = await self._container().get_blob_client(blob).download_blob(max_concurrency=1, **kwargs)
            async for chunk in downloader.chunks():
                if chunk:
                    yielded = True
                    yield chunk
            if not yielded and start:
                # The SDK answers a range starting at the blob's end with no bytes, not 416
                # (blobs are never empty: empty objects never reach a data store).
                raise DataRangeNotSatisfiable(f"azure GET {blob}: range start {start} at or past the end",
                                              "InvalidRange", 416)
        except DataError:
            raise
        except Exception as exc:
            from azure.core.exceptions import AzureError
            if isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                err = self._error(f"GET {blob}", exc)
                if yielded and not isinstance(err, DataUnavailable):
                    err = DataUnavailable(str(err), "ServiceUnavailable")
                raise err from exc
            raise

    # --- delete ---------------------------------------------------------------------------------
    async def delete(self, key: str) -> None:
        if not self.valid_key(key) or naming.parse_staged_key(key) is not None:
            return   # nothing of ours under it; or staged blocks, which Azure drops when not committed
        blob, etag, _, _ = self._address(key)
        kwargs: dict[str, Any] = {}
        if etag is not None:
            from azure.core import MatchConditions
            kwargs.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        try:
            await self._container().get_blob_client(blob).delete_blob(**kwargs)
        except Exception as exc:
            from azure.core.exceptions import AzureError
            if not isinstance(exc, (AzureError, OSError, asyncio.TimeoutError)):
                raise
            err = self._error(f"DELETE {blob}", exc)
            if isinstance(err, DataNotFound):
                return   # already gone, or replaced by a newer write (which is not ours to delete)
            raise err from exc

    # --- misc -----------------------------------------------------------------------------------
    async def keeps_versions(self) -> bool:
        return not self.named

    async def healthy(self) -> bool:
        """The container answers (reachable, exists, credentials good)."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                await self._container().get_container_properties()
            return True
        except Exception:
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _block_id(nonce: str, index: int) -> str:
    """Block ids of one blob must all have the same length: 16 hex digits and 6 decimal ones."""
    return base64.b64encode(f"{nonce}{index:06d}".encode()).decode()


async def _blocks(chunks: AsyncIterator[bytes], block_size: int) -> AsyncIterator[bytes]:
    """The bytes of `chunks` regrouped in blocks of `block_size` (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= block_size:
            yield bytes(buffer[:block_size])
            del buffer[:block_size]
    if buffer:
        yield bytes(buffer)
