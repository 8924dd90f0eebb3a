"""`python -m gateway`: the S3 gateway on uvicorn (uvloop + httptools, with the limits of gateway/limits.py).

The gateway is stateless, so `--workers N` (config `clusters`) runs N
processes on the same port, each with its own dmd connection.
"""
from __future__ import annotations

import argparse
import functools
import sys

import uvicorn

from gateway import metrics, tls
from gateway.data.aws_s3 import validate_aws_s3_details
from gateway.limits import http_limits
from gateway.server import LimitedHttpToolsProtocol
from shared.config import Config, ConfigError, load_config


def check_locations(config: Config) -> None:
    """Refuse to start on a location whose details its backend cannot use."""
    for loc in config.locations.values():
        if loc.type == "aws_s3":
            try:
                validate_aws_s3_details(loc.details)
            except ValueError as exc:
                raise ConfigError(f"{config.location_file}: location '{loc.name}': {exc}") from None
        elif loc.type == "file":   # issue 16: a file location may name its own dmd
            host, port = loc.details.get("host"), loc.details.get("port")
            if (host is not None and (not isinstance(host, str) or not host)) or (port is not None and (
                    isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536)):
                raise ConfigError(f"{config.location_file}: location '{loc.name}': 'details.host' must be a host "
                                  "name and 'details.port' a port 1-65535")
        elif loc.type == "azure" and config.data_backend == "multiple":   # issue 16
            from gateway.data.azure import azure_details
            try:
                azure_details(loc)
            except ValueError as exc:
                raise ConfigError(f"{config.location_file}: location '{loc.name}': {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--port", type=int, help="listen port (default: config.json port, 8000)")
    parser.add_argument("--host", help="listen address (default: config listenOn / LISTEN_ADDR, else all)")
    parser.add_argument("--workers", type=int, help="worker processes (default: config clusters)")
    args = parser.parse_args(argv)
    try:
        config = load_config()
        check_locations(config)
        limits = http_limits(config)
        ssl_options = tls.uvicorn_ssl_options(config)   # HTTPS: certFilePaths or SSL=true (gateway/tls.py)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 1
    host, port = "0.0.0.0", config.port
    if config.listen_on:
        host, _, p = config.listen_on[0].rpartition(":")
        port = int(p)
    host = args.host or host
    port = args.port or port
    workers = args.workers or config.workers
    metrics.prepare_workers(workers)   # one set of counters across the worker processes
    # httptools has no limit on a request's head: LimitedHttpToolsProtocol counts it (gateway/limits.py).
    http_protocol = functools.partial(LimitedHttpToolsProtocol, limits=limits)
    uvicorn.run("gateway.app:create_app", factory=True, host=host, port=port, workers=workers,
                loop="uvloop", http=http_protocol, log_level="warning", access_log=False,  # type: ignore[arg-type]
                timeout_keep_alive=limits.keep_alive_timeout_s, lifespan="on", server_header=False,
                **ssl_options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
