"""Azurite (the npm package `azurite`): a local Azure Blob Storage for the azure location tests.

`azurite_bin()` finds azurite-blob: $AZURITE_BIN, else .tools/azurite in the repository, else
installs it there with `npm install` (once; the folder is git-ignored). Without npm the tests
that need it are skipped with that reason. `start_azurite(tmp)` runs it in memory on a free port.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.procs import REPO, Proc, free_port

AZURITE_VERSION = "3"
TOOLS_DIR = REPO / ".tools" / "azurite"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
NPM_TIMEOUT_S = 600


class AzuriteMissing(RuntimeError):
    """azurite cannot be found nor installed (no npm, no registry): the reason to skip."""


def azurite_bin() -> Path:
    env_bin = os.environ.get("AZURITE_BIN")
    if env_bin:
        return Path(env_bin)
    binary = TOOLS_DIR / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AzuriteMissing("azurite is not installed and node/npm are missing (apt-get install -y nodejs npm)")
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS_DIR),
                           f"azurite@{AZURITE_VERSION}"], capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    if done.returncode != 0 or not binary.exists():
        raise AzuriteMissing(f"npm install azurite failed ({done.returncode}): {done.stderr[-500:]}")
    return binary


def start_azurite(tmp: Path, port: int | None = None) -> Proc:
    """azurite-blob in memory on 127.0.0.1:`port` (a free one by default), started and listening."""
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    args = [str(azurite_bin()), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
    return Proc(args, dict(os.environ), [port], tmp / f"azurite-{port}.log").start()


def endpoint(proc: Proc) -> str:
    return f"http://127.0.0.1:{proc.ports[0]}/{ACCOUNT}"


def container_client(proc: Proc, container: str):
    """A synchronous client of `container`, to look at the remote side directly."""
    from azure.storage.blob import ContainerClient
    return ContainerClient(endpoint(proc), container, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY})


def azure_location(proc: Proc, container: str, **details: object) -> dict:
    return {"type": "azure", "objectId": f"azure-{proc.ports[0]}-{container}", "legacyAwsBehavior": False,
            "details": {"azureStorageEndpoint": endpoint(proc), "azureStorageAccountName": ACCOUNT,
                        "azureStorageAccessKey": ACCOUNT_KEY, "azureContainerName": container, **details}}
