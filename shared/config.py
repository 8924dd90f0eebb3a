"""Configuration: config.json + locationConfig.json + conf/authdata.json + env.

One typed `Config` object is built by `load_config()`; both services read it.
File names, keys and environment variables follow the reference
(CloudServer's `lib/Config.js` and `docker-entrypoint.sh`). A malformed file
raises `ConfigError` naming the file and the field.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_REPLICATION_GROUP_ID = "RG001"
DEFAULT_CALL_TIMEOUT_MS = 30_000
# How long idempotent metadata calls and data reads keep retrying while the dmd is away
# (config.json metadataClient.retryWindowMs, env S3_RETRY_WINDOW_MS; docs/durability.md#restarts).
DEFAULT_RETRY_WINDOW_MS = 10_000
DEFAULT_STREAM_MAX_PENDING_ACK = 5
DEFAULT_STREAM_ACK_TIMEOUT_MS = 5_000
DEFAULT_WRITE_BATCH_MAX_OPS = 1_000
# The original's record log (config.json "recordLog": {"enabled", "recordLogName"}; docs/protocol.md#record-log).
# Off by default here (the original ships it on): see docs/protocol.md#record-log.
DEFAULT_RECORD_LOG_NAME = "s3-recordlog"
LOCATION_TYPES = {"mem", "file", "aws_s3", "scality", "azure", "gcp", "pfs", "dmf", "azure_archive"}
LOG_LEVELS = {"trace", "debug", "info", "warn", "error", "fatal"}

CUSTOM_ACCOUNT_CANONICAL_ID = "12349df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47qwer"

# The shared secret between the gateways and the dmd (ours, docs/operations.md#the-dmd-secret):
# env DMD_SECRET or config.json `dmdSecret`; empty = none. Presented as the socket.io
# handshake's auth payload `{"secret": ...}` on 9990 and as this header on 9991.
DMD_SECRET_ENV = "DMD_SECRET"
DMD_SECRET_AUTH_FIELD = "secret"
DMD_SECRET_HEADER = "x-dmd-secret"


# The gateway's connection limits: S3 answers 400 RequestHeaderSectionTooLarge past an 8 KB
# header section, and 400 RequestTimeout after ~20 s without body bytes.
DEFAULT_MAX_REQUEST_HEADER_BYTES = 8192
DEFAULT_REQUEST_BODY_TIMEOUT_MS = 20_000


class ConfigError(Exception):
    """A configuration file or variable is malformed; the message names it."""


# A Unix-domain socket between a gateway and a dmd on one host (ours, docs/operations.md#unix-sockets):
# env METADATA_SOCKET / DATA_SOCKET, or config.json metadataClient.socketPath / dataClient.socketPath
# (the gateway connects there instead of host:port) and metadataDaemon.socketPath /
# dataDaemon.socketPath (the dmd listens there besides its TCP port). The variable sets both sides, so
# one environment serves a dmd and a gateway started together (`make start`). "" = none (TCP).
METADATA_SOCKET_ENV = "METADATA_SOCKET"
DATA_SOCKET_ENV = "DATA_SOCKET"
# sockaddr_un.sun_path is 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int
    # A Unix-domain socket path: when set, the client connects there and host/port are unused.
    socket_path: str = ""


@dataclass(frozen=True)
class MetadataDaemonConfig:
    bind_address: str = "localhost"
    port: int = 9990
    stream_max_pending_ack: int = DEFAULT_STREAM_MAX_PENDING_ACK
    stream_ack_timeout_ms: int = DEFAULT_STREAM_ACK_TIMEOUT_MS
    write_batch_max_ops: int = DEFAULT_WRITE_BATCH_MAX_OPS
    socket_path: str = ""   # also listen on this Unix-domain socket ("" = TCP only)


@dataclass(frozen=True)
class DataDaemonConfig:
    bind_address: str = "localhost"
    port: int = 9991
    socket_path: str = ""   # also listen on this Unix-domain socket ("" = TCP only)


@dataclass(frozen=True)
class Location:
    name: str
    type: str
    object_id: str
    legacy_aws_behavior: bool
    details: dict[str, Any] = field(default_factory=dict)
    # Other names a client may send as CreateBucket's LocationConstraint for this location
    # (ours: e.g. rclone's "other-v2-signature" region); buckets store the location's name.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessKey:
    access: str
    secret: str = field(repr=False)   # never in logs


@dataclass(frozen=True)
class Account:
    name: str
    email: str
    arn: str
    canonical_id: str
    shortid: str
    keys: tuple[AccessKey, ...]


@dataclass(frozen=True)
class Config:
    port: int = 8000
    listen_on: tuple[str, ...] = ()
    metrics_port: int = 8002                              # /live, /ready, /metrics; 0 = none
    metrics_listen_on: tuple[tuple[str, int], ...] = ()   # (host, port) pairs
    replication_group_id: str = DEFAULT_REPLICATION_GROUP_ID
    rest_endpoints: dict[str, str] = field(default_factory=dict)
    website_endpoints: tuple[str, ...] = ()
    workers: int = 1
    log_level: str = "info"
    health_checks_allow_from: tuple[str, ...] = ("127.0.0.1/8", "::1")
    metadata_client: HostPort = HostPort("localhost", 9990)
    data_client: HostPort = HostPort("localhost", 9991)
    call_timeout_ms: int = DEFAULT_CALL_TIMEOUT_MS
    retry_window_ms: int = DEFAULT_RETRY_WINDOW_MS
    metadata_daemon: MetadataDaemonConfig = MetadataDaemonConfig()
    data_daemon: DataDaemonConfig = DataDaemonConfig()
    locations: dict[str, Location] = field(default_factory=dict)
    accounts: tuple[Account, ...] = ()
    # "file": metadata through the dmd, data per location; "mem": both in process.
    metadata_backend: str = "file"
    # S3METADATA=postgres: a libpq connection string (several hosts allowed; docs/metadata-postgres.md).
    metadata_url: str = field(default="", repr=False)
    data_backend: str = "multiple"
    data_path: str = str(REPO_ROOT / "localData")
    metadata_path: str = str(REPO_ROOT / "localMetadata")
    data_no_sync: bool = False
    cert_file_paths: dict[str, str] | None = None
    dmd_tls: dict[str, str] | None = None   # TLS on the gateway-dmd link (shared/dmd_tls.py)
    version_id_encoding: str = "hex"
    dmd_secret: str = field(default="", repr=False)   # "" = none; never in logs
    # The gateway's connection limits (gateway/limits.py has the defaults' reasons).
    max_request_header_bytes: int = DEFAULT_MAX_REQUEST_HEADER_BYTES
    request_body_timeout_ms: int = DEFAULT_REQUEST_BODY_TIMEOUT_MS
    record_log_enabled: bool = False
    record_log_name: str = DEFAULT_RECORD_LOG_NAME
    config_file: str = ""
    location_file: str = ""
    auth_file: str = ""
    # What a new bucket gets without headers saying otherwise (docs/authorization.md#defaults):
    # "classic" = ACLs on, nothing blocked (CloudServer, Ceph); "aws2023" = Block Public Access on
    # and BucketOwnerEnforced, AWS's defaults since April 2023.
    bucket_defaults: str = "classic"
    # Encryption at rest (docs/encryption.md): the file KMS's key directory ("" = <repo>/localKMS;
    # config.json kms.path, env S3KMSPATH), SSE-C over plain HTTP (refused unless true, as AWS),
    # and AWS's default since 2023 of SSE-S3 on every new bucket (off: CloudServer's model).
    kms_path: str = ""
    sse_customer_keys_over_http: bool = False
    default_bucket_encryption: bool = False
    # Lifecycle (issue 15): the length of a rule's "day" and the worker's pass interval, in seconds
    # (config.json "lifecycle": {"dayInSeconds", "intervalSeconds"}; LIFECYCLE_DAY_SECONDS,
    # LIFECYCLE_INTERVAL_SECONDS). Shortened days are for tests.
    lifecycle_day_seconds: int = 86400
    lifecycle_interval_seconds: int = 3600

    def resolve_location(self, name: str) -> str | None:
        """The location a LocationConstraint names, directly or through an alias; None if neither."""
        if name in self.locations:
            return name
        for location in self.locations.values():
            if name in location.aliases:
                return location.name
        return None

    def account_by_canonical_id(self, canonical_id: str) -> Account | None:
        """The account of a canonical id (ACL grantees, owners), or None."""
        for account in self.accounts:
            if account.canonical_id == canonical_id:
                return account
        return None

    def account_by_email(self, email: str) -> Account | None:
        """The account of an email address (x-amz-grant-*: emailAddress=), case-insensitive, or None."""
        email = email.lower()
        for account in self.accounts:
            if account.email.lower() == email:
                return account
        return None

    def account_for_access_key(self, access_key: str) -> tuple[Account, str] | None:
        """(account, secret) for an access key, or None."""
        for account in self.accounts:
            for key in account.keys:
                if key.access == access_key:
                    return account, key.secret
        return None


def secret_matches(expected: str, presented: object) -> bool:
    """Whether `presented` (any type, from the wire) equals `expected`, compared in constant time."""
    if not isinstance(presented, str) or not presented.isascii():
        return False   # the secret is ASCII (load_config checks): nothing else can match
    return hmac.compare_digest(presented.encode(), expected.encode())


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` exposes only the loopback interface ("" and "0.0.0.0" mean every interface).

    A name counts as loopback when every address it resolves to is; an unresolvable name does not.
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _dmd_secret(path: Path, r: "_Reader", env: Mapping[str, str]) -> str:
    """DMD_SECRET, else config.json `dmdSecret`, else "" (none); visible ASCII only (it travels in a header)."""
    if env.get(DMD_SECRET_ENV):
        secret, where = env[DMD_SECRET_ENV], DMD_SECRET_ENV
    else:
        secret, where = r.string("dmdSecret", ""), f"{path}: field 'dmdSecret'"
    if secret and not all("!" <= ch <= "~" for ch in secret):
        raise ConfigError(f"{where} must hold printable ASCII characters only, without spaces")
    return secret


def _record_log_name(path: Path, r: "_Reader") -> str:
    name = r.string("recordLogName", DEFAULT_RECORD_LOG_NAME)
    if not name or "!" in name or "#" in name:
        raise ConfigError(f"{path}: field 'recordLog.recordLogName' must be a non-empty string without '!' or '#'")
    return name


def _find_file(name_or_path: str) -> Path:
    """As the reference: an absolute path as is, else <repo>/conf then <repo>."""
    p = Path(name_or_path)
    if p.is_absolute() or p.exists():
        return p
    for folder in (REPO_ROOT / "conf", REPO_ROOT):
        if (folder / name_or_path).exists():
            return folder / name_or_path
    return REPO_ROOT / name_or_path


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


class _Reader:
    """Typed field access that names the file and field on error."""

    def __init__(self, path: Path, data: Any, prefix: str = ""):
        self.path, self.data, self.prefix = path, data, prefix
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: {prefix or 'top level'} must be an object")

    def _fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.path}: field '{self.prefix}{key}' must be {expected}")

    def sub(self, key: str) -> "_Reader":
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, "an object")
        return _Reader(self.path, value, f"{self.prefix}{key}.")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, (int,)):
            raise self._fail(key, expected)
        if not isinstance(value, kind):
            raise self._fail(key, expected)
        return value

    def port(self, key: str, default: int) -> int:
        value = self.get(key, int, default, "an integer port 1-65535")
        if not 0 <= value <= 65535:
            raise self._fail(key, "an integer port 1-65535")
        return value

    def string(self, key: str, default: str) -> str:
        return self.get(key, str, default, "a string")

    def positive(self, key: str, default: int) -> int:
        value = self.get(key, int, default, "a positive integer")
        if value <= 0:
            raise self._fail(key, "a positive integer")
        return value


def _parse_locations(path: Path, data: Any) -> dict[str, Location]:
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: must be a non-empty object of location name -> settings")
    locations: dict[str, Location] = {}
    seen_ids: set[str] = set()
    for name, raw in data.items():
        r = _Reader(path, raw, f"{name}.")
        loc_type = r.string("type", "")
        if loc_type not in LOCATION_TYPES:
            raise ConfigError(f"{path}: field '{name}.type' must be one of {sorted(LOCATION_TYPES)}")
        object_id = r.string("objectId", name)
        if object_id in seen_ids:
            raise ConfigError(f"{path}: field '{name}.objectId' duplicates another location's objectId")
        seen_ids.add(object_id)
        if "legacyAwsBehavior" in raw and not isinstance(raw["legacyAwsBehavior"], bool):
            raise ConfigError(f"{path}: field '{name}.legacyAwsBehavior' must be a boolean")
        details = r.get("details", dict, {}, "an object")
        aliases = r.get("aliases", list, [], "a list of non-empty strings")
        if not all(isinstance(a, str) and a for a in aliases):
            raise ConfigError(f"{path}: field '{name}.aliases' must be a list of non-empty strings")
        locations[name] = Location(name, loc_type, object_id, bool(raw.get("legacyAwsBehavior", False)), details,
                                   tuple(aliases))
    if "us-east-1" not in locations:
        raise ConfigError(f"{path}: a location named 'us-east-1' is mandatory")
    owner_of: dict[str, str] = {}
    for loc in locations.values():
        for alias in loc.aliases:
            if alias in locations:
                raise ConfigError(f"{path}: field '{loc.name}.aliases' names '{alias}', which is a location")
            if alias in owner_of:
                raise ConfigError(f"{path}: field '{loc.name}.aliases' names '{alias}', "
                                  f"already an alias of '{owner_of[alias]}'")
            owner_of[alias] = loc.name
    return locations


def _parse_accounts(path: Path, data: Any) -> tuple[Account, ...]:
    r = _Reader(path, data)
    raw_accounts = r.get("accounts", list, None, "a list")
    if raw_accounts is None:
        raise ConfigError(f"{path}: field 'accounts' must be a list")
    accounts = []
    for i, raw in enumerate(raw_accounts):
        a = _Reader(path, raw, f"accounts[{i}].")
        keys = []
        for j, k in enumerate(a.get("keys", list, [], "a list")):
            kr = _Reader(path, k, f"accounts[{i}].keys[{j}].")
            access, secret = kr.string("access", ""), kr.string("secret", "")
            if not access or not secret:
                raise ConfigError(f"{path}: field 'accounts[{i}].keys[{j}]' needs non-empty 'access' and 'secret'")
            keys.append(AccessKey(access, secret))
        canonical = a.string("canonicalID", "")
        if not canonical:
            raise ConfigError(f"{path}: field 'accounts[{i}].canonicalID' must be a non-empty string")
        accounts.append(Account(a.string("name", ""), a.string("email", ""), a.string("arn", ""),
                                canonical, a.string("shortid", ""), tuple(keys)))
    return tuple(accounts)


BUCKET_DEFAULTS = ("classic", "aws2023")


def _bucket_defaults(path: Path, r: "_Reader") -> str:
    value = r.string("bucketDefaults", "classic")
    if value not in BUCKET_DEFAULTS:
        raise ConfigError(f"{path}: field 'bucketDefaults' must be one of {', '.join(BUCKET_DEFAULTS)}")
    return value


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() == "true"


def _listen_address(path: Path, item: Any, field_name: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{path}: field '{field_name}' must be an 'ip:port' string")
    return host.strip("[]"), int(port)


def _positive_override(env: Mapping[str, str], name: str, value: int) -> int:
    """A positive integer from the environment variable `name` when set, else `value`."""
    raw = env.get(name)
    if not raw:
        return value
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


def _env_port(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{name} must be a port number 1-65535, got {value!r}")
    return int(value)


def _check_socket_path(name: str, value: str) -> None:
    """A Unix-domain socket path must fit sockaddr_un (the kernel refuses longer ones at bind/connect)."""
    if value and len(os.fsencode(value)) > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(f"{name} / socketPath: {value!r} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
                          "the limit of a Unix-domain socket path")


def _dmd_tls(path: Path, r: "_Reader", env: Mapping[str, str]) -> dict[str, str] | None:
    """config.json `dmdTls` {cert, key, ca}, each overridden by DMD_TLS_CERT / _KEY / _CA (shared/dmd_tls.py)."""
    tls = dict(r.get("dmdTls", dict, {}, "an object {cert, key, ca}"))
    for name in ("cert", "key", "ca"):
        if env.get(f"DMD_TLS_{name.upper()}"):
            tls[name] = env[f"DMD_TLS_{name.upper()}"]
        if name in tls and not isinstance(tls[name], str):
            raise ConfigError(f"{path}: field 'dmdTls.{name}' must be a path")
    return {k: v for k, v in tls.items() if k in ("cert", "key", "ca") and v} or None


def _health_allow_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """HEALTHCHECK_ALLOW_FROM (ours; HEALTHCHECKS_ALLOWFROM, the reference's name, too): addresses and
    CIDRs, comma-separated, added to healthChecks.allowFrom, so probes from a Docker network pass."""
    items = [item.strip() for name in ("HEALTHCHECK_ALLOW_FROM", "HEALTHCHECKS_ALLOWFROM")
             for item in env.get(name, "").split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"HEALTHCHECK_ALLOW_FROM: {item!r} is not an address or a CIDR") from None
    return tuple(items)


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the Config from the files and the environment (os.environ by default)."""
    env = os.environ if env is None else env
    config_path = _find_file(env.get("S3_CONFIG_FILE") or "config.json")
    location_path = _find_file(env.get("S3_LOCATION_FILE") or "locationConfig.json")
    auth_path = _find_file(env.get("S3AUTH_CONFIG") or "authdata.json")

    r = _Reader(config_path, _read_json(config_path, "config file"))
    mc, dc, md, dd = r.sub("metadataClient"), r.sub("dataClient"), r.sub("metadataDaemon"), r.sub("dataDaemon")
    rest_endpoints = r.get("restEndpoints", dict, {}, "an object of hostname -> location")
    listen_on = list(r.get("listenOn", list, [], "a list of 'ip:port' strings"))
    log_level = r.sub("log").string("logLevel", "info")
    metadata_client = HostPort(mc.string("host", "localhost"), mc.port("port", 9990))
    data_client = HostPort(dc.string("host", "localhost"), dc.port("port", 9991))
    md_bind, dd_bind = md.string("bindAddress", "localhost"), dd.string("bindAddress", "localhost")

    # Environment overrides, as docker-entrypoint.sh applies them.
    for host in filter(None, (h.strip() for h in env.get("ENDPOINT", "").split(","))):
        rest_endpoints = {**rest_endpoints, host: "us-east-1"}
    if env.get("LOG_LEVEL"):
        log_level = env["LOG_LEVEL"]
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL / {config_path} field 'log.logLevel' must be one of {sorted(LOG_LEVELS)}")
    if env.get("LISTEN_ADDR"):
        md_bind = dd_bind = env["LISTEN_ADDR"]
        listen_on = [f"{env['LISTEN_ADDR']}:{r.port('port', 8000)}"]
    if env.get("DATA_HOST"):
        data_client = HostPort(env["DATA_HOST"], data_client.port)
    if env.get("METADATA_HOST"):
        metadata_client = HostPort(env["METADATA_HOST"], metadata_client.port)
    # Extensions of ours (the reference sets ports only in config.json): handy
    # for several dmds on one host and for tests on ephemeral ports.
    if env.get("METADATA_PORT"):
        metadata_client = HostPort(metadata_client.host, _env_port(env, "METADATA_PORT"))
    if env.get("DATA_PORT"):
        data_client = HostPort(data_client.host, _env_port(env, "DATA_PORT"))
    md_socket, dd_socket = md.string("socketPath", ""), dd.string("socketPath", "")
    metadata_client = HostPort(metadata_client.host, metadata_client.port, mc.string("socketPath", ""))
    data_client = HostPort(data_client.host, data_client.port, dc.string("socketPath", ""))
    if METADATA_SOCKET_ENV in env:   # set (even empty: TCP) on both sides, the dmd's and the gateway's
        md_socket = env[METADATA_SOCKET_ENV]
        metadata_client = HostPort(metadata_client.host, metadata_client.port, md_socket)
    if DATA_SOCKET_ENV in env:
        dd_socket = env[DATA_SOCKET_ENV]
        data_client = HostPort(data_client.host, data_client.port, dd_socket)
    for name, value in ((METADATA_SOCKET_ENV, md_socket), (DATA_SOCKET_ENV, dd_socket),
                        (METADATA_SOCKET_ENV, metadata_client.socket_path), (DATA_SOCKET_ENV, data_client.socket_path)):
        _check_socket_path(name, value)

    locations = _parse_locations(location_path, _read_json(location_path, "location file"))
    for host, loc in rest_endpoints.items():
        if not isinstance(loc, str) or loc not in locations:
            raise ConfigError(f"{config_path}: field 'restEndpoints.{host}' must name a location of {location_path}")

    if env.get("SCALITY_ACCESS_KEY_ID") and env.get("SCALITY_SECRET_ACCESS_KEY"):
        accounts: tuple[Account, ...] = (Account(
            "CustomAccount", "customaccount1@setbyenv.com", "arn:aws:iam::123456789012:root",
            CUSTOM_ACCOUNT_CANONICAL_ID, "123456789012",
            (AccessKey(env["SCALITY_ACCESS_KEY_ID"], env["SCALITY_SECRET_ACCESS_KEY"]),)),)
    else:
        accounts = _parse_accounts(auth_path, _read_json(auth_path, "auth file"))

    backend = env.get("S3BACKEND", "file")
    if backend not in ("file", "mem"):
        raise ConfigError("S3BACKEND must be 'file' or 'mem'")
    metadata_backend = env.get("S3METADATA", backend)
    data_backend = env.get("S3DATA", "mem" if backend == "mem" else "multiple")
    if data_backend == "scality":
        data_backend = "multiple"
    if metadata_backend not in ("file", "mem", "postgres"):
        raise ConfigError("S3METADATA must be 'file', 'mem' or 'postgres'")
    metadata_url = env.get("S3METADATA_URL") or mc.string("url", "")
    if metadata_backend == "postgres" and not metadata_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("S3METADATA=postgres needs S3METADATA_URL (or metadataClient.url), "
                          "a postgresql:// connection string")
    if data_backend not in ("file", "mem", "multiple"):
        raise ConfigError("S3DATA must be 'file', 'mem' or 'multiple'")

    metrics_port = r.port("metricsPort", 8002)
    metrics_listen_on = [_listen_address(config_path, item, f"metricsListenOn[{i}]") for i, item in
                         enumerate(r.get("metricsListenOn", list, [], "a list of 'ip:port' strings"))]
    if env.get("METRICS_PORT") is not None:   # ours: tests and several gateways on one host; 0 = none
        value = env["METRICS_PORT"]
        if not value.isdigit() or int(value) > 65535:
            raise ConfigError(f"METRICS_PORT must be a port number 0-65535 (0: none), got {value!r}")
        metrics_port = int(value)
        metrics_listen_on = [(host, metrics_port) for host, _ in metrics_listen_on] if metrics_port else []

    cert = r.get("certFilePaths", dict, None, "an object {key, cert, ca?}")
    if cert is not None and not (cert.get("key") and cert.get("cert")):
        raise ConfigError(f"{config_path}: field 'certFilePaths' needs both 'key' and 'cert'")

    config = Config(
        port=r.port("port", 8000),
        listen_on=tuple(listen_on),
        metrics_port=metrics_port,
        metrics_listen_on=tuple(metrics_listen_on),
        replication_group_id=r.string("replicationGroupId", DEFAULT_REPLICATION_GROUP_ID),
        rest_endpoints=dict(rest_endpoints),
        website_endpoints=tuple(r.get("websiteEndpoints", list, [], "a list of hostnames")),
        workers=r.positive("clusters", 1),
        log_level=log_level,
        health_checks_allow_from=tuple(r.sub("healthChecks").get("allowFrom", list, ["127.0.0.1/8", "::1"], "a list"))
        + _health_allow_from_env(env),
        metadata_client=metadata_client,
        data_client=data_client,
        call_timeout_ms=mc.positive("callTimeoutMs", DEFAULT_CALL_TIMEOUT_MS),
        retry_window_ms=_positive_override(env, "S3_RETRY_WINDOW_MS",
                                           mc.positive("retryWindowMs", DEFAULT_RETRY_WINDOW_MS)),
        metadata_daemon=MetadataDaemonConfig(
            md_bind, md.port("port", 9990),
            md.positive("streamMaxPendingAck", DEFAULT_STREAM_MAX_PENDING_ACK),
            md.positive("streamAckTimeoutMs", DEFAULT_STREAM_ACK_TIMEOUT_MS),
            md.positive("writeBatchMaxOps", DEFAULT_WRITE_BATCH_MAX_OPS), md_socket),
        data_daemon=DataDaemonConfig(dd_bind, dd.port("port", 9991), dd_socket),
        locations=locations,
        accounts=accounts,
        metadata_backend=metadata_backend,
        metadata_url=metadata_url,
        data_backend=data_backend,
        data_path=env.get("S3DATAPATH") or str(REPO_ROOT / "localData"),
        metadata_path=env.get("S3METADATAPATH") or str(REPO_ROOT / "localMetadata"),
        data_no_sync=_env_bool(env, "S3DATA_NOSYNC"),
        cert_file_paths=cert,
        dmd_tls=_dmd_tls(config_path, r, env),
        version_id_encoding=env.get("S3_VERSION_ID_ENCODING_TYPE", "hex") or "hex",
        dmd_secret=_dmd_secret(config_path, r, env),
        max_request_header_bytes=_positive_override(env, "S3_MAX_REQUEST_HEADER_BYTES",
                                                    r.positive("maxRequestHeaderBytes", DEFAULT_MAX_REQUEST_HEADER_BYTES)),
        request_body_timeout_ms=_positive_override(env, "S3_REQUEST_BODY_TIMEOUT_MS",
                                                   r.positive("requestBodyTimeoutMs", DEFAULT_REQUEST_BODY_TIMEOUT_MS)),
        bucket_defaults=_bucket_defaults(config_path, r),
        kms_path=env.get("S3KMSPATH") or r.sub("kms").string("path", ""),
        sse_customer_keys_over_http=r.get("sseCustomerKeysOverHttp", bool, False, "a boolean"),
        default_bucket_encryption=r.get("defaultBucketEncryption", bool, False, "a boolean"),
        lifecycle_day_seconds=_positive_override(env, "LIFECYCLE_DAY_SECONDS",
                                                 r.sub("lifecycle").positive("dayInSeconds", 86400)),
        lifecycle_interval_seconds=_positive_override(env, "LIFECYCLE_INTERVAL_SECONDS",
                                                      r.sub("lifecycle").positive("intervalSeconds", 3600)),
        # RECORDLOG_ENABLED (any non-empty value) turns it on, as the reference's docker-entrypoint.sh.
        record_log_enabled=bool(env.get("RECORDLOG_ENABLED")) or r.sub("recordLog").get("enabled", bool, False,
                                                                                          "a boolean"),
        record_log_name=_record_log_name(config_path, r.sub("recordLog")),
        config_file=str(config_path),
        location_file=str(location_path),
        auth_file=str(auth_path),
    )
    return config
