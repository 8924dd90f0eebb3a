"""The signed-request fuzzer (issue 17) against a real dmd + gateway, and the requests it found.

test_fuzz_signed_requests sends FUZZ_N (5,000) requests of tests/fuzz (every routed action,
near-valid and wild headers, query parameters, XML bodies, ranges, keys, raw-socket framing;
SigV4 mostly, also SigV2, presigned, unsigned, aws-chunked) and asserts that every one got a
proper answer: nothing >= 500 but 501 NotImplemented and 503, an S3 error document for every
error, no dropped connection, no hang, and both processes alive and serving afterwards.
The soak runs the same with -n 100000: `python -m tests.fuzz --endpoint URL -n 100000`.

The regression tests below are the inputs the fuzzer found that got a 500, a dropped
connection or an answer that was no S3 error document, each as a concrete request:

- a request httptools cannot parse (a control character in a header value, obs-fold, a space
  before the colon, two Content-Lengths, a bad chunk size, a line that is no header) got
  uvicorn's plain-text "Invalid HTTP request received."; now S3's 400 BadRequest document
  ("An error occurred when parsing the HTTP request."), also after a pipelined request, whose
  own answer comes first;
- an object uploaded by a browser form (PostObject) with a metadata name that is no HTTP token,
  or a metadata / Content-Type / Cache-Control value with a control character or a character
  past ISO-8859-1: its GET and HEAD answered 500 or, for the name, sent a header line the client
  refused (a dropped connection). Now those entries are left out; x-amz-missing-meta counts the
  metadata left out, as S3 does for metadata the REST API cannot carry;
- a browser form with a success_action_redirect holding such characters: the object was stored,
  then the answer was a 500; now the 303 Location is the URL percent-encoded.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Iterator

import httpx
import pytest

from tests.fuzz.requests import error_code_of, run_fuzz
from tests.integration.conftest import make_client
from tests.integration.test_conformance import signed_request
from tests.procs import Dmd, Gateway, start_dmd, start_gateway

FUZZ_N = int(os.environ.get("FUZZ_N", "5000"))
FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "17"))


@pytest.fixture(scope="module")
def fuzz_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dmd, Gateway]]:
    """A dmd and a gateway of this module's own: the fuzzer changes what it finds, and the
    test checks the very processes it fuzzed."""
    tmp = tmp_path_factory.mktemp("fuzz")
    dmd = start_dmd(tmp / "dmd")
    gateway = start_gateway(tmp / "gw", dmd)
    yield dmd, gateway
    gateway.stop()
    dmd.stop()


def test_fuzz_signed_requests(fuzz_servers: tuple[Dmd, Gateway]) -> None:
    dmd, gateway = fuzz_servers

    def alive() -> bool:
        return gateway.popen is not None and gateway.popen.poll() is None and \
            dmd.popen is not None and dmd.popen.poll() is None

    report = run_fuzz(gateway.url, FUZZ_N, FUZZ_SEED, alive=alive)
    print()
    print(report.summary())
    print(report.action_table())
    assert report.total == FUZZ_N
    assert report.server_errors == [], report.summary()
    assert report.dropped == 0, report.summary()
    assert report.failures == [], report.summary()
    # the fuzzed requests reached the handlers: most actions answered 2xx at least once
    served = {action for (action, cls), n in report.action_classes.items() if cls == "2xx" and n}
    assert {"GetObject", "PutObject", "CopyObject", "UploadPart", "CompleteMultipartUpload", "DeleteObjects",
            "ListObjectsV2", "ListObjectVersions", "PutObjectTagging", "PostObject"} <= served, served
    assert alive(), "a server process died"
    assert report.alive_after, report.alive_detail
    # and a client library still works against it
    s3 = make_client(gateway.url)
    s3.create_bucket(Bucket="fuzz-after")
    s3.put_object(Bucket="fuzz-after", Key="k", Body=b"after the fuzz")
    assert s3.get_object(Bucket="fuzz-after", Key="k")["Body"].read() == b"after the fuzz"


# ---------------------------------------------------------------- requests httptools cannot parse

def exchange(port: int, data: bytes, answers: int = 1, timeout: float = 20.0) -> list[tuple[int, bytes]]:
    """Send raw bytes on a fresh connection; the (status, body) of the first `answers` answers."""
    out: list[tuple[int, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while len(out) < answers and time.monotonic() < deadline:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            out.append((status, rest[:length]))
            buf = rest[length:]
    return out


UNPARSABLE = {
    "control-char-in-value": b"x-odd: a\x01b\r\n",
    "del-in-value": b"x-odd: a\x7fb\r\n",
    "obs-fold": b"x-folded: a\r\n continued\r\n",
    "space-before-colon": b"x-amz-meta-a : v\r\n",
    "garbage-line": b"this is not a header\r\n",
    "two-content-lengths": b"content-length: 1\r\ncontent-length: 2\r\n",
    "bad-chunk-size": b"transfer-encoding: chunked\r\n",
}


@pytest.mark.parametrize("case", sorted(UNPARSABLE))
def test_unparsable_request_gets_s3_bad_request(gateway: Gateway, case: str) -> None:
    body = b"zz\r\nabc\r\n0\r\n\r\n" if case == "bad-chunk-size" else b""
    head = b"PUT /somebucket/k HTTP/1.1\r\nhost: 127.0.0.1\r\n" + UNPARSABLE[case] + b"\r\n"
    answers = exchange(gateway.port, head + body)
    assert answers, "connection closed without an answer"
    status, doc = answers[0]
    assert status == 400, doc
    assert error_code_of(doc) == "BadRequest", doc
    assert b"An error occurred when parsing the HTTP request." in doc


def test_unparsable_request_after_a_pipelined_one(gateway: Gateway) -> None:
    """The first request gets its own answer, then the unparsable one its BadRequest."""
    first = b"GET /nosuchbucket-pipelined HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    second = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nx-odd: a\x01b\r\n\r\n"
    answers = exchange(gateway.port, first + second, answers=2)
    assert [status for status, _ in answers] == [404, 400], answers
    assert error_code_of(answers[0][1]) == "NoSuchBucket"
    assert error_code_of(answers[1][1]) == "BadRequest"


def test_client_gone_mid_body_is_no_internal_error(gateway: Gateway, bucket: str) -> None:
    """A client that closes before its body is complete (as after a BadRequest in its body): the
    request ends IncompleteBody in the log, not an InternalError with a traceback."""
    offset = len(gateway.log_text())
    url = f"http://127.0.0.1:{gateway.port}/{bucket}?versioning"
    headers = signed_request("PUT", url, payload="UNSIGNED-PAYLOAD")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = f"PUT /{bucket}?versioning HTTP/1.1\r\n{head}content-length: 1000\r\n\r\n<Versioning".encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(data)
        time.sleep(0.5)
    time.sleep(1.0)                                           # the gateway notices the close
    make_client(gateway.url).head_bucket(Bucket=bucket)       # and still serves
    assert "ClientDisconnect" not in gateway.log_text()[offset:]
    assert "request failed" not in gateway.log_text()[offset:]


def test_non_ascii_continuation_token_is_invalid_argument(gateway: Gateway, bucket: str) -> None:
    url = f"http://127.0.0.1:{gateway.port}/{bucket}?continuation-token=%C3%A9&list-type=2"
    r = httpx.get(url, headers=signed_request("GET", url), timeout=30)
    assert r.status_code == 400, r.text
    assert error_code_of(r.content) == "InvalidArgument"
    assert b"The continuation token provided is incorrect" in r.content


# ---------------------------------------------------------------- browser forms with odd fields

POST_FIELDS = [
    ("x-amz-meta-é", "ü", True),                # a name that is no HTTP token
    ("x-amz-meta-c d", "v", True),
    ("x-amz-meta-a", "日本", True),              # a value past ISO-8859-1
    ("x-amz-meta-b", "a\r\nb", True),            # a control character
    ("Content-Type", "日本", False),
    ("Content-Type", "a\x01b", False),
    ("Cache-Control", "x\ny", False),
    ("Content-Disposition", "日本", False),
    ("x-amz-website-redirect-location", "/日本", False),
    ("x-amz-website-redirect-location", "/a\r\nb", False),
]


@pytest.mark.parametrize("name,value,is_meta", POST_FIELDS)
def test_post_object_field_no_header_can_carry(gateway: Gateway, bucket: str, name: str, value: str,
                                               is_meta: bool) -> None:
    s3 = make_client(gateway.url)
    post = s3.generate_presigned_post(bucket, "form", Fields={name: value, "x-amz-meta-ok": "yes"},
                                      Conditions=[{name: value}, {"x-amz-meta-ok": "yes"}])
    r = httpx.post(post["url"], data=post["fields"], files={"file": ("f.txt", b"form data")}, timeout=30)
    assert r.status_code == 204, r.text
    for method in ("GET", "HEAD"):
        answer = s3.get_object(Bucket=bucket, Key="form") if method == "GET" else \
            s3.head_object(Bucket=bucket, Key="form")
        headers = answer["ResponseMetadata"]["HTTPHeaders"]
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert headers.get("x-amz-meta-ok") == "yes"           # the sendable entries are all there
        assert headers.get("x-amz-missing-meta") == ("1" if is_meta else None), headers
        if name == "Content-Type":
            assert headers["content-type"] == "application/octet-stream"
        if method == "GET":
            assert answer["Body"].read() == b"form data"


@pytest.mark.parametrize("redirect,location", [
    ("http://example.com/日本?a=b", "http://example.com/%E6%97%A5%E6%9C%AC?a=b&"),
    ("http://example.com/a\r\nb", "http://example.com/a%0D%0Ab?"),
    ("https://example.com/\x00", "https://example.com/%00?"),
])
def test_post_object_redirect_no_header_can_carry(gateway: Gateway, bucket: str, redirect: str,
                                                  location: str) -> None:
    s3 = make_client(gateway.url)
    post = s3.generate_presigned_post(bucket, "redirected", Fields={"success_action_redirect": redirect},
                                      Conditions=[{"success_action_redirect": redirect}])
    r = httpx.post(post["url"], data=post["fields"], files={"file": ("f.txt", b"x")}, timeout=30)
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(location), r.headers["location"]
    assert f"bucket={bucket}&key=redirected" in r.headers["location"]


def test_error_document_checker() -> None:
    """The fuzzer's checker reads an S3 error document (character references included, as S3
    writes them for what a request held) and refuses anything else."""
    assert error_code_of(b'<?xml version="1.0"?><Error><Code>X</Code></Error>') == "X"
    assert error_code_of(b"<Error><Code>X</Code><ArgumentValue>a&#x19;b</ArgumentValue></Error>") == "X"
    assert error_code_of(b"Invalid HTTP request received.") is None
    assert error_code_of(b"<Other><Code>X</Code></Other>") is None
