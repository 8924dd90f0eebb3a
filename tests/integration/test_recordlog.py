"""The record log (recordLog.enabled): written in the batch of the ops it records, served on
/MDFile/recordLog as the original serves it, read the way backbeat reads it.

Reference: tests/fixtures/original/recordlog.jsonl (the original's log of the wire workload, as
readRecords serves it), wire-probes.jsonl (readRecords on the wire), and the stored records of
store-v8.8.35-leveldb.jsonl.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest
import socketio

from shared.metastore import RocksKV
from shared.metastore.recordlog import format_record, log_prefix, stream_record
from tests.integration.conftest import make_client
from tests.integration.sio_raw import METADATA_NS, RECORDLOG_NS, RawSio
from tests.procs import REPO, Dmd, Gateway, start_dmd, start_gateway

FIXTURES = REPO / "tests" / "fixtures" / "original"
LOG = "s3-recordlog"
PAGE = 7   # backbeat's maxRead is larger; a small page makes the reader page several times
MiB = 1 << 20


def write_config(tmp: Path, enabled: bool = True) -> Path:
    cfg = json.loads((REPO / "config.json").read_text())
    cfg["recordLog"] = {"enabled": enabled, "recordLogName": LOG}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def start_rl_dmd(tmp: Path, enabled: bool = True) -> Dmd:
    return start_dmd(tmp, env={"S3_CONFIG_FILE": str(write_config(tmp, enabled))})


@contextlib.contextmanager
def stack(tmp: Path) -> Iterator[tuple[Dmd, Gateway]]:
    d = start_rl_dmd(tmp / "dmd")
    try:
        g = start_gateway(tmp / "gw", d)
        try:
            yield d, g
        finally:
            g.stop()
    finally:
        d.stop()


async def read_log_like_backbeat(port: int, page: int = PAGE, start: int = 1) -> list[dict]:
    """backbeat's LogReader: readRecords({startSeq: offset, limit}), offset = info.start + records read."""
    raw = await RawSio((RECORDLOG_NS,)).open(port)
    records: list[dict] = []
    offset = start
    try:
        while True:
            info, got = await raw.read_records(LOG, startSeq=offset, limit=page)
            if info["start"] is None:
                assert got == [] and info == {"start": None, "end": None}
                return records
            assert info["start"] == offset and info["end"] - info["start"] + 1 == len(got) <= page, (info, len(got))
            records.extend(got)
            offset = info["start"] + len(got)
    finally:
        await raw.close()


def read_log(port: int, **kw: Any) -> list[dict]:
    return asyncio.run(read_log_like_backbeat(port, **kw))


# ---- the stored record, byte for byte ----------------------------------------------------------

