"""Issue 18: the gateway and the dmd over Unix-domain sockets (METADATA_SOCKET / DATA_SOCKET).

Real processes: a dmd listening on its sockets (besides TCP) and a gateway configured to use them.
Checked: an S3 slice (buckets, objects, listings, multipart, versioning) goes through the sockets and
not through TCP; a stale socket file is replaced at start while a live one or a non-socket file stops
the start; a gateway whose socket path leads nowhere answers 503 (never 500) and recovers once the dmd
listens there; a SIGKILLed dmd restarted on its sockets is reconnected to.
"""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client
from tests.procs import REPO, Dmd, Gateway, start_dmd, start_gateway


MIB = 1024 * 1024
RETRY_WINDOW_MS = "1500"   # the gateway's retry window: short, so an outage answers 503 quickly
RECOVER_TIMEOUT_S = 60.0


def tcp_peers(dmd: Dmd, gateway: Gateway) -> list:
    """The dmd's established TCP connections whose far end belongs to the gateway's process."""
    assert gateway.popen is not None and dmd.popen is not None
    gw_ports = {c.laddr.port for c in psutil.Process(gateway.popen.pid).net_connections(kind="inet")
                if c.status == psutil.CONN_ESTABLISHED}
    return [c for c in psutil.Process(dmd.popen.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in gw_ports]


def unix_conns(dmd: Dmd) -> list:
    assert dmd.popen is not None
    paths = {dmd.metadata_socket, dmd.data_socket}
    return [c for c in psutil.Process(dmd.popen.pid).net_connections(kind="unix") if c.laddr in paths]


@pytest.fixture(scope="module")
def sock_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway]]:
    tmp = tmp_path_factory.mktemp("unixsock")
    d = start_dmd(tmp / "dmd", sockets=True)
    g = start_gateway(tmp / "gw", d)
    yield d, g
    g.stop()
    d.stop()


def test_s3_slice_over_sockets(sock_servers: tuple[Dmd, Gateway]) -> None:
    d, g = sock_servers
    assert stat.S_ISSOCK(os.stat(d.metadata_socket).st_mode) and stat.S_ISSOCK(os.stat(d.data_socket).st_mode)
    assert stat.S_IMODE(os.stat(d.metadata_socket).st_mode) == 0o660
    s3 = make_client(g.url)
    bucket = "unix-sock-slice"
    s3.create_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=bucket)

    # objects: put, get, range, head, copy, delete
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="dir/a", Body=body)
    assert s3.get_object(Bucket=bucket, Key="dir/a")["Body"].read() == body
    assert s3.get_object(Bucket=bucket, Key="dir/a", Range="bytes=10-19")["Body"].read() == body[10:20]
    assert s3.head_object(Bucket=bucket, Key="dir/a")["ContentLength"] == len(body)
    s3.copy_object(Bucket=bucket, Key="dir/b", CopySource={"Bucket": bucket, "Key": "dir/a"})
    assert s3.get_object(Bucket=bucket, Key="dir/b")["Body"].read() == body
    assert tcp_peers(d, g) == [], "the gateway talks to the dmd over TCP"
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"top{i}", Body=b"t")

    # listings: delimiter, prefix, pages
    root = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["dir/"]
    assert [o["Key"] for o in root["Contents"]] == [f"top{i}" for i in range(5)]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]] == ["dir/a", "dir/b"]
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 2}))
    assert len(pages) == 4 and sum(p["KeyCount"] for p in pages) == 7
    s3.delete_object(Bucket=bucket, Key="dir/b")
    with pytest.raises(ClientError) as err:
        s3.head_object(Bucket=bucket, Key="dir/b")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    # multipart: two parts (5 MiB + a tail), listed, completed, read back
    up = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    p1, p2 = os.urandom(5 * MIB), os.urandom(1000)
    e1 = s3.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="big", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [up]
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="big", UploadId=up)["Parts"]] == [1, 2]
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentLength"] == len(p1) + len(p2) and got["ETag"].endswith('-2"')
    assert got["Body"].read() == p1 + p2

    # versioning: two versions, a delete marker, reads by version id, the versions listing
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="v", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="v", Body=b"two")["VersionId"]
    marker = s3.delete_object(Bucket=bucket, Key="v")
    assert marker["DeleteMarker"] is True
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="v")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v1)["Body"].read() == b"one"
    assert s3.get_object(Bucket=bucket, Key="v", VersionId=v2)["Body"].read() == b"two"
    listed = s3.list_object_versions(Bucket=bucket, Prefix="v")
    assert [v["VersionId"] for v in listed["Versions"]] == [v2, v1]
    assert [m["VersionId"] for m in listed["DeleteMarkers"]] == [marker["VersionId"]]

    # Everything above went through the sockets: the gateway holds connections on them and none on TCP.
    assert unix_conns(d), "the dmd holds no connection on its sockets"
    assert tcp_peers(d, g) == [], "the gateway talks to the dmd over TCP"


