"""Per-process services (the store layer, data backends) and the per-request context."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.metadata.client import request_uids
from gateway.models import BucketMD, ObjectMD
from gateway.store import Store
from shared.config import Account, Config
from shared.errors import S3Error
from shared.log import get_logger, log_event

if TYPE_CHECKING:
    from starlette.requests import Request

    from gateway.auth import AuthRequest, AuthResult
    from gateway.data.base import DataBackend
    from gateway.router import Route


log = get_logger("gateway")
SETUP_RETRY_S = 2.0


@dataclass
class Services:
    """What a gateway worker holds for its whole life: no S3 state, only connections."""
    config: Config
    store: Store
    data_backends: dict[str, "DataBackend"] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> "Services":
        """The store the configuration names; data backends are made on first use."""
        return cls(config, Store.from_config(config))

    def data_for(self, location: str) -> "DataBackend":
        """The backend of a location name, or of a stored dataStoreName the original wrote (its
        backend type, "file": gateway.data.location_serving); one backend per location."""
        from gateway.data import location_serving, make_data_backend
        backend = self.data_backends.get(location)
        if backend is None:
            loc = location_serving(self.config, location)
            if loc is None:
                raise S3Error("InvalidLocationConstraint")
            backend = self.data_backends.get(loc.name) or make_data_backend(self.config, loc)
            self.data_backends[loc.name] = self.data_backends[location] = backend
        return backend

    async def setup(self) -> None:
        """Connect and prepare the store; a failed step is retried every 2 s (the dmd may start later),
        as the original does."""
        while True:
            try:
                await self.store.connect()
                await self.store.setup()
                return
            except Exception as exc:  # dmd not reachable yet: keep trying, as the original does
                log_event(log, logging.WARNING, "metadata setup failed, retrying", error=str(exc),
                          host=self.config.metadata_client.host, port=self.config.metadata_client.port)
                await asyncio.sleep(SETUP_RETRY_S)

    async def close(self) -> None:
        unique = {id(b): b for b in self.data_backends.values()}.values()   # a backend may serve two names
        await asyncio.gather(*(b.close() for b in unique), return_exceptions=True)
        await self.store.close()


@dataclass
class RequestContext:
    """One S3 request as the handlers see it: parsed, authenticated, its bucket loaded and authorized
    by the pipeline (gateway/app.py)."""
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
    account: Account   # None for anonymous requests (and while PostObject authenticates from its form)
    target_bucket: BucketMD | None = None    # the request's bucket, set by the pipeline
    # The current version of the request's key, fetched by the pipeline alongside the bucket (GET/HEAD).
    prefetched_object: "asyncio.Future[ObjectMD | None] | None" = None
    extra_log: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The metadata calls made for this request carry its id as reqUids, as the original's do
        # (set in the request's own task: tasks it starts inherit it).
        request_uids.set(self.request_id)

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def bucket_md(self) -> BucketMD:
        """The request's bucket (every bucket and object action but CreateBucket has one)."""
        assert self.target_bucket is not None, f"{self.route.action} has no loaded bucket"
        return self.target_bucket

    async def current_object(self) -> ObjectMD | None:
        """The current version (master) of the request's key, or None."""
        if self.prefetched_object is not None:
            prefetched, self.prefetched_object = self.prefetched_object, None
            return await prefetched
        return await self.store.get_object(self.bucket_md.name, self.key or "")
