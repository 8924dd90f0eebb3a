"""Starting and stopping the servers `make bench` measures, and sampling their memory.

Owns: `Server` (an endpoint plus the PIDs to watch and how to stop it), `start_ours`, `start_moto`,
`start_ceph` (raising `PeerUnavailable` with the reason), and `RssSampler`, a background thread that
reads the RSS of those PIDs every 50 ms. Only processes started here are ever stopped, by their PID
(Ceph through its own stop.sh, which signals only the PIDs its start.sh recorded).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.procs import REPO, free_port, start_dmd, start_gateway, wait_for_port

OUR_ACCESS_KEY, OUR_SECRET_KEY = "accessKey1", "verySecretKey1"
CEPH_PORT = 7480  # start.sh's default RGW_PORT
CEPH_DIR = REPO.parent / "shared" / "tools" / "ceph-rgw"
CEPH_START_TIMEOUT_S = 600  # first use installs the Debian packages
SAMPLE_INTERVAL_S = 0.05


class PeerUnavailable(Exception):
    """A peer that cannot be measured in this run; the message says why."""


@dataclass
class Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    pids: dict[str, int]                      # role ("gateway", "dmd", ...) -> PID whose RSS is sampled
    stop: Callable[[], None]
    extra: dict[str, object] = field(default_factory=dict)  # e.g. the dmd for the dmd-level benches


def _sockets_default() -> bool:
    """Gateway-dmd over TCP loopback, as `make start` runs them; BENCH_DMD_SOCKETS=1 measures the
    Unix-domain sockets instead (docs/operations.md#unix-domain-sockets: no measurable gain, issue 18)."""
    return os.environ.get("BENCH_DMD_SOCKETS", "0") == "1"


def start_ours(tmp: Path, workers: int = 1, sockets: bool | None = None) -> Server:
    """dmd (file backend: RocksDB metadata, files for data) and one gateway over it, through
    Unix-domain sockets when `sockets` (default: `_sockets_default()`)."""
    dmd = start_dmd(tmp / "dmd", sockets=_sockets_default() if sockets is None else sockets)
    try:
        gw = start_gateway(tmp / "gateway", dmd, workers=workers, env={"S3KMSPATH": str(tmp / "kms")})
    except BaseException:
        dmd.stop()
        raise

    def stop() -> None:
        gw.stop()
        dmd.stop()

    assert gw.popen is not None and dmd.popen is not None
    return Server("ours", gw.url, OUR_ACCESS_KEY, OUR_SECRET_KEY,
                  {"gateway": gw.popen.pid, "dmd": dmd.popen.pid}, stop, extra={"dmd": dmd, "gateway": gw})


def start_moto(tmp: Path) -> Server:
    """moto's standalone server (in-memory); it accepts any credentials."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        raise PeerUnavailable(f"{exe} not found")
    log = open(tmp / "moto.log", "ab")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp)
    log.close()
    try:
        wait_for_port(port, proc, timeout=60)
    except BaseException as exc:
        _stop_popen(proc)
        raise PeerUnavailable(f"moto_server did not start: {exc}") from exc
    return Server("moto", f"http://127.0.0.1:{port}", "bench", "bench", {"moto": proc.pid},
                  lambda: _stop_popen(proc))


def _stop_popen(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ceph_pids(anchor: Path) -> dict[str, int]:
    pids: dict[str, int] = {}
    try:
        for line in (anchor / "anchor.pids").read_text().splitlines():
            name, _, pid = line.partition(" ")
            if pid.strip().isdigit():
                pids[f"ceph-{name}"] = int(pid)
    except OSError:
        pass
    return pids


def start_ceph(log_dir: Path) -> Server:
    """Ceph RGW through the shared start.sh (installs Ceph on first use); RGW_DEBUG=0 for throughput.

    If the anchor was already running before us, we measure it but leave it running at the end.
    """
    start, stop = CEPH_DIR / "start.sh", CEPH_DIR / "stop.sh"
    if not start.exists():
        raise PeerUnavailable(f"{start} not found")
    env = {**os.environ, "RGW_DEBUG": "0"}
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run([str(start)], env=env, capture_output=True, text=True, timeout=CEPH_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        subprocess.run([str(stop)], env=env, capture_output=True, timeout=400)
        raise PeerUnavailable(f"start.sh did not finish within {CEPH_START_TIMEOUT_S} s") from None
    (log_dir / "ceph-start.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"start.sh exited {res.returncode}: {tail[0]}")
    already_running = "already running" in res.stdout
    anchor = Path(os.environ.get("CEPH_ANCHOR_DIR", "/tmp/ceph-anchor"))
    port = int(os.environ.get("RGW_PORT", CEPH_PORT))

    def stop_ceph() -> None:
        if not already_running:
            subprocess.run([str(stop)], env=env, capture_output=True, timeout=400)

    pids = {k: v for k, v in _ceph_pids(anchor).items() if k in ("ceph-rgw", "ceph-osd")}
    return Server("ceph", f"http://127.0.0.1:{port}", OUR_ACCESS_KEY, OUR_SECRET_KEY, pids, stop_ceph,
                  extra={"left_running": already_running})


class RssSampler(threading.Thread):
    """Peak RSS of some PIDs, over the whole run and over named windows (e.g. one benchmark row)."""

    def __init__(self, pids: dict[str, int], interval: float = SAMPLE_INTERVAL_S):
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.peaks: dict[str, int] = {role: 0 for role in pids}
        self._procs: dict[str, psutil.Process] = {}
        for role, pid in pids.items():
            try:
                self._procs[role] = psutil.Process(pid)
            except psutil.Error:
                pass
        self._windows: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        for role, proc in self._procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:  # the process ended: keep its last peak
                continue
            with self._lock:
                if rss > self.peaks[role]:
                    self.peaks[role] = rss
                for win in self._windows.values():
                    if rss > win.get(role, 0):
                        win[role] = rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def open_window(self, name: str) -> None:
        with self._lock:
            self._windows[name] = {}
        self.sample()  # a short window still gets one reading

    def close_window(self, name: str) -> dict[str, int]:
        self.sample()
        with self._lock:
            return self._windows.pop(name, {})

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        if self.is_alive():
            self.join(2)
        return dict(self.peaks)
