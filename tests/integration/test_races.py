"""Races between requests that used to lose or leak data (issue 17), with real processes: one dmd
and two gateways over it, requests sent at the same instant from threads (a barrier lines them
up), 30 rounds each. Only end states AWS could produce are accepted: exactly one winner where one
is due, no 500, no acknowledged object without its data, no object outliving its bucket, no blob
left that no object references (blobs counted in the dmd's data directory).
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.integration.test_multipart import data_files
from tests.procs import Dmd, Gateway, start_gateway

ROUNDS = 30
CREATORS = 12
OK = "OK"


@pytest.fixture(scope="module")
def second_gateway(servers_dir: Path, dmd: Dmd) -> Iterator[Gateway]:
    """Another gateway process over the same dmd: the racing requests come through both."""
    g = start_gateway(servers_dir / "gw-races", dmd)
    yield g
    g.stop()


@pytest.fixture
def clients(file_gateway: Gateway, second_gateway: Gateway) -> list:
    """Account 1 on gateway 1, account 1 on gateway 2, account 2 on gateway 2, account 1 on gateway 1 again."""
    return [make_client(file_gateway.url), make_client(second_gateway.url),
            make_client(second_gateway.url, ACCESS_KEY2, SECRET_KEY2), make_client(file_gateway.url)]


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """(OK, result) or (S3 error code, HTTP status)."""
    try:
        return OK, call()
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def race(*calls: Callable[[], Any], delays: tuple[float, ...] = ()) -> list[tuple[str, Any]]:
    """Run the calls at the same instant (call i `delays[i]` seconds later), one thread each;
    their outcomes in order."""
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> tuple[str, Any]:
        barrier.wait()
        if i < len(delays) and delays[i]:
            time.sleep(delays[i])
        return outcome(calls[i])
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, range(len(calls))))


def stagger(r: int, step: float = 0.002, steps: int = 10) -> float:
    """A delay that moves one side of a race across the other's steps, round after round."""
    return (r % steps) * step


def new_blobs(dmd: Dmd, before: set[str]) -> set[str]:
    return data_files(dmd.data_path) - before


def bucket_exists(s3, bucket: str) -> bool:
    code, _ = outcome(lambda: s3.head_bucket(Bucket=bucket))
    return code == OK


# ---- race 3: two accounts create the same new bucket ---------------------------------------------

def test_two_accounts_creating_one_bucket_name_have_exactly_one_winner(clients):
    one, _, two, _ = clients
    for r in range(ROUNDS):
        name = f"race-create-{uuid.uuid4().hex[:12]}"
        results = race(lambda: one.create_bucket(Bucket=name), lambda: two.create_bucket(Bucket=name))
        codes = sorted(code for code, _ in results)
        assert codes == sorted([OK, "BucketAlreadyExists"]), (r, results)
        loser = results[[c for c, _ in results].index("BucketAlreadyExists")]
        assert loser[1] == 409
        winner, other = (one, two) if results[0][0] == OK else (two, one)
        assert bucket_exists(winner, name)
        assert name in [b["Name"] for b in winner.list_buckets()["Buckets"]]
        assert name not in [b["Name"] for b in other.list_buckets()["Buckets"]]
        # The winner's bucket is the winner's: the loser can neither write nor read in it.
        winner.put_object(Bucket=name, Key="k", Body=b"mine")
        assert outcome(lambda: other.get_object(Bucket=name, Key="k"))[0] == "AccessDenied"
        winner.delete_object(Bucket=name, Key="k")
        winner.delete_bucket(Bucket=name)


def test_one_account_creating_one_bucket_twice_at_once_keeps_the_same_owner_answer(clients):
    one, one_again = clients[0], clients[1]
    for _ in range(10):
        name = f"race-same-{uuid.uuid4().hex[:12]}"
        results = race(lambda: one.create_bucket(Bucket=name), lambda: one_again.create_bucket(Bucket=name))
        # us-east-1 keeps legacy AWS behaviour for the owner: 200 again (else BucketAlreadyOwnedByYou).
        assert all(code in (OK, "BucketAlreadyOwnedByYou") for code, _ in results), results
        assert OK in [code for code, _ in results]
        assert name in [b["Name"] for b in one.list_buckets()["Buckets"]]
        one.delete_bucket(Bucket=name)


