"""gateway.auth.payload.VerifiedBody: plain bodies with SHA-256 / Content-MD5 / flexible checksums,
aws-chunked bodies with chunk signatures (AWS's example), unsigned and signed trailers, and
every malformed or lying body a client can send."""
from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from datetime import datetime, timezone
from typing import AsyncIterator

import pytest
from botocore.httpchecksum import AwsChunkedWrapper
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import checksums
from gateway.auth import AuthRequest, AuthResult, StreamingContext, authenticate
from gateway.auth.payload import MAX_SIGNED_CHUNK_SIZE, VerifiedBody
from shared.config import AccessKey, Account, Config
from shared.errors import S3Error

EXAMPLE_ACCOUNT = Account("example", "e@example.com", "arn", "canonical", "1",
                          (AccessKey("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),))
EXAMPLE_CONFIG = Config(accounts=(EXAMPLE_ACCOUNT,))
EXAMPLE_TIME = datetime(2013, 5, 24, 0, 1, tzinfo=timezone.utc)
EXAMPLE_SIGS = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]
EXAMPLE_DATA = b"a" * 66560


def example_auth() -> tuple[AuthResult, AuthRequest]:
    headers = [
        ("host", "s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"), ("content-length", "66824"),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
         "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
         "x-amz-decoded-content-length;x-amz-storage-class,"
         "Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")]
    req = AuthRequest("PUT", "/examplebucket/chunkObject.txt", "", headers)
    return authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME), req


def example_wire(sigs: list[str] = EXAMPLE_SIGS) -> bytes:
    return (f"10000;chunk-signature={sigs[0]}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={sigs[1]}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={sigs[2]}\r\n\r\n".encode())


async def pieces(data: bytes, step: int = 7000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i:i + step]
    yield b""  # Starlette ends request.stream() with an empty chunk


async def drain(body: VerifiedBody, received: list[bytes] | None = None) -> bytes:
    out = received if received is not None else []
    async for piece in body:
        out.append(piece)
    return b"".join(out)


async def expect_body_error(code: str, body: VerifiedBody, received: list[bytes] | None = None) -> S3Error:
    with pytest.raises(S3Error) as info:
        await drain(body, received)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


def plain_auth(mode: str = "unsigned", sha: str | None = None) -> AuthResult:
    return AuthResult(EXAMPLE_ACCOUNT, "AKIAIOSFODNN7EXAMPLE", "v4-header", mode, sha, None)


def headers(**values: str) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in values.items()}


# --- aws-chunked with chunk signatures (AWS's example) -----------------------------------------------

async def test_aws_chunked_example_decodes_and_verifies_every_chunk() -> None:
    auth, req = example_auth()
    body = VerifiedBody(auth, req, pieces(example_wire()))
    assert body.expected_size == 66560
    assert await drain(body) == EXAMPLE_DATA
    assert body.complete and body.size == 66560
    assert body.md5_hex == hashlib.md5(EXAMPLE_DATA).hexdigest()
    assert body.checksum is None


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=1, max_value=70000))
async def test_aws_chunked_example_decodes_whatever_the_network_split(step: int) -> None:
    auth, req = example_auth()
    assert await drain(VerifiedBody(auth, req, pieces(example_wire(), step))) == EXAMPLE_DATA


@pytest.mark.parametrize("bad_index", [0, 1, 2])
async def test_a_wrong_chunk_signature_stops_the_body_before_that_chunk(bad_index: int) -> None:
    auth, req = example_auth()
    sigs = list(EXAMPLE_SIGS)
    sigs[bad_index] = sigs[bad_index][:-1] + ("0" if sigs[bad_index][-1] != "0" else "1")
    received: list[bytes] = []
    await expect_body_error("SignatureDoesNotMatch", VerifiedBody(auth, req, pieces(example_wire(sigs))), received)
    # Bytes of the chunk with the bad signature are never handed on, nor the body's last bytes
    # before the final chunk is verified (issue 18: the last byte waits for the whole verification).
    assert len(b"".join(received)) == [0, 65536, 65536][bad_index]


