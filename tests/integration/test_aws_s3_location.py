"""An "aws_s3" location: object data in a remote S3 bucket, metadata in the dmd as usual.

The remote S3 is a real `moto_server` process; the gateway and dmd are the real
processes of tests/procs.py, started with a location file that adds
  - "awsbackend": the moto bucket (path-style, http);
  - "awsflaky":   a second moto that only runs inside the outage test (down otherwise).
What lands in the remote bucket is checked with boto3 straight against moto.

moto does not check signatures, so the signer is proven against our own gateway,
which does: an AwsS3DataBackend whose "remote S3" is the gateway itself.
"""
from __future__ import annotations

import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest
from botocore.exceptions import ClientError

from gateway.data import DataError, DataNotFound, DataRangeNotSatisfiable, DataUnavailable, make_data_backend
from gateway.data.aws_s3 import (MPU_PART_BYTES, AwsS3DataBackend, resolve_credentials, split_endpoint,
                                 validate_aws_s3_details)
from shared.config import Location, load_config
from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, make_client
from tests.procs import REPO, Gateway, Proc, free_port, start_dmd, start_gateway

REMOTE_BUCKET = "remote-data"
LOCATION, FLAKY_LOCATION = "awsbackend", "awsflaky"
MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
KEY_RE = re.compile(r"[0-9a-f]{40}")


# --- processes ----------------------------------------------------------------------------------

def start_moto(tmp: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return Proc([MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], env, [port], tmp / f"moto-{port}.log").start()


def remote_client(moto: Proc):
    return make_client(f"http://127.0.0.1:{moto.ports[0]}", "a", "b")


def aws_location(port: int) -> dict:
    return {"type": "aws_s3", "objectId": f"aws-{port}", "legacyAwsBehavior": True,
            "details": {"awsEndpoint": f"127.0.0.1:{port}", "bucketName": REMOTE_BUCKET, "bucketMatch": False,
                        "https": False, "pathStyle": True, "credentials": {"accessKey": "a", "secretKey": "b"},
                        "dataLayout": "opaque"}}   # this file checks the opaque layout (named: test_data_locations.py)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("aws_s3")


@pytest.fixture(scope="module")
def moto(workdir: Path) -> Iterator[Proc]:
    proc = start_moto(workdir)
    remote_client(proc).create_bucket(Bucket=REMOTE_BUCKET)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def flaky_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def aws_gateway(workdir: Path, moto: Proc, flaky_port: int) -> Iterator[Gateway]:
    locations = json.loads((REPO / "locationConfig.json").read_text())
    locations[LOCATION] = aws_location(moto.ports[0])
    locations[FLAKY_LOCATION] = aws_location(flaky_port)
    location_file = workdir / "locationConfig.json"
    location_file.write_text(json.dumps(locations, indent=2))
    dmd = start_dmd(workdir / "dmd")
    try:
        gw = start_gateway(workdir / "gw", dmd, env={"S3_LOCATION_FILE": str(location_file)})
    except BaseException:
        dmd.stop()
        raise
    yield gw
    gw.stop()
    dmd.stop()


@pytest.fixture(scope="module")
def remote(moto: Proc):
    return remote_client(moto)


@pytest.fixture(scope="module")
def s3(aws_gateway: Gateway):
    return make_client(aws_gateway.url)


@pytest.fixture
def aws_bucket(s3) -> str:
    name = f"aws-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": LOCATION})
    return name


def remote_keys(remote) -> set[str]:
    keys: set[str] = set()
    for page in remote.get_paginator("list_objects_v2").paginate(Bucket=REMOTE_BUCKET):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def remote_body(remote, key: str) -> bytes:
    return remote.get_object(Bucket=REMOTE_BUCKET, Key=key)["Body"].read()


# --- S3 through the gateway, bytes in the remote bucket ----------------------------------------

