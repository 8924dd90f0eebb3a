"""VerifiedBody on large bodies (issue 18): digests computed in batches in a worker thread stay
exact and in order, and the last byte is let through only once the whole body is verified, so a
consumer that stops pulling once it has every byte (aiohttp sending a sized body to the dmd)
still finds the body complete, and a body failing verification never reaches the store whole."""
from __future__ import annotations

import base64
import hashlib
import os
from typing import AsyncIterator

import pytest

from gateway import checksums
from gateway.auth.payload import HASH_BATCH_BYTES, VerifiedBody
from tests.unit.test_payload import plain_auth, trailer_headers, unsigned_trailer_wire

# Several hashing batches, an odd tail, uneven network pieces.
BIG = os.urandom(3 * HASH_BATCH_BYTES + 12345)
STEP = 65536 + 13


async def pieces(data: bytes, step: int = STEP) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]
    yield b""   # Starlette ends request.stream() with an empty chunk


async def take_exactly(body: VerifiedBody, count: int) -> bytes:
    """What a sized consumer does: read `count` bytes, then stop without pulling the end."""
    out: list[bytes] = []
    got = 0
    it = body.__aiter__()
    while got < count:
        piece = await it.__anext__()
        out.append(piece)
        got += len(piece)
    return b"".join(out)


def big_headers(**extra: str) -> dict[str, str]:
    return {"content-length": str(len(BIG)), **extra}


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256"])
async def test_a_body_of_many_batches_has_exact_digests(algorithm: str) -> None:
    sha = hashlib.sha256(BIG).hexdigest()
    md5 = base64.b64encode(hashlib.md5(BIG).digest()).decode()
    name = checksums.header_name(algorithm)
    value = checksums.checksum_b64(algorithm, BIG)
    body = VerifiedBody(plain_auth("sha256", sha), big_headers(**{"content-md5": md5, name: value}), pieces(BIG))
    out = [p async for p in body]
    assert b"".join(out) == BIG
    assert body.complete and body.size == len(BIG)
    assert body.md5_hex == hashlib.md5(BIG).hexdigest()
    assert body.checksum == (algorithm, value)


async def test_a_consumer_holding_every_byte_finds_the_body_verified() -> None:
    value = checksums.checksum_b64("CRC32", BIG)
    body = VerifiedBody(plain_auth(), big_headers(**{"x-amz-checksum-crc32": value}), pieces(BIG))
    assert await take_exactly(body, len(BIG)) == BIG
    assert body.complete
    assert body.md5_hex == hashlib.md5(BIG).hexdigest()
    assert body.checksum == ("CRC32", value)


async def test_a_trailer_body_is_verified_before_its_last_byte_is_let_through() -> None:
    wire = unsigned_trailer_wire(BIG, "CRC32C", chunk_size=64 * 1024)
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), trailer_headers("CRC32C", len(BIG)), pieces(wire))
    assert await take_exactly(body, len(BIG)) == BIG
    assert body.complete and body.checksum == ("CRC32C", checksums.checksum_b64("CRC32C", BIG))


@pytest.mark.parametrize("lie", ["content-md5", "sha256", "checksum"])
async def test_a_body_failing_verification_never_yields_its_last_byte(lie: str) -> None:
    other = hashlib.md5(b"other").digest()
    auth = plain_auth("sha256", hashlib.sha256(b"other").hexdigest()) if lie == "sha256" else plain_auth()
    extra = {"content-md5": base64.b64encode(other).decode()} if lie == "content-md5" else {}
    if lie == "checksum":
        extra["x-amz-checksum-crc32"] = checksums.checksum_b64("CRC32", b"other")
    body = VerifiedBody(auth, big_headers(**extra), pieces(BIG))
    received: list[bytes] = []
    with pytest.raises(Exception) as info:
        async for piece in body:
            received.append(piece)
    assert getattr(info.value, "code", None) in ("BadDigest", "XAmzContentSHA256Mismatch")
    assert sum(map(len, received)) < len(BIG)
    assert not body.complete
