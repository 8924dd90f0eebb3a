"""Flexible checksums as S3 defines them: incremental hashers, AWS base64 form, multipart forms.

Owns the five algorithms S3 accepts in `x-amz-checksum-*` / `x-amz-sdk-checksum-algorithm`
(CRC32, CRC32C, CRC64NVME, SHA1, SHA256), their header names and digest sizes, the
composite multipart checksum (`<b64 of hash(concat part digests)>-<N>`) and the
full-object CRC of a multipart object (CRC combine, as zlib's `crc32_combine`).

CRC values are the big-endian bytes of the CRC register, base64-encoded (what botocore
sends). CRC32 uses zlib, CRC32C the `crc32c` package; CRC64NVME uses awscrt when it is
installed and otherwise a table-driven pure-Python implementation (correct but slow:
~10 MB/s), which matters only to clients that ask for CRC64NVME explicitly.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from typing import Iterable, Protocol

import crc32c as _crc32c

try:  # optional accelerator; the pure-Python CRC64NVME below is the fallback
    from awscrt import checksums as _crt_checksums  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _crt_checksums = None

ALGORITHMS: tuple[str, ...] = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"
DIGEST_SIZES: dict[str, int] = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}

# Reflected polynomials; init and final xor are all ones for all three CRCs.
_CRC_POLY: dict[str, tuple[int, int]] = {  # algorithm -> (reflected polynomial, width)
    "CRC32": (0xEDB88320, 32),
    "CRC32C": (0x82F63B78, 32),
    "CRC64NVME": (0x9A6C9329AC4BC9B5, 64),
}
CRC_ALGORITHMS = frozenset(_CRC_POLY)


class Hasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def digest(self) -> bytes: ...


def header_name(algorithm: str) -> str:
    """`CRC32` -> `x-amz-checksum-crc32`."""
    return CHECKSUM_HEADER_PREFIX + algorithm.lower()


def algorithm_from_header(name: str) -> str | None:
    """`x-amz-checksum-crc32` -> `CRC32`; None if the name is not a known checksum header."""
    name = name.lower()
    if not name.startswith(CHECKSUM_HEADER_PREFIX):
        return None
    algorithm = name[len(CHECKSUM_HEADER_PREFIX):].upper()
    return algorithm if algorithm in DIGEST_SIZES else None


def normalize_algorithm(value: str) -> str | None:
    """An `x-amz-sdk-checksum-algorithm` / `x-amz-checksum-algorithm` value -> canonical name or None."""
    algorithm = value.strip().upper()
    return algorithm if algorithm in DIGEST_SIZES else None


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def decode_b64_digest(algorithm: str, value: str) -> bytes | None:
    """The raw digest of a client-supplied base64 value, or None if malformed or of the wrong size."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == DIGEST_SIZES[algorithm] else None


# --- CRC64NVME, pure Python (slice-by-8 tables) -------------------------------------------

def _make_crc64_tables() -> list[list[int]]:
    poly = _CRC_POLY["CRC64NVME"][0]
    t0 = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        t0.append(crc)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ t0[prev[i] & 0xFF] for i in range(256)])
    return tables


_CRC64_TABLES = _make_crc64_tables()
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _crc64nvme_update(register: int, data: bytes | bytearray | memoryview) -> int:
    """Advance the (pre-inverted) CRC64NVME register over data."""
    t0, t1, t2, t3, t4, t5, t6, t7 = _CRC64_TABLES
    crc = register
    mv = memoryview(data).cast("B")
    n8 = len(mv) // 8 * 8
    # Eight bytes per iteration: one 64-bit little-endian word xor'ed into the register.
    for (word,) in struct.iter_unpack("<Q", mv[:n8]):
        crc ^= word
        crc = (t7[crc & 0xFF] ^ t6[(crc >> 8) & 0xFF] ^ t5[(crc >> 16) & 0xFF] ^ t4[(crc >> 24) & 0xFF]
               ^ t3[(crc >> 32) & 0xFF] ^ t2[(crc >> 40) & 0xFF] ^ t1[(crc >> 48) & 0xFF] ^ t0[crc >> 56])
    for byte in mv[n8:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class _Crc64Nvme:
    def __init__(self) -> None:
        self._crc = 0  # the public (post-xor) value, as awscrt keeps it

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if _crt_checksums is not None:
            self._crc = _crt_checksums.crc64nvme(bytes(data), self._crc) & _MASK64
        else:
            self._crc = _crc64nvme_update(self._crc ^ _MASK64, data) ^ _MASK64

    def digest(self) -> bytes:
        return self._crc.to_bytes(8, "big")


class _Crc32:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)

    def digest(self) -> bytes:
        return (self._crc & 0xFFFFFFFF).to_bytes(4, "big")


