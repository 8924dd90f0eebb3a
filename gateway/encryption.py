"""The at-rest format of encrypted object bytes, and the data key of each blob.

A blob of an encrypted object is its plaintext cut in 64 KiB chunks, each sealed with
AES-256-GCM (`cryptography`, OpenSSL) under the blob's own random data key:

    chunk i  ->  ciphertext (same length as the plaintext chunk) + 16-byte tag
    nonce    =   8-byte random prefix of the blob || i as 4 bytes big-endian
    AAD      =   0x01 for the blob's last chunk, 0x00 for the others

so a blob of n plaintext bytes holds n + 16 * max(1, ceil(n / 64 KiB)) bytes (an empty
blob is one sealed empty chunk). A range of the plaintext is read by fetching and
opening only the chunks it touches; a flipped, swapped, dropped or appended chunk fails
its tag (the last-chunk flag catches a blob cut at a chunk boundary), and the read fails
rather than return wrong bytes.

Each location record of an encrypted blob carries what opening it needs (besides the
customer's key for SSE-C): `sseCryptoScheme`, the wrapped data key `sseDataKey` with the
KMS key id `sseKeyId` (SSE-S3, SSE-KMS; and `sseContext`, the request's encryption context)
or `sseCustomerKey: true` (SSE-C: the data key is wrapped under the customer's key, which
is never stored), the nonce prefix `sseNonce`, and `storedSize`. The record's `size` stays
the plaintext size, so offsets, part ranges and listings are unchanged.
"""
from __future__ import annotations

import abc
import base64
import logging
import os
from typing import Any, AsyncIterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.kms import KMS, KMSError
from shared.errors import S3Error
from shared.log import get_logger, log_event

log = get_logger("gateway")

SCHEME = "AES256-GCM-64K"
CHUNK_BYTES = 64 * 1024
TAG_BYTES = 16
SEALED_CHUNK_BYTES = CHUNK_BYTES + TAG_BYTES
NONCE_PREFIX_BYTES = 8
_AAD_MORE, _AAD_LAST = b"\x00", b"\x01"
_CUSTOMER_WRAP_AAD = b"pys3 sse-c data key"
_WRAP_NONCE_BYTES = 12

# Location record fields (see the module docstring).
F_SCHEME = "sseCryptoScheme"
F_KEY_ID = "sseKeyId"
F_DATA_KEY = "sseDataKey"
F_CUSTOMER = "sseCustomerKey"
F_CONTEXT = "sseContext"
F_NONCE = "sseNonce"
F_STORED_SIZE = "storedSize"


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_BYTES))


def stored_size(size: int) -> int:
    """Bytes stored for `size` plaintext bytes."""
    return size + TAG_BYTES * chunk_count(size)


def is_encrypted(loc: dict[str, Any]) -> bool:
    return loc.get(F_SCHEME) == SCHEME


def needs_customer_key(loc: dict[str, Any]) -> bool:
    return is_encrypted(loc) and bool(loc.get(F_CUSTOMER))


def blob_size(loc: dict[str, Any]) -> int | None:
    """The size of the blob a location names (its stored size when encrypted)."""
    size = loc.get(F_STORED_SIZE) if is_encrypted(loc) else loc.get("size")
    return int(size) if isinstance(size, (int, str)) and str(size).isdigit() else None


