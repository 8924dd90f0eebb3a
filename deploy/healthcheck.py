"""The images' HEALTHCHECK: `python deploy/healthcheck.py gateway|dmd` exits 0 when the service answers.

gateway: GET /_/healthcheck on the S3 port from loopback (always in healthChecks.allowFrom), over
HTTPS when certFilePaths or SSL is set (the certificate is not checked: this is liveness, on
127.0.0.1). dmd: GET /DataFile?diskUsage on the data port (with the dmd secret; over HTTPS with
dmdTls) and a TCP connect to the metadata port.
"""
from __future__ import annotations

import os
import socket
import ssl
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.tls import ssl_requested  # noqa: E402
from shared import dmd_tls  # noqa: E402
from shared.config import DMD_SECRET_HEADER, load_config  # noqa: E402

TIMEOUT_S = 4


def local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host


def check_gateway() -> None:
    config = load_config()
    host, port = "127.0.0.1", config.port
    if config.listen_on:
        bound, _, p = config.listen_on[0].rpartition(":")
        host, port = local(bound), int(p)
    https = bool(config.cert_file_paths) or ssl_requested(os.environ)
    context = ssl._create_unverified_context() if https else None   # liveness on loopback, not trust
    url = f"{'https' if https else 'http'}://{host}:{port}/_/healthcheck"
    with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as resp:
        if resp.status != 200:
            raise SystemExit(f"{url}: {resp.status}")


def check_dmd() -> None:
    config = load_config()
    md, dd = config.metadata_daemon, config.data_daemon
    headers = {DMD_SECRET_HEADER: config.dmd_secret} if config.dmd_secret else {}
    https = dmd_tls.server_context(config) is not None
    context = ssl._create_unverified_context() if https else None   # liveness on loopback, not trust
    url = f"{'https' if https else 'http'}://{local(dd.bind_address)}:{dd.port}/DataFile?diskUsage"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S,
                                context=context) as resp:
        if resp.status != 200:
            raise SystemExit(f"{url}: {resp.status}")
    socket.create_connection((local(md.bind_address), md.port), timeout=TIMEOUT_S).close()


if __name__ == "__main__":
    try:
        {"gateway": check_gateway, "dmd": check_dmd}[sys.argv[1] if len(sys.argv) > 1 else "gateway"]()
    except Exception as exc:   # any failure is "unhealthy", with the reason in `docker inspect`
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
