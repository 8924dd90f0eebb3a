"""The request body as the object's bytes, verified while it streams.

`VerifiedBody(auth, headers, raw)` turns the raw body stream into the plain object
bytes and checks, as it goes and at the end, everything the request promised about it:

- length: Content-Length, or x-amz-decoded-content-length for aws-chunked bodies;
- `x-amz-content-sha256` (hex SHA-256 mode), `Content-MD5`, a flexible checksum given as
  an `x-amz-checksum-*` header or trailer, or only named by `x-amz-sdk-checksum-algorithm`
  (then computed so the object can store it);
- aws-chunked framing (`Content-Encoding: aws-chunked`) with every chunk signature of the
  STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) chain and the trailer signature.

Header problems are raised by the constructor (before any byte is read); body problems
are raised by the iteration at the point of failure, whole-body digests after the last
chunk. Signed chunks are held until their signature is checked, so the caller never
receives unverified bytes from them; at most one chunk (MAX_SIGNED_CHUNK_SIZE) is held.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from typing import AsyncIterator, Callable, Mapping, Protocol, Union

from shared.errors import S3Error

from .. import checksums
from ..bytestream import ByteStream
from .request import AuthResult, signatures_equal, xml_safe

MAX_SIGNED_CHUNK_SIZE = 16 * 1024 * 1024  # a signed chunk is buffered until verified
HASH_BATCH_BYTES = 1 << 20  # body bytes hashed per worker-thread hop (bodies below it: inline)
MAX_CHUNK_LINE = 4096  # "<hex-size>;chunk-signature=<64 hex>" is ~100 bytes
MAX_TRAILER_LINES = 16
MAX_HEX_DIGITS = 16
MD5_SIZE = 16
CHUNK_SIGNATURE_EXTENSION = "chunk-signature"
TRAILER_SIGNATURE_HEADER = "x-amz-trailer-signature"
STREAMING_MODES = ("streaming-signed", "streaming-unsigned-trailer", "streaming-signed-trailer")
_TRAILER_MODES = ("streaming-unsigned-trailer", "streaming-signed-trailer")
_SIGNED_MODES = ("streaming-signed", "streaming-signed-trailer")


class HeaderSource(Protocol):
    def header(self, name: str) -> str | None: ...


Headers = Union[HeaderSource, Mapping[str, str]]


def _getter(headers: Headers) -> Callable[[str], str | None]:
    """AuthRequest (or anything with .header) or a case-insensitive mapping (Starlette Headers)."""
    if hasattr(headers, "header"):
        return headers.header  # type: ignore[union-attr]
    return lambda name: headers.get(name)  # type: ignore[union-attr]


def _invalid_request(message: str) -> S3Error:
    return S3Error("InvalidRequest", message)


def _malformed_chunk(detail: str) -> S3Error:
    return _invalid_request(f"Malformed aws-chunked body: {detail}")


def _chunk_line_too_long() -> S3Error:
    return _malformed_chunk("chunk header or trailer line too long")


class VerifiedBody:
    """Async iterator of the object's bytes; see the module docstring for what it verifies."""

    def __init__(self, auth: AuthResult, headers: Headers, raw: AsyncIterator[bytes]):
        self._auth = auth
        self._get = _getter(headers)
        self._raw = raw
        self._md5 = hashlib.md5()
        self._sha256 = hashlib.sha256() if auth.payload_mode == "sha256" else None
        self._size = 0
        self._done = False
        self._started = False
        self.checksum_algorithm: str | None = None
        self._checksum_expected: str | None = None  # base64, from the header (trailer: set when read)
        self._trailer_name: str | None = None
        self._hasher: checksums.Hasher | None = None
        self._content_md5: bytes | None = None
        self.expected_size: int | None = None
        self.precheck()

    # --- checks on the headers, before any byte --------------------------------------------

    def precheck(self) -> None:
        """Raise for header problems (InvalidDigest, InvalidRequest, MissingContentLength...)."""
        get = self._get
        mode = self._auth.payload_mode
        content_md5 = get("content-md5")
        if content_md5 is not None:
            try:
                raw_md5 = base64.b64decode(content_md5.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw_md5 = b""
            if len(raw_md5) != MD5_SIZE:
                raise S3Error("InvalidDigest")
            self._content_md5 = raw_md5

        header_algorithms = [a for a in checksums.ALGORITHMS if get(checksums.header_name(a)) is not None]
        trailer = get("x-amz-trailer")
        trailer_algorithm = None
        if trailer is not None and trailer.strip():
            if mode not in _TRAILER_MODES:
                raise _invalid_request("The x-amz-trailer header requires x-amz-content-sha256 "
                                       "STREAMING-UNSIGNED-PAYLOAD-TRAILER or STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER.")
            names = [n.strip().lower() for n in trailer.split(",") if n.strip()]
            algorithms = [checksums.algorithm_from_header(n) for n in names]
            if len(names) != 1 or algorithms[0] is None:
                raise _invalid_request("The value specified in the x-amz-trailer header is not supported")
            trailer_algorithm, self._trailer_name = algorithms[0], names[0]
        if len(header_algorithms) + (trailer_algorithm is not None) > 1:
            raise _invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")

        sdk = get("x-amz-sdk-checksum-algorithm")
        sdk_algorithm = None
        if sdk is not None:
            sdk_algorithm = checksums.normalize_algorithm(sdk)
            if sdk_algorithm is None:
                raise _invalid_request("Checksum algorithm provided is unsupported. Please try again with any of "
                                       f"the valid types: [{', '.join(checksums.ALGORITHMS)}]")

        if header_algorithms:
            algorithm = header_algorithms[0]
            value = get(checksums.header_name(algorithm)) or ""
            if checksums.decode_b64_digest(algorithm, value) is None:
                raise _invalid_request(f"Value for {checksums.header_name(algorithm)} header is invalid.")
            self._checksum_expected = value.strip()
        else:
            algorithm = trailer_algorithm or sdk_algorithm
        if sdk_algorithm is not None and algorithm != sdk_algorithm:
            raise _invalid_request("Value for x-amz-sdk-checksum-algorithm header is invalid.")
        if algorithm is not None:
            self.checksum_algorithm = algorithm
            self._hasher = checksums.new_hasher(algorithm)

        if mode in STREAMING_MODES:
            decoded = get("x-amz-decoded-content-length")
            if decoded is None:
                raise S3Error("MissingContentLength", "You must provide the x-amz-decoded-content-length header "
                              "with aws-chunked bodies.")
            self.expected_size = self._parse_length(decoded, "x-amz-decoded-content-length")
            if mode in _SIGNED_MODES and self._auth.streaming is None:
                raise _invalid_request("A signed streaming payload needs a Signature Version 4 request.")
        else:
            length = get("content-length")
            self.expected_size = None if length is None else self._parse_length(length, "Content-Length")

    @staticmethod
    def _parse_length(value: str, name: str) -> int:
        value = value.strip()
        if not value.isdigit() or not value.isascii():
            raise S3Error("InvalidArgument", f"{name} must be a non-negative integer.",
                          ArgumentName=name, ArgumentValue=value)
        return int(value)

    # --- results ---------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Object bytes yielded so far (the object size once iteration is complete)."""
        return self._size

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    @property
    def complete(self) -> bool:
        """True once the whole body was read and verified."""
        return self._done

    @property
    def checksum(self) -> tuple[str, str] | None:
        """(algorithm, base64 value) of the flexible checksum the client asked for, once complete."""
        if not self._done or self._hasher is None or self.checksum_algorithm is None:
            return None
        return self.checksum_algorithm, checksums.b64(self._hasher.digest())

    # --- iteration --------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            raise RuntimeError("a VerifiedBody can be iterated once")
        self._started = True
        if self._auth.payload_mode in STREAMING_MODES:
            return self._verified(self._chunked())
        return self._verified(self._plain())

    def _too_short(self) -> S3Error:
        return S3Error("IncompleteBody")

    def _count(self, piece: bytes) -> None:
        self._size += len(piece)
        if self.expected_size is not None and self._size > self.expected_size:
            raise _invalid_request("The request body is longer than its declared length "
                                   f"({self.expected_size} bytes).")

    def _hash(self, pieces: list[bytes]) -> None:
        """Feed `pieces`, in order, to every whole-body digest (hashlib and the CRCs release the GIL
        on large buffers, so this runs in a worker thread for big bodies). The pieces are joined
        first: one update per digest, so the thread asks for the GIL back once per digest rather
        than once per network piece (each ask can wait a switch interval behind the event loop)."""
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._hasher is not None:
            self._hasher.update(data)

    async def _verified(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`source`, counted, hashed, and verified before its last piece is let through.

        The piece that completes the declared length is held until the source has ended and
        `_finish` passed: a consumer that has every byte (a data store answering once it got
        Content-Length bytes, possibly before it pulls the iterator to its end) knows the digests
        are final, and a body failing verification never reaches the store whole (the store sees
        a short body and keeps nothing). Without a declared length, the consumer must pull to the end.

        Full batches of HASH_BATCH_BYTES are hashed in a worker thread while the next one streams
        on (the event loop keeps moving bytes, the hashing uses another core); one batch at a time,
        so the digests see the bytes in order, and at most two batches are held. A body smaller
        than a batch is hashed inline (no thread hop for small objects)."""
        batch: list[bytes] = []
        batch_bytes = 0
        hashing: asyncio.Future[None] | None = None
        held: bytes | None = None
        try:
            async for piece in source:
                self._count(piece)
                batch.append(piece)
                batch_bytes += len(piece)
                if batch_bytes >= HASH_BATCH_BYTES:
                    if hashing is not None:
                        await hashing
                    hashing = asyncio.get_running_loop().run_in_executor(None, self._hash, batch)
                    batch, batch_bytes = [], 0
                if held is None and self._size == self.expected_size:
                    held = piece   # the last bytes: let through once verified
                else:
                    yield piece
            if hashing is not None:
                await hashing
                hashing = None
            self._hash(batch)
        finally:
            if hashing is not None and not hashing.done():
                # Abandoned mid-body: the thread finishes its batch on digests nobody reads.
                hashing.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._finish()
        if held is not None:
            yield held

    async def _plain(self) -> AsyncIterator[bytes]:
        async for piece in self._raw:
            if piece:
                yield piece

    def _finish(self) -> None:
        if self.expected_size is not None and self._size < self.expected_size:
            raise self._too_short()
        if self._sha256 is not None:
            computed = self._sha256.hexdigest()
            if computed != self._auth.payload_sha256:
                raise S3Error("XAmzContentSHA256Mismatch", ClientComputedContentSHA256=self._auth.payload_sha256 or "",
                              S3ComputedContentSHA256=computed)
        if self._content_md5 is not None and self._md5.digest() != self._content_md5:
            raise S3Error("BadDigest", ExpectedDigest=self._content_md5.hex(), CalculatedDigest=self._md5.hexdigest())
        if self._hasher is not None and self._checksum_expected is not None and self.checksum_algorithm:
            if checksums.b64(self._hasher.digest()) != self._checksum_expected:
                raise S3Error("BadDigest", f"The {checksums.header_name(self.checksum_algorithm)} you specified "
                              "did not match the calculated checksum.")
        self._done = True

    async def _chunked(self) -> AsyncIterator[bytes]:
        """Decode aws-chunked: `<hex>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n` ... `0...\\r\\n` [trailers] `\\r\\n`."""
        stream = ByteStream(self._raw)
        mode = self._auth.payload_mode
        signed = mode in _SIGNED_MODES
        context = self._auth.streaming
        previous = context.seed_signature if context is not None else ""
        while True:
            size, signature = self._parse_chunk_header(await stream.readline(MAX_CHUNK_LINE, _chunk_line_too_long, self._too_short), signed)
            if signed:
                if size > MAX_SIGNED_CHUNK_SIZE:
                    raise _invalid_request(f"Chunks larger than {MAX_SIGNED_CHUNK_SIZE} bytes are not accepted.")
                pieces = []
                chunk_hash = hashlib.sha256()
                async for piece in stream.read(size, self._too_short):
                    chunk_hash.update(piece)
                    pieces.append(piece)
                assert context is not None and signature is not None
                expected = context.chunk_signature(previous, chunk_hash.hexdigest())
                if not signatures_equal(expected, signature.lower()):
                    raise S3Error("SignatureDoesNotMatch", "The chunk signature we calculated does not match "
                                  "the signature you provided.", SignatureProvided=xml_safe(signature))
                previous = expected
                for piece in pieces:
                    yield piece
            elif size:
                async for piece in stream.read(size, self._too_short):
                    yield piece
            if size == 0:
                break
            if await stream.readline(MAX_CHUNK_LINE, _chunk_line_too_long, self._too_short) != b"":
                raise _malformed_chunk("chunk data is not followed by CRLF")
        if mode in _TRAILER_MODES:
            await self._read_trailers(stream, previous)
        else:
            # The final empty line; tolerate a client that ends right after the last chunk header.
            if not await stream.at_end() and await stream.readline(MAX_CHUNK_LINE, _chunk_line_too_long, self._too_short) != b"":
                raise _malformed_chunk("data after the final chunk")
        if not await stream.at_end():
            raise _malformed_chunk("data after the final chunk")

    @staticmethod
    def _parse_chunk_header(line: bytes, signed: bool) -> tuple[int, str | None]:
        text = line.decode("latin-1")
        size_text, _, extensions = text.partition(";")
        size_text = size_text.strip()
        if not size_text or len(size_text) > MAX_HEX_DIGITS or any(c not in "0123456789abcdefABCDEF" for c in size_text):
            raise _malformed_chunk(f"bad chunk size {size_text[:32]!r}")
        signature = None
        for extension in extensions.split(";") if extensions else ():
            name, _, value = extension.partition("=")
            if name.strip() == CHUNK_SIGNATURE_EXTENSION:
                signature = value.strip()
        if signed and not signature:
            raise S3Error("SignatureDoesNotMatch", "A chunk of a signed streaming payload has no chunk-signature.")
        return int(size_text, 16), signature

    async def _read_trailers(self, stream: ByteStream, previous_signature: str) -> None:
        trailers: list[tuple[str, str]] = []
        trailer_signature = None
        while True:
            if await stream.at_end():
                break  # some clients end without the final empty line
            line = await stream.readline(MAX_CHUNK_LINE, _chunk_line_too_long, self._too_short)
            if line == b"":
                break
            if len(trailers) >= MAX_TRAILER_LINES:
                raise _malformed_chunk("too many trailing headers")
            name, colon, value = line.decode("utf-8", "surrogateescape").partition(":")
            if not colon:
                raise _malformed_chunk("a trailing header has no ':'")
            name, value = name.strip().lower(), value.strip()
            if name == TRAILER_SIGNATURE_HEADER:
                trailer_signature = value
            else:
                trailers.append((name, value))
        if self._auth.payload_mode == "streaming-signed-trailer":
            context = self._auth.streaming
            assert context is not None
            canonical = "".join(f"{n}:{v}\n" for n, v in trailers).encode("utf-8", "surrogateescape")
            expected = context.trailer_signature(previous_signature, canonical)
            if trailer_signature is None or not signatures_equal(expected, trailer_signature.lower()):
                raise S3Error("SignatureDoesNotMatch", "The trailer signature we calculated does not match "
                              "the signature you provided.", SignatureProvided=xml_safe(trailer_signature or ""))
        if self._trailer_name is None:
            return
        values = [v for n, v in trailers if n == self._trailer_name]
        if not values:
            raise _invalid_request(f"The {self._trailer_name} trailer declared in x-amz-trailer is missing.")
        assert self.checksum_algorithm is not None
        if checksums.decode_b64_digest(self.checksum_algorithm, values[0]) is None:
            raise _invalid_request(f"Value for {self._trailer_name} trailing header is invalid.")
        self._checksum_expected = values[0]
