"""Gateways cache bucket records while the dmd announces every change of them (the
bucketInvalidation extension, docs/protocol.md#bucket-record-invalidation). Real processes: one
dmd of this module's own and two gateways over it. A gateway that has read a bucket sees another
gateway's change of it within moments (the announcement's trip: AWS too calls bucket
configuration eventually consistent), and its own changes at once; a bucket deleted through one
gateway takes no write through the other; a gateway that was away while a change happened (its
connection lost) must not answer from what it cached before.
"""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client
from tests.procs import Dmd, Gateway, start_dmd, start_gateway


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway, Gateway]]:
    tmp = tmp_path_factory.mktemp("bucket-cache")
    dmd = start_dmd(tmp / "dmd")
    one = start_gateway(tmp / "gw1", dmd)
    two = start_gateway(tmp / "gw2", dmd)
    yield dmd, one, two
    one.stop()
    two.stop()
    dmd.stop()


PROPAGATION_S = 5.0   # generous for a loaded machine; in practice a millisecond or two


def _versioning(s3, bucket: str) -> str | None:
    return s3.get_bucket_versioning(Bucket=bucket).get("Status")


def _eventually_versioning(s3, bucket: str, expected: str) -> str | None:
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        status = _versioning(s3, bucket)
        if status == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


def _public_read_policy(bucket: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]})


def test_a_change_through_one_gateway_reaches_the_other(cluster) -> None:
    _, one, two = cluster
    s3a, s3b = make_client(one.url), make_client(two.url)
    for _ in range(20):
        bucket = f"cache-{uuid.uuid4().hex[:12]}"
        s3a.create_bucket(Bucket=bucket)
        assert _versioning(s3b, bucket) is None          # gateway 2 has read (and may cache) it
        assert _versioning(s3b, bucket) is None
        s3a.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        assert _versioning(s3a, bucket) == "Enabled"               # its own write: at once
        assert _eventually_versioning(s3b, bucket, "Enabled") == "Enabled"
        s3b.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
        assert _versioning(s3b, bucket) == "Suspended"
        assert _eventually_versioning(s3a, bucket, "Suspended") == "Suspended"
        s3a.delete_bucket(Bucket=bucket)
        assert _eventually_gone(s3b, bucket)


def _eventually_gone(s3, bucket: str) -> bool:
    deadline = time.monotonic() + PROPAGATION_S
    while True:
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as err:
            return err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_bucket_deleted_through_one_gateway_takes_no_write_through_the_other(cluster) -> None:
    dmd, one, two = cluster
    s3a, s3b = make_client(one.url), make_client(two.url)
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=bucket)
    s3b.put_object(Bucket=bucket, Key="warm", Body=b"x")    # gateway 2 caches the bucket
    s3b.delete_object(Bucket=bucket, Key="warm")
    s3a.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as err:
        s3b.put_object(Bucket=bucket, Key="late", Body=b"y")
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"
    s3a.create_bucket(Bucket=bucket)                          # a new bucket of the same name is empty
    assert s3b.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3a.delete_bucket(Bucket=bucket)


def test_a_gateway_away_during_a_change_does_not_answer_from_its_cache(cluster) -> None:
    """Gateway 2 is frozen (SIGSTOP) while the dmd restarts and gateway 1 changes the bucket: the
    invalidation never reaches it. Once it runs again it reconnects and must read afresh."""
    dmd, one, two = cluster
    s3a, s3b = make_client(one.url), make_client(two.url, retries={"max_attempts": 10, "mode": "standard"})
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    s3a.create_bucket(Bucket=bucket)
    s3a.put_object(Bucket=bucket, Key="k", Body=b"data")
    anonymous_url = f"{two.url}/{bucket}/k"
    import httpx
    assert httpx.get(anonymous_url).status_code == 403          # gateway 2 caches the policy-less bucket
    assert two.popen is not None
    os.kill(two.popen.pid, signal.SIGSTOP)
    try:
        dmd.kill()
        dmd.start()
        s3a_retrying = make_client(one.url, retries={"max_attempts": 10, "mode": "standard"})
        s3a_retrying.put_bucket_policy(Bucket=bucket, Policy=_public_read_policy(bucket))
    finally:
        os.kill(two.popen.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        status = httpx.get(anonymous_url).status_code
        if status != 503 and status != 500:
            break
        time.sleep(0.2)
    assert status == 200
    s3b.delete_bucket_policy(Bucket=bucket)
    assert httpx.get(f"{one.url}/{bucket}/k").status_code == 403
    s3a.delete_object(Bucket=bucket, Key="k")
    s3a.delete_bucket(Bucket=bucket)