# ---- race 1: CompleteMultipartUpload against AbortMultipartUpload ------------------------------

def test_complete_racing_abort_has_one_winner_and_never_a_dataless_object(clients, dmd):
    one, other_gw = clients[0], clients[1]
    bucket = f"race-mpu-{uuid.uuid4().hex[:12]}"
    one.create_bucket(Bucket=bucket)
    before = data_files(dmd.data_path)
    completed: dict[str, bytes] = {}
    for r in range(ROUNDS):
        key = f"obj{r}"
        body = f"round {r} ".encode() * 100
        uid = one.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        etag = one.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=body)["ETag"]
        parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
        done, aborted = race(
            lambda: one.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload=parts),
            lambda: other_gw.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid),
            delays=(0, stagger(r, 0.004)))   # a Complete takes about twice as long as an Abort
        assert sorted([done[0], aborted[0]]) == sorted([OK, "NoSuchUpload"]), (r, done, aborted)
        if done[0] == OK:
            # Acknowledged: the object and its bytes are there.
            assert one.get_object(Bucket=bucket, Key=key)["Body"].read() == body, r
            completed[key] = body
        else:
            assert done[1] == 404
            assert outcome(lambda: one.head_object(Bucket=bucket, Key=key))[0] == "404", r
        assert one.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], r
    # Every completed object still reads back, and no part data is left that no object uses.
    for key, body in completed.items():
        assert one.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert len(new_blobs(dmd, before)) == len(completed)
    for key in completed:
        one.delete_object(Bucket=bucket, Key=key)
    assert new_blobs(dmd, before) == set()
    one.delete_bucket(Bucket=bucket)


# ---- race 4: concurrent overwrites of one key on a non-versioned bucket -----------------------

def test_concurrent_overwrites_free_each_replaced_blob_exactly_once(clients, dmd):
    one, other_gw, _, one_again = clients
    writers = [one, other_gw, one_again, other_gw]
    bucket = f"race-over-{uuid.uuid4().hex[:12]}"
    one.create_bucket(Bucket=bucket)
    before = data_files(dmd.data_path)
    for r in range(ROUNDS):
        key = f"k{r}"
        one.put_object(Bucket=bucket, Key=key, Body=b"original")
        bodies = [f"writer {i} round {r}".encode() for i in range(len(writers))]
        results = race(*(lambda s=s, b=b: s.put_object(Bucket=bucket, Key=key, Body=b)
                         for s, b in zip(writers, bodies)))
        assert all(code == OK for code, _ in results), (r, results)
        assert one.get_object(Bucket=bucket, Key=key)["Body"].read() in bodies
        # One blob per key: each replaced one was freed (none leaked, none freed twice).
        assert len(new_blobs(dmd, before)) == r + 1, r
    for r in range(ROUNDS):
        one.delete_object(Bucket=bucket, Key=f"k{r}")
    assert new_blobs(dmd, before) == set()
    one.delete_bucket(Bucket=bucket)


# ---- race 2: writes against DeleteBucket ---------------------------------------------------------

def _check_name_is_free(clients, bucket: str) -> None:
    """The bucket is gone: another account takes the name and finds nothing of the first's."""
    two = clients[2]
    two.create_bucket(Bucket=bucket)
    assert two.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert two.list_object_versions(Bucket=bucket).get("Versions", []) == []
    assert two.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert outcome(lambda: two.get_object(Bucket=bucket, Key="k"))[0] == "NoSuchKey"
    two.delete_bucket(Bucket=bucket)


def test_put_object_racing_delete_bucket_either_lands_first_or_finds_no_bucket(clients, dmd):
    one, other_gw = clients[0], clients[1]
    before = data_files(dmd.data_path)
    tally = {"write first": 0, "delete first": 0}   # both orders happen over the rounds (checked by hand)
    for r in range(ROUNDS):
        bucket = f"race-del-{uuid.uuid4().hex[:12]}"
        one.create_bucket(Bucket=bucket)
        put, delete = race(lambda: one.put_object(Bucket=bucket, Key="k", Body=b"secret bytes"),
                           lambda: other_gw.delete_bucket(Bucket=bucket), delays=(0, stagger(r)))
        if put[0] == OK:
            # The write landed first: the delete must have failed, and the object is readable.
            assert delete[0] == "BucketNotEmpty", (r, put, delete)
            assert one.get_object(Bucket=bucket, Key="k")["Body"].read() == b"secret bytes"
            tally["write first"] += 1
            one.delete_object(Bucket=bucket, Key="k")
            one.delete_bucket(Bucket=bucket)
        else:
            assert put[0] == "NoSuchBucket" and delete[0] == OK, (r, put, delete)
            tally["delete first"] += 1
            assert not bucket_exists(one, bucket)
        _check_name_is_free(clients, bucket)
    # A write refused after its data was stored freed it.
    assert new_blobs(dmd, before) == set(), tally


