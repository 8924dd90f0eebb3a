"""TLS on the gateway-dmd link (ours: the reference's dmd ports are plain HTTP), for gateways on
other hosts than the dmd's over a network one does not trust.

config.json `"dmdTls": {"cert": ..., "key": ..., "ca": ...}` (paths relative to the repository),
or the variables `DMD_TLS_CERT`, `DMD_TLS_KEY`, `DMD_TLS_CA` (they win; handy in containers):

- the dmd, given `cert` and `key`, serves both its ports (metadata RPC 9990, /DataFile 9991) over
  TLS (and nothing else on them);
- a gateway, given any of them, connects over TLS and verifies the dmd's certificate against `ca`
  (the system's roots without one) and the name it connects to (METADATA_HOST / DATA_HOST, which
  the certificate's subjectAltName must list).

Both ends usually share the same config.json; `DMD_SECRET` stays the authentication.
"""
from __future__ import annotations

import ssl
from pathlib import Path

from shared.config import REPO_ROOT, Config, ConfigError


def _path(config: Config, name: str) -> Path | None:
    value = (config.dmd_tls or {}).get(name)
    if not value:
        return None
    p = Path(value)
    p = p if p.is_absolute() else REPO_ROOT / p
    if not p.is_file():
        raise ConfigError(f"dmdTls.{name} / DMD_TLS_{name.upper()}: no such file {p}")
    return p


def enabled(config: Config) -> bool:
    return bool(config.dmd_tls)


def server_context(config: Config) -> ssl.SSLContext | None:
    """The dmd's context, or None (plain HTTP) when dmdTls has no cert/key."""
    cert, key = _path(config, "cert"), _path(config, "key")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("dmdTls needs both 'cert' and 'key' on the dmd (DMD_TLS_CERT, DMD_TLS_KEY)")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ca = _path(config, "ca")
    if ca is not None:
        ctx.load_verify_locations(ca)   # intermediates of the chain; client certificates are not asked
    return ctx


def client_context(config: Config) -> ssl.SSLContext | None:
    """The gateway's context for the dmd, or None (plain HTTP) without dmdTls."""
    if not enabled(config):
        return None
    ca = _path(config, "ca")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def scheme(ssl_context: ssl.SSLContext | None) -> str:
    return "https" if ssl_context is not None else "http"
