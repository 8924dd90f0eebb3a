"""Start the real dmd and gateway processes on free ports, in temp dirs.

Used by every integration test and the benchmark. No mocks: these are the
same `python -m dmd` / `python -m gateway` a user runs.

Ports without a race: the dmd is started with port 0 and reports the ports it bound
("dmd listening metadata=H:P data=H:Q"); the gateway cannot bind port 0, so it gets a
port that was free a moment ago and, if something else took it meanwhile (its start
fails with "address already in use"), is started again on another. A process counts as
started only once it listens on its ports itself (not merely "something answers there").
A restart keeps the ports (clients are configured with them) and retries while they are
still taken.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
START_ATTEMPTS = 20
_IN_USE = ("address already in use", "errno 98")


def free_port() -> int:
    """A port that is free now: another process may take it before you bind it (prefer port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def listening_ports(pid: int) -> set[int] | None:
    """The TCP ports process `pid` and its children listen on; None if that cannot be read."""
    try:
        root = psutil.Process(pid)
        ports: set[int] = set()
        for p in [root, *root.children(recursive=True)]:
            try:
                conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") else p.connections("inet")
            except psutil.NoSuchProcess:
                continue
            ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN)
        return ports
    except psutil.AccessDenied:
        return None
    except psutil.NoSuchProcess:
        return set()


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PortInUse(RuntimeError):
    """The process could not bind one of its ports: another process holds it."""


def _base_env(extra: dict[str, str] | None) -> dict[str, str]:
    # DMD_SECRET too: a test gives it to both sides explicitly, or to neither.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("S3", "SCALITY_", "AWS_", "DMD_SECRET", "METADATA_SOCKET", "DATA_SOCKET"))}
    # METRICS_PORT=0: test gateways open no metrics port unless a test asks for one.
    env.update({"PYTHONUNBUFFERED": "1", "LOG_LEVEL": os.environ.get("TEST_LOG_LEVEL", "warn"), "METRICS_PORT": "0"})
    env.update(extra or {})
    return env


