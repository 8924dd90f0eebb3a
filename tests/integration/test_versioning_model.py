"""Stateful property test of versioning: random put / delete / delete-version / enable / suspend
sequences on a few keys, checked after every step against a small reference model of AWS's rules.

The model is the reference's "Versioning" section reduced to lists: each key holds its versions
newest first; a version is (external id, body or None for a delete marker). Puts and deletes on a
never-configured or Suspended bucket replace the one null version and put it first; on an Enabled
bucket they add a new version first; a version-specific delete removes just that entry. After every
step ListObjectVersions (document order, IsLatest), ListObjects (masters only, delete markers
hidden), GET of each key and GET ?versionId=null must agree with the model. Runs on both backends.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from shared import versionid
from tests.integration.test_multipart import error_code
from tests.integration.test_versioning import etag, raw_versions

NULL = versionid.EXTERNAL_NULL
KEYS = ("k", "dir/k", "z")
BODIES = st.binary(min_size=0, max_size=8)


@dataclass
class Version:
    vid: str                  # external id, "null" for the null version
    data: bytes | None        # None: a delete marker


@dataclass
class Model:
    status: str | None = None                      # None (never configured), "Enabled", "Suspended"
    keys: dict[str, list[Version]] = field(default_factory=dict)   # newest first

    def replace_null(self, key: str, version: Version) -> None:
        versions = [v for v in self.keys.get(key, []) if v.vid != NULL]
        self.keys[key] = [version, *versions]

    def add(self, key: str, version: Version) -> None:
        self.keys[key] = [version, *self.keys.get(key, [])]

    def remove(self, key: str, vid: str) -> None:
        self.keys[key] = [v for v in self.keys.get(key, []) if v.vid != vid]
        if not self.keys[key]:
            del self.keys[key]

    def listing(self) -> list[tuple[str, str, bool, str]]:
        return [(key, v.vid, i == 0, "DM" if v.data is None else etag(v.data))
                for key in sorted(self.keys) for i, v in enumerate(self.keys[key])]


class VersioningMachine(RuleBasedStateMachine):
    """One fresh bucket per run; `s3` is a boto3 client of the gateway under test."""

    def __init__(self, s3) -> None:
        super().__init__()
        self.s3 = s3
        self.bucket = f"model-{uuid.uuid4().hex[:16]}"
        s3.create_bucket(Bucket=self.bucket)
        self.model = Model()

    # ---------------------------------------------------------------- operations

    @rule(key=st.sampled_from(KEYS), data=BODIES)
    def put(self, key: str, data: bytes) -> None:
        r = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        if self.model.status == "Enabled":
            assert r["VersionId"] not in (None, NULL)
            self.model.add(key, Version(r["VersionId"], data))
        else:
            assert r.get("VersionId") == (NULL if self.model.status == "Suspended" else None)
            self.model.replace_null(key, Version(NULL, data))

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        r = self.s3.delete_object(Bucket=self.bucket, Key=key)
        if self.model.status is None:
            assert "DeleteMarker" not in r
            self.model.keys.pop(key, None)
        elif self.model.status == "Enabled":
            assert r["DeleteMarker"] is True and r["VersionId"] not in (None, NULL)
            self.model.add(key, Version(r["VersionId"], None))
        else:
            assert r["DeleteMarker"] is True and r["VersionId"] == NULL
            self.model.replace_null(key, Version(NULL, None))

    @precondition(lambda self: bool(self.model.keys))
    @rule(pick=st.integers(min_value=0, max_value=10**6))
    def delete_version(self, pick: int) -> None:
        choices = [(k, v) for k in sorted(self.model.keys) for v in self.model.keys[k]]
        key, version = choices[pick % len(choices)]
        r = self.s3.delete_object(Bucket=self.bucket, Key=key, VersionId=version.vid)
        assert r["VersionId"] == version.vid
        assert r.get("DeleteMarker", False) is (version.data is None)
        self.model.remove(key, version.vid)

    @rule()
    def enable(self) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.model.status = "Enabled"

    @precondition(lambda self: self.model.status is not None)
    @rule()
    def suspend(self) -> None:
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Suspended"})
        self.model.status = "Suspended"

    # ---------------------------------------------------------------- what must hold after every step

    @invariant()
    def listings_match(self) -> None:
        assert raw_versions(self.s3.meta.endpoint_url, self.bucket) == self.model.listing()
        masters = [k for k in sorted(self.model.keys) if self.model.keys[k][0].data is not None]
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents", [])
        assert [c["Key"] for c in listed] == masters
        assert [c["ETag"] for c in listed] == [etag(self.model.keys[k][0].data) for k in masters]

    @invariant()
    def reads_match(self) -> None:
        for key in KEYS:
            versions = self.model.keys.get(key, [])
            latest = versions[0] if versions else None
            self._check_get(key, {}, latest, "NoSuchKey")
            null = next((v for v in versions if v.vid == NULL), None)
            self._check_get(key, {"VersionId": NULL}, null, "NoSuchVersion")

    def _check_get(self, key: str, kwargs: dict[str, str], expected: Version | None, missing: str) -> None:
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=key, **kwargs)
        except ClientError as exc:
            headers = exc.response["ResponseMetadata"]["HTTPHeaders"]
            if expected is None:
                assert error_code(exc) == missing
                assert "x-amz-delete-marker" not in headers
            else:
                assert expected.data is None, (key, kwargs, error_code(exc))
                assert error_code(exc) == ("MethodNotAllowed" if kwargs else "NoSuchKey")
                assert headers.get("x-amz-delete-marker") == "true"
                assert headers.get("x-amz-version-id") == expected.vid
            return
        assert expected is not None and expected.data is not None, (key, kwargs)
        assert got["Body"].read() == expected.data
        if self.model.status is not None:
            assert got["VersionId"] == expected.vid


def run_machine(s3, max_examples: int, steps: int) -> None:
    run_state_machine_as_test(
        lambda: VersioningMachine(s3),
        settings=settings(max_examples=max_examples, stateful_step_count=steps, deadline=None,
                          suppress_health_check=list(HealthCheck), derandomize=False))


def test_random_versioning_sequences_match_the_model(s3):
    run_machine(s3, max_examples=8, steps=12)


@pytest.mark.slow
def test_random_versioning_sequences_match_the_model_long(s3):
    # About 0.2 s a step (each checks the whole bucket against the model): ~3 minutes a backend,
    # so that CI (make test_slow) runs it; 150 x 40 took 20 minutes a backend.
    run_machine(s3, max_examples=30, steps=30)
