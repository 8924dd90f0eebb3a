"""DeleteObjects (POST /bucket?delete) against the real gateway, with a differential check vs moto.

moto is faithful for: missing keys reported as Deleted, malformed XML and an empty
<Delete>. It is NOT faithful for: quiet mode (moto still lists every Deleted key), more
than 1000 keys (moto accepts them), an
undecodable VersionId (moto reports it Deleted), keys over 1024 bytes (moto deletes them),
delete-marker fields in the result (moto omits them) and the Content-MD5 requirement (moto
does not check it). Those cases are checked against AWS's documented behaviour only.
"""
from __future__ import annotations

import base64
import hashlib
import zlib

import boto3
import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from lxml import etree
from moto import mock_aws

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MAX_KEYS = 1000


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def signed_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """A SigV4-signed POST with exactly the headers given (no checksum added behind our back)."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(request)
    return httpx.post(url, content=body, headers=dict(request.headers.items()), timeout=30)


def delete_doc(*keys: str, quiet: bool = False) -> bytes:
    objects = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    return f"<Delete>{'<Quiet>true</Quiet>' if quiet else ''}{objects}</Delete>".encode()


def md5_b64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def crc32_b64(body: bytes) -> str:
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


def xml_error_code(response: httpx.Response) -> str:
    return etree.fromstring(response.content).findtext("Code")


@pytest.fixture
def delete_url(gateway, bucket) -> str:
    return f"{gateway.url}/{bucket}?delete"


# ---------------------------------------------------------------- results

def test_verbose_delete_reports_existing_and_missing_keys_as_deleted_in_request_order(s3, bucket):
    for key in ("a", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ("c", "missing", "a")]})
    assert [d["Key"] for d in result["Deleted"]] == ["c", "missing", "a"]
    assert "Errors" not in result
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_quiet_delete_returns_no_deleted_entries_but_deletes(s3, bucket):
    s3.put_object(Bucket=bucket, Key="q", Body=b"x")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "q"}], "Quiet": True})
    assert "Deleted" not in result and "Errors" not in result
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_of_1000_keys_succeeds_and_1001_is_malformed_xml(s3, bucket):
    present = [f"k{i:04d}" for i in range(0, MAX_KEYS, 97)]
    for key in present:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    keys = [f"k{i:04d}" for i in range(MAX_KEYS)]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
    assert [d["Key"] for d in result["Deleted"]] == keys
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"k{i}"} for i in range(MAX_KEYS + 1)]})
    assert error_code(exc.value) == "MalformedXML"


def test_same_key_twice_is_deleted_once_and_reported_twice(s3, bucket):
    s3.put_object(Bucket=bucket, Key="dup", Body=b"x")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dup"}, {"Key": "dup"}]})
    assert [d["Key"] for d in result["Deleted"]] == ["dup", "dup"]


def test_key_longer_than_1024_bytes_is_a_per_key_error(s3, bucket):
    s3.put_object(Bucket=bucket, Key="ok", Body=b"x")
    long_key = "k" * 1025
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": long_key}, {"Key": "ok"}]})
    assert [e["Key"] for e in result["Errors"]] == [long_key]
    assert result["Errors"][0]["Code"] == "KeyTooLongError"
    assert [d["Key"] for d in result["Deleted"]] == ["ok"]


def test_quiet_mode_still_reports_errors(s3, bucket):
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x" * 1025}, {"Key": "y"}],
                                                      "Quiet": True})
    assert [e["Code"] for e in result["Errors"]] == ["KeyTooLongError"]
    assert "Deleted" not in result


def test_delete_objects_on_missing_bucket_is_no_such_bucket(s3, bucket_name):
    with pytest.raises(ClientError) as exc:
        s3.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": "a"}]})
    assert error_code(exc.value) == "NoSuchBucket"


# ---------------------------------------------------------------- versioning

@pytest.fixture
def versioned(s3, bucket) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_delete_without_version_on_versioned_bucket_creates_delete_marker(s3, versioned):
    s3.put_object(Bucket=versioned, Key="v", Body=b"1")
    result = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "v"}]})
    (entry,) = result["Deleted"]
    assert entry["DeleteMarker"] is True
    assert entry["DeleteMarkerVersionId"]
    versions = s3.list_object_versions(Bucket=versioned)
    assert [m["VersionId"] for m in versions["DeleteMarkers"]] == [entry["DeleteMarkerVersionId"]]
    assert len(versions["Versions"]) == 1


def test_delete_of_a_specific_version_removes_only_that_version(s3, versioned):
    v1 = s3.put_object(Bucket=versioned, Key="v", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=versioned, Key="v", Body=b"2")["VersionId"]
    result = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "v", "VersionId": v2}]})
    assert result["Deleted"] == [{"Key": "v", "VersionId": v2}]
    remaining = [v["VersionId"] for v in s3.list_object_versions(Bucket=versioned)["Versions"]]
    assert remaining == [v1]
    assert s3.get_object(Bucket=versioned, Key="v")["Body"].read() == b"1"


def test_deleting_the_delete_marker_version_reports_it_and_restores_the_object(s3, versioned):
    s3.put_object(Bucket=versioned, Key="m", Body=b"back")
    marker = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "m"}]})["Deleted"][0][
        "DeleteMarkerVersionId"]
    result = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "m", "VersionId": marker}]})
    assert result["Deleted"] == [{"Key": "m", "VersionId": marker, "DeleteMarker": True,
                                  "DeleteMarkerVersionId": marker}]
    assert s3.get_object(Bucket=versioned, Key="m")["Body"].read() == b"back"


def test_undecodable_version_id_is_a_per_key_invalid_argument(s3, versioned):
    s3.put_object(Bucket=versioned, Key="a", Body=b"1")
    result = s3.delete_objects(Bucket=versioned, Delete={"Objects": [{"Key": "a", "VersionId": "not-a-version"},
                                                                     {"Key": "b"}]})
    assert result["Errors"] == [{"Key": "a", "VersionId": "not-a-version", "Code": "InvalidArgument",
                                 "Message": result["Errors"][0]["Message"]}]
    assert [d["Key"] for d in result["Deleted"]] == ["b"]
    assert s3.get_object(Bucket=versioned, Key="a")["Body"].read() == b"1"


def test_delete_of_null_version_on_suspended_bucket_removes_pre_versioning_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="n", Body=b"old")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "n", "VersionId": "null"}]})
    assert result["Deleted"] == [{"Key": "n", "VersionId": "null"}]
    assert s3.list_object_versions(Bucket=bucket).get("Versions", []) == []


# ---------------------------------------------------------------- request document and integrity

def test_boto3_default_checksum_header_is_accepted(s3, bucket):
    """Current botocore sends x-amz-checksum-crc32 (not Content-MD5) for DeleteObjects."""
    seen: dict[str, str] = {}
    s3.meta.events.register("before-send.s3.DeleteObjects",
                             lambda request, **_: seen.update({k.lower(): v for k, v in request.headers.items()}))
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}]})
    assert any(name.startswith("x-amz-checksum-") for name in seen)


def test_content_md5_is_accepted(delete_url):
    body = delete_doc("a")
    response = signed_post(delete_url, body, {"Content-MD5": md5_b64(body)})
    assert response.status_code == 200, response.text
    assert etree.fromstring(response.content).find(f"{S3_NS}Deleted/{S3_NS}Key").text == "a"


def test_missing_content_md5_and_checksum_is_invalid_request(delete_url):
    response = signed_post(delete_url, delete_doc("a"))
    assert response.status_code == 400
    assert xml_error_code(response) == "InvalidRequest"
    assert "Content-MD5" in response.text


@pytest.mark.parametrize("header", ["Content-MD5", "x-amz-checksum-crc32"])
def test_wrong_digest_is_bad_digest_and_deletes_nothing(s3, bucket, delete_url, header):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"x")
    body = delete_doc("keep")
    wrong = md5_b64(b"other") if header == "Content-MD5" else crc32_b64(b"other")
    response = signed_post(delete_url, body, {header: wrong})
    assert response.status_code == 400
    assert xml_error_code(response) == "BadDigest"
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"x"


def test_right_crc32_header_is_accepted(delete_url):
    body = delete_doc("a")
    assert signed_post(delete_url, body, {"x-amz-checksum-crc32": crc32_b64(body)}).status_code == 200


@pytest.mark.parametrize("body", [
    b"<Delete><Object><Key>a</Key></Object>",                      # not well-formed
    b"<Remove><Object><Key>a</Key></Object></Remove>",              # wrong root
    b"<Delete></Delete>",                                           # no Object
    b"<Delete><Object><VersionId>x</VersionId></Object></Delete>",  # Object without Key
    b"<Delete><Quiet>maybe</Quiet><Object><Key>a</Key></Object></Delete>",
    b"",
    b'<!DOCTYPE d [<!ENTITY e "x">]><Delete><Object><Key>&e;</Key></Object></Delete>',
    b"<Delete><Object><Key>a</Key><ETag>x</ETag><ETag>y</ETag></Object></Delete>",   # two conditions
])
def test_invalid_delete_document_is_malformed_xml(delete_url, body):
    response = signed_post(delete_url, body, {"Content-MD5": md5_b64(body)})
    assert response.status_code == 400
    assert xml_error_code(response) == "MalformedXML"


def test_namespaced_document_with_quiet_false_is_verbose(s3, bucket, delete_url):
    body = (b'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<Quiet>false</Quiet><Object><Key>a&amp;b</Key></Object></Delete>")
    response = signed_post(delete_url, body, {"Content-MD5": md5_b64(body)})
    assert response.status_code == 200
    assert etree.fromstring(response.content).find(f"{S3_NS}Deleted/{S3_NS}Key").text == "a&b"


def test_object_etag_is_a_condition_quoted_or_not_and_its_error_names_the_key(s3, bucket, delete_url):
    """AWS's conditional DeleteObjects: each <Object> may carry the <ETag> its current version must
    have; a mismatch is that key's PreconditionFailed error (more in test_conditional_writes.py)."""
    md5 = {k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode())["ETag"].strip('"') for k in "abc"}
    body = (f"<Delete><Object><Key>a</Key><ETag>{md5['a']}</ETag></Object>"
            f"<Object><Key>b</Key><ETag>&quot;{md5['b']}&quot;</ETag></Object>"
            f"<Object><Key>c</Key><ETag>&quot;{md5['a']}&quot;</ETag></Object></Delete>").encode()
    response = signed_post(delete_url, body, {"Content-MD5": md5_b64(body)})
    assert response.status_code == 200
    doc = etree.fromstring(response.content)
    assert [k.text for k in doc.iterfind(f"{S3_NS}Deleted/{S3_NS}Key")] == ["a", "b"]
    assert [(e.findtext(f"{S3_NS}Key"), e.findtext(f"{S3_NS}Code")) for e in doc.iterfind(f"{S3_NS}Error")] \
        == [("c", "PreconditionFailed")]
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]


# ---------------------------------------------------------------- differential vs moto

def _outcome(client, bucket: str, delete: dict) -> object:
    """What a client sees: the error code, or the (Deleted keys, Error codes) of the result."""
    try:
        result = client.delete_objects(Bucket=bucket, Delete=delete)
    except ClientError as exc:
        return error_code(exc)
    return ([d["Key"] for d in result.get("Deleted", [])], [e["Code"] for e in result.get("Errors", [])])


FAITHFUL_CASES = [
    {"Objects": [{"Key": "present"}, {"Key": "absent"}]},
    {"Objects": []},
]


def test_results_match_moto_where_moto_is_faithful(s3, bucket, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ours = []
    for case in FAITHFUL_CASES:
        s3.put_object(Bucket=bucket, Key="present", Body=b"x")
        ours.append(_outcome(s3, bucket, case))
    with mock_aws():
        moto = boto3.client("s3", region_name="us-east-1")
        moto.create_bucket(Bucket=bucket)
        theirs = []
        for case in FAITHFUL_CASES:
            moto.put_object(Bucket=bucket, Key="present", Body=b"x")
            theirs.append(_outcome(moto, bucket, case))
    assert ours == theirs
    assert ours[-1] == "MalformedXML"
