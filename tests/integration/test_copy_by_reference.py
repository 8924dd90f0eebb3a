"""CopyObject by reference on the dmd data store (issue 18): a copy whose bytes need no change is
a hard link of the source blob under a new key (`POST /DataFile/<key>?copy`), never a second
stream of the bytes; deleting either name leaves the other readable.

Real dmd + gateway processes (a dmd and gateway of this module's own, so blob files, inodes and
the scrub see only what these tests made), plus the /DataFile app in process for the protocol."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
from botocore.exceptions import ClientError

from dmd.data import DataFileStore, make_data_server
from gateway.data.dmd import DmdDataBackend
from tests.integration.conftest import make_client
from tests.integration.test_scrub import Env
from tests.procs import start_dmd, start_gateway

MiB = 1 << 20


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("copyref")
    dmd = start_dmd(tmp / "dmd")
    gw = start_gateway(tmp / "gw", dmd)
    try:
        yield Env(dmd, gw)
    finally:
        gw.stop()
        dmd.stop()


@pytest.fixture
def bucket(env: Env, request: pytest.FixtureRequest) -> str:
    name = f"cr-{os.urandom(6).hex()}"
    env.s3.create_bucket(Bucket=name)
    return name


def inode(env: Env, blob: str) -> int:
    return env.blob_path(blob).stat().st_ino


def body(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def assert_linked(env: Env, src: tuple[str, str], dst: tuple[str, str], src_version: str | None = None) -> None:
    """dst's one blob is a new name (another key) for src's blob file (the same inode)."""
    [a] = env.blob_keys(*src, src_version)
    [b] = env.blob_keys(*dst)
    assert a != b, "the copy must have a key of its own"
    assert inode(env, a) == inode(env, b), "the copy's blob is not a link of the source's"


def assert_streamed(env: Env, src: tuple[str, str], dst: tuple[str, str]) -> None:
    a = env.blob_keys(*src)
    [b] = env.blob_keys(*dst)
    assert b not in a and all(inode(env, k) != inode(env, b) for k in a)


# ---------------------------------------------------------------- freeing: the filesystem is the refcount

def test_copy_links_and_deleting_the_source_leaves_the_copy(env, bucket):
    s3, data = env.s3, os.urandom(3 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert_linked(env, (bucket, "src"), (bucket, "dst"))
    [src_blob] = env.blob_keys(bucket, "src")
    s3.delete_object(Bucket=bucket, Key="src")
    assert not env.blob_path(src_blob).exists(), "deleting the source frees its name"
    assert body(s3, bucket, "dst") == data
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ContentLength"] == len(data) and head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'


def test_overwriting_or_deleting_the_copy_leaves_the_source(env, bucket):
    s3, data = env.s3, os.urandom(MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    [copy_blob] = env.blob_keys(bucket, "dst")
    s3.put_object(Bucket=bucket, Key="dst", Body=b"new")
    assert not env.blob_path(copy_blob).exists(), "the overwrite frees the copy's name"
    assert body(s3, bucket, "src") == data
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src")
    s3.delete_object(Bucket=bucket, Key="dst2")
    assert body(s3, bucket, "src") == data and body(s3, bucket, "dst") == b"new"


def test_copy_onto_itself_with_replaced_metadata(env, bucket):
    s3, data = env.s3, os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data, Metadata={"a": "1"})
    [old] = env.blob_keys(bucket, "k")
    old_inode = inode(env, old)
    s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k", MetadataDirective="REPLACE",
                   Metadata={"b": "2"})
    [new] = env.blob_keys(bucket, "k")
    assert new != old and not env.blob_path(old).exists() and inode(env, new) == old_inode
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == data and got["Metadata"] == {"b": "2"}


def test_copy_across_buckets(env, bucket):
    s3, data = env.s3, os.urandom(70_000)
    other = f"cr-{os.urandom(6).hex()}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="a/src", Body=data)
    s3.copy_object(Bucket=other, Key="b/dst", CopySource=f"{bucket}/a/src")
    assert_linked(env, (bucket, "a/src"), (other, "b/dst"))
    s3.delete_object(Bucket=bucket, Key="a/src")
    assert body(s3, other, "b/dst") == data


def test_copy_of_an_old_version_by_version_id(env, bucket):
    s3 = env.s3
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"one" * 1000)["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"two" * 1000)
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src?versionId={v1}")
    assert r["CopySourceVersionId"] == v1
    assert_linked(env, (bucket, "src"), (bucket, "dst"), src_version=v1)
    s3.delete_object(Bucket=bucket, Key="src", VersionId=v1)   # the version, for good
    assert body(s3, bucket, "dst") == b"one" * 1000


# ---------------------------------------------------------------- what must still stream

def test_checksums_link_only_when_the_source_has_the_one_asked_for(env, bucket):
    s3, data = env.s3, os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ChecksumAlgorithm="SHA256")
    want = base64.b64encode(hashlib.sha256(data).digest()).decode()
    r = s3.copy_object(Bucket=bucket, Key="same", CopySource=f"{bucket}/src")
    assert r["CopyObjectResult"]["ChecksumSHA256"] == want
    assert_linked(env, (bucket, "src"), (bucket, "same"))
    assert s3.head_object(Bucket=bucket, Key="same", ChecksumMode="ENABLED")["ChecksumSHA256"] == want
    r = s3.copy_object(Bucket=bucket, Key="other", CopySource=f"{bucket}/src", ChecksumAlgorithm="CRC32")
    assert "ChecksumCRC32" in r["CopyObjectResult"]
    assert_streamed(env, (bucket, "src"), (bucket, "other"))
    assert body(s3, bucket, "other") == data


def test_multipart_source_streams_into_one_blob(env, bucket):
    s3, part = env.s3, os.urandom(5 * MiB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=n,
                                                      Body=part)["ETag"]} for n in (1, 2)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload={"Parts": parts})
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/mpu")
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(part + part).hexdigest()}"'
    assert_streamed(env, (bucket, "mpu"), (bucket, "dst"))
    assert body(s3, bucket, "dst") == part + part


def test_encrypted_copies_link_only_under_the_same_key_and_algorithm(env, bucket):
    s3, data = env.s3, os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="s3", Body=data, ServerSideEncryption="AES256")
    etag = s3.head_object(Bucket=bucket, Key="s3")["ETag"]
    r = s3.copy_object(Bucket=bucket, Key="s3-copy", CopySource=f"{bucket}/s3", ServerSideEncryption="AES256")
    assert r["ServerSideEncryption"] == "AES256" and r["CopyObjectResult"]["ETag"] == etag
    assert_linked(env, (bucket, "s3"), (bucket, "s3-copy"))
    s3.delete_object(Bucket=bucket, Key="s3")
    got = s3.get_object(Bucket=bucket, Key="s3-copy")
    assert got["Body"].read() == data and got["ServerSideEncryption"] == "AES256"
    # plaintext -> SSE-S3, SSE-S3 -> plaintext, SSE-S3 -> SSE-KMS: the bytes change, they stream
    s3.put_object(Bucket=bucket, Key="plain", Body=data)
    s3.copy_object(Bucket=bucket, Key="p-enc", CopySource=f"{bucket}/plain", ServerSideEncryption="AES256")
    assert_streamed(env, (bucket, "plain"), (bucket, "p-enc"))
    s3.copy_object(Bucket=bucket, Key="dec", CopySource=f"{bucket}/s3-copy")
    assert_streamed(env, (bucket, "s3-copy"), (bucket, "dec"))
    s3.copy_object(Bucket=bucket, Key="kms", CopySource=f"{bucket}/s3-copy", ServerSideEncryption="aws:kms")
    assert_streamed(env, (bucket, "s3-copy"), (bucket, "kms"))
    for key in ("p-enc", "dec", "kms"):
        assert body(s3, bucket, key) == data


def test_upload_part_copy_of_a_whole_object_links(env, bucket):
    s3, data = env.s3, os.urandom(5 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    whole = s3.upload_part_copy(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=1,
                                CopySource=f"{bucket}/src")["CopyPartResult"]["ETag"]
    ranged = s3.upload_part_copy(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=2, CopySource=f"{bucket}/src",
                                 CopySourceRange="bytes=0-99")["CopyPartResult"]["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": whole}, {"PartNumber": 2, "ETag": ranged}]})
    first, second = env.blob_keys(bucket, "mpu")
    [src_blob] = env.blob_keys(bucket, "src")
    assert inode(env, first) == inode(env, src_blob) != inode(env, second)
    s3.delete_object(Bucket=bucket, Key="src")
    assert body(s3, bucket, "mpu") == data + data[:100]


def test_the_scrub_sees_each_name_referenced_by_its_object(env, bucket):
    s3, data = env.s3, os.urandom(50_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    for i in range(3):
        s3.copy_object(Bucket=bucket, Key=f"c{i}", CopySource=f"{bucket}/src")
    [src_blob] = env.blob_keys(bucket, "src")
    s3.delete_object(Bucket=bucket, Key="src")
    copies = {k for i in range(3) for k in env.blob_keys(bucket, f"c{i}")}
    assert len(copies) == 3 and src_blob not in copies
    code, report, err = env.scrub("--verify-data", "--grace-seconds", "0")
    assert report is not None, err
    # Each name is a blob referenced by exactly its object: none missing, none orphaned, each
    # of the right size and MD5. (Only this bucket's entries count: the module's other tests run before it.)
    for kind in ("missingData", "sizeMismatch", "md5Mismatch"):
        ours = [e for e in report.get(kind) or [] if e.get("bucket") == bucket]
        assert not ours, (kind, ours)
    orphans = {o["blob"] for o in report.get("orphanBlobs") or []}
    assert not copies & orphans, report


# ---------------------------------------------------------------- a crash right after the answer

def test_copy_survives_a_dmd_sigkill_right_after_it_is_acknowledged(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd")
    gw = start_gateway(tmp_path / "gw", dmd)
    try:
        s3 = make_client(gw.url, retries={"max_attempts": 8, "mode": "standard"})
        s3.create_bucket(Bucket="bkt")
        data = os.urandom(2 * MiB)
        s3.put_object(Bucket="bkt", Key="src", Body=data)
        for i in range(5):
            s3.copy_object(Bucket="bkt", Key=f"c{i}", CopySource="bkt/src")
        dmd.kill()   # SIGKILL
        dmd.start()
        s3.delete_object(Bucket="bkt", Key="src")
        for i in range(5):
            assert body(s3, "bkt", f"c{i}") == data
    finally:
        gw.stop()
        dmd.stop()


# ---------------------------------------------------------------- a dmd without the call: streaming

def test_a_dmd_without_the_copy_call_makes_the_gateway_stream(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd", env={"DMD_DATA_NO_COPY": "true"})
    gw = start_gateway(tmp_path / "gw", dmd)
    try:
        env = Env(dmd, gw)
        s3, data = env.s3, os.urandom(MiB + 1)
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="src", Body=data)
        for i in range(2):   # the second after the gateway learnt the call is missing
            r = s3.copy_object(Bucket="bkt", Key=f"c{i}", CopySource="bkt/src")
            assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
            assert_streamed(env, ("bkt", "src"), ("bkt", f"c{i}"))
        s3.delete_object(Bucket="bkt", Key="src")
        assert body(s3, "bkt", "c0") == data and body(s3, "bkt", "c1") == data

        async def backend_learns() -> tuple[str | None, bool]:
            backend = DmdDataBackend("127.0.0.1", dmd.data_port, "us-east-1")
            try:
                key = await backend.put(_once(b"x"), 1)
                return await backend.copy_blob(key), backend.copy_supported
            finally:
                await backend.close()
        assert asyncio.run(backend_learns()) == (None, False)
    finally:
        gw.stop()
        dmd.stop()


async def _once(data: bytes):
    yield data


# ---------------------------------------------------------------- the /DataFile call itself, in process

async def _with_app(tmp: Path, secret: str, fn, **kwargs):
    store = DataFileStore(tmp)
    await store.setup()
    runner = aiohttp.web.ServerRunner(make_data_server(store, secret=secret, **kwargs))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            return await fn(session, store)
    finally:
        await runner.cleanup()


def test_datafile_copy_call(tmp_path: Path):
    headers = {"x-dmd-secret": "s3cret"}

    async def scenario(session: aiohttp.ClientSession, store: DataFileStore):
        async with session.put("/DataFile", data=b"hello", headers=headers) as r:
            assert r.status == 201
            key = r.headers["Location"].rsplit("/", 1)[1]
        async with session.post(f"/DataFile/{key}?copy", headers=headers) as r:
            assert r.status == 201 and r.headers["Location"].startswith("/DataFile/")
            new = r.headers["Location"].rsplit("/", 1)[1]
        assert new != key and store.path_for(new).stat().st_ino == store.path_for(key).stat().st_ino
        async with session.delete(f"/DataFile/{key}", headers=headers) as r:
            assert r.status == 204
        async with session.get(f"/DataFile/{new}", headers=headers) as r:
            assert r.status == 200 and await r.read() == b"hello"
        async with session.post(f"/DataFile/{key}?copy", headers=headers) as r:   # gone
            assert r.status == 404 and (await r.json(content_type=None))["errorType"] == "ObjNotFound"
        async with session.post(f"/DataFile/{new}?copy") as r:                      # no secret
            assert r.status == 401
        async with session.post(f"/DataFile/{new}?copy", headers={"x-dmd-secret": "other"}) as r:
            assert r.status == 403
        for bad in ("/DataFile?copy", "/DataFile/abc?copy", f"/Other/{new}?copy"):
            async with session.post(bad, headers=headers) as r:
                assert r.status == 400, bad
        for other in ("/DataFile", f"/DataFile/{new}", f"/DataFile/{new}?copy=1"):   # the original's 405
            async with session.post(other, headers=headers) as r:
                assert r.status == 405, other
        return True

    assert asyncio.run(_with_app(tmp_path / "a", "s3cret", scenario))

    async def disabled(session: aiohttp.ClientSession, store: DataFileStore):
        async with session.put("/DataFile", data=b"x") as r:
            key = r.headers["Location"].rsplit("/", 1)[1]
        async with session.post(f"/DataFile/{key}?copy") as r:
            return r.status, r.headers.get("Allow")

    # As the original answers (no POST at all), and with only the batch delete left (POST allowed).
    assert asyncio.run(_with_app(tmp_path / "b", "", disabled, copy_enabled=False,
                                 delete_many_enabled=False)) == (405, "GET, PUT, DELETE")
    assert asyncio.run(_with_app(tmp_path / "c", "", disabled, copy_enabled=False)) == (405, "GET, PUT, DELETE, POST")


def test_copy_of_a_missing_source_blob_is_an_error_not_a_copy(env, bucket):
    """The source object's blob gone from under it (damage): no object is made pointing nowhere."""
    s3 = env.s3
    s3.put_object(Bucket=bucket, Key="src", Body=b"data")
    [blob] = env.blob_keys(bucket, "src")
    env.blob_path(blob).unlink()
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="dst")
    s3.delete_object(Bucket=bucket, Key="src")   # leave no damage behind for the scrub test
