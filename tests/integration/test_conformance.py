"""S3 conformance of the gateway (issue 4): addressing, signatures, error documents,
bucket rules, PutObject limits, conditional GETs and ranges on empty objects.

Everything runs against the real processes (tests/procs.py). Requests that boto3
will not send (bad signatures, made-up methods, headers without a body) are signed
with botocore's own signers and sent with httpx or a raw socket to 127.0.0.1.
"""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import boto3
import botocore.auth
import httpx
import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY, make_client
from tests.procs import REPO, Gateway, start_gateway

CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
REGION = "us-east-1"
EXTRA_ENDPOINT = "s3.example.test"        # added by the ENDPOINT env variable
WEST_ENDPOINT = "west.example.test"       # a restEndpoints entry of our own config, -> us-west-2
MAX_META_BYTES = 2048                     # AWS: user metadata up to 2 KB
FIVE_GIB = 5 * 1024 ** 3


# ---------------------------------------------------------------- helpers

def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def http_status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def xml_code(response: httpx.Response) -> str | None:
    return etree.fromstring(response.content).findtext("Code")


class _V4Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer, with an optional x-amz-content-sha256 value of our choosing."""

    def __init__(self, payload: str | None = None):
        super().__init__(CREDENTIALS, "s3", REGION)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload if self._payload is not None else super().payload(request)


def signed_request(method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                   payload: str | None = None, v2: bool = False) -> dict[str, str]:
    """Headers of `method url` signed by botocore (v4, or v2 with v2=True) as a client of `url` would send them.

    `url` names the host the client believes it talks to; send the request to 127.0.0.1 with `send`.
    """
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    (HmacV1Auth(CREDENTIALS) if v2 else _V4Signer(payload)).add_auth(req)
    out = {k: v for k, v in req.headers.items()}
    out["Host"] = urlsplit(url).netloc
    return out


def send(port: int, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> httpx.Response:
    """Send to 127.0.0.1:<port> the request a client would send to `url` (Host kept from `url`)."""
    parts = urlsplit(url)
    target = urlunsplit(parts._replace(scheme="http", netloc=f"127.0.0.1:{port}"))
    return _HTTP.request(method, target, headers=headers, content=body)


_HTTP = httpx.Client(timeout=30)   # keep-alive across the many small requests of these tests


def signed(port: int, method: str, path: str, *, host: str | None = None, body: bytes = b"",
           headers: dict[str, str] | None = None, payload: str | None = None, v2: bool = False) -> httpx.Response:
    url = f"http://{host or f'127.0.0.1:{port}'}{path}"
    return send(port, method, url, signed_request(method, url, body=body, headers=headers, payload=payload, v2=v2),
                body)


def raw_exchange(port: int, head: bytes, timeout: float = 10.0) -> bytes:
    """Write `head` (request line + headers, no body) on a fresh connection; return what the server
    answers before closing or going quiet. Proves an answer comes without the body being sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            data = b"".join(chunks)
            if b"\r\n\r\n" in data and (b"</Error>" in data or data.startswith(b"HTTP/1.1 100")):
                break
        return b"".join(chunks)


def signed_head_only(port: int, method: str, path: str, extra: dict[str, str]) -> bytes:
    """A request head signed with UNSIGNED-PAYLOAD (the body is not part of the signature)."""
    url = f"http://127.0.0.1:{port}{path}"
    headers = signed_request(method, url, payload="UNSIGNED-PAYLOAD")
    headers.update(extra)
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def redirect_to_loopback(client, port: int) -> None:
    """Let a boto3 client address <bucket>.localhost:<port> (which DNS cannot resolve here):
    the signed request keeps its Host header and is sent to 127.0.0.1."""
    def before_send(request, **_: object) -> None:
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    client.meta.events.register("before-send.s3", before_send)


def virtual_client(gateway: Gateway, **config: object):
    cfg = BotoConfig(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1, "mode": "standard"},
                     **config)
    client = boto3.client("s3", endpoint_url=f"http://localhost:{gateway.port}", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION, config=cfg)
    redirect_to_loopback(client, gateway.port)
    return client


