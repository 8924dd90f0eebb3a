"""ListObjects (v1) and ListObjectsV2 through the S3 API, against the real gateway.

Parameters and pagination (markers, tokens, max-keys, encoding-type), a property
test of paginated listings against a reference model (mem backend, through boto3),
and the delimiter skip-ahead of a 2000-key bucket through the real dmd.
"""
from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.integration.conftest import make_client
from tests.integration.test_conformance import signed, xml_code

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
LISTING_HARD_LIMIT = 1000
FOLDERS, KEYS_PER_FOLDER = 10, 200


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def keys_of(page: dict[str, Any]) -> list[str]:
    return [o["Key"] for o in page.get("Contents", [])]


def prefixes_of(page: dict[str, Any]) -> list[str]:
    return [p["Prefix"] for p in page.get("CommonPrefixes", [])]


def put_keys(s3, bucket: str, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")


def raw_list(gateway, bucket: str, query: str) -> etree._Element:
    """A listing as the XML the gateway sends (boto3 always asks for encoding-type=url and decodes)."""
    r = signed(gateway.port, "GET", f"/{bucket}?{query}")
    assert r.status_code == 200, r.text
    return etree.fromstring(r.content)


def texts(doc: etree._Element, path: str) -> list[str]:
    return [el.text or "" for el in doc.iterfind("/".join(NS + part for part in path.split("/")))]


def find(doc: etree._Element, tag: str) -> str | None:
    return doc.findtext(NS + tag)


# ---------------------------------------------------------------- reference model

def model_listing(keys: list[str], prefix: str, delimiter: str | None) -> list[tuple[str, str]]:
    """What a complete listing holds, in order: ("key", k) or ("prefix", cp)."""
    items: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key in sorted(keys):   # code point order == UTF-8 byte order
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if cp not in seen:
                seen.add(cp)
                items.append(("prefix", cp))
        else:
            items.append(("key", key))
    return items


def page_items(page: dict[str, Any]) -> list[tuple[str, str]]:
    items = [("key", k) for k in keys_of(page)] + [("prefix", p) for p in prefixes_of(page)]
    return sorted(items, key=lambda item: item[1])


def paginate_v1(s3, bucket: str, prefix: str, delimiter: str | None, max_keys: int) -> list[list[tuple[str, str]]]:
    pages, marker = [], ""
    for _ in range(200):
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys, "Marker": marker}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        page = s3.list_objects(**kwargs)
        pages.append(page_items(page))
        assert len(pages[-1]) <= max_keys
        if not page["IsTruncated"]:
            assert "NextMarker" not in page
            return pages
        # NextMarker only with a delimiter; without one the client resumes after the last key.
        assert ("NextMarker" in page) == bool(delimiter)
        marker = page.get("NextMarker") or keys_of(page)[-1]
        assert marker == pages[-1][-1][1]
    raise AssertionError("listing never ended")


def paginate_v2(s3, bucket: str, prefix: str, delimiter: str | None, max_keys: int) -> list[list[tuple[str, str]]]:
    pages, token = [], None
    for _ in range(200):
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        pages.append(page_items(page))
        assert page["KeyCount"] == len(pages[-1]) <= max_keys
        if token:
            assert page["ContinuationToken"] == token
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return pages
        token = page["NextContinuationToken"]
    raise AssertionError("listing never ended")


# ---------------------------------------------------------------- v1

def test_v1_marker_pages_without_delimiter_have_no_next_marker(s3, bucket):
    put_keys(s3, bucket, ["a", "b", "c", "d", "e"])
    page = s3.list_objects(Bucket=bucket, MaxKeys=2)
    assert (keys_of(page), page["IsTruncated"], page["MaxKeys"]) == (["a", "b"], True, 2)
    assert "NextMarker" not in page
    page = s3.list_objects(Bucket=bucket, MaxKeys=2, Marker="b")
    assert (keys_of(page), page["IsTruncated"], page["Marker"]) == (["c", "d"], True, "b")
    page = s3.list_objects(Bucket=bucket, MaxKeys=2, Marker="d")
    assert (keys_of(page), page["IsTruncated"]) == (["e"], False)
    # A marker between keys, and after every key.
    assert keys_of(s3.list_objects(Bucket=bucket, Marker="bb")) == ["c", "d", "e"]
    page = s3.list_objects(Bucket=bucket, Marker="z")
    assert (keys_of(page), page["IsTruncated"]) == ([], False)
    # Exactly max-keys keys left: not truncated (the look-ahead finds nothing more).
    assert s3.list_objects(Bucket=bucket, MaxKeys=3, Marker="b")["IsTruncated"] is False


