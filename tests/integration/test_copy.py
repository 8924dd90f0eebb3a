"""CopyObject through boto3 against the real gateway (file and mem backends), and against moto."""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from gateway.api.copy import parse_copy_source
from shared.errors import S3Error
from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.integration.test_multipart import (PART, against_moto, complete, data_files, error_code, put_part, signed,
                                                 start, status)


def body_of(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


# ---------------------------------------------------------------- the copy-source header

@pytest.mark.parametrize("value, expected", [
    ("b/k", ("b", "k", None)),
    ("/b/dir/k", ("b", "dir/k", None)),
    ("b/sp%20ace%2F%C3%A9", ("b", "sp ace/é", None)),
    ("b/k?versionId=abc", ("b", "k", "abc")),
    ("b/k%3FversionId%3Dx", ("b", "k?versionId=x", None)),
])
def test_copy_source_header_is_parsed_url_decoded(value, expected):
    src = parse_copy_source(value)
    assert (src.bucket, src.key, src.version_id) == expected


@pytest.mark.parametrize("value", ["", "bucket", "/bucket/", "b/k?other=1", "b/k?versionId=", "b/%ff"])
def test_malformed_copy_source_is_invalid_argument(value):
    with pytest.raises(S3Error) as exc:
        parse_copy_source(value)
    assert exc.value.code == "InvalidArgument"


def test_malformed_copy_source_header_answers_invalid_argument(gateway, bucket):
    r = signed(f"{gateway.url}/{bucket}/dst", "PUT", headers={"x-amz-copy-source": bucket})
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content


# ---------------------------------------------------------------- copies

def test_copy_keeps_data_and_metadata_by_default(s3, bucket):
    data = os.urandom(3000)
    s3.put_object(Bucket=bucket, Key="src", Body=data, ContentType="image/png", Metadata={"a": "1"},
                  ContentDisposition="inline")
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert r["CopyObjectResult"]["LastModified"]
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/png" and got["Metadata"] == {"a": "1"}
    assert got["ContentDisposition"] == "inline"
    assert "CopySourceVersionId" not in r and "VersionId" not in r


def test_replace_directive_takes_metadata_from_the_request(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x", ContentType="image/png", Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   ContentType="text/plain", Metadata={"b": "2"})
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["ContentType"] == "text/plain" and head["Metadata"] == {"b": "2"}


def test_unknown_metadata_directive_is_invalid_argument(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    r = signed(f"{gateway.url}/{bucket}/dst", "PUT",
               headers={"x-amz-copy-source": f"{bucket}/src", "x-amz-metadata-directive": "MERGE"})
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content


def test_copy_onto_itself_needs_a_change(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"same", Metadata={"v": "1"})
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k")
    assert error_code(exc.value) == "InvalidRequest"
    assert "copy an object to itself" in exc.value.response["Error"]["Message"]
    s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k", MetadataDirective="REPLACE",
                   Metadata={"v": "2"})
    assert s3.head_object(Bucket=bucket, Key="k")["Metadata"] == {"v": "2"}
    s3.copy_object(Bucket=bucket, Key="k", CopySource=f"{bucket}/k", StorageClass="STANDARD")
    assert body_of(s3, bucket, "k") == b"same"


def test_copy_across_buckets_and_of_unusual_keys(s3, bucket):
    other = bucket + "-2"
    s3.create_bucket(Bucket=other)
    key = "dir/sp ace+plus/é?&=%"
    s3.put_object(Bucket=bucket, Key=key, Body=b"payload")
    s3.copy_object(Bucket=other, Key="copied", CopySource={"Bucket": bucket, "Key": key})
    assert body_of(s3, other, "copied") == b"payload"


def test_copy_of_empty_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/empty")
    assert r["CopyObjectResult"]["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert body_of(s3, bucket, "dst") == b""


def test_copy_of_a_multipart_object_is_single_part_with_md5_etag(s3, bucket):
    parts = [os.urandom(PART), b"end"]
    uid = start(s3, bucket, "mpu")
    complete(s3, bucket, uid, [put_part(s3, bucket, uid, i + 1, p, key="mpu") for i, p in enumerate(parts)],
             key="mpu")
    r = s3.copy_object(Bucket=bucket, Key="flat", CopySource=f"{bucket}/mpu")
    whole = b"".join(parts)
    assert r["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(whole).hexdigest()}"'
    assert body_of(s3, bucket, "flat") == whole


def test_copy_keeps_the_source_checksum(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"summed", ChecksumAlgorithm="SHA256")
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    expected = s3.head_object(Bucket=bucket, Key="src", ChecksumMode="ENABLED")["ChecksumSHA256"]
    assert r["CopyObjectResult"]["ChecksumSHA256"] == expected
    assert s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")["ChecksumSHA256"] == expected


# ---------------------------------------------------------------- source errors and conditions

def test_missing_source_key_bucket_and_version(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    cases = [({"Bucket": bucket, "Key": "nope"}, "NoSuchKey"),
             ({"Bucket": bucket + "-nope", "Key": "src"}, "NoSuchBucket"),
             (f"{bucket}/src?versionId=not-a-version", "InvalidArgument")]
    for source, code in cases:
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="dst", CopySource=source)
        assert error_code(exc.value) == code, source
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket + "-nope", Key="dst", CopySource=f"{bucket}/src")
    assert error_code(exc.value) == "NoSuchBucket"


def test_source_of_another_account_is_access_denied(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"secret")
    other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
    mine = f"{bucket}-o"
    other.create_bucket(Bucket=mine)
    with pytest.raises(ClientError) as exc:
        other.copy_object(Bucket=mine, Key="stolen", CopySource=f"{bucket}/src")
    assert error_code(exc.value) == "AccessDenied" and status(exc.value) == 403


def test_copy_source_conditions_fail_with_412(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    past = datetime.now(timezone.utc) - timedelta(days=1)
    failing = [{"CopySourceIfMatch": '"' + "0" * 32 + '"'}, {"CopySourceIfNoneMatch": etag},
               {"CopySourceIfUnmodifiedSince": past}, {"CopySourceIfModifiedSince": datetime.now(timezone.utc)}]
    for condition in failing:
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", **condition)
        assert error_code(exc.value) == "PreconditionFailed" and status(exc.value) == 412, condition
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", CopySourceIfMatch=etag,
                   CopySourceIfModifiedSince=past)
    assert body_of(s3, bucket, "dst") == b"x"


# ---------------------------------------------------------------- versioning

def test_versioned_copy_reports_both_version_ids_and_copies_old_versions(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="src", Body=b"two")["VersionId"]
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert r["CopySourceVersionId"] == v2 and r["VersionId"] not in (None, "null", v2)
    r = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert r["CopySourceVersionId"] == v1
    assert body_of(s3, bucket, "dst") == b"one"
    # Restoring an old version onto its own key is allowed without REPLACE.
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert body_of(s3, bucket, "src") == b"one"


def test_delete_marker_sources(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    marker = s3.delete_object(Bucket=bucket, Key="src")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src")
    assert error_code(exc.value) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src", "VersionId": marker})
    assert error_code(exc.value) == "InvalidRequest"


def test_overwriting_copy_frees_the_replaced_data(s3_file, dmd, bucket_name):
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    s3.put_object(Bucket=bucket_name, Key="src", Body=b"source")
    s3.put_object(Bucket=bucket_name, Key="dst", Body=b"old destination")
    s3.copy_object(Bucket=bucket_name, Key="dst", CopySource=f"{bucket_name}/src")
    assert len(data_files(dmd.data_path) - before) == 2
    s3.copy_object(Bucket=bucket_name, Key="src", CopySource=f"{bucket_name}/src", MetadataDirective="REPLACE")
    assert len(data_files(dmd.data_path) - before) == 2
    assert body_of(s3, bucket_name, "src") == b"source"


# ---------------------------------------------------------------- differential against moto

def _copy_scenarios(s3, bucket: str) -> dict[str, str]:
    out: dict[str, str] = {}

    def run(name, **kwargs):
        try:
            s3.copy_object(Bucket=bucket, **kwargs)
            out[name] = "ok"
        except ClientError as exc:
            out[name] = error_code(exc)
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    run("plain", Key="dst", CopySource=f"{bucket}/src")
    run("missing key", Key="dst", CopySource=f"{bucket}/nope")
    run("missing bucket", Key="dst", CopySource=f"{bucket}-nope/src")
    run("onto itself", Key="src", CopySource=f"{bucket}/src")
    run("onto itself replace", Key="src", CopySource=f"{bucket}/src", MetadataDirective="REPLACE")
    run("if-match fails", Key="dst", CopySource=f"{bucket}/src", CopySourceIfMatch='"' + "0" * 32 + '"')
    run("if-none-match fails", Key="dst", CopySource=f"{bucket}/src", CopySourceIfNoneMatch=etag)
    run("bad version", Key="dst", CopySource=f"{bucket}/src?versionId=bogus")
    return out


MOTO_COPY_DIFFERS = {
    "if-match fails": "ok",           # moto ignores x-amz-copy-source-if-match; AWS: PreconditionFailed
    "bad version": "NoSuchVersion",   # moto looks the id up; AWS validates it first: InvalidArgument
}


def test_copy_error_codes_match_moto(s3, bucket):
    ours = _copy_scenarios(s3, bucket)
    theirs = against_moto(_copy_scenarios)
    assert ours == {"plain": "ok", "missing key": "NoSuchKey", "missing bucket": "NoSuchBucket",
                    "onto itself": "InvalidRequest", "onto itself replace": "ok",
                    "if-match fails": "PreconditionFailed", "if-none-match fails": "PreconditionFailed",
                    "bad version": "InvalidArgument"}
    assert theirs == {**ours, **MOTO_COPY_DIFFERS}


# ---------------------------------------------------------------- tags: x-amz-tagging-directive

def _copy_tag_scenarios(s3, bucket: str) -> dict[str, object]:
    s3.put_object(Bucket=bucket, Key="src", Body=b"data", Tagging="a=1&b=2")

    def tags(key: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    s3.copy_object(Bucket=bucket, Key="default", CopySource=f"{bucket}/src")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource=f"{bucket}/src", TaggingDirective="COPY")
    s3.copy_object(Bucket=bucket, Key="copy-ignores-header", CopySource=f"{bucket}/src", TaggingDirective="COPY",
                   Tagging="x=9")
    s3.copy_object(Bucket=bucket, Key="replace", CopySource=f"{bucket}/src", TaggingDirective="REPLACE",
                   Tagging="c=3")
    s3.copy_object(Bucket=bucket, Key="replace-empty", CopySource=f"{bucket}/src", TaggingDirective="REPLACE")
    return {
        "default": tags("default"), "copy": tags("copy"), "copy-ignores-header": tags("copy-ignores-header"),
        "replace": tags("replace"), "replace-empty": tags("replace-empty"),
        "count": s3.head_object(Bucket=bucket, Key="default").get("TagCount"),
    }


def test_tagging_directive_copy_keeps_source_tags_and_replace_takes_the_header(s3, bucket):
    ours = _copy_tag_scenarios(s3, bucket)
    assert ours == {"default": {"a": "1", "b": "2"}, "copy": {"a": "1", "b": "2"},
                    "copy-ignores-header": {"a": "1", "b": "2"}, "replace": {"c": "3"}, "replace-empty": {},
                    "count": 2}
    assert against_moto(_copy_tag_scenarios) == ours


def test_unknown_tagging_directive_is_invalid_argument(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    r = signed(f"{gateway.url}/{bucket}/dst", "PUT",
               headers={"x-amz-copy-source": f"{bucket}/src", "x-amz-tagging-directive": "MERGE"})
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content
    assert b"<ArgumentName>x-amz-tagging-directive</ArgumentName>" in r.content
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="dst")
    assert status(exc.value) == 404


def test_replaced_tags_are_validated_before_any_copy(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", TaggingDirective="REPLACE",
                       Tagging="&".join(f"k{i}=v" for i in range(11)))
    assert (status(exc.value), error_code(exc.value)) == (400, "BadRequest")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource=f"{bucket}/src", TaggingDirective="REPLACE",
                       Tagging="k=" + "v" * 257)
    assert error_code(exc.value) == "InvalidTag"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="dst")
    assert status(exc.value) == 404


def test_copy_of_a_tagged_version_keeps_that_versions_tags(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="src", Body=b"one", Tagging="v=1")["VersionId"]
    s3.put_object(Bucket=bucket, Key="src", Body=b"two", Tagging="v=2")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert s3.get_object_tagging(Bucket=bucket, Key="dst")["TagSet"] == [{"Key": "v", "Value": "1"}]