@pytest.fixture(scope="module")
def endpoint_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A mem-backend gateway started with ENDPOINT=s3.example.test, and a config whose
    restEndpoints also maps west.example.test to the us-west-2 location."""
    tmp = tmp_path_factory.mktemp("gw-endpoint")
    config = json.loads((REPO / "config.json").read_text())
    config["restEndpoints"][WEST_ENDPOINT] = "us-west-2"
    (tmp / "config.json").write_text(json.dumps(config))
    g = start_gateway(tmp, None, env={"ENDPOINT": EXTRA_ENDPOINT, "S3_CONFIG_FILE": str(tmp / "config.json")})
    yield g
    g.stop()


# ---------------------------------------------------------------- addressing

@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_virtual_hosted_style_requests_reach_the_bucket_named_in_host(gateway, bucket_name, signature_version):
    vs3 = virtual_client(gateway, signature_version=signature_version)
    vs3.create_bucket(Bucket=bucket_name)
    vs3.put_object(Bucket=bucket_name, Key="dir/a b.txt", Body=b"hello")
    assert vs3.get_object(Bucket=bucket_name, Key="dir/a b.txt")["Body"].read() == b"hello"
    assert [o["Key"] for o in vs3.list_objects(Bucket=bucket_name)["Contents"]] == ["dir/a b.txt"]
    assert vs3.list_objects_v2(Bucket=bucket_name, Delimiter="/")["CommonPrefixes"] == [{"Prefix": "dir/"}]
    # The same bucket, seen path-style.
    assert make_client(gateway.url).get_object(Bucket=bucket_name, Key="dir/a b.txt")["Body"].read() == b"hello"
    vs3.delete_object(Bucket=bucket_name, Key="dir/a b.txt")
    vs3.delete_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        vs3.head_bucket(Bucket=bucket_name)
    assert http_status(exc.value) == 404


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_virtual_hosted_presigned_get(gateway, bucket, signature_version):
    make_client(gateway.url).put_object(Bucket=bucket, Key="k", Body=b"presigned")
    url = virtual_client(gateway, signature_version=signature_version).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    assert urlsplit(url).netloc == f"{bucket}.localhost:{gateway.port}"
    r = send(gateway.port, "GET", url, {"Host": urlsplit(url).netloc})
    assert r.status_code == 200, r.text
    assert r.content == b"presigned"


def test_endpoint_env_adds_a_virtual_host_name(endpoint_gateway):
    port = endpoint_gateway.port
    host = f"vbkt.{EXTRA_ENDPOINT}:{port}"
    assert signed(port, "PUT", "/", host=host).status_code == 200
    assert signed(port, "PUT", "/obj", host=host, body=b"via endpoint").status_code == 200
    r = signed(port, "GET", "/obj", host=host)
    assert (r.status_code, r.content) == (200, b"via endpoint")
    # Path-style on the plain address sees the same bucket and key.
    assert make_client(endpoint_gateway.url).get_object(Bucket="vbkt", Key="obj")["Body"].read() == b"via endpoint"
    # The bare endpoint name is the service: GET / lists the buckets.
    r = signed(port, "GET", "/", host=f"{EXTRA_ENDPOINT}:{port}")
    assert r.status_code == 200 and b"<Name>vbkt</Name>" in r.content
    # Without ENDPOINT the name is not ours: the Host's first label is not taken as a bucket.
    r = signed(port, "GET", "/", host=f"vbkt.s3.other.test:{port}")
    assert r.status_code == 200 and b"ListAllMyBucketsResult" in r.content


def test_create_bucket_takes_the_location_of_the_endpoint_it_was_sent_to(endpoint_gateway):
    port = endpoint_gateway.port
    s3 = make_client(endpoint_gateway.url)
    assert signed(port, "PUT", "/west-path", host=f"{WEST_ENDPOINT}:{port}").status_code == 200
    assert signed(port, "PUT", "/", host=f"west-virtual.{WEST_ENDPOINT}:{port}").status_code == 200
    assert signed(port, "PUT", "/east-path").status_code == 200
    assert s3.get_bucket_location(Bucket="west-path")["LocationConstraint"] == "us-west-2"
    assert s3.get_bucket_location(Bucket="west-virtual")["LocationConstraint"] == "us-west-2"
    assert s3.get_bucket_location(Bucket="east-path")["LocationConstraint"] is None
    # An explicit LocationConstraint wins over the endpoint's.
    body = (b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>")
    assert signed(port, "PUT", "/explicit", host=f"{WEST_ENDPOINT}:{port}", body=body).status_code == 200
    assert s3.get_bucket_location(Bucket="explicit")["LocationConstraint"] == "eu-west-1"


# ---------------------------------------------------------------- signature v2

def test_signature_v2_common_operations(gateway, bucket_name):
    v2 = make_client(gateway.url, signature_version="s3")
    v2.create_bucket(Bucket=bucket_name)
    v2.head_bucket(Bucket=bucket_name)
    v2.put_object(Bucket=bucket_name, Key="a/b c+d", Body=b"0123456789", Metadata={"color": "blue"},
                  ContentType="text/plain")
    head = v2.head_object(Bucket=bucket_name, Key="a/b c+d")
    assert head["Metadata"] == {"color": "blue"} and head["ContentType"] == "text/plain"
    assert v2.get_object(Bucket=bucket_name, Key="a/b c+d", Range="bytes=2-4")["Body"].read() == b"234"
    v2.copy_object(Bucket=bucket_name, Key="copy", CopySource={"Bucket": bucket_name, "Key": "a/b c+d"})
    assert sorted(o["Key"] for o in v2.list_objects(Bucket=bucket_name)["Contents"]) == ["a/b c+d", "copy"]
    assert v2.list_objects_v2(Bucket=bucket_name, Prefix="a/")["KeyCount"] == 1
    v2.put_object_tagging(Bucket=bucket_name, Key="copy", Tagging={"TagSet": [{"Key": "t", "Value": "1"}]})
    assert v2.get_object_tagging(Bucket=bucket_name, Key="copy")["TagSet"] == [{"Key": "t", "Value": "1"}]
    upload = v2.create_multipart_upload(Bucket=bucket_name, Key="mpu")["UploadId"]
    etag = v2.upload_part(Bucket=bucket_name, Key="mpu", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    v2.complete_multipart_upload(Bucket=bucket_name, Key="mpu", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert v2.get_object(Bucket=bucket_name, Key="mpu")["Body"].read() == b"part"
    deleted = v2.delete_objects(Bucket=bucket_name, Delete={"Objects": [{"Key": k} for k in ("a/b c+d", "copy")]})
    assert len(deleted["Deleted"]) == 2
    v2.delete_object(Bucket=bucket_name, Key="mpu")
    assert bucket_name in [b["Name"] for b in v2.list_buckets()["Buckets"]]
    v2.delete_bucket(Bucket=bucket_name)


def test_signature_v2_wrong_secret_is_signature_mismatch(gateway, bucket):
    bad = make_client(gateway.url, ACCESS_KEY, "not-the-secret", signature_version="s3")
    with pytest.raises(ClientError) as exc:
        bad.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert error_code(exc.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        make_client(gateway.url).head_object(Bucket=bucket, Key="k")


# ---------------------------------------------------------------- signature v4 failures

def test_content_sha256_mismatch_is_refused_and_stores_nothing(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="kept", Body=b"original")
    claimed = hashlib.sha256(b"the body we signed").hexdigest()
    for key in ("new", "kept"):
        r = signed(gateway.port, "PUT", f"/{bucket}/{key}", body=b"the body we SENT!!", payload=claimed)
        assert (r.status_code, xml_code(r)) == (400, "XAmzContentSHA256Mismatch"), r.text
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="new")
    assert http_status(exc.value) == 404
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"original"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["kept"]


def test_request_dated_twenty_minutes_ago_is_too_skewed(gateway, bucket, monkeypatch):
    twenty_min_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: twenty_min_ago)
    r = signed(gateway.port, "GET", f"/{bucket}")
    assert (r.status_code, xml_code(r)) == (403, "RequestTimeTooSkewed")
    doc = etree.fromstring(r.content)
    assert doc.findtext("MaxAllowedSkewMilliseconds") == "900000"
    # Signature v2 dates its requests with the Date header.
    url = f"http://127.0.0.1:{gateway.port}/{bucket}"
    headers = signed_request("GET", url, v2=True)
    old = datetime.now(timezone.utc) - timedelta(minutes=20)
    headers["Date"] = old.strftime("%a, %d %b %Y %H:%M:%S GMT")
    headers["Authorization"] = _v2_authorization("GET", f"/{bucket}", headers["Date"])
    r = send(gateway.port, "GET", url, headers)
    assert (r.status_code, xml_code(r)) == (403, "RequestTimeTooSkewed")


def _v2_authorization(method: str, resource: str, date: str) -> str:
    req = AWSRequest(method=method, url=f"http://127.0.0.1{resource}", headers={"Date": date})
    signer = HmacV1Auth(CREDENTIALS)
    string_to_sign = signer.canonical_string(method, urlsplit(req.url), req.headers)
    return f"AWS {ACCESS_KEY}:{signer.sign_string(string_to_sign)}"


def _with_authorization(headers: dict[str, str], transform) -> dict[str, str]:
    return {**headers, "Authorization": transform(headers["Authorization"])}


def _replace_credential_part(index: int, value: str):
    def transform(auth: str) -> str:
        algorithm, _, rest = auth.partition(" ")
        fields = [f.strip() for f in rest.split(",")]
        name, _, credential = fields[0].partition("=")
        parts = credential.split("/")
        parts[index] = value
        fields[0] = f"{name}={'/'.join(parts)}"
        return f"{algorithm} {', '.join(fields)}"
    return transform


MALFORMED_AUTHORIZATIONS = {
    "credential date is not the x-amz-date": _replace_credential_part(1, "20000101"),
    "service is not s3": _replace_credential_part(3, "ec2"),
    "terminator is not aws4_request": _replace_credential_part(4, "aws4_whatever"),
    "credential has too few parts": lambda a: a.replace("/aws4_request", ""),
    "no Credential": lambda a: a.replace("Credential=", "Credentials="),
    "no Signature": lambda a: a.split(", Signature=")[0],
    "upper-case SignedHeaders": lambda a: a.replace("SignedHeaders=host", "SignedHeaders=Host"),
    "component without '='": lambda a: a + ", garbage",
    "no space after the algorithm": lambda a: a.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA256", 1),
}


@pytest.mark.parametrize("case", list(MALFORMED_AUTHORIZATIONS))
def test_malformed_v4_authorization_header(gateway, bucket, case):
    url = f"http://127.0.0.1:{gateway.port}/{bucket}"
    headers = _with_authorization(signed_request("GET", url), MALFORMED_AUTHORIZATIONS[case])
    r = send(gateway.port, "GET", url, headers)
    assert (r.status_code, xml_code(r)) == (400, "AuthorizationHeaderMalformed"), r.text
    assert b"<RequestId>" in r.content


def test_v4_header_auth_without_content_sha256_is_missing_security_header(gateway, bucket):
    url = f"http://127.0.0.1:{gateway.port}/{bucket}"
    headers = signed_request("GET", url)
    del headers["X-Amz-Content-SHA256"]
    r = send(gateway.port, "GET", url, headers)
    assert (r.status_code, xml_code(r)) == (400, "MissingSecurityHeader")
    assert etree.fromstring(r.content).findtext("MissingHeaderName") == "x-amz-content-sha256"


def test_xml_request_bodies_are_verified_like_object_bodies(s3, gateway, bucket_name):
    """CreateBucket and PutBucketVersioning bodies: the signed sha256 and Content-MD5 are checked."""
    body = b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>"
    other = hashlib.sha256(b"another document").hexdigest()
    r = signed(gateway.port, "PUT", f"/{bucket_name}", body=b"<CreateBucketConfiguration/>", payload=other)
    assert (r.status_code, xml_code(r)) == (400, "XAmzContentSHA256Mismatch"), r.text
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=bucket_name)
    s3.create_bucket(Bucket=bucket_name)
    r = signed(gateway.port, "PUT", f"/{bucket_name}?versioning", body=body, payload=other)
    assert (r.status_code, xml_code(r)) == (400, "XAmzContentSHA256Mismatch"), r.text
    r = signed(gateway.port, "PUT", f"/{bucket_name}?versioning", body=body,
               headers={"Content-MD5": _content_md5(b"something else")})
    assert (r.status_code, xml_code(r)) == (400, "BadDigest"), r.text
    assert s3.get_bucket_versioning(Bucket=bucket_name).get("Status") is None
    r = signed(gateway.port, "PUT", f"/{bucket_name}?versioning", body=body, headers={"Content-MD5": _content_md5(body)})
    assert r.status_code == 200, r.text
    assert s3.get_bucket_versioning(Bucket=bucket_name)["Status"] == "Enabled"


# ---------------------------------------------------------------- error documents

def test_errors_are_s3_xml_with_the_request_id_of_the_header(s3, gateway, bucket):
    port = gateway.port
    cases = [
        signed(port, "GET", f"/{bucket}-missing/key"),              # NoSuchBucket
        signed(port, "GET", f"/{bucket}/missing"),                  # NoSuchKey
        signed(port, "PUT", "/Bad_Name"),                           # InvalidBucketName
        signed(port, "GET", f"/{bucket}?list-type=2&max-keys=x"),   # InvalidArgument
        httpx.get(f"{gateway.url}/{bucket}"),                       # anonymous: AccessDenied
        signed(port, "DELETE", f"/{bucket}?policy&uploadId=1"),     # InvalidRequest (no key)
    ]
    codes = []
    for r in cases:
        assert r.headers["content-type"] == "application/xml"
        doc = etree.fromstring(r.content)
        assert doc.tag == "Error"
        request_id = r.headers["x-amz-request-id"]
        assert request_id and doc.findtext("RequestId") == request_id
        assert doc.findtext("Message")
        codes.append(doc.findtext("Code"))
    assert codes == ["NoSuchBucket", "NoSuchKey", "InvalidBucketName", "InvalidArgument", "AccessDenied",
                     "InvalidRequest"]


def test_head_errors_have_a_status_and_request_id_but_no_body(gateway, bucket):
    for path, expected in ((f"/{bucket}/missing", 404), (f"/{bucket}-missing", 404), (f"/{bucket}-missing/k", 404)):
        r = signed(gateway.port, "HEAD", path)
        assert r.status_code == expected
        assert r.content == b""
        assert r.headers["x-amz-request-id"]
    assert httpx.head(f"{gateway.url}/{bucket}").status_code == 403


@pytest.mark.parametrize("method, path", [
    ("GET", "/{missing}"), ("GET", "/{missing}?list-type=2"), ("GET", "/{missing}?versions"),
    ("GET", "/{missing}?location"), ("GET", "/{missing}/key"), ("PUT", "/{missing}/key"),
    ("DELETE", "/{missing}/key"), ("DELETE", "/{missing}"), ("POST", "/{missing}/key?uploads"),
])
def test_anonymous_request_on_a_missing_bucket_is_no_such_bucket(gateway, bucket_name, method, path):
    r = httpx.request(method, gateway.url + path.format(missing=bucket_name))
    assert (r.status_code, xml_code(r)) == (404, "NoSuchBucket"), r.text
    assert etree.fromstring(r.content).findtext("BucketName") == bucket_name
    assert httpx.head(f"{gateway.url}/{bucket_name}").status_code == 404
    assert httpx.head(f"{gateway.url}/{bucket_name}/key").status_code == 404


def test_anonymous_request_on_an_existing_bucket_stays_access_denied(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="key", Body=b"x")
    for method, path in (("GET", f"/{bucket}"), ("GET", f"/{bucket}/key"), ("PUT", f"/{bucket}/key"),
                         ("DELETE", f"/{bucket}/key"), ("GET", f"/{bucket}/missing")):
        r = httpx.request(method, gateway.url + path)
        assert (r.status_code, xml_code(r)) == (403, "AccessDenied"), (method, path, r.text)
    assert httpx.head(f"{gateway.url}/{bucket}").status_code == 403
    assert s3.get_object(Bucket=bucket, Key="key")["Body"].read() == b"x"


def test_anonymous_create_bucket_and_list_buckets_are_access_denied(s3, gateway, bucket_name):
    r = httpx.put(f"{gateway.url}/{bucket_name}")
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied"), r.text
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket_name)
    assert http_status(exc.value) == 404
    r = httpx.get(f"{gateway.url}/")
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied"), r.text


@pytest.mark.parametrize("method", ["PATCH", "PROPFIND", "MKCOL", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/{bucket}", "/{bucket}/key", "/_/healthcheck", "/_/elsewhere"])
def test_unknown_http_method_is_405_method_not_allowed_xml(gateway, bucket, method, path):
    r = httpx.request(method, gateway.url + path.format(bucket=bucket))
    assert r.status_code == 405
    assert xml_code(r) == "MethodNotAllowed"
    assert r.headers["x-amz-request-id"]


def test_made_up_http_method_gets_an_answer_and_the_server_keeps_serving(gateway, bucket):
    # httptools (uvicorn's fast parser) refuses methods it does not know before the
    # application sees them: a 4xx, not a hang; the gateway then serves the next request.
    answer = raw_exchange(gateway.port, f"FOO /{bucket} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=5)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500
    assert make_client(gateway.url).head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("body", [b"<VersioningConfiguration>", b"not xml at all", b"<a><b></a>",
                                  b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>',
                                  b"<Other><Status>Enabled</Status></Other>"])
def test_malformed_xml_bodies_are_malformed_xml(s3, gateway, bucket, body):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for path in (f"/{bucket}?versioning", f"/{bucket}/k?tagging"):
        r = signed(gateway.port, "PUT", path, body=body)
        assert (r.status_code, xml_code(r)) == (400, "MalformedXML"), (path, r.text)
    r = signed(gateway.port, "POST", f"/{bucket}?delete", body=body,
               headers={"Content-MD5": _content_md5(body)})
    assert (r.status_code, xml_code(r)) == (400, "MalformedXML"), r.text


def _content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def test_huge_xml_body_is_refused_promptly(gateway, bucket):
    body = b"<VersioningConfiguration>" + b"<Status>Enabled</Status>" * (3 * 1024 * 1024 // 24) + \
        b"</VersioningConfiguration>"
    r = signed(gateway.port, "PUT", f"/{bucket}?versioning", body=body)
    assert r.status_code == 400 and xml_code(r) in ("MalformedXML", "MaxMessageLengthExceeded")
    assert make_client(gateway.url).get_bucket_versioning(Bucket=bucket).get("Status") is None
    # A declared 100 MiB document is refused from its headers: the body is never invited.
    for path in (f"/{bucket}?versioning", f"/{bucket}", f"/{bucket}?delete"):
        head = signed_head_only(gateway.port, "PUT" if "delete" not in path else "POST", path,
                                {"Content-Length": str(100 * 1024 * 1024), "Expect": "100-continue"})
        answer = raw_exchange(gateway.port, head)
        assert answer.startswith(b"HTTP/1.1 4"), (path, answer[:300])
        assert b"HTTP/1.1 100" not in answer, path


def test_get_bucket_with_a_body_lists_normally(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    r = signed(gateway.port, "GET", f"/{bucket}", body=b"some ignored body")
    assert r.status_code == 200 and b"<Key>k</Key>" in r.content


def test_double_slashes_in_paths_are_part_of_the_key(s3, gateway, bucket):
    r = signed(gateway.port, "PUT", f"/{bucket}//a//b/", body=b"slashes")
    assert r.status_code == 200, r.text
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["/a//b/"]
    assert s3.get_object(Bucket=bucket, Key="/a//b/")["Body"].read() == b"slashes"
    # '//' before any bucket: no bucket named "" exists.
    r = signed(gateway.port, "GET", f"//{bucket}")
    assert r.status_code in (400, 404) and xml_code(r) in ("NoSuchBucket", "InvalidBucketName", "InvalidURI")


def test_percent_encoded_bucket_name_is_the_decoded_bucket(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    encoded = "".join(f"%{ord(c):02X}" for c in bucket)
    r = signed(gateway.port, "GET", f"/{encoded}/k")
    assert (r.status_code, r.content) == (200, b"x")
    r = signed(gateway.port, "GET", f"/{bucket}%FF/k")         # not UTF-8
    assert (r.status_code, xml_code(r)) == (400, "InvalidURI")


@pytest.mark.parametrize("method", ["PUT", "GET", "HEAD", "DELETE"])
def test_keys_with_nul_are_client_errors(gateway, bucket, method):
    r = signed(gateway.port, method, f"/{bucket}/a%00b", body=b"x" if method == "PUT" else b"")
    assert 400 <= r.status_code < 500
    if method != "HEAD":
        assert xml_code(r) == "InvalidArgument"


# ---------------------------------------------------------------- buckets

@pytest.mark.parametrize("prefix", ["abc", "a.b-c", "1bucket", "0.0.0.0.0", "bucket.192.168.1.1", "xn-a",
                                    "a-s3alias-b", "sthreebucket", "my--bucket", "a" * 54])
def test_valid_bucket_names_are_accepted(s3, prefix):
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"     # unique; the longest is 63 characters
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize("name", ["a", "Abc", "abc_", ".abc", "abc.", "a.-b", "a-.b", "10.0.0.1", "a b",
                                  "sthree-bucket", "sthree-configurator", "bucket--ol-s3", "a" * 64])
def test_more_invalid_bucket_names_are_rejected(gateway, name):
    r = signed(gateway.port, "PUT", "/" + name.replace(" ", "%20"))
    assert r.status_code == 400, (name, r.text)
    assert xml_code(r) in ("InvalidBucketName",), (name, r.text)


@pytest.mark.parametrize("location", ["us-west-1", "EU", "ap-northeast-1"])
def test_recreating_own_bucket_in_a_non_legacy_location_is_already_owned(s3, bucket_name, location):
    config = {"LocationConstraint": location}
    s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration=config)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration=config)
    assert (error_code(exc.value), http_status(exc.value)) == ("BucketAlreadyOwnedByYou", 409)
    assert s3.get_bucket_location(Bucket=bucket_name)["LocationConstraint"] == location
    s3.delete_bucket(Bucket=bucket_name)


def test_location_constraint_alias_creates_the_bucket_in_its_location(s3, bucket_name):
    # rclone's "other-v2-signature" region is an alias of us-east-1 in the shipped locationConfig.json.
    s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": "other-v2-signature"})
    assert s3.get_bucket_location(Bucket=bucket_name)["LocationConstraint"] is None   # us-east-1
    assert s3.head_bucket(Bucket=bucket_name)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == \
        "us-east-1"
    # us-east-1 is a legacy location: creating again through the alias is a 200, as with its name.
    s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": "other-v2-signature"})
    s3.delete_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket=bucket_name, CreateBucketConfiguration={"LocationConstraint": "other-v3-signature"})
    assert (error_code(exc.value), http_status(exc.value)) == ("InvalidLocationConstraint", 400)
    assert exc.value.response["Error"]["LocationConstraint"] == "other-v3-signature"


def test_list_buckets_shows_owner_and_creation_dates(s3, bucket_name):
    names = [f"{bucket_name}-{i}" for i in (2, 1, 3)]
    before = datetime.now(timezone.utc).replace(microsecond=0)
    for name in names:
        s3.create_bucket(Bucket=name)
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    listed = s3.list_buckets()
    assert listed["Owner"]["ID"] == "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be"
    assert listed["Owner"]["DisplayName"]
    mine = [b for b in listed["Buckets"] if b["Name"].startswith(bucket_name)]
    assert [b["Name"] for b in mine] == sorted(names)
    for b in mine:
        assert before <= b["CreationDate"] <= after
    other = make_client(s3.meta.endpoint_url, "accessKey2", "verySecretKey2").list_buckets()
    assert not [b for b in other["Buckets"] if b["Name"].startswith(bucket_name)]
    assert other["Owner"]["ID"] != listed["Owner"]["ID"]
    for name in names:
        s3.delete_bucket(Bucket=name)


def test_get_bucket_location_of_each_location_kind(s3, gateway, bucket_name):
    # us-east-1 (the default) is reported empty; every other location by its name, "EU" included.
    expected = {"": None, "us-east-1": None, "us-west-2": "us-west-2", "EU": "EU", "eu-west-1": "eu-west-1"}
    for i, (location, reported) in enumerate(expected.items()):
        name = f"{bucket_name}-{i}"
        if location:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": location})
        else:
            s3.create_bucket(Bucket=name)
        assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == reported, location
        r = signed(gateway.port, "GET", f"/{name}?location")
        assert etree.fromstring(r.content).tag == "{http://s3.amazonaws.com/doc/2006-03-01/}LocationConstraint"
        s3.delete_bucket(Bucket=name)


# ---------------------------------------------------------------- PutObject limits

def test_user_metadata_over_2_kb_is_metadata_too_large(s3, bucket):
    # The size counted is names (without x-amz-meta-) plus values.
    fits = {"a": "x" * (MAX_META_BYTES - 1)}
    s3.put_object(Bucket=bucket, Key="fits", Body=b"x", Metadata=fits)
    assert s3.head_object(Bucket=bucket, Key="fits")["Metadata"] == fits
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="big", Body=b"x", Metadata={"a": "x" * MAX_META_BYTES})
    assert (error_code(exc.value), http_status(exc.value)) == ("MetadataTooLarge", 400)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="big", Body=b"x", Metadata={f"k{i}": "v" * 200 for i in range(11)})
    assert error_code(exc.value) == "MetadataTooLarge"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["fits"]


def test_declared_length_over_5_gib_is_refused_before_the_body_is_sent(s3, gateway, bucket):
    head = signed_head_only(gateway.port, "PUT", f"/{bucket}/huge",
                            {"Content-Length": str(FIVE_GIB + 1), "Expect": "100-continue"})
    answer = raw_exchange(gateway.port, head)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"HTTP/1.1 100" not in answer      # never invited the client to send the body
    assert b"<Code>EntityTooLarge</Code>" in answer
    assert b"<MaxSizeAllowed>5368709120</MaxSizeAllowed>" in answer
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="huge")


def test_put_without_content_length_or_chunking_is_411(gateway, bucket):
    head = signed_head_only(gateway.port, "PUT", f"/{bucket}/nolength", {})
    answer = raw_exchange(gateway.port, head)
    assert answer.startswith(b"HTTP/1.1 411"), answer[:200]
    assert b"<Code>MissingContentLength</Code>" in answer


# ---------------------------------------------------------------- conditional GET and ranges

HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def _expected_status(if_match: bool | None, if_none_match: bool | None, if_unmodified: bool | None,
                     if_modified: bool | None) -> int:
    """AWS's precedence (RFC 7232 section 6): each argument is whether that condition holds, None = absent."""
    if if_match is not None:
        if not if_match:
            return 412
    elif if_unmodified is False:
        return 412
    if if_none_match is not None:
        if not if_none_match:
            return 304
    elif if_modified is False:
        return 304
    return 200