def test_v1_next_marker_comes_with_a_delimiter_only_when_truncated(s3, bucket):
    put_keys(s3, bucket, ["a/1", "a/2", "b", "c/1", "c/2", "d"])
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert (prefixes_of(page), keys_of(page), page["IsTruncated"], page["NextMarker"]) == (["a/"], ["b"], True, "b")
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2, Marker="b")
    assert (prefixes_of(page), keys_of(page), page["IsTruncated"]) == (["c/"], ["d"], False)
    assert "NextMarker" not in page
    # A page ending on a common prefix resumes after the whole folder.
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert (prefixes_of(page), page["NextMarker"]) == (["a/"], "a/")
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1, Marker="a/")
    assert (keys_of(page), prefixes_of(page)) == (["b"], [])
    # A marker inside a folder skips the rest of that folder.
    page = s3.list_objects(Bucket=bucket, Delimiter="/", Marker="c/1")
    assert (prefixes_of(page), keys_of(page)) == ([], ["d"])


@pytest.mark.parametrize("max_keys, expected", [(0, []), (1, ["k0"]), (1000, ["k0", "k1", "k2"])])
def test_v1_and_v2_max_keys(s3, bucket, max_keys, expected):
    put_keys(s3, bucket, ["k0", "k1", "k2"])
    for page in (s3.list_objects(Bucket=bucket, MaxKeys=max_keys),
                 s3.list_objects_v2(Bucket=bucket, MaxKeys=max_keys)):
        assert keys_of(page) == expected
        assert page["MaxKeys"] == max_keys
        assert page["IsTruncated"] is (0 < max_keys < 3)


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "99999999999999999999x", "1_000", "%205", "%D9%A3",
                                   "2147483648", "0x10"])
def test_invalid_max_keys_is_invalid_argument(gateway, bucket, value):
    for query in (f"max-keys={value}", f"list-type=2&max-keys={value}"):
        r = signed(gateway.port, "GET", f"/{bucket}?{query}")
        assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), query


ODD_KEYS = ["a b/c d", "plus+sign", "pct%41", "ünï/cödé", "tab\tkey", "ctl\x01\x1fkey", "new\nline",
            "amp&<lt>", "emoji\U0001F600", "q?x=1#f"]


def test_encoding_type_url_encodes_keys_prefixes_and_markers(s3, gateway, bucket):
    put_keys(s3, bucket, ODD_KEYS)
    doc = raw_list(gateway, bucket, "encoding-type=url")
    assert find(doc, "EncodingType") == "url"
    listed = texts(doc, "Contents/Key")
    assert sorted(unquote(k) for k in listed) == sorted(ODD_KEYS)
    # What goes over the wire is plain ASCII without spaces or controls.
    assert all(k.isascii() and k.isprintable() and " " not in k for k in listed)
    # Prefix, delimiter and the common prefixes are encoded too.
    doc = raw_list(gateway, bucket, f"encoding-type=url&prefix={quote('ünï')}&delimiter=%2F")
    assert find(doc, "Prefix") == "ünï"   # v1: as sent (see test_v1_prefix_is_given_back_as_sent_...)
    assert [unquote(p) for p in texts(doc, "CommonPrefixes/Prefix")] == ["ünï/"]
    doc = raw_list(gateway, bucket, f"encoding-type=url&marker={quote('a b/c d', safe='')}&max-keys=1&delimiter=%20")
    assert unquote(find(doc, "Marker") or "") == "a b/c d"
    assert unquote(find(doc, "Delimiter") or "") == " "
    assert unquote(find(doc, "NextMarker") or "") == "amp&<lt>"
    doc = raw_list(gateway, bucket, f"list-type=2&encoding-type=url&start-after={quote('tab')}")
    assert unquote(find(doc, "StartAfter") or "") == "tab"
    # boto3 (which asks for encoding-type=url and decodes) sees the keys as stored.
    assert sorted(keys_of(s3.list_objects(Bucket=bucket))) == sorted(ODD_KEYS)
    assert sorted(keys_of(s3.list_objects_v2(Bucket=bucket))) == sorted(ODD_KEYS)


