"""CORS and website hosting in a real browser (issue 14): headless Debian chromium, driven through
the DevTools protocol (tests/integration/chromium.py), against the real gateway over the dmd.
Every scenario checks what the page's DOM shows, not only what the server stored.

1. the browser opens a site: the index document, and the error document for a missing page;
2. a page of the site fetch()es objects of a second bucket on the REST endpoint (a presigned GET
   and a presigned PUT): with a CORS rule for the site's origin the page reads the data, without
   one the browser blocks the calls and the page reports the failure;
3. an HTML form of the site posts a file to a bucket (POST object, policy + signature) and the
   object arrives; the browser follows success_action_redirect back to the site.
"""
from __future__ import annotations

import html
import json
import uuid
from pathlib import Path
from urllib.parse import urlencode
from typing import Iterator

import pytest

from tests.integration.chromium import Browser, Page, ensure_chromium
from tests.integration.conftest import make_client
from tests.integration.test_post_object import v4_form

WEBSITE_ENDPOINT = "s3-website.localhost"

APP_PAGE = """<!doctype html>
<html><head><title>app</title></head><body>
<p id="result"></p>
<script>
async function attempt(label, call) {
  try { const r = await call(); return label + ' ' + r.status + ' ' + (await r.text()); }
  catch (e) { return label + ' blocked: ' + e.name; }
}
(async () => {
  const q = new URLSearchParams(location.search);
  const put = await attempt('PUT', () => fetch(q.get('put'), {method: 'PUT', body: q.get('body'),
                                                                headers: {'Content-Type': 'text/plain'}}));
  const get = await attempt('GET', () => fetch(q.get('get')));
  document.getElementById('result').textContent = JSON.stringify({put, get});
})();
</script></body></html>"""

