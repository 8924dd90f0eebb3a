"""DeleteObjects of 1000 keys as one batch (issue 18): the metadata deletes run many at a time and
the data they unreference is freed after them, off the response path.

Checked against a dmd and a gateway of this module's own, whose data folder is watched:
- the result document of 1000 keys is exactly AWS's (request order, the fields of each kind of
  entry: plain delete, delete marker created, version removed, delete marker removed; quiet mode);
- the blobs of what was deleted are gone afterwards (a bounded wait), and only those: a delete
  marker keeps the data of the version it hides;
- a dmd SIGKILLed during big DeleteObjects never leaves a key listed whose data is gone: every key
  listed after the restart reads back whole, and no key the gateway answered Deleted is listed.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.conftest import make_client
from tests.procs import Dmd, Gateway, start_dmd, start_gateway

KEYS = 1000
BODY_SIZE = 4096
FREE_WAIT_S = 60.0    # the background frees of a loaded machine


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway]]:
    tmp = tmp_path_factory.mktemp("delete-batch")
    dmd = start_dmd(tmp / "dmd")
    try:
        gateway = start_gateway(tmp / "gw", dmd)
    except BaseException:
        dmd.stop()
        raise
    yield dmd, gateway
    gateway.stop()
    dmd.stop()


@pytest.fixture
def s3(servers):
    return make_client(servers[1].url, read_timeout=120)


def blobs(dmd: Dmd) -> set[str]:
    """The data blobs the dmd holds (its numbered folders; not the temporary folder)."""
    return {p.name for p in dmd.data_path.glob("[0-9]*/*") if p.is_file()}


def wait_for_blobs(dmd: Dmd, expected: set[str], timeout: float = FREE_WAIT_S) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        now = blobs(dmd)
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def body_of(i: int) -> bytes:
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (BODY_SIZE // len(seed) + 1))[:BODY_SIZE]


def put_all(s3, bucket: str, keys: list[str]) -> dict[str, str]:
    """PUT keys[i] = body_of(i); key -> VersionId (None on an unversioned bucket)."""
    def put(i: int) -> tuple[str, str | None]:
        return keys[i], s3.put_object(Bucket=bucket, Key=keys[i], Body=body_of(i)).get("VersionId")
    with ThreadPoolExecutor(16) as ex:
        return dict(ex.map(put, range(len(keys))))


def strip(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "ResponseMetadata"} for e in entries]


def test_1000_keys_unversioned_aws_result_and_data_freed(s3, servers):
    dmd, _ = servers
    bucket = "batch-plain"
    s3.create_bucket(Bucket=bucket)
    before = blobs(dmd)
    existing = [f"k/{i:05d}" for i in range(900)]
    put_all(s3, bucket, existing)
    assert len(blobs(dmd) - before) == len(existing)
    # request order interleaves existing and missing keys (missing: Deleted too, as on AWS)
    keys = [f"k/{i:05d}" for i in range(KEYS)]
    keys = keys[::2] + keys[1::2]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert "Errors" not in out
    assert strip(out["Deleted"]) == [{"Key": k} for k in keys]   # no VersionId, no DeleteMarker
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert wait_for_blobs(dmd, before) == before, "the deleted objects' blobs were not freed"
    # quiet: the same deletes, nothing listed
    put_all(s3, bucket, existing)
    out = s3.delete_objects(Bucket=bucket, Delete={"Quiet": True, "Objects": [{"Key": k} for k in keys]})
    assert "Deleted" not in out and "Errors" not in out
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert wait_for_blobs(dmd, before) == before


def test_1000_keys_versioned_aws_result_and_only_removed_versions_freed(s3, servers):
    dmd, _ = servers
    bucket = "batch-versioned"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    before = blobs(dmd)
    keys = [f"v/{i:05d}" for i in range(KEYS)]
    v1 = put_all(s3, bucket, keys)
    with_data = blobs(dmd)
    assert len(with_data - before) == KEYS
    # keys 900..999 get a delete marker first; deleting that marker's version removes the marker
    markers = {}
    for k in keys[900:]:
        markers[k] = s3.delete_object(Bucket=bucket, Key=k)["VersionId"]
    request, expected = [], []
    for i, k in enumerate(keys):
        if i < 500:        # no VersionId: a delete marker is created
            request.append({"Key": k})
        elif i < 900:      # a version: removed, its data freed
            request.append({"Key": k, "VersionId": v1[k]})
            expected.append({"Key": k, "VersionId": v1[k]})
        else:              # the delete marker's version: removed, the object is back
            request.append({"Key": k, "VersionId": markers[k]})
            expected.append({"Key": k, "VersionId": markers[k], "DeleteMarker": True,
                             "DeleteMarkerVersionId": markers[k]})
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": request})
    assert "Errors" not in out
    got = strip(out["Deleted"])
    assert [e["Key"] for e in got] == [r["Key"] for r in request]          # request order
    created = got[:500]
    assert all(e["DeleteMarker"] is True and e["DeleteMarkerVersionId"] and set(e) == {
        "Key", "DeleteMarker", "DeleteMarkerVersionId"} for e in created)
    assert got[500:] == expected
    # what is left: 500 hidden objects (marker + data), 100 restored objects, 400 keys gone
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == keys[900:]
    version_keys, marker_of = [], {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        version_keys += [v["Key"] for v in page.get("Versions", [])]
        marker_of.update({m["Key"]: m["VersionId"] for m in page.get("DeleteMarkers", [])})
    assert sorted(version_keys) == keys[:500] + keys[900:]
    assert marker_of == {e["Key"]: e["DeleteMarkerVersionId"] for e in created}
    for k in keys[900:] + keys[:3]:
        assert s3.get_object(Bucket=bucket, Key=k, VersionId=v1[k])["Body"].read() == body_of(keys.index(k))
    # exactly the 400 removed versions' blobs are freed
    deadline = time.monotonic() + FREE_WAIT_S
    while len(blobs(dmd) - before) != KEYS - 400 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(blobs(dmd) - before) == KEYS - 400
    assert blobs(dmd) <= with_data


def _bucket_readable(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except (ClientError, BotoCoreError):
        return False


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _settled_listing(s3, bucket: str, prefix: str, quiet_s: float = 1.5, timeout: float = 60) -> set[str]:
    deadline = time.monotonic() + timeout
    last: set[str] | None = None
    while True:
        now: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            now |= {o["Key"] for o in page.get("Contents", [])}
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(quiet_s)


@pytest.mark.parametrize("kill_when", ["metadata", "freeing"])
def test_sigkilled_dmd_during_big_delete_objects_leaves_no_listed_key_without_data(servers, kill_when):
    """kill_when=metadata: SIGKILL shortly after the request is sent (its metadata deletes in flight);
    freeing: SIGKILL as soon as the first blob of the bucket is gone. Then restart the dmd: every
    key listed reads back whole; a key answered Deleted is not listed."""
    dmd, gateway = servers
    s3 = make_client(gateway.url, read_timeout=120)
    fast = make_client(gateway.url, connect_timeout=2, read_timeout=20)
    bucket = f"batch-crash-{kill_when}"
    s3.create_bucket(Bucket=bucket)
    rounds = 3
    mid_request: list[int] = []     # keys still listed after each kill
    for r in range(rounds):
        keys = [f"c{r}/{i:05d}" for i in range(KEYS)]
        before = blobs(dmd)
        put_all(s3, bucket, keys)
        mine = blobs(dmd) - before
        assert len(mine) == KEYS
        answer: dict = {}

        def delete() -> None:
            try:
                answer["out"] = fast.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
            except (ClientError, BotoCoreError) as exc:
                answer["error"] = exc

        worker = threading.Thread(target=delete)
        worker.start()
        if kill_when == "metadata":
            time.sleep(0.02 + 0.05 * r)
        else:
            _wait(lambda: not mine <= blobs(dmd), 60, "the first blob to be freed")
        dmd.kill()
        worker.join(60)
        assert not worker.is_alive()
        dmd.start()
        _wait(lambda: _bucket_readable(s3, bucket), 60, "the gateway to reach the restarted dmd")
        # The gateway may still finish metadata calls it sent before the kill (their outcome was
        # unknown to the request): wait until the listing stops changing.
        listed = _settled_listing(s3, bucket, f"c{r}/")
        outcome = answer.get("out", {})
        acked = {e["Key"] for e in outcome.get("Deleted", [])}
        assert not acked & listed, f"{len(acked & listed)} keys answered Deleted are still listed"
        failed = {e["Key"] for e in outcome.get("Errors", [])}
        assert acked | failed == set(keys) or "error" in answer   # every key answered, or the request failed
        broken: list[str] = []

        def check(k: str) -> None:
            try:
                got = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                got = repr(exc)
            if got != body_of(keys.index(k)):
                broken.append(f"{k}: {got[:120]!r}")
        with ThreadPoolExecutor(16) as ex:
            list(ex.map(check, sorted(listed)))
        assert not broken, f"{len(broken)} listed keys do not read back (data freed?): {broken[:3]}"
        mid_request.append(len(listed))
        # clean up for the next round (and check the survivors can still be deleted)
        if listed:
            out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in sorted(listed)]})
            assert "Errors" not in out
    if kill_when == "metadata":   # the kills did land while metadata deletes were in flight
        assert any(n > 0 for n in mid_request), mid_request
