"""shared/config.py: the shipped files load, env overrides apply, malformed files are named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import REPO_ROOT, ConfigError, is_loopback_host, load_config, secret_matches


def write(tmp: Path, name: str, data: object) -> str:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def shipped(name: str) -> dict:
    return json.loads((REPO_ROOT / name).read_text())


def test_shipped_files_load_with_reference_defaults():
    c = load_config({})
    assert c.port == 8000
    assert c.metadata_daemon.port == 9990 and c.data_daemon.port == 9991
    assert c.metadata_daemon.stream_max_pending_ack == 5
    assert c.metadata_daemon.stream_ack_timeout_ms == 5000
    assert c.call_timeout_ms == 30000
    assert c.rest_endpoints["localhost"] == "us-east-1"
    assert c.locations["us-east-1"].legacy_aws_behavior is True
    assert c.locations["us-west-2"].legacy_aws_behavior is False
    account, secret = c.account_for_access_key("accessKey1")
    assert account.name == "Bart" and secret == "verySecretKey1"
    assert c.metadata_backend == "file" and c.data_backend == "multiple"
    assert c.data_path.endswith("localData") and c.metadata_path.endswith("localMetadata")


def test_environment_overrides():
    c = load_config({"S3DATAPATH": "/d", "S3METADATAPATH": "/m", "LISTEN_ADDR": "0.0.0.0", "DATA_HOST": "datahost",
                     "METADATA_HOST": "mdhost", "METADATA_PORT": "1234", "DATA_PORT": "4321", "LOG_LEVEL": "debug",
                     "ENDPOINT": "s3.example.test, other.test", "S3DATA_NOSYNC": "true"})
    assert (c.data_path, c.metadata_path) == ("/d", "/m")
    assert c.metadata_daemon.bind_address == c.data_daemon.bind_address == "0.0.0.0"
    assert c.listen_on == ("0.0.0.0:8000",)
    assert (c.data_client.host, c.data_client.port) == ("datahost", 4321)
    assert (c.metadata_client.host, c.metadata_client.port) == ("mdhost", 1234)
    assert c.log_level == "debug" and c.data_no_sync
    assert c.rest_endpoints["s3.example.test"] == "us-east-1" and "other.test" in c.rest_endpoints


def test_single_account_from_scality_variables():
    c = load_config({"SCALITY_ACCESS_KEY_ID": "AK", "SCALITY_SECRET_ACCESS_KEY": "SK"})
    assert [a.name for a in c.accounts] == ["CustomAccount"]
    assert c.account_for_access_key("AK")[1] == "SK"
    assert c.account_for_access_key("accessKey1") is None


def test_mem_backend_selection():
    c = load_config({"S3BACKEND": "mem"})
    assert c.metadata_backend == "mem" and c.data_backend == "mem"


def test_secrets_stay_out_of_reprs():
    c = load_config({})
    assert "verySecretKey1" not in repr(c.accounts)


def test_invalid_json_names_file_and_position(tmp_path):
    path = write(tmp_path, "config.json", '{"port": 8000,')
    with pytest.raises(ConfigError) as exc:
        load_config({"S3_CONFIG_FILE": path})
    assert path in str(exc.value) and "line 1" in str(exc.value)


@pytest.mark.parametrize("field,value,named", [
    ("port", "8000", "port"),
    ("port", 70000, "port"),
    ("metadataDaemon", {"port": "x"}, "metadataDaemon.port"),
    ("metadataDaemon", {"streamMaxPendingAck": 0}, "metadataDaemon.streamMaxPendingAck"),
    ("metadataClient", {"callTimeoutMs": -1}, "metadataClient.callTimeoutMs"),
    ("restEndpoints", {"localhost": "nowhere"}, "restEndpoints.localhost"),
    ("clusters", True, "clusters"),
    ("certFilePaths", {"key": "k"}, "certFilePaths"),
])
def test_malformed_config_field_is_named(tmp_path, field, value, named):
    config = shipped("config.json")
    config[field] = value
    path = write(tmp_path, "config.json", config)
    with pytest.raises(ConfigError) as exc:
        load_config({"S3_CONFIG_FILE": path})
    assert named in str(exc.value) and path in str(exc.value)


def test_location_file_needs_us_east_1_and_valid_types(tmp_path):
    locations = shipped("locationConfig.json")
    del locations["us-east-1"]
    with pytest.raises(ConfigError, match="us-east-1"):
        load_config({"S3_LOCATION_FILE": write(tmp_path, "l1.json", locations)})
    locations = shipped("locationConfig.json")
    locations["us-east-2"]["type"] = "floppy"
    with pytest.raises(ConfigError, match="us-east-2.type"):
        load_config({"S3_LOCATION_FILE": write(tmp_path, "l2.json", locations)})


def test_shipped_location_aliases_resolve_to_their_location():
    c = load_config({})
    assert c.locations["us-east-1"].aliases == ("other-v2-signature",)
    assert c.resolve_location("other-v2-signature") == "us-east-1"   # rclone's v2-signature "region"
    assert c.resolve_location("us-west-2") == "us-west-2"
    assert c.resolve_location("nowhere") is None
    assert "other-v2-signature" not in c.locations


@pytest.mark.parametrize("location, aliases, named", [
    ("us-east-2", "ohio", "'us-east-2.aliases' must be a list"),
    ("us-east-2", ["ohio", 3], "'us-east-2.aliases' must be a list"),
    ("us-east-2", [""], "'us-east-2.aliases' must be a list"),
    ("us-east-2", ["us-west-1"], "'us-east-2.aliases' names 'us-west-1', which is a location"),
    ("us-east-2", ["other-v2-signature"], "already an alias of 'us-east-1'"),
])
def test_malformed_location_aliases_are_named(tmp_path, location, aliases, named):
    locations = shipped("locationConfig.json")
    locations[location]["aliases"] = aliases
    path = write(tmp_path, "locations.json", locations)
    with pytest.raises(ConfigError) as exc:
        load_config({"S3_LOCATION_FILE": path})
    assert named in str(exc.value) and path in str(exc.value)


def test_auth_file_account_without_canonical_id_is_named(tmp_path):
    accounts = shipped("conf/authdata.json")
    del accounts["accounts"][1]["canonicalID"]
    path = write(tmp_path, "authdata.json", accounts)
    with pytest.raises(ConfigError, match=r"accounts\[1\].canonicalID"):
        load_config({"S3AUTH_CONFIG": path})


@pytest.mark.parametrize("env", [{"LOG_LEVEL": "loud"}, {"S3BACKEND": "floppy"}, {"METADATA_PORT": "abc"}])
def test_bad_environment_values_are_refused(env):
    with pytest.raises(ConfigError):
        load_config(env)


@pytest.mark.parametrize("module", ["dmd", "gateway"])
def test_services_refuse_to_start_on_a_malformed_config(tmp_path, module):
    import subprocess
    import sys
    path = write(tmp_path, "config.json", '{"port": 8000,')
    proc = subprocess.run([sys.executable, "-m", module], env={"S3_CONFIG_FILE": path, "PATH": "/usr/bin:/bin"},
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "configuration error" in proc.stderr and path in proc.stderr


def test_dmd_secret_from_env_or_config_file(tmp_path):
    assert load_config({}).dmd_secret == ""   # off by default (make start on localhost)
    conf = write(tmp_path, "config.json", {**shipped("config.json"), "dmdSecret": "from-file"})
    assert load_config({"S3_CONFIG_FILE": conf}).dmd_secret == "from-file"
    assert load_config({"DMD_SECRET": "from-env"}).dmd_secret == "from-env"
    assert load_config({"S3_CONFIG_FILE": conf, "DMD_SECRET": "from-env"}).dmd_secret == "from-env"
    assert load_config({"S3_CONFIG_FILE": conf, "DMD_SECRET": ""}).dmd_secret == "from-file"
    assert "from-env" not in repr(load_config({"DMD_SECRET": "from-env"}))


@pytest.mark.parametrize("env,file_value,named", [
    ({"DMD_SECRET": "two words"}, None, "DMD_SECRET"),
    ({"DMD_SECRET": "caf\u00e9"}, None, "DMD_SECRET"),
    ({}, 42, "dmdSecret"),
    ({}, "tab\tinside", "dmdSecret"),
])
def test_unusable_dmd_secret_is_refused(tmp_path, env, file_value, named):
    conf = write(tmp_path, "config.json", {**shipped("config.json"), "dmdSecret": file_value})
    with pytest.raises(ConfigError) as exc:
        load_config({"S3_CONFIG_FILE": conf, **env})
    assert named in str(exc.value)


@pytest.mark.parametrize("presented,ok", [("s3cret", True), ("s3cre", False), ("s3cretx", False), ("", False),
                                          (None, False), (42, False), (["s3cret"], False), ("s3cr\u00e9t", False)])
def test_secret_matches_only_the_exact_string(presented, ok):
    assert secret_matches("s3cret", presented) is ok


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False), ("", False),
                                           ("10.1.2.3", False), ("no-such-host.invalid", False)])
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback
