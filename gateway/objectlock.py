"""Object Lock: the S3 rules of retention and legal holds, outside HTTP.

What is stored (the original's field names, so a metadata folder reads back in either):
- a bucket: `objectLockEnabled` (set at CreateBucket with x-amz-bucket-object-lock-enabled, or by
  PutObjectLockConfiguration on a versioned bucket) and `objectLockConfiguration`
  (`{"rule": {"mode": "GOVERNANCE"|"COMPLIANCE", "days": N}}` or `..."years": N`, `{}` without a
  default retention: Arsenal's shape);
- a version: `retentionMode`, `retentionDate` (ISO 8601, UTC) and `legalHold` (bool).

The rules (AWS "Using S3 Object Lock"):
- a version is locked while its retain-until date is in the future or its legal hold is on; a locked
  version cannot be deleted by version id (AccessDenied). A delete without a version id still adds a
  delete marker: that removes nothing;
- COMPLIANCE can be neither shortened nor removed, by anyone; GOVERNANCE can, by a request with
  `x-amz-bypass-governance-retention: true` from someone who has s3:BypassGovernanceRetention;
  any retention can be extended;
- a new version gets the bucket's default retention unless the request names its own
  (x-amz-object-lock-mode + x-amz-object-lock-retain-until-date), and a legal hold when asked
  (x-amz-object-lock-legal-hold: ON).

Callers: gateway/versioning.py (delete_object), the write handlers (PutObject, CopyObject,
CreateMultipartUpload/Complete, POST object), gateway/api/objectlock.py (the lock actions), and the
lifecycle worker (which never removes a locked version).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from gateway import checksums
from gateway.models import BucketMD, ObjectMD
from shared.errors import S3Error

MODES = ("GOVERNANCE", "COMPLIANCE")
LEGAL_HOLD_STATUSES = ("ON", "OFF")
MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
LEGAL_HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
BUCKET_LOCK_HEADER = "x-amz-bucket-object-lock-enabled"
LOCK_HEADERS = (MODE_HEADER, UNTIL_HEADER, LEGAL_HOLD_HEADER)
BYPASS_ACTION = "s3:BypassGovernanceRetention"
DAYS_PER_YEAR = 365
MAX_RETENTION_DAYS = 36500   # AWS: at most 100 years of default retention

# Stored field names (Arsenal's ObjectMD / BucketInfo)
RETENTION_MODE = "retentionMode"
RETENTION_DATE = "retentionDate"
LEGAL_HOLD = "legalHold"
BUCKET_ENABLED = "objectLockEnabled"
BUCKET_CONFIGURATION = "objectLockConfiguration"

MISSING_CONFIGURATION_MESSAGE = "Bucket is missing Object Lock Configuration"
LOCKED_MESSAGE = "Access Denied because object protected by object lock."
INTEGRITY_MESSAGE = ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with "
                     "Object Lock parameters")


@dataclass(frozen=True)
class DefaultRetention:
    mode: str
    days: int | None = None
    years: int | None = None

    def until(self, now: datetime) -> datetime:
        return now + timedelta(days=self.days if self.days is not None else (self.years or 0) * DAYS_PER_YEAR)


@dataclass(frozen=True)
class Lock:
    """What a write asks for: a retention (mode and date, both or neither) and a legal hold (None: unsaid)."""
    mode: str | None = None
    until: datetime | None = None
    legal_hold: bool | None = None


# ---------------------------------------------------------------- dates

def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def format_date(dt: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as S3 shows retain-until dates."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_date(value: str) -> datetime | None:
    """An ISO 8601 date-time (a date alone counts as midnight UTC); None when it is none."""
    text = value.strip()
    if not text or not text[:4].isdigit():
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- a version's lock

def retention_of(md: ObjectMD) -> tuple[str, datetime] | None:
    """(mode, retain-until) of a version, None when it has none (or an unreadable one)."""
    mode, date = md.get(RETENTION_MODE), md.get(RETENTION_DATE)
    if mode not in MODES or not isinstance(date, str):
        return None
    until = parse_date(date)
    return None if until is None else (mode, until)


def legal_hold_of(md: ObjectMD) -> bool | None:
    """The version's legal hold: True (ON), False (OFF: set and released), None (never set)."""
    value = md.get(LEGAL_HOLD)
    return None if value is None else bool(value)


def set_retention(md: ObjectMD, mode: str | None, until: datetime | None) -> None:
    if mode is None or until is None:
        md.pop(RETENTION_MODE, None)
        md.pop(RETENTION_DATE, None)
    else:
        md[RETENTION_MODE] = mode
        md[RETENTION_DATE] = format_date(until)


def set_legal_hold(md: ObjectMD, on: bool) -> None:
    md[LEGAL_HOLD] = on


