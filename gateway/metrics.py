"""Prometheus metrics of the gateway and current CloudServer's metrics port (docs/operations.md#health-and-metrics).

This module owns:
- the request metrics, named as CloudServer's `monitoringHandler.js` names them:
  `s3_cloudserver_http_requests_total{method,action,code}`,
  `s3_cloudserver_http_request_duration_seconds{method,action,code}` (the reference's buckets),
  `s3_cloudserver_http_active_requests`, and at scrape time
  `s3_cloudserver_disk_{available,free,total}_bytes` (the dmd's `/DataFile?diskUsage`, else
  the `getDiskUsage` RPC);
- the metrics-port app: `/live` (the shallow health check), `/ready` (the deep one), `/metrics`
  (Prometheus text), 405 with `[]` for any other path or method;
- `MetricsServer`: that app on `metricsPort` (8002) / `metricsListenOn`, run inside a gateway
  worker's lifespan, in ONE worker only.

Workers: with uvicorn `--workers N` each worker is a process with its own counters. When
`PROMETHEUS_MULTIPROC_DIR` is set (`prepare_workers()` sets it in the parent before the workers
are spawned), prometheus_client's multiprocess mode keeps each worker's values in a memory-mapped
file there and a scrape sums them all; the worker holding a file lock in that directory serves the
port, and another takes over when it dies. Without that directory each worker counts alone (a
warning says so when workers > 1).

Environment: `METRICS_PORT` overrides the port (0: no metrics port at all), for tests on
ephemeral ports and for several gateways on one host.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import glob
import logging
import multiprocessing
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client picks its value class (in-process or memory-mapped) when first imported, and
# writes into the directory from the first metric on: the directory must exist by then.
if os.environ.get(ENV_MULTIPROC_DIR):
    os.makedirs(os.environ[ENV_MULTIPROC_DIR], exist_ok=True)

import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.router import METHODS
from shared.config import Config
from shared.log import get_logger, log_event

if TYPE_CHECKING:
    from gateway.context import Services

log = get_logger("gateway.metrics")

PREFIX = "s3_cloudserver_"
DEFAULT_METRICS_PORT = 8002
DEFAULT_METRICS_HOST = "0.0.0.0"  # the reference listens on every interface unless metricsListenOn says otherwise
ENV_METRICS_PORT = "METRICS_PORT"
LABEL_NAMES = ("method", "action", "code")
# The reference's buckets: 0.1 ms to 500 ms.
DURATION_BUCKETS = (0.0001, 0.005, 0.015, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
OTHER_METHOD = "OTHER"            # any method S3 does not know: the client picks it, the series stay few
UNKNOWN_ACTION = "unknown"        # the request failed before it was routed to an action
UNANSWERED_STATUS = 500           # the request task ended without an answer (cancelled)
ACTION_SCOPE_KEY = "s3.action"    # s3_endpoint stores the routed action in the ASGI scope here
DISK_USAGE_TIMEOUT_S = 2.0        # a scrape must answer even when the dmd does not
BIND_RETRY_S = 5.0                # a busy port or lock is tried again this often
SHUTDOWN_GRACE_S = 2.0
LOCK_FILE = "metrics-server.lock"
METRICS_PATH, LIVE_PATH, READY_PATH = "/metrics", "/live", "/ready"

# The *_created series prometheus_client adds by default: the reference (prom-client) has none.
disable_created_metrics()
REQUESTS_TOTAL = Counter(PREFIX + "http_requests_total", "Total number of cloudserver HTTP requests",
                         LABEL_NAMES)
REQUEST_DURATION = Histogram(PREFIX + "http_request_duration_seconds", "Duration of HTTP requests in seconds",
                             LABEL_NAMES, buckets=DURATION_BUCKETS)
# livesum: a scrape adds the live workers' values; a dead worker's in-flight count is dropped.
ACTIVE_REQUESTS = Gauge(PREFIX + "http_active_requests", "Number of cloudserver HTTP in-flight requests",
                        multiprocess_mode="livesum")
DISK_GAUGES = (("available", PREFIX + "disk_available_bytes", "Available data disk storage in bytes"),
               ("free", PREFIX + "disk_free_bytes", "Free data disk storage in bytes"),
               ("total", PREFIX + "disk_total_bytes", "Total data disk storage in bytes"))

HealthEndpoint = Callable[["Services", "str | None", bool], Awaitable[Response]]   # app.health_response

# (method, action, code) -> the two label children: labels() takes a lock and builds a key
# each time, this dict lookup does not (the request path calls it once per request).
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def multiprocess_dir() -> str | None:
    """The directory where workers share their values, or None (each process counts alone)."""
    return os.environ.get(ENV_MULTIPROC_DIR) or None


def prepare_workers(workers: int) -> str | None:
    """Call in `python -m gateway` before uvicorn spawns `workers` processes.

    With more than one worker, point PROMETHEUS_MULTIPROC_DIR (inherited by the workers) at a
    fresh directory, removed when this process exits; an operator's own directory is emptied
    instead, as values of an earlier run would add up with the new ones. Returns the directory.
    """
    if workers <= 1:
        return multiprocess_dir()
    path = multiprocess_dir()
    if path is None:
        path = tempfile.mkdtemp(prefix="pys3-metrics-")
        os.environ[ENV_MULTIPROC_DIR] = path
        atexit.register(shutil.rmtree, path, True)
    else:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    return path


# --- the request path ----------------------------------------------------------------------------

def observe_request(method: str, action: str | None, status: int, seconds: float) -> None:
    """Count one answered S3 request and its duration."""
    key = (method if method in METHODS else OTHER_METHOD, action or UNKNOWN_ACTION, status)
    series = _series.get(key)
    if series is None:
        labels = (key[0], key[1], str(status))
        series = _series[key] = (REQUESTS_TOTAL.labels(*labels), REQUEST_DURATION.labels(*labels))
    series[0].inc()
    series[1].observe(seconds)


def request_started() -> None:
    ACTIVE_REQUESTS.inc()


def request_finished() -> None:
    ACTIVE_REQUESTS.dec()


class RequestTimer:
    """`with RequestTimer(scope) as timer:` around answering one S3 request, body included.

    Counts the request as active inside the block; on exit counts it with the action that
    s3_endpoint stored under `scope[ACTION_SCOPE_KEY]` and the status set on `timer.status`.
    """
    __slots__ = ("scope", "started", "status")

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope = scope
        self.status = UNANSWERED_STATUS
        self.started = 0.0

    def __enter__(self) -> Self:
        request_started()
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        request_finished()
        observe_request(self.scope.get("method", ""), self.scope.get(ACTION_SCOPE_KEY), self.status,
                        time.perf_counter() - self.started)


# --- scrape ---------------------------------------------------------------------------------------

class _DiskUsageCollector(Collector):
    """The disk gauges from one diskUsage answer, fetched before the (synchronous) collection."""

    def __init__(self, usage: Mapping[str, Any] | None) -> None:
        self.usage = usage or {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for field, name, doc in DISK_GAUGES:
            value = self.usage.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                yield GaugeMetricFamily(name, doc, value=value)


async def disk_usage(services: Services) -> dict[str, Any] | None:
    """{"available", "free", "total"} of the data disk (the first location whose store can tell,
    i.e. the dmd's /DataFile?diskUsage), else of the metadata disk (getDiskUsage RPC); None when
    neither answers in time."""
    source: Callable[[], Awaitable[dict]] = services.store.disk_usage
    for name in services.config.locations:
        try:
            backend = services.data_for(name)
        except Exception:  # a location type this gateway cannot reach: not a disk we can report
            continue
        if callable(getattr(backend, "disk_usage", None)):
            source = backend.disk_usage  # type: ignore[attr-defined]
            break
    try:
        async with asyncio.timeout(DISK_USAGE_TIMEOUT_S):
            usage = await source()
    except Exception as exc:  # the dmd is down or slow: the scrape goes on without the disk gauges
        log_event(log, logging.DEBUG, "diskUsage failed", error=repr(exc))
        return None
    return usage if isinstance(usage, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget_dead_workers(path: str) -> None:
    """Drop the live gauges of workers that died (uvicorn restarts them under new pids);
    their counters stay, as totals must not go down."""
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = Path(file).stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            prom_multiprocess.mark_process_dead(int(pid_text), path)


def render_metrics(usage: Mapping[str, Any] | None = None) -> bytes:
    """The Prometheus text of every worker's request metrics plus the given disk usage."""
    path = multiprocess_dir()
    if path is None:
        # This process's own metrics (with prometheus_client's process_* and python_* ones,
        # as the reference exports node's defaults).
        requests = generate_latest(REGISTRY)
    else:
        _forget_dead_workers(path)
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path)
        requests = generate_latest(registry)
    disk = CollectorRegistry()
    disk.register(_DiskUsageCollector(usage))
    # Each text block holds whole metric families, so the two concatenate into one valid page.
    return requests + generate_latest(disk)


