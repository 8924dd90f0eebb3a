"""Encryption at rest through real processes (docs/encryption.md): bucket default encryption,
SSE-S3, SSE-KMS over the file KMS, SSE-C; round trips by boto3 for each mode and size, every
range form and partNumber GETs, copies between modes, versioning; what lands on disk (and in
the remote bucket of an aws_s3 location) never holds the plaintext; a tampered blob fails the
GET; SSE-C keys never reach the logs.

The gateways run with their own KMS directory (S3KMSPATH) and a config.json allowing SSE-C
over plain HTTP (`sseCustomerKeysOverHttp`, shipped false), except one gateway that keeps the
shipped setting to show the refusal.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client
from tests.integration.test_aws_s3_location import REMOTE_BUCKET, aws_location, remote_client, start_moto
from tests.procs import REPO, Dmd, Gateway, Proc, start_dmd, start_gateway

MiB = 1 << 20
CHUNK = 64 * 1024
AWS_LOCATION = "awsbackend"
CUSTOMER_KEY = os.urandom(32)
OTHER_CUSTOMER_KEY = os.urandom(32)
PATTERN = b"PLAINTEXT-PATTERN-4f1c2b9e-"


def pattern_bytes(size: int, seed: int = 0) -> bytes:
    """A known, searchable body (a repeated marker with a counter, so no two chunks are equal)."""
    out = bytearray()
    i = seed
    while len(out) < size:
        out += PATTERN + str(i).encode() + b"|"
        i += 1
    return bytes(out[:size])


# --- processes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encryption")


def _config_file(workdir: Path, **fields: Any) -> Path:
    config = json.loads((REPO / "config.json").read_text())
    config.update(fields)
    path = workdir / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def moto(workdir: Path) -> Iterator[Proc]:
    proc = start_moto(workdir)
    remote_client(proc).create_bucket(Bucket=REMOTE_BUCKET)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kms_dir(workdir: Path) -> Path:
    return workdir / "kms"


@pytest.fixture(scope="module")
def enc_dmd(workdir: Path) -> Iterator[Dmd]:
    d = start_dmd(workdir / "dmd")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def enc_env(workdir: Path, kms_dir: Path, moto: Proc) -> dict[str, str]:
    locations = json.loads((REPO / "locationConfig.json").read_text())
    remote = aws_location(moto.ports[0])
    remote["details"]["serverSideEncryption"] = True
    locations[AWS_LOCATION] = remote
    location_file = workdir / "locationConfig.json"
    location_file.write_text(json.dumps(locations, indent=2))
    return {"S3KMSPATH": str(kms_dir), "S3_LOCATION_FILE": str(location_file),
            "S3_CONFIG_FILE": str(_config_file(workdir, sseCustomerKeysOverHttp=True)), "LOG_LEVEL": "debug"}


@pytest.fixture(scope="module")
def file_gw(workdir: Path, enc_dmd: Dmd, enc_env: dict[str, str]) -> Iterator[Gateway]:
    g = start_gateway(workdir / "gw-file", enc_dmd, env=enc_env)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def mem_gw(workdir: Path, enc_env: dict[str, str]) -> Iterator[Gateway]:
    g = start_gateway(workdir / "gw-mem", None, env=enc_env)
    yield g
    g.stop()


@pytest.fixture(params=["file", "mem"])
def s3(request: pytest.FixtureRequest):
    gw = request.getfixturevalue(f"{request.param}_gw")
    return make_client(gw.url)


@pytest.fixture
def s3f(file_gw: Gateway):
    return make_client(file_gw.url)


def new_bucket(s3, **kwargs: Any) -> str:
    name = f"enc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    return name


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


# --- modes --------------------------------------------------------------------------------------

SSEC = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY}
SSEC_MD5 = base64.b64encode(hashlib.md5(CUSTOMER_KEY).digest()).decode()
MODES = ["bucket-aes256", "sse-s3", "sse-kms", "sse-kms-key", "sse-c"]


def mode_setup(s3, mode: str, kms_dir: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(bucket, extra arguments of writes, extra arguments of reads) of one mode."""
    bucket = new_bucket(s3)
    if mode == "bucket-aes256":
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        return bucket, {}, {}
    if mode == "sse-s3":
        return bucket, {"ServerSideEncryption": "AES256"}, {}
    if mode == "sse-kms":
        return bucket, {"ServerSideEncryption": "aws:kms"}, {}
    if mode == "sse-kms-key":
        return bucket, {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": extra_kms_key(kms_dir)}, {}
    return bucket, dict(SSEC), dict(SSEC)


def extra_kms_key(kms_dir: Path) -> str:
    """A second master key, made once with the tools CLI as an operator would."""
    marker = kms_dir / "test-extra-key-id"
    if not marker.exists():
        import subprocess
        import sys
        out = subprocess.run([sys.executable, "-m", "gateway.tools", "kms-create-key", "--kms-path", str(kms_dir)],
                             cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        marker.write_text(out)
    return marker.read_text().strip()


def check_headers(resp: dict[str, Any], mode: str, kms_dir: Path) -> None:
    if mode == "sse-c":
        assert resp.get("SSECustomerAlgorithm") == "AES256"
        assert resp.get("SSECustomerKeyMD5") == SSEC_MD5
        assert "ServerSideEncryption" not in resp
    elif mode in ("bucket-aes256", "sse-s3"):
        assert resp.get("ServerSideEncryption") == "AES256"
    else:
        assert resp.get("ServerSideEncryption") == "aws:kms"
        if mode == "sse-kms-key":
            assert resp.get("SSEKMSKeyId") == extra_kms_key(kms_dir)
        else:
            assert resp.get("SSEKMSKeyId")


def read_checks(s3, bucket: str, key: str, body: bytes, read: dict[str, Any], single_part: bool = True) -> None:
    """Full GET, every range form, partNumber=1 (of a single-part object: all of it)."""
    size = len(body)
    assert s3.get_object(Bucket=bucket, Key=key, **read)["Body"].read() == body
    ranges = [(0, 0), (size - 1, size - 1), (0, size - 1)]
    for a, b in [(CHUNK - 1, CHUNK), (CHUNK, 2 * CHUNK + 3), (5, CHUNK * 3 - 7), (size // 3, size // 2)]:
        if a <= b < size:
            ranges.append((a, b))
    for a, b in ranges:
        got = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={a}-{b}", **read)
        assert got["Body"].read() == body[a:b + 1], (a, b)
        assert got["ContentRange"] == f"bytes {a}-{b}/{size}"
    suffix = min(size, CHUNK + 5)
    assert s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{suffix}", **read)["Body"].read() == body[-suffix:]
    start = max(0, size - CHUNK - 3)
    assert s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-", **read)["Body"].read() == body[start:]
    if single_part:
        assert s3.get_object(Bucket=bucket, Key=key, PartNumber=1, **read)["Body"].read() == body


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [1000, 1, CHUNK, CHUNK + 1])
def test_round_trip_each_mode_and_size(s3, mode: str, size: int, kms_dir: Path) -> None:
    bucket, write, read = mode_setup(s3, mode, kms_dir)
    body = pattern_bytes(size)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, **write)
    check_headers(put, mode, kms_dir)
    head = s3.head_object(Bucket=bucket, Key="k", **read)
    check_headers(head, mode, kms_dir)
    assert head["ContentLength"] == size
    got = s3.get_object(Bucket=bucket, Key="k", **read)
    check_headers(got, mode, kms_dir)
    assert got["Body"].read() == body
    read_checks(s3, bucket, "k", body, read)
    etag = put["ETag"].strip('"')
    assert head["ETag"].strip('"') == etag and len(etag) == 32
    # as AWS: SSE-S3's ETag is the MD5 of the plaintext, SSE-KMS's and SSE-C's are not
    assert (etag == hashlib.md5(body).hexdigest()) == (mode in ("bucket-aes256", "sse-s3"))


def multipart_upload(s3, bucket: str, key: str, parts: list[bytes], write: dict[str, Any],
                     read: dict[str, Any]) -> dict[str, Any]:
    created = s3.create_multipart_upload(Bucket=bucket, Key=key, **write)
    upload_id = created["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **read)
        done.append({"PartNumber": number, "ETag": part["ETag"]})
    complete = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": done}, **read)
    return {"create": created, "part": part, "complete": complete}


@pytest.mark.parametrize("mode", MODES)
def test_multipart_each_mode_ranges_across_parts(s3, mode: str, kms_dir: Path) -> None:
    bucket, write, read = mode_setup(s3, mode, kms_dir)
    parts = [pattern_bytes(5 * MiB, 1), pattern_bytes(5 * MiB + 3, 2), pattern_bytes(CHUNK + 9, 3)]
    body = b"".join(parts)
    answers = multipart_upload(s3, bucket, "mpu", parts, write, read)
    check_headers(answers["create"], mode, kms_dir)
    check_headers(answers["part"], mode, kms_dir)
    if mode != "sse-c":
        check_headers(answers["complete"], mode, kms_dir)
    read_checks(s3, bucket, "mpu", body, read, single_part=False)
    boundary = len(parts[0])
    for a, b in [(boundary - 5, boundary + 5), (boundary - CHUNK, boundary + CHUNK),
                 (boundary + len(parts[1]) - 1, boundary + len(parts[1]))]:
        got = s3.get_object(Bucket=bucket, Key="mpu", Range=f"bytes={a}-{b}", **read)["Body"].read()
        assert got == body[a:b + 1]
    offset = 0
    for number, data in enumerate(parts, 1):
        got = s3.get_object(Bucket=bucket, Key="mpu", PartNumber=number, **read)
        assert got["Body"].read() == data
        assert got["PartsCount"] == 3
        check_headers(got, mode, kms_dir)
        offset += len(data)


@pytest.mark.parametrize("mode", MODES)
def test_twenty_mib_object_each_mode(s3f, mode: str, kms_dir: Path) -> None:
    bucket, write, read = mode_setup(s3f, mode, kms_dir)
    body = pattern_bytes(20 * MiB, 7)
    s3f.put_object(Bucket=bucket, Key="big", Body=body, **write)
    got = s3f.get_object(Bucket=bucket, Key="big", **read)["Body"].read()
    assert hashlib.md5(got).digest() == hashlib.md5(body).digest()
    a, b = 7 * MiB + 12345, 13 * MiB + 1
    assert s3f.get_object(Bucket=bucket, Key="big", Range=f"bytes={a}-{b}", **read)["Body"].read() == body[a:b + 1]


COPY_MODES = [("sse-s3", "sse-c"), ("sse-c", "sse-kms"), ("sse-c", "sse-c2"), ("sse-kms", "none"),
              ("none", "sse-s3")]


def _mode_args(mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if mode == "sse-s3":
        return {"ServerSideEncryption": "AES256"}, {}
    if mode == "sse-kms":
        return {"ServerSideEncryption": "aws:kms"}, {}
    if mode == "sse-c":
        return dict(SSEC), dict(SSEC)
    if mode == "sse-c2":
        other = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": OTHER_CUSTOMER_KEY}
        return other, other
    return {}, {}


@pytest.mark.parametrize("source_mode,dest_mode", COPY_MODES)
def test_copy_between_modes(s3, source_mode: str, dest_mode: str) -> None:
    bucket = new_bucket(s3)
    body = pattern_bytes(3 * CHUNK + 11, 5)
    src_write, src_read = _mode_args(source_mode)
    dst_write, dst_read = _mode_args(dest_mode)
    s3.put_object(Bucket=bucket, Key="src", Body=body, **src_write)
    copy_source_keys = {f"CopySource{k}": v for k, v in src_read.items()}
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   **dst_write, **copy_source_keys)
    got = s3.get_object(Bucket=bucket, Key="dst", **dst_read)
    assert got["Body"].read() == body
    assert got.get("ServerSideEncryption") == dst_write.get("ServerSideEncryption")
    if dest_mode != source_mode and src_read:
        with pytest.raises(ClientError):
            s3.get_object(Bucket=bucket, Key="dst", **src_read)
    # UploadPartCopy: a range of the source into a part of an upload of the destination's mode
    created = s3.create_multipart_upload(Bucket=bucket, Key="mpu", **dst_write)
    part = s3.upload_part_copy(Bucket=bucket, Key="mpu", UploadId=created["UploadId"], PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "src"}, CopySourceRange=f"bytes=100-{CHUNK + 200}",
                               **dst_read, **copy_source_keys)
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=created["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="mpu", **dst_read)["Body"].read() == body[100:CHUNK + 201]


def test_copy_of_sse_c_source_needs_its_key(s3) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="src", Body=b"x" * 100, **SSEC)
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert error_of(err) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                       CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=OTHER_CUSTOMER_KEY)
    assert error_of(err) == (403, "AccessDenied")


def test_versioned_bucket_versions_keep_their_own_encryption(s3) -> None:
    bucket = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one" * 30000, ServerSideEncryption="AES256")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two" * 30000, **SSEC)["VersionId"]
    v3 = s3.put_object(Bucket=bucket, Key="k", Body=b"three" * 30000, ServerSideEncryption="aws:kms")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1)["Body"].read() == b"one" * 30000
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v2, **SSEC)["Body"].read() == b"two" * 30000
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"three" * 30000
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="k", VersionId=v2)
    assert error_of(err) == (400, "InvalidRequest")
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v3)
    head = s3.head_object(Bucket=bucket, Key="k", **SSEC)
    assert head["VersionId"] == v2 and head["SSECustomerKeyMD5"] == SSEC_MD5