def test_put_get_head_delete_keep_the_bytes_in_the_remote_bucket(s3, remote, aws_bucket):
    body = os.urandom(300_000)
    before = remote_keys(remote)
    etag = s3.put_object(Bucket=aws_bucket, Key="dir/obj", Body=body)["ETag"]
    (new_key,) = remote_keys(remote) - before
    assert KEY_RE.fullmatch(new_key)  # an opaque key, never the object name
    assert remote_body(remote, new_key) == body

    got = s3.get_object(Bucket=aws_bucket, Key="dir/obj")
    assert got["Body"].read() == body and got["ETag"] == etag
    head = s3.head_object(Bucket=aws_bucket, Key="dir/obj")
    assert head["ContentLength"] == len(body) and head["ETag"] == etag

    s3.delete_object(Bucket=aws_bucket, Key="dir/obj")
    assert new_key not in remote_keys(remote)
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=aws_bucket, Key="dir/obj")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"


def test_range_reads_come_from_the_remote_object(s3, aws_bucket):
    body = os.urandom(10_000)
    s3.put_object(Bucket=aws_bucket, Key="r", Body=body)
    for header, expected in (("bytes=10-99", body[10:100]), ("bytes=-50", body[-50:]),
                             ("bytes=9990-", body[9990:]), ("bytes=0-99999", body)):
        got = s3.get_object(Bucket=aws_bucket, Key="r", Range=header)
        assert got["Body"].read() == expected, header
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=aws_bucket, Key="r", Range="bytes=10000-")
    assert err.value.response["Error"]["Code"] == "InvalidRange"


def test_overwrite_frees_the_old_remote_object(s3, remote, aws_bucket):
    before = remote_keys(remote)
    s3.put_object(Bucket=aws_bucket, Key="k", Body=b"first version")
    (first,) = remote_keys(remote) - before
    s3.put_object(Bucket=aws_bucket, Key="k", Body=b"second version")
    (second,) = remote_keys(remote) - before
    assert second != first and remote_body(remote, second) == b"second version"
    assert s3.get_object(Bucket=aws_bucket, Key="k")["Body"].read() == b"second version"


def test_versions_keep_their_own_remote_objects(s3, remote, aws_bucket):
    s3.put_bucket_versioning(Bucket=aws_bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=aws_bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=aws_bucket, Key="v", Body=b"two")["VersionId"]
    assert s3.get_object(Bucket=aws_bucket, Key="v", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=aws_bucket, Key="v", VersionId=v2)["Body"].read() == b"two"
    before = remote_keys(remote)
    s3.delete_object(Bucket=aws_bucket, Key="v", VersionId=v1)
    assert len(before - remote_keys(remote)) == 1  # only v1's bytes went
    assert s3.get_object(Bucket=aws_bucket, Key="v")["Body"].read() == b"two"


def test_multipart_parts_land_remotely_and_complete_reads_them_in_order(s3, remote, aws_bucket):
    parts = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(1000)]
    before = remote_keys(remote)
    upload = s3.create_multipart_upload(Bucket=aws_bucket, Key="mpu")["UploadId"]
    etags = [s3.upload_part(Bucket=aws_bucket, Key="mpu", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, 1)]
    part_keys = remote_keys(remote) - before
    assert sorted(len(remote_body(remote, k)) for k in part_keys) == sorted(len(p) for p in parts)
    s3.complete_multipart_upload(Bucket=aws_bucket, Key="mpu", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})

    whole = b"".join(parts)
    assert s3.get_object(Bucket=aws_bucket, Key="mpu")["Body"].read() == whole
    across = s3.get_object(Bucket=aws_bucket, Key="mpu", Range=f"bytes={len(parts[0]) - 10}-{len(parts[0]) + 9}")
    assert across["Body"].read() == whole[len(parts[0]) - 10:len(parts[0]) + 10]
    s3.delete_object(Bucket=aws_bucket, Key="mpu")
    assert not part_keys & remote_keys(remote)


