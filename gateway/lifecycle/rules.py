"""Lifecycle configurations: the model, its XML document both ways, and when a rule expires what.

Stored in the bucket's `lifecycleConfiguration` in Arsenal's shape, so a metadata folder reads
back in the original CloudServer:

    {"rules": [{"ruleID": "id", "ruleStatus": "Enabled",
                "filter": {"rulePrefix": "logs/", "tags": [{"key": "k", "val": "v"}],
                           "objectSizeGreaterThan": 10, "objectSizeLessThan": 100}   # or "prefix": "logs/"
                "actions": [{"actionName": "Expiration", "days": 3},               # or "date", "deleteMarker"
                            {"actionName": "NoncurrentVersionExpiration", "days": 2, "newerNoncurrentVersions": 1},
                            {"actionName": "AbortIncompleteMultipartUpload", "days": 1}]}]}

Time: a rule's Days count in "days" of `dayInSeconds` (86400; shortened for tests). As on AWS, an
expiry is the start time plus the days, rounded up to the next day boundary (midnight UTC for real
days); a Date expires everything from that date on. The gateway (x-amz-expiration) and the worker
(gateway/lifecycle/worker.py) use the same functions, so what a GET announces is what the worker does.
"""
from __future__ import annotations

import base64
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, Iterable

from lxml import etree

from gateway.models import BucketMD, ObjectMD, parse_iso
from gateway.xml import children, local, parse, root, sub
from shared.errors import S3Error

MAX_RULES = 1000
MAX_ID_LENGTH = 255
MAX_PREFIX_LENGTH = 1024
MAX_NEWER_NONCURRENT = 100
STORED_FIELD = "lifecycleConfiguration"
EXPIRATION = "Expiration"
NONCURRENT = "NoncurrentVersionExpiration"
ABORT_MPU = "AbortIncompleteMultipartUpload"
_FILTER_PARTS = ("Prefix", "Tag", "And", "ObjectSizeGreaterThan", "ObjectSizeLessThan")


@dataclass(frozen=True)
class Rule:
    id: str
    enabled: bool
    prefix: str = ""
    legacy_prefix: bool = False                 # a top-level <Prefix> instead of a <Filter>
    filter_and: bool = False                    # the filter was written with <And>
    tags: tuple[tuple[str, str], ...] = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None
    expiration_days: int | None = None
    expiration_date: str | None = None          # ISO 8601 as given (midnight UTC)
    expired_object_delete_marker: bool | None = None
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int | None = None
    abort_days: int | None = None

    def matches(self, key: str, tags: dict[str, str] | None = None, size: int | None = None) -> bool:
        """Whether the rule's filter selects an object (key, its tags, its size)."""
        if not key.startswith(self.prefix):
            return False
        if self.tags and any((tags or {}).get(k) != v for k, v in self.tags):
            return False
        if self.size_greater_than is not None and (size is None or size <= self.size_greater_than):
            return False
        if self.size_less_than is not None and (size is None or size >= self.size_less_than):
            return False
        return True

    def matches_version(self, md: ObjectMD) -> bool:
        return self.matches(md.key, md.tags, md.size)

    @property
    def expires_current(self) -> bool:
        return self.expiration_days is not None or self.expiration_date is not None


# ---------------------------------------------------------------- time

def day_boundary(dt: datetime, day_seconds: int) -> datetime:
    """The first day boundary at or after `dt` (midnight UTC with 86400-second days)."""
    ts = math.ceil(dt.timestamp() / day_seconds) * day_seconds
    return datetime.fromtimestamp(ts, timezone.utc)


def after_days(start_iso: str, days: int, day_seconds: int) -> datetime:
    """`start` plus `days` short-or-real days, rounded up to the next day boundary."""
    start = parse_iso(start_iso)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return day_boundary(datetime.fromtimestamp(start.timestamp() + days * day_seconds, timezone.utc), day_seconds)


