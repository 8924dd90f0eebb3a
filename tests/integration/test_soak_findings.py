"""What the soak (tests/soak.py) found, reproduced deterministically (issue 17), now fixed: each
test failed before its fix (gateway/objectdata.py commit_outcome_unknown and free_new_data, the
Complete that keeps its claim, the retried Complete that checks its parts' data, the scrub's
`interruptedCompletes`).

1. A commit whose answer is lost (the dmd killed right after committing, or a network blip) is
   taken as failed: the gateway answers 503 and its rollback frees the NEW data that the
   committed metadata references (gateway/versioning.py commit_new_object; UploadPart's
   _commit_part has the same shape). The soak sees it as `near_misses` (the free failed only
   because the dmd was still down). test_a_commit_whose_answer_is_lost_does_not_lose_the_object
   cuts the answer with a proxy while the dmd stays up: the object becomes unreadable (500).
2. Same for CompleteMultipartUpload: its rollback gives the upload back unclaimed although the
   object was committed; the Abort a client then sends frees the object's data
   (test_abort_after_a_complete_whose_answer_is_lost_does_not_lose_the_object).
3. A CompleteMultipartUpload interrupted by a dmd SIGKILL after its object commit but before its
clean-up leaves the upload behind: the overview (`completeInProgress`) and the part records, which
reference the same blobs as the completed object. When the object is later overwritten, the
overwrite frees those blobs (right: the object no longer needs them), and the leftover part
records now reference missing data: `python -m dmd.scrub` reports `missingData` that `--repair`
cannot fix, and a Complete of that upload retried afterwards (SDKs retry the 503 the interrupted
Complete answered) commits an object whose data is gone: an acknowledged write that cannot be read.

(test_overwrite_after_an_interrupted_complete_leaves_no_dangling_part_records,
test_retried_complete_after_an_overwrite_is_not_acknowledged_without_data). The soak counts the
scrub's missingData of such part records as `known_findings` (fatal with --strict); the variant it
also met (a Complete whose answer was lost gave the upload back, item 2) leaves the same records.
The interrupted state is planted here through the dmd's RPC (as tests/integration/test_scrub.py
plants damage): a real upload and a real Complete, then the overview and part records the
Complete's clean-up removed are written back, exactly what a kill between the commit and the
clean-up leaves. Real dmd and gateway processes otherwise.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from gateway.metadata import RemoteMetadataClient
from gateway.models import UploadMD
from gateway.store import Store
from tests.integration.conftest import make_client
from tests.procs import REPO, Dmd, Gateway, start_dmd, start_gateway

MiB = 1 << 20


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[tuple[Dmd, Gateway]]:
    dmd = start_dmd(tmp_path / "dmd", env={"S3DATA_NOSYNC": "true"})
    try:   # a gateway that fails to start must not leave the dmd running
        gw = start_gateway(tmp_path / "gw", dmd)
        try:
            yield dmd, gw
        finally:
            gw.stop()
    finally:
        dmd.stop()


def _rpc(dmd: Dmd, fn) -> Any:
    async def run() -> Any:
        store = Store(RemoteMetadataClient("127.0.0.1", dmd.metadata_port), "RG001")
        await store.connect()
        try:
            return await fn(store)
        finally:
            await store.close()
    return asyncio.run(run())


def _scrub(dmd: Dmd, *args: str) -> dict[str, Any]:
    env = {**dmd.env, "METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(dmd.metadata_port)}
    r = subprocess.run([sys.executable, "-m", "dmd.scrub", "--grace-seconds", "0", *args], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def _interrupted_complete(dmd: Dmd, s3, bucket: str, key: str) -> tuple[str, list[dict[str, Any]], bytes]:
    """An upload completed into `key` whose clean-up never ran (a dmd killed after the commit)."""
    part1, part2 = os.urandom(5 * MiB), os.urandom(1000)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                                      Body=body)["ETag"]}
             for n, body in ((1, part1), (2, part2))]
    overview = _rpc(dmd, lambda st: st.get_upload(bucket, key, upload))
    records = _rpc(dmd, lambda st: st.parts(bucket, upload))
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    claimed = UploadMD({**overview, "completeInProgress": True, "completeStartedAt": 1})   # an old claim

    async def plant(st: Store) -> None:
        await st.put_upload(bucket, key, upload, claimed)
        for number, record in records:
            await st.put_part(bucket, upload, number, record)
    _rpc(dmd, plant)
    return upload, parts, part1 + part2


def test_overwrite_after_an_interrupted_complete_leaves_no_dangling_part_records(procs) -> None:
    dmd, gw = procs
    s3 = make_client(gw.url)
    s3.create_bucket(Bucket="finding")
    _upload, _parts, body = _interrupted_complete(dmd, s3, "finding", "obj")
    assert s3.get_object(Bucket="finding", Key="obj")["Body"].read() == body
    assert _scrub(dmd)["missingData"] == []        # the interrupted state itself is consistent
    s3.put_object(Bucket="finding", Key="obj", Body=b"overwritten")   # acknowledged; frees the MPU data
    report = _scrub(dmd)
    assert report["missingData"] == [], f"dangling part records after the overwrite: {report['missingData']}"
    assert [u["uploadId"] for u in report["interruptedCompletes"]] == [_upload]
    _scrub(dmd, "--repair")
    after = _scrub(dmd)
    assert after["interruptedCompletes"] == [] and after["orphanParts"] == [] and after["orphanBlobs"] == []


def test_retried_complete_after_an_overwrite_is_not_acknowledged_without_data(procs) -> None:
    dmd, gw = procs
    s3 = make_client(gw.url)
    s3.create_bucket(Bucket="finding")
    upload, parts, body = _interrupted_complete(dmd, s3, "finding", "obj")
    s3.put_object(Bucket="finding", Key="obj", Body=b"overwritten")   # acknowledged; frees the MPU data
    try:   # the SDK's retry of the Complete that answered 503
        s3.complete_multipart_upload(Bucket="finding", Key="obj", UploadId=upload, MultipartUpload={"Parts": parts})
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] < 500, exc.response
        return   # refused (NoSuchUpload...): nothing acknowledged, nothing lost
    try:
        got = s3.get_object(Bucket="finding", Key="obj")["Body"].read()
    except ClientError as exc:
        raise AssertionError(f"the retried Complete was acknowledged, its object answers {exc.response['Error']}")
    assert got in (body, b"overwritten")


# ---------------------------------------------------------------- a commit whose answer is lost

class AnswerCutter:
    """A TCP proxy in front of the dmd's metadata port (socket.io over websocket). Once armed,
    the first client frame containing `needle` (a put of one key) is forwarded to the dmd, after which
    nothing more comes back and the connection is cut: the dmd commits the write, the gateway
    never hears the answer (what a network blip, or a dmd killed right after its commit, does)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.needle: bytes | None = None
        self.cut_done = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @staticmethod
    def _frames(buf: bytearray) -> list[tuple[bytes, bytes]]:
        """Complete websocket frames at the head of `buf` (removed from it): (raw, unmasked payload)."""
        out = []
        while len(buf) >= 2:
            masked, size, i = buf[1] & 0x80, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, i = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, i = int.from_bytes(buf[2:10], "big"), 10
            mask = b""
            if masked:
                if len(buf) < i + 4:
                    break
                mask, i = bytes(buf[i:i + 4]), i + 4
            if len(buf) < i + size:
                break
            payload = bytes(buf[i:i + size])
            if mask:
                payload = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
            out.append((bytes(buf[:i + size]), payload))
            del buf[:i + size]
        return out

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        cut = asyncio.Event()

        async def down() -> None:
            while not cut.is_set() and (data := await up_r.read(65536)):
                if cut.is_set():
                    break
                client_w.write(data)
                await client_w.drain()

        async def up() -> None:
            head, buf = bytearray(), bytearray()
            while b"\r\n\r\n" not in head:           # the HTTP upgrade request passes as is
                data = await client_r.read(65536)
                if not data:
                    return
                head += data
            end = head.index(b"\r\n\r\n") + 4
            up_w.write(bytes(head[:end]))
            buf += head[end:]
            while True:
                for raw, payload in self._frames(buf):
                    up_w.write(raw)
                    if self.needle and self.needle in payload:
                        self.needle = None
                        cut.set()                   # nothing more goes back to the gateway
                        await up_w.drain()
                        await asyncio.sleep(0.5)    # the dmd commits meanwhile
                        client_w.transport.abort()
                        up_w.transport.abort()
                        self.cut_done.set()
                        return
                await up_w.drain()
                data = await client_r.read(65536)
                if not data:
                    break
                buf += data

        try:
            await asyncio.gather(up(), down(), return_exceptions=True)
        finally:
            for w in (client_w, up_w):
                w.transport.abort()


