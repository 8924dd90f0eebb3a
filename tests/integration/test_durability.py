"""Durability end to end: SIGKILL the dmd while clients overwrite objects through the
gateway; after a restart every acknowledged object reads back byte-identical: the
last acknowledged body (or a later one whose put was not acknowledged), never an
older body, never missing or damaged data.

Overwrites are what can lose data (the replaced blob is freed): so after a short
fill, every put overwrites an existing key with a new body, and the dmd is killed
several times while those overwrites stream in. After each restart the writers
pause and every key is checked before a later overwrite could hide the damage. The
test also checks that overwrites were acknowledged right before each kill and that
some put failed: the kills did land in the middle of the overwrites."""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

from tests.integration.conftest import make_client
from tests.procs import start_dmd, start_gateway

WRITERS = 6
KEYS_PER_WRITER = 20      # small pools: every key is overwritten many times
KILLS = 4
OVERWRITES_BEFORE_KILL = 120


def _wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _bucket_readable(s3) -> bool:
    try:
        s3.head_bucket(Bucket="durable")
        return True
    except (ClientError, BotoCoreError):
        return False


class Load:
    """WRITERS threads overwriting their own keys; `pause()` parks them between two puts."""

    def __init__(self, url: str) -> None:
        self.acked: dict[str, str] = {}                 # key -> sha256 of the last acknowledged body
        self.allowed_extra: dict[str, set[str]] = {}    # key -> unacknowledged bodies that may have landed
        self.timed_out: set[str] = set()                # digests of puts whose answer never came
        self.overwrite_acks: list[float] = []           # monotonic time of each acknowledged overwrite
        self.failures = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.parked = 0
        # Clients are made here: boto3's default session is not safe to use from several threads.
        # No retries: a put either is acknowledged by its one attempt or counts as failed.
        self.clients = [make_client(url, connect_timeout=2, read_timeout=10,
                                    retries={"total_max_attempts": 1, "mode": "standard"}) for _ in range(WRITERS)]
        self.threads = [threading.Thread(target=self.writer, args=(n,)) for n in range(WRITERS)]

    def writer(self, n: int) -> None:
        s3, rng = self.clients[n], random.Random(n)
        i = 0
        while not self.stop.is_set():
            if not self.go.is_set():
                with self.lock:
                    self.parked += 1
                self.go.wait()
                with self.lock:
                    self.parked -= 1
                continue
            # First each key of the pool once, then overwrites of a random existing key.
            key = f"w{n}/k{i if i < KEYS_PER_WRITER else rng.randrange(KEYS_PER_WRITER)}"
            body = os.urandom(1000 + rng.randrange(5000))
            digest = hashlib.sha256(body).hexdigest()
            i += 1
            try:
                s3.put_object(Bucket="durable", Key=key, Body=body)
            except (ClientError, BotoCoreError) as exc:
                with self.lock:     # not acknowledged: it may or may not have landed
                    self.allowed_extra.setdefault(key, set()).add(digest)
                    self.failures += 1
                    if isinstance(exc, ReadTimeoutError):
                        self.timed_out.add(digest)   # may still be in flight: may land after a later ack
                continue
            with self.lock:
                if key in self.acked:
                    self.overwrite_acks.append(time.monotonic())
                self.acked[key] = digest
                # A failed put before this acknowledged one cannot land after it, unless it timed out.
                self.allowed_extra[key] = {d for d in self.allowed_extra.get(key, set()) if d in self.timed_out}

    def overwrites(self) -> int:
        with self.lock:
            return len(self.overwrite_acks)

    def pause(self) -> None:
        self.go.clear()
        _wait_until(lambda: self.parked == WRITERS, 60, "the writers to pause")

    def finish(self) -> None:
        self.stop.set()
        self.go.set()
        for t in self.threads:
            t.join(60)

    def check(self, reader) -> None:
        """Every acknowledged key holds its last acknowledged body (or a later unacknowledged one)."""
        with self.lock:
            allowed = {key: {digest} | self.allowed_extra.get(key, set()) for key, digest in self.acked.items()}
        lost, stale = [], []
        for key, digests in allowed.items():
            try:
                body = reader.get_object(Bucket="durable", Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                lost.append(f"{key}: {exc}")
                continue
            if hashlib.sha256(body).hexdigest() not in digests:
                stale.append(key)
        assert not lost, f"{len(lost)} of {len(allowed)} acknowledged objects unreadable: {lost[:3]}"
        assert not stale, f"{len(stale)} of {len(allowed)} objects lost their last acknowledged body: {stale[:5]}"


def test_every_acknowledged_overwrite_survives_dmd_sigkills(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd")
    gateway = start_gateway(tmp_path / "gw", dmd)
    load = None
    try:
        make_client(gateway.url).create_bucket(Bucket="durable")
        reader = make_client(gateway.url, read_timeout=30)
        load = Load(gateway.url)
        for t in load.threads:
            t.start()
        for _ in range(KILLS):
            start = load.overwrites()
            _wait_until(lambda: load.overwrites() >= start + OVERWRITES_BEFORE_KILL, 60,
                        "overwrites to be acknowledged")
            killed_at = time.monotonic()
            dmd.kill()
            load.go.clear()      # each writer ends its put in flight, starts no other: none hides damage
            time.sleep(0.2)
            dmd.start()          # same ports and directories
            load.pause()
            with load.lock:
                just_before = [t for t in load.overwrite_acks if killed_at - 0.5 <= t <= killed_at]
            assert just_before, "no overwrite was acknowledged in the half second before the kill"
            # The gateway reconnects to the restarted dmd by itself.
            _wait_until(lambda: _bucket_readable(reader), 30, "the gateway to reconnect to the restarted dmd")
            load.check(reader)
            load.go.set()
        load.finish()
        assert load.failures, "no put failed: the kills did not land in the middle of the load"
        load.check(reader)
    finally:
        if load is not None:
            load.finish()
        gateway.stop()
        dmd.stop()
