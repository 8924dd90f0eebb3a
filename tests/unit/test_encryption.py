"""The chunked AES-256-GCM format of gateway/encryption.py and the file KMS of gateway/kms.py."""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import AsyncIterator

import pytest

from gateway import encryption as enc
from gateway.kms import FileKMS, KMSError
from shared.errors import S3Error

C = enc.CHUNK_BYTES
SIZES = [0, 1, C - 1, C, C + 1, 3 * C, 3 * C + 17]


async def _pieces(data: bytes, step: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]


def _collect(agen: AsyncIterator[bytes]) -> bytes:
    async def run() -> bytes:
        return b"".join([c async for c in agen])
    return asyncio.run(run())


def _seal(plain: bytes, step: int = 10_000) -> tuple[bytes, bytes, bytes]:
    key, prefix = os.urandom(32), enc.new_nonce_prefix()
    return _collect(enc.encrypt_stream(_pieces(plain, step), key, prefix)), key, prefix


def _open(sealed: bytes, key: bytes, prefix: bytes, size: int, first: int, last: int) -> bytes:
    loc = {"size": size}
    lo, hi = enc.stored_range(loc, first, last)
    return _collect(enc.decrypt_stream(_pieces(sealed[lo:hi + 1], 7_777), key, prefix, size, first, last, "blob"))


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_and_stored_size(size: int) -> None:
    plain = os.urandom(size)
    for step in (1 << 20, 1000, C):
        sealed, key, prefix = _seal(plain, step)
        assert len(sealed) == enc.stored_size(size)
        if size:
            assert _open(sealed, key, prefix, size, 0, size - 1) == plain


@pytest.mark.parametrize("size", [1, C, C + 1, 3 * C + 17])
def test_every_range_opens_only_its_chunks(size: int) -> None:
    plain = os.urandom(size)
    sealed, key, prefix = _seal(plain)
    edges = sorted({0, 1, C - 1, C, C + 1, 2 * C, size - 2, size - 1} & set(range(size)))
    for first in edges:
        for last in edges:
            if first <= last:
                assert _open(sealed, key, prefix, size, first, last) == plain[first:last + 1], (first, last)


def test_tampered_truncated_or_extended_blob_fails() -> None:
    size = 2 * C + 5
    plain = os.urandom(size)
    sealed, key, prefix = _seal(plain)
    flipped = bytearray(sealed)
    flipped[C + 100] ^= 1
    with pytest.raises(S3Error) as err:
        _open(bytes(flipped), key, prefix, size, 0, size - 1)
    assert err.value.code == "InternalError"
    # cut at a chunk boundary: the last-chunk flag is missing
    with pytest.raises(S3Error):
        _collect(enc.decrypt_stream(_pieces(sealed[:2 * enc.SEALED_CHUNK_BYTES], 999), key, prefix, 2 * C,
                                    0, 2 * C - 1, "blob"))
    with pytest.raises(S3Error):
        _open(sealed[:-1], key, prefix, size, 0, size - 1)
    with pytest.raises(S3Error):
        _collect(enc.decrypt_stream(_pieces(sealed + b"x", 999), key, prefix, size, 0, size - 1, "blob"))
    # chunks swapped
    a, b = sealed[:enc.SEALED_CHUNK_BYTES], sealed[enc.SEALED_CHUNK_BYTES:2 * enc.SEALED_CHUNK_BYTES]
    with pytest.raises(S3Error):
        _open(b + a + sealed[2 * enc.SEALED_CHUNK_BYTES:], key, prefix, size, 0, size - 1)


def test_file_kms_keys_files_and_wrapping(tmp_path: Path) -> None:
    path = tmp_path / "kms"
    kms = FileKMS(path)
    default = kms.default_key_id()
    assert FileKMS(path).default_key_id() == default          # another process finds the same default
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    key_file = path / f"{default}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    data_key, wrapped = kms.generate_data_key(default, b"ctx")
    assert data_key.hex() not in key_file.read_text()
    assert FileKMS(path).unwrap(default, wrapped, b"ctx") == data_key
    with pytest.raises(KMSError):
        kms.unwrap(default, wrapped, b"other context")
    second = kms.create_key()
    with pytest.raises(KMSError):
        kms.unwrap(second, wrapped, b"ctx")
    assert FileKMS(path).has_key(second)                       # added keys are found by other processes
    assert FileKMS(path).unwrap(default, wrapped, b"ctx") == data_key   # old keys still decrypt
    with pytest.raises(S3Error) as err:
        kms.wrap("00000000-0000-0000-0000-000000000000", data_key)
    assert err.value.code == "KMS.NotFoundException"


def test_customer_keys_wrong_key_is_access_denied() -> None:
    customer = os.urandom(32)
    data_key, fields = enc.CustomerKeys(customer).new_data_key()
    loc = {**enc.encryption_fields(fields, enc.new_nonce_prefix(), 10), "key": "k", "size": 10}
    assert enc.data_key_of(loc, None, customer) == data_key   # type: ignore[arg-type]
    with pytest.raises(S3Error) as err:
        enc.data_key_of(loc, None, os.urandom(32))   # type: ignore[arg-type]
    assert err.value.code == "AccessDenied"
    with pytest.raises(S3Error) as err:
        enc.data_key_of(loc, None, None)   # type: ignore[arg-type]
    assert err.value.code == "InvalidRequest"
    assert customer.hex() not in str(loc)


def test_encryption_settings_of_config_json(tmp_path: Path) -> None:
    import json

    from shared.config import REPO_ROOT, ConfigError, load_config
    from gateway.kms import kms_path
    shipped = load_config({})
    assert (shipped.sse_customer_keys_over_http, shipped.default_bucket_encryption) == (False, False)
    assert kms_path(shipped) == REPO_ROOT / "localKMS"
    config = json.loads((REPO_ROOT / "config.json").read_text())
    config.update({"sseCustomerKeysOverHttp": True, "defaultBucketEncryption": True, "kms": {"path": "/srv/kms"}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    c = load_config({"S3_CONFIG_FILE": str(path)})
    assert (c.sse_customer_keys_over_http, c.default_bucket_encryption, kms_path(c)) == (True, True, Path("/srv/kms"))
    assert kms_path(load_config({"S3_CONFIG_FILE": str(path), "S3KMSPATH": str(tmp_path)})) == tmp_path
    config["sseCustomerKeysOverHttp"] = "yes"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="sseCustomerKeysOverHttp"):
        load_config({"S3_CONFIG_FILE": str(path)})
