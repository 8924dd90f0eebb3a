"""Hostile input (issue 17): each request here used to get a 500 or a dropped connection;
now it gets AWS's answer. Real processes (tests/procs.py), raw signed requests
(tests/integration/test_conformance.py's helpers) and raw sockets.

- a NUL (or any non-printable character) in an id: ?versionId= / ?version-id-marker= and
  x-amz-copy-source's ?versionId= answer 400 InvalidArgument, ?uploadId= 404 NoSuchUpload;
  the error document stays well-formed XML (a value no XML can carry is left out);
- a NUL in a listing's prefix, delimiter or markers: a normal (empty) listing, as for any
  prefix no key has; the value is given back as the character reference S3 writes;
- a response-* override a header cannot carry: 400 InvalidArgument, as S3 ("Header value
  cannot be represented using ISO-8859-1."); CR, LF, NUL likewise: no header injection;
- a Range bound of thousands of digits: the range S3 serves (416, or the whole object);
- a request head past the limits: 400 RequestHeaderSectionTooLarge (S3: 8 KB of headers),
  never read whole, RSS unchanged; a head or a body that stalls: 400 RequestTimeout.
"""
from __future__ import annotations

import re
import socket
import time
import uuid
from typing import Iterator

import pytest
from lxml import etree

from tests.integration.conftest import make_client
from tests.integration.test_conformance import signed, signed_head_only
from tests.procs import Gateway, start_gateway

BODY_TIMEOUT_MS = 1000     # the limited gateway's requestBodyTimeoutMs (S3_REQUEST_BODY_TIMEOUT_MS)
MAX_HEADER_BYTES = 8192    # S3's header section limit, the default


def error_of(response) -> tuple[int, str | None]:
    """(status, Code) of an error document, which must be well-formed XML."""
    doc = etree.fromstring(response.content)
    assert doc.tag == "Error", response.text
    return response.status_code, doc.findtext("Code")


