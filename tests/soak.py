"""Soak with fault injection (issue 17): mixed S3 load through several gateways while the dmd is
SIGKILLed and restarted again and again; at the end every acknowledged write reads back identical,
every acknowledged delete is gone, no 5xx other than 503 was seen, and the scrub finds nothing
it cannot explain.

    python -m tests.soak --kills 100 --gateways 2 [--workers 6] [--seed N] [--fuzz N] [--json FILE]

Exit status 0 when every check holds, 1 on any violation (each one printed), 2 on a setup error.
`tests/integration/test_soak_short.py` runs the same code with a few kills inside `make test`.

The load (one thread per worker; boto3 clients with ONE attempt, so a 503 reaches the model and
is counted; each worker alternates between the gateways):
- bucket `soak-plain` (not versioned): small PUTs (random bodies up to 64 KiB), large PUTs
  (1-4 MiB, streamed from a seekable generator, never whole in memory), multipart uploads (2-3
  parts, 5 MiB but the last), DELETEs, GETs with an MD5 comparison, ListObjectsV2 with a
  delimiter and small pages. Every write to a key is an overwrite of whatever is there.
- bucket `soak-versioned` (versioning enabled): PUTs, DeleteObject (a delete marker), DeleteObject
  by version id (of versions and of delete markers, never the newest acknowledged one), GETs of
  the current object and of a version, ListObjectVersions.
Each worker owns its keys (`w<n>/...`), so the order of a key's writes is the worker's order.

The model (per key), as tests/integration/test_durability.py: the outcome of the last
acknowledged write (a body's MD5, or ABSENT after a delete) and the outcomes of writes since that
were not acknowledged (a 503, a lost connection: each may or may not have landed). A write that
timed out on the client may even land after a later acknowledged one, so its outcome stays
allowed. Reads during the run and the final check accept exactly that set; a versioned key also
keeps every acknowledged version id (must be listed and read back identical unless an
acknowledged delete removed it: then it must be gone) and any listed version no acknowledged
write created must carry the ETag of an unacknowledged PUT of that key.

The scrub (`python -m dmd.scrub --grace-seconds 0 --verify-data`) after the load. Never
explainable: missingData, sizeMismatch, md5Mismatch. Explainable:
- orphanBlobs: a blob no metadata references is explained when (a) a gateway logged it in
  `leakedBlobs` (it failed to free data the dmd was down for), or (b) its content is the body or
  part of a write that was not acknowledged (data stored, then the commit never happened or its
  answer was lost: docs/durability.md "a data blob it left is garbage for the scrub"), or (c) its
  content is a body that such an interrupted write or delete may have replaced (the commit landed,
  the answer was lost, so the gateway never freed what it replaced), or a part of an upload
  whose Complete or Abort was interrupted (records removed, data not yet freed). Anything else is
  a leak the code should not have and fails the soak.
- orphanParts: explained only for uploads whose UploadPart/Complete/Abort was interrupted.
- placeholders: explained only on keys of the versioned bucket with an interrupted write/delete.
- staleUploads: never (the run is far younger than the 7-day threshold).
- interruptedCompletes: explained only for uploads whose Complete was interrupted (the Complete
  committed its object, the kill came before its clean-up, a later overwrite freed the object's
  data; tests/integration/test_soak_findings.py).
Then `--repair` runs and a last scrub must be clean.

Also reported, not fatal: `kept_after_lost_answer`, blobs a gateway logged as leaked that committed
metadata references: a write whose metadata commit landed but whose answer was lost to the kill;
the gateway kept the new data rather than free it (gateway/objectdata.py commit_outcome_unknown).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from tests.procs import REPO, Dmd, Gateway, start_dmd, start_gateway

ACCESS_KEY, SECRET_KEY = "accessKey1", "verySecretKey1"
KiB, MiB = 1 << 10, 1 << 20
ABSENT = "<absent>"
MARKER = "<delete-marker>"
PLAIN, VERSIONED = "soak-plain", "soak-versioned"
PLAIN_KEYS = 12            # per worker, half under a/ and half under b/
VERSIONED_KEYS = 6         # per worker
GEN_BLOCK = 64 * KiB


# ---------------------------------------------------------------- bodies

class GenBody(io.RawIOBase):
    """`size` deterministic pseudo-random bytes, generated block by block on demand: a seekable
    stream boto3 can hash, rewind and send without the whole body ever being in memory."""

    def __init__(self, seed: int, size: int) -> None:
        super().__init__()
        self.seed, self.size, self.pos = seed, size, 0
        self._cached: tuple[int, bytes] | None = None

    def _block(self, n: int) -> bytes:
        if self._cached is None or self._cached[0] != n:
            self._cached = (n, random.Random(self.seed * 1_000_003 + n).randbytes(GEN_BLOCK))
        return self._cached[1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return self.size

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        out = bytearray()
        while len(out) < n:
            block, off = divmod(self.pos, GEN_BLOCK)
            chunk = self._block(block)[off:off + n - len(out)]
            out += chunk
            self.pos += len(chunk)
        return bytes(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def md5(self) -> str:
        h = hashlib.md5()
        for start in range(0, self.size, GEN_BLOCK):
            block, _ = divmod(start, GEN_BLOCK)
            h.update(self._block(block)[:self.size - start])
        return h.hexdigest()


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 * MiB):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- statistics

@dataclass
class Summary:
    seed: int = 0
    kills: int = 0
    gateways: int = 0
    workers: int = 0
    seconds: float = 0.0
    teardown_seconds: float = 0.0
    requests: int = 0
    acked_writes: int = 0
    acked_deletes: int = 0
    interrupted: int = 0            # writes/deletes not acknowledged (outcome ambiguous)
    status_503: int = 0
    status_5xx: int = 0             # 5xx other than 503: must be 0
    client_errors: int = 0          # timeouts, connections dropped mid-body
    checked_keys: int = 0
    checked_versions: int = 0
    lost: int = 0                   # acknowledged writes not read back identical: must be 0
    resurrected: int = 0            # acknowledged deletes not gone: must be 0
    orphans: int = 0
    interrupted_completes: int = 0  # scrub interruptedCompletes (explained by interrupted Completes)
    kept_after_lost_answer: int = 0  # blobs a gateway kept (logged leaked) that metadata references
    orphans_explained: Counter = field(default_factory=Counter)
    repaired_orphans: int = 0
    scrub: dict[str, int] = field(default_factory=dict)
    leftover_uploads: int = 0
    tmp_files: int = 0
    ops: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    fuzz: Any = None
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, value) pairs, counting the pairs.
        return {k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()}

    def text(self) -> str:
        lines = [
            f"soak (seed {self.seed}): {self.kills} dmd kills, {self.gateways} gateways, {self.workers} workers, {self.seconds:.1f} s",
            f"  requests {self.requests}  acknowledged writes {self.acked_writes}  acknowledged deletes "
            f"{self.acked_deletes}  interrupted (ambiguous) {self.interrupted}",
            f"  503 {self.status_503}  other 5xx {self.status_5xx}  client-side errors {self.client_errors}",
            f"  final check: {self.checked_keys} keys, {self.checked_versions} versions; lost {self.lost}, "
            f"deletes undone {self.resurrected}",
            f"  scrub: orphan blobs {self.orphans} (explained: {dict(self.orphans_explained)}), repaired "
            f"{self.repaired_orphans}; other findings {self.scrub}; leftover uploads {self.leftover_uploads}; "
            f"files in .tmp {self.tmp_files}; kept after a lost answer {self.kept_after_lost_answer} (new data a "
            f"gateway did not free because its commit's answer was lost, and which the commit uses); "
            f"interrupted completes {self.interrupted_completes}",
            f"  ops {dict(sorted(self.ops.items()))}",
            f"  statuses {dict(sorted(self.statuses.items()))}",
        ]
        if self.fuzz is not None:
            lines.append(f"  fuzz {self.fuzz!r:.500}")
        lines.append(f"  violations {len(self.violations)}")
        lines += [f"    - {v}" for v in self.violations[:50]]
        return "\n".join(lines)


class Outcome:
    """What one request did: ok, or the error class the model needs."""
    __slots__ = ("ok", "status", "code", "timeout", "result", "error")

    def __init__(self, ok: bool, result: Any = None, status: int | None = None, code: str = "",
                 timeout: bool = False, error: str = "") -> None:
        self.ok, self.result, self.status, self.code, self.timeout, self.error = ok, result, status, code, timeout, error


# ---------------------------------------------------------------- the model

@dataclass
class KeyModel:
    acked: str = ABSENT                              # last acknowledged outcome
    extra: set[str] = field(default_factory=set)     # unacknowledged outcomes since
    timed_out: set[str] = field(default_factory=set)  # outcomes that may land any time later

    def allowed(self) -> set[str]:
        return {self.acked} | self.extra

    def ack(self, token: str) -> None:
        self.acked = token
        self.extra = {t for t in self.extra if t in self.timed_out}

    def fail(self, token: str, timeout: bool) -> None:
        self.extra.add(token)
        if timeout:
            self.timed_out.add(token)


@dataclass
class VersionedKey:
    current: KeyModel = field(default_factory=KeyModel)
    order: list[str] = field(default_factory=list)          # acknowledged version ids, oldest first
    versions: dict[str, str] = field(default_factory=dict)  # vid -> md5 or MARKER
    deleted: set[str] = field(default_factory=set)          # acknowledged deletes by version id
    maybe_deleted: set[str] = field(default_factory=set)    # unacknowledged deletes by version id
    unacked_etags: set[str] = field(default_factory=set)    # md5 of unacknowledged PUTs
    unacked_markers: int = 0

    def live(self) -> list[str]:
        return [v for v in self.order if v not in self.deleted]


class Model:
    """Everything the workers learned, under one lock (cheap next to a request)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.plain: dict[str, KeyModel] = {}
        self.versioned: dict[str, VersionedKey] = {}
        self.interrupted_bodies: set[str] = set()   # md5 of bodies/parts of unacknowledged writes
        self.replaced_maybe: set[str] = set()       # md5 an interrupted write/delete may have replaced
        self.interrupted_uploads: set[str] = set()  # upload ids whose UploadPart/Complete/Abort failed
        self.complete_interrupted: set[str] = set()  # upload ids whose Complete was not acknowledged
        self.upload_parts: dict[str, set[str]] = {}  # upload id -> md5 of its parts
        self.interrupted_vkeys: set[str] = set()


