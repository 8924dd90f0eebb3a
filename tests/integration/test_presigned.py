"""Presigned URLs made by boto3 (Signature V4 and V2) used by a plain HTTP client (httpx)."""
from __future__ import annotations

import os
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from lxml import etree

from tests.integration.conftest import make_client

SIGNATURE_VERSIONS = ["s3v4", "s3"]          # botocore names: Signature V4, Signature V2
SIGNATURE_PARAM = {"s3v4": "X-Amz-Signature", "s3": "Signature"}
WEEK_SECONDS = 7 * 24 * 3600


def error_code(response: httpx.Response) -> str:
    return etree.fromstring(response.content).findtext("Code")


def presigner(gateway, signature_version: str):
    return make_client(gateway.url, signature_version=signature_version)


def with_query_param(url: str, name: str, transform) -> str:
    """The URL with one query parameter's value replaced by transform(value), all else verbatim."""
    parts = urlsplit(url)
    query = [(k, transform(v) if k == name else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def flip_first_char(value: str) -> str:
    # A digit, so the change survives case-insensitive hex comparison (v4) as well as base64 (v2).
    return ("0" if value[0] != "0" else "1") + value[1:]


@pytest.mark.parametrize("signature_version", SIGNATURE_VERSIONS)
def test_presigned_get_returns_the_object(s3, gateway, bucket, signature_version):
    key = "dir/a b+c~é.txt"
    content = os.urandom(3000)
    s3.put_object(Bucket=bucket, Key=key, Body=content)
    url = presigner(gateway, signature_version).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == content


@pytest.mark.parametrize("signature_version", SIGNATURE_VERSIONS)
def test_presigned_put_stores_the_body(s3, gateway, bucket, signature_version):
    url = presigner(gateway, signature_version).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "up.bin"}, ExpiresIn=300)
    response = httpx.put(url, content=b"uploaded through a presigned URL")
    assert response.status_code == 200, response.text
    assert s3.get_object(Bucket=bucket, Key="up.bin")["Body"].read() == b"uploaded through a presigned URL"


@pytest.mark.parametrize("signature_version", SIGNATURE_VERSIONS)
def test_presigned_put_with_signed_content_type_rejects_another_content_type(gateway, bucket, signature_version):
    url = presigner(gateway, signature_version).generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "typed", "ContentType": "text/plain"}, ExpiresIn=300)
    assert httpx.put(url, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 200
    response = httpx.put(url, content=b"x", headers={"Content-Type": "image/png"})
    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"


def test_expired_presigned_urls_are_access_denied(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="soon", Body=b"x")
    urls = [presigner(gateway, v).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "soon"},
                                                         ExpiresIn=1) for v in SIGNATURE_VERSIONS]
    time.sleep(2.1)
    for url in urls:
        response = httpx.get(url)
        assert response.status_code == 403, url
        assert error_code(response) == "AccessDenied"
        assert "expired" in response.text


def test_v4_expiry_over_seven_days_is_an_authorization_query_error(s3, gateway, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    client = presigner(gateway, "s3v4")
    ok = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=WEEK_SECONDS)
    assert httpx.get(ok).status_code == 200
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                        ExpiresIn=WEEK_SECONDS + 1)
    response = httpx.get(url)
    assert response.status_code == 400
    assert error_code(response) == "AuthorizationQueryParametersError"


def test_v2_expiry_over_seven_days_is_refused(s3, gateway, bucket):
    # AWS itself does not cap SigV2 expiry; the gateway applies SigV4's 7-day cap to both.
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    url = presigner(gateway, "s3").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                                          ExpiresIn=WEEK_SECONDS + 3600)
    response = httpx.get(url)
    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"


TAMPERINGS = {
    "signature": lambda url, version: with_query_param(url, SIGNATURE_PARAM[version], flip_first_char),
    "other-key": lambda url, version: url.replace("/public?", "/secret?"),
    "longer-expiry": lambda url, version: with_query_param(
        url, "X-Amz-Expires" if version == "s3v4" else "Expires", lambda v: str(int(v) + 3600)),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
@pytest.mark.parametrize("signature_version", SIGNATURE_VERSIONS)
def test_tampered_url_is_signature_does_not_match(s3, gateway, bucket, signature_version, tampering):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"x")
    s3.put_object(Bucket=bucket, Key="public", Body=b"x")
    url = presigner(gateway, signature_version).generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "public"}, ExpiresIn=60)
    assert httpx.get(url).status_code == 200
    response = httpx.get(TAMPERINGS[tampering](url, signature_version))
    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"


def test_presigned_get_of_missing_key_is_no_such_key(gateway, bucket):
    url = presigner(gateway, "s3v4").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "nope"},
                                                            ExpiresIn=300)
    response = httpx.get(url)
    assert response.status_code == 404
    assert error_code(response) == "NoSuchKey"
