"""`python -m dmd.scrub`: check the dmd's metadata against its data directory, online.

Runs on the dmd host while the dmd keeps serving. It reads the metadata through the dmd's RPC
(the gateway's configuration: METADATA_HOST / METADATA_PORT, DMD_SECRET; all key layout knowledge
stays in gateway/store.py) and the blob files directly under S3DATAPATH (dmd/data.py's layout).

What it reports (a JSON document on stdout, or in --json FILE):
- `missingData`: a location of an object version (or of an uploaded part) whose blob file is absent;
- `sizeMismatch`: a blob whose size differs from the location's `size`;
- `md5Mismatch` (only with --verify-data, which reads every blob): a blob whose MD5 differs from
  the one its location's `dataStoreETag` gives (checked only when that location is its part's only
  piece and the data is not encrypted);
- `orphanBlobs`: blob files no metadata references (object masters and versions, part records),
  older than --grace-seconds (a blob written since the scan began, or whose metadata is not
  committed yet, is never one);
- `placeholders`: placeholder (PHD) masters left in a bucket;
- `staleUploads`: multipart uploads initiated more than --stale-uploads-days ago;
- `orphanParts`: part records whose upload overview is gone, last modified before the grace period;
- `interruptedCompletes`: uploads a CompleteMultipartUpload claimed (`completeInProgress`) and
  committed, then died before its clean-up, and whose object has been replaced since: the data the
  leftover part records name is gone (freed with the replaced object). Not missing data: nothing
  can read it any more (a retried Complete answers NoSuchUpload); `--repair` removes the records;
- `unexpectedFiles`: files in the data directory that are not blobs (informational, never touched).

Only locations of type `file` are checked against the data directory; the others are counted in
`skipped`. `--repair` frees orphan blobs, removes orphan part records (conditionally: only if the
record is unchanged) and resolves placeholders with a read (the engine's repair); before freeing a
blob it scans the metadata again, so nothing an object or a part references is ever freed.

Exit status: 0 clean, 1 damage found (repaired or not), 2 usage, configuration or connection error.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from dmd.data import FOLDER_HASH, TMP_DIR_NAME, is_valid_key, key_folder
from shared import versionid
from shared.config import Config, ConfigError, load_config

EXIT_CLEAN, EXIT_DAMAGE, EXIT_ERROR = 0, 1, 2
DEFAULT_GRACE_SECONDS = 3600
DEFAULT_STALE_UPLOADS_DAYS = 7
READ_CHUNK = 1 << 20
DAMAGE_KINDS = ("missingData", "sizeMismatch", "md5Mismatch", "orphanBlobs", "placeholders",
                "staleUploads", "orphanParts", "interruptedCompletes")


# ---------------------------------------------------------------- progress (stderr, terminals only)

class Progress:
    """A one-line progress display on stderr, drawn only when stderr is a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool | None = None) -> None:
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.phase = ""
        self.total: int | None = None
        self.done = 0
        self._last = 0.0

    def start(self, phase: str, total: int | None = None) -> None:
        self.phase, self.total, self.done = phase, total, 0
        self._draw(force=True)

    def step(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            text = f"{self.phase:<22} [{bar:<30}] {self.done}/{self.total}"
        else:
            text = f"{self.phase:<22} {self.done}"
        self.stream.write("\r" + text[:120].ljust(80))
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- helpers

def _parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO timestamp (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _external_vid(md: dict[str, Any]) -> str:
    """The version id S3 shows for a stored version (as gateway/versioning.external_version_id)."""
    vid = md.get("versionId")
    if not vid or md.get("isNull"):
        return "null"
    return versionid.encode(vid)


def _md5_of_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Ref:
    """One reference to a blob: an object version's location or an uploaded part's."""
    blob: str
    size: int | None
    md5: str | None          # the blob's own MD5 when its location gives one, else None
    owner: dict[str, Any]    # bucket/key/versionId or bucket/uploadId/partNumber
    kind: str                # "object" | "part"


@dataclass
class Scan:
    """What one pass over the metadata found."""
    refs: dict[str, list[Ref]] = field(default_factory=dict)   # blob key -> references (file locations)
    skipped: dict[str, int] = field(default_factory=dict)      # "<location> (<type>)" -> count
    placeholders: list[dict[str, Any]] = field(default_factory=list)
    stale_uploads: list[dict[str, Any]] = field(default_factory=list)
    orphan_parts: list[dict[str, Any]] = field(default_factory=list)
    # uploads claimed by a Complete: upload id -> (bucket, key, overview text)
    claimed: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"buckets": 0, "objectRecords": 0, "uploads": 0,
                                                            "parts": 0, "locations": 0})


