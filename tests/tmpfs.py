"""Small filesystems of their own for the dmd's two folders (tmpfs mounts; the tests run as root).

Tests that fill a disk (tests/integration/test_disk_full.py, test_commit_failure.py) give the
dmd a data folder and a metadata folder each on a tmpfs of the size they choose; without root,
or where mounting is refused, they are skipped with the reason."""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {r.stderr.decode(errors='replace').strip()}")


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def dmd_disks(tmp_path: Path, data_size: str, metadata_size: str) -> Iterator[Path]:
    """`tmp_path`, with `dmd/localData` and `dmd/localMetadata` (start_dmd(tmp_path / "dmd")'s
    folders) each on its own tmpfs for the duration."""
    data, meta = tmp_path / "dmd" / "localData", tmp_path / "dmd" / "localMetadata"
    mount_tmpfs(data, data_size)
    try:
        mount_tmpfs(meta, metadata_size)
    except BaseException:
        umount(data)
        raise
    try:
        yield tmp_path
    finally:
        umount(meta)
        umount(data)
