"""PostObject: HTML-form uploads (multipart/form-data) built with httpx, signed v4 and v2.

Forms come from boto3's generate_presigned_post (what a web backend hands a browser)
or are signed here with a policy of our own, by an implementation independent of the
gateway's (plain hmac), to exercise each policy rule.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.conftest import ACCESS_KEY, ACCESS_KEY2, SECRET_KEY, SECRET_KEY2, make_client

MIB = 1024 * 1024

REGION = "us-east-1"


def v4_form(bucket: str, conditions: list, fields: dict[str, str], *, access: str = ACCESS_KEY,
            secret: str = SECRET_KEY, expires_in: float = 300) -> dict[str, str]:
    """Fields of a v4-signed form: `fields` + the auth fields, with a policy of `conditions`."""
    now = datetime.now(timezone.utc)
    date, amz_date = now.strftime("%Y%m%d"), now.strftime("%Y%m%dT%H%M%SZ")
    credential = f"{access}/{date}/{REGION}/s3/aws4_request"
    auth = {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": credential, "x-amz-date": amz_date}
    expiration = (now + timedelta(seconds=expires_in)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    policy_doc = {"expiration": expiration,
                  "conditions": [{"bucket": bucket}, *conditions, *({k: v} for k, v in auth.items())]}
    policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
    key = f"AWS4{secret}".encode()
    for part in (date, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    return {**fields, **auth, "policy": policy, "x-amz-signature": signature}


def v2_form(bucket: str, conditions: list, fields: dict[str, str], expires_in: float = 300) -> dict[str, str]:
    expiration = (datetime.now(timezone.utc) + timedelta(seconds=expires_in)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = base64.b64encode(json.dumps({"expiration": expiration,
                                          "conditions": [{"bucket": bucket}, *conditions]}).encode()).decode()
    signature = base64.b64encode(hmac.new(SECRET_KEY.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    return {**fields, "AWSAccessKeyId": ACCESS_KEY, "policy": policy, "signature": signature}


def post(url: str, fields: dict[str, str], content: bytes = b"hello", filename: str = "hello.txt",
         **kwargs) -> httpx.Response:
    """A browser-style form POST: the fields, then the file last."""
    return httpx.post(url, data=fields, files={"file": (filename, content, "application/octet-stream")},
                      timeout=60, **kwargs)


def raw_form(fields: dict[str, str], content: bytes | None, boundary: str = "XyZ", after: str = "",
             close: bool = True) -> bytes:
    """A multipart/form-data body built by hand: `fields`, the file (unless None), `after` (raw
    parts after the file) and the closing delimiter."""
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()).encode()
    if content is not None:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
        body += content + (b"\r\n" if close else b"")
    body += after.encode()
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


def post_raw(url: str, body: bytes, boundary: str = "XyZ") -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                      timeout=60)


def error_code(response: httpx.Response) -> str:
    return etree.fromstring(response.content).findtext("Code")


@pytest.fixture
def bucket_url(gateway, bucket) -> str:
    return f"{gateway.url}/{bucket}"


def presigned_post(gateway, bucket: str, key: str, signature_version: str, **kwargs) -> dict:
    client = make_client(gateway.url, signature_version=signature_version)
    return client.generate_presigned_post(bucket, key, ExpiresIn=300, **kwargs)


# ---------------------------------------------------------------- success

@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_post_uploads_the_file_and_answers_204(s3, gateway, bucket, signature_version):
    form = presigned_post(gateway, bucket, "form/obj.bin", signature_version)
    content = os.urandom(1000)
    response = post(form["url"], form["fields"], content)
    assert response.status_code == 204, response.text
    assert response.headers["ETag"] == f'"{hashlib.md5(content).hexdigest()}"'
    assert response.headers["Location"].endswith(f"/{bucket}/form/obj.bin")
    got = s3.get_object(Bucket=bucket, Key="form/obj.bin")
    assert got["Body"].read() == content
    assert got["ETag"] == response.headers["ETag"]


def test_success_action_status_201_returns_post_response_xml(gateway, bucket):
    form = presigned_post(gateway, bucket, "k201", "s3v4", Fields={"success_action_status": "201"},
                          Conditions=[{"success_action_status": "201"}])
    response = post(form["url"], form["fields"], b"abc")
    assert response.status_code == 201
    doc = etree.fromstring(response.content)
    assert doc.tag == "PostResponse"
    assert doc.findtext("Bucket") == bucket and doc.findtext("Key") == "k201"
    assert doc.findtext("ETag") == f'"{hashlib.md5(b"abc").hexdigest()}"'
    assert doc.findtext("Location").endswith(f"/{bucket}/k201")


def test_success_action_status_200_returns_empty_body(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k200"}, {"success_action_status": "200"}],
                                        {"key": "k200", "success_action_status": "200"}))
    assert response.status_code == 200 and response.content == b""


def test_invalid_success_action_status_falls_back_to_204(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k"}, {"success_action_status": "404"}],
                                        {"key": "k", "success_action_status": "404"}))
    assert response.status_code == 204


def test_success_action_redirect_answers_303_with_bucket_key_etag(bucket_url, bucket):
    redirect = "http://example.invalid/done?from=form"
    response = post(bucket_url, v4_form(bucket, [{"key": "r"}, ["starts-with", "$success_action_redirect", ""]],
                                        {"key": "r", "success_action_redirect": redirect}), b"xyz")
    assert response.status_code == 303
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("http", "example.invalid", "/done")
    query = parse_qs(location.query)
    assert query == {"from": ["form"], "bucket": [bucket], "key": ["r"],
                     "etag": [f'"{hashlib.md5(b"xyz").hexdigest()}"']}


def test_filename_variable_is_replaced_by_the_uploaded_file_name(s3, gateway, bucket):
    form = presigned_post(gateway, bucket, "uploads/${filename}", "s3v4")
    assert post(form["url"], form["fields"], b"pic", filename="photo.jpg").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="uploads/photo.jpg")["Body"].read() == b"pic"


def test_form_content_type_and_user_metadata_are_stored(s3, bucket_url, bucket):
    fields = {"key": "meta", "Content-Type": "text/plain", "x-amz-meta-color": "blue", "acl": "private"}
    conditions = [{"key": "meta"}, ["starts-with", "$Content-Type", "text/"], {"x-amz-meta-color": "blue"},
                  {"acl": "private"}]
    assert post(bucket_url, v4_form(bucket, conditions, fields)).status_code == 204
    head = s3.head_object(Bucket=bucket, Key="meta")
    assert head["ContentType"] == "text/plain"
    assert head["Metadata"] == {"color": "blue"}


def test_v2_signed_form_with_own_policy_uploads(s3, bucket_url, bucket):
    assert post(bucket_url, v2_form(bucket, [["starts-with", "$key", "v2/"]], {"key": "v2/a"})).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="v2/a")["Body"].read() == b"hello"


def test_fields_after_the_file_are_ignored(s3, bucket_url, bucket):
    fields = v4_form(bucket, [{"key": "late"}], {"key": "late"})
    after = '--XyZ\r\nContent-Disposition: form-data; name="x-amz-meta-late"\r\n\r\nyes\r\n'
    response = post_raw(bucket_url, raw_form(fields, b"DATA", after=after))
    assert response.status_code == 204, response.text
    head = s3.head_object(Bucket=bucket, Key="late")
    assert head["ContentLength"] == 4 and head["Metadata"] == {}


def test_large_file_with_boundary_like_bytes_streams_through_intact(s3, bucket_url, bucket):
    boundary = "b0undary-Zq7"
    near_misses = b"\r\n--" + boundary[:-1].encode() + b"X" + b"\r\n-" + b"--" + boundary.encode()
    content = (os.urandom(1 << 20) + near_misses) * 6 + b"\r\n--" + boundary[:5].encode()
    fields = v4_form(bucket, [{"key": "big"}], {"key": "big"})
    response = post_raw(bucket_url, raw_form(fields, content, boundary), boundary)
    assert response.status_code == 204, response.text
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == content


def test_empty_file_creates_an_empty_object(s3, bucket_url, bucket):
    assert post(bucket_url, v4_form(bucket, [{"key": "empty"}], {"key": "empty"}), b"").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_post_on_versioned_bucket_returns_version_id(s3, bucket_url, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    response = post(bucket_url, v4_form(bucket, [{"key": "v"}], {"key": "v"}))
    assert response.status_code == 204
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in versions] == [response.headers["x-amz-version-id"]]


# ---------------------------------------------------------------- policy violations

def test_condition_failure_is_access_denied(s3, bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [["starts-with", "$key", "allowed/"]], {"key": "other/x"}))
    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"
    assert "Policy Condition failed" in response.text
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_bucket_condition_for_another_bucket_is_access_denied(bucket_url, bucket):
    form = v4_form(bucket + "-other", [{"key": "k"}], {"key": "k"})
    response = post(bucket_url, form)
    assert response.status_code == 403 and "Policy Condition failed" in response.text


def test_field_without_condition_is_access_denied_extra_input_fields(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k"}], {"key": "k", "x-amz-meta-sneaky": "1"}))
    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"
    assert "Extra input fields: x-amz-meta-sneaky" in response.text


def test_x_ignore_fields_need_no_condition(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k"}], {"key": "k", "x-ignore-note": "anything"}))
    assert response.status_code == 204


def test_expired_policy_is_access_denied(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k"}], {"key": "k"}, expires_in=-60))
    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"
    assert "expired" in response.text


def test_file_over_content_length_range_is_entity_too_large_and_not_stored(s3, bucket_url, bucket):
    form = v4_form(bucket, [{"key": "k"}, ["content-length-range", 1, 10]], {"key": "k"})
    response = post(bucket_url, form, b"x" * 11)
    assert response.status_code == 400
    assert error_code(response) == "EntityTooLarge"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_file_under_content_length_range_is_entity_too_small(s3, bucket_url, bucket):
    form = v4_form(bucket, [{"key": "k"}, ["content-length-range", 5, 10]], {"key": "k"})
    response = post(bucket_url, form, b"abc")
    assert response.status_code == 400
    assert error_code(response) == "EntityTooSmall"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_file_within_content_length_range_is_stored(bucket_url, bucket):
    form = v4_form(bucket, [{"key": "k"}, ["content-length-range", 3, 3]], {"key": "k"})
    assert post(bucket_url, form, b"abc").status_code == 204


@pytest.mark.parametrize("policy", [
    "not base64!",
    base64.b64encode(b"{not json").decode(),
    base64.b64encode(json.dumps({"conditions": []}).encode()).decode(),
    base64.b64encode(json.dumps({"expiration": "2099-01-01T00:00:00Z"}).encode()).decode(),
    base64.b64encode(json.dumps({"expiration": "tomorrow", "conditions": []}).encode()).decode(),
    base64.b64encode(json.dumps({"expiration": "2099-01-01T00:00:00Z", "conditions": [["in", "$key", "a"]]})
                     .encode()).decode(),
    base64.b64encode(json.dumps({"expiration": "2099-01-01T00:00:00Z",
                                 "conditions": [["content-length-range", 10, 1]]}).encode()).decode(),
])
def test_invalid_policy_document_is_rejected(bucket_url, policy):
    signature = base64.b64encode(hmac.new(SECRET_KEY.encode(), policy.encode(), hashlib.sha1).digest()).decode()
    response = post(bucket_url, {"key": "k", "AWSAccessKeyId": ACCESS_KEY, "policy": policy,
                                 "signature": signature})
    assert response.status_code == 400
    assert error_code(response) == "InvalidPolicyDocument"


# ---------------------------------------------------------------- authentication

@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_tampered_signature_is_signature_does_not_match(gateway, bucket, signature_version):
    form = presigned_post(gateway, bucket, "k", signature_version)
    fields = dict(form["fields"])
    name = "x-amz-signature" if signature_version == "s3v4" else "signature"
    fields[name] = ("0" if fields[name][0] != "0" else "1") + fields[name][1:]
    response = post(form["url"], fields)
    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"


def test_policy_changed_after_signing_is_signature_does_not_match(bucket_url, bucket):
    fields = v4_form(bucket, [["starts-with", "$key", "a/"]], {"key": "b/x"})
    doc = json.loads(base64.b64decode(fields["policy"]))
    doc["conditions"][1] = ["starts-with", "$key", "b/"]
    fields["policy"] = base64.b64encode(json.dumps(doc).encode()).decode()
    assert error_code(post(bucket_url, fields)) == "SignatureDoesNotMatch"


def test_unknown_access_key_is_invalid_access_key_id(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [{"key": "k"}], {"key": "k"}, access="nobody", secret="x"))
    assert response.status_code == 403
    assert error_code(response) == "InvalidAccessKeyId"


def test_form_signed_by_another_account_is_access_denied(bucket_url, bucket):
    form = v4_form(bucket, [{"key": "k"}], {"key": "k"}, access=ACCESS_KEY2, secret=SECRET_KEY2)
    response = post(bucket_url, form)
    assert response.status_code == 403 and error_code(response) == "AccessDenied"


def test_anonymous_form_is_access_denied(bucket_url):
    response = post(bucket_url, {"key": "k"})
    assert response.status_code == 403 and error_code(response) == "AccessDenied"


def test_post_to_missing_bucket_is_no_such_bucket(gateway, bucket_name):
    response = post(f"{gateway.url}/{bucket_name}", v4_form(bucket_name, [{"key": "k"}], {"key": "k"}))
    assert response.status_code == 404 and error_code(response) == "NoSuchBucket"


# ---------------------------------------------------------------- malformed forms

def test_form_without_file_is_incorrect_number_of_files(bucket_url, bucket):
    response = httpx.post(bucket_url, files={"key": (None, "k")})
    assert response.status_code == 400
    assert error_code(response) == "IncorrectNumberOfFilesInPostRequest"


def test_form_without_key_is_invalid_argument(bucket_url, bucket):
    response = post(bucket_url, v4_form(bucket, [], {}))
    assert response.status_code == 400
    assert error_code(response) == "InvalidArgument"


def test_post_that_is_not_multipart_is_precondition_failed(bucket_url):
    response = httpx.post(bucket_url, content=b"key=k", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 412
    assert error_code(response) == "PreconditionFailed"


@pytest.mark.parametrize("body", [
    b"no boundary at all",
    b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk",                 # ends inside a part
    b"--XyZ\r\nNo-Colon-Here\r\n\r\nv\r\n--XyZ--\r\n",
    b"--XyZ\r\nContent-Disposition: attachment; name=\"key\"\r\n\r\nv\r\n--XyZ--\r\n",
])
def test_malformed_multipart_body_is_malformed_post_request(bucket_url, body):
    response = post_raw(bucket_url, body)
    assert response.status_code == 400
    assert error_code(response) == "MalformedPOSTRequest"


def test_file_cut_before_its_closing_boundary_is_malformed_and_not_stored(s3, bucket_url, bucket):
    fields = v4_form(bucket, [{"key": "cut"}], {"key": "cut"})
    response = post_raw(bucket_url, raw_form(fields, b"truncated file", close=False))
    assert response.status_code == 400
    assert error_code(response) == "MalformedPOSTRequest"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_oversized_fields_before_the_file_are_rejected(bucket_url, bucket):
    response = post(bucket_url, {"key": "k", "x-ignore-pad": "p" * (64 * 1024)})
    assert response.status_code == 400
    assert error_code(response) == "MaxPostPreDataLengthExceeded"


def test_objects_from_forms_are_listed_like_any_other(s3, gateway, bucket):
    for name in ("a", "b"):
        form = presigned_post(gateway, bucket, name, "s3v4")
        assert post(form["url"], form["fields"]).status_code == 204
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["a", "b"]
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="c")


# ---------------------------------------------------------------- streaming

def _tmp_bytes(data_path) -> int:
    """Bytes of the dmd's in-flight uploads (dmd/data.py writes each blob under `.tmp/` first)."""
    total = 0
    for entry in os.scandir(data_path / ".tmp"):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_large_file_reaches_the_data_store_while_the_form_is_still_arriving(file_gateway, dmd, s3_file,
                                                                           bucket_name):
    """Streaming, shown by behaviour: with half of a 64 MiB file part sent and the client paused,
    most of that half is already in the data daemon's upload file. A gateway that buffered the
    form (or the file part) before storing it would have written nothing yet."""
    s3_file.create_bucket(Bucket=bucket_name)
    size, half, piece = 64 * MIB, 32 * MIB, os.urandom(MIB)
    form = raw_form(v4_form(bucket_name, [{"key": "huge"}], {"key": "huge"}), b"", close=False)
    paused, proceed = threading.Event(), threading.Event()

    def body():
        yield form
        for i in range(size // MIB):
            if i * MIB == half:
                paused.set()
                proceed.wait(120)
            yield piece
        yield b"\r\n--XyZ--\r\n"

    result: list = []
    sender = threading.Thread(target=lambda: result.append(httpx.post(
        f"{file_gateway.url}/{bucket_name}", content=body(), timeout=600,
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"})))
    sender.start()
    try:
        assert paused.wait(120)
        deadline, in_store = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            in_store = _tmp_bytes(dmd.data_path)
            if in_store >= half // 2:
                break
            time.sleep(0.1)
    finally:
        proceed.set()
        sender.join(600)
    assert in_store >= half // 2, f"only {in_store / MIB:.1f} MiB of the {half // MIB} MiB sent reached the store"
    response = result[0]
    assert response.status_code == 204, response.text
    head = s3_file.head_object(Bucket=bucket_name, Key="huge")
    assert head["ContentLength"] == size