def current_expiry(rule: Rule, md: ObjectMD, day_seconds: int) -> datetime | None:
    """When `rule` expires `md` as the current version (None: it does not)."""
    if rule.expiration_date is not None:
        return parse_iso(rule.expiration_date)
    if rule.expiration_days is not None:
        return after_days(md.last_modified, rule.expiration_days, day_seconds)
    return None


def expiration_for(bucket: BucketMD, md: ObjectMD, day_seconds: int) -> tuple[datetime, str] | None:
    """(expiry, rule id) of the earliest enabled Expiration rule covering the current version `md`."""
    best: tuple[datetime, str] | None = None
    for rule in rules_of(bucket):
        if not rule.enabled or not rule.expires_current or not rule.matches_version(md):
            continue
        when = current_expiry(rule, md, day_seconds)
        if when is not None and (best is None or when < best[0]):
            best = (when, rule.id)
    return best


def expiration_header(bucket: BucketMD, md: ObjectMD, day_seconds: int) -> dict[str, str]:
    """x-amz-expiration of PutObject, GET and HEAD: `expiry-date="<HTTP date>", rule-id="<id>"`."""
    if md.is_delete_marker or not bucket.raw.get(STORED_FIELD):
        return {}
    found = expiration_for(bucket, md, day_seconds)
    if found is None:
        return {}
    when, rule_id = found
    rule_id_text = rule_id.replace("\\", "\\\\").replace('"', '\\"')
    return {"x-amz-expiration": f'expiry-date="{format_datetime(when, usegmt=True)}", rule-id="{rule_id_text}"'}


# ---------------------------------------------------------------- stored form

def rules_of(bucket: BucketMD) -> list[Rule]:
    """The bucket's rules (none without a configuration; unreadable entries are skipped)."""
    stored = bucket.raw.get(STORED_FIELD)
    if not isinstance(stored, dict) or not isinstance(stored.get("rules"), list):
        return []
    return [rule for rule in (_rule_from_stored(r) for r in stored["rules"] if isinstance(r, dict)) if rule]


def has_configuration(bucket: BucketMD) -> bool:
    return bool(rules_of(bucket))


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _rule_from_stored(doc: dict[str, Any]) -> Rule | None:
    filt = doc.get("filter") if isinstance(doc.get("filter"), dict) else {}
    legacy = "prefix" in doc and isinstance(doc.get("prefix"), str)
    fields: dict[str, Any] = {
        "id": str(doc.get("ruleID", "")), "enabled": doc.get("ruleStatus") == "Enabled",
        "prefix": doc["prefix"] if legacy else str(filt.get("rulePrefix") or ""),
        "legacy_prefix": legacy, "filter_and": bool(filt.get("and")),
        "tags": tuple((str(t.get("key", "")), str(t.get("val", ""))) for t in filt.get("tags") or []
                      if isinstance(t, dict)),
        "size_greater_than": _int(filt.get("objectSizeGreaterThan")),
        "size_less_than": _int(filt.get("objectSizeLessThan")),
    }
    for action in doc.get("actions") or []:
        if not isinstance(action, dict):
            continue
        name = action.get("actionName")
        if name == EXPIRATION:
            fields["expiration_days"] = _int(action.get("days"))
            fields["expiration_date"] = action.get("date") or None
            marker = action.get("deleteMarker")
            if marker is not None:
                fields["expired_object_delete_marker"] = str(marker).lower() == "true"
        elif name == NONCURRENT:
            fields["noncurrent_days"] = _int(action.get("days"))
            fields["newer_noncurrent_versions"] = _int(action.get("newerNoncurrentVersions")) or None
        elif name == ABORT_MPU:
            fields["abort_days"] = _int(action.get("days"))
    return Rule(**fields)