@pytest.mark.parametrize("prefix", ["\n", "a b", "%41", "ünï/", "amp&<lt>"])
def test_v1_prefix_is_given_back_as_sent_even_with_encoding_type_url(s3, gateway, bucket, prefix):
    keys = [prefix + "x", prefix + "d/y", "other"]
    put_keys(s3, bucket, keys)
    # boto3 asks for encoding-type=url and decodes every field of a v1 listing but Prefix.
    page = s3.list_objects(Bucket=bucket, Prefix=prefix, Delimiter="/")
    assert page["EncodingType"] == "url"
    assert page["Prefix"] == prefix
    assert (keys_of(page), prefixes_of(page)) == ([prefix + "x"], [prefix + "d/"])
    page = s3.list_objects(Bucket=bucket, Prefix=prefix, Marker=prefix)
    assert (page["Prefix"], page["Marker"], keys_of(page)) == (prefix, prefix, sorted(keys[:2]))
    doc = raw_list(gateway, bucket, f"encoding-type=url&prefix={quote(prefix, safe='')}")
    assert find(doc, "Prefix") == prefix
    # v2 and ListObjectVersions encode it, and botocore decodes it there.
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Prefix"] == prefix
    doc = raw_list(gateway, bucket, f"list-type=2&encoding-type=url&prefix={quote(prefix, safe='')}")
    assert find(doc, "Prefix") == quote(prefix, safe="/")
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix, KeyMarker=prefix)
    assert (versions["Prefix"], versions["KeyMarker"]) == (prefix, prefix)
    assert sorted(v["Key"] for v in versions["Versions"]) == sorted(keys[:2])
    doc = raw_list(gateway, bucket, f"versions&encoding-type=url&prefix={quote(prefix, safe='')}")
    assert find(doc, "Prefix") == quote(prefix, safe="/")
    assert find(doc, "EncodingType") == "url"


def test_without_encoding_type_keys_are_xml_escaped(s3, gateway, bucket):
    put_keys(s3, bucket, ["amp&<lt>", "ünï"])
    doc = raw_list(gateway, bucket, "")
    assert find(doc, "EncodingType") is None
    assert texts(doc, "Contents/Key") == ["amp&<lt>", "ünï"]


@pytest.mark.parametrize("query", ["encoding-type=xml", "encoding-type=", "list-type=2&encoding-type=URLX",
                                   "versions&encoding-type=base64"])
def test_invalid_encoding_type_is_invalid_argument(gateway, bucket, query):
    r = signed(gateway.port, "GET", f"/{bucket}?{query}")
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), r.text


PREFIX_DELIMITER_KEYS = ["a", "a/b", "a/b/c", "a/c", "ab", "ab/c", "b/a", "b/b/", "c"]


