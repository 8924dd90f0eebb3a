"""The metrics port of the current CloudServer (docs/operations.md#health-and-metrics) on real processes.

/metrics (Prometheus text: request counter and histogram by method/action/code, in-flight
gauge, disk gauges from the dmd), /live and /ready (the shallow and deep health checks, 500
once the dmd is gone), 405 for anything else; a busy port never stops the gateway, and several
workers report one set of totals.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import (
    DURATION_BUCKETS,
    ENV_MULTIPROC_DIR,
    MetricsSettings,
    metrics_settings,
    prepare_workers,
)
from shared.config import REPO_ROOT, Config, ConfigError, load_config
from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, make_client
from tests.procs import Dmd, Gateway, free_port, start_dmd, start_gateway, wait_for_port

REQUESTS = "s3_cloudserver_http_requests_total"
DURATION = "s3_cloudserver_http_request_duration_seconds"
ACTIVE = "s3_cloudserver_http_active_requests"
DISK_AVAILABLE, DISK_TOTAL = "s3_cloudserver_disk_available_bytes", "s3_cloudserver_disk_total_bytes"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def metrics_pids(gateway: Gateway) -> list[int]:
    """Pids of the workers that logged serving the metrics port, in order."""
    return [entry["pid"] for entry in (json.loads(line) for line in gateway.log_text().splitlines()
                                       if line.startswith("{"))
            if entry.get("message") == "metrics port listening"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway, int]]:
    tmp = tmp_path_factory.mktemp("metrics")
    dmd = start_dmd(tmp / "dmd")
    port = free_port()
    gateway = start_gateway(tmp / "gw", dmd, env={"METRICS_PORT": str(port), "LOG_LEVEL": "info"})
    try:
        wait_for_port(port, gateway.popen)
        yield dmd, gateway, port
    finally:
        gateway.stop()
        dmd.stop()


@pytest.fixture
def metrics_port(stack: tuple[Dmd, Gateway, int]) -> int:
    return stack[2]


@pytest.fixture
def s3(stack: tuple[Dmd, Gateway, int]):  # type: ignore[no-untyped-def]
    return make_client(stack[1].url)


def test_requests_total_counts_each_request_by_method_action_and_code(s3, metrics_port: int) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:12]}"
    before = scrape(metrics_port)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="k2", Body=b"hello")
    s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=bucket, Key="missing")
    after = scrape(metrics_port)

    def delta(method: str, action: str, code: str) -> float:
        labels = {"method": method, "action": action, "code": code}
        return value(after, REQUESTS, **labels) - value(before, REQUESTS, **labels)

    assert delta("PUT", "CreateBucket", "200") == 1
    assert delta("PUT", "PutObject", "200") == 2
    assert delta("GET", "GetObject", "200") == 1
    assert delta("HEAD", "HeadObject", "404") == 1


def test_unrouted_request_counts_under_action_unknown_and_a_foreign_method_as_other(
        stack: tuple[Dmd, Gateway, int], metrics_port: int) -> None:
    before = scrape(metrics_port)
    r = httpx.request("PATCH", stack[1].url + "/some-bucket")  # no S3 action has PATCH
    assert r.status_code == 405
    after = scrape(metrics_port)
    labels = {"method": "OTHER", "action": "unknown", "code": "405"}
    assert value(after, REQUESTS, **labels) - value(before, REQUESTS, **labels) == 1


def test_duration_histogram_has_the_reference_buckets_and_counts_every_request(s3, metrics_port: int) -> None:
    s3.list_buckets()
    samples = scrape(metrics_port)
    labels = {"method": "GET", "action": "ListBuckets", "code": "200"}
    bounds = sorted(float(dict(key)["le"]) for name, key in samples
                    if name == DURATION + "_bucket" and frozenset(labels.items()) <= key)
    assert bounds == [*DURATION_BUCKETS, float("inf")]
    count = value(samples, DURATION + "_count", **labels)
    assert count == value(samples, REQUESTS, **labels) >= 1
    assert value(samples, DURATION + "_bucket", **labels, le="+Inf") == count
    assert 0 < value(samples, DURATION + "_sum", **labels) < 10 * count


def _signed_put_headers(url: str, length: int) -> dict[str, str]:
    class UnsignedPayload(S3SigV4Auth):
        def _should_sha256_sign_payload(self, request: AWSRequest) -> bool:
            return False

    request = AWSRequest(method="PUT", url=url, headers={"Content-Length": str(length)})
    UnsignedPayload(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_active_requests_counts_a_request_while_its_body_is_still_arriving(
        s3, stack: tuple[Dmd, Gateway, int], metrics_port: int) -> None:
    bucket = f"metrics-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    url = f"{stack[1].url}/{bucket}/slow"
    release = threading.Event()
    result: dict[str, int] = {}

    def body() -> Iterator[bytes]:
        yield b"abc"
        release.wait(20)
        yield b"defghij"

    def put() -> None:
        result["status"] = httpx.put(url, content=body(), headers=_signed_put_headers(url, 10), timeout=30).status_code

    sender = threading.Thread(target=put)
    sender.start()
    try:
        assert wait_until(lambda: value(scrape(metrics_port), ACTIVE) == 1)
    finally:
        release.set()
        sender.join(30)
    assert result["status"] == 200
    assert s3.get_object(Bucket=bucket, Key="slow")["Body"].read() == b"abcdefghij"
    assert value(scrape(metrics_port), ACTIVE) == 0


def test_disk_gauges_report_the_dmd_data_disk(stack: tuple[Dmd, Gateway, int], metrics_port: int) -> None:
    samples = scrape(metrics_port)
    st = os.statvfs(stack[0].data_path)
    assert value(samples, DISK_TOTAL) == st.f_blocks * st.f_frsize
    assert 0 < value(samples, DISK_AVAILABLE) <= value(samples, DISK_TOTAL)


def test_live_and_ready_answer_200_with_the_healthcheck_bodies(metrics_port: int) -> None:
    live = httpx.get(f"http://127.0.0.1:{metrics_port}/live")
    assert live.status_code == 200 and live.headers["content-type"] == "application/json"
    assert live.json() == {"metadata": {"code": 200, "message": "OK"}}
    ready = httpx.post(f"http://127.0.0.1:{metrics_port}/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["us-east-1"] == {"code": 200, "message": "OK"}
    assert body["bucketfile"] == {"code": 200, "message": "OK"}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/foo"), ("GET", "/metrics/x"), ("GET", "/_/healthcheck"),
    ("PUT", "/metrics"), ("POST", "/metrics"), ("HEAD", "/metrics"), ("DELETE", "/live"), ("PUT", "/ready"),
])
def test_other_paths_and_methods_get_405(metrics_port: int, method: str, path: str) -> None:
    r = httpx.request(method, f"http://127.0.0.1:{metrics_port}{path}")
    assert r.status_code == 405
    if method != "HEAD":
        assert r.json() == []


def test_live_and_ready_fail_with_500_while_the_dmd_is_down_then_recover(tmp_path: Path) -> None:
    dmd = start_dmd(tmp_path / "dmd")
    port = free_port()
    gateway = start_gateway(tmp_path / "gw", dmd, env={"METRICS_PORT": str(port)})
    try:
        wait_for_port(port, gateway.popen)
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200
        dmd.stop()
        live = httpx.get(f"http://127.0.0.1:{port}/live")
        assert (live.status_code, live.json()) == (500, [])
        ready = httpx.get(f"http://127.0.0.1:{port}/ready")
        assert ready.status_code == 500
        assert ready.json()["bucketfile"] == {"error": "unreachable"}
        # /metrics still answers, without the disk gauges it cannot read.
        samples = scrape(port)
        assert (DISK_AVAILABLE, frozenset()) not in samples
        dmd.start()
        assert wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200, 20)
    finally:
        gateway.stop()
        dmd.stop()


def test_busy_metrics_port_is_logged_and_retried_while_s3_keeps_serving(tmp_path: Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    gateway = start_gateway(tmp_path / "gw", None, env={"METRICS_PORT": str(port)})  # mem backend
    try:
        make_client(gateway.url).list_buckets()
        assert wait_until(lambda: "metrics port unavailable" in gateway.log_text(), 5)
        assert gateway.popen is not None and gateway.popen.poll() is None
        squatter.close()
        # The retry binds the port once it is free; mem backend: disk gauges from the metadata store.
        wait_for_port(port, gateway.popen, timeout=15)
        samples = scrape(port)
        assert value(samples, REQUESTS, method="GET", action="ListBuckets", code="200") == 1
        assert value(samples, DISK_AVAILABLE) > 0
    finally:
        squatter.close()
        gateway.stop()


def test_workers_report_one_total_and_another_worker_takes_over_the_port(tmp_path: Path) -> None:
    port = free_port()
    gateway = start_gateway(tmp_path / "gw", None, workers=2, env={
        "METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "LOG_LEVEL": "info"})
    try:
        wait_for_port(port, gateway.popen)
        requests = 40
        for _ in range(requests):  # a new connection each time: the workers share the accepts
            assert httpx.get(gateway.url + "/", headers={"connection": "close"}).status_code == 403
        labels = {"method": "GET", "action": "ListBuckets", "code": "403"}
        assert value(scrape(port), REQUESTS, **labels) == requests
        # Each worker logs its requests with its pid: the total above summed two processes.
        pids = {json.loads(line)["pid"] for line in gateway.log_text().splitlines()
                if line.startswith("{") and json.loads(line).get("message") == "request"}
        assert len(pids) == 2
        assert len(metrics_pids(gateway)) == 1

        os.kill(metrics_pids(gateway)[0], signal.SIGKILL)
        assert wait_until(lambda: len(metrics_pids(gateway)) == 2, 20)
        wait_for_port(port, gateway.popen)
        # The dead worker's counts stay in the total; its in-flight gauge is dropped.
        samples = scrape(port)
        assert value(samples, REQUESTS, **labels) == requests
        assert value(samples, ACTIVE) == 0
    finally:
        gateway.stop()


# --- where the port listens (in process: no server needed) ---------------------------------------

def _config_with(tmp_path: Path, env: dict[str, str] | None = None, **fields: object) -> Config:
    """The shipped config.json with `fields` changed, loaded as the services load it."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads((REPO_ROOT / "config.json").read_text()), **fields}))
    return load_config({"S3_CONFIG_FILE": str(path), **(env or {})})


