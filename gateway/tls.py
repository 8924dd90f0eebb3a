"""HTTPS on the S3 port: `certFilePaths` from config.json, or `SSL=true` + `ENDPOINT`.

As the reference (CloudServer's `lib/Config.js` and `docker-entrypoint.sh`):

- `certFilePaths: {"key", "cert", "ca"?}` in config.json: the gateway serves HTTPS with that key
  and certificate; `ca` (optional) is loaded too, so the intermediates it holds are sent with the
  certificate (OpenSSL builds the chain from it) and clients that trust only the root verify.
  Relative paths are relative to the repository (`/usr/src/app` in the images).
- `SSL` set to `true` (any case; also `1`/`yes`) with `ENDPOINT` and no `certFilePaths`: at start,
  a CA (`ca.key`, `ca.crt`) and a certificate for the endpoints signed by it (`server.key`,
  `server.crt`, subjectAltName `DNS:<endpoint>` and `DNS:*.<endpoint>`, or `IP:` for an address:
  current clients ignore the CN) are written to `SSL_DIR` (default: the repository root,
  `/usr/src/app/ca.crt` in the images, where the README tells clients to copy the CA from) unless
  they already exist there (a restarted container keeps its CA), and used as `certFilePaths`.
  The reference does the same with `openssl` in its entrypoint; this is `cryptography`.

`uvicorn_ssl_options(config)` gives the keyword arguments of `uvicorn.run` (empty: plain HTTP).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path
from typing import Mapping

from shared.config import REPO_ROOT, Config, ConfigError

CA_CN = "S3 CA Server"
VALID_DAYS = 3650
GENERATED = ("ca.key", "ca.crt", "server.key", "server.crt")


def ssl_requested(env: Mapping[str, str]) -> bool:
    """The reference's entrypoint tests `[[ "$SSL" ]]`; the documented value is `true`/`TRUE`."""
    value = env.get("SSL", "").strip().lower()
    return value not in ("", "false", "0", "no", "off")


def resolve_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def endpoints(env: Mapping[str, str]) -> list[str]:
    return [h.strip() for h in env.get("ENDPOINT", "").split(",") if h.strip()]


def cert_files(config: Config, env: Mapping[str, str] | None = None) -> dict[str, Path] | None:
    """The key/cert/ca the gateway serves with, generating them for SSL=true; None = plain HTTP."""
    env = os.environ if env is None else env
    if config.cert_file_paths:
        files = {name: resolve_path(p) for name, p in config.cert_file_paths.items()
                 if name in ("key", "cert", "ca") and p}
        for name, p in files.items():
            if not p.is_file():
                raise ConfigError(f"{config.config_file}: certFilePaths.{name}: no such file {p}")
        return files
    if not ssl_requested(env):
        return None
    hosts = endpoints(env)
    if not hosts:
        # The reference's entrypoint silently serves plain HTTP then; say why instead.
        raise ConfigError("SSL is set but ENDPOINT is not: the certificate needs the endpoint's name")
    folder = Path(env.get("SSL_DIR") or REPO_ROOT)
    if not all((folder / name).is_file() for name in GENERATED):
        generate(folder, hosts)
        print(f"gateway: SSL: generated a CA and a certificate for {', '.join(hosts)}; "
              f"clients must trust {folder / 'ca.crt'}", file=sys.stderr)
    return {"key": folder / "server.key", "cert": folder / "server.crt", "ca": folder / "ca.crt"}


def uvicorn_ssl_options(config: Config, env: Mapping[str, str] | None = None) -> dict[str, str]:
    files = cert_files(config, env)
    if not files:
        return {}
    options = {"ssl_keyfile": str(files["key"]), "ssl_certfile": str(files["cert"])}
    if "ca" in files:
        options["ssl_ca_certs"] = str(files["ca"])
    return options


def _san(host: str) -> list:
    from cryptography import x509
    try:
        return [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        return [x509.DNSName(host), x509.DNSName(f"*.{host}")]


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate(folder: Path, hosts: list[str]) -> None:
    """A self-signed CA and a server certificate for `hosts`, as the reference's entrypoint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=VALID_DAYS)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_CN)])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(until)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans = [name for host in hosts for name in _san(host)]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    no_pass = serialization.NoEncryption()
    _write(folder / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, no_pass),
           private=True)
    _write(folder / "server.key", key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, no_pass),
           private=True)
    _write(folder / "ca.crt", ca_cert.public_bytes(pem), private=False)
    _write(folder / "server.crt", cert.public_bytes(pem), private=False)   # last: its presence means done
