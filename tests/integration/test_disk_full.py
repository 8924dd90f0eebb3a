"""Disk full (issue 17): on a small tmpfs, PUTs fail with 507 InsufficientStorage, leave no
partial blob and no metadata, reads keep working, and writes work again once space is back."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client
from tests.tmpfs import dmd_disks
from tests.procs import start_dmd, start_gateway


def _blobs(data: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(data))


@pytest.fixture
def small_disks(tmp_path: Path):
    with dmd_disks(tmp_path, "8m", "8m") as path:
        yield path


def _code(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def test_data_disk_full_answers_507_and_recovers(small_disks: Path):
    dmd = start_dmd(small_disks / "dmd")
    gateway = start_gateway(small_disks / "gw", dmd)
    try:
        s3 = make_client(gateway.url)
        s3.create_bucket(Bucket="full")
        s3.put_object(Bucket="full", Key="before", Body=b"kept")
        body = os.urandom(512 * 1024)
        stored: list[str] = []
        err = None
        for i in range(40):
            try:
                s3.put_object(Bucket="full", Key=f"fill{i}", Body=body)
                stored.append(f"fill{i}")
            except ClientError as exc:
                err = exc
                break
        assert err is not None, "the 8 MiB data disk never filled"
        assert _code(err) == (507, "InsufficientStorage")
        assert not list((dmd.data_path / ".tmp").iterdir()), "a partial upload file was left behind"
        assert _blobs(dmd.data_path) == len(stored) + 1, "a blob of the failed PUT remains"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="full")["Contents"]]
        assert sorted(keys) == sorted(stored + ["before"]), "the failed PUT left metadata"
        assert s3.get_object(Bucket="full", Key="before")["Body"].read() == b"kept"
        for key in stored[:4]:
            s3.delete_object(Bucket="full", Key=key)
        s3.put_object(Bucket="full", Key="again", Body=body)
        assert s3.get_object(Bucket="full", Key="again")["Body"].read() == body
    finally:
        gateway.stop()
        dmd.stop()


def test_metadata_disk_full_answers_507_and_recovers(small_disks: Path):
    dmd = start_dmd(small_disks / "dmd")
    gateway = start_gateway(small_disks / "gw", dmd)
    try:
        s3 = make_client(gateway.url)
        s3.create_bucket(Bucket="mdfull")
        s3.put_object(Bucket="mdfull", Key="before", Body=b"kept")
        # Leave the metadata disk ~256 KiB: an operator's file the test removes later.
        filler = dmd.metadata_path / "filler"
        st = os.statvfs(dmd.metadata_path)
        with open(filler, "wb") as f:
            f.write(b"\0" * max(st.f_bavail * st.f_frsize - 256 * 1024, 0))
        meta = {"pad": "m" * 1800}
        err = None
        for i in range(1000):
            try:
                s3.put_object(Bucket="mdfull", Key=f"k{i}", Body=b"x", Metadata=meta)
            except ClientError as exc:
                err = exc
                break
        assert err is not None, "the metadata disk never filled"
        assert _code(err) == (507, "InsufficientStorage")
        assert s3.get_object(Bucket="mdfull", Key="before")["Body"].read() == b"kept"
        failed_key = f"k{i}"
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket="mdfull", Key=failed_key)
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        filler.unlink()
        s3.put_object(Bucket="mdfull", Key="again", Body=b"back")
        assert s3.get_object(Bucket="mdfull", Key="again")["Body"].read() == b"back"
        assert s3.get_object(Bucket="mdfull", Key="before")["Body"].read() == b"kept"
    finally:
        gateway.stop()
        dmd.stop()
