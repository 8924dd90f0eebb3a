"""CORS (issue 14): Put/Get/DeleteBucketCors with AWS's validation, the OPTIONS preflight and the
CORS headers of actual requests (errors included), against the real gateway over the dmd."""
from __future__ import annotations

import httpx
import pytest
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.test_conformance import signed

ORIGIN = "http://site.example"


def _cors_xml(*rules: str) -> bytes:
    return ("<CORSConfiguration>" + "".join(f"<CORSRule>{r}</CORSRule>" for r in rules)
            + "</CORSConfiguration>").encode()


def _put_cors(port: int, bucket: str, body: bytes) -> httpx.Response:
    return signed(port, "PUT", f"/{bucket}?cors", body=body)


def _code(resp: httpx.Response) -> str:
    return etree.fromstring(resp.content).findtext("Code")


@pytest.fixture
def cbucket(s3_file, bucket_name: str) -> str:
    s3_file.create_bucket(Bucket=bucket_name)
    return bucket_name


def _http(gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, timeout=30)


def test_cors_configuration_round_trip(s3_file, cbucket: str) -> None:
    with pytest.raises(ClientError) as exc:
        s3_file.get_bucket_cors(Bucket=cbucket)
    assert exc.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    rules = [{"ID": "site", "AllowedOrigins": [ORIGIN, "https://*.example.org"], "AllowedMethods": ["GET", "PUT"],
              "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 3000},
             {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]}]
    s3_file.put_bucket_cors(Bucket=cbucket, CORSConfiguration={"CORSRules": rules})
    assert s3_file.get_bucket_cors(Bucket=cbucket)["CORSRules"] == rules
    s3_file.delete_bucket_cors(Bucket=cbucket)
    with pytest.raises(ClientError) as exc:
        s3_file.get_bucket_cors(Bucket=cbucket)
    assert exc.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"
    s3_file.delete_bucket_cors(Bucket=cbucket)   # deleting nothing: 204 all the same


OK_RULE = f"<AllowedOrigin>{ORIGIN}</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"


@pytest.mark.parametrize("body,status,code", [
    (_cors_xml(*[OK_RULE] * 101), 400, "InvalidRequest"),                              # more than 100 rules
    (_cors_xml(f"<AllowedOrigin>{ORIGIN}</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"), 400, "InvalidRequest"),
    (_cors_xml("<AllowedOrigin>http://*.a.*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"), 400, "InvalidRequest"),
    (_cors_xml(OK_RULE + "<AllowedHeader>x-*-*</AllowedHeader>"), 400, "InvalidRequest"),
    (_cors_xml(OK_RULE + "<ExposeHeader>x-amz-*</ExposeHeader>"), 400, "InvalidRequest"),
    (_cors_xml(OK_RULE + "<ExposeHeader>bad header</ExposeHeader>"), 400, "InvalidRequest"),
    (_cors_xml("<AllowedMethod>GET</AllowedMethod>"), 400, "MalformedXML"),             # no AllowedOrigin
    (_cors_xml(f"<AllowedOrigin>{ORIGIN}</AllowedOrigin>"), 400, "MalformedXML"),      # no AllowedMethod
    (_cors_xml(OK_RULE + "<MaxAgeSeconds>-1</MaxAgeSeconds>"), 400, "MalformedXML"),
    (_cors_xml(OK_RULE + "<MaxAgeSeconds>soon</MaxAgeSeconds>"), 400, "MalformedXML"),
    (_cors_xml(OK_RULE + "<ID>a</ID><ID>b</ID>"), 400, "MalformedXML"),
    (_cors_xml(OK_RULE + "<Unknown>x</Unknown>"), 400, "MalformedXML"),
    (b"<CORSConfiguration></CORSConfiguration>", 400, "MalformedXML"),
    (b"<NotCORS/>", 400, "MalformedXML"),
    (b"<CORSConfiguration><CORSRule>", 400, "MalformedXML"),
])
def test_cors_configuration_validation(file_gateway, cbucket: str, body: bytes, status: int, code: str) -> None:
    resp = _put_cors(file_gateway.port, cbucket, body)
    assert (resp.status_code, _code(resp)) == (status, code), resp.text
    assert signed(file_gateway.port, "GET", f"/{cbucket}?cors").status_code == 404   # nothing stored


def test_cors_configuration_limits_accepted(file_gateway, cbucket: str) -> None:
    """100 rules, one wildcard per origin and header, an empty MaxAgeSeconds: accepted."""
    rule = OK_RULE + "<AllowedOrigin>https://*.example.org</AllowedOrigin><AllowedHeader>x-amz-*</AllowedHeader>"
    assert _put_cors(file_gateway.port, cbucket, _cors_xml(*[rule] * 100)).status_code == 200
    doc = etree.fromstring(signed(file_gateway.port, "GET", f"/{cbucket}?cors").content)
    assert len(doc.findall("{*}CORSRule")) == 100


def test_cors_configuration_needs_the_owner(file_gateway, cbucket: str) -> None:
    with _http(file_gateway) as http:
        resp = http.put(f"/{cbucket}?cors", content=_cors_xml(OK_RULE))
        assert (resp.status_code, _code(resp)) == (403, "AccessDenied")
        resp = http.get(f"/{cbucket}?cors")
        assert (resp.status_code, _code(resp)) == (403, "AccessDenied")


