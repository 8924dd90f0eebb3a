"""Stores written by the original CloudServer 8.8.35, read and changed through our dmd and gateway.

The fixtures (tests/fixtures/original/, copied from ../shared/reference/original-fixtures/; its
README says how the original made them) are two stores with the same content: one written in the
original's default mode, one with S3BACKEND=file, whose location records say
`dataStoreName: "file"`. Each comes with a manifest of every object version as the original's S3
API returns it (size and md5 of every content, ETags, metadata, tags, version ids, delete
markers), the in-progress multipart upload and every data file.

Every test runs on both stores (issue 20): read every version back; GET without a version id;
listings; ListParts of the original's in-progress upload, whose part records carry no `size`,
then Complete it (the original's results on a restored copy: 6291456 bytes, its md5 and ETag);
DELETE an object and find its data file gone. A gateway with no location that can serve an
object answers an S3 error before any byte of it (never 200 and a broken body).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client
from tests.procs import REPO, Dmd, Gateway, start_dmd, start_gateway

FIXTURES = REPO / "tests" / "fixtures" / "original"
STORES = {
    "default": ("store-v8.8.35.tar.gz", "store-manifest.json"),
    "s3backend-file": ("store-v8.8.35-s3backend-file.tar.gz", "store-manifest-s3backend-file.json"),
}
SECRETS = {"accessKey1": "verySecretKey1", "accessKey2": "verySecretKey2"}
HEADERS = {"content_type": "ContentType", "cache_control": "CacheControl",
           "content_disposition": "ContentDisposition", "content_language": "ContentLanguage",
           "content_encoding": "ContentEncoding"}
# An object stored without a Content-Type: the original answers none, ours (as S3) a default.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# What the original gives when its in-progress upload is completed with both parts (README, #3).
COMPLETED_SIZE = 6291456
COMPLETED_MD5 = "2561dfcf697ccb46124486963a1ee336"
COMPLETED_ETAG = '"34dfffe08a0e762adcff3e7bedd54d2f-2"'
MIGRATE_TIMEOUT_S = 300


def prepare_original_store(tarball: Path, tmp: Path) -> tuple[Path, Path]:
    """Extract one of the original's store tarballs into `tmp`; (metadata folder, data folder) to run
    our dmd on. When the dmd has its migration tool (`python -m dmd.migrate`: the dmd does not open
    the original's LevelDB folder in place), the metadata is migrated into a new folder, which is
    returned; otherwise the extracted folder. The data folder is used as is either way."""
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp, filter="data")
    original, data = tmp / "localMetadata", tmp / "localData"
    if not (REPO / "dmd" / "migrate.py").exists():
        return original, data
    migrated = tmp / "migratedMetadata"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3", "DMD_SECRET"))}
    done = subprocess.run([sys.executable, "-m", "dmd.migrate", "--from", str(original), "--to", str(migrated)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_S)
    assert done.returncode == 0, f"dmd.migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return migrated, data


@dataclass
class Stack:
    """Our dmd and gateway over one of the original's stores."""
    name: str
    manifest: dict[str, Any]
    metadata_path: Path
    data_path: Path
    dmd: Dmd
    gateway: Gateway

    def client(self, bucket: str):
        owner = next(b["owner_access_key"] for b in self.manifest["buckets"] if b["name"] == bucket)
        return make_client(self.gateway.url, owner, SECRETS[owner])

    def stop(self) -> None:
        self.gateway.stop()
        self.dmd.stop()
        # Shown by pytest only when a test of this stack failed.
        print(f"--- gateway log (tail)\n{self.gateway.log_text()[-4000:]}\n--- dmd log (tail)\n"
              f"{self.dmd.log_text()[-2000:]}")


def start_stack(name: str, tmp: Path, gateway_env: dict[str, str] | None = None) -> Stack:
    tarball, manifest = STORES[name]
    metadata_path, data_path = prepare_original_store(FIXTURES / tarball, tmp / "store")
    dmd = start_dmd(tmp / "dmd", {"S3METADATAPATH": str(metadata_path), "S3DATAPATH": str(data_path)})
    try:
        gateway = start_gateway(tmp / "gw", dmd, gateway_env)
    except BaseException:
        dmd.stop()
        raise
    return Stack(name, json.loads((FIXTURES / manifest).read_text()), metadata_path, data_path, dmd, gateway)


@pytest.fixture(scope="module", params=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack for the tests that only read (shared by them)."""
    stack = start_stack(request.param, tmp_path_factory.mktemp(f"orig-{request.param}"))
    yield stack
    stack.stop()


@pytest.fixture(params=list(STORES))
def fresh_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for a test that changes the store."""
    stack = start_stack(request.param, tmp_path)
    yield stack
    stack.stop()


def versions(stack: Stack) -> list[dict[str, Any]]:
    return [o for o in stack.manifest["objects"] if not o["delete_marker"]]


def label(o: dict[str, Any]) -> str:
    return f"{o['bucket']}/{o['key']}@{o['version_id']}"


def md5_of_body(resp: dict[str, Any]) -> tuple[int, str]:
    md5, size = hashlib.md5(), 0
    for chunk in resp["Body"].iter_chunks(1 << 20):
        md5.update(chunk)
        size += len(chunk)
    return size, md5.hexdigest()


def expected_headers(o: dict[str, Any]) -> dict[str, Any]:
    """The headers the original answered for version `o`, as ours answers them."""
    return {**{field: o[field] for field in HEADERS}, "content_type": o["content_type"] or DEFAULT_CONTENT_TYPE}


def iso(d: Any) -> str | None:
    return d.isoformat().replace("+00:00", "Z") if d is not None else None


# ---------------------------------------------------------------------------------------- reads

def test_every_version_reads_back(store: Stack) -> None:
    """GET of every version by its version id: size, md5, ETag, headers, metadata, version id header
    (all 32 contents), as the original's own read-back recorded them."""
    mismatches: list[str] = []
    checked = 0
    for o in versions(store):
        resp = store.client(o["bucket"]).get_object(Bucket=o["bucket"], Key=o["key"], VersionId=o["version_id"])
        size, md5 = md5_of_body(resp)
        got = {"size": size, "md5": md5, "get_length": resp["ContentLength"], "etag": resp["ETag"],
               "metadata": resp.get("Metadata", {}), "version_header": resp.get("VersionId"),
               **{field: resp.get(header) for field, header in HEADERS.items()}}
        want = {"size": o["size"], "md5": o["md5"], "get_length": o["size"], "etag": o["etag"],
                "metadata": o["metadata"], "version_header": o["get_x_amz_version_id"],
                **expected_headers(o)}
        mismatches += [f"{label(o)} {k}: {got[k]!r} != original {want[k]!r}" for k in want if got[k] != want[k]]
        checked += 1
    assert checked == 32
    assert not mismatches, "\n".join(mismatches)


def test_head_and_tags_of_every_version(store: Stack) -> None:
    mismatches: list[str] = []
    for o in versions(store):
        s3 = store.client(o["bucket"])
        head = s3.head_object(Bucket=o["bucket"], Key=o["key"], VersionId=o["version_id"])
        tags = s3.get_object_tagging(Bucket=o["bucket"], Key=o["key"], VersionId=o["version_id"])
        got = {"length": head["ContentLength"], "etag": head["ETag"], "metadata": head.get("Metadata", {}),
               "tags": {t["Key"]: t["Value"] for t in tags.get("TagSet", [])},
               "storage_class": head.get("StorageClass", "STANDARD"),
               **{field: head.get(header) for field, header in HEADERS.items()}}
        want = {"length": o["size"], "etag": o["etag"], "metadata": o["metadata"], "tags": o["tags"],
                "storage_class": o["storage_class"], **expected_headers(o)}
        mismatches += [f"{label(o)} {k}: {got[k]!r} != original {want[k]!r}" for k in want if got[k] != want[k]]
    assert not mismatches, "\n".join(mismatches)


def test_get_without_version_id(store: Stack) -> None:
    """The current version of every key (NoSuchKey behind a delete marker), with its version id header."""
    expected = store.manifest["get_without_version_id"]
    mismatches: list[str] = []
    for path, want in expected.items():
        bucket, key = path.split("/", 1)
        try:
            resp = store.client(bucket).get_object(Bucket=bucket, Key=key)
            got: dict[str, Any] = {"md5": md5_of_body(resp)[1], "version_id": resp.get("VersionId")}
        except ClientError as err:
            got = {"error": err.response["Error"]["Code"]}
        if got != want:
            mismatches.append(f"{path}: {got} != original {want}")
    assert len(expected) == sum(o["is_latest"] for o in store.manifest["objects"])   # every key
    assert sum("error" in want for want in expected.values()) == 2   # behind delete markers
    assert not mismatches, "\n".join(mismatches)


def test_listings(store: Stack) -> None:
    """ListObjectsV2 gives the original's current keys; ListObjectVersions its versions and delete
    markers in its order, with the same version ids, latest flags, dates, owners, sizes and ETags."""
    for bucket in store.manifest["buckets"]:
        name = bucket["name"]
        s3 = store.client(name)
        keys = [c["Key"] for c in s3.list_objects_v2(Bucket=name, MaxKeys=1000).get("Contents", [])]
        assert keys == store.manifest["current_keys"][name], name
        listed = s3.list_object_versions(Bucket=name, MaxKeys=1000)
        assert not listed["IsTruncated"]
        entries = [(v, False) for v in listed.get("Versions", [])] + [(d, True) for d in listed.get("DeleteMarkers", [])]
        got = sorted((e["Key"], e["VersionId"], e["IsLatest"], dm, iso(e["LastModified"]), e["Owner"]["ID"],
                      e.get("Size"), e.get("ETag")) for e, dm in entries)
        want = sorted((o["key"], o["version_id"], o["is_latest"], o["delete_marker"], o["last_modified"],
                       o["owner_canonical_id"], o.get("size"), o.get("etag"))
                      for o in store.manifest["objects"] if o["bucket"] == name)
        assert got == want, name
        # The original's order (key order, newest first), within each of the two lists boto3 splits.
        for kind, listed_kind in ((False, listed.get("Versions", [])), (True, listed.get("DeleteMarkers", []))):
            assert [(e["Key"], e["VersionId"]) for e in listed_kind] == \
                [(o["key"], o["version_id"]) for o in store.manifest["objects"]
                 if o["bucket"] == name and o["delete_marker"] == kind], name
        assert s3.get_bucket_versioning(Bucket=name).get("Status") == bucket["versioning"], name


def test_list_parts_of_the_originals_upload(store: Stack) -> None:
    """The original's part records carry no size: ListParts gives each part's own size."""
    upload = store.manifest["uploads_in_progress"][0]
    s3 = store.client(upload["bucket"])
    uploads = s3.list_multipart_uploads(Bucket=upload["bucket"]).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(upload["key"], upload["upload_id"])]
    parts = s3.list_parts(Bucket=upload["bucket"], Key=upload["key"], UploadId=upload["upload_id"])["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == \
        [(p["part_number"], p["etag"], p["size"]) for p in upload["parts"]] == \
        [(1, upload["parts"][0]["etag"], 5242880), (2, upload["parts"][1]["etag"], 1048576)]
    assert all(not loc.get("size") for p in upload["parts"] for loc in p["part_locations"])   # the case at hand


# --------------------------------------------------------------------------------------- writes

def test_complete_the_originals_upload(fresh_store: Stack) -> None:
    """Completing the original's upload gives what the original gives: 6291456 bytes, same md5 and ETag."""
    upload = fresh_store.manifest["uploads_in_progress"][0]
    assert upload["if_completed_with_all_parts"] == {"size": COMPLETED_SIZE, "md5": COMPLETED_MD5,
                                                     "etag": COMPLETED_ETAG}
    bucket, key = upload["bucket"], upload["key"]
    s3 = fresh_store.client(bucket)
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["upload_id"],
        MultipartUpload={"Parts": [{"PartNumber": p["part_number"], "ETag": p["etag"]} for p in upload["parts"]]})
    assert done["ETag"] == COMPLETED_ETAG
    head = s3.head_object(Bucket=bucket, Key=key)
    assert (head["ContentLength"], head["ETag"]) == (COMPLETED_SIZE, COMPLETED_ETAG)
    assert head["Metadata"] == upload["metadata"] and head["ContentType"] == upload["content_type"]
    assert md5_of_body(s3.get_object(Bucket=bucket, Key=key)) == (COMPLETED_SIZE, COMPLETED_MD5)
    # A range across the part boundary reads from both parts.
    ranged = s3.get_object(Bucket=bucket, Key=key, Range="bytes=5242870-5242889")["Body"].read()
    whole = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert ranged == whole[5242870:5242890] and len(ranged) == 20
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_delete_frees_the_originals_data(fresh_store: Stack) -> None:
    """DELETE of an object the original wrote (dataStoreName "us-east-1" or "file") removes its data file."""
    stack = fresh_store
    target = "fixture-plain/hello.txt@null"
    files = {f["path"]: f for f in stack.manifest["data_files"]}
    path = next(p for p, f in files.items() if f["referenced_by"] == [target])
    blob = stack.data_path / Path(path).relative_to("localData")
    assert blob.is_file()
    stack.client("fixture-plain").delete_object(Bucket="fixture-plain", Key="hello.txt")
    assert not blob.exists(), f"{path} leaked"
    with pytest.raises(ClientError) as err:
        stack.client("fixture-plain").head_object(Bucket="fixture-plain", Key="hello.txt")
    assert err.value.response["Error"]["Code"] == "404"
    # Nothing else went: every other data file is still there, unchanged in size.
    for other, f in files.items():
        if other != path:
            assert (stack.data_path / Path(other).relative_to("localData")).stat().st_size == f["size"], other


# ------------------------------------------------------------------ a location that cannot serve

MEM_ONLY_LOCATIONS = {"us-east-1": {"type": "mem", "objectId": "us-east-1", "legacyAwsBehavior": True, "details": {}},
                      "us-east-2": {"type": "mem", "objectId": "us-east-2", "legacyAwsBehavior": False,
                                    "details": {}}}


def test_unservable_location_is_an_error_before_any_byte(tmp_path: Path) -> None:
    """A gateway whose locations are all in memory has nothing that serves the original's "file"
    records: GET answers an S3 error document (500 InternalError), not 200 and a cut body; HEAD,
    which reads no data, still answers."""
    location_file = tmp_path / "locationConfig.json"
    location_file.write_text(json.dumps(MEM_ONLY_LOCATIONS))
    stack = start_stack("s3backend-file", tmp_path, {"S3_LOCATION_FILE": str(location_file)})
    try:
        s3 = stack.client("fixture-plain")
        for key in ("big-6mib.bin", "mpu/completed-5m-1m.bin", "hello.txt"):
            url = s3.generate_presigned_url("get_object", Params={"Bucket": "fixture-plain", "Key": key})
            resp = requests.get(url, timeout=60)
            assert resp.status_code == 500, (key, resp.status_code, resp.headers)
            assert resp.headers["content-type"] == "application/xml"
            assert "<Code>InternalError</Code>" in resp.text, resp.text
            assert "'file'" in resp.text
            assert s3.head_object(Bucket="fixture-plain", Key=key)["ContentLength"] > 0
    finally:
        stack.stop()


def test_missing_first_blob_is_an_error_before_any_byte(fresh_store: Stack) -> None:
    """A large object whose data file is gone: an S3 error document, not 200 and an empty body."""
    stack = fresh_store
    o = next(o for o in versions(stack) if (o["bucket"], o["key"]) == ("fixture-plain", "big-6mib.bin"))
    blob = stack.data_path / Path(next(f["path"] for f in stack.manifest["data_files"]
                                       if f["referenced_by"] == [label(o)])).relative_to("localData")
    blob.unlink()
    url = stack.client("fixture-plain").generate_presigned_url("get_object",
                                                               Params={"Bucket": "fixture-plain", "Key": o["key"]})
    resp = requests.get(url, timeout=60)
    assert resp.status_code == 500 and "<Code>InternalError</Code>" in resp.text, (resp.status_code, resp.text[:300])