def test_a_commit_whose_answer_is_lost_does_not_lose_the_object(tmp_path: Path) -> None:
    dmd = start_dmd(tmp_path / "dmd", env={"S3DATA_NOSYNC": "true"})
    cutter = gw = None
    try:
        cutter = AnswerCutter(dmd.metadata_port)
        via_cutter = SimpleNamespace(metadata_port=cutter.port, data_port=dmd.data_port)
        gw = start_gateway(tmp_path / "gw", via_cutter)   # metadata through the cutter, data direct
        s3 = make_client(gw.url, read_timeout=30, retries={"total_max_attempts": 1, "mode": "standard"})
        s3.create_bucket(Bucket="lost-answer")
        s3.put_object(Bucket="lost-answer", Key="victim", Body=b"old body")
        new_body = os.urandom(100_000)
        cutter.needle = b'["call","put",{"rpcArgs":["victim",'   # the object's commit
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket="lost-answer", Key="victim", Body=new_body)
        assert cutter.cut_done.is_set(), "the put's answer was not cut"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, err.value.response
        # Not acknowledged: either body is acceptable, a missing one is not.
        try:
            got = s3.get_object(Bucket="lost-answer", Key="victim")["Body"].read()
        except ClientError as exc:
            raise AssertionError(f"the object is unreadable after a commit whose answer was lost: "
                                 f"{exc.response['Error']}") from None
        assert got in (b"old body", new_body)
    finally:
        if gw is not None:
            gw.stop()
        if cutter is not None:
            cutter.close()
        dmd.stop()


