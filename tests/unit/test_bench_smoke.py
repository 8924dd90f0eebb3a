"""The benchmark's own code works: signer, load generator rows, error counting, memory sampling.

Runs the real load generator with tiny counts against a real mem_backend gateway. It checks that
the numbers exist and are positive, never how fast anything is.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.bench.peers import RssSampler
from tests.bench.s3load import MiB, SigV4Signer, Sizes, Target, run_workloads
from tests.procs import Gateway, start_gateway

TINY = Sizes(ops=20, op_seconds=5.0, big_object=2 * MiB, list_keys=30, list_page=10, list_folders=3,
             list_seconds=2.0, list_rounds=1, fill_concurrency=4)
CORE_ROWS = ["put_c1", "put_c32", "get_c1", "get_c32", "head_c32", "put_big", "get_big",
             "list_keys", "list_root_delim", "delete_c32"]


@pytest.fixture(scope="module")
def mem_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = start_gateway(tmp_path_factory.mktemp("bench-gw"), None)
    yield g
    g.stop()


def test_signer_matches_the_aws_documented_get_object_example() -> None:
    # "Example: GET Object" of the AWS SigV4 header-auth documentation for S3
    signer = SigV4Signer("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    headers = signer.sign("GET", "examplebucket.s3.amazonaws.com", "/test.txt", [], {"Range": "bytes=0-9"},
                          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                          amz_date="20130524T000000Z")
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


async def test_every_core_row_reports_positive_throughput_without_errors(mem_gateway: Gateway) -> None:
    target = Target("ours", mem_gateway.url, "accessKey1", "verySecretKey1")
    rows = await run_workloads(target, TINY, CORE_ROWS)
    assert list(rows) == CORE_ROWS
    for name, row in rows.items():
        assert row.error is None and row.errors == 0, f"{name}: {row.error}"
        assert row.value is not None and row.value > 0, name
        assert row.ops > 0 and row.seconds > 0, name
    assert rows["list_keys"].ops == TINY.list_keys  # keys/s counts every listed key
    assert not target.small_keys  # DELETE plus cleanup removed the 4 KiB objects


async def test_rejected_requests_make_the_row_na_with_the_error_instead_of_aborting(mem_gateway: Gateway) -> None:
    target = Target("ours", mem_gateway.url, "accessKey1", "not-the-secret")
    rows = await run_workloads(target, TINY, ["put_c1", "get_c1"])
    assert set(rows) == {"put_c1", "get_c1"}
    for row in rows.values():
        assert row.value is None
        assert row.error and "403" in row.error


def test_rss_sampler_records_a_peak_over_the_run_and_within_a_window() -> None:
    sampler = RssSampler({"self": os.getpid()}, interval=0.01)
    sampler.start()
    sampler.open_window("w")
    window = sampler.close_window("w")
    peaks = sampler.stop()
    assert peaks["self"] > 0 and 0 < window["self"] <= peaks["self"]