def test_stored_records_have_the_original_bytes() -> None:
    """Every record-log value of the original's store rebuilds byte for byte from its fields."""
    pairs = [json.loads(line) for line in (FIXTURES / "store-v8.8.35-leveldb.jsonl").read_text().splitlines()]
    logged = [p for p in pairs if p["key"].encode().startswith(log_prefix(LOG))]
    assert len(logged) == 87
    for p in logged:
        rec = json.loads(p["value"])
        assert format_record(rec["type"], rec["db"], rec["key"], rec.get("value"), rec["timestamp"]) == p["value"]
        assert ("value" in rec) == (rec["type"] == "put")
        served = stream_record(p["value"])
        assert list(served) == ["timestamp", "db", "entries"] and served["entries"][0]["key"] == rec["key"]
    # What the original served (recordlog.jsonl) has the same shape.
    for line in (FIXTURES / "recordlog.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert list(rec) == ["timestamp", "db", "entries"] and len(rec["entries"]) == 1
        entry = rec["entries"][0]
        assert list(entry) == (["type", "key", "value"] if entry["type"] == "put" else ["type", "key"])


# ---- the wire workload, compared with the original's log ---------------------------------------

def wire_workload(s3: Any) -> None:
    """producer/wire_workload.py of the original's fixtures, the same calls in the same order."""
    b = "wire-demo"
    s3.create_bucket(Bucket=b)
    s3.put_object(Bucket=b, Key="dir/a.txt", Body=b"hello a\n", ContentType="text/plain", Metadata={"color": "blue"})
    s3.put_object(Bucket=b, Key="dir/b.txt", Body=b"hello b\n")
    s3.put_object(Bucket=b, Key="dir/sub/c.txt", Body=b"hello c\n")
    s3.put_object(Bucket=b, Key="top.txt", Body=b"top\n")
    s3.get_object(Bucket=b, Key="dir/a.txt")["Body"].read()
    s3.head_object(Bucket=b, Key="dir/a.txt")
    s3.list_objects_v2(Bucket=b, Prefix="dir/", Delimiter="/")
    s3.list_objects(Bucket=b, Prefix="dir/", Delimiter="/")
    s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=b, Key="v.txt", Body=b"version 1\n")["VersionId"]
    s3.put_object(Bucket=b, Key="v.txt", Body=b"version 2\n")
    s3.delete_object(Bucket=b, Key="v.txt")
    s3.list_object_versions(Bucket=b)
    with pytest.raises(Exception):
        s3.get_object(Bucket=b, Key="v.txt")
    s3.get_object(Bucket=b, Key="v.txt", VersionId=v1)["Body"].read()
    u = s3.create_multipart_upload(Bucket=b, Key="mpu.bin")["UploadId"]
    e1 = s3.upload_part(Bucket=b, Key="mpu.bin", UploadId=u, PartNumber=1, Body=b"1" * (5 * MiB))["ETag"]
    e2 = s3.upload_part(Bucket=b, Key="mpu.bin", UploadId=u, PartNumber=2, Body=b"2" * 1000)["ETag"]
    s3.list_parts(Bucket=b, Key="mpu.bin", UploadId=u)
    s3.complete_multipart_upload(Bucket=b, Key="mpu.bin", UploadId=u, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    s3.get_object(Bucket=b, Key="mpu.bin", Range="bytes=5242870-5242889")["Body"].read()
    s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k, "VersionId": "null"}
                                                    for k in ("dir/a.txt", "dir/b.txt", "dir/sub/c.txt", "top.txt")]})
    vers = s3.list_object_versions(Bucket=b)
    for v in vers.get("Versions", []) + vers.get("DeleteMarkers", []):
        s3.delete_object(Bucket=b, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=b)


_VID = re.compile(r"\d{20}RG001 {2}\d*|\d{20}RG001")
_UPLOAD = re.compile(r"\b[0-9a-f]{32}\b")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


