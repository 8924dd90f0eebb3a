"""gateway.auth.authenticate: AWS's published SigV4 vectors, round trips with botocore's own
signers (v4 header/query, v2 header/query) over awkward paths and queries, and every way
a client can get authentication wrong."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import AuthRequest, authenticate, detect_scheme
from shared.config import AccessKey, Account, Config, load_config
from shared.errors import S3Error

EXAMPLE_AK = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_TIME = datetime(2013, 5, 24, 0, 0, 30, tzinfo=timezone.utc)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
EXAMPLE_ACCOUNT = Account("example", "e@example.com", "arn:aws:iam::1:root", "example-canonical", "1",
                          (AccessKey(EXAMPLE_AK, EXAMPLE_SK),))
EXAMPLE_CONFIG = Config(accounts=(EXAMPLE_ACCOUNT,))
CONFIG = load_config({})  # accessKey1 / verySecretKey1 and the other default accounts
CREDS = Credentials("accessKey1", "verySecretKey1")
ENDPOINT = "http://127.0.0.1:8000"


def expect_error(code: str, req: AuthRequest, config: Config = CONFIG, now: datetime | None = None) -> S3Error:
    with pytest.raises(S3Error) as info:
        authenticate(req, config, now)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


def example_header_request(method: str, path: str, query: str, headers: list[tuple[str, str]],
                           signed: str, signature: str) -> AuthRequest:
    authorization = (f"AWS4-HMAC-SHA256 Credential={EXAMPLE_AK}/20130524/us-east-1/s3/aws4_request,"
                     f"SignedHeaders={signed},Signature={signature}")
    return AuthRequest(method, path, query, headers + [("authorization", authorization)])


# --- AWS's published examples ("Signature Calculations for the Authorization Header") ------------

def test_aws_example_get_object_with_range() -> None:
    req = example_header_request(
        "GET", "/test.txt", "",
        [("host", "examplebucket.s3.amazonaws.com"), ("range", "bytes=0-9"),
         ("x-amz-content-sha256", EMPTY_SHA256), ("x-amz-date", "20130524T000000Z")],
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    result = authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME)
    assert (result.scheme, result.access_key, result.account) == ("v4-header", EXAMPLE_AK, EXAMPLE_ACCOUNT)
    assert (result.payload_mode, result.payload_sha256) == ("sha256", EMPTY_SHA256)


def test_aws_example_put_object_with_unencoded_dollar_in_path() -> None:
    # The example sends "test$file.text" and signs the canonical URI "/test%24file.text".
    req = example_header_request(
        "PUT", "/test$file.text", "",
        [("host", "examplebucket.s3.amazonaws.com"), ("date", "Fri, 24 May 2013 00:00:00 GMT"),
         ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
         ("x-amz-content-sha256", "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")],
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    result = authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME)
    assert result.payload_sha256 == hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()


def test_aws_example_get_bucket_lifecycle() -> None:
    req = example_header_request(
        "GET", "/", "lifecycle",
        [("host", "examplebucket.s3.amazonaws.com"), ("x-amz-content-sha256", EMPTY_SHA256),
         ("x-amz-date", "20130524T000000Z")],
        "host;x-amz-content-sha256;x-amz-date",
        "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
    assert authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME).scheme == "v4-header"


def test_aws_example_list_objects_query_is_sorted() -> None:
    req = example_header_request(
        "GET", "/", "prefix=J&max-keys=2",  # sent unsorted: the canonical query sorts it
        [("host", "examplebucket.s3.amazonaws.com"), ("x-amz-content-sha256", EMPTY_SHA256),
         ("x-amz-date", "20130524T000000Z")],
        "host;x-amz-content-sha256;x-amz-date",
        "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    assert authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME).scheme == "v4-header"


PRESIGNED_EXAMPLE_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
    "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


def test_aws_example_presigned_url() -> None:
    req = AuthRequest("GET", "/test.txt", PRESIGNED_EXAMPLE_QUERY, [("host", "examplebucket.s3.amazonaws.com")])
    result = authenticate(req, EXAMPLE_CONFIG, EXAMPLE_TIME + timedelta(hours=23))
    assert (result.scheme, result.payload_mode) == ("v4-query", "unsigned")


def test_aws_example_presigned_url_expires_after_x_amz_expires() -> None:
    req = AuthRequest("GET", "/test.txt", PRESIGNED_EXAMPLE_QUERY, [("host", "examplebucket.s3.amazonaws.com")])
    err = expect_error("AccessDenied", req, EXAMPLE_CONFIG, EXAMPLE_TIME + timedelta(days=1, minutes=1))
    assert err.message == "Request has expired"


CHUNKED_EXAMPLE_HEADERS = [
    ("host", "s3.amazonaws.com"), ("x-amz-date", "20130524T000000Z"), ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), ("content-encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"), ("content-length", "66824")]
CHUNKED_EXAMPLE_SIGNED = ("content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                          "x-amz-decoded-content-length;x-amz-storage-class")
CHUNKED_EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


def chunked_example_request() -> AuthRequest:
    return example_header_request("PUT", "/examplebucket/chunkObject.txt", "", list(CHUNKED_EXAMPLE_HEADERS),
                                  CHUNKED_EXAMPLE_SIGNED, CHUNKED_EXAMPLE_SEED)


def test_aws_example_chunked_upload_seed_and_chunk_signatures() -> None:
    result = authenticate(chunked_example_request(), EXAMPLE_CONFIG, EXAMPLE_TIME)
    assert result.payload_mode == "streaming-signed"
    ctx = result.streaming
    assert ctx is not None and ctx.seed_signature == CHUNKED_EXAMPLE_SEED
    assert ctx.scope == "20130524/us-east-1/s3/aws4_request" and ctx.timestamp == "20130524T000000Z"
    sig1 = ctx.chunk_signature(ctx.seed_signature, hashlib.sha256(b"a" * 65536).hexdigest())
    assert sig1 == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    sig2 = ctx.chunk_signature(sig1, hashlib.sha256(b"a" * 1024).hexdigest())
    assert sig2 == "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    assert ctx.chunk_signature(sig2, EMPTY_SHA256) == "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"


def test_streaming_signed_payload_is_refused_on_other_methods() -> None:
    req = example_header_request("POST", "/examplebucket/chunkObject.txt", "", list(CHUNKED_EXAMPLE_HEADERS),
                                 CHUNKED_EXAMPLE_SIGNED, CHUNKED_EXAMPLE_SEED)
    expect_error("InvalidArgument", req, EXAMPLE_CONFIG, EXAMPLE_TIME)


# --- round trips with botocore's signers ---------------------------------------------------------

def to_auth_request(prepared_url: str, method: str, headers: dict[str, str],
                    host_bucket: str | None = None) -> AuthRequest:
    parts = urlsplit(prepared_url)
    pairs = [(k.lower(), str(v)) for k, v in headers.items()]
    if not any(k == "host" for k, _ in pairs):
        pairs.append(("host", parts.netloc))
    return AuthRequest(method, parts.path or "/", parts.query, pairs, host_bucket)


def sign_with(signer: object, method: str, url: str, headers: dict[str, str] | None = None,
              params: dict[str, str] | None = None, body: bytes = b"", auth_path: str | None = None) -> AuthRequest:
    if params:  # botocore serialises operation parameters into the URL before signing
        url += ("&" if "?" in url else "?") + percent_encode_sequence(params)
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    if auth_path is not None:
        request.auth_path = auth_path
    signer.add_auth(request)  # type: ignore[attr-defined]
    prepared = request.prepare()
    return to_auth_request(prepared.url, method, dict(prepared.headers))


KEYS = [
    "plain.txt", "dir/sub/file", "with space", "plus+sign", "tilde~", "equals=sign", "unicode-é-漢字-🙂",
    "percent%25literal", "quote'and\"dq", "star*bang!paren()", "dollar$at@colon:semi;comma,", "amp&hash#q?",
    "trailing/", "double//slash", "dot/./segment/../x", " leading-space", "brackets[]{}|\\^`",
]
QUERIES: list[dict[str, str]] = [
    {}, {"acl": ""}, {"uploads": ""}, {"versionId": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"},
    {"prefix": "a b+c~d=e&f", "delimiter": "/", "max-keys": "2"}, {"list-type": "2", "start-after": "é漢"},
    {"response-content-disposition": "attachment; filename=\"x y.txt\"", "response-content-type": "text/plain"},
    {"tagging": "", "versionId": "null"}, {"partNumber": "3", "uploadId": "abc+/="}, {"empty": ""},
]


@pytest.mark.parametrize("key", KEYS)
def test_botocore_v4_header_signatures_verify_for_awkward_keys(key: str) -> None:
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    headers = {"x-amz-meta-note": "  spaced   value ", "Content-Type": "text/plain"}
    req = sign_with(S3SigV4Auth(CREDS, "s3", "us-east-1"), "PUT", url, headers, body=b"hello")
    result = authenticate(req, CONFIG)
    assert result.scheme == "v4-header" and result.account is not None
    assert result.account.name == "Bart"
    assert result.payload_sha256 == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("key", ["plain.txt", "dir/sub/file", "unicode-é"])
def test_generic_sigv4_signer_verifies_for_keys_it_does_not_normalise(key: str) -> None:
    # The non-S3 signer normalises and double-encodes paths, which S3 does not do: only keys
    # where both agree can match (as against AWS itself).
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(b"hello").hexdigest()}
    req = sign_with(SigV4Auth(CREDS, "s3", "us-east-1"), "PUT", f"{ENDPOINT}/bucket/{quote(key, safe='/~')}",
                    headers, body=b"hello")
    if "%" in req.raw_path:
        expect_error("SignatureDoesNotMatch", req)
    else:
        assert authenticate(req, CONFIG).scheme == "v4-header"


def test_raw_plus_in_query_is_accepted_whether_signed_as_space_or_plus() -> None:
    for value in ("a b", "a+b"):
        req = sign_with(S3SigV4Auth(CREDS, "s3", "us-east-1"), "GET", f"{ENDPOINT}/bucket/", params={"prefix": value})
        req.query_string = req.query_string.replace("%20", "+").replace("%2B", "+")  # a client sending raw '+'
        assert authenticate(req, CONFIG).scheme == "v4-header"


@pytest.mark.parametrize("params", QUERIES)
def test_botocore_v4_header_signatures_verify_for_awkward_queries(params: dict[str, str]) -> None:
    req = sign_with(S3SigV4Auth(CREDS, "s3", "eu-west-3"), "GET", f"{ENDPOINT}/bucket/k", params=params)
    assert authenticate(req, CONFIG).scheme == "v4-header"


def test_repeated_query_parameters_and_headers_are_signed_in_order() -> None:
    url = f"{ENDPOINT}/bucket/?b=2&a=1&a=0&flag"
    request = AWSRequest(method="GET", url=url, headers={})
    request.headers.add_header("x-amz-meta-multi", "one")
    request.headers.add_header("x-amz-meta-multi", "two")
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    parts = urlsplit(request.url)
    headers = [(k.lower(), v) for k, v in request.headers.items()] + [("host", parts.netloc)]
    req = AuthRequest("GET", parts.path, parts.query, headers)
    assert req.header_all("x-amz-meta-multi") == ["one", "two"]
    assert authenticate(req, CONFIG).scheme == "v4-header"


@pytest.mark.parametrize("key", KEYS)
def test_botocore_presigned_v4_urls_verify(key: str) -> None:
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    req = sign_with(S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=3600), "GET", url,
                    params={"response-content-type": "a/b c"})
    result = authenticate(req, CONFIG)
    assert (result.scheme, result.payload_mode) == ("v4-query", "unsigned")


@pytest.mark.parametrize("key", KEYS)
def test_botocore_v2_header_signatures_verify(key: str) -> None:
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    headers = {"Content-Type": "text/plain", "Content-MD5": "XUFAKrxLKna5cZ2REBfFkg==", "x-amz-meta-a": " b "}
    req = sign_with(HmacV1Auth(CREDS), "PUT", url, headers, body=b"hello")
    result = authenticate(req, CONFIG)
    assert (result.scheme, result.payload_mode, result.access_key) == ("v2-header", "none", "accessKey1")


@pytest.mark.parametrize("params", QUERIES)
def test_botocore_v2_signatures_include_exactly_the_subresources(params: dict[str, str]) -> None:
    req = sign_with(HmacV1Auth(CREDS), "GET", f"{ENDPOINT}/bucket/k", params=params)
    assert authenticate(req, CONFIG).scheme == "v2-header"


def test_v2_virtual_hosted_request_signs_the_bucket_in_the_resource() -> None:
    request = AWSRequest(method="GET", url="http://bucket.s3.example.com:8000/key?acl", headers={})
    request.auth_path = "/bucket/key"  # botocore appends the sub-resources itself
    HmacV1Auth(CREDS).add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = [(k.lower(), v) for k, v in prepared.headers.items()] + [("host", parts.netloc)]
    assert authenticate(AuthRequest("GET", parts.path, parts.query, headers, host_bucket="bucket"),
                        CONFIG).scheme == "v2-header"
    expect_error("SignatureDoesNotMatch", AuthRequest("GET", parts.path, parts.query, headers))


@pytest.mark.parametrize("key", ["plain", "with space", "unicode-é", "plus+sign"])
def test_botocore_presigned_v2_urls_verify_with_amz_headers_moved_to_the_query(key: str) -> None:
    url = f"{ENDPOINT}/bucket/{quote(key, safe='/~')}"
    req = sign_with(HmacV1QueryAuth(CREDS, expires=600), "PUT", url,
                    {"Content-Type": "text/plain", "x-amz-acl": "public-read"})
    # The client sends neither header: botocore put both in the query string.
    req.headers = [(k, v) for k, v in req.headers if k not in ("content-type", "x-amz-acl")]
    assert authenticate(req, CONFIG).scheme == "v2-query"


def test_v2_sha256_signature_is_accepted() -> None:
    import base64
    import hmac
    date = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    sts = f"GET\n\n\n{date}\n/bucket/key"
    sig = base64.b64encode(hmac.new(b"verySecretKey1", sts.encode(), hashlib.sha256).digest()).decode()
    req = AuthRequest("GET", "/bucket/key", "", [("date", date), ("authorization", f"AWS accessKey1:{sig}")])
    assert authenticate(req, CONFIG).scheme == "v2-header"


def test_v2_with_x_amz_date_accepts_the_empty_date_line_as_aws_documents() -> None:
    import base64
    import hmac
    amz_date = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    sts = f"GET\n\n\n\nx-amz-date:{amz_date}\n/bucket/key"
    sig = base64.b64encode(hmac.new(b"verySecretKey1", sts.encode(), hashlib.sha1).digest()).decode()
    req = AuthRequest("GET", "/bucket/key", "", [("date", "ignored"), ("x-amz-date", amz_date),
                                                 ("authorization", f"AWS accessKey1:{sig}")])
    assert authenticate(req, CONFIG).scheme == "v2-header"


# --- failures ---------------------------------------------------------------------------------

def signed_v4(headers: dict[str, str] | None = None, creds: Credentials = CREDS, path: str = "/bucket/key",
              params: dict[str, str] | None = None) -> AuthRequest:
    return sign_with(S3SigV4Auth(creds, "s3", "us-east-1"), "GET", f"{ENDPOINT}{path}", headers, params)


def replace_header(req: AuthRequest, name: str, value: str | None) -> AuthRequest:
    headers = [(k, v) for k, v in req.headers if k != name]
    if value is not None:
        headers.append((name, value))
    return AuthRequest(req.method, req.raw_path, req.query_string, headers, req.host_bucket)


def test_anonymous_request_is_reported_not_refused() -> None:
    result = authenticate(AuthRequest("GET", "/bucket/key", "", [("host", "x")]), CONFIG)
    assert (result.scheme, result.account, result.access_key, result.payload_mode) == ("anonymous", None, None, "none")


def test_unknown_access_key_is_invalid_access_key_id() -> None:
    expect_error("InvalidAccessKeyId", signed_v4(creds=Credentials("nobody", "verySecretKey1")))


def test_wrong_secret_is_signature_does_not_match_with_debug_strings() -> None:
    err = expect_error("SignatureDoesNotMatch", signed_v4(creds=Credentials("accessKey1", "wrong")))
    assert err.extra["CanonicalRequest"].startswith("GET\n/bucket/key\n")
    assert err.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n")


@pytest.mark.parametrize("tamper", ["path", "query", "header", "method"])
def test_any_change_after_signing_breaks_the_v4_signature(tamper: str) -> None:
    req = signed_v4({"x-amz-meta-a": "1"}, params={"versionId": "v1"})
    if tamper == "path":
        req.raw_path = "/bucket/other"
    elif tamper == "query":
        req.query_string = req.query_string.replace("v1", "v2")
        req._query = None
    elif tamper == "header":
        req = replace_header(req, "x-amz-meta-a", "2")
    else:
        req.method = "DELETE"
    expect_error("SignatureDoesNotMatch", req)


@pytest.mark.parametrize("tamper", ["path", "subresource", "amz-header", "content-type"])
def test_any_signed_change_breaks_the_v2_signature(tamper: str) -> None:
    req = sign_with(HmacV1Auth(CREDS), "GET", f"{ENDPOINT}/bucket/key", {"x-amz-meta-a": "1", "Content-Type": "a/b"},
                    params={"acl": ""})
    if tamper == "path":
        req.raw_path = "/bucket/other"
    elif tamper == "subresource":
        req.query_string = "versioning"
        req._query = None
    elif tamper == "amz-header":
        req = replace_header(req, "x-amz-meta-a", "2")
    else:
        req = replace_header(req, "content-type", "c/d")
    expect_error("SignatureDoesNotMatch", req)


def test_v2_unsigned_query_parameters_do_not_matter() -> None:
    req = sign_with(HmacV1Auth(CREDS), "GET", f"{ENDPOINT}/bucket/", params={"prefix": "a"})
    req.query_string = "prefix=b&max-keys=3"
    assert authenticate(req, CONFIG).scheme == "v2-header"


# --- what must be signed (issue 17) --------------------------------------------------------------

class _LeaveOut:
    """A botocore SigV4 signer that signs every header except `leave_out` (a valid signature AWS refuses)."""
    leave_out: frozenset[str] = frozenset()

    def headers_to_sign(self, request):  # type: ignore[no-untyped-def]
        headers = super().headers_to_sign(request)  # type: ignore[misc]
        for name in self.leave_out:
            del headers[name]
        return headers


def v4_signer_leaving_out(*names: str, query: bool = False, expires: int = 3600) -> SigV4Auth:
    base = S3SigV4QueryAuth if query else S3SigV4Auth
    cls = type("LeaveOut", (_LeaveOut, base), {"leave_out": frozenset(names)})
    return cls(CREDS, "s3", "us-east-1", expires=expires) if query else cls(CREDS, "s3", "us-east-1")


def with_header(req: AuthRequest, name: str, value: str) -> AuthRequest:
    return AuthRequest(req.method, req.raw_path, req.query_string, req.headers + [(name, value)], req.host_bucket)


def expect_headers_not_signed(req: AuthRequest, names: str) -> None:
    err = expect_error("AccessDenied", req)
    assert (err.status, err.message) == (403, "There were headers present in the request which were not signed")
    assert err.extra == {"HeadersNotSigned": names}


@pytest.mark.parametrize("query", [False, True], ids=["header", "presigned"])
def test_v4_signature_that_leaves_out_host_is_headers_not_signed(query: bool) -> None:
    req = sign_with(v4_signer_leaving_out("host", query=query), "PUT", f"{ENDPOINT}/bucket/key")
    signed = req.query("X-Amz-SignedHeaders") if query else req.header("authorization")
    assert "host" not in (signed or "") and req.header("host")
    expect_headers_not_signed(req, "host")


@pytest.mark.parametrize("query", [False, True], ids=["header", "presigned"])
def test_v4_unsigned_x_amz_headers_are_headers_not_signed(query: bool) -> None:
    signer = S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=3600) if query else S3SigV4Auth(CREDS, "s3", "us-east-1")
    req = sign_with(signer, "PUT", f"{ENDPOINT}/bucket/key", {"x-amz-meta-signed": "1"})
    assert authenticate(req, CONFIG).account is not None
    attack = with_header(with_header(req, "x-amz-copy-source", "/other/secret"), "x-amz-meta-color", "red")
    attack = with_header(attack, "x-amz-tagging", "a=b")
    expect_headers_not_signed(attack, "x-amz-copy-source, x-amz-meta-color, x-amz-tagging")
    # Named once however often it is repeated; reported even if the signature is wrong too.
    expect_headers_not_signed(with_header(with_header(replace_header(req, "x-amz-meta-signed", "2"),
                                                      "x-amz-acl", "public-read"), "x-amz-acl", "private"), "x-amz-acl")


def test_v4_header_signature_leaving_out_host_and_an_x_amz_header_names_both() -> None:
    req = sign_with(v4_signer_leaving_out("host", "x-amz-meta-a"), "PUT", f"{ENDPOINT}/bucket/key", {"x-amz-meta-a": "1"})
    expect_headers_not_signed(req, "host, x-amz-meta-a")


def test_v4_header_signature_may_leave_out_x_amz_content_sha256_as_aws_allows() -> None:
    # Its value is the payload line of the canonical request: changing it breaks the signature anyway.
    req = sign_with(v4_signer_leaving_out("x-amz-content-sha256"), "PUT", f"{ENDPOINT}/bucket/key", body=b"abc")
    assert "x-amz-content-sha256" not in (req.header("authorization") or "")
    assert authenticate(req, CONFIG).payload_sha256 == hashlib.sha256(b"abc").hexdigest()
    expect_error("SignatureDoesNotMatch", replace_header(req, "x-amz-content-sha256", EMPTY_SHA256))


def test_presigned_v4_with_an_unsigned_x_amz_content_sha256_is_judged_by_its_value() -> None:
    req = presigned_v4()
    assert authenticate(with_header(req, "x-amz-content-sha256", "UNSIGNED-PAYLOAD"), CONFIG).scheme == "v4-query"
    expect_error("SignatureDoesNotMatch", with_header(req, "x-amz-content-sha256", EMPTY_SHA256))


def test_headers_outside_x_amz_may_go_unsigned() -> None:
    req = signed_v4()
    for name, value in (("x-amzn-trace-id", "Root=1-abc"), ("user-agent", "curl"), ("x-forwarded-for", "10.0.0.1")):
        req = with_header(req, name, value)
    assert authenticate(req, CONFIG).scheme == "v4-header"


@pytest.mark.parametrize("signer", [HmacV1Auth(CREDS), HmacV1QueryAuth(CREDS, expires=3600)], ids=["header", "query"])
def test_v2_signs_every_x_amz_header_present_so_an_added_one_breaks_it(signer: object) -> None:
    # v2 has no SignedHeaders: every x-amz-* header is in the string to sign, so an unsigned one
    # is a signature mismatch (AWS answers SignatureDoesNotMatch).
    req = sign_with(signer, "PUT", f"{ENDPOINT}/bucket/key", {"x-amz-meta-a": "1"})
    assert authenticate(req, CONFIG).account is not None
    for name, value in (("x-amz-copy-source", "/other/secret"), ("x-amz-meta-b", "2"), ("x-amz-tagging", "a=b")):
        expect_error("SignatureDoesNotMatch", with_header(req, name, value))


def test_clock_skew_over_15_minutes_is_refused() -> None:
    req = signed_v4()
    assert authenticate(req, CONFIG, datetime.now(timezone.utc) + timedelta(minutes=14)).scheme == "v4-header"
    err = expect_error("RequestTimeTooSkewed", req, now=datetime.now(timezone.utc) + timedelta(minutes=16))
    assert err.extra["MaxAllowedSkewMilliseconds"] == "900000"
    expect_error("RequestTimeTooSkewed", req, now=datetime.now(timezone.utc) - timedelta(minutes=16))


def test_v2_header_clock_skew_is_refused() -> None:
    req = sign_with(HmacV1Auth(CREDS), "GET", f"{ENDPOINT}/bucket/key")
    expect_error("RequestTimeTooSkewed", req, now=datetime.now(timezone.utc) + timedelta(hours=1))


def test_missing_date_is_access_denied() -> None:
    req = replace_header(signed_v4(), "x-amz-date", None)
    expect_error("AccessDenied", req)
    req = replace_header(sign_with(HmacV1Auth(CREDS), "GET", f"{ENDPOINT}/bucket/key"), "date", None)
    expect_error("AccessDenied", req)


def test_missing_content_sha256_is_missing_security_header() -> None:
    err = expect_error("MissingSecurityHeader", replace_header(signed_v4(), "x-amz-content-sha256", None))
    assert err.extra["MissingHeaderName"] == "x-amz-content-sha256"


def test_bad_content_sha256_value_is_invalid_argument() -> None:
    expect_error("InvalidArgument", replace_header(signed_v4(), "x-amz-content-sha256", "not-a-hash"))


def test_unsigned_payload_header_value_is_honoured() -> None:
    req = sign_with(SigV4Auth(CREDS, "s3", "us-east-1"), "GET", f"{ENDPOINT}/bucket/key",
                    {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    result = authenticate(req, CONFIG)
    assert (result.payload_mode, result.payload_sha256) == ("unsigned", None)


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256 Credential=accessKey1/20130524/us-east-1/s3/aws4_request",
    "AWS4-HMAC-SHA256 Credential=accessKey1/20130524/us-east-1/s3/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 Credential=accessKey1/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab",
    "AWS4-HMAC-SHA256 Credential=accessKey1/20130524/us-east-1/s3/aws4_request, SignedHeaders=Host, Signature=ab",
    "AWS4-HMAC-SHA256 garbage",
    "AWS4-HMAC-SHA256Credential=x",
])
def test_malformed_v4_authorization_header(authorization: str) -> None:
    req = replace_header(signed_v4(), "authorization", authorization)
    expect_error("AuthorizationHeaderMalformed", req)


def test_credential_scope_must_name_s3_the_request_date_and_aws4_request() -> None:
    base = signed_v4()
    auth = base.header("authorization") or ""
    today = (base.header("x-amz-date") or "")[:8]
    for bad in ("/19990101/", ):
        req = replace_header(base, "authorization", auth.replace(f"/{today}/", bad))
        assert "Date is not the same as X-Amz-Date" in expect_error("AuthorizationHeaderMalformed", req).message
    req = replace_header(base, "authorization", auth.replace("/s3/", "/ec2/"))
    assert "incorrect service" in expect_error("AuthorizationHeaderMalformed", req).message
    req = replace_header(base, "authorization", auth.replace("/aws4_request", "/aws5_request"))
    assert "incorrect terminal" in expect_error("AuthorizationHeaderMalformed", req).message


def test_any_region_is_accepted() -> None:
    for region in ("us-east-1", "eu-central-1", "my-own-region"):
        req = sign_with(S3SigV4Auth(CREDS, "s3", region), "GET", f"{ENDPOINT}/bucket/key")
        assert authenticate(req, CONFIG).scheme == "v4-header"


def test_unknown_authorization_scheme_is_access_denied() -> None:
    expect_error("AccessDenied", AuthRequest("GET", "/", "", [("authorization", "Bearer abc")]))


def test_two_auth_mechanisms_are_invalid_argument() -> None:
    req = sign_with(S3SigV4QueryAuth(CREDS, "s3", "us-east-1"), "GET", f"{ENDPOINT}/bucket/key")
    req.headers.append(("authorization", "AWS accessKey1:abc"))
    expect_error("InvalidArgument", req)


def test_malformed_v2_authorization_header_is_invalid_argument() -> None:
    expect_error("InvalidArgument", AuthRequest("GET", "/", "", [("authorization", "AWS accessKey1"),
                                                                ("date", "Fri, 24 May 2013 00:00:00 GMT")]))


def presigned_v4(expires: int = 3600) -> AuthRequest:
    return sign_with(S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=expires), "GET", f"{ENDPOINT}/bucket/key")


def with_query(req: AuthRequest, old: str, new: str) -> AuthRequest:
    return AuthRequest(req.method, req.raw_path, req.query_string.replace(old, new), req.headers)


def test_presigned_v4_expiry_and_not_yet_valid() -> None:
    req = presigned_v4(60)
    now = datetime.now(timezone.utc)
    assert authenticate(req, CONFIG, now + timedelta(seconds=30)).scheme == "v4-query"
    assert expect_error("AccessDenied", req, now=now + timedelta(seconds=120)).message == "Request has expired"
    assert expect_error("AccessDenied", req, now=now - timedelta(minutes=20)).message == "Request is not valid yet"


def test_presigned_v4_expires_over_a_week_is_refused() -> None:
    req = presigned_v4(3600)
    err = expect_error("AuthorizationQueryParametersError", with_query(req, "X-Amz-Expires=3600", "X-Amz-Expires=604801"))
    assert "604800" in err.message
    expect_error("AuthorizationQueryParametersError", with_query(req, "X-Amz-Expires=3600", "X-Amz-Expires=-1"))
    expect_error("AuthorizationQueryParametersError", with_query(req, "X-Amz-Expires=3600", "X-Amz-Expires=soon"))


@pytest.mark.parametrize("old, new", [
    ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA1"),
    ("X-Amz-Algorithm=AWS4-HMAC-SHA256&", ""),
    ("X-Amz-Date=", "X-Amz-Date=2013-05-24&x="),
    ("%2Fus-east-1%2F", "%2F"),
    ("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=HOST"),
])
def test_malformed_presigned_v4_parameters(old: str, new: str) -> None:
    req = presigned_v4()
    assert old in req.query_string
    expect_error("AuthorizationQueryParametersError", with_query(req, old, new))


def test_presigned_v4_with_a_tampered_signature_or_path() -> None:
    req = presigned_v4()
    expect_error("SignatureDoesNotMatch", AuthRequest("GET", "/bucket/other", req.query_string, req.headers))
    expect_error("SignatureDoesNotMatch", with_query(req, "X-Amz-Signature=", "X-Amz-Signature=0"))


def test_presigned_v2_expiry_rules() -> None:
    req = sign_with(HmacV1QueryAuth(CREDS, expires=60), "GET", f"{ENDPOINT}/bucket/key")
    now = datetime.now(timezone.utc)
    assert authenticate(req, CONFIG, now).scheme == "v2-query"
    assert expect_error("AccessDenied", req, now=now + timedelta(seconds=120)).message == "Request has expired"
    far = sign_with(HmacV1QueryAuth(CREDS, expires=604800 + 3600), "GET", f"{ENDPOINT}/bucket/key")
    expect_error("AccessDenied", far)
    expect_error("AccessDenied", AuthRequest("GET", "/bucket/key", "AWSAccessKeyId=accessKey1&Signature=x",
                                             [("host", "h")]))


def test_presigned_v2_wrong_secret() -> None:
    req = sign_with(HmacV1QueryAuth(Credentials("accessKey1", "nope"), expires=60), "GET", f"{ENDPOINT}/bucket/key")
    expect_error("SignatureDoesNotMatch", req)


def test_detect_scheme() -> None:
    assert detect_scheme(AuthRequest("GET", "/", "", [])) == "anonymous"
    assert detect_scheme(AuthRequest("GET", "/", "X-Amz-Credential=x", [])) == "v4-query"
    assert detect_scheme(AuthRequest("GET", "/", "Signature=x", [])) == "v2-query"
    assert detect_scheme(AuthRequest("GET", "/", "", [("authorization", "AWS a:b")])) == "v2-header"


def test_from_scope_keeps_the_raw_bytes() -> None:
    scope = {"type": "http", "method": "PUT", "path": "/b/é x", "raw_path": "/b/%C3%A9%20x".encode(),
             "query_string": b"a=%2B&b", "headers": [(b"Host", b"h"), (b"X-Amz-Meta-A", "é".encode())]}
    req = AuthRequest.from_scope(scope, host_bucket=None)
    assert req.raw_path == "/b/%C3%A9%20x" and req.query_string == "a=%2B&b"
    assert req.header("x-amz-meta-a") == "é" and req.header("HOST") == "h"
    assert req.query_params == [("a", "+", True), ("b", "", False)]


def test_v2_bucket_level_request_signed_with_trailing_slash_verifies() -> None:
    request = AWSRequest(method="GET", url=f"{ENDPOINT}/bkt?list-type=2&prefix=a", headers={})
    request.auth_path = "/bkt/"  # what botocore signs for a path-style bucket request
    HmacV1Auth(CREDS).add_auth(request)
    req = to_auth_request(request.url, "GET", dict(request.headers.items()))
    assert req.raw_path == "/bkt"
    assert authenticate(req, CONFIG).scheme == "v2-header"


# --- real clients over real HTTP ------------------------------------------------------------------

def test_boto3_clients_authenticate_and_verify_bodies_over_real_http() -> None:
    """boto3 (v4 and v2, presigned too) against a minimal uvicorn app using from_scope + VerifiedBody."""
    import io
    import socket
    import threading
    import time
    import urllib.request

    import boto3
    import uvicorn
    from botocore.config import Config as ClientConfig
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from gateway.auth.payload import VerifiedBody

    seen: list[tuple[str, ...]] = []

    async def handler(request: Request) -> Response:
        req = AuthRequest.from_scope(request.scope)
        try:
            auth = authenticate(req, CONFIG)
            body = VerifiedBody(auth, req, request.stream())
            size = sum([len(piece) async for piece in body])
            seen.append((auth.scheme, req.method, str(size), str(body.checksum)))
            return Response(b"", headers={"ETag": f'"{body.md5_hex}"'})
        except S3Error as err:
            seen.append(("error", err.code))
            return Response(f"<Error><Code>{err.code}</Code></Error>", status_code=err.status)

    app = Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "PUT", "HEAD"])])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        for signature_version in ("s3v4", "s3"):
            client = boto3.client(
                "s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="accessKey1",
                aws_secret_access_key="verySecretKey1", region_name="us-east-1",
                config=ClientConfig(signature_version=signature_version, s3={"addressing_style": "path"},
                                    retries={"max_attempts": 1}))
            for key in ("a b+c~d=é漢🙂", "q?&=#%", "dir/x"):
                client.put_object(Bucket="bkt", Key=key, Body=b"hello world")
                client.put_object(Bucket="bkt", Key=key, Body=io.BytesIO(b"x" * 100000), ChecksumAlgorithm="SHA256")
                client.get_object(Bucket="bkt", Key=key, VersionId="v+1 2")
            client.list_objects_v2(Bucket="bkt", Prefix="a b+c", Delimiter="/")
            url = client.generate_presigned_url("get_object", Params={
                "Bucket": "bkt", "Key": "é x+y", "ResponseContentDisposition": 'attachment; filename="a b"'})
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
    finally:
        server.should_exit = True
        thread.join(10)
    assert not [s for s in seen if s[0] == "error"], seen
    assert {s[0] for s in seen} == {"v4-header", "v4-query", "v2-header", "v2-query"}
    assert ("v4-header", "PUT", "100000", "('SHA256', '1p5omIFXgzJyMFqvIfRTyAA0boo2QNtleOJgIVVC5dQ=')") in seen


_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["AWS4-HMAC-SHA256 Credential=accessKey1/20130524/\udcff/s3/aws4_request, SignedHeaders=host, Signature=a",
     "AWS4-HMAC-SHA256 Credential=accessKey1/20130524/us-east-1/s3/aws4_request,SignedHeaders=host,Signature=",
     "AWS accessKey1:", "AWS :sig", "AWS4-HMAC-SHA256 ,,,,", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
     "20130524T000000Z", "Fri, 24 May 2013 00:00:00 GMT", "99999999T999999Z", "-5", "1e9"])


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["GET", "PUT", "POST"]), path=_TEXT, query=_TEXT,
       names=st.lists(st.sampled_from(["authorization", "x-amz-date", "date", "x-amz-content-sha256", "host",
                                       "content-md5", "x-amz-meta-a"]), max_size=6),
       values=st.lists(_TEXT, min_size=6, max_size=6),
       query_auth=st.sampled_from(["", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=accessKey1%2F20130524"
                                   "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=9"
                                   "&X-Amz-SignedHeaders=host&X-Amz-Signature=00",
                                   "AWSAccessKeyId=accessKey1&Signature=x&Expires=1",
                                   "AWSAccessKeyId=accessKey1&Signature=x&Expires=99999999999999999999999"]))
def test_arbitrary_requests_give_an_s3_error_or_a_result_never_a_crash(
        method: str, path: str, query: str, names: list[str], values: list[str], query_auth: str) -> None:
    req = AuthRequest(method, "/" + path, "&".join(filter(None, [query, query_auth])), list(zip(names, values)))
    try:
        result = authenticate(req, CONFIG, EXAMPLE_TIME)
    except S3Error:
        return
    assert result.scheme == "anonymous"  # nothing random can carry a valid signature


def test_undecodable_bytes_give_s3_errors_with_xml_safe_details() -> None:
    from lxml import etree
    now = EXAMPLE_TIME
    req = AuthRequest("GET", "/b/\udcff", "a=\udcff", [
        ("authorization", "AWS4-HMAC-SHA256 Credential=accessKey1/20130524/\udcff/s3/aws4_request, "
                          "SignedHeaders=host;x-amz-date;x-amz-meta-a, Signature=ab\udcfe\x01"),
        ("x-amz-date", "20130524T000000Z"), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"), ("x-amz-meta-a", "\udcfe")])
    err = expect_error("SignatureDoesNotMatch", req, now=now)
    for value in err.extra.values():
        etree.SubElement(etree.Element("Error"), "X").text = value  # lxml refuses non-XML text
    err = expect_error("InvalidAccessKeyId", AuthRequest("GET", "/", "", [("authorization", "AWS \udcff\x02:sig"),
                                                                          ("date", "Fri, 24 May 2013 00:00:00 GMT")]),
                       now=now)
    etree.SubElement(etree.Element("Error"), "X").text = err.extra["AWSAccessKeyId"]
