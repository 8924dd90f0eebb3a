"""Start the real dmd and gateway processes on free ports, in temp dirs.

Used by every integration test and the benchmark. No mocks: these are the
same `python -m dmd` / `python -m gateway` a user runs.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
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


def _base_env(extra: dict[str, str] | None) -> dict[str, str]:
    # DMD_SECRET too: a test gives it to both sides explicitly, or to neither.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3", "SCALITY_", "AWS_", "DMD_SECRET"))}
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

    def start(self) -> "Proc":
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        for port in self.ports:
            wait_for_port(port, self.popen)
        return self

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


@dataclass
class Dmd(Proc):
    metadata_port: int = 0
    data_port: int = 0
    metadata_path: Path = field(default_factory=Path)
    data_path: Path = field(default_factory=Path)


def start_dmd(tmp: Path, env: dict[str, str] | None = None, start: bool = True) -> Dmd:
    tmp.mkdir(parents=True, exist_ok=True)
    mport, dport = free_port(), free_port()
    md, dd = tmp / "localMetadata", tmp / "localData"
    e = _base_env({"S3METADATAPATH": str(md), "S3DATAPATH": str(dd), **(env or {})})
    args = [sys.executable, "-m", "dmd", "--metadata-port", str(mport), "--data-port", str(dport),
            "--bind", "127.0.0.1"]
    d = Dmd(args, e, [mport, dport], tmp / "dmd.log", metadata_port=mport, data_port=dport,
            metadata_path=md, data_path=dd)
    return d.start() if start else d


@dataclass
class Gateway(Proc):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_gateway(tmp: Path, dmd: Dmd | None = None, env: dict[str, str] | None = None,
                  workers: int = 1) -> Gateway:
    """A gateway on a free port: over `dmd` (file backend) or, with dmd=None, S3BACKEND=mem."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    e = _base_env(env)
    args = [sys.executable, "-m", "gateway", "--port", str(port), "--workers", str(workers)]
    if dmd is None:
        e["S3BACKEND"] = "mem"
    else:
        e["METADATA_HOST"] = e["DATA_HOST"] = "127.0.0.1"
        e["METADATA_PORT"], e["DATA_PORT"] = str(dmd.metadata_port), str(dmd.data_port)
    return Gateway(args, e, [port], tmp / f"gateway-{port}.log", port=port).start()
