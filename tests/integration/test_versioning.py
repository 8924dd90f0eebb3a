"""Bucket versioning at full fidelity, case by case, through boto3 against the real gateway.

Each test proves one case of the reference's "Versioning" section (cloudserver-docs.txt:
"Creation of New Versions", "Null Version Management" cases 1-3 with their tables,
"Specifying Versions in APIs for Putting Versions", "Behavior of Object-Targeting APIs",
"Delete Markers", "Null Version Mapping", "DELETE Example") or one AWS behaviour the issue
lists; /work/briefs/I-versioning-cases.md maps every case to its test. All tests run on both
backends (real dmd and mem), through the `s3` fixture.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import random
from typing import Any
from urllib.parse import quote, unquote

import pytest
from botocore.exceptions import ClientError

from shared import versionid
from tests.integration.conftest import make_client
from tests.integration.test_multipart import PART, complete, error_code, put_part, signed, start, status

NULL = versionid.EXTERNAL_NULL


# ---------------------------------------------------------------- helpers

def enable(s3, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def suspend(s3, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})


def body(s3, bucket: str, key: str, **kwargs: Any) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def put(s3, bucket: str, key: str, data: bytes) -> str | None:
    """PutObject; the x-amz-version-id it answered (None when absent)."""
    return s3.put_object(Bucket=bucket, Key=key, Body=data).get("VersionId")


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def versions(s3, bucket: str, **kwargs: Any) -> list[tuple[str, str, bool, str]]:
    """ListObjectVersions as (key, version id, is latest, etag or 'DM'): the Versions in document
    order, then the DeleteMarkers (boto3 separates them; `raw_versions` keeps the document order)."""
    r = s3.list_object_versions(Bucket=bucket, **kwargs)
    return _merge(r)


def _merge(r: dict[str, Any]) -> list[tuple[str, str, bool, str]]:
    entries = [(v["Key"], v["VersionId"], v["IsLatest"], v["ETag"]) for v in r.get("Versions", [])]
    entries += [(m["Key"], m["VersionId"], m["IsLatest"], "DM") for m in r.get("DeleteMarkers", [])]
    return entries


def raw_versions(gateway_url: str, bucket: str, query: str = "") -> list[tuple[str, str, bool, str]]:
    """ListObjectVersions in the document's own order (boto3 separates Versions and DeleteMarkers)."""
    from lxml import etree
    r = signed(f"{gateway_url}/{bucket}?versions{('&' + query) if query else ''}")
    assert r.status_code == 200, r.text
    doc = etree.fromstring(r.content)
    out = []
    for el in doc:
        tag = etree.QName(el).localname
        if tag in ("Version", "DeleteMarker"):
            f = {etree.QName(c).localname: c.text for c in el}
            out.append((f["Key"], f["VersionId"], f["IsLatest"] == "true", f.get("ETag") or "DM"))
    return out


def keys(s3, bucket: str, **kwargs: Any) -> list[str]:
    return [c["Key"] for c in s3.list_objects(Bucket=bucket, **kwargs).get("Contents", [])]


def keys_v2(s3, bucket: str, **kwargs: Any) -> list[str]:
    return [c["Key"] for c in s3.list_objects_v2(Bucket=bucket, **kwargs).get("Contents", [])]


def headers_of(exc: ClientError) -> dict[str, str]:
    return exc.response["ResponseMetadata"]["HTTPHeaders"]


@pytest.fixture
def gw_url(s3) -> str:
    return s3.meta.endpoint_url


@pytest.fixture
def vbucket(s3, bucket: str) -> str:
    enable(s3, bucket)
    return bucket


# ---------------------------------------------------------------- Put/GetBucketVersioning

def test_never_configured_bucket_reports_no_versioning_status(s3, bucket):
    r = s3.get_bucket_versioning(Bucket=bucket)
    assert "Status" not in r and "MFADelete" not in r


