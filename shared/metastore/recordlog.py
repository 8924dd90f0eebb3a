"""The original dmd's record log, kept in the metadata database (docs/protocol.md#record-log).

With `recordLog.enabled`, every op of every batch the engine commits also becomes one record,
appended to the SAME batch (so a record exists if and only if its op was applied):

    key    !..recordLogs#<logName>!<16-digit sequence number>      (sequence numbers start at 1)
    value  {"type":"put"|"del","db":<first element of the op's sublevel>,"key":<key inside it>,
            "value":<the value written, absent for del>,"timestamp":"<ISO, milliseconds, Z>"}

That is Arsenal's RecordLogService (`createLogRecordOps` / `formatLogRecord`), byte for byte:
compact JSON, keys in that order. `readRecords` turns the stored records into the stream objects
`{timestamp, db, entries: [{type, key, value}]}` (one entry per record) that backbeat's queue
populator reads. This module is the storage side (sequence numbers, formats, ranges); the RPC
namespace `/MDFile/recordLog` is dmd/recordlog.py.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

from shared.metastore.errors import invalid_argument
from shared.metastore.keyspace import SUBLEVEL_JOIN, SUBLEVEL_MARK, UPPER_SENTINEL
from shared.metastore.kv import Op, OrderedKV

RECORD_LOG_PREFIX = "..recordLogs"
DEFAULT_RECORD_LOG_NAME = "s3-recordlog"
SEQ_DIGITS = 16


def log_prefix(log_name: str) -> bytes:
    """Physical prefix of a log's sublevel: `!..recordLogs#<name>!`."""
    return (SUBLEVEL_MARK + RECORD_LOG_PREFIX + SUBLEVEL_JOIN + log_name + SUBLEVEL_MARK).encode()


def format_seq(seq: int) -> str:
    """Arsenal's formatSeq: 16 digits, zero-padded."""
    return str(seq).rjust(SEQ_DIGITS, "0")[-SEQ_DIGITS:]


def timestamp_now() -> str:
    """`new Date().toJSON()`: UTC, millisecond precision, `Z`."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def split_physical_key(key: bytes) -> tuple[str, str] | None:
    """(db, key) of a physical key `!a#b!key`: db is the first element of the sublevel path,
    as the original's `prefix[0]`; None for a key outside any sublevel."""
    if not key.startswith(b"!"):
        return None
    end = key.find(b"!", 1)
    if end < 0:
        return None
    path = key[1:end].decode("utf-8", errors="replace")
    return path.split(SUBLEVEL_JOIN, 1)[0], key[end + 1:].decode("utf-8", errors="replace")


def format_record(op_type: str, db: str, key: str, value: str | None, timestamp: str) -> str:
    """The stored record: JSON.stringify({type, db, key, value, timestamp}) (value omitted for del)."""
    record: dict[str, Any] = {"type": op_type, "db": db, "key": key}
    if value is not None:
        record["value"] = value
    record["timestamp"] = timestamp
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def stream_record(stored: str) -> dict[str, Any]:
    """What readRecords streams for a stored record: {timestamp, db, entries: [{type, key, value}]}."""
    rec = json.loads(stored)
    entry: dict[str, Any] = {"type": rec.get("type"), "key": rec.get("key")}
    if rec.get("value") is not None:
        entry["value"] = rec["value"]
    return {"timestamp": rec.get("timestamp"), "db": rec.get("db"), "entries": [entry]}


class RecordLog:
    """One record log: its sequence counter and the record ops of a batch.

    The counter starts at the highest stored sequence number + 1 (a log carried over from the
    original's database continues where it stopped). The engine commits one batch at a time, so
    sequence numbers follow commit order; a batch that fails gives its numbers back."""

    def __init__(self, kv: OrderedKV, name: str = DEFAULT_RECORD_LOG_NAME) -> None:
        if not name or SUBLEVEL_MARK in name or SUBLEVEL_JOIN in name:
            raise ValueError(f"invalid record log name {name!r}")
        self.name = name
        self.prefix = log_prefix(name)
        self._lock = threading.Lock()
        self.next_seq = last_seq(kv, self.prefix) + 1

    def record_ops(self, ops: list[Op]) -> tuple[list[Op], int]:
        """The log ops for a batch's ops (appended to the same batch), and the first sequence
        number they use (for `give_back`)."""
        timestamp = timestamp_now()
        records: list[Op] = []
        with self._lock:
            first = self.next_seq
            for key, value in ops:
                if key.startswith(self.prefix):
                    continue   # never log the log
                parts = split_physical_key(key)
                if parts is None:
                    continue
                db, logical = parts
                text = format_record("put" if value is not None else "del", db, logical,
                                     None if value is None else value.decode("utf-8", errors="replace"), timestamp)
                records.append((self.prefix + format_seq(self.next_seq).encode(), text.encode()))
                self.next_seq += 1
        return records, first

    def give_back(self, first: int, count: int) -> None:
        """A batch failed (nothing of it was applied): reuse its numbers if no one took later ones."""
        with self._lock:
            if self.next_seq == first + count:
                self.next_seq = first

    def reserve(self, count: int) -> int:
        """Take `count` numbers without writing (the `createLogRecordOps` RPC); the first one."""
        with self._lock:
            first = self.next_seq
            self.next_seq += count
            return first


def last_seq(kv: OrderedKV, prefix: bytes) -> int:
    """The highest sequence number stored under a log prefix, 0 when the log is empty."""
    it = kv.iterate(gte=prefix, lt=prefix + UPPER_SENTINEL, reverse=True)
    try:
        for key, _value in it:
            try:
                return int(key[len(prefix):].decode())
            except ValueError:
                continue   # a foreign key in the log's sublevel: not a sequence number
        return 0
    finally:
        it.close()  # type: ignore[attr-defined]


def parse_seq_param(params: dict[str, Any], name: str) -> int | None:
    """A readRecords sequence parameter: a non-negative integer (or digit string), else InvalidArgument."""
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise invalid_argument(f"readRecords: {name} must be a number")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise invalid_argument(f"readRecords: {name} must be a number")
    return value