def _rule_to_stored(rule: Rule) -> dict[str, Any]:
    doc: dict[str, Any] = {"ruleID": rule.id, "ruleStatus": "Enabled" if rule.enabled else "Disabled"}
    if rule.legacy_prefix:
        doc["prefix"] = rule.prefix
    else:
        filt: dict[str, Any] = {}
        if rule.prefix or rule.filter_and:
            filt["rulePrefix"] = rule.prefix
        if rule.tags:
            filt["tags"] = [{"key": k, "val": v} for k, v in rule.tags]
        if rule.size_greater_than is not None:
            filt["objectSizeGreaterThan"] = rule.size_greater_than
        if rule.size_less_than is not None:
            filt["objectSizeLessThan"] = rule.size_less_than
        if rule.filter_and:
            filt["and"] = True
        doc["filter"] = filt
    actions: list[dict[str, Any]] = []
    if rule.expiration_days is not None or rule.expiration_date is not None \
            or rule.expired_object_delete_marker is not None:
        action: dict[str, Any] = {"actionName": EXPIRATION}
        if rule.expiration_days is not None:
            action["days"] = rule.expiration_days
        if rule.expiration_date is not None:
            action["date"] = rule.expiration_date
        if rule.expired_object_delete_marker is not None:
            action["deleteMarker"] = "true" if rule.expired_object_delete_marker else "false"
        actions.append(action)
    if rule.noncurrent_days is not None:
        action = {"actionName": NONCURRENT, "days": rule.noncurrent_days}
        if rule.newer_noncurrent_versions:
            action["newerNoncurrentVersions"] = rule.newer_noncurrent_versions
        actions.append(action)
    if rule.abort_days is not None:
        actions.append({"actionName": ABORT_MPU, "days": rule.abort_days})
    doc["actions"] = actions
    return doc


def store_rules(bucket: BucketMD, rules: Iterable[Rule] | None) -> None:
    """Set (None: remove) the bucket's configuration in its BucketMD."""
    bucket.raw[STORED_FIELD] = None if rules is None else {"rules": [_rule_to_stored(r) for r in rules]}


# ---------------------------------------------------------------- the XML document

def _one(el: etree._Element, name: str) -> etree._Element | None:
    found = children(el, name)
    if len(found) > 1:
        raise S3Error("MalformedXML")
    return found[0] if found else None


def _text(el: etree._Element, name: str) -> str | None:
    found = _one(el, name)
    return None if found is None else (found.text or "").strip()


def _positive(text: str, message: str, name: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise S3Error("MalformedXML")
    value = int(text)
    if value <= 0:
        raise S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=text)
    return value


def _size(text: str, name: str) -> int:
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise S3Error("MalformedXML")
    value = int(text)
    if value < 0:
        raise S3Error("InvalidArgument", f"'{name}' should be a non-negative integer", ArgumentName=name,
                      ArgumentValue=text)
    return value


def _prefix(text: str) -> str:
    if len(text) > MAX_PREFIX_LENGTH:
        raise S3Error("InvalidRequest", f"The maximum size of a prefix is {MAX_PREFIX_LENGTH}")
    return text


def _tag(el: etree._Element) -> tuple[str, str]:
    key, value = _one(el, "Key"), _one(el, "Value")
    if key is None or value is None:
        raise S3Error("MalformedXML")
    k, v = key.text or "", value.text or ""
    if not 1 <= len(k) <= 128 or len(v) > 256:
        raise S3Error("InvalidRequest", "The TagKey or TagValue you have provided is invalid")
    return k, v