def test_aborted_multipart_upload_frees_its_remote_parts(s3, remote, aws_bucket):
    before = remote_keys(remote)
    upload = s3.create_multipart_upload(Bucket=aws_bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=aws_bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"x" * 1000)
    assert len(remote_keys(remote) - before) == 1
    s3.abort_multipart_upload(Bucket=aws_bucket, Key="gone", UploadId=upload)
    assert remote_keys(remote) - before == set()


def test_copy_makes_an_independent_remote_copy(s3, remote, aws_bucket):
    body = os.urandom(50_000)
    s3.put_object(Bucket=aws_bucket, Key="src", Body=body)
    before = remote_keys(remote)
    s3.copy_object(Bucket=aws_bucket, Key="dst", CopySource={"Bucket": aws_bucket, "Key": "src"})
    (copied,) = remote_keys(remote) - before
    assert remote_body(remote, copied) == body
    s3.delete_object(Bucket=aws_bucket, Key="src")
    assert s3.get_object(Bucket=aws_bucket, Key="dst")["Body"].read() == body


def test_copy_moves_bytes_between_remote_and_local_locations(s3, remote, aws_bucket):
    local = f"local-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=local)
    body = os.urandom(20_000)
    s3.put_object(Bucket=local, Key="f", Body=body)
    before = remote_keys(remote)
    s3.copy_object(Bucket=aws_bucket, Key="from-file", CopySource={"Bucket": local, "Key": "f"})
    (copied,) = remote_keys(remote) - before
    assert remote_body(remote, copied) == body
    s3.copy_object(Bucket=local, Key="back", CopySource={"Bucket": aws_bucket, "Key": "from-file"})
    assert s3.get_object(Bucket=local, Key="back")["Body"].read() == body
    assert remote_keys(remote) - before == {copied}  # the copy back stored nothing remotely


def test_remote_outage_answers_503_and_writes_nothing(s3, aws_bucket, workdir, flaky_port):
    flaky = f"flaky-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=flaky, CreateBucketConfiguration={"LocationConstraint": FLAKY_LOCATION})
    moto = start_moto(workdir, flaky_port)
    try:
        remote_client(moto).create_bucket(Bucket=REMOTE_BUCKET)
        etag = s3.put_object(Bucket=flaky, Key="k", Body=b"kept")["ETag"]
    finally:
        moto.stop()

    for call in (lambda: s3.put_object(Bucket=flaky, Key="k", Body=b"new"),
                 lambda: s3.put_object(Bucket=flaky, Key="other", Body=b"new"),
                 lambda: s3.get_object(Bucket=flaky, Key="k")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
    # Nothing half-written: the old version is still current and no new key appeared.
    assert s3.head_object(Bucket=flaky, Key="k")["ETag"] == etag
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=flaky)["Contents"]] == ["k"]


def test_deep_healthcheck_reports_each_remote_location(aws_gateway):
    r = httpx.get(f"{aws_gateway.url}/_/healthcheck/deep", timeout=30)
    body = r.json()
    assert body[LOCATION] == {"code": 200, "message": "OK"}
    assert body[FLAKY_LOCATION] == {"error": "unreachable"}  # its moto runs only inside the outage test
    assert r.status_code == 500


# --- the backend alone --------------------------------------------------------------------------

def backend_for(port: int, bucket: str, **details: object) -> AwsS3DataBackend:
    base = {"awsEndpoint": f"127.0.0.1:{port}", "bucketName": bucket, "https": False,
            "credentials": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}}
    return AwsS3DataBackend(Location("remote", "aws_s3", "remote", True, {**base, **details}))


async def chunks_of(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos:pos + size]


async def read_all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in it])