def test_metrics_port_defaults_to_8002_on_every_interface(tmp_path: Path) -> None:
    assert metrics_settings(_config_with(tmp_path)) == MetricsSettings((("0.0.0.0", 8002),))


def test_metrics_listen_on_and_metrics_port_come_from_config_json(tmp_path: Path) -> None:
    config = _config_with(tmp_path, metricsPort=9102, metricsListenOn=["127.0.0.1:9200", "[::1]:9201"])
    assert metrics_settings(config).addresses == (("127.0.0.1", 9200), ("::1", 9201))
    assert metrics_settings(_config_with(tmp_path, metricsPort=9102)).addresses == (("0.0.0.0", 9102),)


def test_metrics_port_env_overrides_the_port_and_zero_turns_the_port_off(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"METRICS_PORT": "9300"}, metricsListenOn=["127.0.0.1:9200"])
    assert metrics_settings(config).addresses == (("127.0.0.1", 9300),)
    config = _config_with(tmp_path, {"METRICS_PORT": "0"}, metricsListenOn=["127.0.0.1:9200"])
    assert metrics_settings(config).addresses == ()


@pytest.mark.parametrize(("fields", "env", "named"), [
    ({"metricsPort": "8002"}, {}, "metricsPort"),
    ({"metricsPort": 70000}, {}, "metricsPort"),
    ({"metricsListenOn": "127.0.0.1:8002"}, {}, "metricsListenOn"),
    ({"metricsListenOn": ["127.0.0.1"]}, {}, "metricsListenOn[0]"),
    ({"metricsListenOn": [8002]}, {}, "metricsListenOn[0]"),
    ({}, {"METRICS_PORT": "eighty"}, "METRICS_PORT"),
    ({}, {"METRICS_PORT": "65536"}, "METRICS_PORT"),
])
def test_malformed_metrics_settings_raise_config_error_naming_the_field(
        tmp_path: Path, fields: dict, env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        _config_with(tmp_path, env, **fields)


# --- several workers: the directory they share ---------------------------------------------------

def test_prepare_workers_gives_several_workers_a_fresh_shared_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MULTIPROC_DIR, "")  # so that teardown restores what prepare_workers sets
    monkeypatch.delenv(ENV_MULTIPROC_DIR)
    assert prepare_workers(1) is None and ENV_MULTIPROC_DIR not in os.environ
    path = prepare_workers(2)
    assert path is not None and os.environ[ENV_MULTIPROC_DIR] == path
    assert os.path.isdir(path) and os.listdir(path) == []
    os.rmdir(path)


def test_prepare_workers_empties_an_operator_directory_of_an_earlier_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old values")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(ENV_MULTIPROC_DIR, str(tmp_path))
    assert prepare_workers(4) == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