def _parse_filter(el: etree._Element) -> dict[str, Any]:
    parts = [c for c in el if isinstance(c.tag, str)]
    if any(local(c.tag) not in _FILTER_PARTS for c in parts) or len(parts) > 1:
        raise S3Error("MalformedXML")
    fields: dict[str, Any] = {}
    if not parts:
        return fields
    part = parts[0]
    name = local(part.tag)
    if name == "Prefix":
        fields["prefix"] = _prefix((part.text or ""))
    elif name == "Tag":
        fields["tags"] = (_tag(part),)
    elif name == "ObjectSizeGreaterThan":
        fields["size_greater_than"] = _size((part.text or "").strip(), name)
    elif name == "ObjectSizeLessThan":
        fields["size_less_than"] = _size((part.text or "").strip(), name)
    else:   # And
        fields["filter_and"] = True
        for c in part:
            if isinstance(c.tag, str) and local(c.tag) not in ("Prefix", "Tag", "ObjectSizeGreaterThan",
                                                              "ObjectSizeLessThan"):
                raise S3Error("MalformedXML")
        prefix = _text(part, "Prefix")
        if prefix is not None:
            fields["prefix"] = _prefix(_one(part, "Prefix").text or "")   # type: ignore[union-attr]
        tags = tuple(_tag(t) for t in children(part, "Tag"))
        if len({k for k, _ in tags}) != len(tags):
            raise S3Error("InvalidRequest", "Duplicate Tag Keys are not allowed.")
        fields["tags"] = tags
        greater, less = _text(part, "ObjectSizeGreaterThan"), _text(part, "ObjectSizeLessThan")
        if greater is not None:
            fields["size_greater_than"] = _size(greater, "ObjectSizeGreaterThan")
        if less is not None:
            fields["size_less_than"] = _size(less, "ObjectSizeLessThan")
    gt, lt = fields.get("size_greater_than"), fields.get("size_less_than")
    if gt is not None and lt is not None and gt >= lt:
        raise S3Error("InvalidArgument", "ObjectSizeGreaterThan must be less than ObjectSizeLessThan",
                      ArgumentName="ObjectSizeGreaterThan", ArgumentValue=str(gt))
    return fields


def _parse_date(text: str) -> str:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise S3Error("InvalidArgument", "'Date' must be in ISO 8601 format", ArgumentName="Date",
                      ArgumentValue=text) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    dt = dt.astimezone(timezone.utc)
    if (dt.hour, dt.minute, dt.second, dt.microsecond) != (0, 0, 0, 0):
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT", ArgumentName="Date", ArgumentValue=text)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_rule(el: etree._Element, seen_ids: set[str]) -> Rule:
    for c in el:
        if isinstance(c.tag, str) and local(c.tag) in ("Transition", "NoncurrentVersionTransition"):
            storage_class = _text(c, "StorageClass") or ""
            raise S3Error("InvalidStorageClass", StorageClassRequested=storage_class)
    rule_id = _text(el, "ID")
    if rule_id is None or rule_id == "":
        rule_id = base64.b64encode(str(uuid.uuid4()).encode()).decode()   # as S3: an ID is made up
    if len(rule_id) > MAX_ID_LENGTH:
        raise S3Error("InvalidArgument", "ID length should not exceed allowed limit of 255", ArgumentName="ID",
                      ArgumentValue=rule_id)
    if rule_id in seen_ids:
        raise S3Error("InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule",
                      ArgumentName="ID", ArgumentValue=rule_id)
    seen_ids.add(rule_id)
    status = _text(el, "Status")
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML")
    filter_el, prefix_el = _one(el, "Filter"), _one(el, "Prefix")
    if (filter_el is None) == (prefix_el is None):
        raise S3Error("MalformedXML")
    fields: dict[str, Any] = {"id": rule_id, "enabled": status == "Enabled"}
    if prefix_el is not None:
        fields.update(prefix=_prefix(prefix_el.text or ""), legacy_prefix=True)
    else:
        fields.update(_parse_filter(filter_el))   # type: ignore[arg-type]
    has_tags = bool(fields.get("tags"))
    has_size = fields.get("size_greater_than") is not None or fields.get("size_less_than") is not None
    actions = 0
    expiration = _one(el, EXPIRATION)
    if expiration is not None:
        actions += 1
        days, date, marker = (_text(expiration, n) for n in ("Days", "Date", "ExpiredObjectDeleteMarker"))
        if sum(v is not None for v in (days, date, marker)) != 1:
            raise S3Error("MalformedXML")
        if days is not None:
            fields["expiration_days"] = _positive(days, "'Days' for Expiration action must be a positive integer",
                                                  "Days")
        if date is not None:
            fields["expiration_date"] = _parse_date(date)
        if marker is not None:
            if marker not in ("true", "false"):
                raise S3Error("MalformedXML")
            if has_tags or has_size:
                raise S3Error("InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with tags or "
                              "object size filters.")
            fields["expired_object_delete_marker"] = marker == "true"
    noncurrent = _one(el, NONCURRENT)
    if noncurrent is not None:
        actions += 1
        days = _text(noncurrent, "NoncurrentDays")
        if days is None:
            raise S3Error("MalformedXML")
        fields["noncurrent_days"] = _positive(days, "'NoncurrentDays' for NoncurrentVersionExpiration action "
                                              "must be a positive integer", "NoncurrentDays")
        newer = _text(noncurrent, "NewerNoncurrentVersions")
        if newer is not None:
            value = _positive(newer, "'NewerNoncurrentVersions' must be a positive integer",
                              "NewerNoncurrentVersions")
            if value > MAX_NEWER_NONCURRENT:
                raise S3Error("InvalidArgument", f"'NewerNoncurrentVersions' cannot exceed {MAX_NEWER_NONCURRENT}",
                              ArgumentName="NewerNoncurrentVersions", ArgumentValue=newer)
            fields["newer_noncurrent_versions"] = value
    abort = _one(el, ABORT_MPU)
    if abort is not None:
        actions += 1
        days = _text(abort, "DaysAfterInitiation")
        if days is None:
            raise S3Error("MalformedXML")
        if has_tags or has_size:
            raise S3Error("InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with tags or "
                          "object size filters.")
        fields["abort_days"] = _positive(days, "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action "
                                         "must be a positive integer", "DaysAfterInitiation")
    if actions == 0:
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return Rule(**fields)