# --- the metrics-port app -------------------------------------------------------------------------

class MetricsApp:
    """The ASGI app of the metrics port: /live and /ready answer as the gateway's /_/healthcheck
    endpoint `health` answers its shallow and deep checks; /metrics is the Prometheus text."""

    def __init__(self, services: Services, health: HealthEndpoint) -> None:
        self.services, self.health = services, health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket on this port
        scope["app"] = self
        try:
            response = await self.dispatch(Request(scope, receive))
        except Exception as exc:  # a broken scrape must not look like a healthy empty answer
            log.error("metrics port request failed", exc_info=exc)
            response = Response("[]", status_code=500, media_type="application/json")
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if path in (LIVE_PATH, READY_PATH) and method in ("GET", "POST"):
            client = request.client.host if request.client else None
            return await self.health(self.services, client, path == READY_PATH)
        if path == METRICS_PATH and method == "GET":
            usage = await disk_usage(self.services)
            return Response(render_metrics(usage), media_type=CONTENT_TYPE_LATEST)
        # The reference's writeResponse for MethodNotAllowed: its status code and a JSON `[]`.
        return Response("[]", status_code=405, media_type="application/json")


# --- where to listen ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricsSettings:
    """The addresses of the metrics port; none: no metrics port."""
    addresses: tuple[tuple[str, int], ...]


