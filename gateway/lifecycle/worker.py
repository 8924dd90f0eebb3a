"""The lifecycle worker: applies every bucket's lifecycle configuration (gateway/lifecycle/rules.py).

One pass walks the bucket records, and for each bucket with enabled rules:
- its keys in key order (the master, then the versions newest first, as the store keeps them), one
  key at a time with a few counters of state (memory does not grow with the bucket):
  * the current version past an Expiration rule: on a bucket with versioning configured it gets a
    delete marker (versioning.delete_object without a version id, as DeleteObject); otherwise it is
    deleted, only if its record is still exactly the one read (a write since then stays);
  * a noncurrent version past NoncurrentDays (counted from when the next newer version was written)
    and with at least NewerNoncurrentVersions newer noncurrent versions is removed;
  * a current delete marker with no version left behind it is removed under a rule with
    ExpiredObjectDeleteMarker, or under an Expiration Days rule once it is that many days old (AWS);
  * a version under Object Lock (gateway/objectlock.py) is never removed: it is counted as skipped;
- its multipart uploads past AbortIncompleteMultipartUpload's DaysAfterInitiation are aborted as
  AbortMultipartUpload does (the same claim, so a Complete at work wins).

Everything goes through the S3 rules the API uses (gateway/versioning.py, api/multipart.abort_upload)
and every decision is made from the stored state and the clock, so a pass interrupted anywhere
(SIGKILL) and run again reaches the same end state; the worker holds no state of its own and runs
beside any number of gateways. Each bucket's counts are logged as one JSON line per bucket, per rule.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gateway import objectlock
from gateway.context import Services
from gateway.lifecycle.rules import Rule, after_days, current_expiry, rules_of
from gateway.models import BucketMD, ObjectMD, UploadMD
from gateway.objectdata import free_locations
from gateway.store import MPU_OVERVIEW_PREFIX, SPLITTER
from gateway.versioning import delete_object, external_version_id
from shared import jsoncodec
from shared.config import Account, Config
from shared.errors import S3Error
from shared.log import get_logger, log_event

log = get_logger("lifecycle")


@dataclass
class WorkContext:
    """What the S3 rules called outside a request need of a context: the services and a log."""
    services: Services
    extra_log: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self):  # noqa: ANN201 (the Store)
        return self.services.store


@dataclass
class BucketReport:
    bucket: str
    per_rule: dict[str, Counter] = field(default_factory=dict)
    locked_skipped: int = 0
    errors: int = 0

    def count(self, rule_id: str, what: str) -> None:
        self.per_rule.setdefault(rule_id, Counter())[what] += 1

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.per_rule.values())


def _owner(bucket: BucketMD, config: Config) -> Account:
    """Who the worker acts as: the bucket owner (the delete markers it writes are the owner's)."""
    account = config.account_by_canonical_id(bucket.owner)
    return account or Account(bucket.owner_display_name or "lifecycle", "", "", bucket.owner, "", ())


def _after(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class BucketPass:
    """One bucket's share of a pass."""

    def __init__(self, services: Services, bucket: BucketMD, rules: list[Rule], now: datetime):
        self.services = services
        self.store = services.store
        self.bucket = bucket
        self.rules = [r for r in rules if r.enabled]
        self.now = now
        self.day = services.config.lifecycle_day_seconds
        self.actor = _owner(bucket, services.config)
        self.report = BucketReport(bucket.name)
        self.versioned = bucket.versioning_status is not None

    async def run(self) -> BucketReport:
        if any(r.expires_current or r.noncurrent_days or r.expired_object_delete_marker for r in self.rules):
            await self._objects()
        if any(r.abort_days for r in self.rules):
            await self._uploads()
        return self.report

    # ------------------------------------------------------------ objects

    async def _objects(self) -> None:
        state: _KeyState | None = None
        async for key, vid, md in self.store.all_object_records(self.bucket.name):
            if state is None or key != state.key:
                if state is not None:
                    await self._finish_key(state)
                state = _KeyState(key)
                if not any(key.startswith(r.prefix) for r in self.rules):
                    state.skip = True
            if state.skip:
                continue
            try:
                await self._record(state, vid, md)
            except S3Error as exc:
                self._error(key, exc)
        if state is not None and not state.skip:
            await self._finish_key(state)

    async def _record(self, state: "_KeyState", vid: str | None, md: ObjectMD) -> None:
        if vid is None:   # the master
            if md.is_phd:
                return    # a placeholder: the current version is the first version key
            state.current_vid = md.version_id
            await self._current(state, md)
            return
        if state.seen_current and vid == state.current_vid:
            return        # the master's own version key
        if not state.seen_current:
            state.current_vid = vid
            await self._current(state, md)
            return
        await self._noncurrent(state, md)

    async def _current(self, state: "_KeyState", md: ObjectMD) -> None:
        state.seen_current = True
        state.newer_last_modified = md.last_modified
        if md.is_delete_marker:
            state.current_marker = md
            return
        rule = self._first(lambda r: r.expires_current and r.matches_version(md)
                           and (current_expiry(r, md, self.day) or self.now) <= self.now)
        if rule is None:
            return
        if self.versioned:
            latest = await self.store.get_object(self.bucket.name, state.key)
            if latest is None or latest.version_id != md.version_id:
                return    # written (or deleted) since it was read: the next pass decides
            deleted = await delete_object(self.services, self.bucket, state.key, None, self.actor)
            if deleted.delete_marker:
                self.report.count(rule.id, "currentExpired")
            state.expired_current = True
            state.noncurrent_seen = 1   # the version it covers is now the newest noncurrent one
            return
        # Not versioned: remove the master only if it is still the one read.
        if await self.store.delete_object_if(self.bucket.name, state.key, md.to_json()):
            await free_locations(self.services, md.data_locations)
            self.report.count(rule.id, "currentExpired")

    async def _noncurrent(self, state: "_KeyState", md: ObjectMD) -> None:
        since = state.newer_last_modified
        state.newer_last_modified = md.last_modified
        index = state.noncurrent_seen
        state.noncurrent_seen += 1
        rule = None
        if since:
            rule = self._first(lambda r: r.noncurrent_days is not None and r.matches_version(md)
                               and index >= (r.newer_noncurrent_versions or 0)
                               and after_days(since, r.noncurrent_days, self.day) <= self.now)
        if rule is None:
            state.remaining += 1
            return
        if objectlock.is_locked(md, self.now):
            self.report.locked_skipped += 1
            state.remaining += 1
            return
        try:
            await delete_object(self.services, self.bucket, state.key, external_version_id(md), self.actor)
        except S3Error:
            state.remaining += 1
            raise
        self.report.count(rule.id, "noncurrentExpired")

    async def _finish_key(self, state: "_KeyState") -> None:
        marker = state.current_marker
        if marker is None or state.remaining or state.expired_current:
            return
        # ExpiredObjectDeleteMarker, or (AWS) an Expiration Days rule once the marker is that old.
        rule = self._first(lambda r: (bool(r.expired_object_delete_marker) and marker.key.startswith(r.prefix))
                           or (r.expiration_days is not None and r.matches_version(marker)
                               and after_days(marker.last_modified, r.expiration_days, self.day) <= self.now))
        if rule is None:
            return
        try:
            await delete_object(self.services, self.bucket, state.key, external_version_id(marker), self.actor)
            self.report.count(rule.id, "deleteMarkersRemoved")
        except S3Error as exc:
            self._error(state.key, exc)

    # ------------------------------------------------------------ multipart uploads

    async def _uploads(self) -> None:
        from gateway.api.multipart import abort_upload   # the API family's rules, imported when needed
        opener = self.store.upload_stream(self.bucket.name)
        stream = opener({"gte": MPU_OVERVIEW_PREFIX, "lt": _after(MPU_OVERVIEW_PREFIX)})
        ctx = WorkContext(self.services)
        try:
            async for entry in stream:
                key, sep, upload_id = entry["key"][len(MPU_OVERVIEW_PREFIX):].rpartition(SPLITTER)
                if not sep:
                    continue
                try:
                    overview = UploadMD(jsoncodec.loads(entry["value"]))
                except ValueError:
                    continue
                if not overview.initiated:
                    continue
                rule = self._first(lambda r: r.abort_days is not None and key.startswith(r.prefix)
                                   and after_days(overview.initiated, r.abort_days, self.day) <= self.now)
                if rule is None:
                    continue
                try:
                    await abort_upload(ctx, self.bucket, key, upload_id)   # type: ignore[arg-type]
                    self.report.count(rule.id, "uploadsAborted")
                except S3Error as exc:
                    if exc.code != "NoSuchUpload":   # gone meanwhile, or a Complete at work: not ours
                        self._error(key, exc)
        finally:
            await stream.aclose()

    # ------------------------------------------------------------ helpers

    def _first(self, test) -> Rule | None:  # noqa: ANN001
        for rule in self.rules:
            if test(rule):
                return rule
        return None

    def _error(self, key: str, exc: S3Error) -> None:
        if exc.code == "AccessDenied":   # locked meanwhile (or by a rule we cannot see): never removed
            self.report.locked_skipped += 1
            return
        self.report.errors += 1
        log_event(log, logging.WARNING, "lifecycle action failed", bucket=self.bucket.name, key=key,
                  error=exc.code, message=exc.message)


@dataclass
class _KeyState:
    key: str
    skip: bool = False
    seen_current: bool = False
    current_vid: str | None = None
    current_marker: ObjectMD | None = None
    expired_current: bool = False
    newer_last_modified: str = ""
    noncurrent_seen: int = 0
    remaining: int = 0          # noncurrent versions left behind the current one


async def run_pass(services: Services, now: datetime | None = None) -> list[BucketReport]:
    """One pass over every bucket with a lifecycle configuration; a report per bucket processed."""
    now = now or datetime.now(timezone.utc)
    reports: list[BucketReport] = []
    async for name in services.store.all_bucket_names():
        bucket = await services.store.get_bucket(name)
        if bucket is None or bucket.deleted:
            continue
        rules = rules_of(bucket)
        if not any(r.enabled for r in rules):
            continue
        started = time.monotonic()
        report = await BucketPass(services, bucket, rules, now).run()
        reports.append(report)
        log_event(log, logging.INFO, "lifecycle bucket done", bucket=name,
                  rules={rule_id: dict(counts) for rule_id, counts in report.per_rule.items()},
                  lockedSkipped=report.locked_skipped, errors=report.errors,
                  durationMs=round((time.monotonic() - started) * 1000))
    return reports