class Normaliser:
    """Replaces version ids and upload ids by their rank of first appearance (VID1, UPLOAD1)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _sub(self, pattern: re.Pattern, label: str, text: str) -> str:
        def repl(m: re.Match) -> str:
            if m.group(0) not in self.names:
                self.names[m.group(0)] = f"{label}{sum(1 for v in self.names.values() if v.startswith(label)) + 1}"
            return self.names[m.group(0)]
        return pattern.sub(repl, text)

    def key(self, text: str) -> str:
        return self._sub(_UPLOAD, "UPLOAD", self._sub(_VID, "VID", text))


def summarise(records: list[dict]) -> list[tuple[str, str, str, Any]]:
    """(db, type, key, what the value is) per record, ids normalised, timestamps and data keys ignored."""
    norm = Normaliser()
    out = []
    for rec in records:
        assert list(rec) == ["timestamp", "db", "entries"] and _TS.fullmatch(rec["timestamp"]), rec
        assert len(rec["entries"]) == 1
        entry = rec["entries"][0]
        assert list(entry) == (["type", "key", "value"] if entry["type"] == "put" else ["type", "key"]), entry
        what = None
        if entry["type"] == "put":
            value = json.loads(entry["value"])
            if value.get("isPHD"):
                what = "PHD"
            elif "versionId" in value:
                what = "version " + norm.key(value["versionId"])
            elif rec["db"] == "__metastore":
                what = "versioning " + str((value.get("versioningConfiguration") or {}).get("Status"))
        out.append((rec["db"], entry["type"], norm.key(entry["key"]), what))
    return out


BUCKET_DBS = ("__metastore", "users..bucket")
NULL_VERSION_KEYS = ("dir/a.txt", "dir/b.txt", "dir/sub/c.txt", "top.txt")


def comparable(summary: list[tuple], original: bool) -> list[Any]:
    """The summary with the known differences between the two stacks folded away; each is a
    difference of the GATEWAY (the dmd logs what it is given) or a documented engine deviation:

    - bucket-level records: CreateBucket writes the bucket record twice (transient, then final) and
      the users..bucket entry in between in the original, ours writes users..bucket then the record
      once (docs/metadata-keys.md#usersbucket); DeleteBucket's three writes come in another order.
      So a run of consecutive __metastore / users..bucket records is compared as a set.
    - the original creates an `mpuShadowBucket<b>` record in __metastore at the first upload and
      deletes it at DeleteBucket; ours keeps no such record: dropped on both sides.
    - when the last version of a key goes, the original's engine puts a PHD master, ours deletes the
      master ("PHD only, no versions", docs/versioning.md#placeholders-and-repair).
    - DeleteObjects deletes its four null versions concurrently in both gateways: their order is free.
    """
    rows: list[Any] = []
    for db, op, key, what in summary:
        if db == "__metastore" and key.startswith("mpuShadowBucket"):
            continue
        if original and op == "put" and what == "PHD":
            op, what = "del", None
        rows.append((db, op, key, what))
    out: list[Any] = []
    i = 0
    while i < len(rows):
        j = i
        if rows[i][0] in BUCKET_DBS:
            while j < len(rows) and rows[j][0] in BUCKET_DBS:
                j += 1
            out.append(("bucket-level", sorted(set(rows[i:j]))))
        elif rows[i][1] == "del" and rows[i][2] in NULL_VERSION_KEYS:
            while j < len(rows) and rows[j][1] == "del" and rows[j][2] in NULL_VERSION_KEYS:
                j += 1
            out.append(("DeleteObjects", sorted(rows[i:j])))
        else:
            out.append(rows[i])
            j = i + 1
        i = j
    return out


def test_record_log_of_the_wire_workload_matches_the_original(tmp_path: Path) -> None:
    with stack(tmp_path) as (d, g):
        wire_workload(make_client(g.url))
        ours = read_log(d.metadata_port)
    theirs = [json.loads(line) for line in (FIXTURES / "recordlog.jsonl").read_text().splitlines()]
    got, expected = summarise(ours), summarise(theirs)
    # Object-level records (what backbeat replicates: puts in a bucket's db) are identical in
    # number, order, keys and kind, version ids normalised; the rest modulo the known differences.
    objects = [r for r in got if r[0] == "wire-demo" and r[1] == "put"]
    assert objects == [r for r in expected if r[0] == "wire-demo" and r[1] == "put" and r[3] != "PHD"]
    assert comparable(got, original=False) == comparable(expected, original=True)


# ---- the protocol, against the original's probes ----------------------------------------------

def probe_frames() -> list[tuple[str, dict]]:
    """(direction, socket.io packet) of the /MDFile/recordLog traffic of wire-probes.jsonl, in order."""
    out = []
    for line in (FIXTURES / "wire-probes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        packets = [rec["eio"]] if rec.get("eio") else rec.get("eio_packets") or []
        for eio in packets:
            sio = eio.get("sio") if isinstance(eio, dict) else None
            if sio and sio.get("nsp") == RECORDLOG_NS:
                out.append((rec["dir"], sio))
    return out


def seed_original_log(metadata_path: Path) -> None:
    """A store holding exactly the original's 39 records of recordlog.jsonl, stored as the original
    stores them (the stored form rebuilds byte for byte: test_stored_records_have_the_original_bytes)."""
    kv = RocksKV(str(metadata_path))
    try:
        ops = []
        for seq, line in enumerate((FIXTURES / "recordlog.jsonl").read_text().splitlines(), start=1):
            rec = json.loads(line)
            entry = rec["entries"][0]
            stored = format_record(entry["type"], rec["db"], entry["key"], entry.get("value"), rec["timestamp"])
            ops.append((log_prefix(LOG) + f"{seq:016d}".encode(), stored.encode()))
        kv.write(ops)
    finally:
        kv.close()


def test_read_records_answers_the_probes_as_the_original(tmp_path: Path) -> None:
    """Replay the probes' calls on /MDFile/recordLog against our dmd holding the same log: every ack
    (stream ids aside) and every streamed record is the original's, timestamps included."""
    tmp = tmp_path / "dmd"
    seed_original_log(tmp / "localMetadata")
    d = start_rl_dmd(tmp)
    frames = probe_frames()
    calls = [(sio["id"], sio["data"]) for direction, sio in frames
             if direction == "client->mdserver" and sio["type"] == "EVENT" and sio["data"][0] == "call"]
    acks = [sio["data"] for direction, sio in frames
            if direction == "mdserver->client" and sio["type"] == "ACK"]
    streamed: dict[str, list] = {}
    for direction, sio in frames:
        if direction == "mdserver->client" and sio["type"] == "EVENT" and sio["data"][0] == "stream-data":
            streamed.setdefault(sio["data"][1]["streamId"], []).extend(sio["data"][1]["data"])
    assert len(calls) == 4 and len(acks) == 4   # getManifest, readRecords({}), again with {startSeq:5, limit:3}

    async def scenario() -> None:
        raw = await RawSio((RECORDLOG_NS,)).open(d.metadata_port)
        try:
            for (_id, (_call, name, params)), expected in zip(calls, acks):
                got = await raw.call(RECORDLOG_NS, name, params)
                if name == "readRecords":
                    ours_id, theirs_id = got[1]["log"]["$streamId"], expected[1]["log"]["$streamId"]
                    assert list(got[1]) == ["info", "log"] and list(got[1]["log"]) == ["$streamId", "readable", "writable"]
                    got[1]["log"]["$streamId"] = theirs_id
                    assert got == expected
                    assert await raw.stream(ours_id) == streamed[theirs_id]
                else:
                    assert got == expected
        finally:
            await raw.close()
    try:
        asyncio.run(scenario())
    finally:
        d.stop()
    assert sum(len(v) for v in streamed.values()) == 39 + 3


def test_read_records_parameters_and_errors(tmp_path: Path) -> None:
    d = start_rl_dmd(tmp_path / "dmd")

    async def scenario() -> None:
        raw = await RawSio((METADATA_NS, RECORDLOG_NS)).open(d.metadata_port)
        try:
            info, recs = await raw.read_records()
            assert info == {"start": None, "end": None} and recs == []   # an empty log
            for i in range(10):
                err, _ = await raw.call(METADATA_NS, "put", {"rpcArgs": [f"k{i}", f'{{"n":{i}}}', {}], "subLevel": ["b"]})
                assert err is None
            info, recs = await raw.read_records()
            assert info == {"start": 1, "end": 10} and [r["entries"][0]["key"] for r in recs] == [f"k{i}" for i in range(10)]
            info, recs = await raw.read_records(startSeq=3, endSeq=5)
            assert info == {"start": 3, "end": 5} and len(recs) == 3
            info, recs = await raw.read_records(startSeq=9, limit=5)
            assert info == {"start": 9, "end": 10} and len(recs) == 2
            info, recs = await raw.read_records(startSeq=11)
            assert info == {"start": None, "end": None} and recs == []
            info, recs = await raw.read_records(log_name="another-log")
            assert info == {"start": None, "end": None}
            for bad in ({"startSeq": "x"}, {"limit": True}, {"endSeq": [1]}):
                err, *_ = await raw.call(RECORDLOG_NS, "readRecords", {"rpcArgs": [bad], "logName": LOG})
                assert err["code"] == 400 and err["type"] == "InvalidArgument", err
            err, *_ = await raw.call(RECORDLOG_NS, "pruneRecords", {"rpcArgs": [{}], "logName": LOG})
            assert err["code"] == 501 and err["type"] == "NotImplemented"
            err, *_ = await raw.call(RECORDLOG_NS, "nope", {"rpcArgs": [], "logName": LOG})
            assert err["type"] == "InvalidArgument" and "Unknown remote call nope" in err["description"]
            # createLogRecordOps, as the original: log ops to append to a batch, numbered from the
            # log's counter; nothing is written, the numbers it took leave a gap.
            err, ops = await raw.call(RECORDLOG_NS, "createLogRecordOps", {"rpcArgs": [[
                {"type": "put", "key": "x", "value": "v", "prefix": ["b"]}, {"type": "del", "key": "y", "prefix": ["b"]}]],
                "logName": LOG})
            assert err is None and [o["key"] for o in ops] == ["0000000000000011", "0000000000000012"]
            assert ops[0]["prefix"] == ["..recordLogs", LOG] and json.loads(ops[1]["value"])["type"] == "del"
            err, _ = await raw.call(METADATA_NS, "del", {"rpcArgs": ["k0", {}], "subLevel": ["b"]})
            info, recs = await raw.read_records(startSeq=11)
            assert info == {"start": 13, "end": 13} and recs[0]["entries"] == [{"type": "del", "key": "k0"}]
        finally:
            await raw.close()
    try:
        asyncio.run(scenario())
    finally:
        d.stop()


def test_record_log_is_off_by_default(tmp_path: Path) -> None:
    d = start_rl_dmd(tmp_path / "dmd", enabled=False)

    async def scenario() -> None:
        raw = await RawSio((METADATA_NS,)).open(d.metadata_port)
        try:
            err, _ = await raw.call(METADATA_NS, "put", {"rpcArgs": ["k", "{}", {}], "subLevel": ["b"]})
            assert err is None
            err, marker = await raw.call(METADATA_NS, "rawListKeys", {"rpcArgs": [{}], "subLevel": []})
            assert await raw.stream(marker["$streamId"]) == ["!b!k"]
        finally:
            await raw.close()
        other = RawSio((RECORDLOG_NS,))
        with pytest.raises(socketio.exceptions.ConnectionError):
            await other.open(d.metadata_port)
    try:
        asyncio.run(scenario())
    finally:
        d.stop()


# ---- replay, and atomicity --------------------------------------------------------------------

def lasting_workload(s3: Any) -> None:
    """Leaves content of every kind: versions, delete markers, null versions, a suspended bucket,
    tags, a completed and an in-progress upload, overwritten and deleted objects."""
    s3.create_bucket(Bucket="replay-plain")
    s3.create_bucket(Bucket="replay-versioned")
    for i in range(5):
        s3.put_object(Bucket="replay-plain", Key=f"k{i}", Body=f"body {i}".encode())
    s3.put_object(Bucket="replay-plain", Key="k1", Body=b"overwritten")
    s3.delete_object(Bucket="replay-plain", Key="k2")
    s3.put_object_tagging(Bucket="replay-plain", Key="k3", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    s3.put_object(Bucket="replay-versioned", Key="doc", Body=b"null version")
    s3.put_bucket_versioning(Bucket="replay-versioned", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="replay-versioned", Key="doc", Body=b"v1")["VersionId"]
    s3.put_object(Bucket="replay-versioned", Key="doc", Body=b"v2")
    s3.delete_object(Bucket="replay-versioned", Key="doc")
    s3.put_object(Bucket="replay-versioned", Key="gone", Body=b"x")
    s3.delete_object(Bucket="replay-versioned", Key="doc", VersionId=v1)
    u = s3.create_multipart_upload(Bucket="replay-versioned", Key="mpu")["UploadId"]
    e1 = s3.upload_part(Bucket="replay-versioned", Key="mpu", UploadId=u, PartNumber=1, Body=b"a" * (5 * MiB))["ETag"]
    e2 = s3.upload_part(Bucket="replay-versioned", Key="mpu", UploadId=u, PartNumber=2, Body=b"b")["ETag"]
    s3.complete_multipart_upload(Bucket="replay-versioned", Key="mpu", UploadId=u, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    s3.create_multipart_upload(Bucket="replay-plain", Key="pending")
    s3.put_bucket_versioning(Bucket="replay-versioned", VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket="replay-versioned", Key="gone", Body=b"suspended null")
    s3.delete_object(Bucket="replay-versioned", Key="gone")


def stored_pairs(metadata_path: Path) -> dict[bytes, bytes]:
    """Every pair of a stopped dmd's store except the record log."""
    kv = RocksKV(str(metadata_path))
    try:
        return {k: v for k, v in kv.iterate() if not k.startswith(b"!..recordLogs")}
    finally:
        kv.close()


def replay(records: list[dict]) -> dict[bytes, bytes]:
    """Apply the log's entries, in order, to an empty store (every sublevel here has one element,
    so (db, key) names the physical key `!db!key`)."""
    store: dict[bytes, bytes] = {}
    for rec in records:
        for entry in rec["entries"]:
            key = f"!{rec['db']}!{entry['key']}".encode()
            if entry["type"] == "put":
                store[key] = entry["value"].encode()
            else:
                store.pop(key, None)
    return store


def test_replaying_the_log_reproduces_the_stored_metadata(tmp_path: Path) -> None:
    with stack(tmp_path) as (d, g):
        lasting_workload(make_client(g.url))
        records = read_log(d.metadata_port, page=50)
    stored = stored_pairs(d.metadata_path)
    assert len(stored) > 15 and any(b"\0" in k for k in stored)
    assert replay(records) == stored


def test_record_log_is_written_in_the_same_batch_kill_9(tmp_path: Path) -> None:
    """SIGKILL under a write storm (twice), restart: the record log and the data agree. For every key
    the value stored is the value of the last put logged for it, every acknowledged put is logged,
    and the sequence numbers have no gap."""
    d = start_rl_dmd(tmp_path / "dmd")
    keys = [f"key-{i}" for i in range(40)]
    acked: list[str] = []

    async def storm(round_: int, kill_after: int) -> None:
        raw = await RawSio((METADATA_NS,)).open(d.metadata_port)
        counter = iter(range(1_000_000))

        async def writer(w: int) -> None:
            while True:
                n = next(counter)
                value = json.dumps({"round": round_, "writer": w, "n": n})
                try:
                    err, _ = await raw.call(METADATA_NS, "put", {"rpcArgs": [keys[n % len(keys)], value, {}],
                                                                 "subLevel": ["storm"]}, timeout=10)
                except Exception:
                    return   # the connection went with the daemon
                if err is not None:
                    return
                acked.append(value)
                if len(acked) == kill_after:
                    d.popen.send_signal(signal.SIGKILL)   # mid-load: other writers' puts are in flight
        try:
            await asyncio.gather(*(writer(w) for w in range(8)))
        finally:
            with contextlib.suppress(Exception):
                await raw.close()
    try:
        for round_, kill_after in enumerate((300, 600)):
            asyncio.run(storm(round_, kill_after))
            d.popen.wait()
            assert len(acked) >= kill_after
            d.start()
        records = read_log(d.metadata_port, page=500)
    finally:
        d.stop()
    stored = stored_pairs(d.metadata_path)
    logged_values = {r["entries"][0].get("value") for r in records}
    assert set(acked) <= logged_values
    last: dict[bytes, bytes] = {}
    for rec in records:
        entry = rec["entries"][0]
        last[f"!{rec['db']}!{entry['key']}".encode()] = entry["value"].encode()
    assert last == stored
    kv = RocksKV(str(d.metadata_path))
    try:
        seqs = [int(k[len(log_prefix(LOG)):]) for k, _ in kv.iterate(gte=log_prefix(LOG), lt=log_prefix(LOG) + b"\xff")]
    finally:
        kv.close()
    assert seqs == list(range(1, len(records) + 1))
    print(f"acked {len(acked)} puts over two kills, {len(records)} records after the restarts")


def test_record_log_setting_is_checked(tmp_path: Path) -> None:
    from shared.config import ConfigError, load_config
    cfg = json.loads((REPO / "config.json").read_text())
    path = tmp_path / "config.json"
    assert load_config({}).record_log_enabled is False   # the shipped config.json: off
    assert load_config({"RECORDLOG_ENABLED": "1"}).record_log_enabled is True   # docker-entrypoint.sh's variable
    for bad in ({"enabled": "yes"}, {"enabled": True, "recordLogName": "a!b"}, {"recordLogName": ""}):
        path.write_text(json.dumps({**cfg, "recordLog": bad}))
        with pytest.raises(ConfigError, match="recordLog"):
            load_config({"S3_CONFIG_FILE": str(path)})
    path.write_text(json.dumps({**cfg, "recordLog": {"enabled": True, "recordLogName": "my-log"}}))
    loaded = load_config({"S3_CONFIG_FILE": str(path)})
    assert (loaded.record_log_enabled, loaded.record_log_name) == (True, "my-log")


def test_record_log_namespace_requires_the_dmd_secret(tmp_path: Path) -> None:
    secret = "s3cr3t-for-the-record-log"
    d = start_dmd(tmp_path / "dmd", env={"S3_CONFIG_FILE": str(write_config(tmp_path / "dmd")), "DMD_SECRET": secret})

    async def scenario() -> None:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await RawSio((RECORDLOG_NS,)).open(d.metadata_port)
        client = RawSio((RECORDLOG_NS,))
        await client.sio.connect(f"http://127.0.0.1:{d.metadata_port}", namespaces=[RECORDLOG_NS],
                                 transports=["websocket"], auth={"secret": secret}, wait_timeout=30)
        try:
            info, records = await client.read_records()
            assert info == {"start": None, "end": None} and records == []
        finally:
            await client.close()
    try:
        asyncio.run(scenario())
    finally:
        d.stop()
