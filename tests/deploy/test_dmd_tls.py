"""TLS on the gateway-dmd link (shared/dmd_tls.py): a dmd serving both ports over TLS, a gateway
trusting its CA works end to end; a gateway without TLS, or trusting another CA, gets nothing
from it (and the dmd's ports answer no plain HTTP). Real processes, loopback only."""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import make_client
from tests.procs import REPO, _base_env, free_port, start_dmd, start_gateway

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")

SECRET = "s" * 40


def make_pki(tmp: Path, name: str) -> None:
    subprocess.run(["bash", "-ec", f"""
    openssl req -x509 -newkey rsa:2048 -nodes -keyout {name}-ca.key -out {name}-ca.crt -days 3 -subj /CN={name}-ca
    openssl req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN=dmd
    openssl x509 -req -in {name}.csr -CA {name}-ca.crt -CAkey {name}-ca.key -CAcreateserial -out {name}.crt \
        -days 3 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1')
    """], cwd=tmp, check=True, capture_output=True, timeout=60)


def health(gw) -> int:
    try:
        with urllib.request.urlopen(f"{gw.url}/_/healthcheck/deep", timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_gateway_talks_tls_to_the_dmd(tmp_path: Path):
    make_pki(tmp_path, "good")
    make_pki(tmp_path, "other")
    dmd = start_dmd(tmp_path / "dmd", env={"DMD_SECRET": SECRET, "DMD_TLS_CERT": str(tmp_path / "good.crt"),
                                           "DMD_TLS_KEY": str(tmp_path / "good.key")})
    gateways = []
    try:
        # Plain HTTP to the data port: refused (the port speaks TLS only).
        with pytest.raises(Exception):
            urllib.request.urlopen(f"http://127.0.0.1:{dmd.data_port}/DataFile?diskUsage", timeout=10)
        ctx = ssl.create_default_context(cafile=str(tmp_path / "good-ca.crt"))
        req = urllib.request.Request(f"https://127.0.0.1:{dmd.data_port}/DataFile?diskUsage",
                                     headers={"x-dmd-secret": SECRET})
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            assert r.status == 200

        good = start_gateway(tmp_path / "gw-good", dmd, env={"DMD_SECRET": SECRET,
                                                            "DMD_TLS_CA": str(tmp_path / "good-ca.crt")})
        gateways.append(good)
        s3 = make_client(good.url)
        bucket = f"tls-link-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        body = b"x" * (3 * 1024 * 1024)
        s3.put_object(Bucket=bucket, Key="k", Body=body)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
        assert health(good) == 200

        # A gateway without TLS and one trusting another CA never get the dmd's manifest: they keep
        # retrying their setup (and never listen). callTimeoutMs 2 s: the first setup gives up sooner.
        config = json.loads((REPO / "config.json").read_text())
        config.setdefault("metadataClient", {})["callTimeoutMs"] = 2000
        (tmp_path / "config.json").write_text(json.dumps(config))
        for name, env in (("plain", {}), ("wrong-ca", {"DMD_TLS_CA": str(tmp_path / "other-ca.crt")})):
            log = tmp_path / f"gw-{name}.log"
            e = _base_env({"DMD_SECRET": SECRET, "S3_CONFIG_FILE": str(tmp_path / "config.json"), "METADATA_HOST": "127.0.0.1", "DATA_HOST": "127.0.0.1",
                           "METADATA_PORT": str(dmd.metadata_port), "DATA_PORT": str(dmd.data_port), **env})
            port = free_port()
            with open(log, "wb") as out:
                proc = subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(port)], env=e, cwd=REPO,
                                        stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 60
                while "metadata setup failed" not in log.read_text() and time.monotonic() < deadline:
                    assert proc.poll() is None, log.read_text()
                    time.sleep(0.2)
                assert "metadata setup failed" in log.read_text(), name
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
            finally:
                proc.kill()
                proc.wait()
    finally:
        for gw in gateways:
            gw.stop()
        dmd.stop()


def test_dmd_tls_needs_both_cert_and_key(tmp_path: Path):
    make_pki(tmp_path, "good")
    with pytest.raises(RuntimeError, match="dmdTls needs both"):
        start_dmd(tmp_path / "dmd", env={"DMD_TLS_CERT": str(tmp_path / "good.crt")})
