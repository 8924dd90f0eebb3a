"""Anonymous (unsigned) requests are evaluated like any other (docs/authorization.md): plain httpx
("curl") and botocore's UNSIGNED client against public-read objects, public-read and
public-read-write buckets, and browser-form uploads without a signature."""
from __future__ import annotations

import pytest
import httpx
from botocore.exceptions import ClientError


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def code_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_public_read_object_fetchable_with_plain_http(file_gateway, owner, bucket_name):
    owner.create_bucket(Bucket=bucket_name)
    owner.put_object(Bucket=bucket_name, Key="pub.txt", Body=b"public", ACL="public-read")
    owner.put_object(Bucket=bucket_name, Key="priv.txt", Body=b"private")
    url = f"{file_gateway.url}/{bucket_name}"
    got = httpx.get(f"{url}/pub.txt")
    assert got.status_code == 200 and got.content == b"public"
    assert httpx.head(f"{url}/pub.txt").status_code == 200
    denied = httpx.get(f"{url}/priv.txt")
    assert denied.status_code == 403 and b"<Code>AccessDenied</Code>" in denied.content
    # the bucket is private: no listing, and a missing key is not revealed
    assert httpx.get(f"{url}/").status_code == 403
    assert httpx.get(f"{url}/missing").status_code == 403
    # a public object's ACL is not public
    assert httpx.get(f"{url}/pub.txt?acl").status_code == 403


def test_no_such_bucket_comes_first(file_gateway):
    resp = httpx.get(f"{file_gateway.url}/no-such-bucket-anon-test/k")
    assert resp.status_code == 404 and b"NoSuchBucket" in resp.content


def test_public_read_bucket_is_listable_not_writable(owner, anon, bucket_name):
    owner.create_bucket(Bucket=bucket_name, ACL="public-read")
    owner.put_object(Bucket=bucket_name, Key="a", Body=b"1")
    assert [o["Key"] for o in anon.list_objects_v2(Bucket=bucket_name)["Contents"]] == ["a"]
    assert [o["Key"] for o in anon.list_objects(Bucket=bucket_name)["Contents"]] == ["a"]
    anon.head_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:   # objects keep their own (private) ACL
        anon.get_object(Bucket=bucket_name, Key="a")
    assert code_of(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:   # a missing key is revealed to who may list
        anon.get_object(Bucket=bucket_name, Key="missing")
    assert code_of(exc) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        anon.put_object(Bucket=bucket_name, Key="b", Body=b"2")
    assert code_of(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        anon.get_bucket_versioning(Bucket=bucket_name)
    assert code_of(exc) == "AccessDenied"


def test_public_read_write_bucket_takes_anonymous_writes(owner, anon, bucket_name):
    owner.create_bucket(Bucket=bucket_name, ACL="public-read-write")
    anon.put_object(Bucket=bucket_name, Key="dropped", Body=b"anon data")
    # the anonymous writer owns it: the bucket owner sees it listed but may not read it...
    listed = owner.list_objects_v2(Bucket=bucket_name, FetchOwner=True)["Contents"]
    assert listed[0]["Key"] == "dropped" and listed[0]["Owner"]["ID"] == ALL_USERS
    with pytest.raises(ClientError):
        owner.get_object(Bucket=bucket_name, Key="dropped")
    assert anon.get_object(Bucket=bucket_name, Key="dropped")["Body"].read() == b"anon data"
    # ...and may delete it
    owner.delete_object(Bucket=bucket_name, Key="dropped")
    anon.put_object(Bucket=bucket_name, Key="again", Body=b"x")
    anon.delete_object(Bucket=bucket_name, Key="again")
    assert "Contents" not in owner.list_objects_v2(Bucket=bucket_name)
    # multipart uploads work anonymously too
    up = anon.create_multipart_upload(Bucket=bucket_name, Key="mp")
    part = anon.upload_part(Bucket=bucket_name, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 10)
    anon.complete_multipart_upload(Bucket=bucket_name, Key="mp", UploadId=up["UploadId"],
                                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert anon.get_object(Bucket=bucket_name, Key="mp")["Body"].read() == b"p" * 10


def test_anonymous_cannot_create_or_list_buckets(anon, bucket_name):
    with pytest.raises(ClientError) as exc:
        anon.create_bucket(Bucket=bucket_name)
    assert code_of(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        anon.list_buckets()
    assert code_of(exc) == "AccessDenied"


def _form(bucket: str, key: str, extra: dict[str, str] | None = None) -> tuple[dict, dict]:
    data = {"key": key, **(extra or {})}
    return data, {"file": ("f.txt", b"form body", "text/plain")}


def test_unsigned_post_form(file_gateway, owner, bucket_name):
    owner.create_bucket(Bucket=bucket_name)
    url = f"{file_gateway.url}/{bucket_name}"
    data, files = _form(bucket_name, "form.txt")
    denied = httpx.post(url, data=data, files=files)
    assert denied.status_code == 403 and b"AccessDenied" in denied.content
    owner.put_bucket_acl(Bucket=bucket_name, ACL="public-read-write")
    data, files = _form(bucket_name, "form.txt", {"acl": "public-read"})
    ok = httpx.post(url, data=data, files=files)
    assert ok.status_code == 204, ok.text
    assert httpx.get(f"{url}/form.txt").content == b"form body"
    data, files = _form(bucket_name, "bad.txt", {"acl": "nonsense"})
    bad = httpx.post(url, data=data, files=files)
    assert bad.status_code == 400 and b"InvalidArgument" in bad.content
