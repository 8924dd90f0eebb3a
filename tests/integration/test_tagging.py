"""Bucket tagging and object tagging limits through boto3 against real processes (file and mem
backends), checked against moto where moto implements the rule (and saying where it is wrong)."""
from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError

from gateway.metadata.client import RemoteMetadataClient
from gateway.store import METASTORE
from tests.integration.conftest import ACCESS_KEY2, SECRET_KEY2, make_client
from tests.integration.test_multipart import against_moto, error_code, signed, status

TAGS = [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "storage"}]


def tag_set(pairs: dict[str, str]) -> dict:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in pairs.items()]}


def outcome(call) -> tuple[int, str | None]:
    try:
        r = call()
    except ClientError as exc:
        return status(exc), error_code(exc)
    return r["ResponseMetadata"]["HTTPStatusCode"], None


# ---------------------------------------------------------------- bucket tagging

def test_bucket_tagging_round_trip_replace_and_delete(s3, bucket):
    r = s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": TAGS})
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == TAGS
    # Put replaces the whole set.
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "only", "Value": ""}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "only", "Value": ""}]
    r = s3.delete_bucket_tagging(Bucket=bucket)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert (status(exc.value), error_code(exc.value)) == (404, "NoSuchTagSet")
    # Deleting again is still 204.
    assert s3.delete_bucket_tagging(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_untagged_bucket_answers_no_such_tag_set_with_body(gateway, bucket):
    r = signed(f"{gateway.url}/{bucket}?tagging")
    assert r.status_code == 404
    assert b"<Code>NoSuchTagSet</Code>" in r.content and f"<BucketName>{bucket}</BucketName>".encode() in r.content


async def test_bucket_tags_are_stored_in_the_bucket_attributes_in_the_original_shape(s3_file, dmd, bucket_name):
    """The original's BucketMD keeps `tags` as [{"Value", "Key"}] in request order."""
    s3_file.create_bucket(Bucket=bucket_name)
    s3_file.put_bucket_tagging(Bucket=bucket_name, Tagging={"TagSet": TAGS})
    client = RemoteMetadataClient("127.0.0.1", dmd.metadata_port)
    await client.connect()
    try:
        doc = json.loads(await client.get([METASTORE], bucket_name, {}))
    finally:
        await client.close()
    assert doc["tags"] == [{"Value": "prod", "Key": "env"}, {"Value": "storage", "Key": "team"}]


def test_empty_tag_set_leaves_no_tag_set(s3, bucket):
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": TAGS})
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []})
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert error_code(exc.value) == "NoSuchTagSet"


