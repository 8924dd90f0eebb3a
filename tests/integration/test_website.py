"""Static website hosting (issue 14): Put/Get/DeleteBucketWebsite with AWS's validation and the
website endpoint (Host: <bucket>.s3-website.localhost, config.json's websiteEndpoints) on the
gateway's port: index and error documents, redirects, routing rules, anonymous access as AWS
grants it, HTML errors, conditional GET and ranges. Real gateway over the dmd."""
from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.test_conformance import signed

WEBSITE_ENDPOINT = "s3-website.localhost"   # one of config.json's websiteEndpoints


def _code(resp: httpx.Response) -> str:
    return etree.fromstring(resp.content).findtext("Code")


class Site:
    """Requests to the website endpoint of `bucket` (sent to 127.0.0.1 with the website Host)."""

    def __init__(self, gateway, bucket: str):
        self.host = f"{bucket}.{WEBSITE_ENDPOINT}:{gateway.port}"
        self.http = httpx.Client(base_url=gateway.url, timeout=30, follow_redirects=False)

    def request(self, method: str, path: str, **headers: str) -> httpx.Response:
        return self.http.request(method, path, headers={"Host": self.host, **{k.replace("_", "-"): v
                                                                               for k, v in headers.items()}})

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.request("GET", path, **headers)


def _is_html_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("text/html"), resp.headers
    assert f"<li>Code: {code}</li>" in resp.text, resp.text
    assert "<?xml" not in resp.text


@pytest.fixture
def site_bucket(s3_file, bucket_name: str) -> str:
    s3 = s3_file
    s3.create_bucket(Bucket=bucket_name)
    for key, body in (("index.html", "<h1>home</h1>"), ("error.html", "<h1>oops</h1>"),
                      ("docs/index.html", "<h1>docs</h1>"), ("page.html", "0123456789")):
        s3.put_object(Bucket=bucket_name, Key=key, Body=body.encode(), ContentType="text/html", ACL="public-read")
    s3.put_object(Bucket=bucket_name, Key="private.html", Body=b"secret", ContentType="text/html")
    s3.put_object(Bucket=bucket_name, Key="moved.html", Body=b"", ACL="public-read",
                  WebsiteRedirectLocation="/page.html")
    s3.put_object(Bucket=bucket_name, Key="away.html", Body=b"", ACL="public-read",
                  WebsiteRedirectLocation="https://example.com/elsewhere")
    s3.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={
        "IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "error.html"}})
    return bucket_name


def test_website_configuration_round_trip(s3_file, bucket_name: str) -> None:
    s3_file.create_bucket(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        s3_file.get_bucket_website(Bucket=bucket_name)
    assert exc.value.response["Error"]["Code"] == "NoSuchWebsiteConfiguration"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    config = {"IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "err/404.html"},
              "RoutingRules": [
                  {"Condition": {"KeyPrefixEquals": "docs/"}, "Redirect": {"ReplaceKeyPrefixWith": "documents/"}},
                  {"Condition": {"HttpErrorCodeReturnedEquals": "404"},
                   "Redirect": {"HostName": "example.com", "Protocol": "https", "HttpRedirectCode": "307",
                                "ReplaceKeyWith": "missing.html"}}]}
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration=config)
    got = s3_file.get_bucket_website(Bucket=bucket_name)
    assert {k: got[k] for k in config} == config
    redirect_all = {"RedirectAllRequestsTo": {"HostName": "example.com", "Protocol": "https"}}
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration=redirect_all)
    assert s3_file.get_bucket_website(Bucket=bucket_name)["RedirectAllRequestsTo"] == redirect_all[
        "RedirectAllRequestsTo"]
    s3_file.delete_bucket_website(Bucket=bucket_name)
    with pytest.raises(ClientError) as exc:
        s3_file.get_bucket_website(Bucket=bucket_name)
    assert exc.value.response["Error"]["Code"] == "NoSuchWebsiteConfiguration"


def _doc(inner: str) -> bytes:
    return f"<WebsiteConfiguration>{inner}</WebsiteConfiguration>".encode()


INDEX = "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>"


def _rules(*rules: str) -> str:
    return INDEX + "<RoutingRules>" + "".join(f"<RoutingRule>{r}</RoutingRule>" for r in rules) + "</RoutingRules>"


