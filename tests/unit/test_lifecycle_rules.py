"""gateway/lifecycle/rules.py without a server: expiry times in real and short days, filters, and
the stored form (Arsenal's shape) read back as it was written."""
from __future__ import annotations

from datetime import datetime, timezone

from gateway.lifecycle import rules
from gateway.models import BucketMD, ObjectMD


def test_after_days_rounds_up_to_the_next_day_boundary() -> None:
    # AWS: creation time + days, rounded to the next midnight UTC.
    assert rules.after_days("2024-01-01T10:00:00.000Z", 1, 86400) == datetime(2024, 1, 3, tzinfo=timezone.utc)
    assert rules.after_days("2024-01-01T00:00:00.000Z", 1, 86400) == datetime(2024, 1, 2, tzinfo=timezone.utc)
    short = rules.after_days("2024-01-01T00:00:01.000Z", 1, 10)
    assert short.timestamp() % 10 == 0 and 10 < short.timestamp() - datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() <= 20


def test_matches_prefix_tags_and_sizes() -> None:
    rule = rules.Rule("r", True, prefix="a/", tags=(("k", "v"),), size_greater_than=10, size_less_than=100)
    assert rule.matches("a/x", {"k": "v", "other": "1"}, 50)
    assert not rule.matches("b/x", {"k": "v"}, 50)
    assert not rule.matches("a/x", {"k": "w"}, 50)
    assert not rule.matches("a/x", {"k": "v"}, 10)
    assert not rule.matches("a/x", {"k": "v"}, 100)


def test_stored_form_round_trip_and_expiration_header() -> None:
    body = (b"<LifecycleConfiguration><Rule><ID>one</ID><Filter><And><Prefix>logs/</Prefix><Tag><Key>k</Key>"
            b"<Value>v</Value></Tag></And></Filter><Status>Enabled</Status><Expiration><Days>2</Days></Expiration>"
            b"<NoncurrentVersionExpiration><NoncurrentDays>3</NoncurrentDays><NewerNoncurrentVersions>4"
            b"</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule><Rule><ID>two</ID><Prefix>tmp/</Prefix>"
            b"<Status>Disabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>1"
            b"</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>")
    parsed = rules.parse_configuration(body)
    bucket = BucketMD("b", "owner", "Owner", "2024-01-01T00:00:00.000Z")
    rules.store_rules(bucket, parsed)
    assert rules.rules_of(bucket) == parsed
    assert bucket.raw["lifecycleConfiguration"]["rules"][1] == {
        "ruleID": "two", "ruleStatus": "Disabled", "prefix": "tmp/",
        "actions": [{"actionName": "AbortIncompleteMultipartUpload", "days": 1}]}
    md = ObjectMD({"key": "logs/x", "last-modified": "2024-01-01T10:00:00.000Z", "tags": {"k": "v"},
                   "content-length": 1})
    assert rules.expiration_header(bucket, md, 86400) == {
        "x-amz-expiration": 'expiry-date="Thu, 04 Jan 2024 00:00:00 GMT", rule-id="one"'}
    md["tags"] = {}
    assert rules.expiration_header(bucket, md, 86400) == {}