def test_abort_after_a_complete_whose_answer_is_lost_does_not_lose_the_object(tmp_path: Path) -> None:
    dmd = start_dmd(tmp_path / "dmd", env={"S3DATA_NOSYNC": "true"})
    cutter = gw = None
    try:
        cutter = AnswerCutter(dmd.metadata_port)
        gw = start_gateway(tmp_path / "gw", SimpleNamespace(metadata_port=cutter.port, data_port=dmd.data_port))
        s3 = make_client(gw.url, read_timeout=30, retries={"total_max_attempts": 1, "mode": "standard"})
        s3.create_bucket(Bucket="lost-complete")
        part1, part2 = os.urandom(5 * MiB), b"tail"
        upload = s3.create_multipart_upload(Bucket="lost-complete", Key="mpu")["UploadId"]
        parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket="lost-complete", Key="mpu", UploadId=upload,
                                                          PartNumber=n, Body=body)["ETag"]}
                 for n, body in ((1, part1), (2, part2))]
        cutter.needle = b'["call","put",{"rpcArgs":["mpu",'     # the object's commit, not the claim
        with pytest.raises(ClientError) as err:
            s3.complete_multipart_upload(Bucket="lost-complete", Key="mpu", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
        assert cutter.cut_done.is_set(), "the Complete's commit answer was not cut"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503, err.value.response
        try:   # what a client does with an upload it failed to complete
            s3.abort_multipart_upload(Bucket="lost-complete", Key="mpu", UploadId=upload)
        except ClientError:
            pass
        try:
            got = s3.get_object(Bucket="lost-complete", Key="mpu")["Body"].read()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchKey", \
                f"the object is unreadable after Complete (answer lost) + Abort: {exc.response['Error']}"
            return
        assert got == part1 + part2
    finally:
        if gw is not None:
            gw.stop()
        if cutter is not None:
            cutter.close()
        dmd.stop()
