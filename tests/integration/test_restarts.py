"""Restarts are invisible (issue 17): SIGKILL the dmd and start it again on the same ports and
directories while a client reads. Reads issued during the outage are retried by the gateway
within its retry window and succeed; writes that cannot complete answer 503, never 500; /ready
says not ready while the dmd is away."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tests.integration.conftest import make_client
from tests.procs import free_port, start_dmd, start_gateway

WINDOW_MS = 6000


def _ready(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _status(exc: Exception) -> object:
    if isinstance(exc, ClientError):
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return repr(exc)


def test_reads_survive_a_dmd_restart_and_writes_get_503(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd")
    metrics_port = free_port()
    gateway = start_gateway(tmp_path / "gw", dmd, env={"S3_RETRY_WINDOW_MS": str(WINDOW_MS),
                                                        "METRICS_PORT": str(metrics_port)})
    try:
        s3 = make_client(gateway.url, read_timeout=30)
        s3.create_bucket(Bucket="restarts")
        for i in range(5):
            s3.put_object(Bucket="restarts", Key=f"k{i}", Body=b"v%d" % i)
        assert _ready(metrics_port) == 200

        # 1. a short outage: every read issued meanwhile succeeds (retried within the window).
        results: list[tuple[str, object]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def reader(n: int) -> None:
            c = make_client(gateway.url, read_timeout=30)
            i = 0
            while not stop.is_set():
                op = ("get", "head", "list")[i % 3]
                try:
                    if op == "get":
                        assert c.get_object(Bucket="restarts", Key=f"k{i % 5}")["Body"].read() == b"v%d" % (i % 5)
                    elif op == "head":
                        c.head_object(Bucket="restarts", Key=f"k{i % 5}")
                    else:
                        assert len(c.list_objects_v2(Bucket="restarts")["Contents"]) == 5
                    outcome: object = "ok"
                except (ClientError, BotoCoreError) as exc:
                    outcome = _status(exc)
                with lock:
                    results.append((op, outcome))
                i += 1

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        dmd.kill()
        time.sleep(0.5)
        assert _ready(metrics_port) != 200, "/ready said ready while the dmd was down"
        time.sleep(1.0)
        dmd.start()          # same ports and directories
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(60)
        failed = [r for r in results if r[1] != "ok"]
        assert len(results) > 10
        assert not failed, f"reads failed across a short dmd restart: {failed[:10]}"
        assert _ready(metrics_port) == 200

        # 2. a longer outage: writes answer 503 (never 500), reads past the window too.
        dmd.kill()
        started = time.monotonic()
        try:
            s3.put_object(Bucket="restarts", Key="during", Body=b"x")
            raise AssertionError("a PUT succeeded with the dmd down")
        except (ClientError, BotoCoreError) as exc:
            assert _status(exc) == 503, f"PUT during the outage answered {_status(exc)}"
        try:
            s3.get_object(Bucket="restarts", Key="k0")
            raise AssertionError("a GET succeeded with the dmd down")
        except (ClientError, BotoCoreError) as exc:
            assert _status(exc) == 503, f"GET past the retry window answered {_status(exc)}"
        assert time.monotonic() - started < 10 * WINDOW_MS / 1000   # bounded: a few windows at most
        dmd.start()
        deadline = time.monotonic() + 20
        while _ready(metrics_port) != 200:
            assert time.monotonic() < deadline, "the gateway did not become ready again"
            time.sleep(0.2)
        s3.put_object(Bucket="restarts", Key="after", Body=b"y")
        assert s3.get_object(Bucket="restarts", Key="after")["Body"].read() == b"y"
        assert s3.get_object(Bucket="restarts", Key="k0")["Body"].read() == b"v0"
    finally:
        gateway.stop()
        dmd.stop()