def stored_range(loc: dict[str, Any], lo: int, hi: int) -> tuple[int, int]:
    """The stored bytes (inclusive) holding plaintext bytes lo..hi of an encrypted blob."""
    size = int(loc.get("size", 0))
    first = (lo // CHUNK_BYTES) * SEALED_CHUNK_BYTES
    last = min((hi // CHUNK_BYTES + 1) * SEALED_CHUNK_BYTES, stored_size(size)) - 1
    return first, last


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


# ---------------------------------------------------------------- data keys

class KeySource(abc.ABC):
    """Where the data key of each new blob comes from (one new key per blob)."""

    #: the blob's ETag is the MD5 of what is stored, not of the plaintext (AWS: SSE-KMS and SSE-C)
    etag_of_stored_bytes: bool = False

    @abc.abstractmethod
    def new_data_key(self) -> tuple[bytes, dict[str, Any]]:
        """(a new data key, the location fields that let a reader recover it)."""


class KmsKeys(KeySource):
    """SSE-S3 and SSE-KMS: data keys wrapped under a KMS master key."""

    def __init__(self, kms: KMS, key_id: str, context: bytes = b"", *, etag_of_stored_bytes: bool = False):
        self.kms, self.key_id, self.context = kms, key_id, context
        self.etag_of_stored_bytes = etag_of_stored_bytes

    def new_data_key(self) -> tuple[bytes, dict[str, Any]]:
        data_key, wrapped = self.kms.generate_data_key(self.key_id, self.context)
        fields: dict[str, Any] = {F_KEY_ID: self.key_id, F_DATA_KEY: wrapped}
        if self.context:
            fields[F_CONTEXT] = base64.b64encode(self.context).decode()
        return data_key, fields


class CustomerKeys(KeySource):
    """SSE-C: data keys wrapped under the customer's key (never stored)."""

    etag_of_stored_bytes = True

    def __init__(self, customer_key: bytes):
        self.customer_key = customer_key

    def new_data_key(self) -> tuple[bytes, dict[str, Any]]:
        data_key = os.urandom(32)
        nonce = os.urandom(_WRAP_NONCE_BYTES)
        sealed = AESGCM(self.customer_key).encrypt(nonce, data_key, _CUSTOMER_WRAP_AAD)
        return data_key, {F_CUSTOMER: True, F_DATA_KEY: base64.b64encode(nonce + sealed).decode()}


def encryption_fields(data_fields: dict[str, Any], nonce_prefix: bytes, size: int) -> dict[str, Any]:
    """The location fields of a blob of `size` plaintext bytes sealed with these key fields."""
    return {F_SCHEME: SCHEME, **data_fields, F_NONCE: base64.b64encode(nonce_prefix).decode(),
            F_STORED_SIZE: stored_size(size)}


def _integrity_failure(what: str, detail: str) -> S3Error:
    log_event(log, logging.ERROR, "encrypted object data failed its integrity check", blob=what, detail=detail)
    return S3Error("InternalError", "The object's stored data failed its integrity check")


def data_key_of(loc: dict[str, Any], kms: KMS, customer_key: bytes | None) -> bytes:
    """The data key of an encrypted location. SSE-C: `customer_key` must be the one it was
    written with (AccessDenied otherwise; InvalidRequest without one)."""
    wrapped = str(loc.get(F_DATA_KEY, ""))
    if loc.get(F_CUSTOMER):
        if customer_key is None:
            raise S3Error("InvalidRequest", "The object was stored using a form of Server Side Encryption. "
                          "The correct parameters must be provided to retrieve the object.")
        try:
            raw = base64.b64decode(wrapped, validate=True)
            return AESGCM(customer_key).decrypt(raw[:_WRAP_NONCE_BYTES], raw[_WRAP_NONCE_BYTES:], _CUSTOMER_WRAP_AAD)
        except (InvalidTag, ValueError):
            raise S3Error("AccessDenied") from None
    context = base64.b64decode(loc[F_CONTEXT]) if loc.get(F_CONTEXT) else b""
    try:
        return kms.unwrap(str(loc.get(F_KEY_ID, "")), wrapped, context)
    except KMSError as exc:
        raise _integrity_failure(str(loc.get("key")), str(exc)) from None


def nonce_prefix_of(loc: dict[str, Any]) -> bytes:
    prefix = base64.b64decode(str(loc.get(F_NONCE, "")))
    if len(prefix) != NONCE_PREFIX_BYTES:
        raise _integrity_failure(str(loc.get("key")), "bad nonce prefix in the location record")
    return prefix


# ---------------------------------------------------------------- streams

def new_nonce_prefix() -> bytes:
    return os.urandom(NONCE_PREFIX_BYTES)


async def encrypt_stream(chunks: AsyncIterator[bytes], data_key: bytes, prefix: bytes) -> AsyncIterator[bytes]:
    """The sealed form of the bytes `chunks` yields (memory: one input piece plus one chunk).
    Whole chunks are sealed straight from the input piece; only a chunk straddling two pieces
    is copied (the last 1..64 KiB are held back: the last chunk is flagged)."""
    aead = AESGCM(data_key)
    carry = b""          # 0..CHUNK_BYTES bytes not sealed yet
    index = 0
    async for piece in chunks:
        if not piece:
            continue
        if len(carry) + len(piece) <= CHUNK_BYTES:
            carry += piece
            continue
        view = memoryview(piece)
        out: list[bytes] = []
        pos = 0
        if carry:
            pos = CHUNK_BYTES - len(carry)
            out.append(aead.encrypt(_nonce(prefix, index), carry + view[:pos], _AAD_MORE))
            index += 1
        count = (len(piece) - pos - 1) // CHUNK_BYTES   # keep 1..CHUNK_BYTES bytes back
        for _ in range(count):
            out.append(aead.encrypt(_nonce(prefix, index), view[pos:pos + CHUNK_BYTES], _AAD_MORE))
            pos += CHUNK_BYTES
            index += 1
        carry = bytes(view[pos:])
        view.release()
        yield out[0] if len(out) == 1 else b"".join(out)
    yield aead.encrypt(_nonce(prefix, index), carry, _AAD_LAST)


async def decrypt_stream(stored: AsyncIterator[bytes], data_key: bytes, prefix: bytes, size: int,
                         first: int, last: int, what: str) -> AsyncIterator[bytes]:
    """Plaintext bytes first..last (inclusive) of an encrypted blob of `size` plaintext bytes,
    from `stored`: its stored bytes from the start of the chunk holding `first` (`stored_range`).
    A chunk that fails its tag, or stored bytes too few or too many, raise InternalError."""
    aead = AESGCM(data_key)
    final = chunk_count(size) - 1
    index, end_index = first // CHUNK_BYTES, last // CHUNK_BYTES
    skip = first - index * CHUNK_BYTES
    remaining = last - first + 1
    carry = b""          # the start of a sealed chunk whose end is in a later piece

    def sealed_length(i: int) -> int:
        return (CHUNK_BYTES if i < final else size - final * CHUNK_BYTES) + TAG_BYTES

    def open_chunk(sealed: Any) -> bytes:
        nonlocal index, skip, remaining
        try:
            plain = aead.decrypt(_nonce(prefix, index), sealed, _AAD_LAST if index == final else _AAD_MORE)
        except InvalidTag:
            raise _integrity_failure(what, f"chunk {index} fails authentication") from None
        index += 1
        if skip:
            plain, skip = plain[skip:], 0
        if len(plain) > remaining:
            plain = plain[:remaining]
        remaining -= len(plain)
        return plain

    try:
        async for piece in stored:
            if not piece:
                continue
            if index > end_index:
                raise _integrity_failure(what, "more stored bytes than its size accounts for")
            view = memoryview(piece)
            out: list[bytes] = []
            pos = 0
            if carry:
                need = sealed_length(index) - len(carry)
                if len(piece) < need:
                    carry += piece
                    continue
                out.append(open_chunk(carry + view[:need]))
                carry, pos = b"", need
            while index <= end_index and len(piece) - pos >= sealed_length(index):
                n = sealed_length(index)
                out.append(open_chunk(view[pos:pos + n]))
                pos += n
            if pos < len(piece):
                if index > end_index:
                    raise _integrity_failure(what, "more stored bytes than its size accounts for")
                carry = bytes(view[pos:])
            view.release()
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
    finally:
        await stored.aclose()   # type: ignore[attr-defined]
    if index <= end_index:
        raise _integrity_failure(what, f"stored data ends inside chunk {index}")
