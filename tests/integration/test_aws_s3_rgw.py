"""The aws_s3 backend against a real S3 server: Ceph RGW (../shared/tools/ceph-rgw/start.sh).

`make test_slow` (marked slow: the first start installs Ceph and takes minutes). The suite of
test_aws_s3_location.py (moto) runs here unchanged against RGW, in the opaque layout, plus the
named layout over a versioned RGW bucket: overwrites, versions, multipart (the gateway's and
the backend's own remote multipart upload) and ranged reads. RGW is started when it does not
answer yet, and stopped at the end only then. Without Ceph (no apt, start.sh failing) the
module is skipped with the reason.

Differences found against moto: none in behaviour this suite checks; RGW answers
CompleteMultipartUpload with an empty ETag (known, tools README) but does send
x-amz-version-id, which is all the named layout needs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from gateway.data.aws_s3 import MPU_PART_BYTES, AwsS3DataBackend
from gateway.data.base import DataNotFound, ObjectName
from shared.config import Location
from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, make_client
from tests.integration.test_aws_s3_location import (  # noqa: F401  (the moto suite, collected here too)
    LOCATION, REMOTE_BUCKET, chunks_of, read_all, test_aborted_multipart_upload_frees_its_remote_parts,
    test_copy_makes_an_independent_remote_copy, test_copy_moves_bytes_between_remote_and_local_locations,
    test_multipart_parts_land_remotely_and_complete_reads_them_in_order, test_overwrite_frees_the_old_remote_object,
    test_put_get_head_delete_keep_the_bytes_in_the_remote_bucket, test_range_reads_come_from_the_remote_object,
    test_versions_keep_their_own_remote_objects)
from tests.procs import REPO, Gateway, start_dmd, start_gateway

pytestmark = pytest.mark.slow

TOOLS = REPO.parent / "shared" / "tools" / "ceph-rgw"
RGW_PORT = int(os.environ.get("RGW_PORT", "7480"))
NAMED_BUCKET, NAMED_LOCATION = "pys3-named-remote", "rgwnamed"
START_TIMEOUT_S = 1200
MiB = 1024 * 1024


def rgw_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", RGW_PORT), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def rgw() -> Iterator[int]:
    started = False
    if not rgw_up():
        if not (TOOLS / "start.sh").exists():
            pytest.skip(f"no {TOOLS}/start.sh")
        done = subprocess.run(["bash", str(TOOLS / "start.sh")], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, env={**os.environ, "RGW_PORT": str(RGW_PORT)})
        if done.returncode != 0:
            pytest.skip(f"Ceph RGW could not be started: {done.stderr[-600:] or done.stdout[-600:]}")
        started = True
    yield RGW_PORT
    if started:
        subprocess.run(["bash", str(TOOLS / "stop.sh")], capture_output=True, timeout=120)


def rgw_location(port: int, bucket: str, **details: object) -> dict:
    return {"type": "aws_s3", "objectId": f"rgw-{bucket}", "legacyAwsBehavior": True,
            "details": {"awsEndpoint": f"127.0.0.1:{port}", "bucketName": bucket, "bucketMatch": False,
                        "https": False, "pathStyle": True,
                        "credentials": {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}, **details}}


def empty_bucket(client, bucket: str) -> None:
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture(scope="module")
def remote(rgw: int):
    client = make_client(f"http://127.0.0.1:{rgw}")
    for bucket in (REMOTE_BUCKET, NAMED_BUCKET):
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        empty_bucket(client, bucket)   # the moto suite counts what appears in the bucket
    client.put_bucket_versioning(Bucket=NAMED_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rgw")


@pytest.fixture(scope="module")
def aws_gateway(workdir: Path, rgw: int, remote) -> Iterator[Gateway]:
    locations = json.loads((REPO / "locationConfig.json").read_text())
    locations[LOCATION] = rgw_location(rgw, REMOTE_BUCKET, dataLayout="opaque")
    locations[NAMED_LOCATION] = rgw_location(rgw, NAMED_BUCKET)
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
def s3(aws_gateway: Gateway):
    return make_client(aws_gateway.url)


@pytest.fixture
def aws_bucket(s3) -> str:
    name = f"rgw-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": LOCATION})
    return name


@pytest.fixture
def named_bucket(s3) -> str:
    name = f"rgwn-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": NAMED_LOCATION})
    return name


def versions(remote, prefix: str) -> list[bytes]:
    out = []
    for v in remote.list_object_versions(Bucket=NAMED_BUCKET, Prefix=prefix).get("Versions", []):
        out.append(remote.get_object(Bucket=NAMED_BUCKET, Key=v["Key"], VersionId=v["VersionId"])["Body"].read())
    return sorted(out)


# --- the named layout on RGW --------------------------------------------------------------------

def test_named_objects_overwrites_and_versions_on_rgw(s3, remote, named_bucket):
    body = os.urandom(200_000)
    s3.put_object(Bucket=named_bucket, Key="dir/a", Body=body)
    assert versions(remote, f"{named_bucket}/dir/a") == [body]   # under "<bucket>/<key>"
    assert s3.get_object(Bucket=named_bucket, Key="dir/a", Range="bytes=1000-1999")["Body"].read() == body[1000:2000]
    s3.put_object(Bucket=named_bucket, Key="dir/a", Body=b"replaced")
    assert versions(remote, f"{named_bucket}/dir/a") == [b"replaced"]   # the replaced version was freed
    assert s3.get_object(Bucket=named_bucket, Key="dir/a")["Body"].read() == b"replaced"

    s3.put_bucket_versioning(Bucket=named_bucket, VersioningConfiguration={"Status": "Enabled"})
    v2 = s3.put_object(Bucket=named_bucket, Key="dir/a", Body=b"second")["VersionId"]
    assert versions(remote, f"{named_bucket}/dir/a") == [b"replaced", b"second"]
    s3.delete_object(Bucket=named_bucket, Key="dir/a", VersionId=v2)
    assert versions(remote, f"{named_bucket}/dir/a") == [b"replaced"]
    assert s3.get_object(Bucket=named_bucket, Key="dir/a")["Body"].read() == b"replaced"
    s3.delete_object(Bucket=named_bucket, Key="dir/a", VersionId="null")
    assert versions(remote, f"{named_bucket}/dir/a") == []


def test_named_multipart_through_the_gateway_on_rgw(s3, remote, named_bucket):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(777)]
    upload = s3.create_multipart_upload(Bucket=named_bucket, Key="mpu")["UploadId"]
    etags = [s3.upload_part(Bucket=named_bucket, Key="mpu", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=named_bucket, Key="mpu", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    whole = b"".join(parts)
    assert s3.get_object(Bucket=named_bucket, Key="mpu")["Body"].read() == whole
    got = s3.get_object(Bucket=named_bucket, Key="mpu", Range=f"bytes={5 * MiB - 3}-{5 * MiB + 2}")["Body"].read()
    assert got == whole[5 * MiB - 3:5 * MiB + 3]
    s3.delete_object(Bucket=named_bucket, Key="mpu")
    assert remote.list_object_versions(Bucket=NAMED_BUCKET, Prefix=named_bucket).get("Versions", []) == []


async def test_backend_remote_multipart_of_unknown_size_keeps_the_version_on_rgw(rgw, remote):
    location = rgw_location(rgw, NAMED_BUCKET)
    backend = AwsS3DataBackend(Location(NAMED_LOCATION, "aws_s3", NAMED_LOCATION, False, location["details"]))
    name = ObjectName(f"direct-{uuid.uuid4().hex[:8]}", "big")
    try:
        big = os.urandom(2 * MPU_PART_BYTES + 4321)
        key = await backend.put(chunks_of(big), None, name)   # size unknown: a remote multipart upload
        assert key.startswith("n1:") and key.endswith(f"{name.bucket}/big")
        assert await read_all(backend.get(key, MPU_PART_BYTES - 5, MPU_PART_BYTES + 4)) == \
            big[MPU_PART_BYTES - 5:MPU_PART_BYTES + 5]
        newer = await backend.put(chunks_of(b"newer"), 5, name)
        assert await read_all(backend.get(key)) == big   # the older version is still addressable
        await backend.delete(key)
        with pytest.raises(DataNotFound):
            await read_all(backend.get(key))
        assert await read_all(backend.get(newer)) == b"newer"
        await backend.delete(newer)
        assert versions(remote, f"{name.bucket}/") == []
    finally:
        await backend.close()