@pytest.fixture
def obj(s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    return bucket


# ---------------------------------------------------------------- NUL in ids

VERSION_ID_REQUESTS = [
    ("GET", "/{b}/k?versionId=%00"),
    ("GET", "/{b}/k?versionId=abc%00def"),
    ("DELETE", "/{b}/k?versionId=%00"),
    ("GET", "/{b}/k?tagging&versionId=%00"),
    ("PUT", "/{b}/k?tagging&versionId=%00"),
    ("GET", "/{b}/k?versionId=%C3%A9"),                 # non-ASCII: no version id either
    ("GET", "/{b}?versions&key-marker=k&version-id-marker=%00"),
]


@pytest.mark.parametrize("method,path", VERSION_ID_REQUESTS)
def test_nul_in_version_id_is_invalid_argument(gateway, obj, method, path):
    body = b"<Tagging><TagSet/></Tagging>" if "tagging" in path and method == "PUT" else b""
    r = signed(gateway.port, method, path.format(b=obj), body=body)
    assert error_of(r) == (400, "InvalidArgument"), r.text
    assert "Invalid version id specified" in r.text


def test_nul_in_version_id_of_head_and_attributes(gateway, obj):
    r = signed(gateway.port, "HEAD", f"/{obj}/k?versionId=%00")
    assert r.status_code == 400
    r = signed(gateway.port, "GET", f"/{obj}/k?attributes&versionId=%00",
               headers={"x-amz-object-attributes": "ETag"})
    assert error_of(r) == (400, "InvalidArgument"), r.text


UPLOAD_ID_REQUESTS = [
    ("GET", "/{b}/k?uploadId=%00"),                      # ListParts
    ("GET", "/{b}/k?uploadId=a%00b"),
    ("DELETE", "/{b}/k?uploadId=a%00b"),                 # AbortMultipartUpload
    ("PUT", "/{b}/k?partNumber=1&uploadId=a%00b"),       # UploadPart
    ("POST", "/{b}/k?uploadId=a%00b"),                   # CompleteMultipartUpload
]


@pytest.mark.parametrize("method,path", UPLOAD_ID_REQUESTS)
def test_nul_in_upload_id_is_no_such_upload(gateway, obj, method, path):
    body = {"PUT": b"part", "POST": b"<CompleteMultipartUpload/>"}.get(method, b"")
    r = signed(gateway.port, method, path.format(b=obj), body=body)
    assert error_of(r) == (404, "NoSuchUpload"), r.text


@pytest.mark.parametrize("source", ["/{b}/k?versionId=%00", "{b}/k?versionId=a%00", "/{b}/k?versionId=%01"])
def test_nul_in_copy_source_version_id_is_invalid_argument(gateway, obj, source):
    r = signed(gateway.port, "PUT", f"/{obj}/copy", headers={"x-amz-copy-source": source.format(b=obj)})
    assert error_of(r) == (400, "InvalidArgument"), r.text
    assert "Invalid version id specified" in r.text


def test_a_request_for_a_missing_bucket_learns_that_first(gateway):
    r = signed(gateway.port, "GET", f"/missing-{uuid.uuid4().hex[:12]}/k?versionId=%00")
    assert error_of(r) == (404, "NoSuchBucket")


# ---------------------------------------------------------------- NUL in listing parameters

LISTINGS = [
    ("uploads&prefix=%00", "ListMultipartUploadsResult"),
    ("uploads&delimiter=%00", "ListMultipartUploadsResult"),
    ("uploads&key-marker=%00", "ListMultipartUploadsResult"),
    ("uploads&key-marker=k&upload-id-marker=%00", "ListMultipartUploadsResult"),
    ("prefix=%00", "ListBucketResult"),
    ("delimiter=%00", "ListBucketResult"),
    ("marker=%00", "ListBucketResult"),
    ("list-type=2&prefix=%00", "ListBucketResult"),
    ("list-type=2&start-after=%00", "ListBucketResult"),
    ("versions&prefix=%00", "ListVersionsResult"),
    ("versions&delimiter=%00", "ListVersionsResult"),
    ("versions&key-marker=%00", "ListVersionsResult"),
]


@pytest.mark.parametrize("query,root_tag", LISTINGS)
def test_nul_in_listing_parameters_is_a_normal_listing(gateway, s3, obj, query, root_tag):
    s3.create_multipart_upload(Bucket=obj, Key="k")
    r = signed(gateway.port, "GET", f"/{obj}?{query}")
    assert r.status_code == 200, r.text
    assert f"<{root_tag} " in r.text
    if "prefix=%00" in query:   # no key starts with a NUL: nothing listed
        assert "<Key>" not in r.text and "<Upload>" not in r.text
        assert "<Prefix>&#x0;</Prefix>" in r.text     # given back as S3 writes it
    if "encoding-type" not in query and "delimiter=%00" in query:
        assert "<CommonPrefixes>" not in r.text


def test_nul_after_a_key_in_a_prefix_lists_no_internal_version_key(gateway, s3, bucket):
    """`key\\0<version id>` is the metadata key of a version: a prefix reaching into it lists nothing."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2")
    for query in ("versions&prefix=k%00", "prefix=k%00", "list-type=2&prefix=k%00", "versions&key-marker=k%00",
                  "uploads&prefix=k%00"):
        r = signed(gateway.port, "GET", f"/{bucket}?{query}")
        assert r.status_code == 200, (query, r.text)
        listed = re.findall(r"<Key>([^<]*)</Key>", r.text)
        assert all(key == "k" for key in listed), (query, r.text)
        assert "&#x0;" not in "".join(listed)


# ---------------------------------------------------------------- response-* overrides

@pytest.mark.parametrize("param", ["response-content-type", "response-content-disposition",
                                   "response-cache-control", "response-content-language",
                                   "response-content-encoding", "response-expires"])
def test_override_a_header_cannot_carry_is_invalid_argument(gateway, obj, param):
    r = signed(gateway.port, "GET", f"/{obj}/k?{param}=%E2%82%AC")       # U+20AC, not in ISO-8859-1
    assert error_of(r) == (400, "InvalidArgument"), r.text
    doc = etree.fromstring(r.content)
    assert doc.findtext("Message") == "Header value cannot be represented using ISO-8859-1."
    assert doc.findtext("ArgumentName") == param


@pytest.mark.parametrize("value", ["a%0D%0AX-Injected%3A%201", "a%0AX-Injected%3A%201", "a%0DX-Injected%3A%201",
                                   "%00", "a%7F"])
def test_override_with_control_characters_cannot_inject_a_header(gateway, obj, value):
    for method in ("GET", "HEAD"):
        r = signed(gateway.port, method, f"/{obj}/k?response-content-disposition={value}")
        assert r.status_code == 400, (method, r.text)
        assert "x-injected" not in r.headers
        if method == "GET":
            assert error_of(r) == (400, "InvalidArgument")


def test_latin_1_override_is_served(gateway, obj):
    r = signed(gateway.port, "GET", f"/{obj}/k?response-content-disposition=attachment%3B%20filename%3D%C3%A9.txt")
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == "attachment; filename=\u00e9.txt"
    assert r.content == b"hello"


# ---------------------------------------------------------------- ranges

DIGITS = 5000    # past int()'s 4300-digit limit; two bounds together stay under the 8 KB header limit


@pytest.mark.parametrize("value,expected", [
    ("bytes=" + "9" * DIGITS + "-", (416, None)),                    # starts past the end
    ("bytes=" + "9" * DIGITS + "-" + "9" * 2000, (200, b"hello")),    # last < first: ignored
    ("bytes=" + "9" * 3000 + "-" + "9" * 3001, (416, None)),
    ("bytes=0-" + "9" * DIGITS, (206, b"hello")),                     # to the end
    ("bytes=-" + "9" * DIGITS, (206, b"hello")),                      # a suffix longer than the object
    ("bytes=" + "0" * 3000 + "1-" + "0" * 3000 + "3", (206, b"ell")),   # leading zeros
    ("bytes=" + "0" * DIGITS + "-", (206, b"hello")),
    ("bytes=" + "2" * 3000 + "-" + "1" * 2999, (200, b"hello")),
    ("bytes=" + "2" * 3000 + "-" + "1" * 3000, (200, b"hello")),
])
def test_range_with_thousands_of_digits(gateway, obj, value, expected):
    r = signed(gateway.port, "GET", f"/{obj}/k", headers={"Range": value})
    status, body = expected
    assert r.status_code == status, r.text
    if status == 416:
        assert error_of(r) == (416, "InvalidRange")
        assert r.headers["content-range"] == "bytes */5"
    else:
        assert r.content == body


# ---------------------------------------------------------------- the connection's limits

@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A mem gateway (one worker: its RSS is the server's) with a 1 s body timeout."""
    g = start_gateway(tmp_path_factory.mktemp("gw-limited"), None,
                      env={"S3_REQUEST_BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS)})
    yield g
    g.stop()


@pytest.fixture(scope="module")
def limited_file_gateway(tmp_path_factory: pytest.TempPathFactory, dmd) -> Iterator[Gateway]:
    """The same over the dmd (file backend): a body stalls in the middle of a data-store write."""
    g = start_gateway(tmp_path_factory.mktemp("gw-limited-file"), dmd,
                      env={"S3_REQUEST_BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS)})
    yield g
    g.stop()


@pytest.fixture
def limited_bucket(limited_gateway: Gateway) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    make_client(limited_gateway.url).create_bucket(Bucket=name)
    return name


def _read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_header_section_past_the_limit_is_refused_without_being_held(limited_gateway, limited_bucket):
    """Not held, shown by behaviour: with twice the limit sent and the header still unfinished, the
    gateway has already answered and closes the connection (after a short linger during which what
    arrives is dropped); a gateway that read the header whole would still be waiting for its end."""
    s3 = make_client(limited_gateway.url)
    s3.put_object(Bucket=limited_bucket, Key="k", Body=b"hello")
    sock = socket.create_connection(("127.0.0.1", limited_gateway.port), timeout=10)
    sock.sendall(f"GET /{limited_bucket}/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".encode())
    sock.sendall(b"a" * 2 * MAX_HEADER_BYTES)     # one header, never ended
    sock.settimeout(15)
    answer, closed = b"", False
    try:
        while chunk := sock.recv(65536):
            answer += chunk
        closed = True
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    sock.close()
    assert answer, "no answer while the header was unfinished"
    assert closed, "the connection stayed open"
    if answer:   # (always, since the test above)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"<Code>RequestHeaderSectionTooLarge</Code>" in answer
        assert f"<MaxSizeAllowed>{MAX_HEADER_BYTES}</MaxSizeAllowed>".encode() in answer
    assert s3.get_object(Bucket=limited_bucket, Key="k")["Body"].read() == b"hello"


def test_header_section_below_the_limit_is_served(limited_gateway, limited_bucket):
    make_client(limited_gateway.url).put_object(Bucket=limited_bucket, Key="k", Body=b"hello")
    r = signed(limited_gateway.port, "GET", f"/{limited_bucket}/k", headers={"x-filler": "f" * 6000})
    assert r.status_code == 200 and r.content == b"hello"
    r = signed(limited_gateway.port, "GET", f"/{limited_bucket}/k", headers={"x-filler": "f" * 9000})
    assert error_of(r) == (400, "RequestHeaderSectionTooLarge")
    assert r.headers["connection"] == "close"


def test_request_line_past_the_limit_is_refused(limited_gateway, limited_bucket):
    sock = socket.create_connection(("127.0.0.1", limited_gateway.port), timeout=10)
    sock.sendall(f"GET /{limited_bucket}/k?junk={'j' * 20000} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    answer = _read_until_closed(sock, 5)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"<Code>InvalidURI</Code>" in answer


@pytest.mark.parametrize("backend", ["mem", "file"])
def test_stalled_body_is_request_timeout_and_others_are_served(request, backend):
    gateway = request.getfixturevalue("limited_gateway" if backend == "mem" else "limited_file_gateway")
    port = gateway.port
    s3 = make_client(gateway.url)
    limited_bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=limited_bucket)
    head = signed_head_only(port, "PUT", f"/{limited_bucket}/stalled", {"Content-Length": "1000"})
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    sock.sendall(head + b"x" * 10)           # 10 of the 1000 bytes, then silence
    # The worker serves others meanwhile.
    s3.put_object(Bucket=limited_bucket, Key="other", Body=b"fine")
    assert s3.get_object(Bucket=limited_bucket, Key="other")["Body"].read() == b"fine"
    answer = _read_until_closed(sock, 10)    # the server closes after answering
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"<Code>RequestTimeout</Code>" in answer
    assert b"connection: close" in answer.lower()
    assert elapsed >= BODY_TIMEOUT_MS / 1000 * 0.9      # the timeout fired, not an early close
    assert "stalled" not in [o["Key"] for o in s3.list_objects_v2(Bucket=limited_bucket).get("Contents", [])]


def test_a_body_that_keeps_coming_is_not_timed_out(limited_gateway, limited_bucket):
    """The timeout is of silence, not of the whole body: 4 pieces, 0.5 s apart, take 1.5 s > 1 s."""
    port = limited_gateway.port
    head = signed_head_only(port, "PUT", f"/{limited_bucket}/slow", {"Content-Length": "40"})
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    for _ in range(4):
        sock.sendall(b"s" * 10)
        time.sleep(BODY_TIMEOUT_MS / 1000 / 2)
    sock.settimeout(10)
    answer = sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    body = make_client(limited_gateway.url).get_object(Bucket=limited_bucket, Key="slow")["Body"].read()
    assert body == b"s" * 40


def test_stalled_request_head_is_request_timeout(limited_gateway, limited_bucket):
    sock = socket.create_connection(("127.0.0.1", limited_gateway.port), timeout=10)
    sock.sendall(f"GET /{limited_bucket}/k HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
    answer = _read_until_closed(sock, 10)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"<Code>RequestTimeout</Code>" in answer


def test_keep_alive_connection_serves_several_requests(limited_gateway, limited_bucket):
    """The head counting restarts with each request of a connection (and pipelined ones)."""
    make_client(limited_gateway.url).put_object(Bucket=limited_bucket, Key="k", Body=b"hello")
    sock = socket.create_connection(("127.0.0.1", limited_gateway.port), timeout=10)
    one = signed_head_only(limited_gateway.port, "GET", f"/{limited_bucket}/k", {"X-Filler": "f" * 5000})
    sock.sendall(one * 3)   # 3 x 5 KB heads in one write: each under the limit
    sock.settimeout(10)
    data = b""
    while data.count(b"hello") < 3:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert data.count(b"HTTP/1.1 200 ") == 3, data[:500]
