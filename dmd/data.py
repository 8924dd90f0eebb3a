"""The dmd data service: the on-disk blob store and its `/DataFile` REST server (port 9991).

This module owns:
- `DataFileStore`: blobs as files at `<dataPath>/<hash(key) % 3511>/<key>` (the
  reference's layout, so an existing `localData` stays readable). Uploads stream
  into `<dataPath>/.tmp/`, are fsynced, then renamed into place and the folder
  fsynced: a blob is either complete and durable or invisible. Leftover temp
  files (a crash mid-upload) are removed at start.
- `make_data_server(store)`: the aiohttp (low-level) server speaking the reference's
  `/DataFile` protocol (docs/protocol.md#data-rest-api-datafile), with keys restricted to
  exactly 40 lowercase hex characters for GET/DELETE.
- With a dmd secret configured (`DMD_SECRET` / `dmdSecret`), every request must carry it in
  the `x-dmd-secret` header (compared in constant time): 401 without it, 403 with another
  value, answered before the URL is parsed or a byte of the body is read.
- Copy by reference (`POST /DataFile/<key>?copy`, docs/protocol.md#copy-by-reference): blobs are
  immutable once written, so a copy is a hard link of the blob under a new key, durable (folder
  fsynced) before the 201; unlinking either name leaves the other: the filesystem counts the
  references. `DMD_DATA_NO_COPY=true` turns the call off (it then answers 405 as the original
  does): for the tests of the gateway's fallback to streaming only.
- Batch delete (`POST /DataFile?delete`, docs/protocol.md#batch-delete): up to 1,000 blobs unlinked
  in one call (one thread hop), for DeleteObjects; `DMD_DATA_NO_DELETE_MANY=true` answers it 405 as
  the original does (tests of the gateway's fallback to one DELETE per blob).
- Reads: a small whole blob is read on the event loop when the page cache holds it (RWF_NOWAIT),
  else in a thread; bigger ones go out with sendfile(2).
- `start_data_server(config, host, port)`: what `dmd/__main__.py` calls.
- `python -m dmd.data [--bind H] [--port P]`: the data daemon alone (debugging,
  tests and benchmarks).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import IO, AsyncIterator, Callable

from aiohttp import HttpVersion11, web

from shared import dmd_tls
from shared.config import DMD_SECRET_HEADER, Config, is_loopback_host, load_config, secret_matches
from shared.durable import fsync_dir
from shared.log import get_logger, log_event, setup_logging
from shared.metastore.errors import MetadataError, obj_not_found

# --- protocol constants (docs/protocol.md#data-rest-api-datafile) ------------------------------
SERVICE_PATH = "/DataFile"
FOLDER_HASH = 3511  # prime; must never change on existing data
KEY_BYTES = 20  # the server's keys: 20 random bytes as 40 hex chars
KEY_RE = re.compile(r"[0-9a-f]{%d}" % (2 * KEY_BYTES))
URL_RE = re.compile(r"^(/[a-zA-Z0-9]+)(/([0-9a-f]*))?$")
_PLAIN_KEY_URL_RE = re.compile(r"/DataFile/([0-9a-f]{%d})" % (2 * KEY_BYTES))
RANGE_RE = re.compile(r"^bytes=([0-9]+)?-([0-9]+)?$")
DISK_USAGE_QUERY = "diskUsage"
COPY_QUERY = "copy"   # POST /DataFile/<key>?copy: a new key for the same bytes (ours, not the original's)
NO_COPY_ENV = "DMD_DATA_NO_COPY"   # tests only: answer the copy call as the original (405)
DELETE_MANY_QUERY = "delete"   # POST /DataFile?delete: many blobs in one call (ours, not the original's)
_DELETE_MANY_PATH = f"{SERVICE_PATH}?{DELETE_MANY_QUERY}"
NO_DELETE_MANY_ENV = "DMD_DATA_NO_DELETE_MANY"   # tests only: answer it as the original (405)
DELETE_MANY_MAX_KEYS = 1000
DELETE_MANY_MAX_BODY = 64 << 10   # 1,000 keys of 40 characters, quoted, with commas: 43 KB
REQUEST_UIDS_HEADER = "X-Scal-Request-Uids"
_ACCEPT_RANGES = {"Accept-Ranges": "bytes"}
KEEPALIVE_TIMEOUT_S = 60.0

# --- implementation choices ---------------------------------------------------------------------
TMP_DIR_NAME = ".tmp"  # cannot collide with a numeric folder or a hex key
WRITE_BATCH_BYTES = 1 << 20  # body bytes gathered before one writev(2) in a worker thread
WRITE_BATCH_PIECES = 256  # ... or this many body pieces (well under IOV_MAX)
READ_CHUNK_BYTES = 1 << 20  # read size when sendfile is not available
SMALL_BLOB_BYTES = 128 << 10  # a whole-blob GET below this size is answered from one read (on the loop when cached)
BODY_IDLE_TIMEOUT_S = 60.0  # an upload that sends nothing for this long is dropped
RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)   # Linux: a read that would wait for the disk fails with EAGAIN

log = get_logger("dmd.data")


# --- layout --------------------------------------------------------------------------------------
def djb2_xor_hash(key: str) -> int:
    """The reference's folder hash: djb2-xor over the characters from last to first, as uint32.

    Masking to 32 bits at every step equals JavaScript's int32 arithmetic followed by `>>> 0`.
    """
    h = 5381
    for ch in reversed(key):
        h = ((h * 33) & 0xFFFFFFFF) ^ ord(ch)
    return h


def key_folder(key: str) -> int:
    return djb2_xor_hash(key) % FOLDER_HASH


def is_valid_key(key: str) -> bool:
    return KEY_RE.fullmatch(key) is not None


def new_key() -> str:
    return os.urandom(KEY_BYTES).hex()


# A full disk (or quota): the upload is dropped whole and answered 507, which the gateway
# turns into S3's InsufficientStorage (docs/durability.md#disk-full).
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _fs_error(call: str, exc: OSError) -> MetadataError:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if exc.errno in NO_SPACE_ERRNOS:
        return MetadataError("InsufficientStorage", 507, f"no space left on the data disk: {call}() returned {name}")
    return MetadataError("InternalError", 500, f"filesystem error: {call}() returned {name}")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """write(2) until done; a failure becomes the reference's InternalError."""
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        raise _fs_error("write", exc) from exc


