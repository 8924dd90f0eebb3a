"""Moving from CloudServer: the dmd refuses the original's LevelDB folder, `python -m dmd.migrate`
copies it into a store our dmd opens, leaving the original byte-identical.

Fixtures (tests/fixtures/original/, made by the original CloudServer 8.8.35, see its README in
../shared/reference/original-fixtures/): the two store tarballs, their LevelDB dumps (140 pairs
each, the record log included), their manifests (md5 of every data file), and the standard-library
`leveldb_manifest_check.py` that tells whether the original's LevelDB can still open a rootDB.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shared.metastore import RocksKV
from shared.metastore.leveldb import is_original_leveldb
from tests.integration.sio_raw import METADATA_NS, RECORDLOG_NS, RawSio
from tests.procs import REPO, _base_env, start_dmd

FIXTURES = REPO / "tests" / "fixtures" / "original"
CHECK = FIXTURES / "leveldb_manifest_check.py"
STORES = {
    "default": ("store-v8.8.35.tar.gz", "store-v8.8.35-leveldb.jsonl", "store-manifest.json"),
    "s3backend-file": ("store-v8.8.35-s3backend-file.tar.gz", "store-v8.8.35-s3backend-file-leveldb.jsonl",
                       "store-manifest-s3backend-file.json"),
}
RUN_TIMEOUT_S = 120
# How long a dmd that should refuse to start may run before the test calls it started.
REFUSE_TIMEOUT_S = 60


def extract(store: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(FIXTURES / STORES[store][0]) as tar:
        tar.extractall(into, filter="data")
    return into


def dump(store: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / STORES[store][1]).read_text().splitlines() if line]


def manifest(store: str) -> dict:
    return json.loads((FIXTURES / STORES[store][2]).read_text())


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: the folder byte for byte."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leveldb_check(root_db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), str(root_db)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def run_migrate(src: Path, dst: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dmd.migrate", "--from", str(src), "--to", str(dst)],
                          cwd=REPO, env=_base_env(None), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def data_md5s(base: Path, store: str) -> dict[str, str]:
    return {f["path"]: hashlib.md5((base / f["path"]).read_bytes()).hexdigest() for f in manifest(store)["data_files"]}


# ---- 1. detection: the dmd never opens the original's folder in place ----------------------------

@pytest.mark.parametrize("store", list(STORES))
def test_dmd_refuses_the_original_leveldb_folder(tmp_path: Path, store: str) -> None:
    base = extract(store, tmp_path / "orig")
    md = base / "localMetadata"
    assert leveldb_check(md / "rootDB").returncode == 0
    before = tree_digest(md)
    env = _base_env({"S3METADATAPATH": str(md), "S3DATAPATH": str(base / "localData")})
    proc = subprocess.Popen([sys.executable, "-m", "dmd", "--metadata-port", "0", "--data-port", "0",
                             "--bind", "127.0.0.1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=REFUSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:   # it started serving the folder: stop it, then fail below
        proc.terminate()
        out, _ = proc.communicate()
    assert proc.returncode != 0, out
    assert "dmd listening" not in out
    assert "LevelDB" in out and "python -m dmd.migrate" in out and str(md) in out, out
    # Nothing in the folder changed (no RocksDB file added, the MANIFEST untouched), and the
    # original's LevelDB can still open it.
    assert tree_digest(md) == before
    check = leveldb_check(md / "rootDB")
    assert check.returncode == 0 and "LevelDB-compatible" in check.stdout, check.stdout


def test_detection_has_no_false_positive_on_our_store(tmp_path: Path) -> None:
    """A folder our dmd created (RocksDB) opens again; an empty one is created."""
    d = start_dmd(tmp_path / "ours")
    d.stop()
    assert not is_original_leveldb(str(d.metadata_path / "rootDB"))
    d.start()   # reopens it
    d.stop()


# ---- 2. migration ----------------------------------------------------------------------------

@pytest.mark.parametrize("store", list(STORES))
def test_migrate_copies_every_pair_and_leaves_the_original_untouched(tmp_path: Path, store: str) -> None:
    base = extract(store, tmp_path / "orig")
    md, data = base / "localMetadata", base / "localData"
    before_md = tree_digest(md)
    before_data = data_md5s(base, store)
    assert before_data == {f["path"]: f["md5"] for f in manifest(store)["data_files"]}
    new_md = tmp_path / "new-metadata"

    done = run_migrate(md, new_md)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read 140, written 140, verified 140" in done.stdout, done.stdout
    assert "record log entries: 87" in done.stdout, done.stdout

    # The original: byte-identical, still LevelDB; the data files unchanged.
    assert tree_digest(md) == before_md
    check = leveldb_check(md / "rootDB")
    assert check.returncode == 0 and "LevelDB-compatible" in check.stdout, check.stdout
    assert data_md5s(base, store) == before_data
    assert (new_md / "uuid").read_bytes() == (md / "uuid").read_bytes()
    assert sorted(os.listdir(new_md)) == ["rootDB", "uuid"]

    # Our store, key for key, equals the original's dump (the record log included).
    expected = [(p["key"], p["value"]) for p in dump(store)]
    assert len(expected) == 140
    kv = RocksKV(str(new_md))
    try:
        got = [(k.decode(), v.decode()) for k, v in kv.iterate()]
    finally:
        kv.close()
    assert got == expected

    # Our dmd opens the migrated folder over the original's data folder and serves it.
    d = start_dmd(tmp_path / "dmd", env={"S3METADATAPATH": str(new_md), "S3DATAPATH": str(data)})
    try:
        asyncio.run(_read_back(d.metadata_port, store, (md / "uuid").read_text()))
    finally:
        d.stop()
    assert data_md5s(base, store) == before_data


async def _read_back(port: int, store: str, uuid: str) -> None:
    raw = await RawSio().open(port)
    try:
        entries = await raw.read_stream(["users..bucket"])
        buckets = sorted(e["key"].split("..|..")[1] for e in entries)
        assert buckets == sorted(b["name"] for b in manifest(store)["buckets"])
        err, value = await raw.call(METADATA_NS, "get", {"rpcArgs": ["fixture-plain", {}], "subLevel": ["__metastore"]})
        assert err is None and json.loads(value)["name"] == "fixture-plain"
        err, value = await raw.call(METADATA_NS, "get", {"rpcArgs": ["doc.txt", {}], "subLevel": ["fixture-versioned"]})
        assert err is None
        assert json.loads(value)["isDeleteMarker"] is True   # the latest doc.txt is a delete marker
        err, got_uuid = await raw.call(METADATA_NS, "getUUID", {"rpcArgs": [], "subLevel": []})
        assert err is None and got_uuid == uuid
    finally:
        await raw.close()


def test_migrated_record_log_continues_where_the_original_stopped(tmp_path: Path) -> None:
    """With recordLog.enabled, the next write after migration is record 88 of the original's log."""
    base = extract("default", tmp_path / "orig")
    new_md = tmp_path / "new-metadata"
    assert run_migrate(base / "localMetadata", new_md).returncode == 0
    cfg = json.loads((REPO / "config.json").read_text())
    cfg["recordLog"] = {"enabled": True, "recordLogName": "s3-recordlog"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    d = start_dmd(tmp_path / "dmd", env={"S3METADATAPATH": str(new_md), "S3DATAPATH": str(base / "localData"),
                                         "S3_CONFIG_FILE": str(tmp_path / "config.json")})

    async def scenario() -> None:
        raw = await RawSio((METADATA_NS, RECORDLOG_NS)).open(d.metadata_port)
        try:
            info, records = await raw.read_records(startSeq=86)
            assert info == {"start": 86, "end": 87} and len(records) == 2
            err, _ = await raw.call(METADATA_NS, "put", {"rpcArgs": ["after.txt", "{}", {}], "subLevel": ["fixture-plain"]})
            assert err is None
            info, records = await raw.read_records(startSeq=88)
            assert info == {"start": 88, "end": 88}
            assert records == [{"timestamp": records[0]["timestamp"], "db": "fixture-plain",
                                "entries": [{"type": "put", "key": "after.txt", "value": "{}"}]}]
        finally:
            await raw.close()
    try:
        asyncio.run(scenario())
    finally:
        d.stop()


# ---- 3. what the migration refuses -----------------------------------------------------------

def test_migrate_refuses_a_non_empty_destination_and_a_non_store(tmp_path: Path) -> None:
    base = extract("default", tmp_path / "orig")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "something").write_text("x")
    done = run_migrate(base / "localMetadata", dst)
    assert done.returncode == 1 and "not empty" in done.stderr, done.stderr
    assert os.listdir(dst) == ["something"]

    done = run_migrate(base / "localData", tmp_path / "dst2")
    assert done.returncode == 1 and "not a metadata folder" in done.stderr, done.stderr
    assert not (tmp_path / "dst2").exists()


def test_migrate_refuses_a_folder_the_original_still_holds(tmp_path: Path) -> None:
    """LevelDB holds a POSIX write lock on rootDB/LOCK while open: a process holding it stands in for
    the running original (leveldown locks with fcntl F_SETLK, as this does)."""
    base = extract("default", tmp_path / "orig")
    lock = base / "localMetadata" / "rootDB" / "LOCK"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,sys,time\n"
                               f"f=open({str(lock)!r},'r+'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = run_migrate(base / "localMetadata", tmp_path / "dst")
        assert done.returncode == 1 and "in use" in done.stderr, done.stderr
        assert not (tmp_path / "dst").exists()
    finally:
        holder.kill()
        holder.wait()
    done = run_migrate(base / "localMetadata", tmp_path / "dst")   # once the original has stopped
    assert done.returncode == 0, done.stderr
