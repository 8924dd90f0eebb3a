"""Hostile input (issue 17), the pieces without processes: range bounds of any length,
response-* override values, ids of the query, error documents of unrepresentable values,
the HTTP limits' configuration and the body's idle timeout."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from lxml import etree

from gateway.api.common import parse_range, response_override
from gateway.app import body_timeout_receive, check_query_ids, error_response
from gateway.limits import MAX_REQUEST_HEADER_BYTES, http_limits
from gateway.server import RequestRecord
from shared.config import DEFAULT_REQUEST_BODY_TIMEOUT_MS, Config, ConfigError, load_config
from shared.errors import S3Error

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("header,size,expected", [
    ("bytes=" + "9" * 5000 + "-", 5, "416"),
    ("bytes=0-" + "9" * 5000, 5, (0, 4)),
    ("bytes=-" + "9" * 5000, 5, (0, 4)),
    ("bytes=" + "0" * 5000 + "1-" + "0" * 5000 + "3", 5, (1, 3)),
    ("bytes=" + "2" * 5000 + "-" + "1" * 5000, 5, None),        # last < first: ignored
    ("bytes=" + "1" * 5000 + "-" + "2" * 5000, 5, "416"),
    ("bytes=" + "0" * 5000 + "-0", 5, (0, 0)),
    ("bytes=-" + "0" * 5000, 5, "416"),                           # a zero suffix
    ("bytes=\u0661-\u0662", 5, None),                            # Arabic-Indic digits are no digits
    ("bytes=1-3", 5, (1, 3)),
])
def test_parse_range_takes_bounds_of_any_length(header, size, expected):
    if expected == "416":
        with pytest.raises(S3Error) as exc:
            parse_range(header, size)
        assert exc.value.code == "InvalidRange"
    else:
        assert parse_range(header, size) == expected


def test_response_override_refuses_what_a_header_cannot_carry():
    assert response_override("response-content-type", "text/plain; charset=\u00e9") == "text/plain; charset=\u00e9"
    assert response_override("response-expires", "a\tb") == "a\tb"
    for value in ("\u20ac", "a\r\nX-Injected: 1", "a\n", "\x00", "a\x7f"):
        with pytest.raises(S3Error) as exc:
            response_override("response-content-disposition", value)
        assert exc.value.code == "InvalidArgument"
        assert exc.value.extra["ArgumentName"] == "response-content-disposition"


@pytest.mark.parametrize("query,code", [
    ({"versionId": "\x00"}, "InvalidArgument"),
    ({"versionId": "abc\x00"}, "InvalidArgument"),
    ({"versionId": "\u00e9"}, "InvalidArgument"),
    ({"version-id-marker": "\x01"}, "InvalidArgument"),
    ({"uploadId": "a\x00b"}, "NoSuchUpload"),
    ({"uploadId": "\n"}, "NoSuchUpload"),
])
def test_query_ids_that_cannot_be_ids(query, code):
    with pytest.raises(S3Error) as exc:
        check_query_ids(query)
    assert exc.value.code == code


def test_query_ids_that_may_be_ids_go_on():
    check_query_ids({"versionId": "null", "uploadId": "0123abcdef", "version-id-marker": "39383837363534"})
    check_query_ids({"prefix": "\x00", "upload-id-marker": "\x00"})   # not ids: the listing answers


def test_error_document_leaves_out_a_value_no_xml_can_carry():
    err = S3Error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId", ArgumentValue="a\x00b")
    response = error_response(err, RequestRecord("REQ", "GET", "/b/k"))
    doc = etree.fromstring(response.body)        # well-formed
    assert doc.findtext("ArgumentName") == "versionId"
    assert doc.find("ArgumentValue") is None
    err = S3Error("InvalidArgument", ArgumentName="x", ArgumentValue="a\r\nb")
    doc = etree.fromstring(error_response(err, RequestRecord("REQ", "GET", "/b/k")).body)
    assert doc.findtext("ArgumentValue") == "a\r\nb"


def _config(tmp_path, overrides: dict, env: dict | None = None) -> Config:
    """load_config over the shipped files, with config.json fields replaced."""
    doc = json.loads((REPO / "config.json").read_text())
    doc.update(overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return load_config({"S3_CONFIG_FILE": str(path), "S3_LOCATION_FILE": str(REPO / "locationConfig.json"),
                        "S3AUTH_CONFIG": str(REPO / "conf" / "authdata.json"), **(env or {})})


def test_http_limits_from_config_json_and_env(tmp_path):
    limits = http_limits(_config(tmp_path, {"requestBodyTimeoutMs": 1500, "maxRequestHeaderBytes": 16384}))
    assert (limits.request_body_timeout_ms, limits.max_header_bytes) == (1500, 16384)
    overridden = _config(tmp_path, {"requestBodyTimeoutMs": 1500}, {"S3_REQUEST_BODY_TIMEOUT_MS": "250"})
    assert http_limits(overridden).request_body_timeout_s == 0.25
    defaults = http_limits(_config(tmp_path, {}))
    assert (defaults.request_body_timeout_ms, defaults.max_header_bytes) == (DEFAULT_REQUEST_BODY_TIMEOUT_MS,
                                                                            MAX_REQUEST_HEADER_BYTES)
    for bad in (0, -1, "20", True, 1.5):
        with pytest.raises(ConfigError, match="requestBodyTimeoutMs"):
            _config(tmp_path, {"requestBodyTimeoutMs": bad})
    with pytest.raises(ConfigError, match="S3_REQUEST_BODY_TIMEOUT_MS"):
        _config(tmp_path, {}, {"S3_REQUEST_BODY_TIMEOUT_MS": "soon"})


def test_body_timeout_is_of_silence_and_ends_with_the_body():
    async def scenario() -> None:
        messages = asyncio.Queue()
        receive = body_timeout_receive(messages.get, 0.05)
        messages.put_nowait({"type": "http.request", "body": b"a", "more_body": True})
        assert (await receive())["body"] == b"a"
        with pytest.raises(S3Error) as exc:      # silence while more body is due
            await receive()
        assert exc.value.code == "RequestTimeout" and exc.value.status == 400
        assert exc.value.headers == {"connection": "close"}

        receive = body_timeout_receive(messages.get, 0.05)
        messages.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        await receive()
        waiting = asyncio.ensure_future(receive())    # the body is complete: a disconnect may take long
        await asyncio.sleep(0.15)
        assert not waiting.done()
        messages.put_nowait({"type": "http.disconnect"})
        assert (await waiting)["type"] == "http.disconnect"

    asyncio.run(scenario())


def test_numbers_of_thousands_of_digits_are_out_of_range_not_a_crash():
    from gateway.api.multipart import _copy_range, _parse_complete
    from gateway.api.parts import MAX_PART_NUMBER
    huge = "9" * 5000
    for header in (f"bytes=0-{huge}", f"bytes={huge}-{huge}", f"bytes={huge}-1"):
        with pytest.raises(S3Error) as exc:
            _copy_range(header, 10)
        assert exc.value.code == "InvalidArgument"
    assert _copy_range("bytes=" + "0" * 5000 + "2-3", 10) == (2, 3)
    body = (f"<CompleteMultipartUpload><Part><PartNumber>{huge}</PartNumber><ETag>e</ETag></Part>"
            "</CompleteMultipartUpload>").encode()
    assert _parse_complete(body, None)[0][0] > MAX_PART_NUMBER