@dataclass
class Proc:
    args: list[str]
    env: dict[str, str]
    ports: list[int]
    log_path: Path
    popen: subprocess.Popen | None = None
    started_once: bool = field(default=False, repr=False)

    def start(self) -> "Proc":
        """Start the process and wait until it listens on its ports. A first start that loses a
        port to another process moves to new ports; a restart keeps them and tries again."""
        deadline = time.monotonic() + START_TIMEOUT_S
        for attempt in range(1, START_ATTEMPTS + 1):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "ab")
            self.popen = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            try:
                self._await_ready(offset, deadline)
            except PortInUse:
                self._discard()
                if attempt == START_ATTEMPTS or time.monotonic() >= deadline:
                    raise
                if self.started_once:
                    time.sleep(0.25)     # same ports: wait for whoever holds them to let go
                else:
                    self.new_ports()
                continue
            except BaseException:
                self._discard()
                raise
            self.started_once = True
            return self
        raise AssertionError("unreachable")

    def _discard(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
        if self.popen is not None:
            self.popen.wait()

    def _new_log(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def discover_ports(self, new_log: str) -> bool:
        """Whether the ports are known (a subclass learns them from the log when it asked for 0)."""
        return all(self.ports)

    def new_ports(self) -> None:
        raise PortInUse(f"{self.args[:3]}: a port is in use and no other can be chosen")

    def _await_ready(self, offset: int, deadline: float) -> None:
        assert self.popen is not None
        while True:
            if self.popen.poll() is not None:
                text = self._new_log(offset)
                if any(marker in text.lower() for marker in _IN_USE):
                    raise PortInUse(f"{self.ports} in use: {text[-300:]}")
                raise RuntimeError(f"process exited with {self.popen.returncode} before listening on "
                                   f"{self.ports}: {text[-2000:]}")
            if self.discover_ports(self._new_log(offset)):
                owned = listening_ports(self.popen.pid)
                mine = owned is None or all(p in owned for p in self.ports)
                if mine and all(_connectable(p) for p in self.ports):
                    return
            if time.monotonic() >= deadline:
                self._discard()
                raise TimeoutError(f"{self.args[:3]} not listening on {self.ports} after {START_TIMEOUT_S}s: "
                                   f"{self._new_log(offset)[-2000:]}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL: the crash tests' way of stopping."""
        self.stop(signal.SIGKILL)

    def restart(self) -> "Proc":
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_DMD_LISTENING = re.compile(r"dmd listening metadata=\S+:(\d+) data=\S+:(\d+)")


def _set_arg(args: list[str], flag: str, value: object) -> None:
    args[args.index(flag) + 1] = str(value)


@dataclass
class Dmd(Proc):
    metadata_port: int = 0
    data_port: int = 0
    metadata_path: Path = field(default_factory=Path)
    data_path: Path = field(default_factory=Path)
    # Unix-domain sockets it also listens on (start_dmd(sockets=True)); "" = TCP only.
    metadata_socket: str = ""
    data_socket: str = ""

    def discover_ports(self, new_log: str) -> bool:
        """The dmd binds port 0 on its first start and names the ports it got; later starts
        (restarts, `args` reused by a test) ask for those same ports."""
        if self.metadata_port and self.data_port:
            return True
        m = _DMD_LISTENING.search(new_log)
        if m is None:
            return False
        self.metadata_port, self.data_port = int(m[1]), int(m[2])
        self.ports = [self.metadata_port, self.data_port]
        _set_arg(self.args, "--metadata-port", self.metadata_port)
        _set_arg(self.args, "--data-port", self.data_port)
        return True


def socket_dir(tmp: Path) -> Path:
    """A folder for Unix-domain sockets: `tmp` when its paths fit sockaddr_un (108 bytes), else a
    short one under the system's temp folder (pytest's folders can be long)."""
    if len(os.fsencode(str(tmp))) <= 80:
        return tmp
    return Path(tempfile.mkdtemp(prefix="pys3-"))


def start_dmd(tmp: Path, env: dict[str, str] | None = None, start: bool = True, sockets: bool = False) -> Dmd:
    """A dmd on ports it binds itself (known once started: `metadata_port`, `data_port`); with
    `sockets`, also on Unix-domain sockets (`metadata_socket`, `data_socket`, known at once), which
    `start_gateway` then uses."""
    tmp.mkdir(parents=True, exist_ok=True)
    md, dd = tmp / "localMetadata", tmp / "localData"
    socks: dict[str, str] = {}
    if sockets:
        where = socket_dir(tmp)
        socks = {"METADATA_SOCKET": str(where / "metadata.sock"), "DATA_SOCKET": str(where / "data.sock")}
    e = _base_env({"S3METADATAPATH": str(md), "S3DATAPATH": str(dd), **socks, **(env or {})})
    args = [sys.executable, "-m", "dmd", "--metadata-port", "0", "--data-port", "0", "--bind", "127.0.0.1"]
    d = Dmd(args, e, [0, 0], tmp / "dmd.log", metadata_path=md, data_path=dd,
            metadata_socket=e.get("METADATA_SOCKET", ""), data_socket=e.get("DATA_SOCKET", ""))
    return d.start() if start else d


@dataclass
class Gateway(Proc):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def new_ports(self) -> None:
        self.port = free_port()
        self.ports = [self.port]
        _set_arg(self.args, "--port", self.port)


def start_gateway(tmp: Path, dmd: Dmd | None = None, env: dict[str, str] | None = None,
                  workers: int = 1) -> Gateway:
    """A gateway on a free port: over `dmd` (file backend; through its Unix-domain sockets when it has
    them, unless `env` names others) or, with dmd=None, S3BACKEND=mem."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    e = _base_env(env)
    args = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", str(workers)]
    if dmd is None:
        e["S3BACKEND"] = "mem"
    else:
        e["METADATA_HOST"] = e["DATA_HOST"] = "127.0.0.1"
        e["METADATA_PORT"], e["DATA_PORT"] = str(dmd.metadata_port), str(dmd.data_port)
        # A stand-in with only the ports (a proxy in front of a dmd) has no sockets.
        sockets = (("METADATA_SOCKET", getattr(dmd, "metadata_socket", "")),
                   ("DATA_SOCKET", getattr(dmd, "data_socket", "")))
        for name, path in sockets:
            if path and name not in (env or {}):
                e[name] = path
    return Gateway(args, e, [port], tmp / f"gateway-{port}.log", port=port).start()