# --- what is stored ------------------------------------------------------------------------------

def files_containing(root: Path, marker: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if marker in data:
                found.append(path)
    return found


def test_no_plaintext_on_disk_nor_in_the_remote_bucket(file_gw: Gateway, enc_dmd: Dmd, moto: Proc,
                                                       kms_dir: Path) -> None:
    s3 = make_client(file_gw.url)
    marker = f"SECRET-MARKER-{uuid.uuid4().hex}-".encode()
    body = (marker * (3 * CHUNK // len(marker) + 50))
    plain, local, remote_b = new_bucket(s3), new_bucket(s3), new_bucket(
        s3, CreateBucketConfiguration={"LocationConstraint": AWS_LOCATION})
    s3.put_object(Bucket=plain, Key="control", Body=b"CONTROL" + marker)   # proves the scan finds plaintext
    for bucket in (local, remote_b):
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_object(Bucket=bucket, Key="sse-s3", Body=body)
        s3.put_object(Bucket=bucket, Key="sse-kms", Body=body, ServerSideEncryption="aws:kms")
        s3.put_object(Bucket=bucket, Key="sse-c", Body=body, **SSEC)
        multipart_upload(s3, bucket, "mpu", [body * 30, body], {}, {})
        s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": plain, "Key": "control"})
    control = files_containing(enc_dmd.data_path, b"CONTROL" + marker)
    assert len(control) == 1, control
    assert files_containing(enc_dmd.data_path, marker) == control
    assert not files_containing(kms_dir, marker)
    remote = remote_client(moto)
    keys = [o["Key"] for page in remote.get_paginator("list_objects_v2").paginate(Bucket=REMOTE_BUCKET)
            for o in page.get("Contents", [])]
    assert len(keys) >= 6
    for key in keys:
        obj = remote.get_object(Bucket=REMOTE_BUCKET, Key=key)
        assert marker not in obj["Body"].read()
        # the location's serverSideEncryption: true asks the remote to encrypt too
        assert obj.get("ServerSideEncryption") == "AES256"
    assert s3.get_object(Bucket=remote_b, Key="mpu")["Body"].read() == body * 31
    assert s3.get_object(Bucket=remote_b, Key="sse-c", Range="bytes=70000-70010", **SSEC)["Body"].read() == \
        body[70000:70011]


def _new_blob(data_path: Path, before: set[Path]) -> Path:
    after = {p for p in data_path.rglob("*") if p.is_file()}
    new = [p for p in after - before if p.stat().st_size > 0]
    assert len(new) == 1, new
    return new[0]


@pytest.mark.parametrize("size", [200 * 1024, 3 * MiB])
def test_a_tampered_blob_fails_the_get_and_never_gives_wrong_bytes(file_gw: Gateway, enc_dmd: Dmd,
                                                                    size: int) -> None:
    s3 = make_client(file_gw.url)
    bucket = new_bucket(s3)
    body = pattern_bytes(size, 11)
    before = {p for p in enc_dmd.data_path.rglob("*") if p.is_file()}
    s3.put_object(Bucket=bucket, Key="k", Body=body, ServerSideEncryption="AES256")
    blob = _new_blob(enc_dmd.data_path, before)
    assert blob.stat().st_size == size + 16 * -(-size // CHUNK)
    offset = size // 2
    with open(blob, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(Exception) as err:
        got = s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        assert got == body   # never reached: no wrong (nor right) bytes come out of a tampered blob
    if isinstance(err.value, ClientError):
        assert error_of(err) == (500, "InternalError")   # small bodies: an S3 error before any byte
    # chunks before the damaged one still read
    assert s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-99")["Body"].read() == body[:100]
    assert "failed its integrity check" in file_gw.log_text()


# --- errors --------------------------------------------------------------------------------------

def test_sse_c_errors(s3) -> None:
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="c", Body=b"secret" * 100, **SSEC)
    s3.put_object(Bucket=bucket, Key="plain", Body=b"plain")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c")
    assert error_of(err) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_CUSTOMER_KEY)
    assert error_of(err) == (403, "AccessDenied")
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_CUSTOMER_KEY)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256",   # (given an MD5, boto sends the key as is)
                      SSECustomerKey=base64.b64encode(CUSTOMER_KEY).decode(),
                      SSECustomerKeyMD5=base64.b64encode(b"x" * 16).decode())
    assert error_of(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="d", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey=b"short")
    assert error_of(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="d", Body=b"x", SSECustomerAlgorithm="AES128", SSECustomerKey=CUSTOMER_KEY)
    assert error_of(err) == (400, "InvalidEncryptionAlgorithmError")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="d", Body=b"x", ServerSideEncryption="AES256", **SSEC)
    assert error_of(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="plain", **SSEC)
    assert error_of(err) == (400, "InvalidRequest")
    # multipart: every part carries the upload's key
    created = s3.create_multipart_upload(Bucket=bucket, Key="m", **SSEC)
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="m", UploadId=created["UploadId"], PartNumber=1, Body=b"x")
    assert error_of(err) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as err:
        s3.upload_part(Bucket=bucket, Key="m", UploadId=created["UploadId"], PartNumber=1, Body=b"x",
                       SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_CUSTOMER_KEY)
    assert error_of(err) == (400, "InvalidRequest")
    assert s3.get_object(Bucket=bucket, Key="c", **SSEC)["Body"].read() == b"secret" * 100


