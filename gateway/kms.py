"""Key management: master keys that wrap the per-object data keys of encrypted objects.

`KMS` is the interface a key manager implements (a file KMS here; a KMIP or AWS KMS client
can be added behind the same four calls). Master keys never leave it: callers get a fresh
data key with its wrapped form (`generate_data_key`), store the wrapped form in the object's
location records, and give it back to unwrap it (`decrypt_data_key`).

The file KMS keeps one file per master key in a directory (config.json `kms.path`, env
`S3KMSPATH`, default `<repo>/localKMS`): `<key id>.key` holds the 32-byte key in hex, mode
0600; the directory is 0700. The file `default` names the key that serves `AES256` (SSE-S3)
and `aws:kms` without a key id. The directory, its first key and `default` are created on
first use; `python -m gateway.tools kms-create-key` adds a key. Keys are never deleted, so
every object stays readable; a key added by another process is found on first use.

Wrapping is AES-256-GCM under the master key, with the key id (and an encryption context,
when the request gave one) as associated data: a wrapped key moved to another key id or
context does not unwrap.
"""
from __future__ import annotations

import abc
import base64
import os
import re
import threading
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import REPO_ROOT, Config
from shared.durable import fsync_dir
from shared.errors import S3Error

DATA_KEY_BYTES = 32               # AES-256
_WRAP_NONCE_BYTES = 12
DEFAULT_KEY_FILE = "default"
KEY_SUFFIX = ".key"
_KEY_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ARN_KEY = re.compile(r"^arn:aws:kms:[^:]*:[^:]*:key/(.+)$")


class KMSError(Exception):
    """A wrapped key that does not unwrap (tampered, or another key's)."""


def key_not_found(key_id: str) -> S3Error:
    return S3Error("KMS.NotFoundException", f"Invalid keyId {key_id}")


def plain_key_id(value: str) -> str:
    """The key id of a KMS key id or key ARN (arn:aws:kms:region:account:key/<id>)."""
    m = _ARN_KEY.match(value.strip())
    return m.group(1) if m else value.strip()


class KMS(abc.ABC):
    """A key manager (see the module docstring)."""

    @abc.abstractmethod
    def default_key_id(self) -> str:
        """The key serving SSE-S3 and aws:kms without a key id."""

    @abc.abstractmethod
    def has_key(self, key_id: str) -> bool:
        """Whether a master key of that id exists."""

    @abc.abstractmethod
    def create_key(self) -> str:
        """Make a new master key; its id."""

    @abc.abstractmethod
    def wrap(self, key_id: str, data_key: bytes, context: bytes = b"") -> str:
        """`data_key` wrapped under master key `key_id` (text, stored in metadata)."""

    @abc.abstractmethod
    def unwrap(self, key_id: str, wrapped: str, context: bytes = b"") -> bytes:
        """The data key of `wrap`; KMSError when it does not unwrap, S3 KMS.NotFoundException for
        an unknown key."""

    def generate_data_key(self, key_id: str, context: bytes = b"") -> tuple[bytes, str]:
        """(a new random data key, its wrapped form)."""
        data_key = os.urandom(DATA_KEY_BYTES)
        return data_key, self.wrap(key_id, data_key, context)


class FileKMS(KMS):
    """Master keys in files of one directory (see the module docstring). Safe for several
    processes sharing the directory: files are created exclusively and never rewritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._keys: dict[str, bytes] = {}
        self._default: str | None = None
        self._lock = threading.Lock()

    # --- files ----------------------------------------------------------------------------------
    def _ensure_dir(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _write_exclusive(self, name: str, text: str) -> bool:
        """Create file `name` with `text`, mode 0600, durably (file and folder synced: a lost key
        is lost data); False when it exists already. Readers never see a partial file: it is
        written under a temporary name and linked into place."""
        target = self.path / name
        tmp = self.path / f".{name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)   # atomic, fails if the name exists
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(self.path)
        return True

    def _load(self, key_id: str) -> bytes | None:
        key = self._keys.get(key_id)
        if key is not None:
            return key
        if not _KEY_ID.match(key_id):
            return None
        try:
            text = (self.path / f"{key_id}{KEY_SUFFIX}").read_text().strip()
            key = bytes.fromhex(text)
        except (OSError, ValueError):
            return None
        if len(key) != DATA_KEY_BYTES:
            return None
        self._keys[key_id] = key
        return key

    # --- KMS ------------------------------------------------------------------------------------
    def create_key(self) -> str:
        self._ensure_dir()
        key_id = str(uuid.uuid4())
        self._write_exclusive(f"{key_id}{KEY_SUFFIX}", os.urandom(DATA_KEY_BYTES).hex() + "\n")
        return key_id

    def default_key_id(self) -> str:
        if self._default is not None:
            return self._default
        with self._lock:
            default_file = self.path / DEFAULT_KEY_FILE
            if not default_file.exists():
                created = self.create_key()
                if not self._write_exclusive(DEFAULT_KEY_FILE, created + "\n"):
                    pass   # another process made the default first; our key stays, unused
            key_id = default_file.read_text().strip()
            if self._load(key_id) is None:
                raise RuntimeError(f"{default_file} names key {key_id!r}, which {self.path} does not hold")
            self._default = key_id
            return key_id

    def has_key(self, key_id: str) -> bool:
        return self._load(key_id) is not None

    def _master(self, key_id: str) -> AESGCM:
        key = self._load(key_id)
        if key is None:
            raise key_not_found(key_id)
        return AESGCM(key)

    def wrap(self, key_id: str, data_key: bytes, context: bytes = b"") -> str:
        nonce = os.urandom(_WRAP_NONCE_BYTES)
        sealed = self._master(key_id).encrypt(nonce, data_key, key_id.encode() + b"\0" + context)
        return base64.b64encode(nonce + sealed).decode()

    def unwrap(self, key_id: str, wrapped: str, context: bytes = b"") -> bytes:
        master = self._master(key_id)
        try:
            raw = base64.b64decode(wrapped, validate=True)
            return master.decrypt(raw[:_WRAP_NONCE_BYTES], raw[_WRAP_NONCE_BYTES:], key_id.encode() + b"\0" + context)
        except (InvalidTag, ValueError) as exc:
            raise KMSError(f"the data key wrapped under {key_id} does not unwrap") from exc


def kms_path(config: Config) -> Path:
    path = Path(config.kms_path) if config.kms_path else REPO_ROOT / "localKMS"
    return path if path.is_absolute() else REPO_ROOT / path


_instances: dict[str, KMS] = {}


def kms_for(config: Config) -> KMS:
    """The process's KMS of this configuration (one per key directory)."""
    path = kms_path(config)
    kms = _instances.get(str(path))
    if kms is None:
        kms = _instances[str(path)] = FileKMS(path)
    return kms
