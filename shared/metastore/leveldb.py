"""Recognise a metadata folder written by the original CloudServer (LevelDB), without opening it.

The original's mdserver keeps its metadata in LevelDB (`<S3METADATAPATH>/rootDB`, leveldown 5.6 /
LevelDB 1.20). RocksDB opens such a folder, but rewrites its MANIFEST with records LevelDB does
not know (the DB-id tag 8193 first), after which the original refuses it ("Corruption:
VersionEdit: unknown tag"). So the dmd never opens one in place: RocksKV calls `is_original_leveldb`
first and refuses, and `python -m dmd.migrate` copies it instead (README.md, "Moving from CloudServer").

What tells them apart (checked on the original's fixture stores and on folders our dmd created):
- RocksDB writes `IDENTITY` and `OPTIONS-<n>` files when it creates a database, and rocksdict adds
  `rocksdict-config.json`; LevelDB writes none of them;
- the VersionEdit records of a LevelDB MANIFEST only use tags 1-7 and 9; RocksDB's always carry
  others (the DB id, column families).
A folder is the original's when it has a CURRENT file, none of RocksDB's files, and a MANIFEST
made only of LevelDB tags. Only reads: nothing in the folder is created or changed.
"""
from __future__ import annotations

import os

ROCKSDB_MARKERS = ("IDENTITY", "rocksdict-config.json")
ROCKSDB_MARKER_PREFIXES = ("OPTIONS-",)
LEVELDB_TAGS = frozenset({1, 2, 3, 4, 5, 6, 7, 9})
_BLOCK = 32768
_HEADER = 7


def _records(data: bytes):
    """The records of a LevelDB log file (32 KiB blocks, 7-byte headers, fragments joined)."""
    buf, pos = b"", 0
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        frag, pos = data[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == 0:
            continue
        buf += frag
        if kind in (1, 4):   # FULL or LAST fragment
            yield buf
            buf = b""


def _varint(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def manifest_unknown_tag(db_path: str) -> int | None:
    """The first VersionEdit tag of the current MANIFEST that LevelDB does not know, None if all are
    LevelDB's. Raises OSError / ValueError when CURRENT or the MANIFEST cannot be read."""
    with open(os.path.join(db_path, "CURRENT"), encoding="ascii") as f:
        name = f.read().strip()
    if not name.startswith("MANIFEST-") or "/" in name:
        raise ValueError(f"CURRENT names {name!r}, not a MANIFEST")
    with open(os.path.join(db_path, name), "rb") as f:
        data = f.read()
    for rec in _records(data):
        i = 0
        while i < len(rec):
            tag, i = _varint(rec, i)
            if tag == 1:                      # comparator name
                n, i = _varint(rec, i)
                i += n
            elif tag in (2, 3, 4, 9):         # log number, next file, last sequence, prev log
                _, i = _varint(rec, i)
            elif tag == 5:                    # compact pointer: level, internal key
                _, i = _varint(rec, i)
                n, i = _varint(rec, i)
                i += n
            elif tag == 6:                    # deleted file: level, number
                _, i = _varint(rec, i)
                _, i = _varint(rec, i)
            elif tag == 7:                    # new file: level, number, size, smallest, largest
                for _ in range(3):
                    _, i = _varint(rec, i)
                for _ in range(2):
                    n, i = _varint(rec, i)
                    i += n
            else:
                return tag
    return None


def has_rocksdb_files(db_path: str) -> bool:
    try:
        names = os.listdir(db_path)
    except OSError:
        return False
    return any(n in ROCKSDB_MARKERS or n.startswith(ROCKSDB_MARKER_PREFIXES) for n in names)


def is_original_leveldb(db_path: str) -> bool:
    """Whether `db_path` (a rootDB folder) holds a LevelDB database, i.e. the original's."""
    if not os.path.isfile(os.path.join(db_path, "CURRENT")) or has_rocksdb_files(db_path):
        return False
    try:
        return manifest_unknown_tag(db_path) is None
    except (OSError, ValueError):
        # A CURRENT without a readable MANIFEST and without RocksDB's files: not ours either;
        # RocksDB would fail on it anyway. Treat it as foreign so that nothing touches it.
        return True