def _writev_all(fd: int, pieces: list[bytes]) -> None:
    """writev(2) of `pieces` (the body as it arrived: no copy into one buffer) until all is written."""
    views = [memoryview(p) for p in pieces if p]
    first = 0
    try:
        while first < len(views):
            written = os.writev(fd, views[first:first + WRITE_BATCH_PIECES])
            while first < len(views) and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]
    except OSError as exc:
        raise _fs_error("write", exc) from exc


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):   # not Linux/glibc: the final fsync does all the work
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, count: int) -> None:
    """Ask the kernel to start writing bytes offset..offset+count to disk now (sync_file_range
    SYNC_FILE_RANGE_WRITE: asynchronous, no wait). Only a head start for the fsync that follows
    the last byte, which alone makes the blob durable: a big upload's final fsync then has only
    its tail left to flush instead of the whole blob. A failure is ignored (the fsync decides)."""
    if _sync_file_range is not None and count > 0:
        _sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE)


def _write_batch(fd: int, pieces: list[bytes], offset: int, writeback: bool) -> None:
    """One batch of an upload at file offset `offset`, written and (unless no-sync) sent on to disk."""
    _writev_all(fd, pieces)
    if writeback:
        _start_writeback(fd, offset, sum(len(p) for p in pieces))


def _read_cached(fd: int, size: int) -> bytes | None:
    """The whole blob when the page cache holds all of it (no wait for the disk), else None."""
    if size == 0:
        return b""
    if not RWF_NOWAIT:
        return None
    buf = bytearray(size)
    try:
        n = os.preadv(fd, [buf], 0, RWF_NOWAIT)
    except OSError as exc:
        if isinstance(exc, BlockingIOError) or exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return None   # not cached, or a filesystem / kernel without RWF_NOWAIT: the thread reads
        raise
    if n != size:   # partly cached: the thread reads the whole
        return None
    return bytes(buf)


def _read_whole(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) != size:   # cannot happen: blobs never change once in place
        raise OSError(errno.EIO, "blob shorter than its size")
    return data


def _create_temp(tmp: str) -> int:
    """The temp file of an upload, new (O_EXCL), write-only."""
    try:
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _fs_error("open", exc) from exc