# ---------------------------------------------------------------- the run

@dataclass
class Options:
    kills: int = 20
    gateways: int = 2
    workers: int = 6
    min_interval: float = 1.0       # seconds of load between a restart and the next kill
    max_interval: float = 4.0
    max_down: float = 1.5           # seconds the dmd stays dead
    settle: float = 3.0             # seconds of load after the last restart
    retry_window_ms: int = 5000
    large_max_mib: int = 4
    seed: int | None = None
    fuzz: int = 0
    workdir: Path | None = None
    keep: bool = False
    verbose: bool = False


def make_client(endpoint: str):
    cfg = BotoConfig(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1, "mode": "standard"},
                     connect_timeout=5, read_timeout=60, max_pool_connections=4)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1", config=cfg)


class Soak:
    def __init__(self, opts: Options, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
        self.summary = Summary(seed=self.seed, gateways=opts.gateways, workers=opts.workers)
        self.model = Model()
        self.stats_lock = threading.Lock()
        self.stop = threading.Event()
        self.dmd: Dmd | None = None
        self.gateways: list[Gateway] = []
        self.clients: list[list[Any]] = []
        self.body_seq = 0

    # -- bookkeeping ---------------------------------------------------------------------------

    def violation(self, text: str) -> None:
        with self.stats_lock:
            self.summary.violations.append(text)
        if self.opts.verbose:
            print(f"VIOLATION: {text}", file=sys.stderr, flush=True)

    def call(self, op: str, fn: Callable[..., Any], **kw: Any) -> Outcome:
        """One request, counted; a 5xx other than 503 is a violation wherever it comes from."""
        try:
            result = fn(**kw)
            out = Outcome(True, result, 200)
        except ClientError as exc:
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code", "")
            out = Outcome(False, status=status, code=code, error=f"{status} {code} rid={meta.get('RequestId')}")
        except BotoCoreError as exc:
            # A timeout, a dropped connection: the request may still be running in the gateway,
            # so a write's outcome may land later than writes acknowledged after it.
            out = Outcome(False, timeout=True, error=repr(exc))
        with self.stats_lock:
            s = self.summary
            s.requests += 1
            s.ops[op] += 1
            key = "ok" if out.ok else (str(out.status) if out.status else "client")
            s.statuses[key] += 1
            if out.status == 503:
                s.status_503 += 1
            elif out.status is not None and out.status >= 500:
                s.status_5xx += 1
            elif not out.ok and out.status is None:
                s.client_errors += 1
        if not out.ok and out.status is not None and out.status >= 500 and out.status != 503:
            self.violation(f"{op} {kw.get('Key', '')}: {out.error}")
        return out

    def unexpected(self, op: str, key: str, out: Outcome) -> None:
        """A 4xx the model did not allow."""
        if not out.ok and out.status is not None and 400 <= out.status < 500:
            self.violation(f"{op} {key}: unexpected {out.error}")

    def next_seed(self) -> int:
        with self.stats_lock:
            self.body_seq += 1
            return self.seed * 7919 + self.body_seq

    def acked(self, delete: bool = False) -> None:
        with self.stats_lock:
            if delete:
                self.summary.acked_deletes += 1
            else:
                self.summary.acked_writes += 1

    def interrupted(self) -> None:
        with self.stats_lock:
            self.summary.interrupted += 1

    # -- reading -------------------------------------------------------------------------------

    def read_md5(self, s3, op: str, **kw: Any) -> tuple[str | None, Outcome]:
        """MD5 of an object's body (streamed), ABSENT on 404, None if the read failed otherwise."""
        out = self.call(op, s3.get_object, **kw)
        if not out.ok:
            return (ABSENT if out.status == 404 else None), out
        h = hashlib.md5()
        try:
            for chunk in out.result["Body"].iter_chunks(1 * MiB):
                h.update(chunk)
        except FlexibleChecksumError as exc:   # the body does not match the checksum it was sent with
            self.violation(f"{op} {kw.get('Key')}: {exc}")
            return None, Outcome(False, error=repr(exc))
        except (BotoCoreError, OSError, ValueError) as exc:   # the body broke off mid-way
            with self.stats_lock:
                self.summary.client_errors += 1
            return None, Outcome(False, error=repr(exc))
        return h.hexdigest(), out

    # -- the plain bucket ----------------------------------------------------------------------

    def plain_write(self, s3, rng: random.Random, key: str, kind: str) -> None:
        m = self.model
        with m.lock:
            before = m.plain.setdefault(key, KeyModel()).allowed()
        if kind == "delete":
            out = self.call("DeleteObject", s3.delete_object, Bucket=PLAIN, Key=key)
            token = ABSENT
        elif kind == "mpu":
            self.multipart(s3, rng, key)
            return
        else:
            size = rng.randrange(64 * KiB + 1) if kind == "small" else rng.randrange(1 * MiB, self.opts.large_max_mib * MiB)
            body = GenBody(self.next_seed(), size)
            token = body.md5() if size else hashlib.md5(b"").hexdigest()
            out = self.call("PutObject" if kind == "small" else "PutObject(large)", s3.put_object,
                            Bucket=PLAIN, Key=key, Body=body)
            if out.ok and out.result.get("ETag", "").strip('"') != token:
                self.violation(f"PutObject {key}: ETag {out.result.get('ETag')} != md5 {token}")
        self.settle_write(key, token, out, before, delete=kind == "delete")

    def settle_write(self, key: str, token: str, out: Outcome, before: set[str], delete: bool = False) -> None:
        m = self.model
        with m.lock:
            km = m.plain[key]
            if out.ok:
                km.ack(token)
            else:
                km.fail(token, out.timeout)
                if token != ABSENT:
                    m.interrupted_bodies.add(token)
                m.replaced_maybe |= before - {ABSENT}
        if out.ok:
            self.acked(delete)
        else:
            self.interrupted()
            self.unexpected("write", key, out)

    def multipart(self, s3, rng: random.Random, key: str) -> None:
        m = self.model
        with m.lock:
            before = m.plain[key].allowed()
        out = self.call("CreateMultipartUpload", s3.create_multipart_upload, Bucket=PLAIN, Key=key)
        if not out.ok:
            self.unexpected("CreateMultipartUpload", key, out)
            return
        upload = out.result["UploadId"]
        nparts = rng.choice((2, 3))
        whole = hashlib.md5()
        etags = []
        for number in range(1, nparts + 1):
            size = 5 * MiB if number < nparts else rng.randrange(1, 5 * MiB)
            body = GenBody(self.next_seed(), size)
            part = hashlib.md5()
            for start in range(0, size, GEN_BLOCK):
                block = body._block(start // GEN_BLOCK)[:size - start]
                part.update(block)
                whole.update(block)
            part_md5 = part.hexdigest()
            with m.lock:
                m.upload_parts.setdefault(upload, set()).add(part_md5)
            out = self.call("UploadPart", s3.upload_part, Bucket=PLAIN, Key=key, UploadId=upload,
                            PartNumber=number, Body=body)
            if not out.ok:
                with m.lock:
                    m.interrupted_bodies.add(part_md5)
                    m.interrupted_uploads.add(upload)
                self.unexpected("UploadPart", key, out)
                self.interrupted()
                ab = self.call("AbortMultipartUpload", s3.abort_multipart_upload, Bucket=PLAIN, Key=key,
                               UploadId=upload)
                if not ab.ok and ab.status not in (404, 503):
                    self.unexpected("AbortMultipartUpload", key, ab)
                return
            if out.result["ETag"].strip('"') != part_md5:
                self.violation(f"UploadPart {key} #{number}: ETag {out.result['ETag']} != md5 {part_md5}")
            etags.append({"PartNumber": number, "ETag": out.result["ETag"]})
        token = whole.hexdigest()
        out = self.call("CompleteMultipartUpload", s3.complete_multipart_upload, Bucket=PLAIN, Key=key,
                        UploadId=upload, MultipartUpload={"Parts": etags})
        if not out.ok:
            with m.lock:
                m.interrupted_uploads.add(upload)
                m.complete_interrupted.add(upload)
                m.interrupted_bodies |= m.upload_parts.get(upload, set())
        self.settle_write(key, token, out, before)

    def plain_read(self, s3, key: str) -> None:
        m = self.model
        with m.lock:
            allowed = m.plain.setdefault(key, KeyModel()).allowed()
        got, out = self.read_md5(s3, "GetObject", Bucket=PLAIN, Key=key)
        if got is None:
            if out.status is not None and out.status < 500:
                self.violation(f"GetObject {PLAIN}/{key}: {out.error}")
            return
        with m.lock:   # a write that timed out may have landed meanwhile
            allowed |= m.plain[key].allowed()
        if got not in allowed:
            self.violation(f"GetObject {PLAIN}/{key}: read {got}, allowed {sorted(allowed)}")

    def plain_list(self, s3, n: int) -> None:
        m = self.model
        prefix = f"w{n}/"
        out = self.call("ListObjectsV2(delimiter)", s3.list_objects_v2, Bucket=PLAIN, Prefix=prefix, Delimiter="/")
        if not out.ok:
            self.unexpected("ListObjectsV2", prefix, out)
            return
        if out.result.get("Contents"):
            self.violation(f"ListObjectsV2 delimiter: keys above the delimiter {out.result['Contents'][:2]}")
        prefixes = {p["Prefix"] for p in out.result.get("CommonPrefixes", [])}
        listed: set[str] = set()
        for sub in ("a/", "b/"):
            token = None
            while True:
                kw: dict[str, Any] = {"Bucket": PLAIN, "Prefix": prefix + sub, "MaxKeys": 5}
                if token:
                    kw["ContinuationToken"] = token
                page = self.call("ListObjectsV2(page)", s3.list_objects_v2, **kw)
                if not page.ok:
                    self.unexpected("ListObjectsV2", prefix + sub, page)
                    return
                listed |= {o["Key"] for o in page.result.get("Contents", [])}
                if not page.result.get("IsTruncated"):
                    break
                token = page.result["NextContinuationToken"]
        with m.lock:
            models = {k: km.allowed() for k, km in m.plain.items() if k.startswith(prefix)}
        for key, allowed in models.items():
            if ABSENT not in allowed and key not in listed:
                self.violation(f"ListObjectsV2: {key} (acknowledged, present) not listed")
            if allowed == {ABSENT} and key in listed:
                self.violation(f"ListObjectsV2: {key} (acknowledged deleted) listed")
            if ABSENT not in allowed and prefix + key[len(prefix):].split("/")[0] + "/" not in prefixes:
                self.violation(f"ListObjectsV2 delimiter: no common prefix for present {key}")

    # -- the versioned bucket ------------------------------------------------------------------

    def vput(self, s3, rng: random.Random, key: str) -> None:
        m = self.model
        body = GenBody(self.next_seed(), rng.randrange(1, 64 * KiB + 1))
        token = body.md5()
        out = self.call("PutObject(versioned)", s3.put_object, Bucket=VERSIONED, Key=key, Body=body)
        with m.lock:
            vk = m.versioned.setdefault(key, VersionedKey())
            if out.ok:
                vid = out.result.get("VersionId")
                if not vid:
                    self.violation(f"PutObject versioned {key}: no version id")
                    return
                vk.current.ack(token)
                vk.order.append(vid)
                vk.versions[vid] = token
            else:
                vk.current.fail(token, out.timeout)
                vk.unacked_etags.add(token)
                m.interrupted_bodies.add(token)
                m.interrupted_vkeys.add(key)
        self.acked() if out.ok else (self.interrupted(), self.unexpected("PutObject", key, out))

    def vmarker(self, s3, key: str) -> None:
        m = self.model
        out = self.call("DeleteObject(marker)", s3.delete_object, Bucket=VERSIONED, Key=key)
        with m.lock:
            vk = m.versioned.setdefault(key, VersionedKey())
            if out.ok:
                vid = out.result.get("VersionId")
                if not vid or not out.result.get("DeleteMarker"):
                    self.violation(f"DeleteObject versioned {key}: no delete marker in {out.result}")
                    return
                vk.current.ack(ABSENT)
                vk.order.append(vid)
                vk.versions[vid] = MARKER
            else:
                vk.current.fail(ABSENT, out.timeout)
                vk.unacked_markers += 1
                m.interrupted_vkeys.add(key)
        self.acked(delete=True) if out.ok else (self.interrupted(), self.unexpected("DeleteObject", key, out))

    def vdelete_version(self, s3, rng: random.Random, key: str) -> None:
        m = self.model
        with m.lock:
            vk = m.versioned.setdefault(key, VersionedKey())
            candidates = [v for v in vk.live()[:-1]]    # never the newest acknowledged one
            if not candidates:
                return
            vid = rng.choice(candidates)
        out = self.call("DeleteObject(version)", s3.delete_object, Bucket=VERSIONED, Key=key, VersionId=vid)
        with m.lock:
            if out.ok:
                vk.deleted.add(vid)
            else:
                vk.maybe_deleted.add(vid)
                m.interrupted_vkeys.add(key)
                if vk.versions[vid] != MARKER:
                    m.replaced_maybe.add(vk.versions[vid])
        self.acked(delete=True) if out.ok else (self.interrupted(), self.unexpected("DeleteObject", key, out))

    def vread(self, s3, rng: random.Random, key: str) -> None:
        m = self.model
        with m.lock:
            vk = m.versioned.setdefault(key, VersionedKey())
            puts = [v for v in vk.live() if vk.versions[v] != MARKER]
            allowed = vk.current.allowed()
        if puts and rng.random() < 0.5:
            vid = rng.choice(puts)
            got, out = self.read_md5(s3, "GetObject(version)", Bucket=VERSIONED, Key=key, VersionId=vid)
            if got is None:
                if out.status is not None and out.status < 500:
                    self.violation(f"GetObject {key}?versionId={vid}: {out.error}")
                return
            with m.lock:
                gone_ok = vid in vk.maybe_deleted
            if got != vk.versions[vid] and not (got == ABSENT and gone_ok):
                self.violation(f"GetObject {key}?versionId={vid}: read {got}, acknowledged {vk.versions[vid]}")
            return
        got, out = self.read_md5(s3, "GetObject(versioned)", Bucket=VERSIONED, Key=key)
        if got is None:
            if out.status is not None and out.status < 500:
                self.violation(f"GetObject {VERSIONED}/{key}: {out.error}")
            return
        with m.lock:
            allowed |= vk.current.allowed()
        if got not in allowed:
            self.violation(f"GetObject {VERSIONED}/{key}: read {got}, allowed {sorted(allowed)}")

    def list_versions(self, s3, prefix: str) -> dict[str, dict[str, str]] | None:
        """key -> {vid: ETag or MARKER} of every version under prefix (all pages), None on failure."""
        found: dict[str, dict[str, str]] = {}
        kw: dict[str, Any] = {"Bucket": VERSIONED, "Prefix": prefix, "MaxKeys": 50}
        while True:
            out = self.call("ListObjectVersions", s3.list_object_versions, **kw)
            if not out.ok:
                self.unexpected("ListObjectVersions", prefix, out)
                return None
            for v in out.result.get("Versions", []):
                found.setdefault(v["Key"], {})[v["VersionId"]] = v["ETag"].strip('"')
            for d in out.result.get("DeleteMarkers", []):
                found.setdefault(d["Key"], {})[d["VersionId"]] = MARKER
            if not out.result.get("IsTruncated"):
                return found
            kw["KeyMarker"] = out.result["NextKeyMarker"]
            kw["VersionIdMarker"] = out.result["NextVersionIdMarker"]

    def check_versions(self, key: str, listed: dict[str, str], final: bool) -> int:
        """Compare one key's listed versions with the model; the number of versions checked."""
        m = self.model
        with m.lock:
            vk = m.versioned.get(key) or VersionedKey()
            versions, deleted, maybe = dict(vk.versions), set(vk.deleted), set(vk.maybe_deleted)
            unacked_etags, unacked_markers = set(vk.unacked_etags), vk.unacked_markers
        for vid, token in versions.items():
            if vid in deleted:
                if vid in listed:
                    self.violation(f"ListObjectVersions {key}: version {vid} listed after its acknowledged delete")
                    with self.stats_lock:
                        self.summary.resurrected += final
            elif vid not in listed and vid not in maybe:
                self.violation(f"ListObjectVersions {key}: acknowledged version {vid} missing")
                with self.stats_lock:
                    self.summary.lost += final
            elif vid in listed and token != MARKER and listed[vid] != token:
                self.violation(f"ListObjectVersions {key}: version {vid} ETag {listed[vid]} != {token}")
        extra = {v: t for v, t in listed.items() if v not in versions}
        markers = sum(1 for t in extra.values() if t == MARKER)
        for vid, etag in extra.items():
            if etag != MARKER and etag not in unacked_etags:
                self.violation(f"ListObjectVersions {key}: version {vid} (ETag {etag}) no write created")
        if markers > unacked_markers:
            self.violation(f"ListObjectVersions {key}: {markers} delete markers no acknowledged delete made "
                           f"(only {unacked_markers} unacknowledged)")
        return len(versions)

    def vlist(self, s3, n: int) -> None:
        listed = self.list_versions(s3, f"w{n}/")
        if listed is None:
            return
        with self.model.lock:
            keys = [k for k in self.model.versioned if k.startswith(f"w{n}/")]
        for key in keys:
            self.check_versions(key, listed.get(key, {}), final=False)

    # -- workers -------------------------------------------------------------------------------

    PLAIN_OPS = (("small", 30), ("large", 4), ("mpu", 2), ("delete", 8), ("get", 25), ("list", 3))
    VERSIONED_OPS = (("vput", 25), ("vmarker", 6), ("vdelver", 8), ("vread", 20), ("vlist", 3))

    def worker(self, n: int) -> None:
        rng = random.Random(self.seed + n)
        ops = [(op, w) for op, w in self.PLAIN_OPS + self.VERSIONED_OPS]
        names, weights = [o for o, _ in ops], [w for _, w in ops]
        i = 0
        while not self.stop.is_set():
            s3 = self.clients[i % len(self.clients)][n]
            i += 1
            op = rng.choices(names, weights)[0]
            pkey = f"w{n}/{'ab'[rng.randrange(2)]}/k{rng.randrange(PLAIN_KEYS // 2)}"
            vkey = f"w{n}/v{rng.randrange(VERSIONED_KEYS)}"
            try:
                if op in ("small", "large", "mpu", "delete"):
                    self.plain_write(s3, rng, pkey, op)
                elif op == "get":
                    self.plain_read(s3, pkey)
                elif op == "list":
                    self.plain_list(s3, n)
                elif op == "vput":
                    self.vput(s3, rng, vkey)
                elif op == "vmarker":
                    self.vmarker(s3, vkey)
                elif op == "vdelver":
                    self.vdelete_version(s3, rng, vkey)
                elif op == "vread":
                    self.vread(s3, rng, vkey)
                else:
                    self.vlist(s3, n)
            except Exception as exc:   # a bug of the soak itself must not go unnoticed
                self.violation(f"worker {n} {op}: {type(exc).__name__}: {exc}")

    def killer(self, rng: random.Random) -> None:
        assert self.dmd is not None
        for k in range(self.opts.kills):
            if self.stop.wait(rng.uniform(self.opts.min_interval, self.opts.max_interval)):
                return
            self.dmd.kill()
            self.summary.kills += 1
            time.sleep(rng.uniform(0.0, self.opts.max_down))
            for attempt in range(5):
                try:
                    self.dmd.start()
                    break
                except Exception as exc:
                    if attempt == 4:
                        self.violation(f"the dmd did not restart after kill {k + 1}: {exc}")
                        self.stop.set()
                        return
                    time.sleep(1)
            if self.opts.verbose:
                print(f"kill {k + 1}/{self.opts.kills} done; {self.summary.requests} requests so far",
                      file=sys.stderr, flush=True)

    # -- setup, run, verify --------------------------------------------------------------------

    def start(self) -> None:
        self.dmd = start_dmd(self.workdir / "dmd")
        env = {"S3_RETRY_WINDOW_MS": str(self.opts.retry_window_ms), "LOG_LEVEL": "info"}
        for g in range(self.opts.gateways):
            self.gateways.append(start_gateway(self.workdir / f"gw{g}", self.dmd, env=env))
        # Clients are made here, one per worker and gateway: boto3 clients are made in one thread.
        self.clients = [[make_client(gw.url) for _ in range(self.opts.workers)] for gw in self.gateways]
        admin = make_client(self.gateways[0].url)
        admin.create_bucket(Bucket=PLAIN)
        admin.create_bucket(Bucket=VERSIONED)
        admin.put_bucket_versioning(Bucket=VERSIONED, VersioningConfiguration={"Status": "Enabled"})

    def close(self) -> None:
        for gw in self.gateways:
            gw.stop()
        if self.dmd is not None:
            self.dmd.stop()

    def run_load(self) -> None:
        rng = random.Random(self.seed ^ 0x5EED)
        threads = [threading.Thread(target=self.worker, args=(n,), name=f"soak-w{n}", daemon=True)
                   for n in range(self.opts.workers)]
        fuzz_thread = None
        if self.opts.fuzz:
            fuzz_thread = threading.Thread(target=self.fuzz, name="soak-fuzz", daemon=True)
        killer = threading.Thread(target=self.killer, args=(rng,), name="soak-killer", daemon=True)
        for t in threads:
            t.start()
        if fuzz_thread is not None:
            fuzz_thread.start()
        killer.start()
        killer.join()
        self.stop.wait(self.opts.settle)     # load on a live dmd after the last restart
        self.stop.set()
        for t in threads:
            t.join(180)
            if t.is_alive():
                self.violation(f"{t.name} still running 180 s after the stop")
        if fuzz_thread is not None:
            fuzz_thread.join(600)

    def fuzz(self) -> None:
        try:
            from tests.fuzz import run_fuzz   # optional: another module, imported only when asked for
        except ImportError as exc:
            self.summary.fuzz = f"not run: {exc}"
            return
        try:
            self.summary.fuzz = run_fuzz(self.gateways[-1].url, self.opts.fuzz, self.seed)
        except Exception as exc:
            self.violation(f"fuzz: {type(exc).__name__}: {exc}")

    def wait_ready(self, s3) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.head_bucket(Bucket=PLAIN)
                return
            except (ClientError, BotoCoreError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def verify(self) -> None:
        """After the load: every key of the model, through every gateway in turn."""
        readers = [make_client(gw.url) for gw in self.gateways]
        for r in readers:
            self.wait_ready(r)
        m = self.model
        s = self.summary
        for i, (key, km) in enumerate(sorted(m.plain.items())):
            got, out = self.read_md5(readers[i % len(readers)], "final GetObject", Bucket=PLAIN, Key=key)
            s.checked_keys += 1
            if got in km.allowed():
                continue
            if km.acked == ABSENT and got != ABSENT:
                s.resurrected += 1
            else:
                s.lost += 1
            self.violation(f"final {PLAIN}/{key}: read {got} ({out.error}), acknowledged {km.acked}, "
                           f"allowed {sorted(km.allowed())}")
        listed = self.list_versions(readers[0], "w") or {}
        for i, (key, vk) in enumerate(sorted(m.versioned.items())):
            s.checked_keys += 1
            s.checked_versions += self.check_versions(key, listed.get(key, {}), final=True)
            reader = readers[i % len(readers)]
            got, out = self.read_md5(reader, "final GetObject", Bucket=VERSIONED, Key=key)
            if got not in vk.current.allowed():
                s.lost += 1
                self.violation(f"final {VERSIONED}/{key}: read {got} ({out.error}), allowed {sorted(vk.current.allowed())}")
            for vid, token in vk.versions.items():
                if token == MARKER:
                    continue
                got, out = self.read_md5(reader, "final GetObject(version)", Bucket=VERSIONED, Key=key, VersionId=vid)
                if vid in vk.deleted:
                    if got != ABSENT:
                        s.resurrected += 1
                        self.violation(f"final {key}?versionId={vid}: deleted (acknowledged) but read {got}")
                elif got != token and not (got == ABSENT and vid in vk.maybe_deleted):
                    s.lost += 1
                    self.violation(f"final {key}?versionId={vid}: read {got} ({out.error}), acknowledged {token}")
        for bucket in (PLAIN, VERSIONED):
            out = self.call("ListMultipartUploads", readers[0].list_multipart_uploads, Bucket=bucket)
            if out.ok:
                s.leftover_uploads += len(out.result.get("Uploads", []))

    # -- the scrub -----------------------------------------------------------------------------

    def scrub(self, *args: str) -> tuple[int, dict[str, Any]]:
        assert self.dmd is not None
        env = {**self.dmd.env, "METADATA_HOST": "127.0.0.1", "METADATA_PORT": str(self.dmd.metadata_port)}
        out = self.workdir / f"scrub-{len(list(self.workdir.glob('scrub-*.json')))}.json"
        r = subprocess.run([sys.executable, "-m", "dmd.scrub", "--grace-seconds", "0", "--json", str(out), *args],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        if r.returncode not in (0, 1):
            raise RuntimeError(f"scrub failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.returncode, json.loads(out.read_text())

    def leaked_blobs(self) -> set[str]:
        """Blob keys the gateways logged as leaked (a free that failed while the dmd was away)."""
        leaked: set[str] = set()
        for gw in self.gateways:
            for line in gw.log_text().splitlines():
                if "leakedBlobs" not in line:
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                for name, value in doc.items():
                    if name.endswith("leakedBlobs") and isinstance(value, list):
                        leaked |= {str(v) for v in value}
        return leaked

    def check_scrub(self) -> None:
        s, m = self.summary, self.model
        code, report = self.scrub("--verify-data")
        s.interrupted_completes = len(report["interruptedCompletes"])
        for entry in report["interruptedCompletes"]:
            if entry.get("uploadId") not in m.complete_interrupted:
                self.violation(f"scrub interrupted complete of an upload whose Complete was not interrupted: {entry}")
        for kind in ("missingData", "sizeMismatch", "md5Mismatch", "staleUploads"):
            if report[kind]:
                s.scrub[kind] = len(report[kind])
                self.violation(f"scrub {kind}: {len(report[kind])}, e.g. {report[kind][:3]}")
        for entry in report["orphanParts"]:
            s.scrub["orphanParts"] = s.scrub.get("orphanParts", 0) + 1
            if entry.get("uploadId") not in m.interrupted_uploads:
                self.violation(f"scrub orphan part of an upload nothing interrupted: {entry}")
        for entry in report["placeholders"]:
            s.scrub["placeholders"] = s.scrub.get("placeholders", 0) + 1
            if entry.get("bucket") != VERSIONED or entry.get("key") not in m.interrupted_vkeys:
                self.violation(f"scrub placeholder on a key nothing interrupted: {entry}")
        leaked = self.leaked_blobs()
        upload_parts = set().union(*[m.upload_parts.get(u, set()) for u in m.interrupted_uploads]) \
            if m.interrupted_uploads else set()
        s.orphans = len(report["orphanBlobs"])
        orphan_keys = {e["blob"] for e in report["orphanBlobs"]}
        data_path = Path(report["summary"]["dataPath"])
        for blob in leaked - orphan_keys:
            # Logged as leaked, yet not an orphan: it exists only if metadata references it, i.e.
            # the data of a commit that landed although its answer was lost, which the gateway kept.
            if any(data_path.glob(f"*/{blob}")):
                s.kept_after_lost_answer += 1
        for entry in report["orphanBlobs"]:
            path = Path(entry["path"])
            try:
                digest = _md5_file(path)
            except FileNotFoundError:
                digest = ""
            if entry["blob"] in leaked:
                s.orphans_explained["leaked by a gateway (logged)"] += 1
            elif digest in m.interrupted_bodies:
                s.orphans_explained["data of an interrupted write"] += 1
            elif digest in m.replaced_maybe:
                s.orphans_explained["replaced by an interrupted write/delete"] += 1
            elif digest in upload_parts:
                s.orphans_explained["part of an interrupted upload"] += 1
            else:
                self.violation(f"scrub orphan blob nothing explains: {entry}")
        # Repair what is explained, then the store must be clean.
        if code != 0:
            _, repaired = self.scrub("--repair")
            s.repaired_orphans = len(repaired.get("repaired", {}).get("orphanBlobs", []))
            _, again = self.scrub("--verify-data")
            dirty = {k: again[k] for k in ("missingData", "sizeMismatch", "md5Mismatch", "orphanBlobs",
                                            "placeholders", "staleUploads", "orphanParts",
                                            "interruptedCompletes") if again[k]}
            if dirty:
                self.violation(f"scrub after --repair is not clean: {json.dumps(dirty)[:1000]}")
        assert self.dmd is not None
        tmp = self.dmd.data_path / ".tmp"
        s.tmp_files = len(list(tmp.iterdir())) if tmp.is_dir() else 0

    def run(self) -> Summary:
        started = time.monotonic()
        try:
            self.start()
            self.run_load()
            self.verify()
            self.check_scrub()
        finally:
            self.stop.set()
            self.summary.seconds = time.monotonic() - started
            stopping = time.monotonic()
            self.close()
            self.summary.teardown_seconds = time.monotonic() - stopping
        return self.summary


def run_soak(opts: Options) -> Summary:
    """Run one soak; the caller checks `summary.violations` (empty: every check held)."""
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return Soak(opts, workdir).run()
    finally:
        if opts.workdir is None and not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100, help="dmd SIGKILL+restart cycles (default 100)")
    p.add_argument("--gateways", type=int, default=2)
    p.add_argument("--workers", type=int, default=6, help="load threads (default 6)")
    p.add_argument("--min-interval", type=float, default=1.0, help="min seconds of load before a kill")
    p.add_argument("--max-interval", type=float, default=4.0, help="max seconds of load before a kill")
    p.add_argument("--max-down", type=float, default=1.5, help="max seconds the dmd stays down")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fuzz", type=int, default=0, metavar="N",
                   help="also run tests.fuzz.run_fuzz(endpoint, N, seed) during the soak")
    p.add_argument("--dir", type=Path, default=None, help="work directory (kept); default a temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp work directory")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    opts = Options(kills=a.kills, gateways=a.gateways, workers=a.workers, min_interval=a.min_interval,
                   max_interval=a.max_interval, max_down=a.max_down, seed=a.seed, fuzz=a.fuzz,
                   workdir=a.dir, keep=a.keep, verbose=a.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    try:
        summary = run_soak(opts)
    except Exception as exc:
        print(f"soak: setup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(summary.text())
    if a.json:
        a.json.write_text(json.dumps(summary.as_dict(), indent=2, default=str) + "\n")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