def test_enabled_and_suspended_states_are_stored_and_reported(s3, bucket):
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    suspend(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    enable(s3, bucket)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


def test_mfa_delete_disabled_is_accepted_and_reported(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled", "MFADelete": "Disabled"})
    r = s3.get_bucket_versioning(Bucket=bucket)
    assert r["Status"] == "Enabled" and r["MFADelete"] == "Disabled"


def test_mfa_delete_enabled_is_refused_and_leaves_the_state_unchanged(s3, bucket):
    # No MFA device exists to check x-amz-mfa against: refused as CloudServer does (501 NotImplemented).
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=bucket, MFA="123456 654321",
                                 VersioningConfiguration={"Status": "Enabled", "MFADelete": "Enabled"})
    assert error_code(exc.value) == "NotImplemented" and status(exc.value) == 501
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


# AWS validates the document against its schema: a bad or missing Status is MalformedXML (CloudServer
# answers IllegalVersioningConfigurationException for those; we follow AWS).
@pytest.mark.parametrize("doc", [
    b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>",
    b"<VersioningConfiguration><MfaDelete>Disabled</MfaDelete></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>Enabled</Status><MfaDelete>Maybe</MfaDelete></VersioningConfiguration>",
    b"<VersioningConfiguration><Status>Enabled</Status>",
    b"",
    b"<Other><Status>Enabled</Status></Other>",
])
def test_invalid_versioning_configuration_is_malformed_xml(s3, gw_url, bucket, doc):
    r = signed(f"{gw_url}/{bucket}?versioning", "PUT", body=doc)
    assert r.status_code == 400 and b"<Code>MalformedXML</Code>" in r.content, r.text
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


def test_versioning_of_a_missing_bucket_is_no_such_bucket(s3, bucket_name):
    for call in (lambda: s3.get_bucket_versioning(Bucket=bucket_name), lambda: enable(s3, bucket_name)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc.value) == "NoSuchBucket"


# ---------------------------------------------------------------- Creation of New Versions

def test_each_put_on_an_enabled_bucket_creates_a_new_version(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"A")
    v2 = put(s3, vbucket, "foo", b"B")
    assert v1 and v2 and v1 != v2 and NULL not in (v1, v2)
    assert versions(s3, vbucket) == [("foo", v2, True, etag(b"B")), ("foo", v1, False, etag(b"A"))]
    assert body(s3, vbucket, "foo") == b"B"
    assert body(s3, vbucket, "foo", VersionId=v1) == b"A"
    assert body(s3, vbucket, "foo", VersionId=v2) == b"B"
    assert s3.get_object(Bucket=vbucket, Key="foo")["VersionId"] == v2
    assert s3.head_object(Bucket=vbucket, Key="foo", VersionId=v1)["VersionId"] == v1


def test_version_ids_use_the_protocol_encoding_and_order_newest_first(s3, vbucket):
    ids = [put(s3, vbucket, "k", bytes([i])) for i in range(3)]
    internal = [versionid.decode(v) for v in ids]
    # dmd ids carry a counter suffix (hex, >= 56 chars); suffix-less 27-char ids are base62 (32 chars).
    for ext, vid in zip(ids, internal):
        assert versionid.encode(vid) == ext
        assert len(ext) == versionid.BASE62_ENCODED_LENGTH or len(ext) >= 56
    assert internal == sorted(internal, reverse=True)   # newer ids sort first in byte order


def test_copy_object_and_complete_multipart_upload_create_versions(s3, vbucket):
    v1 = put(s3, vbucket, "src", b"source")
    copied = s3.copy_object(Bucket=vbucket, Key="dst", CopySource={"Bucket": vbucket, "Key": "src"})
    assert copied["VersionId"] not in (None, NULL) and copied["CopySourceVersionId"] == v1
    upload = start(s3, vbucket, "dst")
    done = complete(s3, vbucket, upload, [put_part(s3, vbucket, upload, 1, b"x" * 10, key="dst")], key="dst")
    assert done["VersionId"] not in (None, NULL, copied["VersionId"])
    assert [v[1] for v in versions(s3, vbucket, Prefix="dst")] == [done["VersionId"], copied["VersionId"]]
    assert body(s3, vbucket, "dst", VersionId=copied["VersionId"]) == b"source"
    assert body(s3, vbucket, "dst") == b"x" * 10


def test_writes_to_a_never_configured_bucket_carry_no_version_id(s3, bucket):
    r = s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    assert "VersionId" not in r
    assert "VersionId" not in s3.get_object(Bucket=bucket, Key="k")
    assert "VersionId" not in s3.delete_object(Bucket=bucket, Key="k")


# ---------------------------------------------------------------- Null Version Management

def test_case1_put_twice_without_versioning_leaves_one_null_version(s3, bucket):
    put(s3, bucket, "foo", b"A")
    put(s3, bucket, "foo", b"B")
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"B"))]
    assert body(s3, bucket, "foo", VersionId=NULL) == b"B"


def test_case1_put_twice_when_suspended_overwrites_the_null_version(s3, bucket):
    suspend(s3, bucket)
    assert put(s3, bucket, "foo", b"A") == NULL
    assert put(s3, bucket, "foo", b"B") == NULL
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"B"))]
    assert s3.head_object(Bucket=bucket, Key="foo")["VersionId"] == NULL


def test_case1_null_master_also_stored_as_a_version_is_cleaned_up_2a_2b(s3, bucket):
    # Footnote 2: tagging the null master stores it in its own version key too; the next
    # suspended put must delete that key (2A) before writing the new null version (2B).
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"A")
    s3.put_object_tagging(Bucket=bucket, Key="foo", VersionId=NULL, Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"A"))]
    put(s3, bucket, "foo", b"B")
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"B"))]
    enable(s3, bucket)
    v = put(s3, bucket, "foo", b"C")
    assert versions(s3, bucket) == [("foo", v, True, etag(b"C")), ("foo", NULL, False, etag(b"B"))]
    assert s3.get_object_tagging(Bucket=bucket, Key="foo", VersionId=NULL)["TagSet"] == []