@pytest.mark.parametrize("prefix, delimiter, expected", [
    ("", "/", [("key", "a"), ("prefix", "a/"), ("key", "ab"), ("prefix", "ab/"), ("prefix", "b/"), ("key", "c")]),
    ("a", "/", [("key", "a"), ("prefix", "a/"), ("key", "ab"), ("prefix", "ab/")]),
    ("a/", "/", [("key", "a/b"), ("prefix", "a/b/"), ("key", "a/c")]),
    ("a/b", "/", [("key", "a/b"), ("prefix", "a/b/")]),
    ("b/", "/", [("key", "b/a"), ("prefix", "b/b/")]),
    ("", "b", [("key", "a"), ("prefix", "a/b"), ("key", "a/c"), ("prefix", "ab"), ("prefix", "b"), ("key", "c")]),
    ("a", "", [("key", k) for k in ["a", "a/b", "a/b/c", "a/c", "ab", "ab/c"]]),
    ("zzz", "/", []),
    ("", "a/b/c", [("key", "a"), ("key", "a/b"), ("prefix", "a/b/c"), ("key", "a/c"), ("key", "ab"),
                   ("key", "ab/c"), ("key", "b/a"), ("key", "b/b/"), ("key", "c")]),
])
def test_prefix_and_delimiter_combinations(s3, bucket, prefix, delimiter, expected):
    put_keys(s3, bucket, PREFIX_DELIMITER_KEYS)
    assert model_listing(PREFIX_DELIMITER_KEYS, prefix, delimiter) == expected   # the model agrees
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    assert page_items(s3.list_objects(**kwargs)) == expected
    assert page_items(s3.list_objects_v2(**kwargs)) == expected


# ---------------------------------------------------------------- v2

def test_v2_continuation_tokens_round_trip(s3, bucket):
    keys = [f"k{i:02d}" for i in range(7)] + ["dir/x", "dir/y"]
    put_keys(s3, bucket, keys)
    pages = paginate_v2(s3, bucket, "", "/", 3)
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [item for page in pages for item in page] == model_listing(keys, "", "/")
    # The token is opaque to clients but must be valid base64; ours is the base64 of a key.
    token = s3.list_objects_v2(Bucket=bucket, MaxKeys=2)["NextContinuationToken"]
    assert base64.b64decode(token)


def test_v2_start_after_and_token_precedence(s3, bucket):
    put_keys(s3, bucket, ["a", "b", "c", "d"])
    page = s3.list_objects_v2(Bucket=bucket, StartAfter="b")
    assert (keys_of(page), page["StartAfter"], page["KeyCount"]) == (["c", "d"], "b", 2)
    assert keys_of(s3.list_objects_v2(Bucket=bucket, StartAfter="bb")) == ["c", "d"]
    assert keys_of(s3.list_objects_v2(Bucket=bucket, StartAfter="zz")) == []
    token = s3.list_objects_v2(Bucket=bucket, MaxKeys=1)["NextContinuationToken"]    # resumes after "a"
    page = s3.list_objects_v2(Bucket=bucket, StartAfter="c", ContinuationToken=token)
    assert keys_of(page) == ["b", "c", "d"]      # the token wins over start-after
    assert page["StartAfter"] == "c"


def test_v2_owner_only_with_fetch_owner(s3, bucket):
    put_keys(s3, bucket, ["k"])
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert "Owner" not in s3.list_objects_v2(Bucket=bucket, FetchOwner=False)["Contents"][0]
    owner = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]["Owner"]
    assert owner["ID"] == s3.list_buckets()["Owner"]["ID"] and owner["DisplayName"]
    assert "Owner" in s3.list_objects(Bucket=bucket)["Contents"][0]        # v1 always shows it


def test_v2_key_count_counts_keys_and_common_prefixes(s3, bucket):
    put_keys(s3, bucket, ["a/1", "a/2", "b/1", "c", "d"])
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert page["KeyCount"] == 4 and len(keys_of(page)) == 2 and len(prefixes_of(page)) == 2
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 5
    assert s3.list_objects_v2(Bucket=bucket, Prefix="none")["KeyCount"] == 0


@pytest.mark.parametrize("token", ["not base64!", "%%%", "YQ", "gA=="])
def test_v2_invalid_continuation_token_is_invalid_argument(gateway, bucket, token):
    r = signed(gateway.port, "GET", f"/{bucket}?list-type=2&continuation-token={quote(token, safe='')}")
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), r.text


@pytest.mark.parametrize("list_type", ["1", "3", ""])
def test_list_type_other_than_2_is_invalid_argument(gateway, bucket, list_type):
    r = signed(gateway.port, "GET", f"/{bucket}?list-type={list_type}")
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), r.text


