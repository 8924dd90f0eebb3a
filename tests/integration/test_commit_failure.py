"""Fault injection (issue 17): the metadata commit of a write fails AFTER its data was stored, and
the write leaves no orphan blob, no metadata, and the client gets an S3 error document.

How the commit is made to fail, with real processes and no hook in the code: the dmd's metadata
directory and its data directory are two separate tmpfs mounts; the metadata one is filled to the
brim while the data one keeps plenty of room. A PutObject then streams its body to the data
store (which succeeds: a blob file is written) and its metadata commit fails with ENOSPC, which
the dmd answers InsufficientStorage (507). What is asserted is what the rollback guarantees:
the new blob is freed (the set of blob files is exactly what it was before the request), no
partial file is left in the data directory's .tmp, the object is not visible and an object it
would have replaced is intact. `python -m dmd.scrub --grace-seconds 0` then finds nothing.

Covered writes: PutObject (new key and overwrite, non-versioned bucket; versioned bucket),
CopyObject (the copy's data is new data), UploadPart (the part record commit fails) and
CompleteMultipartUpload (writes no data: the uploaded parts must stay referenced and usable).
The rollbacks under test: gateway/versioning.py commit_new_object (PutObject, CopyObject, POST)
and gateway/api/multipart.py _commit_part (UploadPart), both freeing `new_locations`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dmd.data import TMP_DIR_NAME, is_valid_key
from tests.integration.conftest import make_client
from tests.tmpfs import dmd_disks
from tests.procs import REPO, start_dmd, start_gateway

MiB = 1 << 20


@pytest.fixture
def disks(tmp_path: Path):
    """A roomy data disk and a small metadata disk, each its own tmpfs."""
    with dmd_disks(tmp_path, "96m", "8m") as path:
        yield path


def _blobs(data: Path) -> set[str]:
    """Every blob file of the data directory (dmd/data.py's layout: <folder>/<key>)."""
    out = set()
    for root, _dirs, files in os.walk(data):
        if Path(root).name == TMP_DIR_NAME:
            continue
        out.update(f for f in files if is_valid_key(f))
    return out


def _tmp_files(data: Path) -> list[str]:
    tmp = data / TMP_DIR_NAME
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def _error(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def _status(s3, **kw: Any) -> int:
    try:
        s3.head_object(**kw)
        return 200
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def _scrub(dmd, *args: str) -> tuple[int, dict[str, Any]]:
    env = {**dmd.env, "METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(dmd.metadata_port)}
    r = subprocess.run([sys.executable, "-m", "dmd.scrub", "--grace-seconds", "0", *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


class Failing:
    """Runs writes that must fail at their metadata commit and checks what each one left."""

    def __init__(self, s3, data: Path) -> None:
        self.s3, self.data = s3, data
        self.checked: list[str] = []

    def expect_commit_failure(self, what: str, call, *args: Any, **kw: Any) -> None:
        before = _blobs(self.data)
        with pytest.raises(ClientError) as err:
            call(*args, **kw)
        status, code = _error(err.value)
        # A failed commit is a server error with an S3 error document; a full metadata disk is
        # InsufficientStorage (507), as the dmd's engine maps ENOSPC (docs/durability.md#disk-full).
        assert (status, code) == (507, "InsufficientStorage"), f"{what}: answered {status} {code}"
        assert err.value.response["Error"].get("Message"), f"{what}: no S3 error document"
        after = _blobs(self.data)
        assert after - before == set(), f"{what}: the failed commit left orphan blob(s) {sorted(after - before)}"
        assert before - after == set(), f"{what}: the failed commit freed data it did not own {sorted(before - after)}"
        assert _tmp_files(self.data) == [], f"{what}: a partial upload file was left in {TMP_DIR_NAME}"
        self.checked.append(what)


def test_failed_metadata_commit_leaves_no_orphan(disks: Path):
    dmd = start_dmd(disks / "dmd")
    gateway = start_gateway(disks / "gw", dmd)
    try:
        s3 = make_client(gateway.url, retries={"total_max_attempts": 1, "mode": "standard"})
        s3.create_bucket(Bucket="plain")
        s3.create_bucket(Bucket="ver")
        s3.put_bucket_versioning(Bucket="ver", VersioningConfiguration={"Status": "Enabled"})
        s3.put_object(Bucket="plain", Key="victim", Body=b"old body")
        v1 = s3.put_object(Bucket="ver", Key="victim", Body=b"version one")["VersionId"]
        s3.put_object(Bucket="plain", Key="src", Body=os.urandom(300_000))
        part1 = os.urandom(5 * MiB)
        upload = s3.create_multipart_upload(Bucket="plain", Key="mpu")["UploadId"]
        e1 = s3.upload_part(Bucket="plain", Key="mpu", UploadId=upload, PartNumber=1, Body=part1)["ETag"]
        e2 = s3.upload_part(Bucket="plain", Key="mpu", UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
        baseline = _blobs(dmd.data_path)
        assert len(baseline) == 5

        # Fill the metadata disk: an operator's file leaves ~128 KiB, then PUTs carrying 1.8 KB of
        # user metadata each use the rest. The first refused PUT is the first failed commit.
        filler = dmd.metadata_path / "filler"
        st = os.statvfs(dmd.metadata_path)
        with open(filler, "wb") as f:
            f.write(b"\0" * max(st.f_bavail * st.f_frsize - 128 * 1024, 0))
        failing = Failing(s3, dmd.data_path)
        meta = {"pad": "m" * 1800}
        stored: list[str] = []
        for i in range(2000):
            before = _blobs(dmd.data_path)
            try:
                s3.put_object(Bucket="plain", Key=f"fill{i}", Body=b"x" * 100, Metadata=meta)
            except ClientError as exc:
                assert _error(exc) == (507, "InsufficientStorage"), _error(exc)
                assert _blobs(dmd.data_path) == before, "the first failed commit left an orphan blob"
                failing.checked.append("PutObject (first failure)")
                break
            stored.append(f"fill{i}")
        else:
            raise AssertionError("the metadata disk never filled")
        assert _status(s3, Bucket="plain", Key=f"fill{len(stored)}") == 404

        # Now every commit fails while the data disk has room: each write stores its data first.
        failing.expect_commit_failure("PutObject new key", s3.put_object, Bucket="plain", Key="new",
                                      Body=os.urandom(70_000))
        assert _status(s3, Bucket="plain", Key="new") == 404
        failing.expect_commit_failure("PutObject overwrite", s3.put_object, Bucket="plain", Key="victim",
                                      Body=os.urandom(2 * MiB))
        assert s3.get_object(Bucket="plain", Key="victim")["Body"].read() == b"old body"
        failing.expect_commit_failure("PutObject versioned", s3.put_object, Bucket="ver", Key="victim",
                                      Body=b"version two")
        versions = s3.list_object_versions(Bucket="ver", Prefix="victim")
        assert [v["VersionId"] for v in versions.get("Versions", [])] == [v1]
        assert s3.get_object(Bucket="ver", Key="victim")["Body"].read() == b"version one"
        failing.expect_commit_failure("CopyObject", s3.copy_object, Bucket="plain", Key="copy",
                                      CopySource={"Bucket": "plain", "Key": "src"})
        assert _status(s3, Bucket="plain", Key="copy") == 404
        failing.expect_commit_failure("UploadPart (re-upload of part 2)", s3.upload_part, Bucket="plain",
                                      Key="mpu", UploadId=upload, PartNumber=2, Body=os.urandom(100_000))
        failing.expect_commit_failure("UploadPart (new part 3)", s3.upload_part, Bucket="plain",
                                      Key="mpu", UploadId=upload, PartNumber=3, Body=b"three")
        parts = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}
        failing.expect_commit_failure("CompleteMultipartUpload", s3.complete_multipart_upload, Bucket="plain",
                                      Key="mpu", UploadId=upload, MultipartUpload=parts)
        assert _status(s3, Bucket="plain", Key="mpu") == 404
        listed = s3.list_parts(Bucket="plain", Key="mpu", UploadId=upload)["Parts"]
        assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, e1), (2, e2)]

        # Nothing the failures touched is damage: no orphan blob even with no grace period.
        code, report = _scrub(dmd)
        assert report["orphanBlobs"] == [], report["orphanBlobs"]
        assert code == 0, {k: v for k, v in report.items() if v and k not in ("summary", "skipped")}

        # Space back: the same writes now succeed, the upload completes from its parts.
        filler.unlink()
        s3.put_object(Bucket="plain", Key="new", Body=b"now")
        assert s3.get_object(Bucket="plain", Key="new")["Body"].read() == b"now"
        s3.complete_multipart_upload(Bucket="plain", Key="mpu", UploadId=upload, MultipartUpload=parts)
        assert s3.get_object(Bucket="plain", Key="mpu")["Body"].read() == part1 + b"tail"
        code, report = _scrub(dmd)
        assert code == 0 and report["orphanBlobs"] == [], report
        assert len(failing.checked) == 8
    finally:
        gateway.stop()
        dmd.stop()