async def test_chunks_reordered_break_the_signature_chain() -> None:
    auth, req = example_auth()
    wire = (f"400;chunk-signature={EXAMPLE_SIGS[1]}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"10000;chunk-signature={EXAMPLE_SIGS[0]}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"0;chunk-signature={EXAMPLE_SIGS[2]}\r\n\r\n".encode())
    await expect_body_error("SignatureDoesNotMatch", VerifiedBody(auth, req, pieces(wire)))


async def test_a_chunk_without_signature_in_signed_mode_is_refused() -> None:
    auth, req = example_auth()
    wire = b"10000\r\n" + b"a" * 65536 + b"\r\n"
    await expect_body_error("SignatureDoesNotMatch", VerifiedBody(auth, req, pieces(wire)))


async def test_truncated_chunked_body_is_incomplete() -> None:
    auth, req = example_auth()
    await expect_body_error("IncompleteBody", VerifiedBody(auth, req, pieces(example_wire()[:-200])))


@pytest.mark.parametrize("wire", [
    b"zz;chunk-signature=x\r\n",
    b"10000000000000000;chunk-signature=x\r\n",
    b"x" * 5000,
])
async def test_garbage_framing_is_invalid_request(wire: bytes) -> None:
    auth, req = example_auth()
    await expect_body_error("InvalidRequest", VerifiedBody(auth, req, pieces(wire)))


async def test_data_after_the_final_chunk_is_refused() -> None:
    auth, req = example_auth()
    await expect_body_error("InvalidRequest", VerifiedBody(auth, req, pieces(example_wire() + b"extra")))


async def test_a_signed_chunk_larger_than_the_cap_is_refused_before_it_is_read() -> None:
    auth, req = example_auth()
    wire = f"{MAX_SIGNED_CHUNK_SIZE + 1:x};chunk-signature={EXAMPLE_SIGS[0]}\r\n".encode()
    await expect_body_error("InvalidRequest", VerifiedBody(auth, req, pieces(wire)))


async def test_streaming_body_needs_the_decoded_length() -> None:
    auth, req = example_auth()
    req.headers = [(k, v) for k, v in req.headers if k != "x-amz-decoded-content-length"]
    with pytest.raises(S3Error) as info:
        VerifiedBody(auth, req, pieces(example_wire()))
    assert info.value.code == "MissingContentLength"


@pytest.mark.parametrize("declared, code", [("66561", "IncompleteBody"), ("66559", "InvalidRequest")])
async def test_decoded_length_must_match_the_decoded_bytes(declared: str, code: str) -> None:
    auth, req = example_auth()
    req.headers = [(k, declared if k == "x-amz-decoded-content-length" else v) for k, v in req.headers]
    await expect_body_error(code, VerifiedBody(auth, req, pieces(example_wire())))


# --- trailers --------------------------------------------------------------------------------

class _OurChecksum:
    """botocore's AwsChunkedWrapper checksum interface over our hashers (CRC32C/CRC64NVME need awscrt there)."""
    algorithm = "CRC32"

    def __init__(self) -> None:
        self._h = checksums.new_hasher(self.algorithm)

    def update(self, chunk: bytes) -> None:
        self._h.update(chunk)

    def b64digest(self) -> str:
        return checksums.b64(self._h.digest())


def unsigned_trailer_wire(data: bytes, algorithm: str, chunk_size: int = 1000) -> bytes:
    import io
    cls = type(f"Checksum{algorithm}", (_OurChecksum,), {"algorithm": algorithm})
    wrapper = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=checksums.header_name(algorithm),
                                chunk_size=chunk_size)
    return wrapper.read()


