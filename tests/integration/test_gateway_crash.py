"""A gateway killed (SIGKILL) in the middle of an upload: the previous object
stays intact, no partial object appears, and the dmd keeps no partial blob."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, make_client
from tests.procs import start_dmd, start_gateway


def _blob_files(data_path: Path) -> list[Path]:
    return [p for p in data_path.rglob("*") if p.is_file() and p.parent.name != ".tmp"]


def _temp_files(data_path: Path) -> list[Path]:
    tmp = data_path / ".tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def _signed_put_head(port: int, bucket: str, key: str, size: int) -> bytes:
    """The request line and headers of a SigV4-signed PUT (UNSIGNED-PAYLOAD) of `size` bytes."""
    url = f"http://127.0.0.1:{port}/{bucket}/{key}"
    req = botocore.awsrequest.AWSRequest("PUT", url, headers={"Content-Length": str(size),
                                                               "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "s3",
                              "us-east-1").add_auth(req)
    lines = [f"PUT /{bucket}/{key} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in req.headers.items() if name.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_gateway_killed_mid_upload_leaves_the_old_object_and_no_partial_data(tmp_path: Path):
    dmd = start_dmd(tmp_path / "dmd")
    gateway = start_gateway(tmp_path / "gw", dmd)
    try:
        s3 = make_client(gateway.url)
        s3.create_bucket(Bucket="crash")
        old = os.urandom(100_000)
        s3.put_object(Bucket="crash", Key="k", Body=old)
        assert len(_blob_files(dmd.data_path)) == 1

        size = 64 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(_signed_put_head(gateway.port, "crash", "k", size))
            sent = 0
            chunk = os.urandom(1024 * 1024)
            deadline = time.monotonic() + 20
            # Send until the dmd holds a temp file for the new blob: the upload is mid-flight.
            while not _temp_files(dmd.data_path) or sent < 8 * len(chunk):
                sock.sendall(chunk)
                sent += len(chunk)
                assert time.monotonic() < deadline and sent < size, "the upload never reached the dmd"
            gateway.kill()

        # The dmd sees the connection to the dead gateway drop and discards the partial blob.
        deadline = time.monotonic() + 10
        while _temp_files(dmd.data_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _temp_files(dmd.data_path)
        assert len(_blob_files(dmd.data_path)) == 1

        gateway.start()   # a new gateway process on the same port
        s3 = make_client(gateway.url)
        assert s3.get_object(Bucket="crash", Key="k")["Body"].read() == old
        listed = s3.list_objects_v2(Bucket="crash")["Contents"]
        assert [(o["Key"], o["Size"]) for o in listed] == [("k", len(old))]
    finally:
        gateway.stop()
        dmd.stop()
