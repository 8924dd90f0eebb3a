"""The Swarm stack's NFS side, as far as this kernel allows (`make test_deploy`).

The kernel has no NFS client, so nothing here mounts NFS. What runs: a userspace NFS server
(Debian's nfs-ganesha, NFSv4) exporting two folders under the reference's paths
(`/var/nfs/data`, `/var/nfs/metadata`, read-write, no_root_squash), a dmd keeping its data and
metadata in those folders behind a gateway, and a userspace NFS client (libnfs's nfs-ls,
nfs-cat, nfs-cp) that lists and reads the dmd's files through the export and writes into it.
Ganesha binds port 2049 on every interface: only in the test's own network namespace.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.deploy.conftest import in_private_netns, run
from tests.integration.conftest import make_client
from tests.procs import start_dmd, start_gateway

pytestmark = pytest.mark.deploy

GANESHA_CONF = """
NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = 2049; Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {state}/recovery; }}
EXPORT {{ Export_Id = 1; Path = {root}/data; Pseudo = /var/nfs/data; Access_Type = RW;
          Squash = No_Root_Squash; Protocols = 4; SecType = sys; FSAL {{ Name = VFS; }} }}
EXPORT {{ Export_Id = 2; Path = {root}/metadata; Pseudo = /var/nfs/metadata; Access_Type = RW;
          Squash = No_Root_Squash; Protocols = 4; SecType = sys; FSAL {{ Name = VFS; }} }}
LOG {{ Default_Log_Level = EVENT; }}
"""


def nfs(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([tool, *args], timeout=60, check=check)


def test_ganesha_exports_the_dmd_folders(tmp_path: Path):
    if not in_private_netns():
        pytest.skip("nfs-ganesha binds port 2049: only in the test's own network namespace")
    missing = [c for c in ("ganesha.nfsd", "nfs-ls", "nfs-cat", "nfs-cp") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"needs nfs-ganesha, nfs-ganesha-vfs and libnfs-utils (missing {missing})")
    root, state = tmp_path / "var-nfs", tmp_path / "ganesha"
    for folder in (root / "data", root / "metadata", state / "recovery"):
        folder.mkdir(parents=True)
    (state / "ganesha.conf").write_text(GANESHA_CONF.format(root=root, state=state))
    ganesha = subprocess.Popen(["ganesha.nfsd", "-F", "-f", str(state / "ganesha.conf"), "-L", str(state / "log"),
                                "-p", str(state / "ganesha.pid"), "-N", "NIV_EVENT"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dmd = gw = None
    try:
        url = "nfs://127.0.0.1/var/nfs/{}?version=4"
        deadline = time.monotonic() + 60
        while nfs("nfs-ls", url.format("data"), check=False).returncode != 0:
            assert ganesha.poll() is None, (state / "log").read_text()[-3000:]
            assert time.monotonic() < deadline, (state / "log").read_text()[-3000:]
            time.sleep(0.5)
        # The dmd on the exported folders (what the stack's NFS volumes hold in production).
        dmd = start_dmd(tmp_path / "dmd", env={"S3DATAPATH": str(root / "data"), "S3METADATAPATH": str(root / "metadata")})
        gw = start_gateway(tmp_path / "gw", dmd)
        s3 = make_client(gw.url)
        bucket = f"nfs-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        body = uuid.uuid4().bytes * 4096
        s3.put_object(Bucket=bucket, Key="over-nfs", Body=body)
        # Through the export: the metadata folder's RocksDB files, and the object's bytes.
        listing = nfs("nfs-ls", url.format("metadata")).stdout
        assert "rootDB" in listing, listing
        db = nfs("nfs-ls", "nfs://127.0.0.1/var/nfs/metadata/rootDB?version=4").stdout
        assert "CURRENT" in db and "MANIFEST" in db, db
        blobs = [p for p in (root / "data").rglob("*") if p.is_file() and p.stat().st_size == len(body)]
        assert blobs, list((root / "data").rglob("*"))
        relative = blobs[0].relative_to(root / "data").as_posix()
        through_nfs = subprocess.run(["nfs-cat", f"nfs://127.0.0.1/var/nfs/data/{relative}?version=4"],
                                     capture_output=True, timeout=60, check=True).stdout
        assert through_nfs == body
        # Read-write with root not squashed, as the reference's exports.
        (tmp_path / "probe").write_bytes(b"written over nfs")
        nfs("nfs-cp", str(tmp_path / "probe"), "nfs://127.0.0.1/var/nfs/metadata/probe?version=4")
        assert (root / "metadata" / "probe").read_bytes() == b"written over nfs"
        assert (root / "metadata" / "probe").stat().st_uid == 0
    finally:
        if gw is not None:
            gw.stop()
        if dmd is not None:
            dmd.stop()
        if ganesha.poll() is None:
            ganesha.send_signal(signal.SIGTERM)
            try:
                ganesha.wait(30)
            except subprocess.TimeoutExpired:
                ganesha.kill()
                ganesha.wait()
