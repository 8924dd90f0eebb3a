"""Signature strictness (issue 17): what a signature does not cover cannot change the request.

A SigV4 signature (Authorization header or presigned URL) must cover `host` and every
`x-amz-*` header the request carries, or AWS answers 403 AccessDenied "There were headers
present in the request which were not signed" with a HeadersNotSigned element. Signature V2
has no list of signed headers: every x-amz-* header is in its string to sign, so an added one
is SignatureDoesNotMatch.

The attacks: an unsigned x-amz-copy-source turning a signed empty PutObject into a
CopyObject, unsigned x-amz-meta-* / x-amz-tagging stored with a signed PutObject, and a
request whose signature leaves out `host` replayed on another (virtual-hosted) bucket. Each is
sent to the real processes (tests/procs.py) and must be refused with nothing stored; the
same signed request without the extra header is then accepted, which shows the refusal
comes from the unsigned header and not from a broken signature.
"""
from __future__ import annotations

import uuid
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.conftest import ACCESS_KEY, SECRET_KEY

CREDENTIALS = Credentials(ACCESS_KEY, SECRET_KEY)
REGION = "us-east-1"
NOT_SIGNED = "There were headers present in the request which were not signed"
SCHEMES = ["v4-header", "v4-presigned", "v2-header", "v2-presigned"]
ATTACKS = {  # the unsigned header added to a signed PutObject
    "copy-source": ("x-amz-copy-source", "{bucket}/secret"),
    "user-metadata": ("x-amz-meta-color", "red"),
    "tagging": ("x-amz-tagging", "owner=mallory"),
}
SECRET = b"the source object's bytes"
_HTTP = httpx.Client(timeout=30)


class _LeaveOutHost:
    """botocore's SigV4 signers as they are, except that `host` is not signed."""

    def headers_to_sign(self, request):  # type: ignore[no-untyped-def]
        headers = super().headers_to_sign(request)  # type: ignore[misc]
        del headers["host"]
        return headers


class _V4NoHost(_LeaveOutHost, S3SigV4Auth):
    pass


class _V4QueryNoHost(_LeaveOutHost, S3SigV4QueryAuth):
    pass


def _signer(scheme: str, sign_host: bool = True):
    if scheme == "v4-header":
        return (S3SigV4Auth if sign_host else _V4NoHost)(CREDENTIALS, "s3", REGION)
    if scheme == "v4-presigned":
        return (S3SigV4QueryAuth if sign_host else _V4QueryNoHost)(CREDENTIALS, "s3", REGION, expires=300)
    return HmacV1Auth(CREDENTIALS) if scheme == "v2-header" else HmacV1QueryAuth(CREDENTIALS, expires=300)


