"""Fixtures: real dmd + gateway processes (file backend) and a mem_backend gateway.

One set per test session (per xdist worker); tests isolate themselves with
unique bucket names from `bucket_name`.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from botocore.config import Config as BotoConfig

from tests.procs import Dmd, Gateway, start_dmd, start_gateway

ACCESS_KEY, SECRET_KEY = "accessKey1", "verySecretKey1"
ACCESS_KEY2, SECRET_KEY2 = "accessKey2", "verySecretKey2"
# conf/authdata.json's first two accounts (Bart owns what accessKey1 creates, Lisa is accessKey2).
OWNER_ID = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
OTHER_ID = "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2bf"
OTHER_ACCOUNT = "123456789013"
OTHER_EMAIL = "sampleaccount2@sampling.com"
BIN = Path(sys.executable).parent          # the venv's console scripts: aws, s3cmd, rclone
CLI_TIMEOUT_S = 120


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """A client command line, which must succeed; its stdout."""
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def make_client(endpoint: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY, **config: object):
    settings = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1, "mode": "standard"},
                "connect_timeout": 10, "read_timeout": 60, **config}
    cfg = BotoConfig(**settings)
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=cfg)


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def dmd(servers_dir: Path) -> Iterator[Dmd]:
    d = start_dmd(servers_dir / "dmd")
    yield d
    d.stop()


@pytest.fixture(scope="session")
def file_gateway(request: pytest.FixtureRequest, servers_dir: Path, dmd: Dmd) -> Iterator[Gateway]:
    if os.environ.get("S3_TEST_METADATA") == "postgres":   # issue 19: the file suites on PostgreSQL metadata
        yield request.getfixturevalue("pg_gateway")
        return
    g = start_gateway(servers_dir / "gw-file", dmd)
    yield g
    g.stop()


# ---- issue 19: PostgreSQL metadata (S3METADATA=postgres; tests/pg_fixtures.py) ----
from tests.pg_fixtures import pg_cluster, pg_gateway, pg_url  # noqa: E402,F401


@pytest.fixture(scope="session")
def mem_gateway(servers_dir: Path) -> Iterator[Gateway]:
    g = start_gateway(servers_dir / "gw-mem", None)
    yield g
    g.stop()


@pytest.fixture(params=["file", "mem"] + (["pg"] if os.environ.get("S3_TEST_POSTGRES") else []))
def gateway(request: pytest.FixtureRequest) -> Gateway:
    """The same test against the file backend (dmd) and mem_backend."""
    return request.getfixturevalue(f"{request.param}_gateway")


@pytest.fixture
def s3(gateway: Gateway):
    return make_client(gateway.url)


@pytest.fixture
def s3_file(file_gateway: Gateway):
    return make_client(file_gateway.url)


@pytest.fixture
def bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(s3, bucket_name: str) -> str:
    s3.create_bucket(Bucket=bucket_name)
    return bucket_name


@pytest.fixture
def aws(file_gateway: Gateway, tmp_path: Path):
    """aws-cli against the file-backend gateway, with the test account and no user configuration."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def aws_cli(*args: str) -> str:
        return run([str(BIN / "aws"), "--endpoint-url", file_gateway.url, *args], env, tmp_path)
    return aws_cli


# ---- the three principals of the authorization tests, on the file gateway

@pytest.fixture
def owner(file_gateway: Gateway):
    """accessKey1: the owner of the buckets the tests create."""
    return make_client(file_gateway.url)


@pytest.fixture
def other(file_gateway: Gateway):
    """accessKey2: a second account."""
    return make_client(file_gateway.url, ACCESS_KEY2, SECRET_KEY2)


@pytest.fixture
def anon(file_gateway: Gateway):
    """Unsigned requests."""
    from botocore import UNSIGNED
    return make_client(file_gateway.url, signature_version=UNSIGNED)


@contextlib.contextmanager
def raw_body(s3, operation: str, body: bytes) -> Iterator[None]:
    """Send `body` (with its Content-MD5) instead of the document boto3 builds for `operation`."""
    def replace(request, **kwargs):
        request.data = body
        for name in [h for h in request.headers if h.lower().startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))]:
            del request.headers[name]
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.meta.events.register_first(f"before-sign.s3.{operation}", replace)
    try:
        yield
    finally:
        s3.meta.events.unregister(f"before-sign.s3.{operation}", replace)
