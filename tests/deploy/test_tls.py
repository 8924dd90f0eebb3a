"""HTTPS on the S3 port (gateway/tls.py): certFilePaths with a chain, the reference's SSL guide with
the README's subjectAltName line (aws-cli --ca-bundle, s3cmd --ca-certs, boto3 verify=), and SSL=true
generating its CA. Real gateways (S3BACKEND=mem), real clients; the endpoint names resolve to
127.0.0.1 through a private /etc/hosts (a mount namespace of the client command), so root is needed
for the name-based checks.
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import ACCESS_KEY, BIN, SECRET_KEY
from tests.procs import REPO, free_port, start_gateway

ENDPOINT = "s3.scality.test"
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="the endpoint name needs a private /etc/hosts (unshare -m, root)")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


def sh(cmd: str, cwd: Path) -> None:
    subprocess.run(["bash", "-ec", cmd], cwd=cwd, check=True, capture_output=True, timeout=60)


def with_hosts(tmp: Path, args: list[str], env: dict[str, str] | None = None, check: bool = True
               ) -> subprocess.CompletedProcess:
    """Run `args` with ENDPOINT (and its subdomains used here) mapped to 127.0.0.1, in a mount
    namespace so the machine's /etc/hosts is untouched."""
    hosts = tmp / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {ENDPOINT} bucket.{ENDPOINT} other.test\n")
    wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
               'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *args]
    done = subprocess.run(wrapper, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp), **(env or {})})
    if check:
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


BOTO_SCRIPT = r"""
import sys, boto3
from botocore.config import Config
endpoint, verify, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="accessKey1",
                  aws_secret_access_key="verySecretKey1", region_name="us-east-1", verify=verify,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3.create_bucket(Bucket=bucket)
s3.put_object(Bucket=bucket, Key="k", Body=b"over tls")
assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"over tls"
s3.delete_object(Bucket=bucket, Key="k")
s3.delete_bucket(Bucket=bucket)
print("SSL is cool!")
"""


def boto3_round_trip(tmp: Path, endpoint: str, ca: Path, check: bool = True) -> subprocess.CompletedProcess:
    script = tmp / "boto_tls.py"
    script.write_text(BOTO_SCRIPT)
    return with_hosts(tmp, [sys.executable, str(script), endpoint, str(ca), f"tls-{uuid.uuid4().hex[:10]}"],
                      check=check)


def tls_gateway(tmp: Path, key: Path, cert: Path, ca: Path | None):
    config = json.loads((REPO / "config.json").read_text())
    config["certFilePaths"] = {"key": str(key), "cert": str(cert), **({"ca": str(ca)} if ca else {})}
    (tmp / "config.json").write_text(json.dumps(config))
    return start_gateway(tmp / "gw", None, env={"S3_CONFIG_FILE": str(tmp / "config.json"), "ENDPOINT": ENDPOINT})


def handshake(port: int, cafile: Path, server_hostname: str = "localhost") -> None:
    import socket
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname):
            pass


@needs_openssl
def test_cert_file_paths_serves_https_with_the_chain(tmp_path: Path):
    """root CA -> intermediate CA -> server certificate; certFilePaths.ca holds the intermediate.
    A client trusting only the root verifies: the gateway sends the intermediate with its certificate."""
    sh("""
    printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl req -x509 -newkey rsa:2048 -nodes -keyout root.key -out root.crt -days 30 -subj /CN=root-ca
    openssl req -new -newkey rsa:2048 -nodes -keyout inter.key -out inter.csr -subj /CN=intermediate-ca
    openssl x509 -req -in inter.csr -CA root.crt -CAkey root.key -CAcreateserial -out inter.crt -days 30 -extfile ca.ext
    openssl req -new -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
    openssl x509 -req -in server.csr -CA inter.crt -CAkey inter.key -CAcreateserial -out server.crt -days 30 \
        -extfile server.ext
    """, tmp_path)
    gw = tls_gateway(tmp_path, tmp_path / "server.key", tmp_path / "server.crt", tmp_path / "inter.crt")
    try:
        handshake(gw.port, tmp_path / "root.crt")
        import boto3
        from botocore.config import Config as BotoConfig
        s3 = boto3.client("s3", endpoint_url=f"https://localhost:{gw.port}", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name="us-east-1", verify=str(tmp_path / "root.crt"),
                          config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        bucket = f"chain-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"chained")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"chained"
        # The health check answers over HTTPS too (from loopback).
        import urllib.request
        ctx = ssl.create_default_context(cafile=str(tmp_path / "root.crt"))
        with urllib.request.urlopen(f"https://localhost:{gw.port}/_/healthcheck", context=ctx, timeout=10) as r:
            assert r.status == 200
        # A certificate from another CA is refused by the client: verification is real.
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 3 -subj /CN=o",
           tmp_path)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(gw.port, tmp_path / "other.crt")
    finally:
        gw.stop()


