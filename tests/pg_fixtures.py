"""Fixtures of PostgreSQL metadata (issue 19): a cluster per test session, gateways over it.

The cluster is Debian's PostgreSQL (installed with apt-get when missing and running as root),
started by initdb/pg_ctl in a temp folder, as the `postgres` user when running as root, on a free
127.0.0.1 port. Tests skip with the reason when PostgreSQL cannot be had.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from shared.pgcluster import PgCluster, PostgresUnavailable, temp_cluster
from tests.procs import Dmd, Gateway, start_gateway


def temp_cluster_or_skip(prefix: str, extra_conf: str = "") -> PgCluster:
    """A cluster of the test's own (to stop, promote, ...); the test skips without PostgreSQL."""
    try:
        return temp_cluster(prefix, extra_conf=extra_conf)
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


def pg_env(url: str) -> dict[str, str]:
    return {"S3METADATA": "postgres", "S3METADATA_URL": url}


def start_pg_gateway(tmp: Path, dmd: Dmd, url: str, env: dict[str, str] | None = None) -> Gateway:
    """A gateway with metadata on PostgreSQL at `url` and data on `dmd`'s data service."""
    return start_gateway(tmp, dmd, {**pg_env(url), **(env or {})})


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = temp_cluster()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield cluster
    cluster.remove()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database("s3")


@pytest.fixture(scope="session")
def pg_gateway(servers_dir: Path, dmd: Dmd, pg_url: str) -> Iterator[Gateway]:
    g = start_pg_gateway(servers_dir / "gw-pg", dmd, pg_url)
    yield g
    g.stop()