# --- the store -----------------------------------------------------------------------------------
class DataFileStore:
    """Blobs on disk. All blocking filesystem calls run in the loop's default thread pool."""

    def __init__(self, data_path: str | os.PathLike[str], no_sync: bool = False) -> None:
        self.data_path = Path(data_path)
        self._data_dir = str(self.data_path)
        self.tmp_path = self.data_path / TMP_DIR_NAME
        self._tmp_dir = str(self.tmp_path)
        self.no_sync = no_sync

    # setup / maintenance
    async def setup(self) -> None:
        """Create the data path, the temp folder and the 3511 folders; drop leftover temp files."""
        await asyncio.to_thread(self._setup_sync)
        removed = await self.cleanup_temp()
        if removed:
            log_event(log, logging.WARNING, "removed leftover temporary upload files", count=removed,
                      dataPath=str(self.data_path))

    def _setup_sync(self) -> None:
        self.data_path.mkdir(parents=True, exist_ok=True)
        if not os.access(self.data_path, os.R_OK | os.W_OK | os.X_OK):
            raise PermissionError(f"data path {self.data_path} is not readable and writable")
        self.tmp_path.mkdir(exist_ok=True)
        # One listing first: a restart over existing data then creates nothing.
        existing = {entry.name for entry in os.scandir(self.data_path)}
        for i in range(FOLDER_HASH):
            if str(i) not in existing:
                try:
                    os.mkdir(self.data_path / str(i))
                except FileExistsError:
                    pass

    async def cleanup_temp(self) -> int:
        """Remove every temp file (uploads a crash interrupted). Only safe while no upload runs."""
        return await asyncio.to_thread(self._cleanup_temp_sync)

    def _cleanup_temp_sync(self) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_path))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def path_for(self, key: str) -> Path:
        return Path(self.path_str(key))

    def path_str(self, key: str) -> str:
        """`<dataPath>/<folder>/<key>` (a str: the read path builds no Path objects)."""
        if not is_valid_key(key):
            raise MetadataError("InvalidURI", 400, "malformed URI")
        return f"{self._data_dir}/{key_folder(key)}/{key}"

    # write
    async def put_stream(self, chunks: AsyncIterator[bytes], expected_size: int | None = None) -> str:
        """Store the body `chunks` yields; return its new key once it is durable.

        If `chunks` raises, or the total differs from `expected_size`, nothing is
        stored and the error propagates (IncompleteBody for a size mismatch).
        Filesystem failures raise MetadataError InternalError. Memory use is
        bounded by two write batches whatever the body size. Batches are written as the body
        pieces arrived (writev, no copy), and each one's writeback to disk is started at once
        (`_start_writeback`), so the final fsync only waits for the last batches.
        """
        loop = asyncio.get_running_loop()
        key = new_key()
        tmp = f"{self._tmp_dir}/{key}"   # str paths: the upload path builds no Path objects
        final = self.path_str(key)
        # The temp file is created with the first batch that must be written before the end of
        # the body; a body that fits in one batch (every small object) is created, written,
        # fsynced and renamed in one thread hop (`_commit`).
        # A write running in a thread must finish before its fd is closed (a reused fd
        # number would receive the rest of the bytes), so thread futures are shielded
        # and the fd is closed by whichever future runs last.
        fd: int | None = None
        pending: asyncio.Future[None] | None = None
        fd_owned = True
        committed = False
        batch: list[bytes] = []
        batch_bytes = 0
        written = 0   # file offset of the batch being gathered
        total = 0
        writeback = not self.no_sync
        try:
            async for chunk in chunks:
                total += len(chunk)
                if expected_size is not None and total > expected_size:
                    raise MetadataError("IncompleteBody", 400, "body longer than Content-Length")
                batch.append(chunk)
                batch_bytes += len(chunk)
                if batch_bytes >= WRITE_BATCH_BYTES or len(batch) >= WRITE_BATCH_PIECES:
                    if fd is None:
                        fd = await asyncio.to_thread(_create_temp, tmp)
                    if pending is not None:
                        await asyncio.shield(pending)
                    pending = loop.run_in_executor(None, _write_batch, fd, batch, written, writeback)
                    written += batch_bytes
                    batch, batch_bytes = [], 0
            if pending is not None:
                await asyncio.shield(pending)
            if expected_size is not None and total != expected_size:
                raise MetadataError("IncompleteBody", 400,
                                    f"received {total} bytes, Content-Length said {expected_size}")
            fd_owned = False  # _commit closes it, whatever happens
            await asyncio.shield(loop.run_in_executor(None, self._commit, fd, batch, tmp, final))
            committed = True
            return key
        finally:
            if not committed:
                self._abandon(tmp, fd if fd_owned else None, pending)

    def _commit(self, fd: int | None, tail: list[bytes], tmp: str, final: str) -> None:
        """Write `tail`, fsync, close, rename into place, fsync the folder. `fd` None: the temp
        file is created here first (a body that never filled a batch)."""
        if fd is None:
            fd = _create_temp(tmp)
        call = "write"
        try:
            try:
                if tail:
                    _writev_all(fd, tail)
                call = "fsync"
                if not self.no_sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            call = "rename"
            os.rename(tmp, final)
            call = "fsync"
            if not self.no_sync:
                # rename(2) is durable only once the folder is; without this a crash
                # could lose a blob the client was told exists.
                try:
                    fsync_dir(os.path.dirname(final))
                except OSError:
                    # The upload fails: leave no blob behind that nobody will reference.
                    with contextlib.suppress(OSError):
                        os.unlink(final)
                    raise
        except OSError as exc:
            raise _fs_error(call, exc) from exc

    @staticmethod
    def _abandon(tmp: str, fd: int | None, pending: asyncio.Future[None] | None) -> None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        except OSError as exc:  # cleanup_temp at next start removes it
            log_event(log, logging.ERROR, "cannot remove temporary upload file", path=str(tmp), error=str(exc))
        if fd is None:
            return
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _f: os.close(fd))
        else:
            os.close(fd)

    # read / delete
    async def open_blob(self, key: str, read_below: int = 0) -> tuple[IO[bytes] | None, int, bytes | None]:
        """Open a blob for reading: (unbuffered binary file, size, None). The caller closes the file.
        With `read_below`, a blob smaller than that is read whole instead: (None, size, its bytes).

        The open runs on the event loop (a lookup in folders the kernel has cached, as the
        metadata engine's reads are); the small read too when its bytes are in the page cache
        (`preadv2` with RWF_NOWAIT says so without waiting), else it goes to a thread: a thread
        hop costs more CPU than the whole read of a cached 4 KiB blob.
        Reading from the open file keeps working even if the blob is deleted meanwhile.
        """
        path = self.path_str(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise obj_not_found() from exc
        except OSError as exc:
            raise _fs_error("open", exc) from exc
        try:
            size = os.fstat(fd).st_size
            if size < read_below:
                data = _read_cached(fd, size)
                if data is None:
                    data = await asyncio.to_thread(_read_whole, fd, size)
                os.close(fd)
                return None, size, data
            return open(fd, "rb", buffering=0), size, None
        except OSError as exc:
            os.close(fd)
            raise _fs_error("read", exc) from exc
        except BaseException:
            os.close(fd)
            raise

    async def stat(self, key: str) -> int:
        """Size of a blob; ObjNotFound when absent."""
        path = self.path_for(key)
        try:
            return (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError as exc:
            raise obj_not_found() from exc
        except OSError as exc:
            raise _fs_error("stat", exc) from exc

    async def link(self, key: str) -> str:
        """A new key naming the same bytes as `key` (a hard link); returned once it is durable.

        Blobs are never modified after their rename into place, so the two names are two
        independent references: unlinking one leaves the other readable. ObjNotFound when
        `key` is absent.
        """
        src = self.path_for(key)
        for _ in range(3):   # a collision of 160 random bits: only in theory
            new = new_key()
            final = self.path_for(new)
            try:
                await asyncio.shield(asyncio.to_thread(self._link_sync, src, final))
            except FileExistsError:
                continue
            except FileNotFoundError as exc:
                raise obj_not_found() from exc
            except OSError as exc:
                raise _fs_error("link", exc) from exc
            return new
        raise MetadataError("InternalError", 500, "cannot choose a new key")

    def _link_sync(self, src: Path, final: Path) -> None:
        os.link(src, final)
        if self.no_sync:
            return
        try:
            # The new directory entry is durable only once its folder is (as a rename);
            # the inode's link count rides in the same journal commit.
            fsync_dir(final.parent)
        except OSError:
            # The copy fails: leave no second name behind that nobody will reference.
            with contextlib.suppress(OSError):
                os.unlink(final)
            raise

    async def delete(self, key: str) -> None:
        """Unlink a blob; ObjNotFound when absent.

        The folder is not fsynced: a delete lost in a crash resurrects an
        unreferenced blob (a leak), never loses data.
        """
        path = self.path_str(key)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError as exc:
            raise obj_not_found() from exc
        except OSError as exc:
            raise _fs_error("unlink", exc) from exc

    async def delete_many(self, keys: list[str]) -> list[tuple[str, MetadataError]]:
        """Unlink the blobs of `keys` in one thread hop; the (key, error) of each that failed. An
        absent key is not a failure. Not fsynced, as `delete`."""
        paths = [(key, self.path_str(key)) for key in keys]

        def unlink_all() -> list[tuple[str, MetadataError]]:
            failed = []
            for key, path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    failed.append((key, _fs_error("unlink", exc)))
            return failed

        return await asyncio.to_thread(unlink_all)

    async def disk_usage(self) -> dict[str, int]:
        try:
            st = await asyncio.to_thread(os.statvfs, self.data_path)
        except OSError as exc:
            raise _fs_error("statvfs", exc) from exc
        return {"available": st.f_bavail * st.f_frsize, "free": st.f_bfree * st.f_frsize,
                "total": st.f_blocks * st.f_frsize}


# --- HTTP ----------------------------------------------------------------------------------------
_URI_RESERVED = set(";/?:@&=+$,#")
_PCT_RUN_RE = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def decode_uri(s: str) -> str:
    """JavaScript's decodeURI: %XX runs decoded as UTF-8, reserved characters left escaped.

    Raises ValueError where decodeURI throws URIError (bad escape, invalid UTF-8).
    """
    out: list[str] = []
    pos = 0
    for m in _PCT_RUN_RE.finditer(s):
        if "%" in s[pos:m.start()]:
            raise ValueError("malformed percent escape")
        out.append(s[pos:m.start()])
        escapes = m.group(0)
        decoded = bytes.fromhex(escapes.replace("%", "")).decode("utf-8")  # UnicodeDecodeError is a ValueError
        i = 0  # index into escapes, 3 chars per byte
        for ch in decoded:
            width = len(ch.encode("utf-8"))
            out.append(escapes[i:i + 3] if ch in _URI_RESERVED else ch)
            i += 3 * width
        pos = m.end()
    if "%" in s[pos:]:
        raise ValueError("malformed percent escape")
    out.append(s[pos:])
    return "".join(out)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The reference's single-range semantics: (first, last) inclusive, None for the whole blob.

    Raises MetadataError InvalidRange (416) when unsatisfiable; anything not of the
    single `bytes=` form (multi-range included) is ignored, as in the original.
    """
    if header is None:
        return None
    m = RANGE_RE.match(header.strip())
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first is None and last is None:
        return None
    if first is None:  # suffix: the last n bytes
        n = int(last)  # type: ignore[arg-type]
        if n == 0:
            raise MetadataError("InvalidRange", 416, "The requested range is not satisfiable")
        if size == 0:
            return None
        return max(size - n, 0), size - 1
    start = int(first)
    if last is not None and start > int(last):
        return None
    if start >= size:
        raise MetadataError("InvalidRange", 416, "The requested range is not satisfiable")
    end = size - 1 if last is None else min(int(last), size - 1)
    return start, end


def error_response(err: MetadataError, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"errorType": err.type, "errorMessage": err.description}, separators=(",", ":"))
    return web.Response(status=err.code, body=(body + "\n").encode(), headers=headers)


async def _body_chunks(request: web.BaseRequest, idle_timeout: float) -> AsyncIterator[bytes]:
    content = request.content
    while True:
        async with asyncio.timeout(idle_timeout):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk


async def _send_range(request: web.BaseRequest, resp: web.StreamResponse, f: IO[bytes], offset: int,
                      count: int) -> None:
    """Zero-copy sendfile(2) when the transport allows it, else reads in a thread."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost")
    try:
        await asyncio.get_running_loop().sendfile(transport, f, offset, count, fallback=False)
        return
    except (NotImplementedError, RuntimeError):  # e.g. TLS or uvloop without sendfile
        pass
    f.seek(offset)
    while count > 0:
        chunk = await asyncio.to_thread(f.read, min(READ_CHUNK_BYTES, count))
        if not chunk:
            raise ConnectionResetError("blob shorter than its size")  # cannot happen: fd stays valid
        await resp.write(chunk)
        count -= len(chunk)


def check_secret(request: web.BaseRequest, secret: str) -> None:
    """Raise the 401 / 403 answer unless the request presents `secret` ("" = none required)."""
    if not secret:
        return
    presented = request.headers.get(DMD_SECRET_HEADER)
    if presented is not None and secret_matches(secret, presented):
        return
    log_event(log, logging.WARNING, "data request refused: dmd secret missing or wrong",
              method=request.method, path=request.raw_path, peer=request.remote,
              reqUids=request.headers.get(REQUEST_UIDS_HEADER))
    if presented is None:
        raise MetadataError("Unauthorized", 401, f"the {DMD_SECRET_HEADER} header is required")
    raise MetadataError("AccessDenied", 403, f"wrong {DMD_SECRET_HEADER}")


def warn_if_exposed(service: str, host: str, secret: str) -> None:
    """The loud start-up warning: a service on a non-loopback address that accepts anyone."""
    if secret or is_loopback_host(host):
        return
    message = (f"{service} listens on {host or '*'} WITHOUT a dmd secret: anyone who can reach this port can "
               f"read, overwrite and delete every object, bypassing S3 authentication. Set DMD_SECRET (or "
               f"config.json dmdSecret) on the dmd and on every gateway")
    log_event(log, logging.WARNING, message, host=host)
    print(f"dmd: WARNING: {message}", file=sys.stderr, flush=True)


class _DataHandler:
    """The one request handler of the /DataFile server: every request comes here (aiohttp's
    low-level server: no application, router or middleware, which cost more per request than
    the handler itself), even targets a router could not match (`OPTIONS *`), so every answer
    has the protocol's error body."""

    def __init__(self, store: DataFileStore, body_idle_timeout: float, copy_enabled: bool = True,
                 secret: str = "", delete_many_enabled: bool = True) -> None:
        self.store = store
        self.body_idle_timeout = body_idle_timeout
        self.copy_enabled = copy_enabled
        self.delete_many_enabled = delete_many_enabled
        self.secret = secret

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.secret:
            try:
                check_secret(request, self.secret)
            except MetadataError as err:
                resp = error_response(err)
                resp.force_close()   # the body, if any, is never read
                return resp
        expect = request.headers.get("Expect")
        if expect is not None and request.version == HttpVersion11:
            if expect.lower() != "100-continue":
                return error_response(MetadataError("ExpectationFailed", 417, f"unknown Expect: {expect}"))
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0   # the answer's own size starts after the interim one
        try:
            if request.method == "GET" and request.raw_path == f"{SERVICE_PATH}?{DISK_USAGE_QUERY}":
                return await self._disk_usage()
            if request.method == "POST":
                if request.raw_path == _DELETE_MANY_PATH and self.delete_many_enabled:
                    return await self._delete_many(request)
                if self.copy_enabled:
                    return await self._copy(request)
            if request.method not in ("GET", "PUT", "DELETE"):
                raise MetadataError("MethodNotAllowed", 405, "The specified method is not allowed")
            key = self._parse_url(request)
            if request.method == "PUT":
                return await self._put(request)
            if request.method == "GET":
                return await self._get(request, key)
            await self.store.delete(key)
            return web.Response(status=204)
        except MetadataError as err:
            if err.code >= 500:
                log_event(log, logging.ERROR, "data request failed", method=request.method,
                          path=request.raw_path, error=err.description,
                          reqUids=request.headers.get(REQUEST_UIDS_HEADER))
            post = self.copy_enabled or self.delete_many_enabled
            headers = {"Allow": "GET, PUT, DELETE" + (", POST" if post else "")} if err.code == 405 else None
            return error_response(err, headers)
        except Exception as exc:  # a bug must still answer in the protocol's shape, without a trace
            log.exception("data request crashed", extra={"fields": {"method": request.method,
                                                                     "path": request.raw_path}})
            resp = error_response(MetadataError("InternalError", 500, f"internal error: {type(exc).__name__}"))
            resp.force_close()
            return resp

    @staticmethod
    def _parse_url(request: web.BaseRequest) -> str:
        """The key ('' for PUT) or the reference's 400 for each URL problem."""
        m = _PLAIN_KEY_URL_RE.fullmatch(request.raw_path)
        if m is not None and request.method != "PUT":
            return m.group(1)   # the common case, nothing to decode
        try:
            path = decode_uri(request.raw_path)
        except ValueError:
            raise MetadataError("InvalidURI", 400, "malformed URI") from None
        m = URL_RE.match(path)
        if m is None:
            raise MetadataError("InvalidURI", 400, "malformed URI")
        if m.group(1) != SERVICE_PATH:
            raise MetadataError("InvalidAction", 400, "unsupported service")
        key = m.group(3) or ""
        if request.method == "PUT":
            if key:
                raise MetadataError("InvalidURI", 400, "PUT takes no key: the server names the blob")
            return ""
        if not key:
            raise MetadataError("MissingParameter", 400, "missing key")
        if not is_valid_key(key):
            # Stricter than the reference ([0-9a-f]*): only keys this server can have made.
            raise MetadataError("InvalidURI", 400, "malformed URI")
        return key

    async def _copy(self, request: web.BaseRequest) -> web.Response:
        """POST /DataFile/<key>?copy: link the blob under a new key, answered as a PUT is (201,
        Location). The request has no body."""
        path, _, query = request.raw_path.partition("?")
        if query != COPY_QUERY:   # any other POST: the original's answer, unchanged
            raise MetadataError("MethodNotAllowed", 405, "The specified method is not allowed")
        m = URL_RE.match(path)
        if m is None or not m.group(3):
            raise MetadataError("InvalidURI", 400, "malformed URI")
        if m.group(1) != SERVICE_PATH:
            raise MetadataError("InvalidAction", 400, "unsupported service")
        key = m.group(3)
        if not is_valid_key(key):
            raise MetadataError("InvalidURI", 400, "malformed URI")
        new = await self.store.link(key)
        return web.Response(status=201, headers={"Location": f"{SERVICE_PATH}/{new}"})

    async def _delete_many(self, request: web.BaseRequest) -> web.Response:
        """POST /DataFile?delete, body `{"keys": [...]}` (at most DELETE_MANY_MAX_KEYS): unlink each
        blob, all in one thread hop; answered `{"failed": [{"key", "errorType"}]}` (200). An absent
        key is not a failure (already deleted), as a DELETE's 404 is not for its callers."""
        length = request.content_length
        if length is None or length > DELETE_MANY_MAX_BODY:
            raise MetadataError("InvalidInput", 400, f"a batch delete takes a body of at most {DELETE_MANY_MAX_BODY} "
                                "bytes, with its Content-Length")
        try:
            async with asyncio.timeout(self.body_idle_timeout):
                raw = await request.content.readexactly(length)
        except (asyncio.IncompleteReadError, TimeoutError):
            raise MetadataError("IncompleteBody", 400, "the request body was cut short") from None
        try:
            keys = json.loads(raw)["keys"]
        except (ValueError, TypeError, KeyError):
            raise MetadataError("InvalidInput", 400, 'the body must be {"keys": [...]}') from None
        if (not isinstance(keys, list) or len(keys) > DELETE_MANY_MAX_KEYS
                or not all(isinstance(k, str) and is_valid_key(k) for k in keys)):
            raise MetadataError("InvalidInput", 400,
                                f"keys must be a list of at most {DELETE_MANY_MAX_KEYS} keys of this store")
        failed = await self.store.delete_many(keys)
        body = json.dumps({"failed": [{"key": k, "errorType": e.type} for k, e in failed]}, separators=(",", ":"))
        return web.Response(status=200, body=body.encode(), content_type="application/json")

    async def _disk_usage(self) -> web.Response:
        usage = await self.store.disk_usage()
        return web.Response(status=200, body=json.dumps(usage, separators=(",", ":")).encode())

    async def _put(self, request: web.BaseRequest) -> web.Response:
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        length_header = request.headers.get("Content-Length")
        if length_header is None and not chunked:
            raise MetadataError("MissingContentLength", 411, "You must provide the Content-Length HTTP header.")
        expected: int | None = None
        if length_header is not None and not chunked:
            if not length_header.strip().isdigit():
                raise MetadataError("InvalidInput", 400, "Content-Length is not a number")
            expected = int(length_header)
        try:
            key = await self.store.put_stream(_body_chunks(request, self.body_idle_timeout), expected)
        except MetadataError as err:
            resp = error_response(err)
        except TimeoutError:
            resp = error_response(MetadataError("RequestTimeout", 400, "no body data received in time"))
        except Exception as exc:  # the body stream broke: client went away, bad chunking...
            log_event(log, logging.INFO, "upload aborted", error=repr(exc),
                      reqUids=request.headers.get(REQUEST_UIDS_HEADER))
            resp = error_response(MetadataError("IncompleteBody", 400, "the request body was cut short"))
        else:
            return web.Response(status=201, headers={"Location": f"{SERVICE_PATH}/{key}"})
        # The rest of the body, if any, is not worth reading: drop the connection.
        resp.force_close()
        return resp

    async def _get(self, request: web.BaseRequest, key: str) -> web.StreamResponse:
        whole = "Range" not in request.headers
        f, size, data = await self.store.open_blob(key, SMALL_BLOB_BYTES if whole else 0)
        if f is None:
            return web.Response(status=200, body=data, headers=_ACCEPT_RANGES)
        try:
            try:
                byte_range = parse_range(request.headers.get("Range"), size)
            except MetadataError as err:
                return error_response(err, {"Content-Range": f"bytes */{size}"})
            headers = {"Accept-Ranges": "bytes"}
            if byte_range is None:
                status, offset, count = 200, 0, size
            else:
                status, offset, count = 206, byte_range[0], byte_range[1] - byte_range[0] + 1
                headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await resp.prepare(request)
            if count:
                try:
                    await _send_range(request, resp, f, offset, count)
                except ConnectionError:
                    resp.force_close()  # the client left mid-body
                    return resp
            await resp.write_eof()
            return resp
        finally:
            f.close()


def make_data_server(store: DataFileStore, *, body_idle_timeout: float = BODY_IDLE_TIMEOUT_S,
                     secret: str = "", copy_enabled: bool | None = None,
                     delete_many_enabled: bool | None = None) -> web.Server:
    """The /DataFile server over `store` (which must already be set up).

    With `secret`, a request without the x-dmd-secret header holding it is refused first.
    `copy_enabled` (default: unless DMD_DATA_NO_COPY is true): serve POST ?copy.
    `delete_many_enabled` (default: unless DMD_DATA_NO_DELETE_MANY is true): serve POST ?delete.
    """
    if copy_enabled is None:
        copy_enabled = not _env_true(NO_COPY_ENV)
    if delete_many_enabled is None:
        delete_many_enabled = not _env_true(NO_DELETE_MANY_ENV)
    return web.Server(_DataHandler(store, body_idle_timeout, copy_enabled, secret, delete_many_enabled))


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


async def start_data_server(config: Config, host: str, port: int, *,
                            body_idle_timeout: float = BODY_IDLE_TIMEOUT_S) -> web.ServerRunner:
    """Set up the store at config.data_path and listen on host:port (0 = any free port).

    Returns the started runner; `runner.addresses[0][1]` is the bound port and
    `await runner.cleanup()` stops it.
    """
    store = DataFileStore(config.data_path, no_sync=config.data_no_sync)
    await store.setup()
    warn_if_exposed("the data server (/DataFile)", host, config.dmd_secret)
    runner = web.ServerRunner(make_data_server(store, body_idle_timeout=body_idle_timeout, secret=config.dmd_secret),
                              keepalive_timeout=KEEPALIVE_TIMEOUT_S, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=dmd_tls.server_context(config)).start()   # TLS: shared/dmd_tls.py
    log_event(log, logging.INFO, "data server listening", host=host, port=runner.addresses[0][1],
              dataPath=str(store.data_path), noSync=store.no_sync, secretRequired=bool(config.dmd_secret))
    return runner


async def _serve_forever(config: Config, host: str, port: int) -> None:
    runner = await start_data_server(config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """`python -m dmd.data`: only the data daemon."""
    config = load_config()
    parser = argparse.ArgumentParser(prog="python -m dmd.data", description="dmd data daemon (/DataFile)")
    parser.add_argument("--bind", default=config.data_daemon.bind_address)
    parser.add_argument("--port", type=int, default=config.data_daemon.port)
    args = parser.parse_args(argv)
    setup_logging(config.log_level)
    asyncio.run(_serve_forever(config, args.bind, args.port))


if __name__ == "__main__":
    main()