# ---------------------------------------------------------------- property test (mem backend)

KEY_ALPHABET = st.sampled_from(["a", "b", "/", "é", "-"])
KEYS = st.lists(st.text(KEY_ALPHABET, min_size=1, max_size=4), max_size=10, unique=True)


@pytest.fixture(scope="module")
def mem_s3(mem_gateway):
    return make_client(mem_gateway.url)


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(keys=KEYS, prefix=st.text(KEY_ALPHABET, max_size=2),
       delimiter=st.sampled_from([None, "/", "a", "é", "/a", "-"]), max_keys=st.integers(1, 4))
def test_paginated_listings_equal_the_reference_model(mem_s3, keys, prefix, delimiter, max_keys):
    bucket = f"prop-{uuid.uuid4().hex[:16]}"
    mem_s3.create_bucket(Bucket=bucket)
    put_keys(mem_s3, bucket, keys)
    expected = model_listing(keys, prefix, delimiter)
    for paginate in (paginate_v1, paginate_v2):
        pages = paginate(mem_s3, bucket, prefix, delimiter, max_keys)
        assert [item for page in pages for item in page] == expected, paginate.__name__
        assert all(len(p) == max_keys for p in pages[:-1])
    for key in keys:
        mem_s3.delete_object(Bucket=bucket, Key=key)
    mem_s3.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------- 2000 keys through the real dmd

@pytest.fixture(scope="module")
def big_bucket(file_gateway) -> str:
    """FOLDERS folders of KEYS_PER_FOLDER keys each, on the file backend (real dmd)."""
    s3 = make_client(file_gateway.url, max_pool_connections=16)
    name = f"big-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    keys = [f"folder{f}/key{k:04d}" for f in range(FOLDERS) for k in range(KEYS_PER_FOLDER)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=name, Key=key, Body=b""), keys))
    return name


def test_root_listing_of_2000_keys_in_10_folders_is_the_10_prefixes(s3_file, big_bucket):
    expected = [f"folder{f}/" for f in range(FOLDERS)]
    for page in (s3_file.list_objects(Bucket=big_bucket, Delimiter="/"),
                 s3_file.list_objects_v2(Bucket=big_bucket, Delimiter="/")):
        assert prefixes_of(page) == expected
        assert keys_of(page) == [] and page["IsTruncated"] is False
    # Paging folder by folder skips each folder's 200 keys.
    pages = paginate_v1(s3_file, big_bucket, "", "/", 3)
    assert [item[1] for page in pages for item in page] == expected
    pages = paginate_v2(s3_file, big_bucket, "", "/", 4)
    assert [item[1] for page in pages for item in page] == expected


def test_max_keys_above_1000_is_capped_and_echoed(s3_file, big_bucket):
    for page in (s3_file.list_objects(Bucket=big_bucket, MaxKeys=5000),
                 s3_file.list_objects_v2(Bucket=big_bucket, MaxKeys=5000)):
        assert len(keys_of(page)) == LISTING_HARD_LIMIT
        assert page["MaxKeys"] == 5000 and page["IsTruncated"] is True
    page = s3_file.list_objects(Bucket=big_bucket, MaxKeys=LISTING_HARD_LIMIT)
    assert (page["MaxKeys"], len(keys_of(page))) == (LISTING_HARD_LIMIT, LISTING_HARD_LIMIT)
    assert keys_of(page)[-1] == "folder4/key0199"
    rest = s3_file.list_objects(Bucket=big_bucket, Marker=keys_of(page)[-1])
    assert len(keys_of(rest)) == FOLDERS * KEYS_PER_FOLDER - LISTING_HARD_LIMIT and rest["IsTruncated"] is False
    # A prefix inside one folder, with a delimiter that never matches: the folder's keys only.
    page = s3_file.list_objects_v2(Bucket=big_bucket, Prefix="folder7/", Delimiter="/")
    assert page["KeyCount"] == KEYS_PER_FOLDER and prefixes_of(page) == []
