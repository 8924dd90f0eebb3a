"""`make bench` columns of ours with metadata on PostgreSQL (issue 19): "ours_pg" (one gateway
process) and "ours_pg2" (two gateway processes, uvicorn workers, each with its own pool), a temp
PostgreSQL cluster for the metadata and a dmd for the data, as the dmd column has."""
from __future__ import annotations

from pathlib import Path

from shared.pgcluster import PostgresUnavailable, temp_cluster
from tests.bench.peers import OUR_ACCESS_KEY, OUR_SECRET_KEY, PeerUnavailable, Server
from tests.procs import start_dmd, start_gateway

PG_SERVERS = {"ours_pg": 1, "ours_pg2": 2}


def start_ours_pg(name: str, tmp: Path) -> Server:
    try:
        cluster = temp_cluster("pys3-bench-pg-")
    except (PostgresUnavailable, RuntimeError) as exc:
        raise PeerUnavailable(f"PostgreSQL: {exc}") from exc
    dmd = gw = None
    try:
        url = cluster.create_database()
        dmd = start_dmd(tmp / name / "dmd")
        gw = start_gateway(tmp / name / "gateway", dmd, workers=PG_SERVERS[name],
                           env={"S3KMSPATH": str(tmp / name / "kms"), "S3METADATA": "postgres",
                                "S3METADATA_URL": url})
    except BaseException:
        if dmd is not None:
            dmd.stop()
        cluster.remove()
        raise

    def stop() -> None:
        gw.stop()
        dmd.stop()
        cluster.remove()

    assert gw.popen is not None and dmd.popen is not None
    postmaster = (cluster.data / "postmaster.pid").read_text().split()[0]
    return Server(name, gw.url, OUR_ACCESS_KEY, OUR_SECRET_KEY,
                  {"gateway": gw.popen.pid, "dmd": dmd.popen.pid, "postgres": int(postmaster)}, stop)
