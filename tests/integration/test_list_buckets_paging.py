"""ListBuckets with AWS's paging parameters: max-buckets, continuation-token, prefix, bucket-region.

Against the real gateway (dmd and mem backends), through boto3 and as raw XML.
"""
from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError
from lxml import etree

from tests.integration.test_conformance import signed, xml_code

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def five_buckets(s3, bucket_name):
    names = [f"{bucket_name}-{i}" for i in range(5)]
    for name in reversed(names):
        s3.create_bucket(Bucket=name)
    yield names
    for name in names:
        s3.delete_bucket(Bucket=name)


def names_of(page: dict) -> list[str]:
    return [b["Name"] for b in page["Buckets"]]


def test_max_buckets_and_continuation_tokens_page_through_a_prefix(s3, five_buckets, bucket_name):
    pages, token = [], None
    for _ in range(5):   # bounded: a token that does not advance must fail, not loop
        args = {"MaxBuckets": 2, "Prefix": bucket_name, **({"ContinuationToken": token} if token else {})}
        page = s3.list_buckets(**args)
        assert page["Prefix"] == bucket_name
        pages.append(names_of(page))
        token = page.get("ContinuationToken")
        if token is None:
            break
    assert pages == [five_buckets[0:2], five_buckets[2:4], five_buckets[4:5]]
    for b in s3.list_buckets(Prefix=bucket_name)["Buckets"]:
        assert b["BucketRegion"] == "us-east-1"


def test_boto3_paginator_walks_every_bucket_once(s3, five_buckets):
    everything = names_of(s3.list_buckets())
    paged = [name for page in s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 2})
             for name in names_of(page)]
    assert paged == everything == sorted(everything)
    assert set(five_buckets) <= set(paged)


def test_exactly_max_buckets_left_gives_no_token(s3, five_buckets, bucket_name):
    page = s3.list_buckets(MaxBuckets=5, Prefix=bucket_name)
    assert names_of(page) == five_buckets and "ContinuationToken" not in page
    page = s3.list_buckets(MaxBuckets=4, Prefix=bucket_name)
    assert names_of(page) == five_buckets[:4] and page["ContinuationToken"]


def test_prefix_without_max_buckets_lists_all_matches(s3, five_buckets, bucket_name):
    assert names_of(s3.list_buckets(Prefix=bucket_name)) == five_buckets
    assert names_of(s3.list_buckets(Prefix=five_buckets[3])) == [five_buckets[3]]
    assert names_of(s3.list_buckets(Prefix=bucket_name + "-x")) == []


def test_bucket_region_filters_by_location(s3, bucket_name):
    east, west = f"{bucket_name}-east", f"{bucket_name}-west"
    s3.create_bucket(Bucket=east)
    s3.create_bucket(Bucket=west, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    try:
        page = s3.list_buckets(Prefix=bucket_name, BucketRegion="us-west-2")
        assert [(b["Name"], b["BucketRegion"]) for b in page["Buckets"]] == [(west, "us-west-2")]
        page = s3.list_buckets(Prefix=bucket_name, BucketRegion="us-east-1")
        assert names_of(page) == [east]
    finally:
        s3.delete_bucket(Bucket=east)
        s3.delete_bucket(Bucket=west)


def test_response_elements_and_their_order(gateway, five_buckets, bucket_name):
    r = signed(gateway.port, "GET", f"/?max-buckets=1&prefix={bucket_name}")
    assert r.status_code == 200, r.text
    doc = etree.fromstring(r.content)
    assert [el.tag[len(NS):] for el in doc] == ["Owner", "Buckets", "ContinuationToken", "Prefix"]
    assert [el.tag[len(NS):] for el in doc.find(NS + "Buckets/" + NS + "Bucket")] == \
        ["Name", "CreationDate", "BucketRegion"]
    # Without paging parameters: the classic document, no region, token or prefix.
    doc = etree.fromstring(signed(gateway.port, "GET", "/").content)
    assert [el.tag[len(NS):] for el in doc] == ["Owner", "Buckets"]
    assert doc.find(f"{NS}Buckets/{NS}Bucket/{NS}BucketRegion") is None


@pytest.mark.parametrize("value", ["0", "10001", "-1", "x", "1.5", "", "%D9%A3"])
def test_max_buckets_out_of_range_is_invalid_argument(gateway, value):
    r = signed(gateway.port, "GET", f"/?max-buckets={value}")
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), r.text


def test_max_buckets_bounds_are_accepted(s3, five_buckets):
    assert len(s3.list_buckets(MaxBuckets=1)["Buckets"]) == 1
    assert s3.list_buckets(MaxBuckets=10000)["Buckets"]


@pytest.mark.parametrize("token", ["not-a-token", "", base64.urlsafe_b64encode(b"some-bucket").decode(), "bGIxOg==",
                                   "bGIxOg", "bGIxOnNvbWUtYnVja2V0!"])
def test_invalid_continuation_token_is_invalid_argument(s3, gateway, token):
    r = signed(gateway.port, "GET", f"/?continuation-token={quote(token, safe='')}")
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument"), r.text
    if token:
        with pytest.raises(ClientError) as exc:
            s3.list_buckets(ContinuationToken=token)
        assert exc.value.response["Error"]["Code"] == "InvalidArgument"