def _stale_socket(path: str) -> None:
    """A socket file nobody listens on, as a SIGKILLed dmd leaves it."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()


def _dmd_run(env: dict[str, str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`python -m dmd` expected to stop by itself (a refused start)."""
    return subprocess.run([sys.executable, "-m", "dmd", "--metadata-port", "0", "--data-port", "0",
                           "--bind", "127.0.0.1"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_stale_socket_replaced_live_one_kept(tmp_path: Path) -> None:
    d = start_dmd(tmp_path / "dmd", sockets=True, start=False)
    for path in (d.metadata_socket, d.data_socket):
        _stale_socket(path)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    d.start()   # would exit with "address already in use" if the stale files were kept
    try:
        g = start_gateway(tmp_path / "gw", d)
        try:
            s3 = make_client(g.url)
            s3.create_bucket(Bucket="unix-stale")
            s3.put_object(Bucket="unix-stale", Key="k", Body=b"data")
            assert s3.get_object(Bucket="unix-stale", Key="k")["Body"].read() == b"data"
            assert tcp_peers(d, g) == []
        finally:
            g.stop()
        # A second dmd on the same sockets while the first one lives: refused, the live files untouched.
        before = os.stat(d.metadata_socket).st_ino
        other = {**d.env, "S3METADATAPATH": str(tmp_path / "md2"), "S3DATAPATH": str(tmp_path / "data2")}
        done = _dmd_run(other)
        assert done.returncode == 1 and "address already in use" in done.stderr, done.stderr
        assert os.stat(d.metadata_socket).st_ino == before
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(d.metadata_socket)   # the first dmd still answers there
        probe.close()
    finally:
        d.stop()
    assert not os.path.exists(d.metadata_socket) and not os.path.exists(d.data_socket)   # removed on a clean stop


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path: Path) -> None:
    d = start_dmd(tmp_path / "dmd", sockets=True, start=False)
    Path(d.data_socket).write_text("precious")
    done = _dmd_run(d.env)
    assert done.returncode == 1 and "not a socket" in done.stderr, done.stderr
    assert Path(d.data_socket).read_text() == "precious"
    assert not os.path.exists(d.metadata_socket)   # the one it did bind is gone again


def _status(call) -> int:
    try:
        call()
        return 200
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def _wait_ok(call, timeout: float = RECOVER_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            call()
            return
        except ClientError as exc:
            last = exc
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503, exc.response
            time.sleep(0.3)
    raise AssertionError(f"not recovered after {timeout}s: {last}")


def test_missing_data_socket_answers_503(tmp_path: Path) -> None:
    """A gateway whose DATA_SOCKET leads nowhere: metadata calls work, data calls answer 503."""
    d = start_dmd(tmp_path / "dmd", sockets=True)
    try:
        good = start_gateway(tmp_path / "gw-good", d)
        bad = start_gateway(tmp_path / "gw-bad", d, env={"DATA_SOCKET": str(Path(d.data_socket).parent / "none.sock"),
                                                          "S3_RETRY_WINDOW_MS": RETRY_WINDOW_MS})
        try:
            ok, broken = make_client(good.url), make_client(bad.url)
            ok.create_bucket(Bucket="unix-missing")
            ok.put_object(Bucket="unix-missing", Key="k", Body=b"stored")
            broken.head_bucket(Bucket="unix-missing")   # metadata: fine
            assert broken.head_object(Bucket="unix-missing", Key="k")["ContentLength"] == 6
            for call in (lambda: broken.put_object(Bucket="unix-missing", Key="k2", Body=b"x" * 1000),
                         lambda: broken.get_object(Bucket="unix-missing", Key="k")["Body"].read()):
                with pytest.raises(ClientError) as err:
                    call()
                assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
            # Nothing half-written: the failed PUT left no object.
            assert _status(lambda: ok.head_object(Bucket="unix-missing", Key="k2")) == 404
        finally:
            bad.stop()
            good.stop()
    finally:
        d.stop()


def test_sockets_gone_then_back(tmp_path: Path) -> None:
    """The dmd stops (its socket files go with it): 503s, never a 500; it comes back: served again."""
    d = start_dmd(tmp_path / "dmd", sockets=True)
    g = start_gateway(tmp_path / "gw", d, env={"S3_RETRY_WINDOW_MS": RETRY_WINDOW_MS})
    try:
        s3 = make_client(g.url)
        s3.create_bucket(Bucket="unix-gone")
        s3.put_object(Bucket="unix-gone", Key="k", Body=b"before")
        d.stop()
        assert not os.path.exists(d.metadata_socket) and not os.path.exists(d.data_socket)
        for call in (lambda: s3.head_bucket(Bucket="unix-gone"),
                     lambda: s3.get_object(Bucket="unix-gone", Key="k")["Body"].read(),
                     lambda: s3.put_object(Bucket="unix-gone", Key="k2", Body=b"x")):
            assert _status(call) == 503
        d.start()
        _wait_ok(lambda: s3.head_bucket(Bucket="unix-gone"))
        assert s3.get_object(Bucket="unix-gone", Key="k")["Body"].read() == b"before"
        s3.put_object(Bucket="unix-gone", Key="k2", Body=b"after")
        assert s3.get_object(Bucket="unix-gone", Key="k2")["Body"].read() == b"after"
        assert tcp_peers(d, g) == []
    finally:
        g.stop()
        d.stop()


def test_sigkill_and_restart_over_sockets(tmp_path: Path) -> None:
    """SIGKILL leaves stale socket files; the restarted dmd replaces them and the gateway reconnects."""
    d = start_dmd(tmp_path / "dmd", sockets=True)
    g = start_gateway(tmp_path / "gw", d, env={"S3_RETRY_WINDOW_MS": RETRY_WINDOW_MS})
    try:
        s3 = make_client(g.url)
        s3.create_bucket(Bucket="unix-kill")
        s3.put_object(Bucket="unix-kill", Key="k", Body=b"acknowledged")
        for round_ in range(2):
            d.kill()
            assert stat.S_ISSOCK(os.lstat(d.metadata_socket).st_mode)   # left behind by the kill
            assert _status(lambda: s3.head_object(Bucket="unix-kill", Key="k")) == 503
            d.start()
            _wait_ok(lambda: s3.head_object(Bucket="unix-kill", Key="k"))
            assert s3.get_object(Bucket="unix-kill", Key="k")["Body"].read() == b"acknowledged"
            s3.put_object(Bucket="unix-kill", Key=f"after{round_}", Body=b"new")
            assert s3.get_object(Bucket="unix-kill", Key=f"after{round_}")["Body"].read() == b"new"
        assert tcp_peers(d, g) == []
        assert "metadataSocket=" in d.log_text()
    finally:
        g.stop()
        d.stop()
