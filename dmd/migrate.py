"""`python -m dmd.migrate --from <original metadata folder> --to <new metadata folder>`.

Copies the metadata of the original CloudServer (its `localMetadata`: the LevelDB `rootDB/` and
the `uuid` file) into a fresh RocksDB store that our dmd opens, leaving the original untouched:

1. refuses a destination that exists and is not empty, and a source the original's mdserver still
   holds (LevelDB's LOCK) or that is not a metadata folder;
2. copies `rootDB/` into a temporary folder and reads the COPY (RocksDB reads LevelDB's files; opened
   in place it would rewrite the MANIFEST and the original could no longer open the folder), and
   checks the source did not change during the copy;
3. writes every key/value pair, as is, into `<to>/rootDB` in batches (both dmds use the same
   physical keys and values, docs/metadata-keys.md, and our engine keeps no key of its own, so
   nothing is added or rewritten; the original's record log is copied too and our dmd continues
   its sequence when recordLog.enabled);
4. verifies: keys read == keys written, and a SHA-256 over every (key, value) pair of the copy
   equals the one over the new store, read back after it was closed;
5. copies `uuid` (the deployment id), then prints a summary.

The source copy and the store are built in `<to>/.migrating/`, and the store is moved to `<to>/rootDB` only once verified, so an
interrupted run never leaves a half-filled store our dmd would open. The data folder (S3DATAPATH,
`localData/`) is not touched: our dmd reads the original's data files as they are.
Exit status: 0 done, 1 refused or failed (nothing usable written), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

from shared.durable import fsync_dir
from shared.metastore.kv import ROOT_DB_DIRNAME, RocksKV
from shared.metastore.leveldb import is_original_leveldb
from shared.metastore.recordlog import RECORD_LOG_PREFIX

UUID_FILENAME = "uuid"
STAGING_DIRNAME = ".migrating"
BATCH_MAX_OPS = 1000
BATCH_MAX_BYTES = 4 << 20

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class MigrationError(Exception):
    """The migration refused or failed; the message says why and what to do."""


@dataclass
class Tally:
    """Keys and bytes seen, the running checksum, and a count per kind of key."""
    keys: int = 0
    bytes: int = 0
    digest: "hashlib._Hash" = field(default_factory=hashlib.sha256)
    kinds: Counter = field(default_factory=Counter)

    def add(self, key: bytes, value: bytes) -> None:
        self.keys += 1
        self.bytes += len(key) + len(value)
        # Length-prefixed, so that no two different sequences of pairs hash alike.
        self.digest.update(len(key).to_bytes(8, "big") + key + len(value).to_bytes(8, "big") + value)
        self.kinds[kind_of(key)] += 1

    @property
    def checksum(self) -> str:
        return self.digest.hexdigest()


def kind_of(key: bytes) -> str:
    """What a physical key is, for the summary (docs/metadata-keys.md)."""
    text = key.decode("utf-8", errors="replace")
    if not text.startswith("!"):
        return "other"
    end = text.find("!", 1)
    sub, rest = text[1:end], text[end + 1:]
    if sub.startswith(RECORD_LOG_PREFIX):
        return "record log entries"
    if sub == "__metastore":
        return "bucket records (__metastore)"
    if sub == "users..bucket":
        return "users..bucket entries"
    if sub.startswith("mpuShadowBucket"):
        return "multipart upload records"
    if "\0" in rest:
        return "object versions"
    return "object masters"


def _snapshot(folder: str) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file of a folder: what "the source did not change" compares."""
    out = {}
    for name in sorted(os.listdir(folder)):
        st = os.stat(os.path.join(folder, name))
        out[name] = (st.st_size, st.st_mtime_ns)
    return out


def _check_not_running(src_db: str) -> None:
    """Refuse while a LevelDB process (the original mdserver) holds the database's LOCK.

    Only tests the lock (a shared POSIX lock, released at once): LevelDB holds an exclusive one
    for as long as the database is open. Nothing in the folder is written."""
    lock = os.path.join(src_db, "LOCK")
    if not os.path.exists(lock):
        return
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            raise MigrationError(f"{src_db} is in use (its LOCK is held): stop the original's mdserver first") \
                from exc
        raise
    finally:
        os.close(fd)


def _read_pairs(db_path: str):
    """Every (key, value) of the database copy at `db_path`, in key order, read-only."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(db_path, Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        it = db.iter()
        it.seek_to_first()
        while it.valid():
            yield it.key(), it.value()
            it.next()
        it.status()
        del it
    finally:
        db.close()


def check_paths(src: str, dst: str) -> str:
    """Validate the arguments; the source's rootDB path."""
    src_db = os.path.join(src, ROOT_DB_DIRNAME)
    if not os.path.isdir(src_db) or not os.path.isfile(os.path.join(src_db, "CURRENT")):
        raise MigrationError(f"{src} is not a metadata folder: no {ROOT_DB_DIRNAME}/CURRENT in it "
                             f"(give the folder S3METADATAPATH named, e.g. .../localMetadata)")
    if os.path.realpath(src) == os.path.realpath(dst):
        raise MigrationError("--from and --to name the same folder: the migration writes a new one")
    real_src, real_dst = os.path.realpath(src), os.path.realpath(dst)
    if real_dst.startswith(real_src + os.sep):
        raise MigrationError("--to must not be inside --from: the original folder is never written")
    if os.path.exists(dst):
        if not os.path.isdir(dst):
            raise MigrationError(f"{dst} exists and is not a folder")
        leftover = os.listdir(dst)
        if leftover:
            hint = " (left by an interrupted migration: remove it)" if STAGING_DIRNAME in leftover else ""
            raise MigrationError(f"{dst} is not empty{hint}: the migration only writes a new, empty folder")
    return src_db