def parse_configuration(body: bytes) -> list[Rule]:
    """The rules of a <LifecycleConfiguration> document, validated as AWS does."""
    if not body.strip():
        raise S3Error("MalformedXML")
    doc = parse(body, root_tag="LifecycleConfiguration")
    rules_el = children(doc, "Rule")
    if not rules_el or len(rules_el) > MAX_RULES:
        raise S3Error("MalformedXML")
    seen: set[str] = set()
    return [_parse_rule(el, seen) for el in rules_el]


def configuration_document(rules: list[Rule]) -> etree._Element:
    doc = root("LifecycleConfiguration")
    for rule in rules:
        el = sub(doc, "Rule")
        sub(el, "ID", rule.id)
        if rule.legacy_prefix:
            sub(el, "Prefix", rule.prefix)
        else:
            filt = sub(el, "Filter")
            conditions = (bool(rule.prefix) + len(rule.tags) + (rule.size_greater_than is not None)
                          + (rule.size_less_than is not None))
            target = sub(filt, "And") if rule.filter_and or conditions > 1 else filt
            if rule.prefix or (target is filt and conditions == 0 and not rule.filter_and):
                sub(target, "Prefix", rule.prefix)
            for k, v in rule.tags:
                tag = sub(target, "Tag")
                sub(tag, "Key", k)
                sub(tag, "Value", v)
            if rule.size_greater_than is not None:
                sub(target, "ObjectSizeGreaterThan", rule.size_greater_than)
            if rule.size_less_than is not None:
                sub(target, "ObjectSizeLessThan", rule.size_less_than)
        sub(el, "Status", "Enabled" if rule.enabled else "Disabled")
        if rule.expiration_days is not None or rule.expiration_date is not None \
                or rule.expired_object_delete_marker is not None:
            exp = sub(el, EXPIRATION)
            if rule.expiration_days is not None:
                sub(exp, "Days", rule.expiration_days)
            if rule.expiration_date is not None:
                sub(exp, "Date", rule.expiration_date)
            if rule.expired_object_delete_marker is not None:
                sub(exp, "ExpiredObjectDeleteMarker", "true" if rule.expired_object_delete_marker else "false")
        if rule.noncurrent_days is not None:
            nve = sub(el, NONCURRENT)
            sub(nve, "NoncurrentDays", rule.noncurrent_days)
            if rule.newer_noncurrent_versions:
                sub(nve, "NewerNoncurrentVersions", rule.newer_noncurrent_versions)
        if rule.abort_days is not None:
            sub(sub(el, ABORT_MPU), "DaysAfterInitiation", rule.abort_days)
    return doc
