"""`python -m dmd.scrub` against a real dmd and gateway, with damage planted for real: blob files
deleted, truncated, rewritten or dropped into the data directory, and records written through the
dmd's RPC (tests/procs.py processes; each test gets its own dmd so a clean store is clean)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from dmd.data import key_folder, new_key
from gateway.metadata import RemoteMetadataClient
from gateway.models import PartMD
from gateway.store import Store
from shared import versionid
from tests.integration.conftest import make_client
from tests.procs import REPO, Dmd, Gateway, free_port, start_dmd, start_gateway

OLD = time.time() - 2 * 3600          # older than the default grace period
OLD_ISO = "2001-01-01T00:00:00.000Z"


class Env:
    def __init__(self, dmd: Dmd, gateway: Gateway) -> None:
        self.dmd, self.gateway = dmd, gateway
        self.s3 = make_client(gateway.url)

    def scrub(self, *args: str, port: int | None = None) -> tuple[int, dict[str, Any] | None, str]:
        env = {**self.dmd.env, "METADATA_HOST": "127.0.0.1",
               "METADATA_PORT": str(port or self.dmd.metadata_port)}
        r = subprocess.run([sys.executable, "-m", "dmd.scrub", *args], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        report = json.loads(r.stdout) if r.stdout.strip() else None
        return r.returncode, report, r.stderr

    def rpc(self, fn) -> Any:
        async def run() -> Any:
            store = Store(RemoteMetadataClient("127.0.0.1", self.dmd.metadata_port), "RG001")
            await store.connect()
            try:
                return await fn(store)
            finally:
                await store.close()
        return asyncio.run(run())

    def blob_keys(self, bucket: str, key: str, version_id: str | None = None) -> list[str]:
        vid = versionid.decode(version_id) if version_id and version_id != "null" else None
        md = self.rpc(lambda st: st.get_object(bucket, key, vid))
        return [loc["key"] for loc in md.location]

    def blob_path(self, blob: str) -> Path:
        return self.dmd.data_path / str(key_folder(blob)) / blob

    def plant_blob(self, data: bytes = b"orphan", mtime: float = OLD) -> Path:
        path = self.blob_path(new_key())
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        return path


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    dmd = start_dmd(tmp_path / "dmd", env={"S3DATA_NOSYNC": "true"})
    gw = start_gateway(tmp_path / "gw", dmd)
    try:
        yield Env(dmd, gw)
    finally:
        gw.stop()
        dmd.stop()


def _bucket(env: Env, versioned: bool = False) -> str:
    name = f"scrub-{uuid.uuid4().hex[:12]}"
    env.s3.create_bucket(Bucket=name)
    if versioned:
        env.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def _populate(env: Env) -> dict[str, Any]:
    """Objects of every kind: plain, versioned (two versions and a delete marker), a completed
    multipart upload and one in progress with a part."""
    plain, versioned = _bucket(env), _bucket(env, versioned=True)
    env.s3.put_object(Bucket=plain, Key="a", Body=b"alpha")
    env.s3.put_object(Bucket=plain, Key="empty", Body=b"")
    v1 = env.s3.put_object(Bucket=versioned, Key="v", Body=b"one")["VersionId"]
    v2 = env.s3.put_object(Bucket=versioned, Key="v", Body=b"two!")["VersionId"]
    env.s3.put_object(Bucket=versioned, Key="gone", Body=b"x")
    env.s3.delete_object(Bucket=versioned, Key="gone")
    mpu = env.s3.create_multipart_upload(Bucket=plain, Key="big")["UploadId"]
    part = env.s3.upload_part(Bucket=plain, Key="big", UploadId=mpu, PartNumber=1, Body=b"p" * (5 << 20))
    env.s3.upload_part(Bucket=plain, Key="big", UploadId=mpu, PartNumber=2, Body=b"q" * 10)
    env.s3.complete_multipart_upload(Bucket=plain, Key="big", UploadId=mpu, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": part["ETag"]},
        {"PartNumber": 2, "ETag": env.s3.list_parts(Bucket=plain, Key="big", UploadId=mpu)["Parts"][1]["ETag"]}]})
    pending = env.s3.create_multipart_upload(Bucket=plain, Key="pending")["UploadId"]
    env.s3.upload_part(Bucket=plain, Key="pending", UploadId=pending, PartNumber=1, Body=b"in progress")
    return {"plain": plain, "versioned": versioned, "v1": v1, "v2": v2, "pending": pending}


def _damage(report: dict[str, Any]) -> dict[str, list]:
    return {k: report[k] for k in ("missingData", "sizeMismatch", "md5Mismatch", "orphanBlobs",
                                   "placeholders", "staleUploads", "orphanParts") if report[k]}


def test_clean_store_exits_zero_with_an_empty_report(env: Env) -> None:
    _populate(env)
    # A fresh unreferenced blob (an upload whose metadata is not committed yet) is within the grace period.
    env.plant_blob(mtime=time.time())
    code, report, err = env.scrub("--verify-data")
    assert code == 0, (report, err)
    assert _damage(report) == {}
    assert report["summary"]["clean"] is True
    assert report["summary"]["objectRecords"] >= 6 and report["summary"]["referencedBlobs"] >= 6
    assert report["skipped"] == {} and report["unexpectedFiles"] == []


def test_missing_truncated_and_corrupt_data_are_reported(env: Env) -> None:
    objs = _populate(env)
    plain, versioned = objs["plain"], objs["versioned"]
    [missing] = env.blob_keys(plain, "a")
    env.blob_path(missing).unlink()
    [old_version] = env.blob_keys(versioned, "v", objs["v1"])
    env.blob_path(old_version).unlink()
    [truncated] = env.blob_keys(versioned, "v", objs["v2"])
    os.truncate(env.blob_path(truncated), 1)
    corrupt = env.blob_keys(plain, "big")[1]          # the 10-byte second part of the MPU object
    env.blob_path(corrupt).write_bytes(b"Z" * 10)     # same size, other bytes
    [part_blob] = [loc["key"] for _, p in env.rpc(lambda st: st.parts(plain, objs["pending"])) for loc in p.locations]
    env.blob_path(part_blob).unlink()

    code, report, err = env.scrub()
    assert code == 1, err
    missing_entries = {(e.get("bucket"), e.get("key"), e.get("versionId"), e["blob"]) for e in report["missingData"]}
    assert (plain, "a", "null", missing) in missing_entries
    assert (versioned, "v", objs["v1"], old_version) in missing_entries
    assert any(e.get("uploadId") == objs["pending"] and e.get("partNumber") == 1 and e["blob"] == part_blob
               for e in report["missingData"])
    assert len(report["missingData"]) == 3
    assert [(e["bucket"], e["key"], e["versionId"], e["blob"], e["expectedSize"], e["actualSize"])
            for e in report["sizeMismatch"]] == [(versioned, "v", objs["v2"], truncated, 4, 1)]
    assert report["sizeMismatch"][0]["path"] == str(env.blob_path(truncated))
    assert report["md5Mismatch"] == []                # data is read only with --verify-data
    assert report["orphanBlobs"] == []

    code, report, _ = env.scrub("--verify-data")
    assert code == 1
    assert [(e["bucket"], e["key"], e["blob"]) for e in report["md5Mismatch"]] == [(plain, "big", corrupt)]

    # --repair never frees or rewrites data an object references: the intact objects stay readable.
    code, report, _ = env.scrub("--repair")
    assert code == 1 and report["repaired"]["orphanBlobs"] == []
    assert env.s3.get_object(Bucket=plain, Key="empty")["Body"].read() == b""
    assert env.s3.get_object(Bucket=versioned, Key="gone", VersionId=env.s3.list_object_versions(
        Bucket=versioned, Prefix="gone")["Versions"][0]["VersionId"])["Body"].read() == b"x"
    assert all(env.blob_path(b).exists() for b in (truncated, corrupt))


def test_orphans_and_leftover_records_are_reported_then_repaired(env: Env) -> None:
    objs = _populate(env)
    plain, versioned = objs["plain"], objs["versioned"]
    orphan = env.plant_blob()
    fresh = env.plant_blob(mtime=time.time())         # within the grace period: never an orphan
    # A part record whose upload overview is gone, holding data of its own.
    part_data = env.plant_blob(b"part data")
    lost_upload = uuid.uuid4().hex
    part = PartMD({**PartMD.new(9, "0" * 32, [{"key": part_data.name, "size": 9, "start": 0,
                                              "dataStoreName": "us-east-1", "dataStoreETag": "1:" + "0" * 32}], None),
                   "last-modified": OLD_ISO})
    env.rpc(lambda st: st.put_part(plain, lost_upload, 3, part))
    # A placeholder master left behind (no versions: its repair drops it), and one over a live version.
    phd = '{ "isPHD": true, "versionId": "%s" }' % versionid.generate()
    env.rpc(lambda st: st.client.put([versioned], "phd-only", phd, {}))
    env.rpc(lambda st: st.client.put([versioned], "v", phd, {}))

    code, report, err = env.scrub()
    assert code == 1, err
    assert [e["path"] for e in report["orphanBlobs"]] == [str(orphan)]
    assert report["orphanBlobs"][0]["blob"] == orphan.name
    assert [(e["bucket"], e["uploadId"], e["partNumber"]) for e in report["orphanParts"]] == \
        [(plain, lost_upload, 3)]
    assert sorted((e["bucket"], e["key"]) for e in report["placeholders"]) == \
        [(versioned, "phd-only"), (versioned, "v")]
    assert report["missingData"] == [] and report["sizeMismatch"] == []
    assert orphan.exists() and part_data.exists()      # a report changes nothing

    code, report, err = env.scrub("--repair")
    assert code == 1, err
    assert sorted(e["blob"] for e in report["repaired"]["orphanBlobs"]) == sorted([orphan.name, part_data.name])
    assert len(report["repaired"]["orphanParts"]) == 1 and len(report["repaired"]["placeholders"]) == 2
    assert not orphan.exists() and not part_data.exists() and fresh.exists()

    code, report, err = env.scrub()
    assert code == 0, (report, err)
    assert _damage(report) == {}
    # Every object is still readable through S3; the placeholder over "v" resolved to its newest version.
    assert env.s3.get_object(Bucket=plain, Key="a")["Body"].read() == b"alpha"
    assert env.s3.get_object(Bucket=plain, Key="big")["ContentLength"] == (5 << 20) + 10
    assert env.s3.get_object(Bucket=versioned, Key="v")["Body"].read() == b"two!"
    assert env.s3.get_object(Bucket=versioned, Key="v", VersionId=objs["v1"])["Body"].read() == b"one"
    env.s3.upload_part(Bucket=plain, Key="pending", UploadId=objs["pending"], PartNumber=2, Body=b"more")
    assert [p["PartNumber"] for p in env.s3.list_parts(Bucket=plain, Key="pending",
                                                       UploadId=objs["pending"])["Parts"]] == [1, 2]


def test_stale_uploads_are_reported(env: Env) -> None:
    bucket = _bucket(env)
    old = env.s3.create_multipart_upload(Bucket=bucket, Key="old")["UploadId"]
    new = env.s3.create_multipart_upload(Bucket=bucket, Key="new")["UploadId"]

    async def backdate(st: Store) -> None:
        overview, _ = await st.get_upload_record(bucket, "old", old)
        await st.put_upload(bucket, "old", old, type(overview)({**overview, "initiated": OLD_ISO}))
    env.rpc(backdate)

    code, report, _ = env.scrub()
    assert code == 1
    assert [(e["bucket"], e["key"], e["uploadId"]) for e in report["staleUploads"]] == [(bucket, "old", old)]
    code, report, _ = env.scrub("--stale-uploads-days", "100000")
    assert code == 0 and report["staleUploads"] == []
    # Not repaired (aborting is the owner's or a lifecycle rule's call): both uploads remain.
    env.scrub("--repair")
    assert {u["UploadId"] for u in env.s3.list_multipart_uploads(Bucket=bucket)["Uploads"]} == {old, new}


def test_scrub_while_the_gateway_keeps_writing(env: Env) -> None:
    bucket = _bucket(env)
    for i in range(150):
        env.s3.put_object(Bucket=bucket, Key=f"pre/{i}", Body=b"x" * i)
    orphan = env.plant_blob()
    stop = threading.Event()
    written: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        s3 = make_client(env.gateway.url)
        i = 0
        try:
            while not stop.is_set():
                key = f"live/{i}"
                s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
                if i % 3 == 0:   # replacements free data while the scrub runs
                    s3.put_object(Bucket=bucket, Key=key, Body=b"replaced " + key.encode())
                written.append(key)
                i += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        results = [env.scrub("--repair", "--grace-seconds", "1") for _ in range(3)]
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert len(written) > 10
    first, *rest = results
    assert first[0] == 1 and [e["blob"] for e in first[1]["repaired"]["orphanBlobs"]] == [orphan.name]
    for code, report, err in rest:
        assert code == 0, (_damage(report), err)
    for code, report, _ in results:
        assert report["missingData"] == [] and report["sizeMismatch"] == []
    s3 = env.s3
    for key in written:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body.endswith(key.encode())
    for i in range(150):
        assert s3.get_object(Bucket=bucket, Key=f"pre/{i}")["Body"].read() == b"x" * i
    code, report, _ = env.scrub("--grace-seconds", "0")
    assert code == 0, _damage(report)


def test_usage_and_connection_errors_exit_2(env: Env) -> None:
    code, report, err = env.scrub("--grace-seconds", "-1")
    assert code == 2 and report is None and "grace" in err
    code, report, err = env.scrub("--no-such-option")
    assert code == 2 and report is None
    code, report, err = env.scrub("--connect-timeout", "1", port=free_port())
    assert code == 2 and report is None and "cannot connect" in err


def test_report_to_file_and_other_locations_skipped(env: Env, tmp_path: Path) -> None:
    bucket = _bucket(env)
    env.s3.put_object(Bucket=bucket, Key="k", Body=b"data")

    async def foreign(st: Store) -> None:
        md = await st.get_object(bucket, "k")
        await st.put_object(bucket, "elsewhere", type(md)({**md, "key": "elsewhere", "location": [
            {"key": "not-a-dmd-key", "size": 4, "start": 0, "dataStoreName": "aws-location",
             "dataStoreETag": "1:" + "0" * 32}]}))
    env.rpc(foreign)
    out = tmp_path / "report.json"
    code, report, _ = env.scrub("--json", str(out))
    assert code == 0 and report is None
    written = json.loads(out.read_text())
    assert _damage(written) == {}
    assert written["skipped"]["locations"] == {"aws-location (unknown)": 1}