def test_case1_footnote1_null_version_repaired_into_the_master_is_overwritten_once(s3, bucket):
    # Footnote 1 (1): the latest version is deleted and the null version becomes the master again.
    put(s3, bucket, "foo", b"A")
    enable(s3, bucket)
    v = put(s3, bucket, "foo", b"B")
    s3.delete_object(Bucket=bucket, Key="foo", VersionId=v)
    assert body(s3, bucket, "foo") == b"A"
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"C")
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"C"))]
    assert body(s3, bucket, "foo", VersionId=NULL) == b"C"


def test_case2_pre_versioning_object_is_preserved_as_null_version_when_enabled(s3, bucket):
    put(s3, bucket, "foo", b"B")
    enable(s3, bucket)
    assert s3.head_object(Bucket=bucket, Key="foo")["VersionId"] == NULL
    v = put(s3, bucket, "foo", b"C")
    assert versions(s3, bucket) == [("foo", v, True, etag(b"C")), ("foo", NULL, False, etag(b"B"))]
    assert body(s3, bucket, "foo") == b"C"
    assert body(s3, bucket, "foo", VersionId=NULL) == b"B"
    v2 = put(s3, bucket, "foo", b"D")   # nullVersionId carried forward: the null version stays reachable
    assert body(s3, bucket, "foo", VersionId=NULL) == b"B"
    assert [e[1] for e in versions(s3, bucket)] == [v2, v, NULL]


def test_case2_suspended_null_version_is_preserved_on_re_enable_in_its_place(s3, bucket):
    enable(s3, bucket)
    v1 = put(s3, bucket, "foo", b"1")
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"N")
    enable(s3, bucket)
    v3 = put(s3, bucket, "foo", b"3")
    assert versions(s3, bucket) == [("foo", v3, True, etag(b"3")), ("foo", NULL, False, etag(b"N")),
                                    ("foo", v1, False, etag(b"1"))]
    assert body(s3, bucket, "foo", VersionId=NULL) == b"N"


def test_case3_suspended_put_replaces_a_null_version_that_is_not_latest_4a_4b(s3, bucket):
    put(s3, bucket, "foo", b"B")
    enable(s3, bucket)
    vc = put(s3, bucket, "foo", b"C")
    suspend(s3, bucket)
    assert put(s3, bucket, "foo", b"D") == NULL
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"D")), ("foo", vc, False, etag(b"C"))]
    assert body(s3, bucket, "foo", VersionId=NULL) == b"D"


def test_case3_null_version_id_survives_several_versions_and_is_replaced(s3, bucket):
    put(s3, bucket, "foo", b"A")
    enable(s3, bucket)
    vb = put(s3, bucket, "foo", b"B")
    vc = put(s3, bucket, "foo", b"C")
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"D")
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"D")), ("foo", vc, False, etag(b"C")),
                                    ("foo", vb, False, etag(b"B"))]


def test_case3_replaced_null_version_data_is_freed(s3_file, dmd, bucket_name):
    from tests.integration.test_multipart import data_files
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    before = data_files(dmd.data_path)
    put(s3, bucket_name, "foo", b"A")          # null version
    enable(s3, bucket_name)
    put(s3, bucket_name, "foo", b"B")
    suspend(s3, bucket_name)
    put(s3, bucket_name, "foo", b"D")          # deletes the null version A, with its data
    assert len(data_files(dmd.data_path) - before) == 2   # B and D


def test_suspended_put_over_a_versioned_master_keeps_that_version(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    suspend(s3, vbucket)
    put(s3, vbucket, "foo", b"N1")
    put(s3, vbucket, "foo", b"N2")
    assert versions(s3, vbucket) == [("foo", NULL, True, etag(b"N2")), ("foo", v1, False, etag(b"1"))]


# ---------------------------------------------------------------- Specifying Versions in APIs for Putting Versions

@pytest.mark.parametrize("target", ["put", "complete"])
def test_putting_with_a_version_id_query_is_invalid_argument(s3, gw_url, vbucket, target):
    v = put(s3, vbucket, "foo", b"A")
    if target == "put":
        r = signed(f"{gw_url}/{vbucket}/foo?versionId={v}", "PUT", body=b"Z")
    else:
        upload = start(s3, vbucket, "foo")
        etag_ = put_part(s3, vbucket, upload, 1, b"p", key="foo")["ETag"]
        doc = (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag_}</ETag></Part>"
               "</CompleteMultipartUpload>").encode()
        r = signed(f"{gw_url}/{vbucket}/foo?uploadId={upload}&versionId={v}", "POST", body=doc)
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, r.text
    assert body(s3, vbucket, "foo") == b"A" and len(versions(s3, vbucket)) == 1


def test_copy_object_with_a_version_id_query_is_invalid_argument(s3, gw_url, vbucket):
    v = put(s3, vbucket, "foo", b"A")
    r = signed(f"{gw_url}/{vbucket}/dst?versionId={v}", "PUT", headers={"x-amz-copy-source": f"{vbucket}/foo"})
    assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, r.text
    assert keys(s3, vbucket) == ["foo"]


# ---------------------------------------------------------------- Behavior of Object-Targeting APIs