DONE_PAGE = """<!doctype html>
<html><head><title>done</title></head><body>
<p id="status">uploaded</p><p id="key"></p>
<script>document.getElementById('key').textContent = new URLSearchParams(location.search).get('key');</script>
</body></html>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        executable = ensure_chromium()
    except RuntimeError as exc:
        pytest.skip(f"no real browser for the browser tests: {exc}")
    b = Browser(executable)
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    p = browser.new_page()
    yield p
    p.close()


def _site_url(gateway, bucket: str, path: str = "/") -> str:
    return f"http://{bucket}.{WEBSITE_ENDPOINT}:{gateway.port}{path}"


@pytest.fixture
def site(s3_file, bucket_name: str) -> str:
    """A website bucket: index, error and app pages, all public."""
    s3_file.create_bucket(Bucket=bucket_name)
    pages = {"index.html": "<!doctype html><html><body><h1 id='title'>Welcome to the site</h1></body></html>",
             "error.html": "<!doctype html><html><body><h1 id='title'>Nothing here</h1></body></html>",
             "app.html": APP_PAGE, "done.html": DONE_PAGE}
    for key, body in pages.items():
        s3_file.put_object(Bucket=bucket_name, Key=key, Body=body.encode(), ContentType="text/html",
                           ACL="public-read")
    s3_file.put_bucket_website(Bucket=bucket_name, WebsiteConfiguration={
        "IndexDocument": {"Suffix": "index.html"}, "ErrorDocument": {"Key": "error.html"}})
    return bucket_name


def test_browser_opens_the_site(page: Page, file_gateway, site: str) -> None:
    page.navigate(_site_url(file_gateway, site))
    assert page.text("#title") == "Welcome to the site"
    page.navigate(_site_url(file_gateway, site, "/no/such/page.html"))
    assert page.text("#title") == "Nothing here"
    # A missing page's status is the error's own, even though the error document is served.
    status = page.evaluate("fetch(location.href).then(r => r.status)")
    assert status == 403


def _run_app(page: Page, gateway, site: str, s3, data_bucket: str, key: str, body: str) -> dict[str, str]:
    s3 = make_client(gateway.url, signature_version="s3v4")   # SigV4 presigned URLs, as browser apps use
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": data_bucket, "Key": key,
                                                               "ContentType": "text/plain"})
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": data_bucket, "Key": key})
    page.navigate(_site_url(gateway, site, "/app.html?" + urlencode({"put": put_url, "get": get_url, "body": body})))
    return json.loads(page.wait_for("document.getElementById('result').textContent"))


def test_browser_fetch_needs_cors(page: Page, file_gateway, site: str, s3_file) -> None:
    data_bucket = f"{site}-data"
    s3_file.create_bucket(Bucket=data_bucket)
    origin = _site_url(file_gateway, site, "")
    # With a rule for the site's origin: the page writes, then reads back, through presigned URLs.
    s3_file.put_bucket_cors(Bucket=data_bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [origin], "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["*"],
         "ExposeHeaders": ["ETag"]}]})
    result = _run_app(page, file_gateway, site, s3_file, data_bucket, "from-browser.txt", "written by chromium")
    assert result == {"put": "PUT 200 ", "get": "GET 200 written by chromium"}, result
    stored = s3_file.get_object(Bucket=data_bucket, Key="from-browser.txt")
    assert stored["Body"].read() == b"written by chromium"
    # Without it: the browser blocks both calls (the preflight of the PUT fails, so nothing is written).
    s3_file.delete_bucket_cors(Bucket=data_bucket)
    result = _run_app(page, file_gateway, site, s3_file, data_bucket, "blocked.txt", "never stored")
    assert result == {"put": "PUT blocked: TypeError", "get": "GET blocked: TypeError"}, result
    keys = [o["Key"] for o in s3_file.list_objects_v2(Bucket=data_bucket).get("Contents", [])]
    assert keys == ["from-browser.txt"]
    # A rule for another origin does not help the site either.
    s3_file.put_bucket_cors(Bucket=data_bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["http://other.example"], "AllowedMethods": ["GET", "PUT"], "AllowedHeaders": ["*"]}]})
    result = _run_app(page, file_gateway, site, s3_file, data_bucket, "from-browser.txt", "x")
    assert result == {"put": "PUT blocked: TypeError", "get": "GET blocked: TypeError"}, result


def test_browser_form_upload(page: Page, file_gateway, site: str, s3_file, tmp_path: Path) -> None:
    upload_bucket = f"{site}-uploads"
    s3_file.create_bucket(Bucket=upload_bucket)
    done = _site_url(file_gateway, site, "/done.html")
    fields = v4_form(upload_bucket, [["starts-with", "$key", "uploads/"], {"success_action_redirect": done},
                                     ["content-length-range", 1, 1024 * 1024]],
                     {"key": "uploads/${filename}", "success_action_redirect": done})
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in fields.items())
    form_page = (f'<!doctype html><html><body><form id="f" method="post" enctype="multipart/form-data" '
                 f'action="{file_gateway.url}/{upload_bucket}">{inputs}<input type="file" name="file">'
                 '<input type="submit" value="Upload"></form></body></html>')
    s3_file.put_object(Bucket=site, Key="upload.html", Body=form_page.encode(), ContentType="text/html",
                       ACL="public-read")
    content = f"picked by the user {uuid.uuid4()}\n".encode()
    chosen = tmp_path / "report.txt"
    chosen.write_bytes(content)
    page.navigate(_site_url(file_gateway, site, "/upload.html"))
    page.set_file("input[type=file]", str(chosen))
    page.evaluate("document.getElementById('f').requestSubmit()")
    # The browser follows the 303 back to the site, whose page shows what was uploaded.
    page.wait_for(f"location.href.startsWith({json.dumps(done)}) && document.readyState === 'complete'")
    assert page.text("#status") == "uploaded"
    assert page.text("#key") == "uploads/report.txt"
    got = s3_file.get_object(Bucket=upload_bucket, Key="uploads/report.txt")
    assert got["Body"].read() == content