class Scrubber:
    def __init__(self, config: Config, store: Any, *, grace_s: float, stale_days: float, verify_data: bool,
                 repair: bool, progress: Progress) -> None:
        self.config = config
        self.store = store
        self.data_path = Path(config.data_path)
        self.grace_s = grace_s
        self.stale_s = stale_days * 86400
        self.verify_data = verify_data
        self.repair = repair
        self.progress = progress

    # -- metadata ------------------------------------------------------------------------------

    def _file_location(self, loc: dict[str, Any], scan: Scan) -> bool:
        """Whether `loc` is data of a `file` location (this dmd's data directory)."""
        name = loc.get("dataStoreName") or "us-east-1"
        location = self.config.locations.get(name)
        kind = location.type if location is not None else "unknown"
        if kind == "file" and self.config.data_backend != "mem":
            return True
        label = f"{name} ({kind})"
        scan.skipped[label] = scan.skipped.get(label, 0) + 1
        return False

    def _add_locations(self, scan: Scan, locations: list[dict[str, Any]] | None, owner: dict[str, Any],
                       kind: str) -> None:
        locations = [loc for loc in locations or [] if isinstance(loc, dict) and loc.get("key")]
        by_part: dict[str, int] = {}
        for loc in locations:
            part = str(loc.get("dataStoreETag", "")).partition(":")[0]
            by_part[part] = by_part.get(part, 0) + 1
        for loc in locations:
            if not self._file_location(loc, scan):
                continue
            scan.counts["locations"] += 1
            etag = str(loc.get("dataStoreETag", ""))
            part, _, md5 = etag.partition(":")
            encrypted = bool(loc.get("cryptoScheme") or loc.get("cipheredDataKey") or loc.get("sseCryptoScheme"))
            whole = by_part.get(part, 0) == 1 and len(md5) == 32 and not encrypted
            # an encrypted blob (gateway/encryption.py) holds more than its plaintext `size`
            size = loc.get("storedSize") if loc.get("sseCryptoScheme") else loc.get("size")
            scan.refs.setdefault(str(loc["key"]), []).append(
                Ref(str(loc["key"]), int(size) if isinstance(size, (int, str)) and str(size).isdigit() else None,
                    md5 if whole else None, owner, kind))

    async def scan_metadata(self, *, quiet: bool = False) -> Scan:
        scan = Scan()
        now = time.time()
        buckets = [name async for name in self.store.all_bucket_names()]
        if not quiet:
            self.progress.start("scanning metadata", len(buckets))
        for bucket in buckets:
            scan.counts["buckets"] += 1
            # Uploads first, objects second: a Complete commits the object before it removes the
            # part records, so the part data is seen under one or the other.
            overviews: set[str] = set()
            parts: list[tuple[str, int, dict[str, Any]]] = []
            async for kind, a, b, doc in self.store.all_upload_records(bucket):
                if kind == "overview":
                    scan.counts["uploads"] += 1
                    overviews.add(b)
                    if doc.get("completeInProgress"):
                        scan.claimed[b] = (bucket, a, doc)
                    initiated = _parse_time(doc.get("initiated"))
                    if initiated is not None and now - initiated > self.stale_s:
                        scan.stale_uploads.append({"bucket": bucket, "key": a, "uploadId": b,
                                                   "initiated": doc.get("initiated")})
                else:
                    scan.counts["parts"] += 1
                    parts.append((a, b, doc))
                    self._add_locations(scan, doc.get("partLocations"),
                                        {"bucket": bucket, "uploadId": a, "partNumber": b}, "part")
            for upload_id, number, doc in parts:
                if upload_id in overviews:
                    continue
                modified = _parse_time(doc.get("last-modified"))
                if modified is not None and now - modified < self.grace_s:
                    continue   # an UploadPart racing an Abort, settled by the next run
                scan.orphan_parts.append({"bucket": bucket, "uploadId": upload_id, "partNumber": number,
                                          "lastModified": doc.get("last-modified"), "_doc": doc})
            async for key, vid, md in self.store.all_object_records(bucket):
                scan.counts["objectRecords"] += 1
                if vid is None and md.is_phd:
                    scan.placeholders.append({"bucket": bucket, "key": key,
                                              "versionId": md.get("versionId")})
                    continue
                owner = {"bucket": bucket, "key": key, "versionId": _external_vid(md),
                         "internalVersionId": md.get("versionId")}
                self._add_locations(scan, md.data_locations, owner, "object")
            if not quiet:
                self.progress.step()
        if not quiet:
            self.progress.finish()
        return scan

    # -- data directory ------------------------------------------------------------------------

    def list_blobs(self) -> tuple[dict[str, os.stat_result], list[str]]:
        """Blob key -> stat of every blob file, and the paths of files that are not blobs."""
        blobs: dict[str, os.stat_result] = {}
        unexpected: list[str] = []
        try:
            top = list(os.scandir(self.data_path))
        except FileNotFoundError:
            return blobs, unexpected
        folders = [e for e in top if e.is_dir(follow_symlinks=False) and e.name.isdigit()
                   and int(e.name) < FOLDER_HASH]
        for entry in top:
            if entry.name != TMP_DIR_NAME and entry not in folders:
                unexpected.append(entry.path)
        self.progress.start("listing data files", len(folders))
        for folder in folders:
            try:
                entries = list(os.scandir(folder.path))
            except FileNotFoundError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue   # freed meanwhile
                if entry.is_file(follow_symlinks=False) and is_valid_key(entry.name) \
                        and key_folder(entry.name) == int(folder.name):
                    blobs[entry.name] = st
                else:
                    unexpected.append(entry.path)
            self.progress.step()
        self.progress.finish()
        return blobs, unexpected

    def blob_path(self, key: str) -> Path:
        return self.data_path / str(key_folder(key)) / key

    # -- checks --------------------------------------------------------------------------------

    async def _still_referenced(self, ref: Ref) -> bool:
        """Re-read the record behind `ref`: does it still reference the blob? (A version deleted
        or a part completed between the scan and the check is not damage.)"""
        owner = ref.owner
        if ref.kind == "part":
            part = await self.store.get_part(owner["bucket"], owner["uploadId"], owner["partNumber"])
            locations = part.locations if part is not None else []
        else:
            vid = owner.get("internalVersionId")
            md = await self.store.get_object(owner["bucket"], owner["key"], vid) if vid else \
                await self.store.get_object(owner["bucket"], owner["key"])
            locations = (md.data_locations or []) if md is not None else []
        return any(isinstance(loc, dict) and loc.get("key") == ref.blob for loc in locations)

    async def check_data(self, scan: Scan, report: dict[str, Any]) -> None:
        seen: set[tuple] = set()
        self.progress.start("checking data", len(scan.refs))
        for blob, refs in scan.refs.items():
            self.progress.step()
            path = self.blob_path(blob) if is_valid_key(blob) else None
            try:
                size = path.stat().st_size if path is not None else None
            except FileNotFoundError:
                size = None
            actual_md5: str | None = None
            for ref in refs:
                ident = (ref.kind, tuple(sorted((k, str(v)) for k, v in ref.owner.items()
                                                if k != "internalVersionId")), blob)
                if ident in seen:   # a versioned object's master repeats its latest version
                    continue
                seen.add(ident)
                entry = {**{k: v for k, v in ref.owner.items() if k != "internalVersionId"},
                         "blob": blob, "path": str(path) if path is not None else None}
                problem: tuple[str, dict[str, Any]] | None = None
                if size is None:
                    problem = ("missingData", entry)
                elif ref.size is not None and size != ref.size:
                    problem = ("sizeMismatch", {**entry, "expectedSize": ref.size, "actualSize": size})
                elif self.verify_data and ref.md5 is not None:
                    if actual_md5 is None:
                        try:
                            actual_md5 = await asyncio.to_thread(_md5_of_file, path)  # type: ignore[arg-type]
                        except FileNotFoundError:
                            actual_md5 = ""
                    if actual_md5 != ref.md5:
                        problem = ("md5Mismatch", {**entry, "expectedMd5": ref.md5, "actualMd5": actual_md5})
                if problem is not None and await self._still_referenced(ref):
                    upload = ref.owner.get("uploadId") if ref.kind == "part" else None
                    if problem[0] == "missingData" and upload in scan.claimed:
                        bucket, key, _ = scan.claimed[upload]
                        done = {"bucket": bucket, "key": key, "uploadId": upload}
                        if done not in report["interruptedCompletes"]:
                            report["interruptedCompletes"].append(done)
                        continue
                    report[problem[0]].append(problem[1])
        self.progress.finish()

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.time()
        report: dict[str, Any] = {kind: [] for kind in DAMAGE_KINDS}
        scan = await self.scan_metadata()
        blobs, unexpected = await asyncio.to_thread(self.list_blobs)
        await self.check_data(scan, report)
        # A blob is an orphan if no record seen references it and it is older than the grace
        # period measured from the scan's start (so no blob written during the scan qualifies).
        cutoff = started - self.grace_s
        candidates = {k: st for k, st in blobs.items() if k not in scan.refs and st.st_mtime < cutoff}
        report["orphanBlobs"] = [{"blob": k, "path": str(self.blob_path(k)), "size": st.st_size,
                                  "modified": _iso(st.st_mtime)} for k, st in sorted(candidates.items())]
        report["placeholders"] = scan.placeholders
        report["staleUploads"] = scan.stale_uploads
        report["orphanParts"] = [{k: v for k, v in p.items() if k != "_doc"} for p in scan.orphan_parts]
        report["unexpectedFiles"] = sorted(unexpected)
        damage = any(report[kind] for kind in DAMAGE_KINDS)
        if self.repair and damage:
            report["repaired"] = await self._repair(scan, candidates, started, report["interruptedCompletes"])
        report["skipped"] = {"locations": scan.skipped,
                             "note": "only locations of type 'file' (this dmd's data directory) are "
                                     "checked for data; the others are counted here"} if scan.skipped else {}
        report["summary"] = {**scan.counts, "blobFiles": len(blobs), "referencedBlobs": len(scan.refs),
                             "graceSeconds": self.grace_s, "verifyData": self.verify_data,
                             "repair": self.repair, "dataPath": str(self.data_path),
                             "started": _iso(started), "seconds": round(time.time() - started, 3),
                             "clean": not damage}
        return report

    async def _forget_interrupted_complete(self, done: dict[str, Any], released: set[str]) -> bool:
        """Remove the records an interrupted completion left (only while the overview is still the
        claimed one); the data they name that still exists becomes an orphan candidate."""
        record = await self.store.get_upload_record(done["bucket"], done["key"], done["uploadId"])
        if record is None or not record[0].complete_in_progress:
            return False
        for number, part in await self.store.parts(done["bucket"], done["uploadId"]):
            if await self.store.remove_part_if(done["bucket"], done["uploadId"], number, dict(part)):
                released |= {str(loc.get("key")) for loc in part.locations if isinstance(loc, dict)}
        return await self.store.delete_upload(done["bucket"], done["key"], done["uploadId"], record[1])

    async def _repair(self, scan: Scan, candidates: dict[str, os.stat_result], started: float,
                      report_interrupted: list[dict[str, Any]]) -> dict[str, Any]:
        repaired: dict[str, list[Any]] = {"placeholders": [], "orphanParts": [], "orphanBlobs": [],
                                          "interruptedCompletes": []}
        for phd in scan.placeholders:
            # A read resolves a placeholder (the engine drops it or promotes the newest version).
            await self.store.get_object(phd["bucket"], phd["key"])
            repaired["placeholders"].append({"bucket": phd["bucket"], "key": phd["key"]})
        released: set[str] = set()
        for part in scan.orphan_parts:
            if await self.store.upload_exists(part["bucket"], part["uploadId"]):
                continue
            if await self.store.remove_part_if(part["bucket"], part["uploadId"], part["partNumber"], part["_doc"]):
                repaired["orphanParts"].append({k: v for k, v in part.items() if k != "_doc"})
                released |= {str(loc.get("key")) for loc in part["_doc"].get("partLocations") or []
                             if isinstance(loc, dict)}
        for done in report_interrupted:
            if await self._forget_interrupted_complete(done, released):
                repaired["interruptedCompletes"].append(done)
        # The data of removed parts may now be unreferenced too.
        cutoff = started - self.grace_s
        for key in released:
            if key not in candidates and is_valid_key(key):
                try:
                    st = self.blob_path(key).stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime < cutoff:
                    candidates[key] = st
        if candidates:
            # Scan again: a blob referenced by anything committed since the first pass stays.
            again = await self.scan_metadata(quiet=True)
            for key in sorted(candidates):
                if key in again.refs:
                    continue
                path = self.blob_path(key)
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
                repaired["orphanBlobs"].append({"blob": key, "path": str(path)})
        return repaired


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dmd.scrub",
        description="Check the dmd's metadata against its data directory (online). Exit 0 clean, "
                    "1 damage found, 2 usage or connection error.")
    parser.add_argument("--json", metavar="FILE", help="write the JSON report to FILE instead of stdout")
    parser.add_argument("--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS,
                        help="blobs and part records younger than this are never orphans (default 3600)")
    parser.add_argument("--stale-uploads-days", type=float, default=DEFAULT_STALE_UPLOADS_DAYS,
                        help="report multipart uploads initiated longer ago than this (default 7)")
    parser.add_argument("--verify-data", action="store_true",
                        help="also read every blob and compare its MD5 (slow)")
    parser.add_argument("--repair", action="store_true",
                        help="free orphan blobs, remove orphan part records, resolve placeholders")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for the dmd's metadata RPC (default 10)")
    parser.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="progress bar on stderr (auto: only when stderr is a terminal)")
    args = parser.parse_args(argv)
    if args.grace_seconds < 0 or args.stale_uploads_days < 0:
        parser.error("--grace-seconds and --stale-uploads-days must not be negative")
    return args


