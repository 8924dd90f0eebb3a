"""`python -m dmd`: the data-metadata daemon, both services in one process.

Owns the daemon's start-up and shutdown: reads the Config, opens the metadata
store (RocksDB under S3METADATAPATH; a corrupt or unreadable directory stops
the daemon with exit code 1, never a silent re-initialisation; so does a folder
holding the original CloudServer's LevelDB metadata, which only `python -m dmd.migrate`
copies: it is never opened in place), starts the
metadata RPC server (dmd/metadata.py, default 9990) and the /DataFile REST
server (dmd/data.py, default 9991) on one event loop, and on SIGTERM/SIGINT
stops serving and closes the store so every acknowledged write is flushed.
With recordLog.enabled it also keeps the original's record log and serves /MDFile/recordLog
(dmd/recordlog.py).
With a dmd secret (DMD_SECRET / dmdSecret) both servers refuse callers that do
not present it; without one, binding a non-loopback address logs a loud warning.
With METADATA_SOCKET / DATA_SOCKET (or *Daemon.socketPath) each server also listens on
a Unix-domain socket (mode 0660, plain: TLS is TCP's only), for a gateway on the same
host: a stale socket file (nobody listening) is replaced, a live one stops the start.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import stat
import sys
from typing import Any

from aiohttp import web

from dmd.data import start_data_server, warn_if_exposed
from dmd.metadata import MetadataServer
from dmd.recordlog import RecordLogService
from shared import dmd_tls
from shared.config import Config, ConfigError, load_config
from shared.log import get_logger, log_event, setup_logging
from shared.metastore import MetaStore, RocksKV

logger = get_logger("dmd")

EXIT_STARTUP_FAILURE = 1
SOCKET_MODE = 0o660          # the dmd's user and group: put a gateway of another user in the group
SOCKET_DIR_MODE = 0o750      # a missing parent folder is created with this mode
STALE_PROBE_TIMEOUT_S = 1.0


class UnixSocket:
    """A Unix-domain socket the dmd listens on, beside a server's TCP port (docs/operations.md#unix-sockets)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None   # (st_dev, st_ino) of the file we bound

    async def listen(self, runner: web.BaseRunner) -> None:
        """Serve `runner`'s app on the socket too. Bound, then chmod-ed, then listening: nobody
        can connect while the file still has the umask's mode."""
        clear_stale_socket(self.path)
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, mode=SOCKET_DIR_MODE, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
            os.chmod(self.path, SOCKET_MODE)
            await web.SockSite(runner, sock).start()   # listen() happens here
        except BaseException:
            sock.close()
            self.remove()
            raise

    def remove(self) -> None:
        """Unlink the socket file if it is still the one we bound (not a later dmd's)."""
        if self._identity is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._identity = None


def clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on (left by a killed dmd). A live one, or a file that
    is not a socket, is left alone and stops the start (EADDRINUSE / EEXIST)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket: not replaced")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(STALE_PROBE_TIMEOUT_S)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)   # stale: nothing accepts on it
        log_event(logger, logging.INFO, "stale socket file removed", path=path)
        return
    except OSError:
        pass   # e.g. a full backlog: someone does listen
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"address already in use: a live server listens on {path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dmd", description="S3 data-metadata daemon")
    parser.add_argument("--metadata-port", type=int, help="socket.io metadata port (config metadataDaemon.port)")
    parser.add_argument("--data-port", type=int, help="REST /DataFile port (config dataDaemon.port)")
    parser.add_argument("--bind", help="bind address of both services (config *Daemon.bindAddress, LISTEN_ADDR)")
    return parser.parse_args(argv)


def open_store(config: Config) -> Any:
    """The MetaStore over RocksDB at config.metadata_path (raises if the directory is unusable)."""
    kv = RocksKV(config.metadata_path)
    return MetaStore(kv, metadata_path=config.metadata_path, replication_group_id=config.replication_group_id,
                     version_id_suffix=config.version_id_encoding == "hex",
                     write_batch_max_ops=config.metadata_daemon.write_batch_max_ops,
                     record_log_name=config.record_log_name if config.record_log_enabled else None)


async def serve(config: Config, args: argparse.Namespace) -> int:
    md_host = args.bind or config.metadata_daemon.bind_address
    dd_host = args.bind or config.data_daemon.bind_address
    md_port = args.metadata_port if args.metadata_port is not None else config.metadata_daemon.port
    dd_port = args.data_port if args.data_port is not None else config.data_daemon.port
    try:
        store = open_store(config)
    except Exception as err:
        print(f"dmd: cannot open the metadata store in {config.metadata_path}: {type(err).__name__}: {err}",
              file=sys.stderr)
        return EXIT_STARTUP_FAILURE

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server = MetadataServer(store, stream_max_pending_ack=config.metadata_daemon.stream_max_pending_ack,
                            stream_ack_timeout_ms=config.metadata_daemon.stream_ack_timeout_ms,
                            secret=config.dmd_secret)
    if config.record_log_enabled:
        RecordLogService(server, store, config.record_log_name)   # /MDFile/recordLog
    # Not refused: LISTEN_ADDR=0.0.0.0 without a secret is the reference's documented setup.
    warn_if_exposed("the metadata RPC (socket.io)", md_host, config.dmd_secret)
    data_runner = None
    md_socket, dd_socket = config.metadata_daemon.socket_path, config.data_daemon.socket_path
    sockets: list[UnixSocket] = []
    try:
        step = f"cannot listen for metadata on {md_host}:{md_port}"
        md_runner = await server.start(md_host, md_port, ssl_context=dmd_tls.server_context(config))
        md_port = _bound_port(md_runner)
        if md_socket:
            step = f"cannot listen for metadata on the socket {md_socket}"
            sockets.append(UnixSocket(md_socket))
            await sockets[-1].listen(md_runner)
        step = f"cannot start the data server ({config.data_path}, {dd_host}:{dd_port})"
        data_runner = await start_data_server(config, dd_host, dd_port)
        dd_port = _bound_port(data_runner)
        if dd_socket:
            step = f"cannot listen for data on the socket {dd_socket}"
            sockets.append(UnixSocket(dd_socket))
            await sockets[-1].listen(data_runner)
    except Exception as err:
        print(f"dmd: {step}: {type(err).__name__}: {err}", file=sys.stderr)
        await server.close()
        if data_runner is not None:
            await data_runner.cleanup()
        for unix in sockets:
            unix.remove()
        await store.close()
        return EXIT_STARTUP_FAILURE
    line = f"dmd listening metadata={md_host}:{md_port} data={dd_host}:{dd_port}"
    if md_socket:
        line += f" metadataSocket={md_socket}"
    if dd_socket:
        line += f" dataSocket={dd_socket}"
    print(line, file=sys.stderr, flush=True)
    log_event(logger, logging.INFO, line, metadata_path=config.metadata_path, data_path=config.data_path,
              secret_required=bool(config.dmd_secret))

    await stop.wait()
    log_event(logger, logging.INFO, "dmd shutting down")
    await server.close()
    if data_runner is not None:
        await data_runner.cleanup()
    for unix in sockets:
        unix.remove()
    await store.close()
    log_event(logger, logging.INFO, "dmd stopped")
    return 0


def _bound_port(runner: Any) -> int:
    """The port actually bound (differs from the requested one when that was 0)."""
    return runner.addresses[0][1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config()
    except ConfigError as err:
        print(f"dmd: configuration error: {err}", file=sys.stderr)
        return EXIT_STARTUP_FAILURE
    setup_logging(config.log_level)
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional: the stock loop works, only slower
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config, args))


if __name__ == "__main__":
    sys.exit(main())