class _Crc32c:
    def __init__(self) -> None:
        self._crc = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._crc = _crc32c.crc32c(bytes(data) if isinstance(data, memoryview) else data, self._crc)

    def digest(self) -> bytes:
        return (self._crc & 0xFFFFFFFF).to_bytes(4, "big")


def new_hasher(algorithm: str) -> Hasher:
    """An incremental hasher for one of ALGORITHMS (ValueError otherwise)."""
    if algorithm == "CRC32":
        return _Crc32()
    if algorithm == "CRC32C":
        return _Crc32c()
    if algorithm == "CRC64NVME":
        return _Crc64Nvme()
    if algorithm == "SHA1":
        return hashlib.sha1()
    if algorithm == "SHA256":
        return hashlib.sha256()
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def checksum_b64(algorithm: str, data: bytes) -> str:
    """The base64 checksum of a whole byte string, as a client would send it."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return b64(hasher.digest())


# --- multipart forms ------------------------------------------------------------------------

def composite(algorithm: str, part_digests: Iterable[bytes]) -> str:
    """COMPOSITE multipart checksum: base64(hash(concat(raw part digests))) + "-<number of parts>"."""
    hasher = new_hasher(algorithm)
    count = 0
    for digest in part_digests:
        if len(digest) != DIGEST_SIZES[algorithm]:
            raise ValueError(f"a {algorithm} part digest is {DIGEST_SIZES[algorithm]} bytes, got {len(digest)}")
        hasher.update(digest)
        count += 1
    return f"{b64(hasher.digest())}-{count}"


def _multmodp(a: int, b: int, poly: int, width: int) -> int:
    """a * b modulo the CRC polynomial, in the reflected bit order (zlib's multmodp)."""
    m = 1 << (width - 1)
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                break
        m >>= 1
        b = (b >> 1) ^ poly if b & 1 else b >> 1
    return p


def _x8nmodp(n: int, poly: int, width: int) -> int:
    """x^(8n) modulo the polynomial: the operator that shifts a CRC over n zero bytes."""
    p = 1 << (width - 1)  # x^0
    square = 1 << (width - 9)  # x^8: bit (width-1-k) holds x^k
    while n:
        if n & 1:
            p = _multmodp(square, p, poly, width)
        n >>= 1
        square = _multmodp(square, square, poly, width)
    return p


def combine_crc(algorithm: str, crc1: int, crc2: int, len2: int) -> int:
    """CRC(A + B) from CRC(A), CRC(B) and len(B), for CRC32 / CRC32C / CRC64NVME."""
    poly, width = _CRC_POLY[algorithm]
    return _multmodp(_x8nmodp(len2, poly, width), crc1, poly, width) ^ crc2


def full_object_crc(algorithm: str, parts: Iterable[tuple[bytes, int]]) -> str:
    """FULL_OBJECT multipart checksum (base64) from each part's (raw CRC digest, length)."""
    if algorithm not in _CRC_POLY:
        raise ValueError(f"FULL_OBJECT checksums exist only for CRC algorithms, not {algorithm}")
    size = DIGEST_SIZES[algorithm]
    total = 0
    for digest, length in parts:
        if len(digest) != size:
            raise ValueError(f"a {algorithm} part digest is {size} bytes, got {len(digest)}")
        total = combine_crc(algorithm, total, int.from_bytes(digest, "big"), length)
    return b64(total.to_bytes(size, "big"))


def parse_multipart_value(algorithm: str, value: str) -> tuple[bytes, int | None] | None:
    """A multipart object checksum as a client states it on CompleteMultipartUpload: `<base64>`
    or, for a composite checksum, `<base64>-<number of parts>`. (raw digest, N or None), or None
    if malformed. (The base64 alphabet has no '-', so the suffix is unambiguous.)"""
    value = value.strip()
    encoded, sep, count = value.partition("-")
    parts: int | None = None
    if sep:
        if not count.isascii() or not count.isdigit() or len(count) > 5 or int(count) < 1:
            return None
        parts = int(count)
    digest = decode_b64_digest(algorithm, encoded)
    return None if digest is None else (digest, parts)