async def _scrub(config: Config, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from gateway.store import Store
    store = Store.from_config(config)
    try:
        await asyncio.wait_for(store.connect(), args.connect_timeout)
    except BaseException as err:
        await store.close()
        if isinstance(err, asyncio.TimeoutError):
            raise ConnectionError(f"cannot connect to the metadata daemon at {config.metadata_client.host}:"
                                  f"{config.metadata_client.port} within {args.connect_timeout:g}s") from None
        raise
    try:
        scrubber = Scrubber(config, store, grace_s=args.grace_seconds, stale_days=args.stale_uploads_days,
                            verify_data=args.verify_data, repair=args.repair, progress=progress)
        return await scrubber.run()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config()
    except ConfigError as err:
        print(f"scrub: configuration error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if config.metadata_backend != "file":
        print("scrub: needs the dmd's metadata (S3METADATA=file)", file=sys.stderr)
        return EXIT_ERROR
    if not Path(config.data_path).is_dir():
        print(f"scrub: data directory {config.data_path} not found (S3DATAPATH)", file=sys.stderr)
        return EXIT_ERROR
    progress = Progress(enabled={"auto": None, "always": True, "never": False}[args.progress])
    try:
        report = asyncio.run(_scrub(config, args, progress))
    except (Exception, asyncio.TimeoutError) as err:   # connection refused, secret refused, a call timed out
        if progress.enabled:
            sys.stderr.write("\n")
        print(f"scrub: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return EXIT_CLEAN if report["summary"]["clean"] else EXIT_DAMAGE


if __name__ == "__main__":
    sys.exit(main())