def migrate(src: str, dst: str, out=sys.stdout) -> dict:
    """Copy the metadata folder `src` into a new RocksDB store at `dst`; the summary as a dict."""
    started = time.monotonic()
    src_db = check_paths(src, dst)
    original = is_original_leveldb(src_db)
    _check_not_running(src_db)
    os.makedirs(dst, exist_ok=True)
    staging = os.path.join(dst, STAGING_DIRNAME)
    os.makedirs(staging)
    scratch = tempfile.mkdtemp(prefix="source-copy-", dir=staging)
    try:
        # 1. A copy of the source, taken while nothing writes it; only the copy is ever opened.
        before = _snapshot(src_db)
        copy_db = os.path.join(scratch, ROOT_DB_DIRNAME)
        shutil.copytree(src_db, copy_db, ignore=shutil.ignore_patterns("LOCK"))
        if _snapshot(src_db) != before:
            raise MigrationError(f"{src_db} changed while it was copied: stop the original's mdserver and retry")

        # 2. Every pair into the new store, in batches.
        read, written = Tally(), 0
        kv = RocksKV(staging)
        try:
            batch: list[tuple[bytes, bytes | None]] = []
            size = 0
            for key, value in _read_pairs(copy_db):
                read.add(key, value)
                batch.append((key, value))
                size += len(key) + len(value)
                if len(batch) >= BATCH_MAX_OPS or size >= BATCH_MAX_BYTES:
                    kv.write(batch, sync=False)
                    written += len(batch)
                    batch, size = [], 0
            batch_len = len(batch)
            kv.write(batch, sync=True)   # the last batch syncs the WAL, and with it all before
            written += batch_len
        finally:
            kv.close()

        # 3. Verify: read the new store back after closing it.
        back = Tally()
        kv = RocksKV(staging)
        try:
            for key, value in kv.iterate():
                back.add(key, value)
        finally:
            kv.close()
        if not (read.keys == written == back.keys and read.checksum == back.checksum):
            raise MigrationError(f"verification failed: read {read.keys} pairs, wrote {written}, read back "
                                 f"{back.keys}; checksums {read.checksum} / {back.checksum}")

        # 4. Into place, then the deployment id.
        os.rename(os.path.join(staging, ROOT_DB_DIRNAME), os.path.join(dst, ROOT_DB_DIRNAME))
        shutil.rmtree(scratch)
        os.rmdir(staging)
        uuid_copied = False
        src_uuid = os.path.join(src, UUID_FILENAME)
        if os.path.isfile(src_uuid):
            tmp = os.path.join(dst, f".{UUID_FILENAME}.tmp")
            shutil.copyfile(src_uuid, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(dst, UUID_FILENAME))
            uuid_copied = True
        fsync_dir(dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = {
        "from": src, "to": dst, "source_format": "LevelDB (original CloudServer)" if original else "RocksDB",
        "keys_read": read.keys, "keys_written": written, "keys_verified": back.keys, "bytes": read.bytes,
        "sha256": read.checksum, "kinds": dict(sorted(read.kinds.items())), "uuid_copied": uuid_copied,
        "seconds": round(time.monotonic() - started, 3),
    }
    print(f"migrated {src} ({summary['source_format']}) -> {dst}", file=out)
    print(f"  keys: read {read.keys}, written {written}, verified {back.keys} ({read.bytes} bytes)", file=out)
    print(f"  sha256 of all pairs: {read.checksum} (source copy and new store agree)", file=out)
    for kind, count in summary["kinds"].items():
        print(f"    {kind}: {count}", file=out)
    print(f"  uuid: {'copied' if uuid_copied else 'none in the source (the dmd creates one)'}", file=out)
    print(f"  the original folder {src} was not modified; the data folder is used as is:", file=out)
    print(f"  start the dmd with S3METADATAPATH={dst} and S3DATAPATH=<the original's localData>", file=out)
    print(f"  done in {summary['seconds']} s", file=out)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dmd.migrate",
        description="Copy the original CloudServer's metadata folder (LevelDB) into a new folder our dmd "
                    "opens (RocksDB), leaving the original untouched.")
    parser.add_argument("--from", dest="src", required=True,
                        help="the original's metadata folder (its S3METADATAPATH, holding rootDB/ and uuid)")
    parser.add_argument("--to", dest="dst", required=True, help="the new metadata folder (absent or empty)")
    args = parser.parse_args(argv)
    try:
        migrate(args.src, args.dst)
    except MigrationError as err:
        print(f"dmd.migrate: {err}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # noqa: BLE001 - a readable message, not a traceback, for the operator
        print(f"dmd.migrate: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
