"""The ordered key-value interface under the metadata engine, and its two stores.

`OrderedKV` is all the engine needs from storage: point reads, atomic batches
and lazy byte-ordered range iteration. `RocksKV` keeps the dmd's database in
RocksDB (rocksdict, raw bytes) at `<path>/rootDB`; `MemoryKV` keeps it in a
sorted map for the in-memory backend and tests. All methods are blocking; the
engine calls them from worker threads, so both stores are thread-safe.
"""
from __future__ import annotations

import errno
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict

from shared.durable import fsync_dir
from shared.metastore.leveldb import is_original_leveldb

Op = tuple[bytes, "bytes | None"]   # (key, value); value None deletes the key

ROOT_DB_DIRNAME = "rootDB"
# Items fetched per lock acquisition when iterating MemoryKV: short enough not to stall writers.
_MEMORY_ITER_CHUNK = 128


class KVOpenError(Exception):
    """The store cannot be opened (corrupt or unreadable); it is never silently re-initialised."""


class OriginalStoreError(KVOpenError):
    """The folder holds the original CloudServer's LevelDB metadata: never opened in place
    (RocksDB would make it unreadable for the original); `python -m dmd.migrate` copies it."""


class KVClosedError(Exception):
    """An operation was attempted on a closed store."""


class KVNoSpaceError(Exception):
    """A write failed because the disk is full; nothing of it was applied.

    The store stays readable and recovers by itself once space is back (docs/durability.md#disk-full)."""


# How RocksDB words a write that found the disk full, and the state it leaves the DB in: it
# refuses every later write ("Writer has previous error") until the DB is opened again.
_NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded", "NoSpace")
_WRITER_STUCK_MARKER = "Writer has previous error"
# Free bytes needed before a stuck DB is reopened: opening replays the WAL into a table file.
REOPEN_MIN_FREE_BYTES = 1 << 20


class _Range:
    """gt/gte/lt/lte bounds in byte order; a strict bound wins over a non-strict one given for the same side."""

    __slots__ = ("lower", "lower_incl", "upper", "upper_incl")

    def __init__(self, gt: bytes | None, gte: bytes | None, lt: bytes | None, lte: bytes | None):
        self.lower, self.lower_incl = (gt, False) if gt is not None else (gte, True)
        self.upper, self.upper_incl = (lt, False) if lt is not None else (lte, True)

    def above_lower(self, key: bytes) -> bool:
        if self.lower is None:
            return True
        return key >= self.lower if self.lower_incl else key > self.lower

    def below_upper(self, key: bytes) -> bool:
        if self.upper is None:
            return True
        return key <= self.upper if self.upper_incl else key < self.upper


def _statvfs_usage(path: str) -> dict[str, int]:
    st = os.statvfs(path)
    return {"available": st.f_bavail * st.f_frsize, "free": st.f_bfree * st.f_frsize,
            "total": st.f_blocks * st.f_frsize}