CONDITION_STATES = (None, True, False)


def test_conditional_get_precedence_table_of_all_four_headers(s3, gateway, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"data")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    earlier = (modified - timedelta(days=1)).strftime(HTTP_DATE)
    # The object's own date: not modified since then, and unmodified since then (a later
    # date could be in the future, which makes If-Modified-Since be ignored).
    same = modified.strftime(HTTP_DATE)
    value = {
        "If-Match": {True: etag, False: '"00000000000000000000000000000000"'},
        "If-None-Match": {True: '"00000000000000000000000000000000"', False: etag},
        "If-Unmodified-Since": {True: same, False: earlier},
        "If-Modified-Since": {True: earlier, False: same},
    }
    mismatches = []
    for im in CONDITION_STATES:
        for inm in CONDITION_STATES:
            for ius in CONDITION_STATES:
                for ims in CONDITION_STATES:
                    states = dict(zip(value, (im, inm, ius, ims)))
                    headers = {h: value[h][s] for h, s in states.items() if s is not None}
                    expected = _expected_status(im, inm, ius, ims)
                    for method in ("GET", "HEAD"):
                        r = signed(gateway.port, method, f"/{bucket}/c", headers=headers)
                        if r.status_code != expected:
                            mismatches.append((method, states, r.status_code, expected))
                        elif expected == 304:
                            assert r.content == b"" and r.headers["etag"] == etag
                        elif expected == 200 and method == "GET":
                            assert r.content == b"data"
    assert not mismatches


@pytest.mark.parametrize("rng, status", [("bytes=0-0", 416), ("bytes=0-", 416), ("bytes=5-10", 416),
                                         ("bytes=-0", 416), ("bytes=-5", 200), ("bytes=abc", 200),
                                         ("bytes=3-1", 200), ("items=0-1", 200)])
def test_ranges_on_an_empty_object(s3, gateway, bucket, rng, status):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for method in ("GET", "HEAD"):
        r = signed(gateway.port, method, f"/{bucket}/empty", headers={"Range": rng})
        assert r.status_code == status, (method, r.text)
        if status == 416:
            assert r.headers["content-range"] == "bytes */0"
            if method == "GET":
                assert xml_code(r) == "InvalidRange"
        else:
            assert r.content == b"" and r.headers["content-length"] == "0"
            assert "content-range" not in r.headers
