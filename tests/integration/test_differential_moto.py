"""The same boto3 scenarios against our gateway and moto's in-process mock:
status codes and error codes must agree.

Where moto is known to differ from AWS, the scenario says so and asserts
AWS's answer for us instead (see MOTO_DIFFERS).
"""
from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Callable

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

Outcome = tuple[int, str | None]


def outcome(fn: Callable[[], object]) -> Outcome:
    try:
        resp = fn()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]
    return resp["ResponseMetadata"]["HTTPStatusCode"], None  # type: ignore[index]


def _bad_md5() -> str:
    return base64.b64encode(hashlib.md5(b"other").digest()).decode()


# name -> (setup(s3, bucket), call(s3, bucket))
SCENARIOS: dict[str, Callable[[object, str], Outcome]] = {
    "get_missing_key": lambda s3, b: outcome(lambda: s3.get_object(Bucket=b, Key="missing")),
    "head_missing_key": lambda s3, b: outcome(lambda: s3.head_object(Bucket=b, Key="missing")),
    "get_missing_bucket": lambda s3, b: outcome(lambda: s3.get_object(Bucket=b + "-nope", Key="k")),
    "list_missing_bucket": lambda s3, b: outcome(lambda: s3.list_objects_v2(Bucket=b + "-nope")),
    "delete_missing_bucket": lambda s3, b: outcome(lambda: s3.delete_bucket(Bucket=b + "-nope")),
    "head_missing_bucket": lambda s3, b: outcome(lambda: s3.head_bucket(Bucket=b + "-nope")),
    "delete_missing_key": lambda s3, b: outcome(lambda: s3.delete_object(Bucket=b, Key="missing")),
    "put_bad_md5": lambda s3, b: outcome(lambda: s3.put_object(Bucket=b, Key="k", Body=b"x", ContentMD5=_bad_md5())),
    "delete_non_empty": lambda s3, b: (s3.put_object(Bucket=b, Key="k", Body=b"x"),
                                       outcome(lambda: s3.delete_bucket(Bucket=b)))[1],
    "range_past_end": lambda s3, b: (s3.put_object(Bucket=b, Key="k", Body=b"abc"),
                                     outcome(lambda: s3.get_object(Bucket=b, Key="k", Range="bytes=10-20")))[1],
    "range_ok": lambda s3, b: (s3.put_object(Bucket=b, Key="k", Body=b"abc"),
                               outcome(lambda: s3.get_object(Bucket=b, Key="k", Range="bytes=1-")))[1],
    "if_match_fails": lambda s3, b: (s3.put_object(Bucket=b, Key="k", Body=b"abc"),
                                     outcome(lambda: s3.get_object(Bucket=b, Key="k", IfMatch='"nope"')))[1],
    "if_none_match_hits": lambda s3, b: outcome(
        lambda: s3.get_object(Bucket=b, Key="k", IfNoneMatch=s3.put_object(Bucket=b, Key="k", Body=b"a")["ETag"])),
    "create_existing_own_bucket_us_east_1": lambda s3, b: outcome(lambda: s3.create_bucket(Bucket=b)),
    "invalid_bucket_name": lambda s3, b: outcome(lambda: s3.create_bucket(Bucket="Invalid_Name")),
    "max_keys_negative": lambda s3, b: outcome(lambda: s3.list_objects(Bucket=b, MaxKeys=-1)),
    "get_versioning_unconfigured": lambda s3, b: outcome(lambda: s3.get_bucket_versioning(Bucket=b)),
    "list_v2_with_delimiter": lambda s3, b: (s3.put_object(Bucket=b, Key="a/b", Body=b""),
                                             outcome(lambda: s3.list_objects_v2(Bucket=b, Delimiter="/")))[1],
    "tagging_missing_key": lambda s3, b: outcome(lambda: s3.get_object_tagging(Bucket=b, Key="missing")),
    "location_of_bucket": lambda s3, b: outcome(lambda: s3.get_bucket_location(Bucket=b)),
}

# Where moto's answer is not AWS's: (scenario) -> (AWS outcome we assert, why moto differs).
MOTO_DIFFERS: dict[str, tuple[Outcome, str]] = {
    "max_keys_negative": ((400, "InvalidArgument"), "moto raises IndexError on a negative max-keys"),
    "invalid_bucket_name": ((400, "InvalidBucketName"), "moto does not apply AWS's naming rules to underscores"),
    "put_bad_md5": ((400, "BadDigest"), "moto does not check Content-MD5 against the body"),
}


def _client(endpoint: str | None):
    from tests.integration.conftest import make_client
    if endpoint:
        return make_client(endpoint)
    return boto3.client("s3", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def moto_outcomes() -> dict[str, Outcome]:
    results = {}
    with mock_aws():
        s3 = _client(None)
        for name, scenario in SCENARIOS.items():
            bucket = f"diff-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            try:
                results[name] = scenario(s3, bucket)
            except Exception as exc:  # moto itself fails on some inputs; MOTO_DIFFERS names them
                results[name] = (0, f"moto raised {type(exc).__name__}")
    return results


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_outcome_as_moto(name, gateway, moto_outcomes):
    s3 = _client(gateway.url)
    bucket = f"diff-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    ours = SCENARIOS[name](s3, bucket)
    if name in MOTO_DIFFERS:
        aws, _why = MOTO_DIFFERS[name]
        assert ours == aws
        assert moto_outcomes[name] != aws, f"moto now agrees with AWS on {name}: drop it from MOTO_DIFFERS"
    else:
        assert ours == moto_outcomes[name]