@pytest.mark.parametrize("body,code", [
    (_doc(""), "InvalidArgument"),                                                     # no index, no redirect-all
    (_doc("<ErrorDocument><Key>e.html</Key></ErrorDocument>"), "InvalidArgument"),
    (_doc("<IndexDocument><Suffix></Suffix></IndexDocument>"), "InvalidArgument"),
    (_doc("<IndexDocument><Suffix>a/index.html</Suffix></IndexDocument>"), "InvalidArgument"),
    (_doc("<IndexDocument></IndexDocument>"), "MalformedXML"),
    (_doc(INDEX + "<ErrorDocument></ErrorDocument>"), "MalformedXML"),
    (_doc(INDEX + "<ErrorDocument><Key></Key></ErrorDocument>"), "InvalidArgument"),
    (_doc(INDEX + "<RedirectAllRequestsTo><HostName>a.com</HostName></RedirectAllRequestsTo>"), "InvalidRequest"),
    (_doc("<RedirectAllRequestsTo><Protocol>http</Protocol></RedirectAllRequestsTo>"), "MalformedXML"),
    (_doc("<RedirectAllRequestsTo><HostName>a.com</HostName><Protocol>ftp</Protocol></RedirectAllRequestsTo>"),
     "InvalidRequest"),
    (_doc(INDEX + "<RoutingRules></RoutingRules>"), "MalformedXML"),
    (_doc(_rules("<Condition><KeyPrefixEquals>a</KeyPrefixEquals></Condition>")), "MalformedXML"),   # no Redirect
    (_doc(_rules("<Redirect></Redirect>")), "MalformedXML"),
    (_doc(_rules("<Redirect><Protocol>ftp</Protocol></Redirect>")), "InvalidRequest"),
    (_doc(_rules("<Redirect><HttpRedirectCode>300</HttpRedirectCode></Redirect>")), "InvalidRequest"),
    (_doc(_rules("<Redirect><HttpRedirectCode>404</HttpRedirectCode></Redirect>")), "InvalidRequest"),
    (_doc(_rules("<Redirect><HttpRedirectCode>soon</HttpRedirectCode></Redirect>")), "MalformedXML"),
    (_doc(_rules("<Redirect><ReplaceKeyWith>a</ReplaceKeyWith><ReplaceKeyPrefixWith>b</ReplaceKeyPrefixWith>"
                 "</Redirect>")), "InvalidRequest"),
    (_doc(_rules("<Condition></Condition><Redirect><HostName>a.com</HostName></Redirect>")), "InvalidRequest"),
    (_doc(_rules("<Condition><HttpErrorCodeReturnedEquals>302</HttpErrorCodeReturnedEquals></Condition>"
                 "<Redirect><HostName>a.com</HostName></Redirect>")), "InvalidRequest"),
    (_doc(_rules(*["<Redirect><HostName>a.com</HostName></Redirect>"] * 51)), "InvalidRequest"),
    (_doc(INDEX + "<Unknown/>"), "MalformedXML"),
    (b"<NotWebsite/>", "MalformedXML"),
])
def test_website_configuration_validation(file_gateway, bucket_name: str, s3_file, body: bytes, code: str) -> None:
    s3_file.create_bucket(Bucket=bucket_name)
    resp = signed(file_gateway.port, "PUT", f"/{bucket_name}?website", body=body)
    assert resp.status_code == 400 and _code(resp) == code, resp.text
    assert signed(file_gateway.port, "GET", f"/{bucket_name}?website").status_code == 404   # nothing stored


def test_put_object_website_redirect_location(s3_file, file_gateway, bucket_name: str) -> None:
    s3_file.create_bucket(Bucket=bucket_name)
    s3_file.put_object(Bucket=bucket_name, Key="a", Body=b"", WebsiteRedirectLocation="/b.html")
    assert s3_file.head_object(Bucket=bucket_name, Key="a")["WebsiteRedirectLocation"] == "/b.html"
    resp = signed(file_gateway.port, "PUT", f"/{bucket_name}/c", headers={"x-amz-website-redirect-location": "b.html"})
    assert resp.status_code == 400 and _code(resp) == "InvalidRedirectLocation", resp.text


def test_website_index_error_and_redirects(file_gateway, site_bucket: str) -> None:
    site = Site(file_gateway, site_bucket)
    resp = site.get("/")
    assert resp.status_code == 200 and resp.text == "<h1>home</h1>"
    assert resp.headers["content-type"] == "text/html"
    assert site.get("/docs/").text == "<h1>docs</h1>"
    resp = site.get("/docs")           # prefix/index.html exists: 302 to prefix/
    assert resp.status_code == 302 and resp.headers["location"] == "/docs/"
    assert site.get("/page.html").text == "0123456789"
    # A missing page: the error document with the original status (404 needs a public listing, else 403).
    resp = site.get("/missing.html")
    assert resp.status_code == 403 and resp.text == "<h1>oops</h1>"
    # Private objects are not served: the error document again, 403.
    resp = site.get("/private.html")
    assert resp.status_code == 403 and resp.text == "<h1>oops</h1>"
    # x-amz-website-redirect-location: 301.
    resp = site.get("/moved.html")
    assert resp.status_code == 301 and resp.headers["location"] == "/page.html"
    resp = site.get("/away.html")
    assert resp.status_code == 301 and resp.headers["location"] == "https://example.com/elsewhere"
    # HEAD, and the methods a website does not have.
    resp = site.request("HEAD", "/page.html")
    assert resp.status_code == 200 and resp.headers["content-length"] == "10" and resp.content == b""
    for method in ("PUT", "POST", "DELETE"):
        _is_html_error(site.request(method, "/page.html"), 405, "MethodNotAllowed")


