"""`python -m gateway.tools migrate-metadata --from dmd --to postgres`: copy a dmd's metadata to PostgreSQL.

Every record the store layer keeps (gateway/store.py, docs/metadata-keys.md) is copied as it is:
the bucket records (`__metastore`), the per-user bucket list (`users..bucket`), each bucket's
masters and versions (delete markers and null versions included) and its multipart records
(`mpuShadowBucket<bucket>`: overviews and parts). Data does not move: the records keep their
locations, which the postgres gateways read from the same data service.

A placeholder master (PHD, a dmd-only state, docs/versioning.md#placeholders-and-repair) is not
copied raw: it is read through the dmd, which resolves it to the newest version (or to nothing).
Rows are upserted in batches, so the copy can be run again (after an interruption, or to catch up
writes made meanwhile: stop the dmd gateways for the final pass). A progress line is printed, then
a count check per sublevel: the rows in PostgreSQL against the records read; exit status 1 on a
mismatch.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from gateway.metadata.client import MetadataClient
from gateway.store import METASTORE, USERS_BUCKET, shadow_bucket
from shared import jsoncodec, versionid
from shared.metastore.errors import MetadataError

BATCH = 500


@dataclass
class MigrationReport:
    read: dict[str, int] = field(default_factory=dict)        # sublevel -> records copied
    written: dict[str, int] = field(default_factory=dict)     # sublevel -> rows in PostgreSQL afterwards
    placeholders_resolved: int = 0
    placeholders_dropped: int = 0

    @property
    def total(self) -> int:
        return sum(self.read.values())

    @property
    def mismatches(self) -> dict[str, tuple[int, int]]:
        return {s: (n, self.written.get(s, 0)) for s, n in self.read.items() if self.written.get(s, 0) != n}


def _is_placeholder_master(key: str, value: str) -> bool:
    if versionid.SEPARATOR in key or '"isPHD"' not in value:
        return False
    try:
        doc = jsoncodec.loads(value)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("isPHD") is True


class _Progress:
    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.count = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, n: int, where: str, force: bool = False) -> None:
        self.count += n
        now = time.monotonic()
        if self.out is None or (not force and now - self._last < 0.2):
            return
        self._last = now
        rate = self.count / max(now - self.started, 1e-6)
        self.out.write(f"\r{self.count:>10} records copied ({rate:,.0f}/s)  {where[:50]:<50}")
        self.out.flush()

    def done(self) -> None:
        if self.out is not None:
            self.out.write("\n")
            self.out.flush()


async def migrate(source: MetadataClient, dest: Any, progress_out: TextIO | None = None,
                  on_sublevel: Callable[[str], None] | None = None) -> MigrationReport:
    """Copy every record of `source` (a dmd's metadata client) into `dest` (a connected
    PostgresMetadataClient); the report holds the count check."""
    report = MigrationReport()
    progress = _Progress(progress_out)

    async def copy(sublevel: str) -> None:
        if on_sublevel is not None:
            on_sublevel(sublevel)
        batch: list[tuple[str, str]] = []
        copied = 0
        stream = source.read_stream([sublevel], {})
        try:
            async for entry in stream:
                key, value = entry["key"], entry["value"]
                if _is_placeholder_master(key, value):
                    try:
                        value = await source.get([sublevel], key, {})   # the dmd resolves (and repairs) it
                        report.placeholders_resolved += 1
                    except MetadataError as exc:
                        if exc.type != "ObjNotFound":
                            raise
                        report.placeholders_dropped += 1
                        continue
                batch.append((key, value))
                if len(batch) >= BATCH:
                    await dest.bulk_put([sublevel], batch)
                    copied += len(batch)
                    progress.add(len(batch), sublevel)
                    batch = []
        finally:
            await stream.aclose()
        if batch:
            await dest.bulk_put([sublevel], batch)
            copied += len(batch)
            progress.add(len(batch), sublevel)
        report.read[sublevel] = copied
        report.written[sublevel] = await dest.count([sublevel])

    await copy(METASTORE)
    await copy(USERS_BUCKET)
    buckets: list[str] = []
    stream = source.read_stream([METASTORE], {"values": False})
    try:
        async for name in stream:
            if name != USERS_BUCKET:
                buckets.append(name)
    finally:
        await stream.aclose()
    for bucket in buckets:
        await copy(bucket)
        await copy(shadow_bucket(bucket))
    # Drop empty sublevels from the report (a bucket without uploads).
    for sublevel in [s for s, n in report.read.items() if n == 0 and report.written.get(s, 0) == 0]:
        report.read.pop(sublevel)
        report.written.pop(sublevel, None)
    progress.add(0, "done", force=True)
    progress.done()
    return report


async def run(args: argparse.Namespace) -> int:
    from gateway.metadata import RemoteMetadataClient
    from gateway.metadata.postgres import PostgresMetadataClient, describe
    from shared.config import load_config
    config = load_config()
    host = args.dmd_host or config.metadata_client.host
    port = args.dmd_port or config.metadata_client.port
    url = args.url or config.metadata_url
    if not url:
        print("no PostgreSQL connection string: --url, S3METADATA_URL or config.json metadataClient.url",
              file=sys.stderr)
        return 2
    source = RemoteMetadataClient(host, port, call_timeout_ms=config.call_timeout_ms, secret=config.dmd_secret)
    dest = PostgresMetadataClient(url, config.replication_group_id)
    try:
        await source.connect()
        await dest.connect()
        print(f"copying metadata from the dmd at {host}:{port} to {describe(url)}", file=sys.stderr)
        report = await migrate(source, dest, progress_out=None if args.quiet else sys.stderr)
    finally:
        await source.close()
        await dest.close()
    buckets = sum(1 for s in report.read if s not in (METASTORE, USERS_BUCKET) and not s.startswith("mpuShadowBucket"))
    print(f"{report.total} records copied: {buckets} buckets with records, "
          f"{report.placeholders_resolved} placeholders resolved, {report.placeholders_dropped} dropped")
    if report.mismatches:
        for sublevel, (read, written) in sorted(report.mismatches.items()):
            print(f"COUNT MISMATCH {sublevel!r}: {read} read from the dmd, {written} rows in PostgreSQL",
                  file=sys.stderr)
        return 1
    print("count check: every sublevel holds exactly the records read")
    return 0


def add_parser(commands: Any) -> None:
    cmd = commands.add_parser("migrate-metadata", help="copy a dmd's metadata to PostgreSQL (data stays)")
    cmd.add_argument("--from", dest="source", choices=("dmd",), required=True)
    cmd.add_argument("--to", dest="target", choices=("postgres",), required=True)
    cmd.add_argument("--dmd-host", default="", help="default: config.json metadataClient.host / METADATA_HOST")
    cmd.add_argument("--dmd-port", type=int, default=0, help="default: config.json metadataClient.port")
    cmd.add_argument("--url", default="", help="PostgreSQL connection string (default: S3METADATA_URL)")
    cmd.add_argument("--quiet", action="store_true", help="no progress line")
    cmd.set_defaults(run=lambda args: asyncio.run(run(args)))