class OrderedKV(ABC):
    """A byte-ordered key-value store with atomic multi-key writes."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def write(self, ops: list[Op], sync: bool = True) -> None:
        """Apply all ops atomically, in order (a later op on the same key wins)."""

    @abstractmethod
    def iterate(self, gt: bytes | None = None, gte: bytes | None = None, lt: bytes | None = None,
                lte: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Lazy (key, value) pairs inside the bounds, byte order (descending when reverse).

        Close the iterator (`.close()`) when stopping early to free its resources at once."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def disk_usage(self) -> dict[str, int]:
        """{"available", "free", "total"} in bytes for the filesystem holding the data."""

    def cursor(self) -> KVCursor:
        """Successive forward range reads (a listing's streams, each opened after the previous one
        is closed) that may share one store iterator; close() it when done."""
        return KVCursor(self)


class KVCursor:
    """Forward range reads one after the other; this base reads each through `iterate()`. Opening a
    range closes the one before it."""

    def __init__(self, kv: OrderedKV) -> None:
        self._kv = kv
        self._current: Iterator[tuple[bytes, bytes]] | None = None

    def range(self, gt: bytes | None = None, gte: bytes | None = None, lt: bytes | None = None,
              lte: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        self._close_current()
        self._current = self._open(_Range(gt, gte, lt, lte))
        return self._current

    def _open(self, rng: _Range) -> Iterator[tuple[bytes, bytes]]:
        return self._kv.iterate(gt=rng.lower if not rng.lower_incl else None,
                                gte=rng.lower if rng.lower_incl else None,
                                lt=rng.upper if not rng.upper_incl else None,
                                lte=rng.upper if rng.upper_incl else None)

    def _close_current(self) -> None:
        current, self._current = self._current, None
        if current is not None:
            current.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._close_current()


class _RocksCursor(KVCursor):
    """One RocksDB iterator re-seeked for every range: a listing that jumps past each common prefix
    opens a range per prefix, and creating (then freeing) an iterator costs more than the seek.
    The ranges read the iterator's implicit snapshot (taken when the first range opens)."""

    def __init__(self, kv: RocksKV) -> None:
        super().__init__(kv)
        self._rocks = kv
        self._it: Any = None

    def _open(self, rng: _Range) -> Iterator[tuple[bytes, bytes]]:
        self._rocks._check_open()
        if self._it is None:
            self._it = self._rocks._db.iter()
        return _forward(self._it, rng)

    def close(self) -> None:
        self._close_current()
        self._it = None


def _forward(it: Any, rng: _Range) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of `rng` read forward on a RocksDB iterator (seeked here, not freed)."""
    if rng.lower is None:
        it.seek_to_first()
    else:
        it.seek(rng.lower)
        if it.valid() and not rng.above_lower(it.key()):
            it.next()
    in_range = rng.below_upper
    while it.valid():
        key = it.key()
        if not in_range(key):
            return
        yield key, it.value()
        it.next()
    it.status()   # raises if the iteration stopped on an I/O error rather than the end


def _backward(it: Any, rng: _Range) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of `rng` read backward on a RocksDB iterator (seeked here, not freed)."""
    if rng.upper is None:
        it.seek_to_last()
    else:
        it.seek_for_prev(rng.upper)
        if it.valid() and not rng.below_upper(it.key()):
            it.prev()
    in_range = rng.above_lower
    while it.valid():
        key = it.key()
        if not in_range(key):
            return
        yield key, it.value()
        it.prev()
    it.status()   # raises if the iteration stopped on an I/O error rather than the end


