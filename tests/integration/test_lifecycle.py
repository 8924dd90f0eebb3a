"""Lifecycle (issue 15): configuration validation through boto3 and raw documents, x-amz-expiration,
and the worker (`python -m gateway.lifecycle --once`) against a populated bucket with a short "day":
after one pass exactly the versions a model predicts are gone, nothing locked is touched, and a
worker SIGKILLed mid-pass then run again leaves the same end state.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import make_client, raw_body
from tests.procs import REPO, Dmd, Gateway, _base_env, start_dmd, start_gateway

DAY_S = 2                     # a lifecycle "day" of the worker tests
WORKER_TIMEOUT_S = 180


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def put_lifecycle(s3, bucket: str, rules: list[dict]) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})


# ---------------------------------------------------------------- configuration

def test_put_get_delete_round_trip(s3_file, bucket_name: str) -> None:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)
    assert code(exc) == "NoSuchLifecycleConfiguration"
    rules = [
        {"ID": "prefix", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}},
        {"ID": "tag", "Filter": {"Tag": {"Key": "class", "Value": "temp"}}, "Status": "Disabled",
         "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=timezone.utc)}},
        {"ID": "and", "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}],
                                         "ObjectSizeGreaterThan": 10, "ObjectSizeLessThan": 1000}},
         "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 3, "NewerNoncurrentVersions": 2}},
        {"ID": "dm", "Filter": {"Prefix": ""}, "Status": "Enabled",
         "Expiration": {"ExpiredObjectDeleteMarker": True},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
        {"ID": "size", "Filter": {"ObjectSizeGreaterThan": 5}, "Status": "Enabled", "Expiration": {"Days": 1}},
    ]
    put_lifecycle(s3, bucket_name, rules)
    got = s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)["Rules"]
    assert got == rules
    s3.delete_bucket_lifecycle(Bucket=bucket_name)
    s3.delete_bucket_lifecycle(Bucket=bucket_name)   # idempotent
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)
    assert code(exc) == "NoSuchLifecycleConfiguration"


def test_legacy_prefix_and_generated_id(s3_file, bucket_name: str) -> None:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    body = (b"<LifecycleConfiguration><Rule><Prefix>old/</Prefix><Status>Enabled</Status>"
            b"<Expiration><Days>2</Days></Expiration></Rule></LifecycleConfiguration>")
    with raw_body(s3, "PutBucketLifecycleConfiguration", body):
        put_lifecycle(s3, bucket_name, [])
    rule = s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)["Rules"][0]
    assert rule["Prefix"] == "old/" and rule["ID"] and rule["Expiration"] == {"Days": 2}


def _rule(inner: str, rid: str = "r") -> bytes:
    return f"<Rule><ID>{rid}</ID>{inner}</Rule>".encode()


def _doc(*rules: bytes) -> bytes:
    return b"<LifecycleConfiguration>" + b"".join(rules) + b"</LifecycleConfiguration>"


ENABLED_EXP = "<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration>"


@pytest.mark.parametrize("body,expected", [
    (_doc(), "MalformedXML"),
    (_doc(*[_rule(ENABLED_EXP, f"r{i}") for i in range(1001)]), "MalformedXML"),
    (_doc(_rule(ENABLED_EXP, "x" * 256)), "InvalidArgument"),
    (_doc(_rule(ENABLED_EXP, "same"), _rule(ENABLED_EXP, "same")), "InvalidArgument"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>On</Status><Expiration><Days>1</Days></Expiration>")),
     "MalformedXML"),
    (_doc(_rule("<Status>Enabled</Status><Expiration><Days>1</Days></Expiration>")), "MalformedXML"),
    (_doc(_rule("<Prefix>a</Prefix><Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status>"
                "<Expiration><Days>1</Days></Expiration>")), "MalformedXML"),
    (_doc(_rule("<Filter><Prefix>p</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></Filter>"
                "<Status>Enabled</Status><Expiration><Days>1</Days></Expiration>")), "MalformedXML"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status>")), "InvalidRequest"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><Expiration><Days>0</Days>"
                "</Expiration>")), "InvalidArgument"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days>"
                "<Date>2030-01-01T00:00:00Z</Date></Expiration>")), "MalformedXML"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><Expiration>"
                "<Date>2030-01-01T10:00:00Z</Date></Expiration>")), "InvalidArgument"),
    (_doc(_rule("<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>"
                "<Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>")),
     "InvalidRequest"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><NoncurrentVersionExpiration>"
                "<NoncurrentDays>-1</NoncurrentDays></NoncurrentVersionExpiration>")), "InvalidArgument"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><NoncurrentVersionExpiration>"
                "<NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>101</NewerNoncurrentVersions>"
                "</NoncurrentVersionExpiration>")), "InvalidArgument"),
    (_doc(_rule("<Filter><Tag><Key>k</Key><Value>v</Value></Tag></Filter><Status>Enabled</Status>"
                "<AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation>"
                "</AbortIncompleteMultipartUpload>")), "InvalidRequest"),
    (_doc(_rule("<Filter><And><ObjectSizeGreaterThan>100</ObjectSizeGreaterThan>"
                "<ObjectSizeLessThan>10</ObjectSizeLessThan></And></Filter><Status>Enabled</Status>"
                "<Expiration><Days>1</Days></Expiration>")), "InvalidArgument"),
    (_doc(_rule("<Filter><And><Prefix>p</Prefix><Tag><Key>k</Key><Value>1</Value></Tag><Tag><Key>k</Key>"
                "<Value>2</Value></Tag></And></Filter><Status>Enabled</Status>"
                "<Expiration><Days>1</Days></Expiration>")), "InvalidRequest"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status>"
                "<Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition>")),
     "InvalidStorageClass"),
    (_doc(_rule("<Filter><Prefix>p</Prefix></Filter><Status>Enabled</Status><NoncurrentVersionTransition>"
                "<NoncurrentDays>30</NoncurrentDays><StorageClass>STANDARD_IA</StorageClass>"
                "</NoncurrentVersionTransition>")), "InvalidStorageClass"),
    (b"<LifecycleConfiguration><Rule>", "MalformedXML"),
])
def test_validation(s3_file, bucket_name: str, body: bytes, expected: str) -> None:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    with raw_body(s3, "PutBucketLifecycleConfiguration", body), pytest.raises(ClientError) as exc:
        put_lifecycle(s3, bucket_name, [])
    assert code(exc) == expected
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:   # nothing stored
        s3.get_bucket_lifecycle_configuration(Bucket=bucket_name)
    assert code(exc) == "NoSuchLifecycleConfiguration"


def test_integrity_required(file_gateway, bucket_name: str) -> None:
    bare = make_client(file_gateway.url, request_checksum_calculation="when_required")
    bare.create_bucket(Bucket=bucket_name)

    def strip(request, **kwargs):
        for name in [h for h in request.headers if h.lower() in ("content-md5",) or
                     h.lower().startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))]:
            del request.headers[name]
    bare.meta.events.register_first("before-sign.s3.PutBucketLifecycleConfiguration", strip)
    with pytest.raises(ClientError) as exc:
        put_lifecycle(bare, bucket_name, [{"ID": "r", "Filter": {"Prefix": ""}, "Status": "Enabled",
                                           "Expiration": {"Days": 1}}])
    assert code(exc) == "InvalidRequest"


def _expiration(headers: dict[str, str]) -> tuple[datetime, str] | None:
    value = headers.get("x-amz-expiration")
    if value is None:
        return None
    date_part, rule_part = value.split('", rule-id="')
    return parsedate_to_datetime(date_part.split('expiry-date="')[1]), rule_part.rstrip('"')


def test_expiration_header_real_days(s3_file, bucket_name: str) -> None:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    put_lifecycle(s3, bucket_name, [
        {"ID": "logs-rule", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 3}},
        {"ID": "sooner", "Filter": {"Prefix": "logs/urgent/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
        {"ID": "off", "Filter": {"Prefix": "off/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
    ])
    put = s3.put_object(Bucket=bucket_name, Key="logs/a", Body=b"x")
    expiry, rule = _expiration(put["ResponseMetadata"]["HTTPHeaders"])
    now = datetime.now(timezone.utc)
    assert rule == "logs-rule"
    assert (expiry.hour, expiry.minute, expiry.second) == (0, 0, 0)       # rounded to midnight UTC
    assert now + timedelta(days=3) <= expiry <= now + timedelta(days=4, seconds=5)
    for call in (s3.head_object, s3.get_object):
        assert _expiration(call(Bucket=bucket_name, Key="logs/a")["ResponseMetadata"]["HTTPHeaders"]) == (expiry, rule)
    s3.put_object(Bucket=bucket_name, Key="logs/urgent/b", Body=b"x")
    got = _expiration(s3.head_object(Bucket=bucket_name, Key="logs/urgent/b")["ResponseMetadata"]["HTTPHeaders"])
    assert got is not None and got[1] == "sooner"   # the earliest of the rules that cover it
    for key in ("other", "off/k"):
        s3.put_object(Bucket=bucket_name, Key=key, Body=b"x")
        assert "x-amz-expiration" not in s3.head_object(Bucket=bucket_name, Key=key)["ResponseMetadata"]["HTTPHeaders"]


# ---------------------------------------------------------------- the worker

@pytest.fixture(scope="module")
def lc_dmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dmd]:
    d = start_dmd(tmp_path_factory.mktemp("lc") / "dmd", env={"S3DATA_NOSYNC": "true"})
    yield d
    d.stop()


@pytest.fixture(scope="module")
def lc_gateway(tmp_path_factory: pytest.TempPathFactory, lc_dmd: Dmd) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("lc-gw"), lc_dmd, env={"LIFECYCLE_DAY_SECONDS": str(DAY_S)})
    yield g
    g.stop()


def worker_env(dmd: Dmd) -> dict[str, str]:
    return _base_env({"METADATA_HOST": "127.0.0.1", "DATA_HOST": "127.0.0.1", "METADATA_PORT": str(dmd.metadata_port),
                      "DATA_PORT": str(dmd.data_port), "LIFECYCLE_DAY_SECONDS": str(DAY_S), "LOG_LEVEL": "info"})


def run_worker(dmd: Dmd) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "gateway.lifecycle", "--once"], env=worker_env(dmd), cwd=REPO,
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return lines


def bucket_log(lines: list[dict], bucket: str) -> dict:
    found = [line for line in lines if line.get("message") == "lifecycle bucket done" and line.get("bucket") == bucket]
    assert len(found) == 1, lines
    return found[0]


def wait_days(last_write: float, days: int = 2) -> None:
    """Until `days` short days after the last write: every Days=1 expiry (rounded up to a day
    boundary) is then past."""
    time.sleep(max(0.0, last_write + days * DAY_S + 0.5 - time.time()))


def state(s3, bucket: str) -> tuple[set[tuple[str, str]], dict[str, int], set[str]]:
    """(versions (key, id), delete markers per key, keys whose latest is a delete marker)."""
    versions: set[tuple[str, str]] = set()
    markers: dict[str, int] = {}
    latest_markers: set[str] = set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            versions.add((v["Key"], v["VersionId"]))
        for m in page.get("DeleteMarkers", []):
            markers[m["Key"]] = markers.get(m["Key"], 0) + 1
            if m["IsLatest"]:
                latest_markers.add(m["Key"])
    return versions, markers, latest_markers


def uploads(s3, bucket: str) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


RULES = [
    {"ID": "exp", "Filter": {"Prefix": "exp/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
    {"ID": "tagged", "Filter": {"Tag": {"Key": "class", "Value": "temp"}}, "Status": "Enabled",
     "Expiration": {"Days": 1}},
    {"ID": "big", "Filter": {"And": {"Prefix": "size/", "ObjectSizeGreaterThan": 1000}}, "Status": "Enabled",
     "Expiration": {"Days": 1}},
    {"ID": "nc", "Filter": {"Prefix": "nc/"}, "Status": "Enabled",
     "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
    {"ID": "dm", "Filter": {"Prefix": "dm/"}, "Status": "Enabled", "Expiration": {"ExpiredObjectDeleteMarker": True}},
    {"ID": "mpu", "Filter": {"Prefix": "mpu/"}, "Status": "Enabled",
     "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    {"ID": "keep", "Filter": {"Prefix": "keep/"}, "Status": "Enabled", "Expiration": {"Days": 10000}},
    {"ID": "off", "Filter": {"Prefix": "off/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
]


def populate_versioned(s3, bucket: str) -> dict:
    """A lock-enabled (so versioned) bucket with every case; returns the model of what one pass leaves."""
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = datetime.now(timezone.utc) + timedelta(days=1)
    v = {}

    def put(key: str, body: bytes = b"data", **extra) -> str:
        vid = s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)["VersionId"]
        v.setdefault(key, []).append(vid)
        return vid

    put("exp/a")
    put("exp/locked", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    put("tag/t1", Tagging="class=temp")
    put("tag/t2", Tagging="class=perm")
    put("size/small", b"s" * 10)
    put("size/large", b"L" * 2000)
    for i in range(4):
        put("nc/k", f"v{i}".encode())
    put("nc/locked", b"held", ObjectLockLegalHoldStatus="ON")
    put("nc/locked", b"gov", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    put("nc/locked", b"free")
    put("nc/locked", b"newer")
    put("nc/locked", b"current")
    put("dm/x")
    s3.delete_object(Bucket=bucket, Key="dm/x")                       # a marker over dm/x ...
    s3.delete_object(Bucket=bucket, Key="dm/x", VersionId=v["dm/x"][0])   # ... then alone: expired
    put("exp/gone")
    s3.delete_object(Bucket=bucket, Key="exp/gone")                   # a marker alone under a Days rule:
    s3.delete_object(Bucket=bucket, Key="exp/gone", VersionId=v["exp/gone"][0])   # removed once that old
    put("dm/y")
    s3.delete_object(Bucket=bucket, Key="dm/y")                       # a marker with a version behind it: stays
    put("keep/k")
    put("off/k")
    s3.create_multipart_upload(Bucket=bucket, Key="mpu/old")
    s3.create_multipart_upload(Bucket=bucket, Key="other/upload")   # no rule covers it
    put_lifecycle(s3, bucket, RULES)
    # The model: every version stays but the expired noncurrent ones of nc/k (v1, v0: v2 is kept by
    # NewerNoncurrentVersions=1) and of nc/locked ("free" only: "newer" is kept, the legal hold and
    # the GOVERNANCE retention hold theirs); current versions past Expiration get a delete marker.
    all_versions = {(k, vid) for k, vids in v.items() for vid in vids}
    gone = {("nc/k", v["nc/k"][0]), ("nc/k", v["nc/k"][1]), ("nc/locked", v["nc/locked"][2]), ("dm/x", v["dm/x"][0]),
            ("exp/gone", v["exp/gone"][0])}
    return {
        "versions": all_versions - gone,
        "latest_markers": {"exp/a", "exp/locked", "tag/t1", "size/large", "dm/y"},
        "markers": {"exp/a": 1, "exp/locked": 1, "tag/t1": 1, "size/large": 1, "dm/y": 1},
        "uploads": {"other/upload"},
        "locked": {("nc/locked", v["nc/locked"][0]), ("nc/locked", v["nc/locked"][1]),
                   ("exp/locked", v["exp/locked"][0])},
    }


def test_worker_pass_matches_model(lc_gateway: Gateway, lc_dmd: Dmd, bucket_name: str) -> None:
    s3 = make_client(lc_gateway.url)
    model = populate_versioned(s3, bucket_name)
    plain = bucket_name + "-plain"
    s3.create_bucket(Bucket=plain)
    for i in range(5):
        s3.put_object(Bucket=plain, Key=f"exp/{i}", Body=b"x" * (i + 1))
    s3.put_object(Bucket=plain, Key="keep/k", Body=b"x")
    put_lifecycle(s3, plain, RULES[:1])
    # x-amz-expiration counts in short days: Days=1 is at most two short days away.
    head = s3.head_object(Bucket=plain, Key="exp/0")
    expiry = _expiration(head["ResponseMetadata"]["HTTPHeaders"])[0]
    assert expiry.timestamp() % DAY_S == 0
    assert head["LastModified"] + timedelta(seconds=DAY_S - 1) <= expiry <= head["LastModified"] + \
        timedelta(seconds=2 * DAY_S + 1)
    wait_days(time.time())
    lines = run_worker(lc_dmd)

    versions, markers, latest = state(s3, bucket_name)
    assert versions == model["versions"]
    assert model["locked"] <= versions
    assert latest == model["latest_markers"]
    assert markers == model["markers"]
    assert uploads(s3, bucket_name) == model["uploads"]
    counts = bucket_log(lines, bucket_name)
    assert counts["rules"]["exp"] == {"currentExpired": 2, "deleteMarkersRemoved": 1}
    assert counts["rules"]["nc"] == {"noncurrentExpired": 3}
    assert counts["rules"]["dm"] == {"deleteMarkersRemoved": 1}
    assert counts["rules"]["mpu"] == {"uploadsAborted": 1}
    assert counts["lockedSkipped"] == 2 and counts["errors"] == 0
    # Not versioned: the expired objects are deleted.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=plain).get("Contents", [])] == ["keep/k"]
    assert bucket_log(lines, plain)["rules"]["exp"] == {"currentExpired": 5}
    # A second pass changes nothing (what stays is either not expired or locked).
    run_worker(lc_dmd)
    assert state(s3, bucket_name) == (versions, markers, latest)


def test_worker_sigkilled_mid_pass_then_rerun(lc_gateway: Gateway, lc_dmd: Dmd, bucket_name: str) -> None:
    s3 = make_client(lc_gateway.url)
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    count = 300
    expected_versions = set()
    for i in range(count):
        old = s3.put_object(Bucket=bucket_name, Key=f"nc/{i:04d}", Body=b"old")["VersionId"]
        new = s3.put_object(Bucket=bucket_name, Key=f"nc/{i:04d}", Body=b"new")["VersionId"]
        expected_versions.add((f"nc/{i:04d}", new))
        assert old != new
    put_lifecycle(s3, bucket_name, [{"ID": "nc", "Filter": {"Prefix": "nc/"}, "Status": "Enabled",
                                     "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}])
    wait_days(time.time())
    proc = subprocess.Popen([sys.executable, "-m", "gateway.lifecycle", "--once"], env=worker_env(lc_dmd), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_mid_pass = False
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            left = len(state(s3, bucket_name)[0])
            if count < left < 2 * count:       # some noncurrent versions gone, not all
                proc.send_signal(signal.SIGKILL)
                killed_mid_pass = True
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed_mid_pass:
            proc.kill()
        proc.wait()
    assert killed_mid_pass, "the pass ended before it could be interrupted"
    assert count < len(state(s3, bucket_name)[0]) < 2 * count
    run_worker(lc_dmd)
    versions, markers, latest = state(s3, bucket_name)
    assert versions == expected_versions and not markers and not latest