def _bucket_tag_errors(s3, bucket) -> dict[str, tuple[int, str | None]]:
    def put(tags):
        return outcome(lambda: s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags}))
    return {
        "50 tags": put([{"Key": f"k{i}", "Value": "v"} for i in range(50)]),
        "51 tags": put([{"Key": f"k{i}", "Value": "v"} for i in range(51)]),
        "key 128": put([{"Key": "k" * 128, "Value": "v"}]),
        "key 129": put([{"Key": "k" * 129, "Value": "v"}]),
        "value 256": put([{"Key": "k", "Value": "v" * 256}]),
        "value 257": put([{"Key": "k", "Value": "v" * 257}]),
        "aws: prefix": put([{"Key": "aws:cloudformation:stack", "Value": "v"}]),
        "duplicate key": put([{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]),
        "get untagged": outcome(lambda: s3.get_bucket_tagging(Bucket=bucket + "x")),
    }


# Where moto's answer is not AWS's: name -> (AWS's outcome, why moto differs).
BUCKET_MOTO_DIFFERS = {
    "51 tags": ((400, "InvalidTag"), "moto does not count bucket tags"),
    "key 129": ((400, "InvalidTag"), "moto does not check bucket tag lengths"),
    "value 257": ((400, "InvalidTag"), "moto does not check bucket tag lengths"),
}


def test_bucket_tag_validation_as_aws_and_moto(s3, bucket):
    ours = _bucket_tag_errors(s3, bucket)
    theirs = against_moto(_bucket_tag_errors)
    for name, got in ours.items():
        if name in BUCKET_MOTO_DIFFERS:
            aws, _why = BUCKET_MOTO_DIFFERS[name]
            assert got == aws, name
            assert theirs[name] != aws, f"moto now agrees with AWS on {name}: drop it from BUCKET_MOTO_DIFFERS"
        else:
            assert got == theirs[name], name
    assert ours["50 tags"] == (204, None)
    assert ours["get untagged"] == (404, "NoSuchBucket")


@pytest.mark.parametrize("body", [
    b"",
    b"not xml",
    b"<Other><TagSet/></Other>",
    b"<Tagging></Tagging>",
    b"<Tagging><TagSet/><TagSet/></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Value>v</Value></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value><Key>x</Key></Tag></TagSet></Tagging>",
    b"<Tagging><TagSet><Other/></TagSet></Tagging>",
])
def test_malformed_tagging_documents_are_malformed_xml(gateway, bucket, body):
    for path in (f"/{bucket}?tagging",):
        r = signed(f"{gateway.url}{path}", "PUT", body)
        assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, (body, r.content)


def test_malformed_object_tagging_document_is_malformed_xml(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed(f"{gateway.url}/{bucket}/k?tagging", "PUT", b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>")
    assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content


def test_bucket_tagging_is_owner_only(gateway, s3, bucket):
    other = make_client(gateway.url, ACCESS_KEY2, SECRET_KEY2)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": TAGS})
    for call in (lambda: other.get_bucket_tagging(Bucket=bucket),
                 lambda: other.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": []}),
                 lambda: other.delete_bucket_tagging(Bucket=bucket)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc.value) == "AccessDenied"
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == TAGS


def test_bucket_tagging_of_a_missing_bucket_is_no_such_bucket(s3):
    name = f"test-{uuid.uuid4().hex[:16]}"
    for call in (lambda: s3.get_bucket_tagging(Bucket=name),
                 lambda: s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": TAGS}),
                 lambda: s3.delete_bucket_tagging(Bucket=name)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc.value) == "NoSuchBucket"


def test_bucket_tags_survive_other_bucket_configuration(s3, bucket):
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": TAGS})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == TAGS
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


# ---------------------------------------------------------------- object tag limits

def _object_tag_errors(s3, bucket) -> dict[str, tuple[int, str | None]]:
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")

    def put(tags):
        return outcome(lambda: s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": tags}))

    def header(value):
        return outcome(lambda: s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging=value))
    return {
        "10 tags": put([{"Key": f"k{i}", "Value": "v"} for i in range(10)]),
        "11 tags": put([{"Key": f"k{i}", "Value": "v"} for i in range(11)]),
        "key 128": put([{"Key": "k" * 128, "Value": "v"}]),
        "key 129": put([{"Key": "k" * 129, "Value": "v"}]),
        "value 256": put([{"Key": "k", "Value": "v" * 256}]),
        "value 257": put([{"Key": "k", "Value": "v" * 257}]),
        "aws: prefix": put([{"Key": "aws:x", "Value": "v"}]),
        "duplicate key": put([{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]),
        "header 10 tags": header("&".join(f"k{i}=v" for i in range(10))),
        "header 11 tags": header("&".join(f"k{i}=v" for i in range(11))),
        "header key 129": header("k" * 129 + "=v"),
        "header value 257": header("k=" + "v" * 257),
    }


OBJECT_MOTO_DIFFERS = {
    "duplicate key": ((400, "InvalidTag"), "moto keeps the last of a key given twice in PutObjectTagging"),
}


def test_object_tag_limits_as_aws_and_moto(s3, bucket):
    """AWS: more than 10 tags is 400 BadRequest "Object tags cannot be greater than 10" (PutObjectTagging
    and PutObject's header alike); too long a key or value, an aws: key or a key twice is InvalidTag."""
    ours = _object_tag_errors(s3, bucket)
    theirs = against_moto(_object_tag_errors)
    for name, got in ours.items():
        if name in OBJECT_MOTO_DIFFERS:
            aws, _why = OBJECT_MOTO_DIFFERS[name]
            assert got == aws, name
            assert theirs[name] != aws, f"moto now agrees with AWS on {name}: drop it from OBJECT_MOTO_DIFFERS"
        else:
            assert got == theirs[name], name
    assert ours["11 tags"] == (400, "BadRequest")
    assert ours["10 tags"] == (200, None)


def test_too_many_tags_message_is_aws_s(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    tags = "".join(f"<Tag><Key>k{i}</Key><Value>v</Value></Tag>" for i in range(11))
    r = signed(f"{gateway.url}/{bucket}/t?tagging", "PUT", f"<Tagging><TagSet>{tags}</TagSet></Tagging>".encode())
    assert r.status_code == 400
    assert b"<Code>BadRequest</Code><Message>Object tags cannot be greater than 10</Message>" in r.content


def test_tag_lengths_count_utf16_code_units(s3, bucket):
    """AWS counts characters in UTF-16: a character outside the BMP is two of the 128."""
    s3.put_object(Bucket=bucket, Key="t", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging=tag_set({"\U0001F600" * 64: "é" * 256}))
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging=tag_set({"k" + "\U0001F600" * 64: "v"}))
    assert error_code(exc.value) == "InvalidTag"


@pytest.mark.parametrize("value", ["a=1&a=2", "a=1=2", "=v"])
def test_malformed_tagging_header_is_invalid_argument(s3, bucket, value):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging=value)
    assert (status(exc.value), error_code(exc.value)) == (400, "InvalidArgument")


def test_tagging_header_key_without_value_is_the_empty_value(s3, bucket):
    s3.put_object(Bucket=bucket, Key="h", Body=b"x", Tagging="foo=bar&bar")
    tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key="h")["TagSet"]}
    assert tags == {"foo": "bar", "bar": ""}


# ---------------------------------------------------------------- x-amz-tagging-count

def test_tagging_count_on_get_and_head_only_when_tagged(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="a=1&b=2&c=3")
    assert "TagCount" not in s3.head_object(Bucket=bucket, Key="plain")
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="plain")
    assert s3.head_object(Bucket=bucket, Key="tagged")["TagCount"] == 3
    assert s3.get_object(Bucket=bucket, Key="tagged")["TagCount"] == 3
    s3.put_object_tagging(Bucket=bucket, Key="plain", Tagging=tag_set({"x": "1"}))
    assert s3.head_object(Bucket=bucket, Key="plain")["TagCount"] == 1
    s3.delete_object_tagging(Bucket=bucket, Key="tagged")
    assert "TagCount" not in s3.head_object(Bucket=bucket, Key="tagged")


def test_tagging_count_matches_moto():
    def scenario(s3, bucket):
        s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="a=1&b=2")
        s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
        return (s3.head_object(Bucket=bucket, Key="tagged").get("TagCount"),
                s3.get_object(Bucket=bucket, Key="tagged").get("TagCount"),
                s3.head_object(Bucket=bucket, Key="plain").get("TagCount"))
    assert against_moto(scenario) == (2, 2, None)


def test_tagging_count_on_get_and_head_against_the_server(s3, bucket):
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x", Tagging="a=1&b=2")
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert (s3.head_object(Bucket=bucket, Key="tagged").get("TagCount"),
            s3.get_object(Bucket=bucket, Key="tagged").get("TagCount"),
            s3.head_object(Bucket=bucket, Key="plain").get("TagCount")) == (2, 2, None)