def metrics_settings(config: Config) -> MetricsSettings:
    """Where the metrics port listens: config.json `metricsListenOn`, else all interfaces on
    `metricsPort` (METRICS_PORT overrides it; 0 means no metrics port)."""
    if not config.metrics_port:
        return MetricsSettings(())
    addresses = config.metrics_listen_on or ((DEFAULT_METRICS_HOST, config.metrics_port),)
    return MetricsSettings(tuple(addresses))


# --- the server -----------------------------------------------------------------------------------

def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class MetricsServer:
    """The metrics app on its own port, inside a gateway worker's event loop.

    `start()` returns at once; a background task waits for its turn (the file lock, when the
    workers share a multiprocess directory), binds, and serves. A busy address is logged once and
    tried again every few seconds: it never stops the gateway.
    """

    def __init__(self, config: Config, services: Services, health: HealthEndpoint,
                 settings: MetricsSettings | None = None) -> None:
        self.settings = settings if settings is not None else metrics_settings(config)
        self.app = MetricsApp(services, health)
        self._task: asyncio.Task[None] | None = None
        self._servers: list[uvicorn.Server] = []
        self._lock_fd: int | None = None

    def start(self) -> None:
        if not self.settings.addresses:
            return
        if multiprocess_dir() is None and multiprocessing.parent_process() is not None:
            log_event(log, logging.WARNING, "metrics count this worker only: start several workers with "
                      "`python -m gateway` or set " + ENV_MULTIPROC_DIR, pid=os.getpid())
        self._task = asyncio.create_task(self._run(), name="metrics-server")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        servers, self._servers = self._servers, []
        for server in servers:
            server.should_exit = True
            await server.shutdown()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock: another worker may serve
            self._lock_fd = None

    def _take_lock(self) -> bool:
        path = multiprocess_dir()
        if path is None:
            return True  # one process: nobody to share the port with
        if self._lock_fd is None:
            self._lock_fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    async def _run(self) -> None:
        try:
            await self._bind_and_serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the S3 port must live on whatever breaks here
            log.error("metrics port failed", exc_info=exc)

    async def _bind_and_serve(self) -> None:
        pending = list(self.settings.addresses)
        warned: set[tuple[str, int]] = set()
        while True:
            if self._take_lock():
                busy = []
                for host, port in pending:
                    try:
                        sock = _bind(host, port)
                    except OSError as exc:
                        busy.append((host, port))
                        if (host, port) not in warned:
                            warned.add((host, port))
                            log_event(log, logging.WARNING, "metrics port unavailable, retrying", host=host,
                                      port=port, error=str(exc), retryS=BIND_RETRY_S)
                        continue
                    await self._serve(sock)
                pending = busy
                if not pending:
                    return
            await asyncio.sleep(BIND_RETRY_S)

    async def _serve(self, sock: socket.socket) -> None:
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, log_level=None, access_log=False,
                                http="httptools", server_header=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # what Server.serve() sets before startup()
        await server.startup(sockets=[sock])
        self._servers.append(server)
        host, port = sock.getsockname()[:2]
        log_event(log, logging.INFO, "metrics port listening", host=host, port=port, pid=os.getpid())