@needs_openssl
def test_without_ca_the_intermediate_is_missing(tmp_path: Path):
    """The same chain without certFilePaths.ca: a client trusting only the root cannot verify (so
    the test above proves the gateway sends what `ca` holds)."""
    sh("""
    printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > ca.ext
    printf 'subjectAltName=DNS:localhost\n' > server.ext
    openssl req -x509 -newkey rsa:2048 -nodes -keyout root.key -out root.crt -days 30 -subj /CN=root-ca
    openssl req -new -newkey rsa:2048 -nodes -keyout inter.key -out inter.csr -subj /CN=intermediate-ca
    openssl x509 -req -in inter.csr -CA root.crt -CAkey root.key -CAcreateserial -out inter.crt -days 30 -extfile ca.ext
    openssl req -new -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
    openssl x509 -req -in server.csr -CA inter.crt -CAkey inter.key -CAcreateserial -out server.crt -days 30 \
        -extfile server.ext
    """, tmp_path)
    gw = tls_gateway(tmp_path, tmp_path / "server.key", tmp_path / "server.crt", None)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(gw.port, tmp_path / "root.crt")
    finally:
        gw.stop()


# The reference's "Scality with SSL" commands, plus the subjectAltName the README adds (current
# clients ignore the CN, and the reference's CN=*.scality.test does not even match s3.scality.test).
REFERENCE_SSL_GUIDE = f"""
openssl genrsa -out ca.key 2048
openssl req -new -x509 -extensions v3_ca -key ca.key -out ca.crt -days 99999 \
    -subj "/C=US/ST=Country/L=City/O=Organization/CN=scality.test"
openssl genrsa -out test.key 2048
openssl req -new -key test.key -out test.csr -subj "/C=US/ST=Country/L=City/O=Organization/CN=*.scality.test"
openssl x509 -req -in test.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out test.crt -days 99999 -sha256 \
    -extfile <(printf "subjectAltName=DNS:{ENDPOINT},DNS:*.{ENDPOINT}")
"""


@needs_openssl
@needs_root
def test_reference_ssl_guide_with_aws_cli_s3cmd_and_boto3(tmp_path: Path):
    sh(REFERENCE_SSL_GUIDE, tmp_path)
    gw = tls_gateway(tmp_path, tmp_path / "test.key", tmp_path / "test.crt", tmp_path / "ca.crt")
    try:
        endpoint = f"https://{ENDPOINT}:{gw.port}"
        ca = tmp_path / "ca.crt"
        assert "SSL is cool!" in boto3_round_trip(tmp_path, endpoint, ca).stdout
        bucket = f"awscli-{uuid.uuid4().hex[:10]}"
        aws_env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "awsconfig")}
        aws = [str(BIN / "aws"), "--endpoint-url", endpoint, "--ca-bundle", str(ca)]
        (tmp_path / "f.txt").write_text("via aws-cli")
        with_hosts(tmp_path, [*aws, "s3", "mb", f"s3://{bucket}"], aws_env)
        with_hosts(tmp_path, [*aws, "s3", "cp", str(tmp_path / "f.txt"), f"s3://{bucket}/f.txt"], aws_env)
        out = with_hosts(tmp_path, [*aws, "s3", "cp", f"s3://{bucket}/f.txt", "-"], aws_env).stdout
        assert out == "via aws-cli"
        # Without the CA, aws-cli refuses the certificate.
        bad = with_hosts(tmp_path, [str(BIN / "aws"), "--endpoint-url", endpoint, "s3", "ls"], aws_env, check=False)
        assert bad.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in bad.stderr
        # s3cmd with the CA (--ca-certs), path-style (host_bucket = the endpoint).
        host = f"{ENDPOINT}:{gw.port}"
        s3cmd = [sys.executable, str(BIN / "s3cmd"), "-c", "/dev/null", f"--host={host}", f"--host-bucket={host}",
                 "--ssl", f"--ca-certs={ca}", f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET_KEY}"]
        listing = with_hosts(tmp_path, [*s3cmd, "ls", f"s3://{bucket}"]).stdout
        assert "f.txt" in listing
        with_hosts(tmp_path, [*s3cmd, "del", f"s3://{bucket}/f.txt"])
        with_hosts(tmp_path, [*s3cmd, "rb", f"s3://{bucket}"])
    finally:
        gw.stop()