def test_get_and_head_target_the_latest_version_or_the_requested_one(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"one")
    v2 = put(s3, vbucket, "foo", b"two!")
    head = s3.head_object(Bucket=vbucket, Key="foo")
    assert head["VersionId"] == v2 and head["ContentLength"] == 4
    head = s3.head_object(Bucket=vbucket, Key="foo", VersionId=v1)
    assert head["VersionId"] == v1 and head["ContentLength"] == 3
    got = s3.get_object(Bucket=vbucket, Key="foo", VersionId=v1, Range="bytes=1-")
    assert got["Body"].read() == b"ne" and got["VersionId"] == v1


@pytest.mark.parametrize("bad", ["bogus", "x" * 32, "zz" * 30, "0" * 31])
def test_undecodable_version_id_is_invalid_argument(s3, gw_url, vbucket, bad):
    put(s3, vbucket, "foo", b"A")
    for method in ("GET", "DELETE"):
        r = signed(f"{gw_url}/{vbucket}/foo?versionId={bad}", method)
        assert r.status_code == 400 and b"<Code>InvalidArgument</Code>" in r.content, (method, r.text)
    assert signed(f"{gw_url}/{vbucket}/foo?versionId={bad}", "HEAD").status_code == 400
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=vbucket, Key="foo", VersionId=bad)
    assert error_code(exc.value) == "InvalidArgument"
    assert body(s3, vbucket, "foo") == b"A"


def test_unknown_version_id_is_no_such_version(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    unknown = versionid.encode(versionid.generate("RG001"))
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo", VersionId=unknown)
    assert error_code(exc.value) == "NoSuchVersion" and status(exc.value) == 404
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=vbucket, Key="foo", VersionId=unknown)
    assert status(exc.value) == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="missing", VersionId=unknown)
    assert error_code(exc.value) == "NoSuchVersion"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo", VersionId=NULL)   # there is no null version
    assert error_code(exc.value) == "NoSuchVersion"


def test_copy_source_version_id_copies_that_version_including_the_null_one(s3, bucket):
    put(s3, bucket, "src", b"null-data")
    enable(s3, bucket)
    v2 = put(s3, bucket, "src", b"v2-data")
    r = s3.copy_object(Bucket=bucket, Key="a", CopySource={"Bucket": bucket, "Key": "src", "VersionId": NULL})
    assert r["CopySourceVersionId"] == NULL and body(s3, bucket, "a") == b"null-data"
    r = s3.copy_object(Bucket=bucket, Key="b", CopySource={"Bucket": bucket, "Key": "src"})
    assert r["CopySourceVersionId"] == v2 and body(s3, bucket, "b") == b"v2-data"


def test_upload_part_copy_reads_the_requested_version(s3, vbucket):
    first = b"a" * PART
    v1 = put(s3, vbucket, "src", first)
    put(s3, vbucket, "src", b"b" * PART)
    upload = start(s3, vbucket, "dst")
    r = s3.upload_part_copy(Bucket=vbucket, Key="dst", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": vbucket, "Key": "src", "VersionId": v1})
    assert r["CopySourceVersionId"] == v1
    done = complete(s3, vbucket, upload, [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}], key="dst")
    assert done["VersionId"]
    assert body(s3, vbucket, "dst") == first