def test_multipart_upload_racing_delete_bucket_either_lands_first_or_finds_no_bucket(clients, dmd, file_gateway):
    one, other_gw = clients[0], clients[1]
    creators = [make_client(file_gateway.url) for _ in range(CREATORS)]
    before = data_files(dmd.data_path)
    for r in range(ROUNDS):
        bucket = f"race-delu-{uuid.uuid4().hex[:12]}"
        one.create_bucket(Bucket=bucket)
        # Many creates, spread over a few ms, keep their gateway busy, which widens the gap between
        # each one's bucket check and its write (there is no body in between); the delete starts
        # a little later each round.
        *created, delete = race(*(lambda s=s: s.create_multipart_upload(Bucket=bucket, Key="k") for s in creators),
                                lambda: other_gw.delete_bucket(Bucket=bucket),
                                delays=tuple(i * 0.0002 for i in range(CREATORS)) + (stagger(r, 0.0001, ROUNDS),))
        codes = {code for code, _ in created}
        assert codes <= {OK, "NoSuchBucket"}, (r, created)
        if OK in codes:
            # An upload landed first: the delete must have failed, and every upload acknowledged is there.
            assert delete[0] == "BucketNotEmpty", (r, created, delete)
            uids = [res["UploadId"] for code, res in created if code == OK]
            listed = one.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            assert sorted(u["UploadId"] for u in listed) == sorted(uids), r
            for uid in uids[1:]:
                one.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)
            # The upload is alive: a part and a Complete racing a second DeleteBucket.
            uid = uids[0]
            etag = one.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"part")["ETag"]
            done, delete = race(
                lambda: one.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid,
                                                      MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}),
                lambda: other_gw.delete_bucket(Bucket=bucket))
            assert done[0] == OK and delete[0] == "BucketNotEmpty", (r, done, delete)
            assert one.get_object(Bucket=bucket, Key="k")["Body"].read() == b"part"
            one.delete_object(Bucket=bucket, Key="k")
            one.delete_bucket(Bucket=bucket)
        else:
            assert delete[0] == OK, (r, created, delete)
            assert not bucket_exists(one, bucket)
        _check_name_is_free(clients, bucket)
    assert new_blobs(dmd, before) == set()


# ---- the wire extension (docs/protocol.md#conditional-writes) -----------------------------------

@pytest.mark.parametrize("native", [True, False])
async def test_conditional_writes_over_the_rpc_and_their_emulation_for_an_original_dmd(dmd, native):
    from gateway.metadata.client import RemoteMetadataClient
    from shared.metastore.errors import MetadataError

    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        assert client.conditional_writes is True          # announced in the manifest
        assert "conditionalWrites" in client.manifest["extensions"]
        client.conditional_writes = native                 # False: as against the original dmd
        sub = [f"rpc-{uuid.uuid4().hex[:8]}"]
        assert await client.put(sub, "k", "one", {"ifAbsent": True}) is None
        with pytest.raises(MetadataError) as exc:
            await client.put(sub, "k", "two", {"ifAbsent": True})
        assert (exc.value.type, exc.value.code) == ("PreconditionFailed", 412)
        with pytest.raises(MetadataError) as exc:
            await client.delete(sub, "k", {"ifMatch": "two"})
        assert exc.value.type == "PreconditionFailed"
        assert await client.put(sub, "k", "two", {"ifMatch": "one", "returnPrevious": True}) == {"previous": "one"}
        assert await client.delete(sub, "k", {"ifMatch": "two", "returnPrevious": True}) == {"previous": "two"}
        assert await client.delete(sub, "k", {"returnPrevious": True}) == {"previous": None}
        # Plain calls are the original's.
        assert await client.put(sub, "k", "three", {}) is None and await client.get(sub, "k") == "three"
    finally:
        await client.close()
