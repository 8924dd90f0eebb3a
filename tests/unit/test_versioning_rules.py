"""The S3 versioning rules without HTTP: writes and deletes over the in-memory store and data.

These are the calls a lifecycle worker or a scrub makes: plain arguments (services, bucket,
key, the acting account), no request.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.context import Services
from gateway.data import shared_memory_backend
from gateway.models import BucketMD, ObjectMD, new_object_md, now_iso
from gateway.objectdata import store_stream
from gateway.versioning import commit_new_object, delete_object, external_version_id
from shared.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def services():
    config = load_config({"S3BACKEND": "mem", "S3_CONFIG_FILE": str(ROOT / "config.json"),
                          "S3_LOCATION_FILE": str(ROOT / "locationConfig.json"),
                          "S3AUTH_CONFIG": str(ROOT / "conf" / "authdata.json")})
    services = Services.from_config(config)
    await services.setup()
    yield services
    await services.close()


@pytest.fixture
def owner(services):
    return services.config.accounts[0]


async def _bucket(services, owner, name: str, status: str | None) -> BucketMD:
    bucket = BucketMD(name, owner.canonical_id, owner.name, now_iso(),
                      versioning={"Status": status} if status else None)
    await services.store.create_bucket(bucket)
    return bucket


async def _write(services, owner, bucket: BucketMD, key: str, body: bytes) -> tuple[ObjectMD, str | None]:
    async def chunks():
        yield body
    locations = await store_stream(services, bucket.location, chunks(), len(body),
                                   lambda: (len(body), hashlib.md5(body).hexdigest()))
    md = new_object_md(key, owner.canonical_id, owner.name, size=len(body), md5=hashlib.md5(body).hexdigest(),
                       location=locations, data_store_name=bucket.location, headers={}, user_meta={})
    committed = await commit_new_object(services, bucket, key, md, locations)
    return md, committed.version_id


def _blob(md: ObjectMD) -> str:
    return md.location[0]["key"]


async def test_unversioned_overwrite_frees_the_replaced_data_after_the_commit(services, owner):
    bucket = await _bucket(services, owner, "plain", None)
    first, vid = await _write(services, owner, bucket, "k", b"one")
    assert vid is None
    second, _ = await _write(services, owner, bucket, "k", b"two")
    blobs = shared_memory_backend()._blobs
    assert _blob(first) not in blobs and _blob(second) in blobs
    assert (await services.store.get_object("plain", "k")).etag == hashlib.md5(b"two").hexdigest()


async def test_enabled_overwrite_keeps_every_version_and_the_pre_versioning_master_as_null(services, owner):
    bucket = await _bucket(services, owner, "ver", None)
    pre, _ = await _write(services, owner, bucket, "k", b"before")
    bucket.versioning = {"Status": "Enabled"}
    await services.store.put_bucket(bucket)
    new, vid = await _write(services, owner, bucket, "k", b"after")
    assert vid is not None
    master = await services.store.get_object("ver", "k")
    assert master.etag == new.etag and master.null_version_id
    null = await services.store.get_object("ver", "k", master.null_version_id)
    assert null.is_null and null.etag == pre.etag
    assert _blob(pre) in shared_memory_backend()._blobs   # still referenced by the null version


async def test_suspended_overwrite_replaces_only_the_null_version(services, owner):
    bucket = await _bucket(services, owner, "sus", "Enabled")
    kept, kept_vid = await _write(services, owner, bucket, "k", b"versioned")
    bucket.versioning = {"Status": "Suspended"}
    null1, _ = await _write(services, owner, bucket, "k", b"null-1")
    null2, _ = await _write(services, owner, bucket, "k", b"null-2")
    blobs = shared_memory_backend()._blobs
    assert _blob(null1) not in blobs and _blob(null2) in blobs and _blob(kept) in blobs
    assert (await services.store.get_object("sus", "k", kept_vid)).etag == kept.etag
    assert (await services.store.get_object("sus", "k")).is_null


async def test_delete_without_version_adds_a_marker_and_deleting_versions_frees_their_data(services, owner):
    bucket = await _bucket(services, owner, "del", "Enabled")
    md, vid = await _write(services, owner, bucket, "k", b"data")
    marked = await delete_object(services, bucket, "k", None, owner)
    assert marked.delete_marker and marked.version_id
    assert (await services.store.get_object("del", "k")).is_delete_marker
    removed = await delete_object(services, bucket, "k", external_version_id(md, vid), owner)
    assert not removed.delete_marker
    assert _blob(md) not in shared_memory_backend()._blobs
    unmarked = await delete_object(services, bucket, "k", marked.version_id, owner)
    assert unmarked.delete_marker
    assert not await services.store.bucket_has_versions("del")


async def test_a_refused_commit_frees_the_new_data_and_leaves_metadata_alone(services, owner):
    bucket = await _bucket(services, owner, "cond", None)
    old, _ = await _write(services, owner, bucket, "k", b"old")

    async def chunks():
        yield b"new"
    locations = await store_stream(services, bucket.location, chunks(), 3, lambda: (3, "x"))

    def refuse(current):
        raise RuntimeError("precondition")
    md = new_object_md("k", owner.canonical_id, owner.name, size=3, md5="x", location=locations,
                       data_store_name=bucket.location, headers={}, user_meta={})
    with pytest.raises(RuntimeError):
        await commit_new_object(services, bucket, "k", md, locations, refuse)
    assert locations[0]["key"] not in shared_memory_backend()._blobs
    assert (await services.store.get_object("cond", "k")).etag == old.etag
