"""gateway.checksums: known values, incremental = one-shot, multipart composite and CRC combine."""
from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from botocore.httpchecksum import Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import checksums
from gateway.checksums import (
    ALGORITHMS,
    algorithm_from_header,
    b64,
    checksum_b64,
    combine_crc,
    composite,
    decode_b64_digest,
    full_object_crc,
    header_name,
    new_hasher,
)

CHECK_INPUT = b"123456789"  # the standard CRC catalogue check string


@pytest.mark.parametrize("algorithm, expected_hex", [
    ("CRC32", "cbf43926"),
    ("CRC32C", "e3069283"),
    ("CRC64NVME", "ae8b14860a799888"),
    ("SHA1", hashlib.sha1(CHECK_INPUT).hexdigest()),
    ("SHA256", hashlib.sha256(CHECK_INPUT).hexdigest()),
])
def test_check_string_gives_the_catalogue_value(algorithm: str, expected_hex: str) -> None:
    hasher = new_hasher(algorithm)
    hasher.update(CHECK_INPUT)
    assert hasher.digest().hex() == expected_hex


def test_empty_input_values() -> None:
    assert checksum_b64("CRC32", b"") == "AAAAAA=="
    assert checksum_b64("CRC32C", b"") == "AAAAAA=="
    assert checksum_b64("CRC64NVME", b"") == "AAAAAAAAAAA="
    assert checksum_b64("SHA256", b"") == b64(hashlib.sha256(b"").digest())


def test_pure_python_crc64nvme_matches_bytewise_reference() -> None:
    # An independent bit-at-a-time implementation of the spec (reflected poly, all-ones init/xorout).
    def reference(data: bytes) -> int:
        crc = 0xFFFFFFFFFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFFFFFFFFFF

    data = bytes(range(256)) * 3 + b"tail!"
    register = checksums._crc64nvme_update(0xFFFFFFFFFFFFFFFF, data) ^ 0xFFFFFFFFFFFFFFFF
    assert register == reference(data)


@pytest.mark.parametrize("algorithm, botocore_cls", [
    ("CRC32", Crc32Checksum), ("SHA1", Sha1Checksum), ("SHA256", Sha256Checksum),
])
def test_base64_form_matches_what_botocore_sends(algorithm: str, botocore_cls: type) -> None:
    data = b"Hello, S3 checksums" * 1000
    reference = botocore_cls()
    reference.update(data)
    assert checksum_b64(algorithm, data) == reference.b64digest()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=6))
def test_incremental_updates_equal_one_shot(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for algorithm in ALGORITHMS:
        hasher = new_hasher(algorithm)
        for start, end in zip(points, points[1:]):
            hasher.update(memoryview(data)[start:end])
        assert b64(hasher.digest()) == checksum_b64(algorithm, data), algorithm


def test_header_names_round_trip() -> None:
    for algorithm in ALGORITHMS:
        assert algorithm_from_header(header_name(algorithm).upper()) == algorithm
    assert header_name("CRC64NVME") == "x-amz-checksum-crc64nvme"
    assert algorithm_from_header("x-amz-checksum-type") is None
    assert algorithm_from_header("x-amz-checksum-md5") is None
    assert algorithm_from_header("content-md5") is None


def test_decode_b64_digest_rejects_bad_base64_and_wrong_sizes() -> None:
    assert decode_b64_digest("CRC32", "AAAAAA==") == b"\0\0\0\0"
    assert decode_b64_digest("CRC32", "AAAAAAAAAAA=") is None  # 8 bytes for a 4-byte CRC
    assert decode_b64_digest("CRC32", "not base64!") is None
    assert decode_b64_digest("SHA256", b64(b"x" * 31)) is None


def test_composite_is_the_hash_of_the_concatenated_part_digests() -> None:
    parts = [b"a" * 100, b"b" * 50, b"c"]
    for algorithm in ALGORITHMS:
        digests = [base64.b64decode(checksum_b64(algorithm, p)) for p in parts]
        expected = checksum_b64(algorithm, b"".join(digests)) + "-3"
        assert composite(algorithm, digests) == expected


def test_composite_crc32_known_value() -> None:
    # Two parts whose CRC32s are zlib values: the composite is CRC32 over their 8 big-endian bytes.
    d1 = zlib.crc32(b"part one").to_bytes(4, "big")
    d2 = zlib.crc32(b"part two").to_bytes(4, "big")
    expected = base64.b64encode(zlib.crc32(d1 + d2).to_bytes(4, "big")).decode()
    assert composite("CRC32", [d1, d2]) == f"{expected}-2"


def test_composite_rejects_a_digest_of_the_wrong_size() -> None:
    with pytest.raises(ValueError):
        composite("CRC32", [b"\0" * 8])


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_crc_combine_equals_crc_of_concatenation(a: bytes, b: bytes) -> None:
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME"):
        def crc(data: bytes) -> int:
            hasher = new_hasher(algorithm)
            hasher.update(data)
            return int.from_bytes(hasher.digest(), "big")
        assert combine_crc(algorithm, crc(a), crc(b), len(b)) == crc(a + b), algorithm


def test_full_object_crc_of_parts_equals_crc_of_whole_object() -> None:
    parts = [bytes([i]) * (1000 + i * 37) for i in range(5)]
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME"):
        digests = [(base64.b64decode(checksum_b64(algorithm, p)), len(p)) for p in parts]
        assert full_object_crc(algorithm, digests) == checksum_b64(algorithm, b"".join(parts))
    with pytest.raises(ValueError):
        full_object_crc("SHA256", [])


def test_parse_multipart_value_takes_both_forms_and_rejects_malformed_values() -> None:
    digest = hashlib.sha256(b"x").digest()
    value = b64(digest)
    assert checksums.parse_multipart_value("SHA256", value) == (digest, None)
    assert checksums.parse_multipart_value("SHA256", f" {value}-3 ") == (digest, 3)
    for bad in (f"{value}-", f"{value}-0", f"{value}-x", f"{value}-1-2", f"{value}--1", "AAAA-1", "", "-3"):
        assert checksums.parse_multipart_value("SHA256", bad) is None, bad
    assert checksums.parse_multipart_value("CRC32", "WgDhBQ==") == (bytes.fromhex("5a00e105"), None)


def test_full_object_crc_of_the_abc_parts_is_zlibs_crc_of_the_whole() -> None:
    # Three 5 MiB parts of b"A", b"B", b"C": the FULL_OBJECT value a client computes over the whole object.
    part = 5 * 1024 * 1024
    parts = [bytes([c]) * part for c in b"ABC"]
    crc32_whole = zlib.crc32(b"".join(parts)).to_bytes(4, "big")
    assert b64(crc32_whole) == "WgDhBQ=="
    for algorithm, expected in (("CRC32", "WgDhBQ=="), ("CRC32C", "xU+Krw=="), ("CRC64NVME", "i+6LR0y3eFo=")):
        digests = [(base64.b64decode(checksum_b64(algorithm, p)), part) for p in parts]
        assert full_object_crc(algorithm, digests) == expected, algorithm
