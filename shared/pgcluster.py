"""A throwaway local PostgreSQL cluster (initdb + pg_ctl) for trying and testing S3METADATA=postgres.

Used by the tests (tests/integration/conftest.py `pg_cluster`) and by `make start_pg`
(`python -m shared.pgcluster DIR`: start a cluster there, or reuse the one there, print its URL).
Debian's `postgresql` package provides the binaries (/usr/lib/postgresql/<v>/bin); PostgreSQL
refuses to run as root, so as root the cluster runs as the `postgres` user (its folder is given
to that user). It listens on 127.0.0.1 only, on a free port, with `trust` authentication: for
local use, never for production.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 60
START_ATTEMPTS = 10
DEFAULT_DATABASE = "s3"
DEFAULT_USER = "s3"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries (and none could be installed)."""


def bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin folder, or the one holding pg_ctl on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def ensure_installed(install: bool = True) -> Path:
    """The bin folder; installs Debian's `postgresql` (apt-get, as root) when it is missing."""
    found = bin_dir()
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=False, capture_output=True,
                       timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = bin_dir()
    if found is None:
        raise PostgresUnavailable("PostgreSQL is not installed (apt-get install -y postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in `root` (a folder of its own), on 127.0.0.1:`port`."""

    def __init__(self, root: Path, port: int = 0, *, bindir: Path | None = None) -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port
        self.bindir = bindir or ensure_installed()
        self.os_user = None
        if os.geteuid() == 0:
            self.os_user = "postgres"
            try:
                pwd.getpwnam(self.os_user)
            except KeyError as exc:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run as") from exc

    # ---- commands ------------------------------------------------------------------

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", self.os_user, "--", *cmd] if self.os_user else cmd

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = START_TIMEOUT_S) -> str:
        done = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, timeout=timeout,
                              cwd="/", env={**os.environ, "LC_ALL": "C.UTF-8"})
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def _own(self, path: Path) -> None:
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self, *, extra_conf: str = "") -> "PgCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        os.chmod(self.root, 0o700)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-instructions" if self._initdb_has_no_instructions() else "-N")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# pys3 test cluster\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = on\nmax_connections = 200\n"
                       "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n" + extra_conf)
        with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        return self

    def _initdb_has_no_instructions(self) -> bool:
        return "--no-instructions" in self.run("initdb", "--help", check=False)

    def init_standby(self, primary: "PgCluster") -> "PgCluster":
        """A streaming-replication standby of `primary` (pg_basebackup -R), not started yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        os.chmod(self.root, 0o700)
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(self.data),
                 "-R", "-X", "stream", "-c", "fast", timeout=120)
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"\nunix_socket_directories = '{self.root}'\n")
        with open(self.data / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write(f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres "
                       f"application_name=standby1'\n")
        return self

    def promote(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def start(self) -> "PgCluster":
        """Start on `port`, or on a free port (again on another if it was taken meanwhile)."""
        for attempt in range(START_ATTEMPTS):
            port = self.port or _free_port()
            offset = self.log.stat().st_size if self.log.exists() else 0
            try:
                self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S),
                         "-o", f"-p {port}", "start")
                self.port = port
                return self
            except RuntimeError:
                text = self.log.read_text(errors="replace")[offset:] if self.log.exists() else ""
                if "could not bind" in text or "already in use" in text:
                    if attempt < START_ATTEMPTS - 1 and not self.port:
                        continue
                    time.sleep(0.5)
                    continue
                raise RuntimeError(f"postgres did not start: {text[-2000:]}") from None
        raise RuntimeError(f"postgres could not bind a port after {START_ATTEMPTS} attempts")

    def stop(self, mode: str = "fast") -> None:
        if self.initialised:
            self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.run("psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        "-d", database, "-v", "ON_ERROR_STOP=1", "-c", sql)

    def create_database(self, name: str = DEFAULT_DATABASE, owner: str = DEFAULT_USER) -> str:
        """A database owned by a login role of the same name as `owner`; its URL."""
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner}'").strip()
        if not exists:
            self.psql(f'CREATE ROLE "{owner}" LOGIN')
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip():
            self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, owner)

    def url(self, database: str = DEFAULT_DATABASE, user: str = DEFAULT_USER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def temp_root(prefix: str = "pys3-pg-") -> Path:
    """A fresh folder under the system temp dir (reachable by `postgres`, unlike pytest's)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def temp_cluster(prefix: str = "pys3-pg-", extra_conf: str = "") -> PgCluster:
    """A new, started cluster in a fresh temp folder."""
    return PgCluster(temp_root(prefix)).init(extra_conf=extra_conf).start()


def main(argv: list[str]) -> int:
    """`python -m shared.pgcluster DIR [PORT]`: start (initialising on first use) the cluster in DIR,
    create the `s3` database, print S3METADATA_URL=..."""
    if not argv:
        print("usage: python -m shared.pgcluster DIR [PORT]", file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    port = int(argv[1]) if len(argv) > 1 else 5433
    cluster = PgCluster(root, port)
    if not cluster.initialised:
        cluster.init()
    if not (cluster.data / "postmaster.pid").exists():
        cluster.start()
    print(f"S3METADATA_URL={cluster.create_database()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