async def test_signatures_are_accepted_by_a_signature_checking_s3(s3, aws_gateway):
    # Our gateway checks SigV4 (moto does not): use it as the "remote S3".
    bucket = f"sig-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    backend = backend_for(aws_gateway.port, bucket)
    try:
        assert await backend.healthy()
        data = os.urandom(100_000)
        key = await backend.put(chunks_of(data, 7000), len(data))
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert await read_all(backend.get(key, 5, 99)) == data[5:100]
        # Size unknown (a browser POST): buffered into parts, sent as a remote multipart upload.
        big = os.urandom(2 * MPU_PART_BYTES + 12345)
        big_key = await backend.put(chunks_of(big), None)
        assert await read_all(backend.get(big_key)) == big
        small_key = await backend.put(chunks_of(b"tiny"), None)
        assert await read_all(backend.get(small_key)) == b"tiny"
        for k in (key, big_key, small_key):
            await backend.delete(k)
            await backend.delete(k)  # already gone: not an error
        with pytest.raises(DataNotFound):
            await read_all(backend.get(key))
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        await backend.close()


async def test_a_wrong_secret_is_an_error_not_an_outage(s3, aws_gateway):
    bucket = f"sig-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    backend = backend_for(aws_gateway.port, bucket, credentials={"accessKey": ACCESS_KEY, "secretKey": "wrong"})
    try:
        assert not await backend.healthy()
        with pytest.raises(DataError) as err:
            await backend.put(chunks_of(b"data"), 4)
        assert not isinstance(err.value, (DataUnavailable, DataNotFound))
        assert err.value.status == 403 and err.value.code == "SignatureDoesNotMatch"
    finally:
        await backend.close()


async def test_backend_errors_map_to_data_errors(moto):
    backend = backend_for(moto.ports[0], REMOTE_BUCKET)
    missing_bucket = backend_for(moto.ports[0], "no-such-remote-bucket")
    down = backend_for(free_port(), REMOTE_BUCKET)
    try:
        key = await backend.put(chunks_of(b"0123456789"), 10)
        with pytest.raises(DataRangeNotSatisfiable):
            await read_all(backend.get(key, 10, 20))
        with pytest.raises(DataNotFound):
            await read_all(backend.get("0" * 40))
        with pytest.raises(DataNotFound):
            await read_all(backend.get("../not-a-key-this-backend-made"))
        with pytest.raises(DataUnavailable):
            await down.put(chunks_of(b"x"), 1)
        with pytest.raises(DataUnavailable):
            await read_all(down.get(key))
        assert not await down.healthy()
        assert not await missing_bucket.healthy()
        with pytest.raises(DataError) as err:  # a broken location, not a missing blob
            await missing_bucket.put(chunks_of(b"x"), 1)
        assert not isinstance(err.value, DataNotFound) and err.value.code == "NoSuchBucket"
        await backend.delete(key)
    finally:
        for b in (backend, missing_bucket, down):
            await b.close()


async def test_a_body_of_the_wrong_size_stores_nothing(moto, remote):
    backend = backend_for(moto.ports[0], REMOTE_BUCKET)
    before = remote_keys(remote)

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise ConnectionResetError("client went away")

    try:
        for body, size in ((chunks_of(b"short"), 10), (chunks_of(b"longer than said"), 4)):
            with pytest.raises(DataError) as err:
                await backend.put(body, size)
            assert err.value.code == "IncompleteBody"
        with pytest.raises(ConnectionResetError):  # the caller's own error comes back unchanged
            await backend.put(failing(), 5000)
        assert remote_keys(remote) == before
    finally:
        await backend.close()


async def test_a_failed_upload_of_unknown_size_leaves_no_object_nor_upload(moto, remote):
    backend = backend_for(moto.ports[0], REMOTE_BUCKET)
    before = remote_keys(remote)

    async def fails_after_two_parts() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(os.urandom(2 * MPU_PART_BYTES + 1)):
            yield chunk
        raise ConnectionResetError("client went away")

    try:
        with pytest.raises(ConnectionResetError):
            await backend.put(fails_after_two_parts(), None)
        assert remote_keys(remote) == before
        assert remote.list_multipart_uploads(Bucket=REMOTE_BUCKET).get("Uploads", []) == []
    finally:
        await backend.close()