def trailer_headers(algorithm: str, size: int, mode: str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER") -> dict[str, str]:
    return {"x-amz-content-sha256": mode, "content-encoding": "aws-chunked", "transfer-encoding": "chunked",
            "x-amz-trailer": checksums.header_name(algorithm), "x-amz-decoded-content-length": str(size),
            "x-amz-sdk-checksum-algorithm": algorithm}


DATA = bytes(range(256)) * 20 + b"end"


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
async def test_botocore_unsigned_trailer_body_verifies_for_every_algorithm(algorithm: str) -> None:
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), trailer_headers(algorithm, len(DATA)),
                        pieces(unsigned_trailer_wire(DATA, algorithm), 333))
    assert await drain(body) == DATA
    assert body.checksum == (algorithm, checksums.checksum_b64(algorithm, DATA))


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
async def test_a_wrong_trailing_checksum_is_bad_digest_with_the_aws_wording(algorithm: str) -> None:
    wire = unsigned_trailer_wire(DATA, algorithm)
    good = checksums.checksum_b64(algorithm, DATA).encode()
    wrong = checksums.checksum_b64(algorithm, DATA + b"x").encode()
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), trailer_headers(algorithm, len(DATA)),
                        pieces(wire.replace(good, wrong)))
    err = await expect_body_error("BadDigest", body)
    assert err.message == f"The x-amz-checksum-{algorithm.lower()} you specified did not match the calculated checksum."


async def test_a_malformed_trailing_checksum_is_invalid_request() -> None:
    wire = unsigned_trailer_wire(DATA, "CRC32").replace(checksums.checksum_b64("CRC32", DATA).encode(), b"!!")
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), trailer_headers("CRC32", len(DATA)), pieces(wire))
    await expect_body_error("InvalidRequest", body)


async def test_a_missing_declared_trailer_is_invalid_request() -> None:
    wire = b"3\r\nabc\r\n0\r\n\r\n"
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), trailer_headers("CRC32", 3), pieces(wire))
    await expect_body_error("InvalidRequest", body)


async def test_unsigned_trailer_body_without_any_trailer_declared() -> None:
    hdrs = trailer_headers("CRC32", 3)
    del hdrs["x-amz-trailer"], hdrs["x-amz-sdk-checksum-algorithm"]
    body = VerifiedBody(plain_auth("streaming-unsigned-trailer"), hdrs, pieces(b"3\r\nabc\r\n0\r\n\r\n"))
    assert await drain(body) == b"abc" and body.checksum is None


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signed_trailer_wire(ctx: StreamingContext, data: bytes, algorithm: str, chunk: int = 4096,
                        bad_trailer_sig: bool = False) -> bytes:
    """An independent encoder of STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER bodies (AWS docs' layout)."""
    empty = hashlib.sha256(b"").hexdigest()
    previous, wire = ctx.seed_signature, bytearray()
    for start in [*range(0, len(data), chunk), len(data)]:
        piece = data[start:start + chunk] if start < len(data) else b""
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", ctx.timestamp, ctx.scope, previous, empty,
                         hashlib.sha256(piece).hexdigest()])
        previous = _hmac_hex(ctx.signing_key, sts)
        wire += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece
        if piece:
            wire += b"\r\n"
    trailer = f"{checksums.header_name(algorithm)}:{checksums.checksum_b64(algorithm, data)}\n"
    sts = "\n".join(["AWS4-HMAC-SHA256-TRAILER", ctx.timestamp, ctx.scope, previous,
                     hashlib.sha256(trailer.encode()).hexdigest()])
    signature = _hmac_hex(ctx.signing_key, sts)
    if bad_trailer_sig:
        signature = "0" * 64
    wire += trailer.replace("\n", "\r\n").encode() + f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
    return bytes(wire)


