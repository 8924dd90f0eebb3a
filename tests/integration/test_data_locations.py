"""S3DATA=multiple: one namespace whose objects live where their location says (issue 16).

Real processes: a dmd, a gateway, Azurite (npm `azurite`, in memory) and moto_server. The
location file adds to the repository's (us-east-1 and the other "file" regions):
  - "memloc":       type mem;
  - "awsnamed":     aws_s3 on moto, bucket `named-remote` (versioned), named layout, <bucket>/<key>;
  - "awsplain":     aws_s3 on moto, bucket `plain-remote` (NOT versioned), named layout;
  - "aznamed":      azure container `objects`, named layout, <bucket>/<key>;
  - "azmatch":      azure container `matched`, bucketMatch: <key>;
  - "azopaque":     azure container `opaque`, opaque layout (random keys; versions possible);
  - "azflaky":      azure on a second Azurite that a test stops and starts;
  - "otherdmd":     type file on a second dmd (details.host/port).
config.json's restEndpoints map `localhost` to "aznamed" (127.0.0.1 stays on us-east-1).
What the remote side holds is read directly with azure-storage-blob and boto3.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.azurite import AzuriteMissing, azure_location, azurite_bin, container_client, start_azurite
from tests.integration.conftest import make_client
from tests.integration.test_aws_s3_location import remote_client, start_moto
from tests.procs import REPO, Dmd, Gateway, Proc, free_port, start_dmd, start_gateway

HEADER = "x-amz-meta-scal-location-constraint"
CONTAINERS = ("objects", "matched", "opaque")
MiB = 1024 * 1024


def aws(port: int, bucket: str, **details: object) -> dict:
    return {"type": "aws_s3", "objectId": f"aws-{bucket}", "legacyAwsBehavior": False,
            "details": {"awsEndpoint": f"127.0.0.1:{port}", "bucketName": bucket, "bucketMatch": False,
                        "https": False, "pathStyle": True, "credentials": {"accessKey": "a", "secretKey": "b"},
                        **details}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("locations")


@pytest.fixture(scope="module")
def azurite(workdir: Path) -> Iterator[Proc]:
    try:
        azurite_bin()
    except AzuriteMissing as exc:
        pytest.skip(str(exc))
    proc = start_azurite(workdir / "azurite")
    for name in CONTAINERS:
        container_client(proc, name).create_container()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def flaky_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def moto(workdir: Path) -> Iterator[Proc]:
    proc = start_moto(workdir)
    client = remote_client(proc)
    client.create_bucket(Bucket="named-remote")
    client.put_bucket_versioning(Bucket="named-remote", VersioningConfiguration={"Status": "Enabled"})
    client.create_bucket(Bucket="plain-remote")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def other_dmd(workdir: Path) -> Iterator[Dmd]:
    d = start_dmd(workdir / "dmd2")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def gateway(workdir: Path, azurite: Proc, moto: Proc, flaky_port: int, other_dmd: Dmd) -> Iterator[Gateway]:
    locations = json.loads((REPO / "locationConfig.json").read_text())
    flaky = Proc([], {}, [flaky_port], workdir / "unused.log")
    locations.update({
        "memloc": {"type": "mem", "objectId": "memloc", "legacyAwsBehavior": False, "details": {}},
        "awsnamed": aws(moto.ports[0], "named-remote"),
        "awsplain": aws(moto.ports[0], "plain-remote"),
        "aznamed": azure_location(azurite, "objects"),
        "azmatch": azure_location(azurite, "matched", bucketMatch=True),
        "azopaque": azure_location(azurite, "opaque", dataLayout="opaque"),
        "azflaky": azure_location(flaky, "flaky"),
        "otherdmd": {"type": "file", "objectId": "otherdmd", "legacyAwsBehavior": False,
                     "details": {"host": "127.0.0.1", "port": other_dmd.data_port}},
    })
    location_file = workdir / "locationConfig.json"
    location_file.write_text(json.dumps(locations, indent=2))
    config = json.loads((REPO / "config.json").read_text())
    config["restEndpoints"] = {**config["restEndpoints"], "localhost": "aznamed"}
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps(config, indent=2))
    dmd = start_dmd(workdir / "dmd")
    try:
        gw = start_gateway(workdir / "gw", dmd, env={"S3_LOCATION_FILE": str(location_file), "S3DATA": "multiple",
                                                     "S3_CONFIG_FILE": str(config_file)})
    except BaseException:
        dmd.stop()
        raise
    yield gw
    gw.stop()
    dmd.stop()


@pytest.fixture(scope="module")
def s3(gateway: Gateway):
    return make_client(gateway.url)


@pytest.fixture(scope="module")
def remote(moto: Proc):
    return remote_client(moto)


@pytest.fixture
def bucket(s3) -> str:
    name = f"loc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)   # us-east-1: the dmd
    return name


def blobs(azurite: Proc, container: str, prefix: str | None = None) -> dict[str, bytes]:
    """Every blob of `container` (under `prefix`) with its bytes, read from Azurite directly."""
    client = container_client(azurite, container)
    return {b.name: client.download_blob(b.name).readall() for b in client.list_blobs(name_starts_with=prefix)}


def remote_versions(remote, bucket: str, prefix: str) -> list[tuple[str, str, bytes]]:
    """(key, version id, bytes) of every version under `prefix` of a moto bucket."""
    out = []
    for v in remote.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", []):
        body = remote.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        out.append((v["Key"], v["VersionId"], body))
    return out


def error_of(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"]["HTTPStatusCode"]


# --- placement ----------------------------------------------------------------------------------

def test_header_places_each_object_in_its_location_and_the_remote_holds_it_by_name(s3, azurite, remote, bucket):
    bodies = {loc: os.urandom(70_000) for loc in ("us-east-1", "memloc", "awsnamed", "aznamed")}
    for loc, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=f"k-{loc}", Body=body, Metadata={"scal-location-constraint": loc})
    s3.put_object(Bucket=bucket, Key="k-default", Body=b"on the bucket's location")
    for loc, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=f"k-{loc}")
        assert got["Body"].read() == body and got["Metadata"]["scal-location-constraint"] == loc
        ranged = s3.get_object(Bucket=bucket, Key=f"k-{loc}", Range="bytes=100-199")["Body"].read()
        assert ranged == body[100:200], loc
    # The cloud locations hold the objects under "<bucket>/<key>", usable from the cloud directly.
    assert blobs(azurite, "objects", bucket + "/") == {f"{bucket}/k-aznamed": bodies["aznamed"]}
    assert [(k, b) for k, _, b in remote_versions(remote, "named-remote", bucket + "/")] == \
        [(f"{bucket}/k-awsnamed", bodies["awsnamed"])]
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted([f"k-{loc}" for loc in bodies] + ["k-default"])

    for loc in bodies:
        s3.delete_object(Bucket=bucket, Key=f"k-{loc}")
    assert blobs(azurite, "objects", bucket + "/") == {}
    assert remote_versions(remote, "named-remote", bucket + "/") == []


def test_unknown_location_in_the_header_is_invalid_argument_and_stores_nothing(s3, azurite, bucket):
    before = blobs(azurite, "objects")
    for call in (lambda: s3.put_object(Bucket=bucket, Key="x", Body=b"data",
                                       Metadata={"scal-location-constraint": "nowhere"}),
                 lambda: s3.create_multipart_upload(Bucket=bucket, Key="x",
                                                    Metadata={"scal-location-constraint": "nowhere"})):
        assert error_of(call) == ("InvalidArgument", 400)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert blobs(azurite, "objects") == before


def test_bucket_location_constraint_places_objects_and_bucket_match_keeps_the_key(s3, azurite):
    name = f"match-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "azmatch"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "azmatch"
    key = f"dir/{uuid.uuid4().hex}.bin"
    body = os.urandom(10_000)
    s3.put_object(Bucket=name, Key=key, Body=body)
    assert blobs(azurite, "matched", key) == {key: body}   # bucketMatch: the key alone, no bucket prefix
    s3.delete_object(Bucket=name, Key=key)
    assert blobs(azurite, "matched", key) == {}


def test_a_bucket_without_constraint_goes_where_rest_endpoints_map_the_host(gateway, azurite):
    via_localhost = make_client(f"http://localhost:{gateway.port}")
    name = f"ep-{uuid.uuid4().hex[:12]}"
    via_localhost.create_bucket(Bucket=name)   # no body: the endpoint's location
    assert via_localhost.get_bucket_location(Bucket=name)["LocationConstraint"] == "aznamed"
    via_localhost.put_object(Bucket=name, Key="k", Body=b"to azure")
    assert blobs(azurite, "objects", f"{name}/") == {f"{name}/k": b"to azure"}
    # us-east-1 (127.0.0.1's location) is answered as an empty constraint, as AWS and CloudServer do
    other = f"ep-{uuid.uuid4().hex[:12]}"
    s3 = make_client(gateway.url)
    s3.create_bucket(Bucket=other)
    assert s3.get_bucket_location(Bucket=other)["LocationConstraint"] in (None, "")


def test_a_file_location_may_name_its_own_dmd(s3, other_dmd, bucket):
    before = {p for p in other_dmd.data_path.rglob("*") if p.is_file()}
    body = os.urandom(20_000)
    s3.put_object(Bucket=bucket, Key="far", Body=body, Metadata={"scal-location-constraint": "otherdmd"})
    new = [p for p in other_dmd.data_path.rglob("*") if p.is_file() and p not in before]
    assert [p.read_bytes() for p in new] == [body]   # the bytes are on the second dmd
    assert s3.get_object(Bucket=bucket, Key="far")["Body"].read() == body
    s3.delete_object(Bucket=bucket, Key="far")
    assert not any(p.exists() for p in new)


def test_overwrite_replaces_the_remote_object_and_frees_nothing_live(s3, azurite, bucket):
    for round_, body in enumerate((os.urandom(5000), os.urandom(9 * MiB), b"third, small")):
        s3.put_object(Bucket=bucket, Key="over", Body=body, Metadata={"scal-location-constraint": "aznamed"})
        assert blobs(azurite, "objects", f"{bucket}/over") == {f"{bucket}/over": body}, round_
        assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == body
    # Moving the object to another location frees the azure blob.
    s3.put_object(Bucket=bucket, Key="over", Body=b"now local")
    assert blobs(azurite, "objects", f"{bucket}/over") == {}
    assert s3.get_object(Bucket=bucket, Key="over")["Body"].read() == b"now local"


# --- multipart ----------------------------------------------------------------------------------

def uncommitted_blocks(azurite: Proc, container: str, blob: str) -> int:
    from azure.core.exceptions import ResourceNotFoundError
    try:
        _, uncommitted = container_client(azurite, container).get_blob_client(blob).get_block_list("uncommitted")
    except ResourceNotFoundError:
        return 0
    return len(uncommitted)


@pytest.mark.parametrize("sse", [None, "AES256"])
def test_multipart_on_azure_is_one_blob_committed_from_staged_blocks(s3, azurite, bucket, sse):
    source = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)   # on the dmd
    parts = [os.urandom(5 * MiB), None, os.urandom(1000)]
    before = set(blobs(azurite, "objects"))
    extra = {"ServerSideEncryption": sse} if sse else {}
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu", Metadata={"scal-location-constraint": "aznamed"},
                                        **extra)["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=1, Body=parts[0])["ETag"],
             s3.upload_part_copy(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=2, CopySource=f"{bucket}/src",
                                 CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]["ETag"],
             s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=3, Body=parts[2])["ETag"]]
    # The parts are staged blocks of the object's own blob (4 MiB blocks: 2 + 2 + 1), nothing committed yet.
    assert set(blobs(azurite, "objects")) == before
    assert uncommitted_blocks(azurite, "objects", f"{bucket}/mpu") == 5
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    whole = parts[0] + source[:5 * MiB] + parts[2]
    # One blob under the object's name, nothing else: Complete committed one block list, copied nothing.
    assert set(blobs(azurite, "objects")) - before == {f"{bucket}/mpu"}
    if sse is None:
        assert blobs(azurite, "objects", f"{bucket}/mpu") == {f"{bucket}/mpu": whole}
    assert s3.get_object(Bucket=bucket, Key="mpu")["Body"].read() == whole
    for first, last in ((5 * MiB - 10, 5 * MiB + 9), (0, 99), (10 * MiB + 10, 10 * MiB + 999), (4 * MiB, 6 * MiB)):
        got = s3.get_object(Bucket=bucket, Key="mpu", Range=f"bytes={first}-{last}")["Body"].read()
        assert got == whole[first:last + 1], (first, last)
    assert s3.get_object(Bucket=bucket, Key="mpu", PartNumber=2)["Body"].read() == source[:5 * MiB]
    s3.delete_object(Bucket=bucket, Key="mpu")
    assert set(blobs(azurite, "objects")) - before == set()


def test_aborted_upload_on_azure_commits_nothing(s3, azurite, bucket):
    before = blobs(azurite, "objects")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="gone",
                                        Metadata={"scal-location-constraint": "aznamed"})["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"x" * 1000)
    assert uncommitted_blocks(azurite, "objects", f"{bucket}/gone") == 1
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload)
    assert blobs(azurite, "objects") == before   # the staged blocks are Azure's to drop
    assert error_of(lambda: s3.get_object(Bucket=bucket, Key="gone")) == ("NoSuchKey", 404)


def test_a_write_of_the_key_during_an_azure_upload_leaves_object_and_blob_agreeing(s3, azurite, bucket):
    placed = {"scal-location-constraint": "aznamed"}
    upload = s3.create_multipart_upload(Bucket=bucket, Key="both", Metadata=placed)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="both", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    s3.put_object(Bucket=bucket, Key="both", Body=b"written meanwhile", Metadata=placed)
    try:
        s3.complete_multipart_upload(Bucket=bucket, Key="both", UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        expected = b"part"   # Azurite keeps the staged blocks: the Complete, the last write, wins (as on S3)
    except ClientError as err:
        # Azure drops a blob's uncommitted blocks when the blob is written: the Complete cannot commit them
        assert err.response["Error"]["Code"] == "InvalidPart"
        expected = b"written meanwhile"
        s3.abort_multipart_upload(Bucket=bucket, Key="both", UploadId=upload)
    assert s3.get_object(Bucket=bucket, Key="both")["Body"].read() == expected
    assert blobs(azurite, "objects", f"{bucket}/both") == {f"{bucket}/both": expected}


def test_multipart_on_opaque_azure_keeps_parts_as_blobs(s3, azurite, bucket):
    before = set(blobs(azurite, "opaque"))
    parts = [os.urandom(5 * MiB), os.urandom(100)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="o", Metadata={"scal-location-constraint": "azopaque"})
    etags = [s3.upload_part(Bucket=bucket, Key="o", UploadId=upload["UploadId"], PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="o", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert sorted(len(v) for k, v in blobs(azurite, "opaque").items() if k not in before) == [100, 5 * MiB]
    assert s3.get_object(Bucket=bucket, Key="o")["Body"].read() == b"".join(parts)
    s3.delete_object(Bucket=bucket, Key="o")
    assert set(blobs(azurite, "opaque")) == before


# --- copy between locations ---------------------------------------------------------------------

def test_copy_moves_the_bytes_between_locations_and_the_metadata_follows(s3, azurite, remote, bucket):
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="orig", Body=body, ContentType="text/x-test", Metadata={"color": "blue"})
    # dmd -> azure, by the header of a REPLACE copy
    s3.copy_object(Bucket=bucket, Key="on-azure", CopySource=f"{bucket}/orig", MetadataDirective="REPLACE",
                   ContentType="text/x-test", Metadata={"color": "blue", "scal-location-constraint": "aznamed"})
    assert blobs(azurite, "objects", f"{bucket}/on-azure") == {f"{bucket}/on-azure": body}
    # azure -> aws_s3
    s3.copy_object(Bucket=bucket, Key="on-aws", CopySource=f"{bucket}/on-azure", MetadataDirective="REPLACE",
                   ContentType="text/x-test", Metadata={"color": "blue", "scal-location-constraint": "awsnamed"})
    assert [b for _, _, b in remote_versions(remote, "named-remote", f"{bucket}/on-aws")] == [body]
    # aws_s3 -> another bucket with COPY: the source's metadata, its placement included, follows (as CloudServer)
    other = f"loc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.copy_object(Bucket=other, Key="copy", CopySource=f"{bucket}/on-aws")
    assert [b for _, _, b in remote_versions(remote, "named-remote", f"{other}/copy")] == [body]
    for b, k in ((bucket, "on-azure"), (bucket, "on-aws"), (other, "copy")):
        got = s3.get_object(Bucket=b, Key=k)
        assert got["Body"].read() == body and got["ContentType"] == "text/x-test"
        assert got["Metadata"]["color"] == "blue"
    # each copy is its own bytes: deleting the source leaves the copies
    s3.delete_object(Bucket=bucket, Key="on-azure")
    assert blobs(azurite, "objects", f"{bucket}/on-azure") == {}
    assert s3.get_object(Bucket=other, Key="copy")["Body"].read() == body


# --- versioning -------------------------------------------------------------------------------

def test_versions_on_aws_keep_remote_versions_and_deletes_free_the_right_one(s3, remote, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    placed = {"scal-location-constraint": "awsnamed"}
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one", Metadata=placed)["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"two", Metadata=placed)["VersionId"]
    assert sorted(b for _, _, b in remote_versions(remote, "named-remote", f"{bucket}/v")) == [b"one", b"two"]
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v2)["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="v")   # a delete marker: both versions stay
    assert len(remote_versions(remote, "named-remote", f"{bucket}/v")) == 2
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v1)
    assert [b for _, _, b in remote_versions(remote, "named-remote", f"{bucket}/v")] == [b"two"]
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v2)["Body"].read() == b"two"
    s3.delete_object(Bucket=bucket, Key="v", VersionId=v2)
    assert remote_versions(remote, "named-remote", f"{bucket}/v") == []


def test_versions_on_opaque_azure_and_refusal_on_named_azure(s3, azurite, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    # azure blobs keep no versions: a named azure location cannot hold a versioned bucket's objects
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="n", Body=b"x",
                                          Metadata={"scal-location-constraint": "aznamed"})) == ("NotImplemented", 501)
    placed = {"scal-location-constraint": "azopaque"}
    before = set(blobs(azurite, "opaque"))
    v1 = s3.put_object(Bucket=bucket, Key="o", Body=b"first", Metadata=placed)["VersionId"]
    s3.put_object(Bucket=bucket, Key="o", Body=b"second", Metadata=placed)
    assert sorted(v for k, v in blobs(azurite, "opaque").items() if k not in before) == [b"first", b"second"]
    s3.delete_object(Bucket=bucket, Key="o", VersionId=v1)
    assert [v for k, v in blobs(azurite, "opaque").items() if k not in before] == [b"second"]


def test_named_aws_location_over_an_unversioned_remote_bucket_is_refused_clearly(s3, remote, bucket):
    code, status = error_of(lambda: s3.put_object(Bucket=bucket, Key="p", Body=b"x",
                                                  Metadata={"scal-location-constraint": "awsplain"}))
    assert (code, status) == ("InvalidBucketState", 409)
    assert "Contents" not in remote.list_objects_v2(Bucket="plain-remote")


@pytest.mark.parametrize("location, refusal", [("awsplain", ("InvalidBucketState", 409)),
                                               ("aznamed", ("NotImplemented", 501)),
                                               ("awsnamed", None), ("azopaque", None)])
def test_enabling_versioning_needs_a_location_that_keeps_versions(s3, location, refusal):
    name = f"ver-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": location})
    enable = lambda: s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})  # noqa: E731
    if refusal is None:
        enable()
        assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    else:
        assert error_of(enable) == refusal
        assert "Status" not in s3.get_bucket_versioning(Bucket=name)


# --- a location down ----------------------------------------------------------------------------

def test_a_location_down_answers_503_for_its_objects_while_the_others_work(s3, gateway, bucket, workdir,
                                                                           flaky_port):
    flaky = start_azurite(workdir / "flaky", flaky_port)
    try:
        container_client(flaky, "flaky").create_container()
        s3.put_object(Bucket=bucket, Key="there", Body=b"on the flaky location",
                      Metadata={"scal-location-constraint": "azflaky"})
        s3.put_object(Bucket=bucket, Key="here", Body=b"on the dmd")
        health = httpx.get(f"{gateway.url}/_/healthcheck/deep", timeout=30)
        assert health.status_code == 200 and health.json()["azflaky"] == {"code": 200, "message": "OK"}
    finally:
        flaky.stop()
    for call in (lambda: s3.get_object(Bucket=bucket, Key="there"),
                 lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"x",
                                       Metadata={"scal-location-constraint": "azflaky"})):
        assert error_of(call) == ("ServiceUnavailable", 503)
    assert s3.get_object(Bucket=bucket, Key="here")["Body"].read() == b"on the dmd"
    s3.put_object(Bucket=bucket, Key="here2", Body=b"still writable", Metadata={"scal-location-constraint": "aznamed"})
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["here", "here2", "there"]
    health = httpx.get(f"{gateway.url}/_/healthcheck/deep", timeout=30)
    assert health.status_code == 500
    report = health.json()
    assert report["azflaky"] == {"error": "unreachable"}
    assert report["aznamed"]["code"] == 200 and report["us-east-1"]["code"] == 200 and report["memloc"]["code"] == 200
    # back up (Azurite in memory: a fresh, empty store): writes to it work again
    flaky = start_azurite(workdir / "flaky", flaky_port)
    try:
        container_client(flaky, "flaky").create_container()
        s3.put_object(Bucket=bucket, Key="new", Body=b"x", Metadata={"scal-location-constraint": "azflaky"})
        assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"x"
    finally:
        flaky.stop()


# --- configuration ------------------------------------------------------------------------------

def test_location_config_errors_name_the_field(tmp_path: Path):
    from gateway.data.azure import azure_details
    from shared.config import Location
    good = azure_location(Proc([], {}, [10000], tmp_path / "x"), "cont")["details"]
    azure_details(Location("az", "azure", "az", False, good))
    for field in ("azureStorageEndpoint", "azureStorageAccountName", "azureStorageAccessKey", "azureContainerName"):
        details = {k: v for k, v in good.items() if k != field}
        with pytest.raises(ValueError, match=field):
            azure_details(Location("az", "azure", "az", False, details), env={})
    with pytest.raises(ValueError, match="dataLayout"):
        azure_details(Location("az", "azure", "az", False, {**good, "dataLayout": "hashed"}))
    # the reference's environment overrides, per location
    env = {"az_AZURE_STORAGE_ACCOUNT_NAME": "other", "az_AZURE_STORAGE_ACCESS_KEY": "k2",
           "az_AZURE_STORAGE_ENDPOINT": "https://other.blob.core.windows.net/"}
    got = azure_details(Location("az", "azure", "az", False, good), env=env)
    assert (got["azureStorageAccountName"], got["azureStorageAccessKey"], got["azureStorageEndpoint"]) == \
        ("other", "k2", "https://other.blob.core.windows.net/")


def test_the_gateway_refuses_to_start_on_unusable_location_details():
    from gateway.__main__ import check_locations
    from shared.config import Config, ConfigError, Location
    bad = {"azure": Location("az", "azure", "az", False, {"azureContainerName": "c"}),
           "file": Location("far", "file", "far", False, {"port": 70000})}
    for kind, location in bad.items():
        with pytest.raises(ConfigError, match=location.name):
            check_locations(Config(locations={location.name: location}))
    check_locations(Config(locations={"far": Location("far", "file", "far", False, {"host": "h", "port": 9991})}))