def test_sse_and_kms_errors(s3) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="AES128")
    assert error_of(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="00000000-0000-4000-8000-000000000000")
    assert error_of(err) == (400, "KMS.NotFoundException")
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="AES256",
                      SSEKMSKeyId="00000000-0000-4000-8000-000000000000")
    assert error_of(err) == (400, "InvalidArgument")
    with pytest.raises(ClientError) as err:
        s3.create_multipart_upload(Bucket=bucket, Key="k", ServerSideEncryption="bogus")
    assert error_of(err) == (400, "InvalidArgument")
    context = base64.b64encode(json.dumps({"team": "blue"}).encode()).decode()
    put = s3.put_object(Bucket=bucket, Key="ctx", Body=b"with context", ServerSideEncryption="aws:kms",
                        SSEKMSEncryptionContext=context)
    assert put["ServerSideEncryption"] == "aws:kms"
    assert s3.get_object(Bucket=bucket, Key="ctx")["Body"].read() == b"with context"
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="ctx2", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSEncryptionContext=base64.b64encode(b"not json").decode())
    assert error_of(err) == (400, "InvalidArgument")


def test_bucket_encryption_configuration(s3, kms_dir: Path) -> None:
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_encryption(Bucket=bucket)
    assert error_of(err) == (404, "ServerSideEncryptionConfigurationNotFoundError")
    s3.put_object(Bucket=bucket, Key="before", Body=b"plain before")
    key_id = extra_kms_key(kms_dir)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id},
        "BucketKeyEnabled": True}]})
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id}
    assert rule["BucketKeyEnabled"] is True
    put = s3.put_object(Bucket=bucket, Key="after", Body=b"encrypted after")
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"], put["BucketKeyEnabled"]) == ("aws:kms", key_id, True)
    assert "ServerSideEncryption" not in s3.head_object(Bucket=bucket, Key="before")
    # a request's own encryption wins over the bucket's
    assert s3.put_object(Bucket=bucket, Key="own", Body=b"x", ServerSideEncryption="AES256")[
        "ServerSideEncryption"] == "AES256"
    for bad, code in [({"SSEAlgorithm": "AES256", "KMSMasterKeyID": key_id}, "InvalidArgument"),
                      ({"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "00000000-0000-4000-8000-000000000000"},
                       "KMS.NotFoundException")]:
        with pytest.raises(ClientError) as err:
            s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
                "ApplyServerSideEncryptionByDefault": bad}]})
        assert error_of(err)[1] == code
    s3.delete_bucket_encryption(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3.get_bucket_encryption(Bucket=bucket)
    assert error_of(err) == (404, "ServerSideEncryptionConfigurationNotFoundError")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"encrypted after"
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="later", Body=b"x")


