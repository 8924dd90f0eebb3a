"""The JSON request log line (gateway/app.py, message "request") carries every field a handler
recorded in ctx.extra_log: DeleteObjects' per-key failures, blobs that could not be freed.

A dmd and a gateway of their own, at LOG_LEVEL=info (the line is an info one); their stderr goes
to the log file tests/procs.py keeps, read back here.
"""
from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from gateway.server import request_fields
from tests.integration.conftest import make_client
from tests.procs import Dmd, Gateway, start_dmd, start_gateway


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway]]:
    tmp = tmp_path_factory.mktemp("request-log")
    dmd = start_dmd(tmp / "dmd")
    gateway = start_gateway(tmp / "gw", dmd, env={"LOG_LEVEL": "info"})
    yield dmd, gateway
    gateway.stop()
    dmd.stop()


def request_lines(gateway: Gateway, request_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The gateway's "request" log lines of one request (the line may follow the response by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = []
        for line in gateway.log_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("message") == "request" and entry.get("requestId") == request_id:
                lines.append(entry)
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def blob_files(data_path: Path) -> set[Path]:
    return {p for p in data_path.rglob("*") if p.is_file() and len(p.name) == 40}


def test_delete_objects_errors_reach_the_request_log(logged):
    _, gateway = logged
    s3 = make_client(gateway.url)
    bucket = f"log-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fine", Body=b"x")
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "fine"}, {"Key": "k" * 1025}]})
    assert [e["Code"] for e in response["Errors"]] == ["KeyTooLongError"]
    [line] = request_lines(gateway, response["ResponseMetadata"]["RequestId"])
    assert line["deleteErrors"] == 1
    assert (line["method"], line["bucket"], line["status"]) == ("POST", bucket, 200)


def test_a_blob_that_cannot_be_freed_is_named_in_the_request_log(logged):
    dmd, gateway = logged
    s3 = make_client(gateway.url)
    bucket = f"log-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    before = blob_files(dmd.data_path)
    s3.put_object(Bucket=bucket, Key="k", Body=b"old bytes")
    [blob] = blob_files(dmd.data_path) - before
    # A non-empty directory where the blob was: the data daemon's unlink fails (as root too).
    blob.unlink()
    (blob / "pin").mkdir(parents=True)
    try:
        response = s3.put_object(Bucket=bucket, Key="k", Body=b"new bytes")   # frees the old blob: fails
        [line] = request_lines(gateway, response["ResponseMetadata"]["RequestId"])
        assert line["leakedBlobs"] == [blob.name]
        assert (line["method"], line["key"], line["status"]) == ("PUT", "k", 200)
    finally:
        shutil.rmtree(blob)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new bytes"


def test_request_log_lines_without_extra_fields_stay_plain(logged):
    _, gateway = logged
    s3 = make_client(gateway.url)
    response = s3.list_buckets()
    [line] = request_lines(gateway, response["ResponseMetadata"]["RequestId"])
    assert set(line) == {"time", "level", "name", "message", "pid", "requestId", "method", "bucket", "key",
                         "status", "bytes", "elapsedMs"}


def test_an_extra_field_named_like_a_base_field_is_kept_apart():
    base = {"requestId": "R", "status": 200}
    assert request_fields({"status": "half", "leakedBlob": "b"}, base) == {"extra.status": "half", "leakedBlob": "b"}
