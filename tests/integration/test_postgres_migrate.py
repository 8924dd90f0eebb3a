"""Issue 19: `python -m gateway.tools migrate-metadata --from dmd --to postgres`.

A dmd of its own is filled through a gateway with versioned content (versions, delete markers,
null versions of a suspended bucket, a placeholder master the dmd has not repaired yet), multipart
uploads in progress and completed, and a plain bucket. The tool (the real command line) copies the
metadata to a fresh database; a postgres gateway over the same dmd data service must then answer
every listing and every read identically.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.pg_fixtures import start_pg_gateway
from tests.procs import REPO, _base_env, start_dmd, start_gateway


def _snapshot(s3) -> dict:
    """Everything a client can see: buckets, listings, uploads, parts and every version's bytes."""
    out: dict = {"buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"])}
    for bucket in out["buckets"]:
        objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        out[bucket + "/objects"] = [(o["Key"], o["ETag"], o["Size"]) for o in objects]
        out[bucket + "/delimited"] = s3.list_objects_v2(Bucket=bucket, Delimiter="/").get("CommonPrefixes", [])
        versions = s3.list_object_versions(Bucket=bucket)
        out[bucket + "/versions"] = [(v["Key"], v["VersionId"], v["IsLatest"], v["ETag"])
                                     for v in versions.get("Versions", [])]
        out[bucket + "/markers"] = [(m["Key"], m["VersionId"], m["IsLatest"]) for m in versions.get("DeleteMarkers", [])]
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        out[bucket + "/uploads"] = [(u["Key"], u["UploadId"]) for u in uploads]
        for u in uploads:
            parts = s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])["Parts"]
            out[f"{bucket}/parts/{u['UploadId']}"] = [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts]
        for key, vid, _latest, _etag in out[bucket + "/versions"]:
            out[f"{bucket}/{key}@{vid}"] = s3.get_object(Bucket=bucket, Key=key, VersionId=vid)["Body"].read()
        out[bucket + "/versioning"] = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    return out


def _fill(s3, s3_other) -> None:
    s3.create_bucket(Bucket="mig-versioned")
    s3.put_bucket_versioning(Bucket="mig-versioned", VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):
        s3.put_object(Bucket="mig-versioned", Key="doc.txt", Body=f"doc v{i}".encode())
        s3.put_object(Bucket="mig-versioned", Key=f"dir/{i}", Body=b"x" * i)
    s3.delete_object(Bucket="mig-versioned", Key="dir/1")                          # a delete marker
    s3.create_bucket(Bucket="mig-suspended")
    s3.put_object(Bucket="mig-suspended", Key="k", Body=b"before versioning")       # a null version
    s3.put_bucket_versioning(Bucket="mig-suspended", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="mig-suspended", Key="k", Body=b"versioned")
    s3.put_bucket_versioning(Bucket="mig-suspended", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="mig-suspended", Key="k", Body=b"suspended null")
    s3.create_bucket(Bucket="mig-plain")
    for i in range(40):
        s3.put_object(Bucket="mig-plain", Key=f"a/{i:03d}", Body=bytes([i]) * 10)
    done = s3.create_multipart_upload(Bucket="mig-plain", Key="big")["UploadId"]
    part = s3.upload_part(Bucket="mig-plain", Key="big", UploadId=done, PartNumber=1, Body=b"p" * (5 << 20))
    s3.complete_multipart_upload(Bucket="mig-plain", Key="big", UploadId=done,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    open_id = s3.create_multipart_upload(Bucket="mig-plain", Key="pending")["UploadId"]
    for n in (1, 3):
        s3.upload_part(Bucket="mig-plain", Key="pending", UploadId=open_id, PartNumber=n, Body=b"q" * (5 << 20))
    s3_other.create_bucket(Bucket="mig-other-account")
    s3_other.put_object(Bucket="mig-other-account", Key="o", Body=b"other")
    # The current version deleted by id: the dmd leaves a placeholder master (repaired 15 s later).
    latest = s3.list_object_versions(Bucket="mig-versioned", Prefix="doc.txt")["Versions"][0]["VersionId"]
    s3.delete_object(Bucket="mig-versioned", Key="doc.txt", VersionId=latest)


def _migrate(dmd, url: str) -> subprocess.CompletedProcess:
    env = _base_env({"METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(dmd.metadata_port)})
    return subprocess.run([sys.executable, "-m", "gateway.tools", "migrate-metadata", "--from", "dmd",
                           "--to", "postgres", "--url", url], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_dmd_migrated_to_postgres_lists_and_reads_identically(tmp_path: Path, pg_cluster):
    dmd = start_dmd(tmp_path / "dmd-mig")
    gws = []
    try:
        source_gw = start_gateway(tmp_path / "gw-mig-src", dmd)
        gws.append(source_gw)
        _fill(make_client(source_gw.url), make_client(source_gw.url, ACCESS_KEY2, SECRET_KEY2))
        url = pg_cluster.create_database("migrated")
        first = _migrate(dmd, url)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "count check: every sublevel holds exactly the records read" in first.stdout
        assert "1 placeholders resolved" in first.stdout, first.stdout
        assert "records copied" in first.stderr   # the progress line
        before = {acct: _snapshot(make_client(source_gw.url, *acct)) for acct in
                  (("accessKey1", "verySecretKey1"), (ACCESS_KEY2, SECRET_KEY2))}
        again = _migrate(dmd, url)                   # rerunnable: upserts, same counts
        assert again.returncode == 0, again.stderr + again.stdout
        pg_gw = start_pg_gateway(tmp_path / "gw-mig-pg", dmd, url)
        gws.append(pg_gw)
        after = {acct: _snapshot(make_client(pg_gw.url, *acct)) for acct in before}
        assert after == before
        assert len(before[("accessKey1", "verySecretKey1")]["mig-plain/objects"]) == 41   # 40 + the completed upload
        # The migrated deployment keeps working: writes through the postgres gateway.
        s3 = make_client(pg_gw.url)
        s3.put_object(Bucket="mig-versioned", Key="doc.txt", Body=b"after migration")
        assert s3.get_object(Bucket="mig-versioned", Key="doc.txt")["Body"].read() == b"after migration"
    finally:
        for g in gws:
            g.stop()
        dmd.stop()


def test_the_tool_refuses_without_a_connection_string():
    env = _base_env({})
    done = subprocess.run([sys.executable, "-m", "gateway.tools", "migrate-metadata", "--from", "dmd",
                           "--to", "postgres"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "connection string" in done.stderr


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S3METADATA_URL", raising=False)