def _preflight(http: httpx.Client, path: str, method: str = "GET", origin: str | None = ORIGIN,
               headers: str | None = None) -> httpx.Response:
    h = {}
    if origin is not None:
        h["Origin"] = origin
    if method:
        h["Access-Control-Request-Method"] = method
    if headers is not None:
        h["Access-Control-Request-Headers"] = headers
    return http.request("OPTIONS", path, headers=h)


def test_preflight(s3_file, file_gateway, cbucket: str) -> None:
    s3_file.put_bucket_cors(Bucket=cbucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["content-type", "x-amz-*"],
         "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 600},
        {"AllowedOrigins": ["https://*.example.org"], "AllowedMethods": ["DELETE"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["HEAD"]}]})
    with _http(file_gateway) as http:
        # Matched, on the bucket and on any key (existing or not), without any signature.
        for path in (f"/{cbucket}", f"/{cbucket}/no/such/key.txt"):
            resp = _preflight(http, path, "PUT", headers="Content-Type, X-Amz-Date")
            assert resp.status_code == 200, resp.text
            assert resp.headers["access-control-allow-origin"] == ORIGIN
            assert resp.headers["access-control-allow-methods"] == "GET, PUT"
            assert resp.headers["access-control-allow-headers"] == "content-type, x-amz-date"
            assert resp.headers["access-control-max-age"] == "600"
            assert resp.headers["access-control-expose-headers"] == "ETag"
            assert resp.headers["access-control-allow-credentials"] == "true"
            assert "Origin" in resp.headers["vary"]
            assert resp.content == b""
        # The wildcard origin of a rule, and * (no credentials with it).
        resp = _preflight(http, f"/{cbucket}/k", "DELETE", origin="https://www.example.org")
        assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "https://www.example.org"
        resp = _preflight(http, f"/{cbucket}/k", "HEAD", origin="http://anyone.test")
        assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in resp.headers
        # No match: a header no AllowedHeader covers, a method, an origin.
        for kwargs in ({"method": "PUT", "headers": "content-type, authorization"}, {"method": "DELETE"},
                       {"origin": "http://evil.test"}, {"origin": "https://example.org", "method": "DELETE"}):
            resp = _preflight(http, f"/{cbucket}/k", **kwargs)
            assert resp.status_code == 403, kwargs
            doc = etree.fromstring(resp.content)
            assert doc.findtext("Code") == "AccessForbidden"
            assert doc.findtext("Message").startswith("CORSResponse: This CORS request is not allowed")
            assert "access-control-allow-origin" not in resp.headers
        # Without Origin or Access-Control-Request-Method: 400.
        resp = _preflight(http, f"/{cbucket}/k", origin=None)
        assert (resp.status_code, _code(resp)) == (400, "BadRequest")
        resp = _preflight(http, f"/{cbucket}/k", method="")
        assert (resp.status_code, _code(resp)) == (400, "BadRequest")
        # A bucket without CORS, and no bucket at all.
        s3_file.delete_bucket_cors(Bucket=cbucket)
        resp = _preflight(http, f"/{cbucket}/k")
        assert (resp.status_code, _code(resp)) == (403, "AccessForbidden")
        assert "not enabled" in etree.fromstring(resp.content).findtext("Message")
        resp = _preflight(http, f"/{cbucket}-none/k")
        assert (resp.status_code, _code(resp)) == (404, "NoSuchBucket")


def test_actual_requests_get_cors_headers(s3_file, file_gateway, cbucket: str) -> None:
    s3_file.put_bucket_cors(Bucket=cbucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["GET", "HEAD"], "ExposeHeaders": ["ETag", "Content-Length"]}]})
    s3_file.put_object(Bucket=cbucket, Key="public.txt", Body=b"hello", ACL="public-read")
    s3_file.put_object(Bucket=cbucket, Key="private.txt", Body=b"secret")
    with _http(file_gateway) as http:
        for key, status in (("public.txt", 200), ("private.txt", 403), ("missing.txt", 403)):
            resp = http.get(f"/{cbucket}/{key}", headers={"Origin": ORIGIN})
            assert resp.status_code == status, (key, resp.text)
            assert resp.headers["access-control-allow-origin"] == ORIGIN, key     # errors included
            assert resp.headers["access-control-expose-headers"] == "ETag, Content-Length"
            assert resp.headers["access-control-allow-methods"] == "GET, HEAD"
        resp = http.head(f"/{cbucket}/public.txt", headers={"Origin": ORIGIN})
        assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == ORIGIN
        # No rule for this origin or method, or no Origin at all: no CORS headers.
        for method, headers in (("GET", {"Origin": "http://other.test"}), ("DELETE", {"Origin": ORIGIN}),
                                ("GET", {})):
            resp = http.request(method, f"/{cbucket}/public.txt", headers=headers)
            assert "access-control-allow-origin" not in resp.headers, (method, headers)
        # A request that fails before its bucket is loaded (bad signature) is answered with them too.
        resp = http.get(f"/{cbucket}/public.txt", headers={"Origin": ORIGIN, "Authorization": "AWS nobody:bad"})
        assert resp.status_code == 403 and resp.headers["access-control-allow-origin"] == ORIGIN
    # Signed requests as well (a browser's presigned URL).
    url = s3_file.generate_presigned_url("get_object", Params={"Bucket": cbucket, "Key": "private.txt"})
    resp = httpx.get(url, headers={"Origin": ORIGIN}, timeout=30)
    assert resp.status_code == 200 and resp.content == b"secret"
    assert resp.headers["access-control-allow-origin"] == ORIGIN