def is_locked(md: ObjectMD, now: datetime | None = None) -> bool:
    """Retention in force or legal hold on: the version may not be removed."""
    if md.get(LEGAL_HOLD):
        return True
    retention = retention_of(md)
    return retention is not None and retention[1] > (now or now_utc())


def check_removable(md: ObjectMD, bypass_governance: bool, now: datetime | None = None) -> None:
    """AccessDenied unless the version may be deleted now: no legal hold, and no retention in force
    (GOVERNANCE gives way to a request allowed to bypass it)."""
    if md.get(LEGAL_HOLD):
        raise S3Error("AccessDenied", LOCKED_MESSAGE)
    retention = retention_of(md)
    if retention is None or retention[1] <= (now or now_utc()):
        return
    if retention[0] == "GOVERNANCE" and bypass_governance:
        return
    raise S3Error("AccessDenied", LOCKED_MESSAGE)


def check_retention_change(md: ObjectMD, mode: str | None, until: datetime | None, bypass_governance: bool,
                           now: datetime | None = None) -> None:
    """PutObjectRetention over an existing retention: extending (same mode, later or equal date) is
    always allowed; anything else (shorter, another mode, removal) only of a GOVERNANCE retention and
    with the bypass; a COMPLIANCE retention in force cannot be weakened by anyone."""
    current = retention_of(md)
    if current is None or current[1] <= (now or now_utc()):
        return
    cur_mode, cur_until = current
    if mode == cur_mode and until is not None and until >= cur_until:
        return
    if cur_mode == "COMPLIANCE" and not (mode == "COMPLIANCE" and until is not None and until >= cur_until):
        raise S3Error("AccessDenied", LOCKED_MESSAGE)
    if cur_mode == "GOVERNANCE" and mode == "COMPLIANCE" and until is not None and until >= cur_until:
        return   # GOVERNANCE -> COMPLIANCE with no shorter date only strengthens it
    if not bypass_governance:
        raise S3Error("AccessDenied", LOCKED_MESSAGE)


def response_headers(bucket: BucketMD, md: ObjectMD) -> dict[str, str]:
    """x-amz-object-lock-* headers of GET/HEAD (a version of a bucket without Object Lock has none)."""
    headers: dict[str, str] = {}
    retention = retention_of(md)
    if retention is not None:
        headers[MODE_HEADER] = retention[0]
        headers[UNTIL_HEADER] = format_date(retention[1])
    hold = legal_hold_of(md)
    if hold is not None:
        headers[LEGAL_HOLD_HEADER] = "ON" if hold else "OFF"
    return headers


# ---------------------------------------------------------------- bucket configuration

def bucket_lock_enabled(bucket: BucketMD) -> bool:
    return bool(bucket.raw.get(BUCKET_ENABLED))


def default_retention(bucket: BucketMD) -> DefaultRetention | None:
    config = bucket.raw.get(BUCKET_CONFIGURATION) or {}
    rule = config.get("rule") if isinstance(config, dict) else None
    if not isinstance(rule, dict) or rule.get("mode") not in MODES:
        return None
    days, years = rule.get("days"), rule.get("years")
    if isinstance(days, int) and days > 0:
        return DefaultRetention(rule["mode"], days=days)
    if isinstance(years, int) and years > 0:
        return DefaultRetention(rule["mode"], years=years)
    return None


def enable_on_new_bucket(bucket: BucketMD, header_value: str | None) -> None:
    """CreateBucket's x-amz-bucket-object-lock-enabled: "true" enables Object Lock and versioning
    (InvalidArgument for anything but true/false, as S3)."""
    if header_value is None:
        return
    value = header_value.strip().lower()
    if value not in ("true", "false"):
        raise S3Error("InvalidArgument", "Invalid x-amz-bucket-object-lock-enabled header",
                      ArgumentName=BUCKET_LOCK_HEADER, ArgumentValue=header_value)
    if value == "true":
        bucket.raw[BUCKET_ENABLED] = True
        bucket.raw[BUCKET_CONFIGURATION] = None
        bucket.versioning = {"Status": "Enabled"}


def set_configuration(bucket: BucketMD, rule: DefaultRetention | None) -> None:
    """PutObjectLockConfiguration: the bucket must have versioning Enabled (InvalidBucketState)."""
    if not bucket_lock_enabled(bucket) and bucket.versioning_status != "Enabled":
        raise S3Error("InvalidBucketState",
                      "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration")
    bucket.raw[BUCKET_ENABLED] = True
    if rule is None:
        bucket.raw[BUCKET_CONFIGURATION] = None
    elif rule.days is not None:
        bucket.raw[BUCKET_CONFIGURATION] = {"rule": {"mode": rule.mode, "days": rule.days}}
    else:
        bucket.raw[BUCKET_CONFIGURATION] = {"rule": {"mode": rule.mode, "years": rule.years}}


def require_lock_bucket(bucket: BucketMD) -> None:
    """InvalidRequest unless the bucket has Object Lock (the object lock actions, lock headers)."""
    if not bucket_lock_enabled(bucket):
        raise S3Error("InvalidRequest", MISSING_CONFIGURATION_MESSAGE)


