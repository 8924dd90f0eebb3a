"""Issue 19: three gateways on one PostgreSQL database, no dmd metadata in the way.

The race tests of tests/integration/test_races.py (Complete vs Abort, PutObject and multipart vs
DeleteBucket, CreateBucket by two accounts, concurrent overwrites freeing each replaced blob once)
and the hypothesis versioning model of test_versioning_model.py run here unchanged, with their
fixtures overridden: the racing requests are spread over three gateways whose metadata is the same
PostgreSQL database (data on the dmd's data service, whose directory the race tests count blobs in),
and every S3 call of the model goes to the next gateway in turn.
"""
from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration import test_races
from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.integration.test_races import (  # noqa: F401 - collected here, over the fixtures below
    test_complete_racing_abort_has_one_winner_and_never_a_dataless_object,
    test_concurrent_overwrites_free_each_replaced_blob_exactly_once,
    test_multipart_upload_racing_delete_bucket_either_lands_first_or_finds_no_bucket,
    test_one_account_creating_one_bucket_twice_at_once_keeps_the_same_owner_answer,
    test_put_object_racing_delete_bucket_either_lands_first_or_finds_no_bucket,
    test_two_accounts_creating_one_bucket_name_have_exactly_one_winner,
)
from tests.integration.test_versioning_model import test_random_versioning_sequences_match_the_model  # noqa: F401
from tests.pg_fixtures import start_pg_gateway
from tests.procs import Dmd, Gateway

# Fewer rounds than over the dmd (30): three processes and a database share 2 cores under `make test`.
PG_ROUNDS = 15


@pytest.fixture(autouse=True)
def _rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_races, "ROUNDS", PG_ROUNDS)


@pytest.fixture(scope="module")
def pg_gateways(servers_dir: Path, dmd: Dmd, pg_url: str, pg_gateway: Gateway) -> Iterator[list[Gateway]]:
    extra = [start_pg_gateway(servers_dir / f"gw-pg-race-{i}", dmd, pg_url) for i in (2, 3)]
    yield [pg_gateway, *extra]
    for g in extra:
        g.stop()


@pytest.fixture
def file_gateway(pg_gateways: list[Gateway]) -> Gateway:
    """The race tests' `file_gateway` (where they send the follow-up requests): the first pg gateway."""
    return pg_gateways[0]


@pytest.fixture
def clients(pg_gateways: list[Gateway]) -> list:
    """As test_races.clients, over three gateways: account 1 on gateways 1 and 2, account 2 on
    gateway 3, account 1 on gateway 3."""
    g1, g2, g3 = pg_gateways
    return [make_client(g1.url), make_client(g2.url), make_client(g3.url, ACCESS_KEY2, SECRET_KEY2),
            make_client(g3.url)]


class RoundRobin:
    """A boto3 S3 client whose every call goes to the next of several (one per gateway)."""

    def __init__(self, clients: list[Any]) -> None:
        self._clients = clients
        self._next = itertools.cycle(clients)

    def __getattr__(self, name: str) -> Any:
        return getattr(next(self._next), name)


@pytest.fixture
def s3(pg_gateways: list[Gateway]) -> RoundRobin:
    return RoundRobin([make_client(g.url) for g in pg_gateways])


def test_concurrent_versioned_puts_and_deletes_of_one_key_across_three_gateways(pg_gateways):
    """Versioned PUTs, DELETEs (delete markers) and DELETEs of a version id, of one key, at once
    through three gateways, round after round: every acknowledged version is listed once (unless
    deleted by id), exactly one version is the latest, and a GET answers that latest version."""
    clients = [make_client(g.url) for g in pg_gateways]
    bucket = f"pg-vrace-{uuid.uuid4().hex[:10]}"
    clients[0].create_bucket(Bucket=bucket)
    clients[0].put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put_versions: dict[str, bytes] = {}
    markers: set[str] = set()
    removed: set[str] = set()
    for r in range(PG_ROUNDS):
        listed = clients[0].list_object_versions(Bucket=bucket).get("Versions", [])
        victim = listed[-1]["VersionId"] if listed else None   # the oldest version, deleted by id
        bodies = [f"r{r}-g{i}".encode() for i in range(3)]
        calls = [lambda i=i: clients[i].put_object(Bucket=bucket, Key="k", Body=bodies[i]) for i in range(3)]
        calls.append(lambda: clients[r % 3].delete_object(Bucket=bucket, Key="k"))
        if victim is not None:
            calls.append(lambda: clients[(r + 1) % 3].delete_object(Bucket=bucket, Key="k", VersionId=victim))
        results = test_races.race(*calls)
        assert all(code == test_races.OK for code, _ in results), (r, results)
        for i in range(3):
            put_versions[results[i][1]["VersionId"]] = bodies[i]
        markers.add(results[3][1]["VersionId"])
        if victim is not None:
            removed.add(victim)
        versions = clients[1].list_object_versions(Bucket=bucket)
        got = {v["VersionId"]: v for v in versions.get("Versions", [])}
        got_markers = {m["VersionId"]: m for m in versions.get("DeleteMarkers", [])}
        assert set(got) == set(put_versions) - removed, r
        assert set(got_markers) == markers, r
        latest = [v for v in [*got.values(), *got_markers.values()] if v["IsLatest"]]
        assert len(latest) == 1, (r, latest)
        # The latest is the newest: listed first (ids sort newest-first, the encoding keeps the order).
        assert latest[0]["VersionId"] == min([*got, *got_markers]), (r, latest)
        try:
            current = clients[2].get_object(Bucket=bucket, Key="k")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey"
            assert latest[0]["VersionId"] in markers, r
        else:
            assert current["VersionId"] == latest[0]["VersionId"], r
            assert current["Body"].read() == put_versions[current["VersionId"]]