def test_tagging_addresses_one_version_and_updates_the_master_only_when_latest(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    v2 = put(s3, vbucket, "foo", b"2")
    r = s3.put_object_tagging(Bucket=vbucket, Key="foo", VersionId=v1, Tagging={"TagSet": [{"Key": "k", "Value": "old"}]})
    assert r["VersionId"] == v1
    assert s3.get_object_tagging(Bucket=vbucket, Key="foo")["TagSet"] == []
    got = s3.get_object_tagging(Bucket=vbucket, Key="foo", VersionId=v1)
    assert got["TagSet"] == [{"Key": "k", "Value": "old"}] and got["VersionId"] == v1
    s3.put_object_tagging(Bucket=vbucket, Key="foo", Tagging={"TagSet": [{"Key": "k", "Value": "new"}]})
    assert s3.get_object_tagging(Bucket=vbucket, Key="foo", VersionId=v2)["TagSet"] == [{"Key": "k", "Value": "new"}]
    assert s3.get_object(Bucket=vbucket, Key="foo")["TagCount"] == 1
    s3.delete_object_tagging(Bucket=vbucket, Key="foo", VersionId=v1)
    assert s3.get_object_tagging(Bucket=vbucket, Key="foo", VersionId=v1)["TagSet"] == []
    # Tag writes never create versions.
    assert [e[1] for e in versions(s3, vbucket)] == [v2, v1]


def test_tagging_the_null_version_that_is_not_latest(s3, bucket):
    put(s3, bucket, "foo", b"A")
    enable(s3, bucket)
    v = put(s3, bucket, "foo", b"B")
    s3.put_object_tagging(Bucket=bucket, Key="foo", VersionId=NULL, Tagging={"TagSet": [{"Key": "n", "Value": "1"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="foo", VersionId=NULL)["TagSet"] == [{"Key": "n", "Value": "1"}]
    assert s3.get_object_tagging(Bucket=bucket, Key="foo")["TagSet"] == []
    assert [e[1] for e in versions(s3, bucket)] == [v, NULL]


# ---------------------------------------------------------------- Delete Markers

def test_delete_without_version_id_creates_a_delete_marker(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"A")
    r = s3.delete_object(Bucket=vbucket, Key="foo")
    marker = r["VersionId"]
    assert r["DeleteMarker"] is True and marker not in (None, NULL, v1)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert versions(s3, vbucket) == [("foo", v1, False, etag(b"A")), ("foo", marker, True, "DM")]
    assert raw_versions(s3.meta.endpoint_url, vbucket) == [("foo", marker, True, "DM"),
                                                           ("foo", v1, False, etag(b"A"))]
    assert keys(s3, vbucket) == [] and keys_v2(s3, vbucket) == []
    assert body(s3, vbucket, "foo", VersionId=v1) == b"A"   # the data is kept


def test_get_and_head_of_a_delete_marker_without_version_id_is_404_with_marker_headers(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    marker = s3.delete_object(Bucket=vbucket, Key="foo")["VersionId"]
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=vbucket, Key="foo")
        assert status(exc.value) == 404
        assert headers_of(exc.value).get("x-amz-delete-marker") == "true"
        assert headers_of(exc.value).get("x-amz-version-id") == marker
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo")
    assert error_code(exc.value) == "NoSuchKey"


def test_get_and_head_of_a_delete_marker_by_version_id_is_405(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    marker = s3.delete_object(Bucket=vbucket, Key="foo")["VersionId"]
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=vbucket, Key="foo", VersionId=marker)
        assert status(exc.value) == 405
        assert headers_of(exc.value).get("x-amz-delete-marker") == "true"
        assert headers_of(exc.value).get("x-amz-version-id") == marker
        assert headers_of(exc.value).get("last-modified")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo", VersionId=marker)
    assert error_code(exc.value) == "MethodNotAllowed"


def test_copy_from_a_delete_marker_is_404_without_version_and_400_with_it(s3, vbucket):
    put(s3, vbucket, "src", b"A")
    marker = s3.delete_object(Bucket=vbucket, Key="src")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="dst", CopySource={"Bucket": vbucket, "Key": "src"})
    assert error_code(exc.value) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=vbucket, Key="dst", CopySource={"Bucket": vbucket, "Key": "src", "VersionId": marker})
    assert error_code(exc.value) == "InvalidRequest" and status(exc.value) == 400
    upload = start(s3, vbucket, "dst")
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=vbucket, Key="dst", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": vbucket, "Key": "src"})
    assert error_code(exc.value) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(Bucket=vbucket, Key="dst", UploadId=upload, PartNumber=1,
                            CopySource={"Bucket": vbucket, "Key": "src", "VersionId": marker})
    assert error_code(exc.value) == "InvalidRequest"


def test_put_tagging_on_a_key_whose_latest_is_a_delete_marker_is_405(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    s3.delete_object(Bucket=vbucket, Key="foo")
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=vbucket, Key="foo", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert status(exc.value) == 405


def test_tagging_a_delete_marker_by_version_id_is_405(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    marker = s3.delete_object(Bucket=vbucket, Key="foo")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=vbucket, Key="foo", VersionId=marker,
                              Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert status(exc.value) == 405
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=vbucket, Key="foo", VersionId=marker)
    assert status(exc.value) == 405
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=vbucket, Key="foo")
    assert error_code(exc.value) == "NoSuchKey"


def test_deleting_the_delete_marker_restores_the_previous_version(s3, vbucket):
    put(s3, vbucket, "foo", b"A")
    marker = s3.delete_object(Bucket=vbucket, Key="foo")["VersionId"]
    r = s3.delete_object(Bucket=vbucket, Key="foo", VersionId=marker)
    assert r["VersionId"] == marker and r["DeleteMarker"] is True
    assert body(s3, vbucket, "foo") == b"A"
    assert keys(s3, vbucket) == ["foo"]
    assert [e[3] for e in versions(s3, vbucket)] == [etag(b"A")]


def test_delete_marker_on_a_missing_key_is_still_created(s3, vbucket):
    r = s3.delete_object(Bucket=vbucket, Key="ghost")
    assert r["DeleteMarker"] is True
    assert versions(s3, vbucket) == [("ghost", r["VersionId"], True, "DM")]
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=vbucket, Key="ghost")
    assert headers_of(exc.value).get("x-amz-delete-marker") == "true"


def test_delete_on_a_suspended_bucket_makes_a_null_delete_marker_replacing_the_null_version(s3, bucket):
    enable(s3, bucket)
    v1 = put(s3, bucket, "foo", b"1")
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"N")
    r = s3.delete_object(Bucket=bucket, Key="foo")
    assert r["DeleteMarker"] is True and r["VersionId"] == NULL
    assert versions(s3, bucket) == [("foo", v1, False, etag(b"1")), ("foo", NULL, True, "DM")]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="foo", VersionId=NULL)
    assert status(exc.value) == 405
    # Removing the null marker brings the versioned object back.
    r = s3.delete_object(Bucket=bucket, Key="foo", VersionId=NULL)
    assert r["VersionId"] == NULL and r["DeleteMarker"] is True
    assert body(s3, bucket, "foo") == b"1"


