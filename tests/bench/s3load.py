"""The S3 load generator of `make bench`: a small SigV4 signer, an aiohttp S3 client and the workloads.

Every server (ours, moto, Ceph RGW) is driven by exactly this code, so the rows compare servers, not
clients. botocore is deliberately not used: its per-request cost would make the client the bottleneck.

Owns: `SigV4Signer`, `S3Client`, `Sizes` (how much work a run does), `RowResult`, the `WORKLOADS`
registry and `run_workloads()`. Bodies are generated on the fly and discarded as they arrive, in
1 MiB chunks, so a 256 MiB transfer never sits whole in memory.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from lxml import etree
from multidict import CIMultiDict
from yarl import URL

KiB, MiB = 1 << 10, 1 << 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
ALGORITHM = "AWS4-HMAC-SHA256"
DEFAULT_REGION = "us-east-1"
MAX_KEYS_PER_PAGE = 1000  # the S3 ceiling of one ListObjectsV2 page
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

# --------------------------------------------------------------------------- signing


def uri_encode(text: str, keep_slash: bool = True) -> str:
    """RFC 3986 encoding as SigV4 wants it (S3 paths are encoded once, '/' kept)."""
    return quote(text, safe="/-_.~" if keep_slash else "-_.~")


class SigV4Signer:
    """AWS Signature V4, Authorization-header form; the derived signing key is cached per day."""

    def __init__(self, access_key: str, secret_key: str, region: str = DEFAULT_REGION, service: str = "s3"):
        self.access_key, self.secret_key = access_key, secret_key
        self.region, self.service = region, service
        self._key_day = ""
        self._key = b""

    def signing_key(self, day: str) -> bytes:
        if day != self._key_day:
            k = hmac.new(("AWS4" + self.secret_key).encode(), day.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._key_day, self._key = day, k
        return self._key

    def sign(self, method: str, host: str, encoded_path: str, query: Iterable[tuple[str, str]],
             headers: dict[str, str], payload_hash: str, amz_date: str | None = None) -> dict[str, str]:
        """Return `headers` plus Host, x-amz-date, x-amz-content-sha256 and Authorization.

        Every header passed in is signed (callers pass only what they mean to send).
        """
        amz_date = amz_date or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = amz_date[:8]
        out = {k.lower(): v for k, v in headers.items()}
        out.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
        names = sorted(out)
        canonical_query = "&".join(
            f"{uri_encode(k, False)}={uri_encode(v, False)}" for k, v in sorted(query))
        canonical_headers = "".join(f"{n}:{' '.join(str(out[n]).split())}\n" for n in names)
        signed = ";".join(names)
        creq = "\n".join((method, encoded_path, canonical_query, canonical_headers, signed, payload_hash))
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()))
        sig = hmac.new(self.signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["authorization"] = f"{ALGORITHM} Credential={self.access_key}/{scope}, SignedHeaders={signed}, Signature={sig}"
        return out


# --------------------------------------------------------------------------- client


class UnexpectedStatus(Exception):
    """A response with an unexpected status (the load generator counts these; it never hides them)."""

    def __init__(self, method: str, path: str, status: int, body: bytes = b""):
        code = _xml_text(body, "Code") if body else None
        super().__init__(f"{method} {path} -> {status}{' ' + code if code else ''}")
        self.status, self.code = status, code


def _xml_text(body: bytes, tag: str) -> str | None:
    try:
        doc = etree.fromstring(body)
    except etree.XMLSyntaxError:
        return None
    for el in doc.iter():
        if isinstance(el.tag, str) and etree.QName(el).localname == tag:
            return el.text or ""
    return None


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def generated_body(size: int, chunk: bytes) -> AsyncIterator[bytes]:
    """`size` bytes made of repetitions of `chunk`: a large body without holding it in memory."""
    left = size
    while left > 0:
        piece = chunk if left >= len(chunk) else chunk[:left]
        left -= len(piece)
        yield piece


@dataclass
class ListPage:
    keys: int
    prefixes: int
    next_token: str | None


class S3Client:
    """Path-style S3 over one aiohttp session (the session's connector sets the concurrency)."""

    def __init__(self, session: aiohttp.ClientSession, endpoint: str, signer: SigV4Signer):
        url = URL(endpoint)
        self.session, self.signer = session, signer
        # the Host a client sends (and signs) leaves out a default port
        self.host = url.raw_host + (f":{url.explicit_port}" if url.explicit_port else "")
        self.base = f"{url.scheme}://{self.host}"

    def _prepare(self, method: str, bucket: str, key: str | None, query: list[tuple[str, str]] | None,
                 headers: dict[str, str] | None, payload_hash: str) -> tuple[URL, dict[str, str]]:
        path = "/" + uri_encode(bucket) + ("/" + uri_encode(key) if key is not None else "")
        query = query or []
        signed = self.signer.sign(method, self.host, path, query, headers or {}, payload_hash)
        qs = "&".join(f"{uri_encode(k, False)}={uri_encode(v, False)}" for k, v in query)
        return URL(self.base + path + ("?" + qs if qs else ""), encoded=True), signed

    async def call(self, method: str, bucket: str, key: str | None = None, *,
                   query: list[tuple[str, str]] | None = None, headers: dict[str, str] | None = None,
                   data: Any = None, expect: tuple[int, ...] = (200,)) -> tuple[int, bytes, CIMultiDict[str]]:
        """One request whose (small) response body is read whole; raise UnexpectedStatus on an unexpected status."""
        url, hdrs = self._prepare(method, bucket, key, query, headers,
                                  EMPTY_SHA256 if data is None else UNSIGNED_PAYLOAD)
        async with self.session.request(method, url, headers=hdrs, data=data) as resp:
            body = await resp.read()
            if resp.status not in expect:
                raise UnexpectedStatus(method, url.path, resp.status, body)
            return resp.status, body, CIMultiDict(resp.headers)

    async def create_bucket(self, bucket: str) -> None:
        await self.call("PUT", bucket, expect=(200,))

    async def bucket_exists(self, bucket: str) -> bool:
        status, _, _ = await self.call("HEAD", bucket, expect=(200, 403, 404))
        return status == 200

    async def put_object(self, bucket: str, key: str, body: bytes) -> None:
        await self.call("PUT", bucket, key, data=body, headers={"content-length": str(len(body))})

    async def put_stream(self, bucket: str, key: str, size: int, chunk: bytes,
                         query: list[tuple[str, str]] | None = None) -> str:
        """PUT a generated `size`-byte body in chunks (explicit Content-Length: never chunked encoding)."""
        _, _, headers = await self.call("PUT", bucket, key, query=query, data=generated_body(size, chunk),
                                        headers={"content-length": str(size)})
        return headers.get("ETag", "")

    async def get_object(self, bucket: str, key: str, chunk_size: int = MiB) -> int:
        """GET and discard the body as it arrives; return the byte count."""
        url, hdrs = self._prepare("GET", bucket, key, None, None, EMPTY_SHA256)
        async with self.session.get(url, headers=hdrs) as resp:
            if resp.status != 200:
                raise UnexpectedStatus("GET", url.path, resp.status, await resp.read())
            n = 0
            async for piece in resp.content.iter_chunked(chunk_size):
                n += len(piece)
            return n

    async def head_object(self, bucket: str, key: str) -> int:
        _, _, headers = await self.call("HEAD", bucket, key)
        return int(headers.get("Content-Length", "0"))

    async def delete_object(self, bucket: str, key: str) -> None:
        await self.call("DELETE", bucket, key, expect=(204, 200))

    async def delete_objects(self, bucket: str, keys: list[str], quiet: bool = False) -> tuple[int, int]:
        """One DeleteObjects request; (Deleted entries, Error entries) of its result document."""
        objects = "".join(f"<Object><Key>{_xml_escape(k)}</Key></Object>" for k in keys)
        xml = (f'<Delete xmlns="{S3_NS}">{"<Quiet>true</Quiet>" if quiet else ""}{objects}</Delete>').encode()
        md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
        _, body, _ = await self.call("POST", bucket, query=[("delete", "")], data=xml,
                                     headers={"content-md5": md5, "content-length": str(len(xml))})
        deleted = errors = 0
        for el in etree.fromstring(body):
            if isinstance(el.tag, str):
                name = etree.QName(el).localname
                deleted += name == "Deleted"
                errors += name == "Error"
        return deleted, errors

    async def delete_bucket(self, bucket: str) -> None:
        await self.call("DELETE", bucket, expect=(204, 200))

    async def list_v2(self, bucket: str, prefix: str = "", delimiter: str = "", token: str | None = None,
                      max_keys: int = MAX_KEYS_PER_PAGE) -> ListPage:
        query = [("list-type", "2"), ("max-keys", str(max_keys))]
        if prefix:
            query.append(("prefix", prefix))
        if delimiter:
            query.append(("delimiter", delimiter))
        if token:
            query.append(("continuation-token", token))
        _, body, _ = await self.call("GET", bucket, query=query)
        doc = etree.fromstring(body)
        keys = prefixes = 0
        next_token = None
        truncated = False
        for el in doc:
            if not isinstance(el.tag, str):
                continue
            name = etree.QName(el).localname
            if name == "Contents":
                keys += 1
            elif name == "CommonPrefixes":
                prefixes += 1
            elif name == "NextContinuationToken":
                next_token = el.text
            elif name == "IsTruncated":
                truncated = (el.text or "").strip() == "true"
        return ListPage(keys, prefixes, next_token if truncated else None)

    async def create_multipart(self, bucket: str, key: str) -> str:
        _, body, _ = await self.call("POST", bucket, key, query=[("uploads", "")])
        upload_id = _xml_text(body, "UploadId")
        if not upload_id:
            raise RuntimeError(f"CreateMultipartUpload answered no UploadId: {body[:200]!r}")
        return upload_id

    async def complete_multipart(self, bucket: str, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(f"<Part><PartNumber>{i}</PartNumber><ETag>{e}</ETag></Part>"
                        for i, e in enumerate(etags, 1))
        xml = f'<CompleteMultipartUpload xmlns="{S3_NS}">{parts}</CompleteMultipartUpload>'.encode()
        _, body, _ = await self.call("POST", bucket, key, query=[("uploadId", upload_id)], data=xml,
                                     headers={"content-length": str(len(xml))})
        # S3 may answer 200 and still fail: the error is then in the body
        if _xml_text(body, "Code") is not None:
            raise RuntimeError(f"CompleteMultipartUpload failed: {_xml_text(body, 'Code')}")

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        await self.call("DELETE", bucket, key, query=[("uploadId", upload_id)], expect=(204, 200, 404))

    async def copy_object(self, bucket: str, key: str, source_bucket: str, source_key: str) -> None:
        _, body, _ = await self.call("PUT", bucket, key, headers={
            "x-amz-copy-source": "/" + uri_encode(source_bucket) + "/" + uri_encode(source_key)})
        if _xml_text(body, "Code") is not None:  # 200 with an error body, as for Complete
            raise RuntimeError(f"CopyObject failed: {_xml_text(body, 'Code')}")


# --------------------------------------------------------------------------- sizes and results


@dataclass(frozen=True)
class Sizes:
    """How much work each row does. The default is the real benchmark; QUICK is a smoke run."""

    small_object: int = 4 * KiB
    ops: int = 2000            # ops rows stop after this many operations ...
    op_seconds: float = 8.0    # ... or after this long, whichever comes first
    big_object: int = 256 * MiB
    list_keys: int = 20_000
    list_page: int = MAX_KEYS_PER_PAGE
    list_folders: int = 10
    list_seconds: float = 8.0  # bound of the repeated-listing rows
    list_rounds: int = 3       # full listings of the bucket in the "list" row (time-bounded too)
    fill_concurrency: int = 32
    mpu_object: int = 256 * MiB
    mpu_part: int = 8 * MiB
    mpu_parallel: int = 4
    copy_object: int = 64 * MiB
    chunk: int = MiB
    delete_batches: int = 5    # DeleteObjects row: this many requests of 1000 keys each
    pd_dirs: int = 4           # "LIST prefix + delimiter" bucket: dir{i}/sub{j}/obj{k} ...
    pd_subs: int = 1250        # ... so prefix dir3/ + delimiter / lists pd_subs common prefixes
    pd_objs: int = 4


FULL = Sizes()
QUICK = Sizes(ops=300, op_seconds=3.0, big_object=32 * MiB, list_keys=2000, list_seconds=3.0, list_rounds=1,
              mpu_object=32 * MiB, copy_object=8 * MiB, delete_batches=2, pd_subs=250, pd_objs=2)


@dataclass
class RowResult:
    workload: str
    unit: str
    value: float | None = None   # throughput in `unit`; None when the row could not run
    ops: int = 0                 # operations that succeeded (keys listed, for the list row)
    errors: int = 0
    seconds: float = 0.0
    error: str | None = None     # why the row is n/a, or the first error seen
    peak_rss: dict[str, int] = field(default_factory=dict)  # filled in by the orchestrator
    client_cpu: float = 0.0      # load generator CPU / wall time over the row: near 1.0 = client-bound
    cpu_us_per_op: dict[str, float] = field(default_factory=dict)  # server role -> CPU µs per op (orchestrator)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Target:
    """One server to measure, and the state the rows leave for each other."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_REGION
    bucket: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")
    small_keys: list[str] = field(default_factory=list)   # 4 KiB objects that exist now
    big_keys: set[str] = field(default_factory=set)       # large objects to delete at the end
    bucket_ready: bool = False
    sse_bucket_ready: bool = False                        # the SSE-S3 bucket of the *_big_sse rows

    def signer(self) -> SigV4Signer:
        return SigV4Signer(self.access_key, self.secret_key, self.region)

    def list_bucket(self, sizes: Sizes) -> str:
        # fixed name: a peer that keeps its data (Ceph) is filled once, not on every run
        return f"bench-list-{sizes.list_keys}-{sizes.list_folders}"


def session_for(concurrency: int) -> aiohttp.ClientSession:
    """One keep-alive session per concurrency level: the connector limit is the concurrency."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False,
                                     enable_cleanup_closed=False, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding"))


@asynccontextmanager
async def client_for(t: Target, concurrency: int) -> AsyncIterator[S3Client]:
    async with session_for(concurrency) as s:
        yield S3Client(s, t.endpoint, t.signer())


@dataclass
class OpsOutcome:
    done: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_error: str | None = None


async def run_ops(concurrency: int, total: int, seconds: float | None,
                  op: Callable[[int], Awaitable[None]]) -> OpsOutcome:
    """Run op(0..total-1) from `concurrency` workers until all are done or `seconds` have passed."""
    out = OpsOutcome()
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else float("inf")

    async def worker() -> None:
        nonlocal next_index
        while next_index < total and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            try:
                await op(i)
                out.done += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted, the first one kept
                out.errors += 1
                out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.seconds = time.perf_counter() - start
    return out


def row_from(workload: str, unit: str, outcome: OpsOutcome, amount: float | None = None) -> RowResult:
    """Throughput = amount (default: successful ops) / elapsed; a row with no success is n/a."""
    amount = outcome.done if amount is None else amount
    value = amount / outcome.seconds if outcome.done and outcome.seconds > 0 else None
    return RowResult(workload, unit, value, outcome.done, outcome.errors, outcome.seconds,
                     outcome.first_error if outcome.errors or value is None else None)


# --------------------------------------------------------------------------- workloads


async def ensure_bucket(t: Target) -> None:
    if t.bucket_ready:
        return
    async with client_for(t, 1) as c:
        await c.create_bucket(t.bucket)
    t.bucket_ready = True


def small_body(sizes: Sizes) -> bytes:
    return os.urandom(sizes.small_object)


async def _put_small(t: Target, sizes: Sizes, concurrency: int, prefix: str, total: int,
                     seconds: float | None) -> OpsOutcome:
    await ensure_bucket(t)
    body = small_body(sizes)
    keys = [f"{prefix}/{i:08d}" for i in range(total)]
    async with client_for(t, concurrency) as c:

        async def op(i: int) -> None:
            await c.put_object(t.bucket, keys[i], body)
            t.small_keys.append(keys[i])

        return await run_ops(concurrency, total, seconds, op)


async def _ensure_small_keys(t: Target, sizes: Sizes) -> None:
    """GET/HEAD/DELETE need objects: seed some (untimed) when no PUT row ran before them."""
    if not t.small_keys:
        out = await _put_small(t, sizes, 32, "seed", min(sizes.ops, 500), None)
        if not t.small_keys:
            raise RuntimeError(f"could not seed objects: {out.first_error}")


def put_ops(concurrency: int) -> Callable[[Target, Sizes], Awaitable[RowResult]]:
    async def run(t: Target, sizes: Sizes) -> RowResult:
        out = await _put_small(t, sizes, concurrency, f"put-c{concurrency}", sizes.ops, sizes.op_seconds)
        return row_from(f"put_c{concurrency}", "ops/s", out)
    return run


def read_ops(method: str, concurrency: int) -> Callable[[Target, Sizes], Awaitable[RowResult]]:
    async def run(t: Target, sizes: Sizes) -> RowResult:
        await _ensure_small_keys(t, sizes)
        keys = list(t.small_keys)
        async with client_for(t, concurrency) as c:

            async def op(i: int) -> None:
                key = keys[i % len(keys)]
                n = await (c.get_object(t.bucket, key) if method == "GET" else c.head_object(t.bucket, key))
                if n != sizes.small_object:
                    raise RuntimeError(f"{method} {key}: {n} bytes, expected {sizes.small_object}")

            out = await run_ops(concurrency, sizes.ops, sizes.op_seconds, op)
        return row_from(f"{method.lower()}_c{concurrency}", "ops/s", out)
    return run


async def delete_c32(t: Target, sizes: Sizes) -> RowResult:
    await _ensure_small_keys(t, sizes)
    keys = list(t.small_keys)
    deleted: set[str] = set()
    async with client_for(t, 32) as c:

        async def op(i: int) -> None:
            await c.delete_object(t.bucket, keys[i])
            deleted.add(keys[i])

        out = await run_ops(32, min(len(keys), sizes.ops), sizes.op_seconds, op)
    t.small_keys = [k for k in t.small_keys if k not in deleted]
    return row_from("delete_c32", "ops/s", out)


async def delete_objects(t: Target, sizes: Sizes) -> RowResult:
    """delete_batches x 1000 4 KiB objects (PUT untimed), then one DeleteObjects of 1000 keys at a
    time (non-quiet, one request in flight): keys/s over the deletes only."""
    await ensure_bucket(t)
    body = small_body(sizes)
    per = MAX_KEYS_PER_PAGE
    keys = [f"mdel/{i:08d}" for i in range(sizes.delete_batches * per)]
    async with client_for(t, sizes.fill_concurrency) as c:

        async def put(i: int) -> None:
            await c.put_object(t.bucket, keys[i], body)

        filled = await run_ops(sizes.fill_concurrency, len(keys), None, put)
        if filled.errors:
            t.small_keys.extend(keys)   # cleanup deletes what exists
            raise RuntimeError(f"filling: {filled.errors} PUTs failed, first: {filled.first_error}")
    async with client_for(t, 1) as c:
        deleted_keys = 0

        async def op(i: int) -> None:
            nonlocal deleted_keys
            batch = keys[i * per:(i + 1) * per]
            deleted, errors = await c.delete_objects(t.bucket, batch)
            if errors or deleted != len(batch):
                t.small_keys.extend(batch)
                raise RuntimeError(f"DeleteObjects: {deleted} Deleted and {errors} Error entries for {len(batch)} keys")
            deleted_keys += deleted

        out = await run_ops(1, sizes.delete_batches, None, op)
    row = row_from("delete_objects", "keys/s", out, deleted_keys)
    row.ops = deleted_keys
    return row


def _mb(nbytes: int) -> float:
    return nbytes / MiB


async def put_big(t: Target, sizes: Sizes) -> RowResult:
    await ensure_bucket(t)
    chunk = os.urandom(sizes.chunk)
    async with client_for(t, 1) as c:

        async def op(_: int) -> None:
            await c.put_stream(t.bucket, "big/object", sizes.big_object, chunk)
            t.big_keys.add("big/object")

        out = await run_ops(1, 1, None, op)
    return row_from("put_big", "MB/s", out, _mb(sizes.big_object))


async def get_big(t: Target, sizes: Sizes) -> RowResult:
    if "big/object" not in t.big_keys:  # --only get_big: upload it first, untimed
        pre = await put_big(t, sizes)
        if pre.value is None:
            return RowResult("get_big", "MB/s", error=f"could not upload the object: {pre.error}")
    async with client_for(t, 1) as c:

        async def op(_: int) -> None:
            n = await c.get_object(t.bucket, "big/object", sizes.chunk)
            if n != sizes.big_object:
                raise RuntimeError(f"GET returned {n} bytes, expected {sizes.big_object}")

        out = await run_ops(1, 1, None, op)
    return row_from("get_big", "MB/s", out, _mb(sizes.big_object))


# --- the encrypted-bucket rows (issue 13): the big PUT/GET into a bucket with SSE-S3 default encryption

SSE_S3_CONFIG = (b'<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule>'
                 b"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
                 b"</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>")
SSE_BIG_KEY = "big/sse-object"


def sse_bucket(t: Target) -> str:
    return f"{t.bucket}-sse"


async def ensure_sse_bucket(t: Target) -> str:
    if not t.sse_bucket_ready:
        async with client_for(t, 1) as c:
            await c.create_bucket(sse_bucket(t))
            t.sse_bucket_ready = True
            md5 = base64.b64encode(hashlib.md5(SSE_S3_CONFIG).digest()).decode()
            await c.call("PUT", sse_bucket(t), query=[("encryption", "")], data=SSE_S3_CONFIG,
                         headers={"content-md5": md5, "content-length": str(len(SSE_S3_CONFIG))})
    return sse_bucket(t)


async def put_big_sse(t: Target, sizes: Sizes) -> RowResult:
    bucket = await ensure_sse_bucket(t)
    chunk = os.urandom(sizes.chunk)
    async with client_for(t, 1) as c:

        async def op(_: int) -> None:
            await c.put_stream(bucket, SSE_BIG_KEY, sizes.big_object, chunk)

        out = await run_ops(1, 1, None, op)
    return row_from("put_big_sse", "MB/s", out, _mb(sizes.big_object))


async def get_big_sse(t: Target, sizes: Sizes) -> RowResult:
    bucket = await ensure_sse_bucket(t)
    pre = None
    async with client_for(t, 1) as c:
        try:
            await c.head_object(bucket, SSE_BIG_KEY)
        except UnexpectedStatus:
            pre = await put_big_sse(t, sizes)   # --only get_big_sse: upload it first, untimed
    if pre is not None and pre.value is None:
        return RowResult("get_big_sse", "MB/s", error=f"could not upload the object: {pre.error}")
    async with client_for(t, 1) as c:

        async def op(_: int) -> None:
            n = await c.get_object(bucket, SSE_BIG_KEY, sizes.chunk)
            if n != sizes.big_object:
                raise RuntimeError(f"GET returned {n} bytes, expected {sizes.big_object}")

        out = await run_ops(1, 1, None, op)
    return row_from("get_big_sse", "MB/s", out, _mb(sizes.big_object))


async def _fill_list_bucket(t: Target, sizes: Sizes) -> str:
    """The listing bucket: list_keys empty objects spread over list_folders 'folders'; filled once."""
    bucket = t.list_bucket(sizes)
    async with client_for(t, sizes.fill_concurrency) as c:
        if await c.bucket_exists(bucket):
            if await _count_keys(c, bucket, sizes.list_page) == sizes.list_keys:
                return bucket
        else:
            await c.create_bucket(bucket)

        async def op(i: int) -> None:
            await c.put_object(bucket, f"dir{i % sizes.list_folders}/key{i:07d}", b"")

        out = await run_ops(sizes.fill_concurrency, sizes.list_keys, None, op)
        if out.errors:
            raise RuntimeError(f"filling {bucket}: {out.errors} PUTs failed, first: {out.first_error}")
    return bucket


async def _count_keys(c: S3Client, bucket: str, page: int) -> int:
    n, token = 0, None
    while True:
        p = await c.list_v2(bucket, token=token, max_keys=page)
        n += p.keys
        token = p.next_token
        if not token:
            return n


async def list_keys(t: Target, sizes: Sizes) -> RowResult:
    bucket = await _fill_list_bucket(t, sizes)
    async with client_for(t, 1) as c:
        listed = 0

        async def op(_: int) -> None:
            nonlocal listed
            n = await _count_keys(c, bucket, sizes.list_page)
            if n != sizes.list_keys:
                raise RuntimeError(f"listing returned {n} keys, expected {sizes.list_keys}")
            listed += n

        out = await run_ops(1, sizes.list_rounds, sizes.list_seconds, op)
    row = row_from("list_keys", "keys/s", out, listed)
    row.ops = listed  # the row's unit is keys, not listing rounds
    return row


async def list_root_delimiter(t: Target, sizes: Sizes) -> RowResult:
    bucket = await _fill_list_bucket(t, sizes)
    async with client_for(t, 1) as c:

        async def op(_: int) -> None:
            p = await c.list_v2(bucket, delimiter="/", max_keys=sizes.list_page)
            if p.prefixes != sizes.list_folders or p.keys:
                raise RuntimeError(f"root listing: {p.prefixes} prefixes and {p.keys} keys, "
                                   f"expected {sizes.list_folders} and 0")

        out = await run_ops(1, sizes.ops, sizes.list_seconds, op)
    return row_from("list_root_delim", "req/s", out)


def _pd_bucket(sizes: Sizes) -> str:
    # fixed name: a peer that keeps its data (Ceph) is filled once, not on every run
    return f"bench-listpd-{sizes.pd_dirs}-{sizes.pd_subs}-{sizes.pd_objs}"


async def _fill_pd_bucket(t: Target, sizes: Sizes) -> str:
    """Empty objects dir{i}/sub{j}/obj{k}; filled once (a kept bucket with the right count is reused)."""
    bucket = _pd_bucket(sizes)
    total = sizes.pd_dirs * sizes.pd_subs * sizes.pd_objs
    async with client_for(t, sizes.fill_concurrency) as c:
        if await c.bucket_exists(bucket):
            if await _count_keys(c, bucket, sizes.list_page) == total:
                return bucket
        else:
            await c.create_bucket(bucket)

        def key(n: int) -> str:
            i, rest = divmod(n, sizes.pd_subs * sizes.pd_objs)
            j, k = divmod(rest, sizes.pd_objs)
            return f"dir{i}/sub{j:05d}/obj{k}"

        async def op(n: int) -> None:
            await c.put_object(bucket, key(n), b"")

        out = await run_ops(sizes.fill_concurrency, total, None, op)
        if out.errors:
            raise RuntimeError(f"filling {bucket}: {out.errors} PUTs failed, first: {out.first_error}")
    return bucket


async def list_prefix_delimiter(t: Target, sizes: Sizes) -> RowResult:
    """prefix dir3/ (the last dir when fewer), delimiter /, all pages of max-keys 1000: keys + prefixes per s."""
    bucket = await _fill_pd_bucket(t, sizes)
    prefix = f"dir{min(3, sizes.pd_dirs - 1)}/"
    async with client_for(t, 1) as c:
        entries = 0

        async def op(_: int) -> None:
            nonlocal entries
            n, token = 0, None
            while True:
                p = await c.list_v2(bucket, prefix=prefix, delimiter="/", token=token, max_keys=sizes.list_page)
                n += p.keys + p.prefixes
                token = p.next_token
                if not token:
                    break
            if n != sizes.pd_subs:
                raise RuntimeError(f"listing {prefix} returned {n} keys + prefixes, expected {sizes.pd_subs}")
            entries += n

        out = await run_ops(1, sizes.ops, sizes.list_seconds, op)
    row = row_from("list_prefix_delim", "keys/s", out, entries)
    row.ops = entries
    return row


async def multipart_upload(t: Target, sizes: Sizes) -> RowResult:
    await ensure_bucket(t)
    chunk = os.urandom(sizes.chunk)
    nparts = -(-sizes.mpu_object // sizes.mpu_part)
    key = "mpu/object"
    async with client_for(t, sizes.mpu_parallel) as c:
        start = time.perf_counter()
        upload_id = await c.create_multipart(t.bucket, key)
        etags: list[str] = [""] * nparts
        try:
            async def op(i: int) -> None:
                size = min(sizes.mpu_part, sizes.mpu_object - i * sizes.mpu_part)
                etags[i] = await c.put_stream(t.bucket, key, size, chunk,
                                              query=[("partNumber", str(i + 1)), ("uploadId", upload_id)])
                if not etags[i]:
                    raise RuntimeError(f"UploadPart {i + 1} answered no ETag")

            out = await run_ops(sizes.mpu_parallel, nparts, None, op)
            if out.errors:
                raise RuntimeError(f"{out.errors} parts failed, first: {out.first_error}")
            await c.complete_multipart(t.bucket, key, upload_id, etags)
        except BaseException:
            await c.abort_multipart(t.bucket, key, upload_id)
            raise
        out.seconds = time.perf_counter() - start
        t.big_keys.add(key)
    return row_from("mpu_big", "MB/s", out, _mb(sizes.mpu_object))


async def copy_object(t: Target, sizes: Sizes) -> RowResult:
    await ensure_bucket(t)
    chunk = os.urandom(sizes.chunk)
    async with client_for(t, 1) as c:
        await c.put_stream(t.bucket, "copy/source", sizes.copy_object, chunk)  # untimed
        t.big_keys.add("copy/source")

        async def op(_: int) -> None:
            await c.copy_object(t.bucket, "copy/target", t.bucket, "copy/source")
            t.big_keys.add("copy/target")

        out = await run_ops(1, 1, None, op)
    return row_from("copy", "MB/s", out, _mb(sizes.copy_object))


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    unit: str
    run: Callable[[Target, Sizes], Awaitable[RowResult]]
    big: bool = False  # a large transfer: its peak RSS is reported apart


def _labels(sizes: Sizes) -> dict[str, str]:
    big, mpu, cp = sizes.big_object // MiB, sizes.mpu_object // MiB, sizes.copy_object // MiB
    return {"put_big": f"PUT {big} MiB", "get_big": f"GET {big} MiB",
            "put_big_sse": f"PUT {big} MiB SSE-S3 bucket", "get_big_sse": f"GET {big} MiB SSE-S3 bucket",
            "list_keys": f"list {sizes.list_keys} keys", "mpu_big": f"MPU {mpu} MiB ({sizes.mpu_part // MiB} MiB x{sizes.mpu_parallel})",
            "copy": f"CopyObject {cp} MiB",
            "list_root_delim": f"root list delim '/' ({sizes.list_folders} dirs)",
            "list_prefix_delim": f"LIST prefix + delimiter ({sizes.pd_subs} prefixes)",
            "delete_objects": f"DeleteObjects x1000 ({sizes.delete_batches} requests)"}


# Order matters: the PUT rows create what GET/HEAD read, DELETE removes them.
WORKLOADS: list[Workload] = [
    Workload("put_c1", "PUT 4KiB c1", "ops/s", put_ops(1)),
    Workload("put_c32", "PUT 4KiB c32", "ops/s", put_ops(32)),
    Workload("get_c1", "GET 4KiB c1", "ops/s", read_ops("GET", 1)),
    Workload("get_c32", "GET 4KiB c32", "ops/s", read_ops("GET", 32)),
    Workload("head_c32", "HEAD c32", "ops/s", read_ops("HEAD", 32)),
    Workload("put_big", "PUT big", "MB/s", put_big, big=True),
    Workload("get_big", "GET big", "MB/s", get_big, big=True),
    Workload("put_big_sse", "PUT big SSE-S3", "MB/s", put_big_sse, big=True),
    Workload("get_big_sse", "GET big SSE-S3", "MB/s", get_big_sse, big=True),
    Workload("list_keys", "list keys", "keys/s", list_keys),
    Workload("list_root_delim", "root list delimiter", "req/s", list_root_delimiter),
    Workload("list_prefix_delim", "LIST prefix + delimiter", "keys/s", list_prefix_delimiter),
    Workload("delete_c32", "DELETE c32", "ops/s", delete_c32),
    Workload("mpu_big", "MPU big", "MB/s", multipart_upload, big=True),
    Workload("copy", "CopyObject", "MB/s", copy_object, big=True),
    # Last: a server may free the data of deleted objects after answering (ours does), and that
    # work must not land in the next row's time.
    Workload("delete_objects", "DeleteObjects x1000", "keys/s", delete_objects),
]
WORKLOAD_NAMES = [w.name for w in WORKLOADS]


def workload_label(name: str, sizes: Sizes) -> str:
    return _labels(sizes).get(name) or next(w.label for w in WORKLOADS if w.name == name)


async def cleanup(t: Target) -> None:
    """Delete what the rows left (a peer like Ceph keeps its data between runs); errors ignored."""
    async with client_for(t, 16) as c:
        keys = list(t.big_keys) + list(t.small_keys)
        deleted: set[str] = set()

        async def op(i: int) -> None:
            await c.delete_object(t.bucket, keys[i])
            deleted.add(keys[i])

        await run_ops(16, len(keys), 120.0, op)
        t.small_keys = [k for k in t.small_keys if k not in deleted]
        t.big_keys -= deleted
        if t.bucket_ready:
            try:
                await c.delete_bucket(t.bucket)
            except Exception:  # noqa: BLE001 - leftovers only cost space on a throwaway server
                pass
        if t.sse_bucket_ready:
            try:
                await c.delete_object(sse_bucket(t), SSE_BIG_KEY)
                await c.delete_bucket(sse_bucket(t))
            except Exception:  # noqa: BLE001 - as above
                pass


async def run_workloads(t: Target, sizes: Sizes, names: Iterable[str] | None = None,
                        on_row: Callable[[str, str], Any] | None = None,
                        on_row_done: Callable[[RowResult], Any] | None = None) -> dict[str, RowResult]:
    """Run the chosen workloads (registry order) against one target; a failing row never aborts the rest.

    on_row(name, "start") / on_row_done(result) let the caller sample memory per row.
    """
    wanted = set(names) if names is not None else set(WORKLOAD_NAMES)
    results: dict[str, RowResult] = {}
    try:
        for w in WORKLOADS:
            if w.name not in wanted:
                continue
            if on_row:
                on_row(w.name, "start")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                r = await w.run(t, sizes)
            except Exception as exc:  # noqa: BLE001 - e.g. multipart not implemented yet: n/a, go on
                r = RowResult(w.name, w.unit, error=f"{type(exc).__name__}: {exc}"[:300])
            wall = time.perf_counter() - wall0
            r.client_cpu = round((time.process_time() - cpu0) / wall, 3) if wall > 0 else 0.0
            results[w.name] = r
            if on_row_done:
                on_row_done(r)
    finally:
        await cleanup(t)
    return results