@needs_root
def test_ssl_env_generates_a_ca_and_a_certificate_for_the_endpoint(tmp_path: Path):
    ssl_dir = tmp_path / "ssl"
    port = free_port()
    env = {"SSL": "TRUE", "ENDPOINT": ENDPOINT, "SSL_DIR": str(ssl_dir)}
    gw = start_gateway(tmp_path / "gw", None, env=env)
    try:
        ca = ssl_dir / "ca.crt"
        assert ca.is_file() and (ssl_dir / "server.crt").is_file()
        assert oct((ssl_dir / "ca.key").stat().st_mode & 0o777) == "0o600"
        from cryptography import x509
        cert = x509.load_pem_x509_certificate((ssl_dir / "server.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {ENDPOINT, f"*.{ENDPOINT}"}
        assert "SSL is cool!" in boto3_round_trip(tmp_path, f"https://{ENDPOINT}:{gw.port}", ca).stdout
        # Another name (resolving to the same address) is not in the certificate: refused.
        bad = boto3_round_trip(tmp_path, f"https://other.test:{gw.port}", ca, check=False)
        assert bad.returncode != 0 and "SSL" in bad.stderr
        # A restart keeps the CA clients already trust.
        before = ca.read_bytes()
        gw.restart()
        assert ca.read_bytes() == before
        handshake(gw.port, ca, server_hostname=ENDPOINT)
    finally:
        gw.stop()
    del port


def test_ssl_without_endpoint_is_a_configuration_error(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3", "ENDPOINT"))}
    done = subprocess.run([sys.executable, "-m", "gateway", "--port", str(free_port())], cwd=REPO,
                          env={**env, "S3BACKEND": "mem", "SSL": "true", "SSL_DIR": str(tmp_path), "METRICS_PORT": "0"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "ENDPOINT" in done.stderr
    assert not (tmp_path / "ca.crt").exists()


def test_ssl_false_serves_plain_http(tmp_path: Path):
    gw = start_gateway(tmp_path / "gw", None, env={"SSL": "false", "ENDPOINT": ENDPOINT,
                                                   "SSL_DIR": str(tmp_path / "ssl")})
    try:
        import urllib.request
        with urllib.request.urlopen(f"{gw.url}/_/healthcheck", timeout=10) as r:
            assert r.status == 200
        assert not (tmp_path / "ssl").exists()
    finally:
        gw.stop()


def test_health_allow_list_from_env(tmp_path: Path):
    """HEALTHCHECK_ALLOW_FROM adds to healthChecks.allowFrom; a malformed entry is refused at start."""
    from shared.config import ConfigError, load_config
    config = load_config({"HEALTHCHECK_ALLOW_FROM": "172.16.0.0/12, 10.0.0.7"})
    assert {"172.16.0.0/12", "10.0.0.7"} <= set(config.health_checks_allow_from)
    assert "127.0.0.1/8" in config.health_checks_allow_from
    with pytest.raises(ConfigError, match="HEALTHCHECK_ALLOW_FROM"):
        load_config({"HEALTHCHECK_ALLOW_FROM": "not-an-address"})