def test_delete_without_versioning_removes_the_object(s3, bucket):
    put(s3, bucket, "foo", b"A")
    r = s3.delete_object(Bucket=bucket, Key="foo")
    assert "DeleteMarker" not in r and "VersionId" not in r
    assert versions(s3, bucket) == [] and keys(s3, bucket) == []


# ---------------------------------------------------------------- version-specific DELETE

def test_deleting_an_older_version_keeps_the_latest(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    v2 = put(s3, vbucket, "foo", b"2")
    r = s3.delete_object(Bucket=vbucket, Key="foo", VersionId=v1)
    assert r["VersionId"] == v1 and "DeleteMarker" not in r
    assert versions(s3, vbucket) == [("foo", v2, True, etag(b"2"))]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo", VersionId=v1)
    assert error_code(exc.value) == "NoSuchVersion"


def test_deleting_the_latest_version_makes_the_previous_one_current_at_once(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    v2 = put(s3, vbucket, "foo", b"2")
    put(s3, vbucket, "bar", b"x")
    s3.delete_object(Bucket=vbucket, Key="foo", VersionId=v2)
    # The master is a placeholder now: every read path must see v1 without waiting for the repair.
    assert keys(s3, vbucket) == ["bar", "foo"]
    assert s3.list_objects(Bucket=vbucket)["Contents"][1]["ETag"] == etag(b"1")
    assert versions(s3, vbucket, Prefix="foo") == [("foo", v1, True, etag(b"1"))]
    assert s3.head_object(Bucket=vbucket, Key="foo")["VersionId"] == v1
    assert body(s3, vbucket, "foo") == b"1"


def test_deleting_every_version_removes_the_key(s3, vbucket):
    ids = [put(s3, vbucket, "foo", bytes([i])) for i in range(3)]
    for v in ids:
        s3.delete_object(Bucket=vbucket, Key="foo", VersionId=v)
    assert versions(s3, vbucket) == [] and keys(s3, vbucket) == []
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=vbucket, Key="foo")
    assert error_code(exc.value) == "NoSuchKey"
    assert "x-amz-delete-marker" not in headers_of(exc.value)
    s3.delete_bucket(Bucket=vbucket)   # nothing left behind


def test_deleting_an_absent_version_succeeds_and_changes_nothing(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    unknown = versionid.encode(versionid.generate("RG001"))
    r = s3.delete_object(Bucket=vbucket, Key="foo", VersionId=unknown)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204 and r["VersionId"] == unknown
    r = s3.delete_object(Bucket=vbucket, Key="foo", VersionId=NULL)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert versions(s3, vbucket) == [("foo", v1, True, etag(b"1"))]


def test_deleting_the_null_version_by_id_when_it_is_latest_and_when_it_is_not(s3, bucket):
    put(s3, bucket, "foo", b"A")
    put(s3, bucket, "bar", b"B")
    enable(s3, bucket)
    v = put(s3, bucket, "foo", b"C")
    r = s3.delete_object(Bucket=bucket, Key="foo", VersionId=NULL)    # not latest: via nullVersionId
    assert r["VersionId"] == NULL
    assert versions(s3, bucket, Prefix="foo") == [("foo", v, True, etag(b"C"))]
    s3.delete_object(Bucket=bucket, Key="bar", VersionId=NULL)        # latest, pre-versioning master
    assert versions(s3, bucket, Prefix="bar") == [] and keys(s3, bucket) == ["foo"]
    # A later suspended put finds no stale null version to resurrect.
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"D")
    assert versions(s3, bucket) == [("foo", NULL, True, etag(b"D")), ("foo", v, False, etag(b"C"))]


def test_deleting_a_suspended_null_master_brings_back_the_previous_version(s3, vbucket):
    v1 = put(s3, vbucket, "foo", b"1")
    suspend(s3, vbucket)
    put(s3, vbucket, "foo", b"N")
    s3.delete_object(Bucket=vbucket, Key="foo", VersionId=NULL)
    assert body(s3, vbucket, "foo") == b"1"
    assert versions(s3, vbucket) == [("foo", v1, True, etag(b"1"))]


def test_deleting_the_latest_version_by_id_on_a_suspended_bucket_restores_the_previous(s3, vbucket):
    # (moto drops every version here and echoes no version id: MOTO_GAPS in test_versioning_moto.py)
    v1 = put(s3, vbucket, "foo", b"1")
    v2 = put(s3, vbucket, "foo", b"2")
    suspend(s3, vbucket)
    r = s3.delete_object(Bucket=vbucket, Key="foo", VersionId=v2)
    assert r["VersionId"] == v2
    assert body(s3, vbucket, "foo") == b"1"
    assert versions(s3, vbucket) == [("foo", v1, True, etag(b"1"))]


# ---------------------------------------------------------------- Null Version Mapping

def test_null_version_id_reads_the_latest_when_it_is_null_and_maps_through_null_version_id_otherwise(s3, bucket):
    suspend(s3, bucket)
    put(s3, bucket, "foo", b"N")
    assert s3.get_object(Bucket=bucket, Key="foo", VersionId=NULL)["VersionId"] == NULL
    enable(s3, bucket)
    put(s3, bucket, "foo", b"1")
    put(s3, bucket, "foo", b"2")
    got = s3.get_object(Bucket=bucket, Key="foo", VersionId=NULL)
    assert got["Body"].read() == b"N" and got["VersionId"] == NULL
    assert s3.head_object(Bucket=bucket, Key="foo", VersionId=NULL)["ContentLength"] == 1


# ---------------------------------------------------------------- DeleteObjects (versioned cases)

def test_delete_objects_reports_markers_created_and_deleted_and_versions_removed(s3, bucket):
    put(s3, bucket, "pre", b"P")
    enable(s3, bucket)
    v1 = put(s3, bucket, "a", b"1")
    put(s3, bucket, "b", b"2")
    marker = s3.delete_object(Bucket=bucket, Key="c")["VersionId"]
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "a", "VersionId": v1}, {"Key": "b"}, {"Key": "c", "VersionId": marker}, {"Key": "pre", "VersionId": NULL},
        {"Key": "a", "VersionId": "bogus"}]})
    deleted = {(d["Key"], d.get("VersionId")): d for d in r["Deleted"]}
    assert deleted[("a", v1)].get("DeleteMarker") is None
    b_entry = deleted[("b", None)]
    assert b_entry["DeleteMarker"] is True and b_entry["DeleteMarkerVersionId"] not in (None, NULL)
    assert deleted[("c", marker)]["DeleteMarker"] is True and deleted[("c", marker)]["DeleteMarkerVersionId"] == marker
    assert ("pre", NULL) in deleted
    assert [(e["Key"], e["Code"]) for e in r["Errors"]] == [("a", "InvalidArgument")]
    assert keys(s3, bucket) == []
    assert versions(s3, bucket) == [("b", etag_version(s3, bucket, "b"), False, etag(b"2")),
                                    ("b", b_entry["DeleteMarkerVersionId"], True, "DM")]


