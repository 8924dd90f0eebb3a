"""The system calls behind an acknowledged PutObject, watched with strace on the dmd.

The durability promise (docs/durability.md) rests on an order of system calls that no
black-box test sees: the blob is fsynced, renamed into its folder and the folder
fsynced before the dmd answers the data upload (`201`), and the metadata WAL is
synced before the dmd answers the metadata put. This test runs the dmd under
`strace -f -ttt -T` and checks that order by timestamps: a syscall's end is its start
plus its duration, and each sync must have ended before the reply's write began.

strace must be installed (.ci/run installs it); the test skips only when strace is
there but cannot trace (ptrace refused, e.g. in a locked-down container).
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import make_client
from tests.procs import Dmd, start_dmd, start_gateway

SYSCALLS = "fsync,fdatasync,rename,renameat,renameat2,openat,close,write,writev,pwrite64,sendto,sendmsg"
BUCKET, KEY = "syscall-order", "watched-object"
ACK = b"43/MDFile/metadata,"      # a socket.io ack packet of the metadata namespace (docs/protocol.md)


def _strace() -> str:
    path = shutil.which("strace")
    assert path, "strace is not installed: .ci/run installs it (apt-get install strace)"
    probe = subprocess.run([path, "-f", "-qq", "-e", "trace=none", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace refused?): {probe.stderr.strip()[:300]}")
    return path


# --- the trace -----------------------------------------------------------------------------------
@dataclass
class Call:
    pid: int
    name: str
    args: str            # the raw argument text
    ret: int | None
    start: float
    end: float

    def data(self) -> bytes:
        """The first string argument (strace -xx prints every byte as \\xHH)."""
        m = re.search(r'"((?:\\x[0-9a-f]{2})*)"', self.args)
        return bytes.fromhex(m[1].replace("\\x", "")) if m else b""

    def strings(self) -> list[bytes]:
        return [bytes.fromhex(s.replace("\\x", "")) for s in re.findall(r'"((?:\\x[0-9a-f]{2})*)"', self.args)]

    def fd(self) -> int | None:
        m = re.match(r"(\d+)", self.args)
        return int(m[1]) if m else None


_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (.*)$")
_DONE = re.compile(r"^(\w+)\((.*)\) += (-?\d+|\?)(?: [A-Z]\w*)?.*?<(\d+\.\d+)>$")
_UNFINISHED = re.compile(r"^(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)\) += (-?\d+|\?).*?<(\d+\.\d+)>$")


def parse_trace(text: str) -> list[Call]:
    calls: list[Call] = []
    pending: dict[int, tuple[str, str, float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, ts, rest = int(m[1]), float(m[2]), m[3]
        if d := _DONE.match(rest):
            ret = None if d[3] == "?" else int(d[3])
            calls.append(Call(pid, d[1], d[2], ret, ts, ts + float(d[4])))
        elif u := _UNFINISHED.match(rest):
            pending[pid] = (u[1], u[2], ts)
        elif r := _RESUMED.match(rest):
            name, args, start = pending.pop(pid, (r[1], "", ts))
            ret = None if r[3] == "?" else int(r[3])
            calls.append(Call(pid, name, args + r[2], ret, start, start + float(r[4])))
    calls.sort(key=lambda c: c.start)
    return calls


def with_paths(calls: list[Call]) -> list[tuple[Call, str | None]]:
    """Each call with the path its fd argument names (from the openat/close calls before it)."""
    fds: dict[int, str] = {}
    out = []
    for c in calls:
        fd = c.fd()
        out.append((c, fds.get(fd) if fd is not None and c.name != "openat" else None))
        if c.name == "openat" and c.ret is not None and c.ret >= 0:
            fds[c.ret] = c.strings()[0].decode(errors="replace")
        elif c.name == "close" and fd is not None:
            fds.pop(fd, None)
    return out


def _is_sync(c: Call) -> bool:
    return c.name in ("fsync", "fdatasync") and c.ret == 0


def _is_send(c: Call) -> bool:
    return c.name in ("write", "writev", "sendto", "sendmsg")


# --- the dmd under strace --------------------------------------------------------------------------
def start_traced_dmd(tmp: Path, trace: Path, env: dict[str, str] | None = None) -> Dmd:
    dmd = start_dmd(tmp, env=env, start=False)
    dmd.args[:0] = [_strace(), "-f", "-qq", "-ttt", "-T", "-xx", "-s", "8192", "-o", str(trace),
                    "-e", f"trace={SYSCALLS}"]
    return dmd.start()


def stop_traced_dmd(dmd: Dmd) -> None:
    """SIGTERM the dmd itself (strace's child), then let strace finish writing the trace."""
    if dmd.popen is None or dmd.popen.poll() is not None:
        return
    for child in psutil.Process(dmd.popen.pid).children():
        child.send_signal(signal.SIGTERM)
    try:
        dmd.popen.wait(15)
    except subprocess.TimeoutExpired:
        dmd.stop(signal.SIGKILL)


def traced_put(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[list[Call], float, float]:
    """One acknowledged PutObject through a gateway over a traced dmd: the trace and the client's
    send and acknowledgement times."""
    trace = tmp_path / "dmd.strace"
    dmd = start_traced_dmd(tmp_path / "dmd", trace, env)
    gateway = start_gateway(tmp_path / "gw", dmd)
    try:
        s3 = make_client(gateway.url)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="warm-up", Body=b"connections open")
        time.sleep(0.2)
        sent = time.time()
        s3.put_object(Bucket=BUCKET, Key=KEY, Body=b"durable bytes " * 1000)
        acked = time.time()
    finally:
        gateway.stop()
        stop_traced_dmd(dmd)
    return parse_trace(trace.read_text()), sent, acked


def check_put_order(calls: list[Call], sent: float, acked: float) -> None:
    """The dmd's syscalls for the PutObject done between `sent` and `acked`, in the durable order."""
    window = [(c, path) for c, path in with_paths(calls) if sent <= c.start <= acked]
    assert window, "the trace holds no dmd syscall during the PutObject"

    # The blob: created in .tmp, written, fsynced, renamed into its folder, the folder fsynced.
    created = [(c, c.strings()[0].decode()) for c, _ in window
               if c.name == "openat" and b"/.tmp/" in c.data() and "O_EXCL" in c.args and (c.ret or -1) >= 0]
    assert len(created) == 1, f"expected one blob created in .tmp, saw {len(created)}"
    open_call, tmp_file = created[0]
    blob_key = tmp_file.rsplit("/", 1)[1]
    renames = [c for c, _ in window if c.name.startswith("rename") and c.ret == 0
               and c.strings()[0].decode() == tmp_file]
    assert len(renames) == 1, f"blob {blob_key} was not renamed into place once: {renames}"
    rename = renames[0]
    final = rename.strings()[-1].decode()
    folder = final.rsplit("/", 1)[0]
    file_syncs = [c for c, path in window if _is_sync(c) and path == tmp_file and c.start > open_call.start]
    assert file_syncs, f"blob file {tmp_file} never fsynced"
    assert file_syncs[-1].end <= rename.start, "the blob was renamed into place before its fsync ended"
    dir_syncs = [c for c, path in window if _is_sync(c) and path == folder and c.start >= rename.end]
    assert dir_syncs, f"the blob's folder {folder} was not fsynced after the rename"
    data_replies = [c for c, _ in window if _is_send(c) and c.data().startswith(b"HTTP/1.1 201")
                    and blob_key.encode() in c.data()]
    assert len(data_replies) == 1, f"expected one 201 for blob {blob_key}, saw {len(data_replies)}"
    data_reply = data_replies[0]
    assert dir_syncs[0].end <= data_reply.start, "the dmd answered 201 before the blob's folder fsync ended"
    assert file_syncs[-1].end <= data_reply.start

    # The metadata: the WAL record naming the object (and its blob), synced before the ack.
    wal_writes = [(c, path) for c, path in window if c.name in ("write", "writev", "pwrite64")
                  and path is not None and re.search(r"/rootDB/\d+\.log$", path)
                  and KEY.encode() in c.data() and blob_key.encode() in c.data()]
    assert wal_writes, "no write of the object's metadata to the RocksDB WAL during the PutObject"
    wal_write, wal_path = wal_writes[-1]
    assert wal_write.start >= data_reply.end, "metadata was written before the data upload was answered"
    wal_syncs = [c for c, path in window if _is_sync(c) and path == wal_path and c.start >= wal_write.end]
    assert wal_syncs, f"the WAL {wal_path} was not synced after the object's record was written"
    acks = [c for c, _ in window if _is_send(c) and ACK in c.data()[:40] and c.start >= wal_write.start]
    assert acks, "no metadata reply after the WAL write"
    assert wal_syncs[0].end <= acks[0].start, "the dmd answered the metadata put before the WAL sync ended"
    assert acks[0].start <= acked


def test_acknowledged_put_is_synced_before_the_dmd_replies(tmp_path: Path) -> None:
    calls, sent, acked = traced_put(tmp_path)
    check_put_order(calls, sent, acked)


def test_the_order_check_catches_a_dmd_that_skips_the_fsyncs(tmp_path: Path) -> None:
    """The check can fail: with S3DATA_NOSYNC=true the dmd skips the blob and folder fsyncs."""
    calls, sent, acked = traced_put(tmp_path, {"S3DATA_NOSYNC": "true"})
    with pytest.raises(AssertionError, match="never fsynced"):
        check_put_order(calls, sent, acked)