# ---------------------------------------------------------------- writes

def has_integrity_header(headers: Mapping[str, str]) -> bool:
    """Content-MD5, an x-amz-checksum-* header, or a checksum announced as a trailer."""
    if "content-md5" in headers:
        return True
    if any(checksums.header_name(a) in headers for a in checksums.ALGORITHMS):
        return True
    trailer = headers.get("x-amz-trailer", "")
    return any(checksums.algorithm_from_header(n.strip().lower()) for n in trailer.split(",") if n.strip())


def require_integrity(headers: Mapping[str, str], message: str = INTEGRITY_MESSAGE) -> None:
    if not has_integrity_header(headers):
        raise S3Error("InvalidRequest", message)


def lock_from_headers(headers: Mapping[str, str], bucket: BucketMD, now: datetime | None = None) -> Lock:
    """The lock a write's headers (or a POST form's fields) ask for, validated as S3 does:
    InvalidRequest on a bucket without Object Lock, InvalidArgument for a bad mode, date or status."""
    mode_raw, until_raw, hold_raw = (headers.get(h) for h in LOCK_HEADERS)
    if mode_raw is None and until_raw is None and hold_raw is None:
        return Lock()
    require_lock_bucket(bucket)
    mode = until = None
    if (mode_raw is None) != (until_raw is None):
        raise S3Error("InvalidArgument", "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must "
                      "both be supplied", ArgumentName=MODE_HEADER if mode_raw is None else UNTIL_HEADER,
                      ArgumentValue=mode_raw or until_raw or "")
    if mode_raw is not None and until_raw is not None:
        if mode_raw not in MODES:
            raise S3Error("InvalidArgument", "Unknown wormMode directive.", ArgumentName=MODE_HEADER,
                          ArgumentValue=mode_raw)
        until = parse_date(until_raw)
        if until is None:
            raise S3Error("InvalidArgument", "The retain until date must be provided in ISO 8601 format",
                          ArgumentName=UNTIL_HEADER, ArgumentValue=until_raw)
        if until <= (now or now_utc()):
            raise S3Error("InvalidArgument", "The retain until date must be in the future!",
                          ArgumentName=UNTIL_HEADER, ArgumentValue=until_raw)
        mode = mode_raw
    hold = None
    if hold_raw is not None:
        if hold_raw not in LEGAL_HOLD_STATUSES:
            raise S3Error("InvalidArgument", "Legal Hold must be either of 'ON' or 'OFF'",
                          ArgumentName=LEGAL_HOLD_HEADER, ArgumentValue=hold_raw)
        hold = hold_raw == "ON"
    return Lock(mode, until, hold)


def check_write(headers: Mapping[str, str], bucket: BucketMD, has_body: bool = True) -> Lock:
    """A write's lock, validated, and AWS's integrity requirement on a body written with lock
    headers or into a bucket with a default retention (InvalidRequest without Content-MD5 or a checksum)."""
    lock = lock_from_headers(headers, bucket)
    asks = lock.mode is not None or lock.legal_hold is not None
    if has_body and (asks or default_retention(bucket) is not None):
        require_integrity(headers)
    return lock


def apply_to_new_version(md: ObjectMD, bucket: BucketMD, lock: Lock, now: datetime | None = None) -> None:
    """Set a new version's lock: the request's retention, else the bucket's default one; its legal hold."""
    if not bucket_lock_enabled(bucket):
        return
    if lock.mode is not None and lock.until is not None:
        set_retention(md, lock.mode, lock.until)
    else:
        default = default_retention(bucket)
        if default is not None:
            set_retention(md, default.mode, default.until(now or now_utc()))
    if lock.legal_hold is not None:
        set_legal_hold(md, lock.legal_hold)


def lock_record(lock: Lock) -> dict[str, Any]:
    """A lock kept in a multipart upload's overview until Complete (the stored field names)."""
    record: dict[str, Any] = {}
    if lock.mode is not None and lock.until is not None:
        record[RETENTION_MODE], record[RETENTION_DATE] = lock.mode, format_date(lock.until)
    if lock.legal_hold is not None:
        record[LEGAL_HOLD] = lock.legal_hold
    return record


def lock_of_record(record: Mapping[str, Any]) -> Lock:
    """The lock CreateMultipartUpload kept in the overview (see lock_record)."""
    mode, date = record.get(RETENTION_MODE), record.get(RETENTION_DATE)
    until = parse_date(date) if isinstance(date, str) else None
    hold = record.get(LEGAL_HOLD)
    return Lock(mode if mode in MODES and until else None, until if mode in MODES else None,
                None if hold is None else bool(hold))


def bypass_requested(headers: Mapping[str, str]) -> bool:
    return headers.get(BYPASS_HEADER, "").strip().lower() == "true"