@pytest.mark.parametrize("body", [
    b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>DES"
    b"</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
    b"<ServerSideEncryptionConfiguration><Rule/></ServerSideEncryptionConfiguration>",
    b"<ServerSideEncryptionConfiguration></ServerSideEncryptionConfiguration>",
    b"not xml"])
def test_malformed_bucket_encryption_documents(file_gw: Gateway, body: bytes) -> None:
    s3 = make_client(file_gw.url)
    bucket = new_bucket(s3)
    import botocore.auth
    import botocore.awsrequest
    import httpx
    from botocore.credentials import Credentials
    url = f"{file_gw.url}/{bucket}?encryption"
    req = botocore.awsrequest.AWSRequest("PUT", url, data=body)
    botocore.auth.S3SigV4Auth(Credentials("accessKey1", "verySecretKey1"), "s3", "us-east-1").add_auth(req)
    resp = httpx.put(url, content=body, headers=dict(req.headers), timeout=30)
    assert resp.status_code == 400 and b"<Code>MalformedXML</Code>" in resp.content


def test_create_encrypted_bucket_tool(file_gw: Gateway) -> None:
    import subprocess
    import sys
    name = f"enc-tool-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-m", "gateway.tools", "create-encrypted-bucket", "-a", "accessKey1",
                           "-k", "verySecretKey1", "-b", name, "-h", "127.0.0.1", "-p", str(file_gw.port)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    s3 = make_client(file_gw.url)
    rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.put_object(Bucket=name, Key="k", Body=b"x")["ServerSideEncryption"] == "AES256"
    again = subprocess.run([sys.executable, "-m", "gateway.tools", "create-encrypted-bucket", "-a", "accessKey1",
                            "-k", "wrong-secret", "-b", name + "x", "-h", "127.0.0.1", "-p", str(file_gw.port)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "SignatureDoesNotMatch" in again.stderr


def test_post_object_with_encryption_fields(file_gw: Gateway) -> None:
    import httpx

    from tests.integration.test_post_object import v4_form
    s3 = make_client(file_gw.url)
    bucket = new_bucket(s3)
    fields = v4_form(bucket, [["starts-with", "$key", ""], {"x-amz-server-side-encryption": "aws:kms"}],
                     {"key": "posted", "x-amz-server-side-encryption": "aws:kms"})
    resp = httpx.post(f"{file_gw.url}/{bucket}", data=fields,
                      files={"file": ("f", pattern_bytes(100_000), "application/octet-stream")}, timeout=60)
    assert resp.status_code == 204, resp.text
    assert resp.headers["x-amz-server-side-encryption"] == "aws:kms"
    got = s3.get_object(Bucket=bucket, Key="posted")
    assert got["ServerSideEncryption"] == "aws:kms" and got["Body"].read() == pattern_bytes(100_000)


def test_customer_keys_never_reach_the_logs(file_gw: Gateway, mem_gw: Gateway) -> None:
    for gw in (file_gw, mem_gw):
        s3 = make_client(gw.url)
        bucket = new_bucket(s3)
        s3.put_object(Bucket=bucket, Key="c", Body=b"x" * 1000, **SSEC)
        s3.get_object(Bucket=bucket, Key="c", **SSEC)["Body"].read()
        with pytest.raises(ClientError):
            s3.get_object(Bucket=bucket, Key="c", SSECustomerAlgorithm="AES256", SSECustomerKey=OTHER_CUSTOMER_KEY)
        text = gw.log_text()
        assert f'"bucket": "{bucket}"' in text and '"status": 403' in text   # the requests are logged
        for key in (CUSTOMER_KEY, OTHER_CUSTOMER_KEY):
            assert base64.b64encode(key).decode() not in text
            assert key.hex() not in text


# --- the shipped settings and AWS's default as a switch ----------------------------------------

@pytest.fixture(scope="module")
def shipped_gw(workdir: Path, kms_dir: Path) -> Iterator[Gateway]:
    env = {"S3KMSPATH": str(kms_dir), "S3_CONFIG_FILE": str(_config_file(workdir, defaultBucketEncryption=True))}
    g = start_gateway(workdir / "gw-shipped", None, env=env)
    yield g
    g.stop()


def test_sse_c_over_plain_http_is_refused_by_default(shipped_gw: Gateway) -> None:
    s3 = make_client(shipped_gw.url)
    bucket = new_bucket(s3)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", **SSEC)
    assert error_of(err) == (400, "InvalidRequest")
    assert "secure connection" in err.value.response["Error"]["Message"]


def test_default_bucket_encryption_switch(shipped_gw: Gateway) -> None:
    s3 = make_client(shipped_gw.url)
    bucket = new_bucket(s3)
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    body = pattern_bytes(CHUNK * 2 + 1)
    assert s3.put_object(Bucket=bucket, Key="k", Body=body)["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body


def test_scrub_counts_encrypted_blobs_by_their_stored_size(file_gw: Gateway, enc_dmd: Dmd) -> None:
    import subprocess
    import sys
    s3 = make_client(file_gw.url)
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=pattern_bytes(3 * CHUNK + 1), ServerSideEncryption="AES256")
    env = {**enc_dmd.env, "METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(enc_dmd.metadata_port)}
    done = subprocess.run([sys.executable, "-m", "dmd.scrub", "--verify-data"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    assert not report.get("sizeMismatch") and not report.get("md5Mismatch"), report


def test_an_object_the_original_encrypted_is_refused_not_served_as_plaintext(file_gw: Gateway, enc_dmd: Dmd) -> None:
    import asyncio

    from gateway.metadata.client import RemoteMetadataClient
    from gateway.store import Store
    s3 = make_client(file_gw.url)
    bucket = new_bucket(s3)
    s3.put_object(Bucket=bucket, Key="orig", Body=b"ciphertext as the original stores it")

    async def mark() -> None:
        store = Store(RemoteMetadataClient("127.0.0.1", enc_dmd.metadata_port), "RG001")
        await store.connect()
        try:
            md = await store.get_object(bucket, "orig")
            md.location = [{**loc, "cryptoScheme": 1, "cipheredDataKey": "AAAA"} for loc in md.location]
            md["x-amz-server-side-encryption"] = "AES256"
            await store.put_object(bucket, "orig", md)
        finally:
            await store.close()
    asyncio.run(mark())
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="orig")
    assert error_of(err) == (501, "NotImplemented")