def test_website_missing_key_is_404_when_the_bucket_is_publicly_listable(s3_file, file_gateway,
                                                                        site_bucket: str) -> None:
    site = Site(file_gateway, site_bucket)
    s3_file.delete_bucket_website(Bucket=site_bucket)
    s3_file.put_bucket_website(Bucket=site_bucket, WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
    _is_html_error(site.get("/missing.html"), 403, "AccessDenied")
    _is_html_error(site.get("/private.html"), 403, "AccessDenied")
    s3_file.put_bucket_acl(Bucket=site_bucket, ACL="public-read")
    resp = site.get("/missing.html")
    _is_html_error(resp, 404, "NoSuchKey")
    assert "<li>Key: missing.html</li>" in resp.text
    resp = site.request("HEAD", "/missing.html")
    assert resp.status_code == 404 and resp.content == b""
    _is_html_error(site.get("/empty/"), 404, "NoSuchKey")     # no index document there


def test_website_through_a_bucket_policy(s3_file, file_gateway, bucket_name: str) -> None:
    """Public read granted by the bucket policy rather than ACLs, as AWS's guide sets it up."""
    s3_file.create_bucket(Bucket=bucket_name)
    s3_file.put_object(Bucket=bucket_name, Key="index.html", Body=b"policy home", ContentType="text/html")
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
    site = Site(file_gateway, bucket_name)
    _is_html_error(site.get("/"), 403, "AccessDenied")
    s3_file.put_bucket_policy(Bucket=bucket_name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket_name}/*"}]}))
    resp = site.get("/")
    assert resp.status_code == 200 and resp.text == "policy home"


def test_website_conditional_get_and_ranges(s3_file, file_gateway, site_bucket: str) -> None:
    site = Site(file_gateway, site_bucket)
    etag = s3_file.head_object(Bucket=site_bucket, Key="page.html")["ETag"]
    resp = site.get("/page.html", Range="bytes=2-4")
    assert resp.status_code == 206 and resp.content == b"234"
    assert resp.headers["content-range"] == "bytes 2-4/10"
    resp = site.get("/page.html", If_None_Match=etag)
    assert resp.status_code == 304 and resp.content == b""
    resp = site.get("/page.html", If_Match='"0000"')
    assert resp.status_code == 412 and resp.text == "<h1>oops</h1>"     # the error document, with 412
    resp = site.get("/page.html", Range="bytes=50-")
    assert resp.status_code == 416


def test_website_without_configuration_or_bucket(s3_file, file_gateway, bucket_name: str) -> None:
    s3_file.create_bucket(Bucket=bucket_name)
    s3_file.put_object(Bucket=bucket_name, Key="index.html", Body=b"x", ACL="public-read")
    _is_html_error(Site(file_gateway, bucket_name).get("/"), 404, "NoSuchWebsiteConfiguration")
    _is_html_error(Site(file_gateway, bucket_name + "-none").get("/"), 404, "NoSuchBucket")


def test_website_redirect_all_requests(s3_file, file_gateway, bucket_name: str) -> None:
    s3_file.create_bucket(Bucket=bucket_name)
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={
        "RedirectAllRequestsTo": {"HostName": "www.example.com", "Protocol": "https"}})
    site = Site(file_gateway, bucket_name)
    resp = site.get("/a/b.html")
    assert resp.status_code == 301 and resp.headers["location"] == "https://www.example.com/a/b.html"
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={
        "RedirectAllRequestsTo": {"HostName": "www.example.com"}})
    assert site.get("/").headers["location"] == "http://www.example.com/"   # the request's protocol


def test_website_routing_rules(s3_file, file_gateway, site_bucket: str) -> None:
    s3_file.put_bucket_website(Bucket=site_bucket, WebsiteConfiguration={
        "IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "error.html"},
        "RoutingRules": [
            {"Condition": {"KeyPrefixEquals": "docs/old/"}, "Redirect": {"ReplaceKeyPrefixWith": "docs/new/"}},
            {"Condition": {"KeyPrefixEquals": "docs/"}, "Redirect": {"ReplaceKeyWith": "index.html",
                                                                     "HttpRedirectCode": "302"}},
            {"Condition": {"KeyPrefixEquals": "img/", "HttpErrorCodeReturnedEquals": "403"},
             "Redirect": {"HostName": "images.example.com", "Protocol": "https"}},
            {"Condition": {"HttpErrorCodeReturnedEquals": "403"}, "Redirect": {"ReplaceKeyWith": "page.html"}},
        ]})
    site = Site(file_gateway, site_bucket)
    host = site.host
    # Prefix rules apply in order before any lookup: the first that matches wins.
    resp = site.get("/docs/old/a.html")
    assert resp.status_code == 301 and resp.headers["location"] == f"http://{host}/docs/new/a.html"
    resp = site.get("/docs/x.html")
    assert resp.status_code == 302 and resp.headers["location"] == f"http://{host}/index.html"
    # Error-code rules apply once the request has failed with that status (prefix and code both held).
    resp = site.get("/img/missing.png")
    assert resp.status_code == 301 and resp.headers["location"] == "https://images.example.com/img/missing.png"
    resp = site.get("/missing.html")
    assert resp.status_code == 301 and resp.headers["location"] == f"http://{host}/page.html"
    # A request that does not fail is not redirected by an error-code rule.
    assert site.get("/page.html").status_code == 200


def test_website_preflight_and_cors(s3_file, file_gateway, site_bucket: str) -> None:
    origin = "http://app.example"
    s3_file.put_bucket_cors(Bucket=site_bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [origin], "AllowedMethods": ["GET"]}]})
    site = Site(file_gateway, site_bucket)
    resp = site.request("OPTIONS", "/page.html", Origin=origin, Access_Control_Request_Method="GET")
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == origin
    resp = site.get("/page.html", Origin=origin)
    assert resp.status_code == 200 and resp.headers["access-control-allow-origin"] == origin
    resp = site.get("/private.html", Origin=origin)
    assert resp.status_code == 403 and resp.headers["access-control-allow-origin"] == origin


def test_aws_cli_website(aws, s3_file, file_gateway, bucket_name: str) -> None:
    """The README's recipe: `aws s3 website s3://bucket --index-document index.html`."""
    aws("s3", "mb", f"s3://{bucket_name}")
    aws("s3", "website", f"s3://{bucket_name}", "--index-document", "index.html", "--error-document", "error.html")
    s3_file.put_object(Bucket=bucket_name, Key="index.html", Body=b"cli site", ContentType="text/html",
                       ACL="public-read")
    got = s3_file.get_bucket_website(Bucket=bucket_name)
    assert got["IndexDocument"] == {"Suffix": "index.html"} and got["ErrorDocument"] == {"Key": "error.html"}
    assert Site(file_gateway, bucket_name).get("/").text == "cli site"


def test_website_redirect_location_no_header_can_carry(s3_file, file_gateway, site_bucket: str) -> None:
    """A redirect location stored from a browser form (non-ASCII, a control character) is sent
    percent-encoded, never a 500."""
    for key, value, location in (("uni.html", "/日本", "/%E6%97%A5%E6%9C%AC"), ("ctl.html", "/a\r\nb", "/a%0D%0Ab")):
        post = s3_file.generate_presigned_post(site_bucket, key, Fields={"x-amz-website-redirect-location": value,
                                                                         "acl": "public-read"},
                                               Conditions=[{"x-amz-website-redirect-location": value},
                                                           {"acl": "public-read"}])
        r = httpx.post(post["url"], data=post["fields"], files={"file": ("f.txt", b"x")}, timeout=30)
        assert r.status_code == 204, r.text
        resp = Site(file_gateway, site_bucket).get(f"/{key}")
        assert resp.status_code == 301 and resp.headers["location"] == location


def test_website_on_both_backends_with_versioning(s3, gateway, bucket_name: str) -> None:
    """The same site over the dmd and over mem_backend; a current delete marker is a missing page."""
    s3.create_bucket(Bucket=bucket_name, ACL="public-read")
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    for key, body in (("index.html", b"v1 home"), ("index.html", b"v2 home"), ("gone.html", b"soon gone")):
        s3.put_object(Bucket=bucket_name, Key=key, Body=body, ContentType="text/html", ACL="public-read")
    s3.delete_object(Bucket=bucket_name, Key="gone.html")
    s3.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}})
    site = Site(gateway, bucket_name)
    assert site.get("/").text == "v2 home"
    _is_html_error(site.get("/gone.html"), 404, "NoSuchKey")
