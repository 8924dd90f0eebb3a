"""Fixtures of the deployment tests (`make test_deploy`): a private dockerd, the images, helpers.

The Docker tests run only under `make test_deploy` (PYS3_TEST_DEPLOY=1): that target enters a
network namespace of its own (`unshare -n`) before pytest starts, so dockerd, its bridges, its
iptables rules, the swarm and every published port live in that namespace and vanish with it.
dockerd keeps its images in <repo>/tmp/deploy/docker-data (ignored by git; reused between runs)
and its sockets and state in a fresh /tmp directory; it is stopped by its PID at the end.
No registry is reachable: the base image is the stand-in deploy/standin-base.sh builds
(PYS3_STANDIN_TAR), imported as pys3-standin-base:bookworm.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from botocore.config import Config as BotoConfig

from tests.procs import REPO

DEPLOY_TMP = REPO / "tmp" / "deploy"
STANDIN_TAG = "pys3-standin-base:bookworm"
BIN = REPO / ".venv" / "bin"
DOCKER_START_TIMEOUT_S = 60


def deploy_enabled() -> bool:
    return os.environ.get("PYS3_TEST_DEPLOY") == "1"


def in_private_netns() -> bool:
    """True when this process is not in the network namespace `make test_deploy` started from
    (PYS3_HOST_NETNS, recorded before `unshare -n`; /proc/1/ns/net is not always readable)."""
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        return False
    host = os.environ.get("PYS3_HOST_NETNS")
    if not host:
        try:
            host = os.readlink("/proc/1/ns/net")
        except OSError:
            return False
    return here != host


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="deployment test: run with `make test_deploy` (PYS3_TEST_DEPLOY=1)")
    for item in items:
        if item.get_closest_marker("deploy") and not deploy_enabled():
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: needs `make test_deploy` (root, its own network namespace)")


def run(args: list[str], timeout: float = 300, check: bool = True, env: dict[str, str] | None = None,
        cwd: Path = REPO, input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd, input=input,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@dataclass
class Docker:
    """A dockerd of ours: `docker(...)` runs the CLI against it."""
    host: str
    pid: int

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}

    def __call__(self, *args: str, timeout: float = 300, check: bool = True, input: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run(["docker", *args], timeout=timeout, check=check, env={**self.env, **(env or {})}, input=input)

    def compose(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess:
        return run([str(BIN / "docker-compose"), *args], timeout=timeout, check=check,
                   env={**self.env, **(env or {})})

    def inspect(self, name: str) -> dict:
        return json.loads(self("inspect", name).stdout)[0]

    def wait_healthy(self, container: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        state = {}
        while time.monotonic() < deadline:
            state = self.inspect(container)["State"]
            health = state.get("Health", {}).get("Status")
            if health == "healthy":
                return
            if not state.get("Running") and state.get("Status") in ("exited", "dead"):
                break
            time.sleep(1)
        logs = self("logs", "--tail", "50", container, check=False)
        raise AssertionError(f"{container} not healthy: {json.dumps(state)[:2000]}\n{logs.stdout}\n{logs.stderr}")


def _stop_pid(pid: int, timeout: float = 60) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def _remove_volumes(d: Docker) -> None:
    volumes = d("volume", "ls", "-q", check=False, timeout=60).stdout.split()
    if volumes:
        d("volume", "rm", "-f", *volumes, check=False, timeout=120)


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    if not deploy_enabled():
        pytest.skip("run with `make test_deploy`")
    if not in_private_netns():
        pytest.skip("dockerd must run in a network namespace of its own: `make test_deploy` runs "
                    "these tests under `unshare -n`")
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("docker") is None:
        # make test_deploy installs docker.io first: missing here is a failure, not a skip.
        pytest.fail("needs root and docker.io (apt-get install docker.io; tests/deploy/prepare.sh installs it)")
    data_root = DEPLOY_TMP / "docker-data"
    data_root.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="pys3-dockerd-", dir="/tmp"))
    sock = state / "docker.sock"
    log = open(DEPLOY_TMP / "dockerd.log", "ab")
    # Our own daemon: its own data-root, exec-root, socket and pidfile; its own containerd (a child
    # that dockerd stops with itself). The bridge's default 172.17.0.0/16 lives in our namespace only.
    proc = subprocess.Popen(["dockerd", "--data-root", str(data_root), "--exec-root", str(state / "exec"),
                             "-H", f"unix://{sock}", "--pidfile", str(state / "dockerd.pid"),
                             "--userland-proxy=true", "--log-level", "warn"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    d = Docker(f"unix://{sock}", proc.pid)
    try:
        deadline = time.monotonic() + DOCKER_START_TIMEOUT_S
        while d("version", check=False, timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(DEPLOY_TMP / 'dockerd.log').read_text()[-3000:]}")
            time.sleep(0.5)
        # Leftovers of an interrupted run in the reused data-root.
        if d("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() != "inactive":
            d("swarm", "leave", "--force", check=False)
        left = d("ps", "-aq").stdout.split()
        if left:
            d("rm", "-f", *left, check=False)
        # Volumes too: a stack's bind volumes name the folders of an earlier session.
        _remove_volumes(d)
        yield d
    finally:
        d("swarm", "leave", "--force", check=False, timeout=60)
        left = d("ps", "-aq", check=False, timeout=30).stdout.split()
        if left:
            d("rm", "-f", *left, check=False, timeout=120)
        _remove_volumes(d)
        d("image", "prune", "-f", check=False, timeout=300)   # the layers earlier builds left behind
        _stop_pid(proc.pid)
        proc.wait()
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class Images:
    gateway: str
    dmd: str
    context_bytes: int
    base: str


def _context_bytes(output: str) -> int:
    for line in output.splitlines():
        if line.startswith("Sending build context to Docker daemon"):
            value = line.split()[-1]
            units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
            for unit in sorted(units, key=len, reverse=True):
                if value.endswith(unit):
                    return int(float(value[: -len(unit)]) * units[unit])
    return -1


@pytest.fixture(scope="session")
def images(docker: Docker) -> Images:
    tar = Path(os.environ.get("PYS3_STANDIN_TAR") or DEPLOY_TMP / "cache" / "standin.tar")
    base = f"{STANDIN_TAG}-{tar.stem}"   # a new tarball (new dependencies) is a new tag
    if docker("image", "inspect", base, check=False).returncode != 0:
        if not tar.is_file():
            pytest.fail(f"no stand-in base image at {tar}: deploy/standin-base.sh builds it (make test_deploy)")
        docker("import", "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["python3"]', str(tar), base)
    sizes = []
    for name in ("gateway", "dmd"):
        out = docker("build", "-f", f"Dockerfile.{name}", "-t", f"pys3-{name}:latest",
                     "--build-arg", f"BASE_IMAGE={base}", str(REPO), timeout=600)
        sizes.append(_context_bytes(out.stdout))
    return Images("pys3-gateway:latest", "pys3-dmd:latest", max(sizes), base)


def s3_client(endpoint: str, access: str = "accessKey1", secret: str = "verySecretKey1", verify: object = None):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", verify=verify,
                        config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=60,
                                          retries={"max_attempts": 3, "mode": "standard"}))


def http_status(url: str, timeout: float = 10, context: object = None) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_http(url: str, want: int = 200, timeout: float = 120, context: object = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = http_status(url, timeout=5, context=context)
            if last == want:
                return
        except OSError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{url}: wanted {want}, last {last!r}")
