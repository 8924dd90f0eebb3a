"""RocksKV makes its WAL durable itself (issue 18): rocksdict holds the GIL through a sync=True
write, which froze the dmd's event loop for every fsync, so RocksKV writes without RocksDB's sync
and fdatasyncs the WAL file with the GIL released. These tests check that every acknowledged
write's log file (and a new log's folder entry) was synced before `write` returned."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.metastore import kv as kvmod
from shared.metastore.kv import RocksKV


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Paths given to fdatasync and to the folder fsync, in order."""
    seen: dict[str, list[str]] = {"files": [], "dirs": []}
    real_fdatasync, real_fsync_dir = os.fdatasync, kvmod.fsync_dir

    def fdatasync(fd: int) -> None:
        seen["files"].append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)

    def fsync_dir(path: str) -> None:
        seen["dirs"].append(os.path.realpath(path))
        real_fsync_dir(path)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(kvmod, "fsync_dir", fsync_dir)
    return seen


def _logs(db_path: str) -> list[str]:
    return sorted((p for p in os.listdir(db_path) if p.endswith(".log")), key=lambda p: int(p[:-4]))


def test_a_synced_write_fdatasyncs_the_log_that_holds_it(tmp_path: Path, synced: dict[str, list[str]]) -> None:
    kv = RocksKV(str(tmp_path))
    try:
        kv.write([(b"a", b"1")])
        newest = os.path.realpath(os.path.join(kv.db_path, _logs(kv.db_path)[-1]))
        assert synced["files"] == [newest]
        assert synced["dirs"] == [os.path.realpath(kv.db_path)]   # the first sync of a log: its entry too
        kv.write([(b"b", b"2")])
        assert synced["files"] == [newest, newest] and len(synced["dirs"]) == 1
        kv.write([(b"c", b"3")], sync=False)   # asked not to sync: nothing
        assert len(synced["files"]) == 2
    finally:
        kv.close()


def test_a_new_log_after_a_memtable_switch_is_synced_with_its_folder(tmp_path: Path,
                                                                    synced: dict[str, list[str]]) -> None:
    kv = RocksKV(str(tmp_path))
    try:
        kv.write([(b"a", b"1")])
        first = _logs(kv.db_path)[-1]
        kv.write([(b"b", b"2")], sync=False)
        kv._db.flush()   # the memtable goes to a table file: RocksDB starts a new log
        kv.write([(b"c", b"3")])
        newest = _logs(kv.db_path)[-1]
        assert newest != first
        assert synced["files"][-1] == os.path.realpath(os.path.join(kv.db_path, newest))
        assert len(synced["dirs"]) == 2
        assert kv.get(b"a") == b"1" and kv.get(b"b") == b"2" and kv.get(b"c") == b"3"
    finally:
        kv.close()
    again = RocksKV(str(tmp_path))
    try:
        assert [again.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]
    finally:
        again.close()


def test_no_sync_store_never_syncs(tmp_path: Path, synced: dict[str, list[str]]) -> None:
    kv = RocksKV(str(tmp_path), no_sync=True)
    try:
        kv.write([(b"a", b"1")])
        assert synced == {"files": [], "dirs": []}
    finally:
        kv.close()


def test_a_failed_wal_sync_fails_the_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kv = RocksKV(str(tmp_path))
    try:
        def broken(fd: int) -> None:
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(os, "fdatasync", broken)
        with pytest.raises(OSError):
            kv.write([(b"a", b"1")])
        monkeypatch.undo()
        kv.write([(b"b", b"2")])   # reopened (stuck after the failure), then written
        assert kv.get(b"b") == b"2"
    finally:
        kv.close()
