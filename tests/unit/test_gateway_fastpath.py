"""The per-request shortcuts of the gateway (issue 18) answer exactly what the long way did.

- HeadCoalescingTransport (gateway/server.py): the response head goes out with the first body
  write, never later than the end of the response, a close or the current loop step;
- _add_default_headers: the setdefault of x-amz-request-id / x-amz-id-2 / server;
- AuthRequest's header index: stays right when a request's header list is grown or replaced;
- amz_timestamp: strftime("%Y%m%dT%H%M%SZ") to the character;
- http_date (cached), check_conditions without conditions, website_bucket (cached).
"""
from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
from starlette.responses import Response

from gateway.api.common import check_conditions, http_date
from gateway.auth.request import AuthRequest, amz_timestamp
from gateway.models import parse_iso
from gateway.server import COALESCE_MAX_BYTES, HeadCoalescingTransport, _add_default_headers
from gateway.website import website_bucket
from shared.errors import S3Error


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:  # type: ignore[no-untyped-def]
        self.writes.append(bytes(data))   # a write after close shows up here too

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def make(loop: asyncio.AbstractEventLoop) -> tuple[FakeTransport, SimpleNamespace, HeadCoalescingTransport, list]:
    real = FakeTransport()
    completed: list[int] = []
    cycle = SimpleNamespace(response_started=False, on_response=lambda: completed.append(len(real.writes)))
    return real, cycle, HeadCoalescingTransport(real, cycle, loop), completed


def test_head_and_small_body_go_out_in_one_write() -> None:
    loop = asyncio.new_event_loop()
    try:
        real, cycle, t, _ = make(loop)
        cycle.response_started = True
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        assert real.writes == []          # held
        t.write(memoryview(b"body"))      # any bytes-like body
        assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        t.write(b"more")                  # later writes pass straight through
        assert real.writes[-1] == b"more" and len(real.writes) == 2
        loop.run_until_complete(asyncio.sleep(0))   # the safety flush finds nothing held
        assert len(real.writes) == 2
    finally:
        loop.close()


def test_a_head_alone_is_sent_at_the_end_of_the_response_or_of_the_loop_step() -> None:
    loop = asyncio.new_event_loop()
    try:
        real, cycle, t, completed = make(loop)
        cycle.response_started = True
        t.write(b"HEAD-ANSWER")
        t.response_complete()             # HEAD: no body write, the cycle completes
        assert real.writes == [b"HEAD-ANSWER"] and completed == [1]   # sent before on_response ran
        real, cycle, t, _ = make(loop)
        cycle.response_started = True
        t.write(b"STREAM-HEAD")           # a streaming body whose first chunk is not there yet
        loop.run_until_complete(asyncio.sleep(0))
        assert real.writes == [b"STREAM-HEAD"]
    finally:
        loop.close()


def test_close_sends_the_held_head_first_and_nothing_is_written_after_a_close() -> None:
    loop = asyncio.new_event_loop()
    try:
        real, cycle, t, _ = make(loop)
        cycle.response_started = True
        t.write(b"HEAD")
        t.close()
        assert real.writes == [b"HEAD"] and real.closed
        real, cycle, t, _ = make(loop)
        cycle.response_started = True
        t.write(b"HEAD")
        real.close()                      # the connection went away meanwhile
        loop.run_until_complete(asyncio.sleep(0))
        assert real.writes == []
    finally:
        loop.close()


def test_writes_before_the_response_and_big_bodies_are_not_joined() -> None:
    loop = asyncio.new_event_loop()
    try:
        real, cycle, t, _ = make(loop)
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")   # before the response starts: straight out
        assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        cycle.response_started = True
        t.write(b"HEAD")
        big = b"x" * (COALESCE_MAX_BYTES + 1)
        t.write(big)                      # never copied into one buffer with the head
        assert real.writes[1:] == [b"HEAD", big]
        assert t.is_closing() is False and t.get_extra_info("peername") == "extra:peername"
    finally:
        loop.close()


def test_default_headers_are_added_only_when_missing() -> None:
    response = Response(b"abc", headers={"server": "custom", "x-amz-id-2": "given"})
    content_length = _add_default_headers(response.raw_headers, "RID")
    assert content_length == "3"
    assert response.headers.getlist("server") == ["custom"] and response.headers.getlist("x-amz-id-2") == ["given"]
    assert response.headers.getlist("x-amz-request-id") == ["RID"]
    bare = Response(status_code=204)
    assert _add_default_headers(bare.raw_headers, "R2") is None
    assert [(k, v) for k, v in bare.raw_headers if k != b"content-length"][-3:] == [
        (b"x-amz-request-id", b"R2"), (b"x-amz-id-2", b"R2"), (b"server", b"pys3")]


def test_header_index_follows_a_grown_or_replaced_header_list() -> None:
    req = AuthRequest("GET", "/", "", [("host", "a"), ("x-amz-meta-x", "1"), ("x-amz-meta-x", "2")])
    assert req.header("Host") == "a" and req.header_all("x-amz-meta-x") == ["1", "2"]
    assert req.header("authorization") is None
    req.headers.append(("authorization", "AWS k:s"))
    assert req.header("authorization") == "AWS k:s"
    req.headers = [("host", "b")]
    assert req.header("host") == "b" and req.header_all("x-amz-meta-x") == []
    req.header_all("host").append("mutated")   # a copy: the index is not the caller's to change
    assert req.header_all("host") == ["b"]


def test_amz_timestamp_is_strftime() -> None:
    rng = random.Random(18)
    moments = [datetime(1, 1, 1, tzinfo=timezone.utc), datetime(999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
               datetime(1000, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59)]
    for _ in range(500):
        moments.append(datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                                rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999),
                                tzinfo=timezone(timedelta(minutes=rng.randint(-900, 900)))))
    for moment in moments:
        assert amz_timestamp(moment) == moment.strftime("%Y%m%dT%H%M%SZ")


def test_http_date_and_conditions() -> None:
    for iso in ("2024-05-01T12:34:56.789Z", "1999-12-31T23:59:59.000Z", "2024-05-01T12:34:56.789+02:00"):
        expected = format_datetime(parse_iso(iso).astimezone(timezone.utc), usegmt=True)
        assert http_date(iso) == expected and http_date(iso) == expected   # cached: the same answer
    check_conditions({}, "etag", "2024-05-01T12:34:56.789Z")   # no condition: nothing to refuse
    with pytest.raises(S3Error) as exc:
        check_conditions({"if-modified-since": "Wed, 01 May 2024 12:34:57 GMT"}, "etag", "2024-05-01T12:34:56.789Z")
    assert exc.value.code == "NotModified"
    with pytest.raises(S3Error) as exc:
        check_conditions({"if-unmodified-since": "Wed, 01 May 2024 12:34:55 GMT"}, "e", "2024-05-01T12:34:56.789Z")
    assert exc.value.code == "PreconditionFailed"


def test_website_bucket_answers_per_host() -> None:
    config = SimpleNamespace(website_endpoints=("s3-website.localhost",))
    for _ in range(2):   # the second answers come from the cache
        assert website_bucket("site.s3-website.localhost:8000", config) == "site"
        assert website_bucket("SITE.S3-Website.Localhost.", config) == "site"
        assert website_bucket("127.0.0.1:8000", config) is None
        assert website_bucket("s3-website.localhost", config) is None
    assert website_bucket("site.s3-website.localhost", SimpleNamespace(website_endpoints=("other.test",))) is None