def sign(scheme: str, method: str, url: str, body: bytes = b"", sign_host: bool = True,
         headers: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(url, headers) of `method url` signed as a client of `url` would send it.

    A presigned URL is made without the body (it is sent later by whoever holds the URL).
    """
    presigned = scheme.endswith("presigned")
    request = AWSRequest(method=method, url=url, data=b"" if presigned else body, headers=dict(headers or {}))
    netloc, path = urlsplit(url).netloc, urlsplit(url).path
    if scheme.startswith("v2") and ".localhost:" in netloc:
        # v2 names the resource /<bucket>/<key> whatever the addressing (botocore's auth_path).
        request.auth_path = f"/{netloc.split('.localhost:')[0]}{path}"
    _signer(scheme, sign_host).add_auth(request)
    prepared = request.prepare()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}  # httpx sets it
    headers["Host"] = netloc
    return prepared.url, headers


def send(port: int, method: str, url: str, headers: dict[str, str], body: bytes = b"",
         host: str | None = None) -> httpx.Response:
    """Send to 127.0.0.1:<port>, with the Host header of `url` (or `host`)."""
    parts = urlsplit(url)
    target = urlunsplit(parts._replace(scheme="http", netloc=f"127.0.0.1:{port}"))
    return _HTTP.request(method, target, headers={**headers, "Host": host or parts.netloc}, content=body)


def error_of(response: httpx.Response) -> tuple[int, str | None, str | None]:
    if not response.content.startswith(b"<?xml"):  # e.g. a 200 that should not have happened
        return response.status_code, None, None
    doc = etree.fromstring(response.content)
    return response.status_code, doc.findtext("Code"), doc.findtext("HeadersNotSigned")


def assert_unsigned_header_refused(response: httpx.Response, scheme: str, names: str) -> None:
    if scheme.startswith("v4"):
        assert error_of(response) == (403, "AccessDenied", names), response.text
        assert etree.fromstring(response.content).findtext("Message") == NOT_SIGNED
    else:  # v2 signs every x-amz-* header present: an added one is a different string to sign
        assert error_of(response)[:2] == (403, "SignatureDoesNotMatch"), response.text


def signed_headers_of(url: str, headers: dict[str, str]) -> list[str]:
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    if "X-Amz-SignedHeaders" in query:
        return query["X-Amz-SignedHeaders"].split(";")
    return headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


def missing(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


@pytest.fixture
def bucket(s3_file) -> str:
    name = f"strict-{uuid.uuid4().hex[:12]}"
    s3_file.create_bucket(Bucket=name)
    s3_file.put_object(Bucket=name, Key="secret", Body=SECRET)
    s3_file.put_object(Bucket=name, Key="kept", Body=b"original")
    return name


# ------------------------------------------------------------- unsigned x-amz-* headers

@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_unsigned_x_amz_header_on_a_signed_put_is_refused_and_nothing_is_stored(
        s3_file, file_gateway, bucket, scheme, attack):
    name, value = ATTACKS[attack]
    value = value.format(bucket=bucket)
    port = file_gateway.port
    for key in ("fresh", "kept"):
        url, headers = sign(scheme, "PUT", f"http://127.0.0.1:{port}/{bucket}/{key}")
        r = send(port, "PUT", url, {**headers, name: value})
        assert_unsigned_header_refused(r, scheme, name)

    # Nothing happened: no new key, the existing one untouched (bytes, metadata, tags).
    assert missing(s3_file, bucket, "fresh")
    kept = s3_file.get_object(Bucket=bucket, Key="kept")
    assert (kept["Body"].read(), kept["Metadata"], kept.get("TagCount")) == (b"original", {}, None)
    assert s3_file.get_object_tagging(Bucket=bucket, Key="kept")["TagSet"] == []

    # The very same signed request without the unsigned header is a plain empty PutObject.
    url, headers = sign(scheme, "PUT", f"http://127.0.0.1:{port}/{bucket}/fresh")
    r = send(port, "PUT", url, headers)
    assert r.status_code == 200, r.text
    fresh = s3_file.get_object(Bucket=bucket, Key="fresh")
    assert (fresh["Body"].read(), fresh["Metadata"], fresh.get("TagCount")) == (b"", {}, None)


@pytest.mark.parametrize("scheme", ["v4-header", "v4-presigned"])
def test_every_unsigned_x_amz_header_is_named_and_x_amzn_or_other_headers_are_not(
        s3_file, file_gateway, bucket, scheme):
    port = file_gateway.port
    url, headers = sign(scheme, "PUT", f"http://127.0.0.1:{port}/{bucket}/fresh")
    extra = {"x-amz-meta-a": "1", "x-amz-tagging": "k=v", "X-Amzn-Trace-Id": "Root=1-abc", "Cache-Control": "no"}
    r = send(port, "PUT", url, {**headers, **extra})
    assert error_of(r) == (403, "AccessDenied", "x-amz-meta-a, x-amz-tagging"), r.text
    assert missing(s3_file, bucket, "fresh")
    # Headers outside x-amz-* need no signature, as on AWS.
    r = send(port, "PUT", url, {**headers, "X-Amzn-Trace-Id": "Root=1-abc", "Cache-Control": "no"})
    assert r.status_code == 200, r.text


def test_signed_x_amz_headers_are_honoured(s3_file, file_gateway, bucket):
    """The control: the same headers, signed, do what they say (so the refusals above are the rule)."""
    port = file_gateway.port
    for scheme in SCHEMES:
        url, headers = sign(scheme, "PUT", f"http://127.0.0.1:{port}/{bucket}/copy-{scheme}",
                            headers={"x-amz-copy-source": f"{bucket}/secret"})
        r = send(port, "PUT", url, headers)
        assert r.status_code == 200 and b"<CopyObjectResult" in r.content, (scheme, r.text)
        assert s3_file.get_object(Bucket=bucket, Key=f"copy-{scheme}")["Body"].read() == SECRET

        url, headers = sign(scheme, "PUT", f"http://127.0.0.1:{port}/{bucket}/meta-{scheme}",
                            headers={"x-amz-meta-color": "red", "x-amz-tagging": "owner=mallory"})
        r = send(port, "PUT", url, headers)
        assert r.status_code == 200, (scheme, r.text)
        assert s3_file.head_object(Bucket=bucket, Key=f"meta-{scheme}")["Metadata"] == {"color": "red"}
        assert s3_file.get_object_tagging(Bucket=bucket, Key=f"meta-{scheme}")["TagSet"] == [
            {"Key": "owner", "Value": "mallory"}]


# ------------------------------------------------------------- host must be signed

@pytest.fixture
def two_buckets(s3_file) -> tuple[str, str]:
    names = (f"strict-a-{uuid.uuid4().hex[:10]}", f"strict-b-{uuid.uuid4().hex[:10]}")
    for name in names:
        s3_file.create_bucket(Bucket=name)
    return names


@pytest.mark.parametrize("scheme", ["v4-header", "v4-presigned"])
def test_v4_signature_leaving_out_host_is_refused_and_cannot_be_replayed_on_another_bucket(
        s3_file, file_gateway, two_buckets, scheme):
    port = file_gateway.port
    a, b = two_buckets
    url, headers = sign(scheme, "PUT", f"http://{a}.localhost:{port}/planted", body=b"x", sign_host=False,
                        headers={"Content-Type": "text/plain"})
    assert signed_headers_of(url, headers)[0] == "content-type" and "host" not in signed_headers_of(url, headers)
    for target in (b, a):  # the replay on another bucket first
        r = send(port, "PUT", url, headers, body=b"x", host=f"{target}.localhost:{port}")
        assert error_of(r) == (403, "AccessDenied", "host"), r.text
        assert etree.fromstring(r.content).findtext("Message") == NOT_SIGNED
    assert missing(s3_file, a, "planted") and missing(s3_file, b, "planted")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_request_signed_for_one_bucket_does_not_replay_on_another(s3_file, file_gateway, two_buckets, scheme):
    port = file_gateway.port
    a, b = two_buckets
    url, headers = sign(scheme, "PUT", f"http://{a}.localhost:{port}/planted", body=b"x")
    r = send(port, "PUT", url, headers, body=b"x", host=f"{b}.localhost:{port}")
    assert error_of(r)[:2] == (403, "SignatureDoesNotMatch"), r.text
    assert missing(s3_file, b, "planted")
    r = send(port, "PUT", url, headers, body=b"x")  # where it was signed for, it works
    assert r.status_code == 200, r.text
    assert s3_file.get_object(Bucket=a, Key="planted")["Body"].read() == b"x"