def signed_trailer_auth() -> AuthResult:
    auth, _ = example_auth()
    assert auth.streaming is not None
    return AuthResult(auth.account, auth.access_key, "v4-header", "streaming-signed-trailer", None, auth.streaming)


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
async def test_signed_trailer_body_verifies_chunks_trailer_signature_and_checksum(algorithm: str) -> None:
    auth = signed_trailer_auth()
    assert auth.streaming is not None
    wire = signed_trailer_wire(auth.streaming, DATA, algorithm)
    body = VerifiedBody(auth, trailer_headers(algorithm, len(DATA), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
                        pieces(wire, 1000))
    assert await drain(body) == DATA
    assert body.checksum == (algorithm, checksums.checksum_b64(algorithm, DATA))


async def test_a_wrong_trailer_signature_is_signature_does_not_match() -> None:
    auth = signed_trailer_auth()
    assert auth.streaming is not None
    wire = signed_trailer_wire(auth.streaming, DATA, "CRC32", bad_trailer_sig=True)
    body = VerifiedBody(auth, trailer_headers("CRC32", len(DATA), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
                        pieces(wire))
    await expect_body_error("SignatureDoesNotMatch", body)


async def test_a_changed_trailer_value_breaks_the_trailer_signature() -> None:
    auth = signed_trailer_auth()
    assert auth.streaming is not None
    wire = signed_trailer_wire(auth.streaming, DATA, "CRC32")
    good = checksums.checksum_b64("CRC32", DATA).encode()
    wire = wire.replace(good, checksums.checksum_b64("CRC32", b"other").encode())
    body = VerifiedBody(auth, trailer_headers("CRC32", len(DATA), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"),
                        pieces(wire))
    await expect_body_error("SignatureDoesNotMatch", body)


# --- plain bodies ----------------------------------------------------------------------------------

async def test_sha256_mode_accepts_the_matching_body_and_refuses_another() -> None:
    sha = hashlib.sha256(DATA).hexdigest()
    body = VerifiedBody(plain_auth("sha256", sha), headers(content_length=str(len(DATA))), pieces(DATA))
    assert await drain(body) == DATA and body.complete
    other = DATA[:-1] + b"X"
    body = VerifiedBody(plain_auth("sha256", sha), headers(content_length=str(len(DATA))), pieces(other))
    err = await expect_body_error("XAmzContentSHA256Mismatch", body)
    assert err.extra["ClientComputedContentSHA256"] == sha


async def test_content_md5_good_bad_and_malformed() -> None:
    md5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    body = VerifiedBody(plain_auth(), headers(content_md5=md5), pieces(DATA))
    assert await drain(body) == DATA
    assert body.md5_hex == hashlib.md5(DATA).hexdigest()
    await expect_body_error("BadDigest", VerifiedBody(plain_auth(), headers(content_md5=md5), pieces(DATA + b"!")))
    for malformed in ("not-base64!", base64.b64encode(b"short").decode(), ""):
        with pytest.raises(S3Error) as info:
            VerifiedBody(plain_auth(), headers(content_md5=malformed), pieces(DATA))
        assert info.value.code == "InvalidDigest"


async def test_a_body_shorter_than_content_length_is_incomplete() -> None:
    body = VerifiedBody(plain_auth(), headers(content_length=str(len(DATA) + 1)), pieces(DATA))
    await expect_body_error("IncompleteBody", body)


async def test_a_body_longer_than_content_length_is_refused() -> None:
    body = VerifiedBody(plain_auth(), headers(content_length="10"), pieces(DATA))
    await expect_body_error("InvalidRequest", body)


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
async def test_checksum_header_is_verified_at_the_end(algorithm: str) -> None:
    name = checksums.header_name(algorithm)
    good = {name: checksums.checksum_b64(algorithm, DATA)}
    body = VerifiedBody(plain_auth(), good, pieces(DATA))
    assert await drain(body) == DATA and body.checksum == (algorithm, good[name])
    bad = {name: checksums.checksum_b64(algorithm, b"other")}
    err = await expect_body_error("BadDigest", VerifiedBody(plain_auth(), bad, pieces(DATA)))
    assert name in err.message


async def test_sdk_algorithm_alone_means_compute_and_keep_that_checksum() -> None:
    body = VerifiedBody(plain_auth(), {"x-amz-sdk-checksum-algorithm": "crc32c"}, pieces(DATA))
    assert await drain(body) == DATA
    assert body.checksum == ("CRC32C", checksums.checksum_b64("CRC32C", DATA))


@pytest.mark.parametrize("hdrs", [
    {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-sha1": base64.b64encode(b"x" * 20).decode()},
    {"x-amz-checksum-crc32": "AAAA"},
    {"x-amz-checksum-crc32": "AAAAAAAAAAA="},
    {"x-amz-sdk-checksum-algorithm": "MD5"},
    {"x-amz-sdk-checksum-algorithm": "SHA1", "x-amz-checksum-crc32": "AAAAAA=="},
    {"x-amz-trailer": "x-amz-checksum-crc32"},  # a trailer without an aws-chunked body
])
def test_inconsistent_checksum_headers_are_invalid_request(hdrs: dict[str, str]) -> None:
    with pytest.raises(S3Error) as info:
        VerifiedBody(plain_auth(), hdrs, pieces(DATA))
    assert info.value.code == "InvalidRequest"


def test_trailer_and_checksum_header_together_are_invalid_request() -> None:
    hdrs = trailer_headers("CRC32", len(DATA))
    hdrs["x-amz-checksum-sha256"] = checksums.checksum_b64("SHA256", DATA)
    with pytest.raises(S3Error) as info:
        VerifiedBody(plain_auth("streaming-unsigned-trailer"), hdrs, pieces(b""))
    assert info.value.code == "InvalidRequest"


def test_unsupported_trailer_name_is_invalid_request() -> None:
    hdrs = trailer_headers("CRC32", len(DATA))
    hdrs["x-amz-trailer"] = "x-amz-meta-foo"
    with pytest.raises(S3Error) as info:
        VerifiedBody(plain_auth("streaming-unsigned-trailer"), hdrs, pieces(b""))
    assert info.value.code == "InvalidRequest"


async def test_empty_body_with_crc32_header() -> None:
    body = VerifiedBody(plain_auth("sha256", hashlib.sha256(b"").hexdigest()),
                        {"x-amz-checksum-crc32": "AAAAAA==", "content-length": "0"}, pieces(b""))
    assert await drain(body) == b"" and body.size == 0 and body.checksum == ("CRC32", "AAAAAA==")
    assert body.md5_hex == hashlib.md5(b"").hexdigest()


async def test_a_body_can_only_be_iterated_once() -> None:
    body = VerifiedBody(plain_auth(), {}, pieces(b"abc"))
    assert await drain(body) == b"abc"
    with pytest.raises(RuntimeError):
        body.__aiter__()


def test_crc32_trailer_value_matches_zlib() -> None:
    wire = unsigned_trailer_wire(b"hello", "CRC32")
    expected = base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big"))
    assert wire.endswith(b"x-amz-checksum-crc32:" + expected + b"\r\n\r\n")


@settings(max_examples=150, deadline=None)
@given(wire=st.binary(max_size=300) | st.sampled_from([b"3\r\nabc\r\n0\r\n", b"3;x=y\r\nabc\r\n0\r\nx-amz-checksum-crc32\r\n\r\n",
                                                         b"3\r\nabcd\r\n", b"0\r\n" + b"a:b\r\n" * 20,
                                                         b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n"]),
       mode=st.sampled_from(["streaming-unsigned-trailer", "streaming-signed", "streaming-signed-trailer"]),
       step=st.integers(min_value=1, max_value=50))
async def test_arbitrary_chunked_bodies_end_in_data_or_an_s3_error(wire: bytes, mode: str, step: int) -> None:
    auth, _ = example_auth()
    auth = AuthResult(auth.account, auth.access_key, "v4-header", mode, None, auth.streaming)
    hdrs = trailer_headers("CRC32", 3, "x")
    if mode == "streaming-signed":
        del hdrs["x-amz-trailer"]
    try:
        data = await drain(VerifiedBody(auth, hdrs, pieces(wire, step)))
    except S3Error:
        return
    assert data == b"abc" and mode == "streaming-unsigned-trailer"