def etag_version(s3, bucket: str, key: str) -> str:
    return [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])][0]


# ---------------------------------------------------------------- ListObjectVersions / ListObjects

def _populate(s3, bucket: str) -> dict[str, list[str]]:
    """Keys with several versions, a delete marker, a null version and folders."""
    made: dict[str, list[str]] = {}
    put(s3, bucket, "a/null-first", b"n")
    enable(s3, bucket)
    for key, n in (("a/1", 3), ("a/2", 1), ("a/null-first", 2), ("b", 2), ("c/x/y", 1), ("d", 1)):
        made[key] = [put(s3, bucket, key, f"{key}-{i}".encode()) for i in range(n)]
    s3.delete_object(Bucket=bucket, Key="d")
    return made


def test_list_object_versions_orders_keys_then_newest_first_with_is_latest(s3, gw_url, bucket):
    made = _populate(s3, bucket)
    listing = raw_versions(gw_url, bucket)
    assert [(k, latest) for k, _v, latest, _e in listing] == [
        ("a/1", True), ("a/1", False), ("a/1", False), ("a/2", True),
        ("a/null-first", True), ("a/null-first", False), ("a/null-first", False),
        ("b", True), ("b", False), ("c/x/y", True), ("d", True), ("d", False)]
    assert [v for k, v, *_ in listing if k == "a/1"] == made["a/1"][::-1]
    assert [v for k, v, *_ in listing if k == "a/null-first"][-1] == NULL
    assert listing[10][3] == "DM"
    # ListObjects shows masters only and skips the key whose latest version is a delete marker.
    assert keys(s3, bucket) == ["a/1", "a/2", "a/null-first", "b", "c/x/y"]
    assert keys_v2(s3, bucket) == ["a/1", "a/2", "a/null-first", "b", "c/x/y"]
    assert s3.list_objects(Bucket=bucket, Prefix="a/1")["Contents"][0]["ETag"] == etag(b"a/1-2")


