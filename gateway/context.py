"""Per-process services (metadata client, data backends) and the per-request context."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, TypeVar

from gateway.models import ADMIN_OWNER, METASTORE, USERS_BUCKET, BucketInfo, now_iso
from shared import jsoncodec
from shared.config import Account, Config
from shared.errors import S3Error
from shared.log import get_logger, log_event
from shared.metastore.errors import MetadataError

if TYPE_CHECKING:
    from starlette.requests import Request

    from gateway.auth import AuthRequest, AuthResult
    from gateway.data.base import DataBackend
    from gateway.metadata.client import MetadataClient
    from gateway.router import Route


log = get_logger("gateway")
T = TypeVar("T")
SETUP_RETRY_S = 2.0


@dataclass
class Services:
    """What a gateway worker holds for its whole life: no S3 state, only connections."""
    config: Config
    metadata: "MetadataClient"
    data_backends: dict[str, "DataBackend"] = field(default_factory=dict)

    def data_for(self, location: str) -> "DataBackend":
        from gateway.data import make_data_backend
        backend = self.data_backends.get(location)
        if backend is None:
            loc = self.config.locations.get(location)
            if loc is None:
                raise S3Error("InvalidLocationConstraint")
            backend = self.data_backends[location] = make_data_backend(self.config, loc)
        return backend

    async def find_bucket(self, name: str) -> BucketInfo | None:
        """The bucket's attributes, or None if there is no such bucket (or only a deleted one)."""
        try:
            doc = jsoncodec.loads(await self.metadata.get([METASTORE], name, {}))
        except MetadataError as exc:
            if exc.type == "ObjNotFound":
                return None
            raise
        info = BucketInfo.from_doc(doc)
        return None if info.raw.get("deleted") else info

    async def setup(self) -> None:
        """Connect and (re)write the users..bucket attributes, as the original's
        start-up; a failed step is retried every 2 s (the dmd may start later)."""
        while True:
            try:
                await self.metadata.connect()
                info = BucketInfo(USERS_BUCKET, ADMIN_OWNER, ADMIN_OWNER, now_iso())
                await self.metadata.put([METASTORE], USERS_BUCKET, info.serialize(), {})
                return
            except Exception as exc:  # dmd not reachable yet: keep trying, as the original does
                log_event(log, logging.WARNING, "metadata setup failed, retrying", error=str(exc),
                          host=self.config.metadata_client.host, port=self.config.metadata_client.port)
                await asyncio.sleep(SETUP_RETRY_S)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.data_backends.values()), return_exceptions=True)
        await self.metadata.close()


@dataclass
class RequestContext:
    request: "Request"
    services: Services
    request_id: str
    route: "Route"
    bucket: str | None
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    auth: "AuthResult"
    auth_request: "AuthRequest"
    account: Account   # None only while PostObject authenticates from its form
    extra_log: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.services.config

    async def find_metadata(self, sublevel: list[str], key: str,
                            options: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A stored metadata document (object, version, upload overview, part), or None if absent."""
        try:
            return jsoncodec.loads(await self.services.metadata.get(sublevel, key, options or {}))
        except MetadataError as exc:
            if exc.type == "ObjNotFound":
                return None
            raise

    async def bucket_info(self, name: str | None = None) -> BucketInfo:
        """The bucket's attributes, or NoSuchBucket."""
        name = name or self.bucket
        assert name is not None
        info = await self.services.find_bucket(name)
        if info is None:
            raise S3Error("NoSuchBucket", BucketName=name)
        return info

    async def authorized_bucket_with(self, lookup: Awaitable[T]) -> tuple[BucketInfo, T]:
        """The authorized bucket and `lookup` (e.g. the object's metadata), fetched concurrently:
        one metadata round trip instead of two. The bucket's errors (NoSuchBucket,
        AccessDenied) win over the lookup's, as if the bucket had been checked first."""
        bucket_task = asyncio.ensure_future(self.authorized_bucket())
        lookup_task = asyncio.ensure_future(lookup)
        try:
            bucket = await bucket_task
        except BaseException:
            lookup_task.cancel()
            await asyncio.gather(lookup_task, return_exceptions=True)
            raise
        return bucket, await lookup_task

    async def authorized_bucket(self, name: str | None = None) -> BucketInfo:
        """The bucket, if this account may act on it (owner-only until ACLs land)."""
        info = await self.bucket_info(name)
        if info.owner != self.account.canonical_id:
            raise S3Error("AccessDenied")
        return info
