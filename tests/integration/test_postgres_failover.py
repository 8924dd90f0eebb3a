"""Issue 19: PostgreSQL failover under a write storm loses no acknowledged write.

A primary with a synchronous streaming-replication standby (synchronous_commit on), two gateways
whose connection string names both hosts (target_session_attrs=read-write). Threads write objects
through both gateways; mid-storm the primary is killed (pg_ctl stop -m immediate: no shutdown
checkpoint, as a crash) and the standby promoted. Requests during the switch may fail with 503
(never 500); afterwards every acknowledged object reads back identical, through both gateways.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botocore.exceptions import ClientError

from shared.pgcluster import PgCluster, temp_root
from tests.integration.conftest import make_client
from tests.pg_fixtures import start_pg_gateway, temp_cluster_or_skip

WRITERS = 6
STORM_BEFORE_S = 2.0
STORM_AFTER_S = 4.0


def _wait_sync(primary: PgCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if primary.psql("SELECT sync_state FROM pg_stat_replication").strip() == "sync":
            return
        time.sleep(0.2)
    raise AssertionError("the standby never became synchronous")


def test_promoting_the_standby_mid_storm_loses_no_acknowledged_object(tmp_path: Path, dmd):
    primary = temp_cluster_or_skip("pys3-pg-primary-", extra_conf="synchronous_commit = on\n")
    standby = PgCluster(temp_root("pys3-pg-standby-"))
    gws = []
    try:
        primary.create_database()
        standby.init_standby(primary).start()
        # Synchronous once the standby is there (before, every commit would wait for it).
        primary.psql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        primary.psql("SELECT pg_reload_conf()")
        _wait_sync(primary)
        url = (f"postgresql://s3@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/s3"
               "?target_session_attrs=read-write")
        gws = [start_pg_gateway(tmp_path / f"gw-failover-{i}", dmd, url, env={"S3_RETRY_WINDOW_MS": "2000"})
               for i in (1, 2)]
        clients = [make_client(g.url) for g in gws]
        clients[0].create_bucket(Bucket="failover")

        acked: dict[str, str] = {}
        statuses: list[int] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w: int) -> None:
            s3 = make_client(gws[w % 2].url)
            i = 0
            while not stop.is_set():
                key = f"w{w}/{i}"
                body = os.urandom(512 + (i % 7) * 100)
                try:
                    s3.put_object(Bucket="failover", Key=key, Body=body)
                except ClientError as exc:
                    with lock:
                        statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
                except Exception:   # noqa: BLE001 - a connection error is a failed, unacknowledged write
                    pass
                else:
                    with lock:
                        acked[key] = hashlib.md5(body).hexdigest()
                i += 1

        with ThreadPoolExecutor(WRITERS) as pool:
            futures = [pool.submit(writer, w) for w in range(WRITERS)]
            time.sleep(STORM_BEFORE_S)
            before_failover = len(acked)
            primary.stop("immediate")
            standby.promote()
            time.sleep(STORM_AFTER_S)
            stop.set()
            for f in futures:
                f.result()
        assert before_failover > 0
        assert len(acked) > before_failover, "no write succeeded after the promotion"
        assert all(code == 503 for code in statuses), statuses   # never a 500
        for n, (key, digest) in enumerate(sorted(acked.items())):
            got = clients[n % 2].get_object(Bucket="failover", Key=key)["Body"].read()
            assert hashlib.md5(got).hexdigest() == digest, key
        listed = set()
        for page in clients[1].get_paginator("list_objects_v2").paginate(Bucket="failover"):
            listed.update(o["Key"] for o in page.get("Contents", []))
        assert set(acked) <= listed
        print(f"failover: {len(acked)} acknowledged writes ({before_failover} before the promotion), "
              f"{len(statuses)} answered 503 during the switch")
    finally:
        for g in gws:
            g.stop()
        standby.remove()
        primary.remove()
