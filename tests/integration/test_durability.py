"""Durability end to end: SIGKILL the dmd while clients upload through the
gateway; after a restart every acknowledged object reads back byte-identical
and every failed overwrite left the previous version readable."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.conftest import make_client
from tests.procs import start_dmd, start_gateway

WRITERS = 6
KEYS_PER_WRITER = 400


def test_every_acknowledged_put_survives_a_dmd_sigkill(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd")
    gateway = start_gateway(tmp_path / "gw", dmd)
    try:
        setup = make_client(gateway.url)
        setup.create_bucket(Bucket="durable")
        acked: dict[str, str] = {}          # key -> sha256 of the last acknowledged body
        later: dict[str, set[str]] = {}     # key -> bodies tried after it, not acknowledged
        failures: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        # Clients are made here: boto3's default session is not safe to use from several threads.
        # No retries: a put either is acknowledged by its one attempt or counts as failed.
        clients = [make_client(gateway.url, connect_timeout=2, read_timeout=10,
                               retries={"total_max_attempts": 1, "mode": "standard"}) for _ in range(WRITERS)]

        def writer(n: int) -> None:
            s3 = clients[n]
            for i in range(KEYS_PER_WRITER):
                if stop.is_set():
                    return
                # Every third put overwrites an earlier key of this writer.
                key = f"w{n}/k{i if i % 3 else max(i - 3, 0)}"
                body = os.urandom(1000 + (i * 37) % 5000)
                digest = hashlib.sha256(body).hexdigest()
                try:
                    s3.put_object(Bucket="durable", Key=key, Body=body)
                except (ClientError, BotoCoreError):
                    with lock:     # not acknowledged: it may or may not have landed
                        later.setdefault(key, set()).add(digest)
                        failures.append(key)
                    continue
                with lock:
                    acked[key] = digest
                    later.pop(key, None)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 200, "the put storm did not get going"
        dmd.kill()
        time.sleep(0.5)
        dmd.start()          # same ports and directories
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        with lock:
            expected = dict(acked)
            allowed = {key: {digest} | later.get(key, set()) for key, digest in expected.items()}

        reader = make_client(gateway.url, read_timeout=30)
        deadline = time.monotonic() + 30
        while True:          # the gateway reconnects to the restarted dmd by itself
            try:
                reader.head_bucket(Bucket="durable")
                break
            except (ClientError, BotoCoreError):
                assert time.monotonic() < deadline, "gateway did not reconnect to the restarted dmd"
                time.sleep(0.2)
        lost = []
        for key in expected:
            body = reader.get_object(Bucket="durable", Key=key)["Body"].read()
            # The last acknowledged body, or a complete later one whose put failed after landing.
            if hashlib.sha256(body).hexdigest() not in allowed[key]:
                lost.append(key)
        assert not lost, f"{len(lost)} acknowledged objects came back damaged: {lost[:5]}"
        assert failures, "no put failed: the kill did not land in the middle of the load"
    finally:
        gateway.stop()
        dmd.stop()