class MemoryKV(OrderedKV):
    """In-memory store over a SortedDict; iteration resumes from its last key so concurrent writes are safe."""

    def __init__(self, disk_usage_path: str = ".") -> None:
        self._data: SortedDict = SortedDict()
        self._lock = threading.Lock()
        self._closed = False
        self._disk_usage_path = disk_usage_path

    def _check_open(self) -> None:
        if self._closed:
            raise KVClosedError("store is closed")

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check_open()
            return self._data.get(key)

    def write(self, ops: list[Op], sync: bool = True) -> None:
        with self._lock:
            self._check_open()
            for key, value in ops:
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value

    def iterate(self, gt: bytes | None = None, gte: bytes | None = None, lt: bytes | None = None,
                lte: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        rng = _Range(gt, gte, lt, lte)
        # The cursor is the last key returned; each chunk restarts irange() strictly past it,
        # so writes between chunks never invalidate the iteration.
        lower, lower_incl = rng.lower, rng.lower_incl
        upper, upper_incl = rng.upper, rng.upper_incl
        while True:
            with self._lock:
                self._check_open()
                keys = self._data.irange(lower, upper, (lower_incl, upper_incl), reverse=reverse)
                chunk = []
                for key in keys:
                    chunk.append((key, self._data[key]))
                    if len(chunk) >= _MEMORY_ITER_CHUNK:
                        break
            yield from chunk
            if len(chunk) < _MEMORY_ITER_CHUNK:
                return
            if reverse:
                upper, upper_incl = chunk[-1][0], False
            else:
                lower, lower_incl = chunk[-1][0], False

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def disk_usage(self) -> dict[str, int]:
        return _statvfs_usage(self._disk_usage_path)


class RocksKV(OrderedKV):
    """RocksDB at `<path>/rootDB` through rocksdict in raw-bytes mode; batches are fsynced unless no_sync."""

    def __init__(self, path: str, *, no_sync: bool = False) -> None:
        from rocksdict import (  # imported here: MemoryKV users need no RocksDB
            Options,
            Rdict,
            WriteOptions,
        )

        self.path = path
        self.db_path = os.path.join(path, ROOT_DB_DIRNAME)
        self._no_sync = no_sync
        self._iterators: weakref.WeakSet[Iterator[tuple[bytes, bytes]]] = weakref.WeakSet()
        self._iter_lock = threading.Lock()
        self._closed = False
        if is_original_leveldb(self.db_path):
            raise OriginalStoreError(
                f"{self.db_path} holds a LevelDB database written by the original CloudServer; it is not "
                f"opened in place (RocksDB would rewrite its MANIFEST and the original could no longer read "
                f"it). Stop the original and copy it into a new folder with: python -m dmd.migrate --from "
                f"{path} --to <new metadata folder>, then set S3METADATAPATH to the new folder "
                f"(the data folder, S3DATAPATH, is used as is)")
        if os.path.isdir(self.db_path) and os.listdir(self.db_path) \
                and not os.path.exists(os.path.join(self.db_path, "CURRENT")):
            # RocksDB would create a fresh empty DB next to the debris: refuse instead.
            raise KVOpenError(f"metadata database at {self.db_path} is not empty but has no CURRENT file")
        try:
            os.makedirs(path, exist_ok=True)
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            self._db = Rdict(self.db_path, options)
        except Exception as exc:  # rocksdict raises a bare Exception ("Corruption: ...", "IO error: ...")
            raise KVOpenError(f"cannot open metadata database at {self.db_path}: {exc}") from exc
        self._options = options
        self._async_options = WriteOptions()
        self._wal = _WalSyncer(self.db_path)
        # Set after a write failed for lack of space: RocksDB then refuses every write until the
        # DB is reopened, which `_recover` does on a later write once space is back.
        self._stuck = False
        self._reopen_lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        db = self._db
        try:
            return db.get(key)
        except Exception:
            if db is self._db:
                raise
            return self._db.get(key)   # raced with a reopen (`_recover`): once more on the new handle

    def write(self, ops: list[Op], sync: bool = True) -> None:
        from rocksdict import WriteBatch

        self._check_open()
        if self._stuck:
            self._recover()
        batch = WriteBatch(raw_mode=True)
        for key, value in ops:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            # Written without RocksDB's own sync: rocksdict holds the GIL for the whole call, so a
            # sync=True write froze every thread of the process (the dmd's event loop with them) for
            # each WAL fsync. RocksDB appends the batch to its WAL with write(2) before returning
            # (manual_wal_flush is off); `_WalSyncer` then fdatasyncs that file with the GIL released.
            self._db.write(batch, self._async_options)
            if sync and not self._no_sync:
                self._wal.sync()
        except OSError as exc:   # the WAL's fdatasync failed: nothing says the batch is on disk
            self._stuck = True   # reopened (the WAL replayed from what the disk holds) on a later write
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise KVNoSpaceError(f"metadata disk full: WAL sync: {exc}") from exc
            raise
        except Exception as exc:  # rocksdict raises a bare Exception("IO error: No space left on device: ...")
            text = str(exc)
            if any(marker in text for marker in _NO_SPACE_MARKERS) or _WRITER_STUCK_MARKER in text:
                self._stuck = True
                raise KVNoSpaceError(f"metadata disk full: {text}") from exc
            raise

    def _recover(self) -> None:
        """Reopen a DB stuck after a full disk, once there is room again; KVNoSpaceError until then.

        Reads go on from the stuck handle meanwhile. Reopening needs the old handle closed, which
        an open iterator prevents (it holds the DB): the reopen then waits for a later write."""
        from rocksdict import Rdict

        with self._reopen_lock:
            if not self._stuck:
                return
            if _statvfs_usage(self.path)["available"] < REOPEN_MIN_FREE_BYTES:
                raise KVNoSpaceError("metadata disk full: waiting for free space")
            with self._iter_lock:
                busy = any(True for _ in self._iterators)
            if busy:
                raise KVNoSpaceError("metadata disk full: recovery waits for open iterators")
            try:
                self._db.close()
            except Exception:  # noqa: BLE001 - a stuck DB reports its write error again on close
                pass
            try:
                self._db = Rdict(self.db_path, self._options)
            except Exception as exc:  # still no room to replay the WAL: try again on a later write
                raise KVNoSpaceError(f"metadata disk full: cannot reopen the database: {exc}") from exc
            self._stuck = False

    def iterate(self, gt: bytes | None = None, gte: bytes | None = None, lt: bytes | None = None,
                lte: bytes | None = None, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        self._check_open()
        gen = self._iterate(_Range(gt, gte, lt, lte), reverse)
        with self._iter_lock:
            self._iterators.add(gen)
        return gen

    def cursor(self) -> KVCursor:
        self._check_open()
        cursor = _RocksCursor(self)
        with self._iter_lock:
            self._iterators.add(cursor)   # closed with the store, like an iterator
        return cursor

    def _iterate(self, rng: _Range, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        try:
            yield from (_backward if reverse else _forward)(it, rng)
        finally:
            del it

    def _check_open(self) -> None:
        if self._closed:
            raise KVClosedError("store is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._iter_lock:
            iterators = list(self._iterators)
        for gen in iterators:
            try:
                gen.close()  # type: ignore[attr-defined]
            except ValueError:
                pass  # still running in another thread; its own finally frees the RocksDB iterator
        self._db.close()
        self._wal.close()

    def disk_usage(self) -> dict[str, int]:
        return _statvfs_usage(self.path)


class _WalSyncer:
    """Makes RocksDB's write-ahead log durable with fdatasync(2) from Python, which releases the GIL.

    RocksDB keeps its WAL as `<db>/<number>.log` and appends only to the newest one; a memtable
    switch starts a new one and leaves the previous one complete (it is deleted once its memtable
    is flushed to a synced table file). So after a write returned, its batch is in the newest log,
    or in an older one if a switch came in between: `sync` fdatasyncs every log from the newest
    one synced before up to the newest now, and fsyncs the folder when a new log appeared (its
    directory entry must be durable too). A log deleted meanwhile held only flushed data.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}   # log number -> an open read-only descriptor
        self._newest_synced = -1   # logs below it are complete and synced

    def _logs(self) -> list[tuple[int, str]]:
        """(number, file name) of each WAL file, oldest first."""
        return sorted((int(name[:-4]), name) for name in os.listdir(self.db_path)
                      if name.endswith(".log") and name[:-4].isdigit())

    def sync(self) -> None:
        with self._lock:
            logs = [(n, name) for n, name in self._logs() if n >= self._newest_synced]
            if not logs:
                return
            for number, name in logs:
                fd = self._fds.get(number)
                if fd is None:
                    try:
                        fd = os.open(os.path.join(self.db_path, name), os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue   # flushed into a table file and deleted meanwhile
                    self._fds[number] = fd
                os.fdatasync(fd)
            newest = logs[-1][0]
            if newest != self._newest_synced:
                fsync_dir(self.db_path)   # the new log's directory entry
                self._newest_synced = newest
            for number in [n for n in self._fds if n < newest]:   # complete and synced: done with
                os.close(self._fds.pop(number))

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

