"""Issue 18: the Unix-domain socket settings of shared/config.py (METADATA_SOCKET / DATA_SOCKET,
metadataClient/dataClient/metadataDaemon/dataDaemon.socketPath)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import REPO_ROOT, ConfigError, load_config


def config_with(tmp: Path, **sections: dict) -> dict[str, str]:
    cfg = json.loads((REPO_ROOT / "config.json").read_text())
    for name, extra in sections.items():
        cfg[name] = {**cfg.get(name, {}), **extra}
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return {"S3_CONFIG_FILE": str(path)}


def test_tcp_by_default():
    c = load_config({})
    assert c.metadata_client.socket_path == c.data_client.socket_path == ""
    assert c.metadata_daemon.socket_path == c.data_daemon.socket_path == ""


def test_env_sets_both_sides():
    c = load_config({"METADATA_SOCKET": "/run/pys3/md.sock", "DATA_SOCKET": "/run/pys3/data.sock"})
    assert c.metadata_client.socket_path == c.metadata_daemon.socket_path == "/run/pys3/md.sock"
    assert c.data_client.socket_path == c.data_daemon.socket_path == "/run/pys3/data.sock"
    assert (c.metadata_client.host, c.metadata_client.port) == ("localhost", 9990)   # TCP settings kept


def test_config_file_sides_apart_and_empty_env_turns_it_off(tmp_path: Path):
    env = config_with(tmp_path, metadataClient={"socketPath": "/a/md.sock"}, dataDaemon={"socketPath": "/b/d.sock"})
    c = load_config(env)
    assert c.metadata_client.socket_path == "/a/md.sock" and c.metadata_daemon.socket_path == ""
    assert c.data_daemon.socket_path == "/b/d.sock" and c.data_client.socket_path == ""
    off = load_config({**env, "METADATA_SOCKET": "", "DATA_SOCKET": ""})
    assert off.metadata_client.socket_path == off.data_daemon.socket_path == ""


def test_too_long_or_malformed_paths_are_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="METADATA_SOCKET"):
        load_config({"METADATA_SOCKET": "/" + "x" * 120})
    with pytest.raises(ConfigError, match="socketPath"):
        load_config(config_with(tmp_path, dataClient={"socketPath": 5}))