# --- configuration ------------------------------------------------------------------------------

VALID = {"awsEndpoint": "s3.amazonaws.com", "bucketName": "zenkobucket", "credentials": {"accessKey": "a", "secretKey": "s"}}


@pytest.mark.parametrize("change, message", [
    ({"awsEndpoint": None}, "awsEndpoint' is required"),
    ({"awsEndpoint": "https://s3.amazonaws.com"}, "without a scheme"),
    ({"awsEndpoint": "host:99999"}, "port '99999'"),
    ({"awsEndpoint": "bad host"}, "not a host name"),
    ({"bucketName": ""}, "bucketName' is required"),
    ({"https": "false"}, "'details.https' must be a boolean"),
    ({"bucketMatch": 1}, "'details.bucketMatch' must be a boolean"),
    ({"region": 5}, "region"),
    ({"credentials": {"accessKey": "a"}}, "credentials' must be"),
    ({"credentialsProfile": "p"}, "not both"),
])
def test_invalid_details_are_refused_with_the_field_named(change, message):
    details = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_aws_s3_details(details)
    with pytest.raises(ValueError, match=re.escape(message)):
        AwsS3DataBackend(Location("x", "aws_s3", "x", False, details))


def test_credentials_come_from_details_then_profile_then_environment(tmp_path):
    creds_file = tmp_path / "credentials"
    creds_file.write_text("[zenko]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(creds_file), "AWS_ACCESS_KEY_ID": "EK",
           "AWS_SECRET_ACCESS_KEY": "ES"}
    assert resolve_credentials(VALID, env).access_key == "a"
    profile = {"credentialsProfile": "zenko"}
    assert (resolve_credentials(profile, env).access_key, resolve_credentials(profile, env).secret_key) == ("AK", "SK")
    assert resolve_credentials({}, env).access_key == "EK"
    with pytest.raises(ValueError, match="profile 'other' not found"):
        resolve_credentials({"credentialsProfile": "other"}, env)
    with pytest.raises(ValueError, match="no credentials"):
        resolve_credentials({}, {})
    # The home directory's file is the default.
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(creds_file.read_text())
    assert resolve_credentials(profile, {}, home=tmp_path).access_key == "AK"


def test_addressing_style_follows_the_details():
    def host_of(**details: object) -> tuple[str, bool, str]:
        b = AwsS3DataBackend(Location("x", "aws_s3", "x", False, {**VALID, **details}))
        return b.host, b.path_style, repr(b)

    assert host_of()[:2] == ("zenkobucket.s3.amazonaws.com", False)  # virtual-hosted by default, https
    assert host_of(pathStyle=True)[:2] == ("s3.amazonaws.com", True)
    assert host_of(awsEndpoint="10.0.0.5:9000")[:2] == ("10.0.0.5:9000", True)  # an address cannot carry a bucket
    assert host_of(bucketName="Not_DNS")[:2] == ("s3.amazonaws.com", True)
    assert host_of(awsEndpoint="s3.example.com:443")[0] == "zenkobucket.s3.example.com"  # default port left out
    assert host_of(awsEndpoint="s3.example.com:80", https=False)[0] == "zenkobucket.s3.example.com"
    assert "https://" in host_of()[2] and "http://" in host_of(https=False)[2]
    assert split_endpoint("[::1]:9000") == ("[::1]", 9000)


def test_make_data_backend_builds_the_aws_s3_backend(tmp_path):
    locations = json.loads((REPO / "locationConfig.json").read_text())
    locations["remote"] = {"type": "aws_s3", "objectId": "remote", "legacyAwsBehavior": False, "details": VALID}
    path = tmp_path / "locationConfig.json"
    path.write_text(json.dumps(locations))
    config = load_config({"S3_LOCATION_FILE": str(path)})
    backend = make_data_backend(config, config.locations["remote"])
    assert isinstance(backend, AwsS3DataBackend) and backend.location_name == "remote"
