"""Gateways and the dmd on different hosts: network namespaces joined by bridges (`make test_deploy`).

    backend  10.213.1.0/24:  dmd host .1, gateway hosts .2 and .3
    frontend 10.213.2.0/24:  gateway hosts .2 and .3, client host .10

The dmd listens on its host address (with DMD_SECRET), the gateways find it with METADATA_HOST /
DATA_HOST, the client host knows only the gateways' addresses (and cannot reach the dmd at all):
boto3 there writes through one gateway and reads through the other; stopping one gateway leaves
the other serving. Every process is the repository's own `python -m dmd` / `python -m gateway`,
started with `ip netns exec` and stopped by its PID; the namespaces are deleted at the end.
"""
from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.deploy.conftest import run
from tests.procs import REPO

pytestmark = pytest.mark.deploy

BACKEND, FRONTEND = "10.213.1", "10.213.2"
HOSTS = {"dmd": [f"{BACKEND}.1"], "gw1": [f"{BACKEND}.2", f"{FRONTEND}.2"],
         "gw2": [f"{BACKEND}.3", f"{FRONTEND}.3"], "cli": [f"{FRONTEND}.10"]}


class Net:
    def __init__(self) -> None:
        self.prefix = f"pys3-{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def ip(self, *args: str) -> None:
        run(["ip", *args])

    def build(self) -> None:
        switch = self.ns("sw")
        for name in ("sw", *HOSTS):
            self.ip("netns", "add", self.ns(name))
            self.names.append(self.ns(name))
            self.ip("-n", self.ns(name), "link", "set", "lo", "up")
        for bridge in ("back", "front"):
            self.ip("-n", switch, "link", "add", bridge, "type", "bridge")
            self.ip("-n", switch, "link", "set", bridge, "up")
        for host, addresses in HOSTS.items():
            for i, address in enumerate(addresses):
                bridge = "back" if address.startswith(BACKEND + ".") else "front"
                inside, outside = f"eth{i}", f"{host}-{bridge}"
                self.ip("link", "add", inside, "netns", self.ns(host), "type", "veth", "peer", "name", outside,
                        "netns", switch)
                self.ip("-n", self.ns(host), "addr", "add", f"{address}/24", "dev", inside)
                self.ip("-n", self.ns(host), "link", "set", inside, "up")
                self.ip("-n", switch, "link", "set", outside, "master", bridge)
                self.ip("-n", switch, "link", "set", outside, "up")

    def popen(self, host: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *args], env=env, cwd=REPO,
                                    stdout=out, stderr=subprocess.STDOUT)

    def destroy(self) -> None:
        for name in reversed(self.names):
            run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def net() -> Iterator[Net]:
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")
    n = Net()
    try:
        n.build()
        yield n
    finally:
        n.destroy()


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


CLIENT = r"""
import socket, sys, time
import boto3
from botocore.config import Config
step, gw1, gw2, dmd = sys.argv[1:5]

def client(host):
    return boto3.client("s3", endpoint_url=f"http://{host}:8000", aws_access_key_id="accessKey1",
                        aws_secret_access_key="verySecretKey1", region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, connect_timeout=5,
                                      retries={"max_attempts": 1}))

def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False

if step == "write-read":
    deadline = time.monotonic() + 60
    while not (reachable(gw1, 8000) and reachable(gw2, 8000)):
        assert time.monotonic() < deadline, "gateways not listening"
        time.sleep(0.3)
    assert not reachable(dmd, 9990) and not reachable(dmd, 9991), "the client host reaches the dmd"
    a, b = client(gw1), client(gw2)
    a.create_bucket(Bucket="multihost")
    body = bytes(range(256)) * 8192
    a.put_object(Bucket="multihost", Key="obj", Body=body)
    assert b.get_object(Bucket="multihost", Key="obj")["Body"].read() == body
    b.put_object(Bucket="multihost", Key="from-gw2", Body=b"two")
    assert a.get_object(Bucket="multihost", Key="from-gw2")["Body"].read() == b"two"
    print("OK write-read")
elif step == "one-gateway-down":
    assert not reachable(gw1, 8000), "gateway 1 still answers"
    b = client(gw2)
    assert b.get_object(Bucket="multihost", Key="from-gw2")["Body"].read() == b"two"
    b.put_object(Bucket="multihost", Key="after", Body=b"still serving")
    assert [o["Key"] for o in b.list_objects_v2(Bucket="multihost")["Contents"]] == ["after", "from-gw2", "obj"]
    print("OK one-gateway-down")
"""


def test_dmd_and_gateways_on_different_hosts(net: Net, tmp_path: Path):
    from tests.procs import _base_env
    secret = secrets.token_hex(32)
    dmd_addr, gw1_addr, gw2_addr = HOSTS["dmd"][0], HOSTS["gw1"][1], HOSTS["gw2"][1]
    env = _base_env({"DMD_SECRET": secret})
    dmd_env = {**env, "S3METADATAPATH": str(tmp_path / "md"), "S3DATAPATH": str(tmp_path / "data"),
               "LISTEN_ADDR": dmd_addr}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["dmd"] = net.popen("dmd", [sys.executable, "-m", "dmd"], dmd_env, tmp_path / "dmd.log")
        # Both its ports listen once it says so (the metadata port opens first).
        deadline = time.monotonic() + 60
        while "dmd listening" not in (tmp_path / "dmd.log").read_text():
            assert procs["dmd"].poll() is None and time.monotonic() < deadline, (tmp_path / "dmd.log").read_text()
            time.sleep(0.2)
        for host in ("gw1", "gw2"):
            gw_env = {**env, "METADATA_HOST": dmd_addr, "DATA_HOST": dmd_addr, "LISTEN_ADDR": HOSTS[host][1],
                      "HEALTHCHECK_ALLOW_FROM": f"{FRONTEND}.0/24"}
            procs[host] = net.popen(host, [sys.executable, "-m", "gateway"], gw_env, tmp_path / f"{host}.log")
        script = tmp_path / "client.py"
        script.write_text(CLIENT)

        def client(step: str) -> str:
            done = subprocess.run(["ip", "netns", "exec", net.ns("cli"), sys.executable, str(script), step,
                                   gw1_addr, gw2_addr, dmd_addr], capture_output=True, text=True, timeout=180,
                                  cwd=tmp_path)
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
            assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
            return done.stdout

        assert "OK write-read" in client("write-read")
        assert stop(procs.pop("gw1")) in (0, -signal.SIGTERM)   # uvicorn re-raises the signal it handled
        assert "OK one-gateway-down" in client("one-gateway-down")
        for name in list(procs):
            assert procs[name].poll() is None, f"{name} died"
    finally:
        for proc in procs.values():
            stop(proc)