def test_list_object_versions_prefix_and_delimiter(s3, gw_url, bucket):
    _populate(s3, bucket)
    r = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert sorted({v["Key"] for v in r["Versions"]} | {m["Key"] for m in r.get("DeleteMarkers", [])}) == ["b", "d"]
    r = s3.list_object_versions(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert "CommonPrefixes" not in r and {v["Key"] for v in r["Versions"]} == {"a/1", "a/2", "a/null-first"}
    r = s3.list_object_versions(Bucket=bucket, Prefix="c/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["c/x/"]
    assert s3.list_objects(Bucket=bucket, Delimiter="/")["CommonPrefixes"] == [{"Prefix": "a/"}, {"Prefix": "c/"}]


@pytest.mark.parametrize("page", [1, 2, 3, 5])
def test_list_object_versions_pages_with_key_and_version_id_markers_cover_everything_once(s3, gw_url, bucket, page):
    _populate(s3, bucket)
    full = raw_versions(gw_url, bucket)
    seen: list[tuple[str, str, bool, str]] = []
    query = f"max-keys={page}"
    for _ in range(50):
        r = s3.list_object_versions(Bucket=bucket, MaxKeys=page, **_markers(query))
        got = raw_versions(gw_url, bucket, query)
        assert len(got) <= page and sorted(_merge(r)) == sorted(got)
        seen += got
        if not r["IsTruncated"]:
            assert "NextKeyMarker" not in r
            break
        query = f"max-keys={page}&key-marker={quote(r['NextKeyMarker'], safe='')}"
        if r.get("NextVersionIdMarker"):
            query += f"&version-id-marker={r['NextVersionIdMarker']}"
    assert seen == full   # IsLatest stays right on pages that start inside a key's versions


def _markers(query: str) -> dict[str, str]:
    parts = {k: unquote(v) for k, v in (p.split("=", 1) for p in query.split("&"))}
    out = {}
    if "key-marker" in parts:
        out["KeyMarker"] = parts["key-marker"]
    if "version-id-marker" in parts:
        out["VersionIdMarker"] = parts["version-id-marker"]
    return out


def test_list_object_versions_version_id_marker_null_resumes_after_the_null_version(s3, gw_url, bucket):
    put(s3, bucket, "k", b"null")
    enable(s3, bucket)
    v1 = put(s3, bucket, "k", b"1")
    v2 = put(s3, bucket, "k", b"2")
    put(s3, bucket, "z", b"z")
    r = s3.list_object_versions(Bucket=bucket, MaxKeys=3)
    assert r["IsTruncated"] and r["NextKeyMarker"] == "k" and r["NextVersionIdMarker"] == NULL
    assert [v["VersionId"] for v in r["Versions"]] == [v2, v1, NULL]
    rest = raw_versions(gw_url, bucket, "key-marker=k&version-id-marker=null")
    assert [(k, latest) for k, _v, latest, _e in rest] == [("z", True)]


def test_list_object_versions_markers_are_validated(s3, gw_url, bucket):
    enable(s3, bucket)
    put(s3, bucket, "k", b"1")
    r = signed(f"{gw_url}/{bucket}?versions&version-id-marker={versionid.encode(versionid.generate('RG001'))}")
    assert r.status_code == 400 and b"InvalidArgument" in r.content
    r = signed(f"{gw_url}/{bucket}?versions&key-marker=k&version-id-marker=bogus")
    assert r.status_code == 400 and b"InvalidArgument" in r.content
    r = s3.list_object_versions(Bucket=bucket, MaxKeys=0)
    assert r["IsTruncated"] is False and "Versions" not in r


def test_list_object_versions_key_marker_alone_skips_all_versions_of_that_key(s3, bucket):
    _populate(s3, bucket)
    r = s3.list_object_versions(Bucket=bucket, KeyMarker="a/null-first")
    assert {v["Key"] for v in r["Versions"]} == {"b", "c/x/y", "d"}


# ---------------------------------------------------------------- the placeholder repair under concurrency

def _delete_concurrently(url: str, bucket: str, key: str, ids: list[str]) -> None:
    def one(vid: str) -> None:
        make_client(url).delete_object(Bucket=bucket, Key=key, VersionId=vid)
    with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(one, ids))


@pytest.mark.parametrize("seed", range(3))
def test_concurrent_deletes_of_the_latest_versions_leave_the_true_latest_as_master(s3, vbucket, seed):
    rng = random.Random(seed)
    ids = [put(s3, vbucket, "hot", f"v{i}".encode()) for i in range(8)]
    doomed = ids[-rng.randint(2, 6):]          # the newest few, deleted all at once
    rng.shuffle(doomed)
    _delete_concurrently(s3.meta.endpoint_url, vbucket, "hot", doomed)
    survivors = [v for v in ids if v not in doomed]
    assert body(s3, vbucket, "hot") == f"v{len(survivors) - 1}".encode()
    assert s3.head_object(Bucket=vbucket, Key="hot")["VersionId"] == survivors[-1]
    assert [e[1] for e in versions(s3, vbucket)] == survivors[::-1]
    assert s3.list_objects(Bucket=vbucket)["Contents"][0]["ETag"] == etag(f"v{len(survivors) - 1}".encode())


def test_concurrent_deletes_of_every_version_leave_no_key(s3, vbucket):
    ids = [put(s3, vbucket, "hot", f"v{i}".encode()) for i in range(6)]
    rng = random.Random(7)
    rng.shuffle(ids)
    _delete_concurrently(s3.meta.endpoint_url, vbucket, "hot", ids)
    assert keys(s3, vbucket) == [] and versions(s3, vbucket) == []
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=vbucket, Key="hot")
    assert status(exc.value) == 404
    s3.delete_bucket(Bucket=vbucket)
