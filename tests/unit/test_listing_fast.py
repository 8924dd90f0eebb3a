"""The fast paths of a listing page (issue 18): the engine's scanner (one entry at a time, one RocksDB
iterator per page), the driver over synchronous streams, the projection written straight into the
page's JSON (msgspec), the flag pre-check, and the XML entries built from templates.

Each fast path is compared with the plain one it replaces: the results must be the same.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.listing import _content_xml, _Fragments, _version_xml
from gateway.models import ObjectMD
from gateway.xml import XmlWriter
from shared import jsoncodec
from shared.listing import (DELIMITER_MASTER, DELIMITER_VERSIONS, LISTING_MPU, OBJECT_LISTING_FIELDS,
                            Delimiter, DelimiterMaster, ListingStats, encode_page, list_entries, list_page,
                            project_entries, project_value)
from shared.metastore import MemoryKV, MetaStore, RocksKV

SEP = "\0"


def _doc(**extra: Any) -> str:
    doc = {"owner-display-name": "Bart", "owner-id": "79a5" * 16, "content-length": 5,
           "content-md5": "5d41402abc4b2a76b9719d911017c592", "last-modified": "2026-12-06T13:54:35.004Z",
           "x-amz-storage-class": "STANDARD", "acl": {"Canned": "private", "READ": []}, "tags": {},
           "location": [{"key": "abc", "size": 5, "start": 0}], "isPHD": False, "md-model-version": 6}
    doc.update(extra)
    return json.dumps(doc)


# ---------------------------------------------------------------- projection into the page's JSON

VALUES = [
    _doc(),
    _doc(versionId="98765432109876543210RG001  0", isNull=True),
    _doc(isDeleteMarker=True, **{"content-length": 0}),
    # Nested members named like listing fields are not the object's own.
    _doc(tags={"versionId": "fake", "isNull": True, "content-length": "9"}, checksum={
        "checksumAlgorithm": "CRC32", "checksumValue": "AAAAAA==", "checksumType": "FULL_OBJECT"}),
    '{"content-length":"12","owner-id":"x\\"y","last-modified":"2026-01-01T00:00:00.000Z"}',
    '{"isPHD": true}',
    "{}",
    '{"x-amz-storage-class": "STANDARD_IA", "owner-display-name": "\\u00e9\\u6f22 \\ud83d\\ude00"}',
    '{"content-length": 123456789012}',
    # Not JSON objects: passed on as their text.
    "[1, 2]", '"text"', "42", "{bad", "",
]


@pytest.mark.parametrize("listing_type,entries", [(DELIMITER_MASTER, "Contents"), (DELIMITER_VERSIONS, "Versions"),
                                                  (LISTING_MPU, "Uploads")])
def test_encoded_page_is_the_projected_page(listing_type: str, entries: str) -> None:
    def page() -> dict[str, Any]:
        return {"CommonPrefixes": ["a/"], entries: [{"key": f"k{i}", "value": v} for i, v in enumerate(VALUES)],
                "IsTruncated": True, "NextContinuationToken": "k9", "Delimiter": None}
    expected = jsoncodec.dumps(project_entries(listing_type, page()))
    assert encode_page(listing_type, page()) == expected   # same text: same fields, same order


def test_projection_keeps_only_the_listing_fields_in_order() -> None:
    value = _doc(versionId="v1", checksum={"checksumAlgorithm": "SHA256"}, isNull=False)
    projected = project_value(value, OBJECT_LISTING_FIELDS)
    assert list(projected) == [f for f in OBJECT_LISTING_FIELDS if f in projected]
    assert projected == {"versionId": "v1", "isNull": False, "isPHD": False, "content-length": 5,
                         "content-md5": "5d41402abc4b2a76b9719d911017c592",
                         "last-modified": "2026-12-06T13:54:35.004Z", "x-amz-storage-class": "STANDARD",
                         "owner-id": "79a5" * 16, "owner-display-name": "Bart",
                         "checksum": {"checksumAlgorithm": "SHA256"}}
    for not_an_object in ("[1]", "{bad", "null"):
        assert project_value(not_an_object, OBJECT_LISTING_FIELDS) == not_an_object


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(OBJECT_LISTING_FIELDS + ("x", "acl")), inner,
                                                 max_size=3)), max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(OBJECT_LISTING_FIELDS + ("acl", "tags", "location", "key", "x-amz-meta-a")),
                       json_values, max_size=10))
def test_projection_matches_a_full_parse(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert project_value(text, OBJECT_LISTING_FIELDS) == {f: doc[f] for f in OBJECT_LISTING_FIELDS if f in doc}


# ---------------------------------------------------------------- the flag pre-check

@pytest.mark.parametrize("text,expected", [
    ('{"isPHD": false}', False), ('{"isPHD":true}', True), ('{"isPHD" :\n true}', True),
    ('{"a": "\\"isPHD\\": true"}', False),            # inside a string: escaped quotes
    ('{"isPHD": false, "x": {"isPHD": true}}', True),  # nested: parse to know
    ('{"isPHD": false, "isPHD": true}', True), ("{}", False), ('{"isPHD"}', False),
])
def test_may_hold_true(text: str, expected: bool) -> None:
    assert jsoncodec.may_hold_true(text, "isPHD") is expected


# ---------------------------------------------------------------- the driver over synchronous streams

class SyncSource:
    """Sorted {key: value} served as synchronous iterators (as the engine's scan); records closes."""

    def __init__(self, items: dict[str, str]) -> None:
        self.items = dict(sorted(items.items(), key=lambda kv: kv[0].encode()))
        self.opened: list[Iterator[dict[str, str]]] = []
        self.closed = 0
        self.read = 0

    def __call__(self, options: dict[str, str]) -> Iterator[dict[str, str]]:
        it = self._gen(options)
        self.opened.append(it)
        return it

    def _gen(self, options: dict[str, str]) -> Iterator[dict[str, str]]:
        try:
            for key, value in self.items.items():
                k = key.encode()
                if ("gt" in options and k <= options["gt"].encode()) or \
                        ("gte" in options and k < options["gte"].encode()):
                    continue
                if ("lt" in options and k >= options["lt"].encode()) or \
                        ("lte" in options and k > options["lte"].encode()):
                    return
                self.read += 1
                yield {"key": key, "value": value}
        finally:
            self.closed += 1


class AsyncSource(SyncSource):
    def __call__(self, options: dict[str, str]) -> AsyncIterator[dict[str, str]]:  # type: ignore[override]
        sync = super().__call__(options)

        async def gen() -> AsyncIterator[dict[str, str]]:
            try:
                for entry in sync:
                    yield entry
            finally:
                sync.close()
        return gen()


def _bucket() -> dict[str, str]:
    items = {}
    for d in range(6):
        for k in range(5):
            items[f"dir{d}/k{k}"] = _doc()
    items["top"] = _doc(versionId="v2")
    items["top" + SEP + "v2"] = _doc(versionId="v2")
    items["top" + SEP + "v3"] = _doc(versionId="v3")
    items["gone"] = _doc(isDeleteMarker=True, versionId="v9")
    items["gone" + SEP + "v9"] = _doc(isDeleteMarker=True, versionId="v9")
    return items


@pytest.mark.parametrize("make", [lambda: Delimiter(delimiter="/", max_keys=3),
                                  lambda: DelimiterMaster(delimiter="/", max_keys=4),
                                  lambda: DelimiterMaster(max_keys=1000),
                                  lambda: DelimiterMaster(prefix="dir2/", max_keys=2)])
async def test_sync_streams_list_as_async_streams(make) -> None:
    sync, asynchronous = SyncSource(_bucket()), AsyncSource(_bucket())
    s_stats, a_stats = ListingStats(), ListingStats()
    got = await list_entries(sync, make(), s_stats)
    expected = await list_entries(asynchronous, make(), a_stats)
    assert got == expected
    assert (s_stats.entries_read, s_stats.streams_opened) == (a_stats.entries_read, a_stats.streams_opened)
    assert sync.closed == len(sync.opened), "every synchronous stream is closed"
    # A delimiter listing jumps past each folder after its first key.
    if got["CommonPrefixes"]:
        assert sync.read <= len(got["CommonPrefixes"]) + len(got["Contents"]) + 1 + 4


async def test_sync_stream_gives_the_loop_a_turn() -> None:
    source = SyncSource({f"k{i:04d}": "{}" for i in range(1000)})
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    before = turns
    await list_entries(source, Delimiter(max_keys=2000), yield_every=100)
    task.cancel()
    assert turns - before >= 9


# ---------------------------------------------------------------- the engine's scanner

class _CountingDb:
    """Stands between RocksKV and its rocksdict handle to count the iterators created."""

    def __init__(self, db: Any) -> None:
        self._db, self.iterators = db, 0

    def iter(self, *args: Any) -> Any:
        self.iterators += 1
        return self._db.iter(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.fixture(params=["memory", "rocks"])
async def store(request, tmp_path) -> AsyncIterator[MetaStore]:
    kv = MemoryKV() if request.param == "memory" else RocksKV(str(tmp_path))
    s = MetaStore(kv, metadata_path=str(tmp_path), repair_delay_s=3600)
    try:
        yield s
    finally:
        await s.close()


async def _fill(store: MetaStore, bucket: str, items: dict[str, str]) -> None:
    for key, value in items.items():
        await store.put([bucket], key, value, {})


async def test_scanner_pages_equal_read_stream_pages(store: MetaStore) -> None:
    await _fill(store, "b", _bucket())
    for listing_type, params in [(DELIMITER_MASTER, {"delimiter": "/", "maxKeys": 3}),
                                 (DELIMITER_MASTER, {"maxKeys": 5, "v2": True, "startAfter": "dir3/k1"}),
                                 (DELIMITER_VERSIONS, {"delimiter": "/"}), (DELIMITER_VERSIONS, {"maxKeys": 3}),
                                 ("Delimiter", {"prefix": "dir1/"})]:
        with store.scanner(["b"]) as scan:
            got = await list_page(scan, listing_type, params, max_skip_run=8)
        expected = await list_page(lambda o: store.read_stream(["b"], o), listing_type, params, max_skip_run=8)
        assert got == expected, (listing_type, params)


async def test_scanner_reuses_one_rocksdb_iterator(tmp_path) -> None:
    kv = RocksKV(str(tmp_path))
    store = MetaStore(kv, metadata_path=str(tmp_path), repair_delay_s=3600)
    try:
        await _fill(store, "b", {f"d{i:03d}/k{j}": _doc() for i in range(40) for j in range(3)})
        counting = kv._db = _CountingDb(kv._db)
        with store.scanner(["b"]) as scan:
            page = await list_page(scan, DELIMITER_MASTER, {"delimiter": "/"}, max_skip_run=8)
        assert len(page["CommonPrefixes"]) == 40
        assert counting.iterators == 1, "one iterator re-seeked past every common prefix"
    finally:
        kv._db = getattr(kv._db, "_db", kv._db)
        await store.close()


async def test_scan_reads_only_what_it_yields() -> None:
    class CountingKV(MemoryKV):
        read = 0

        def iterate(self, *args: Any, **kwargs: Any) -> Iterator[tuple[bytes, bytes]]:
            for item in super().iterate(*args, **kwargs):
                CountingKV.read += 1
                yield item

    store = MetaStore(CountingKV(), repair_delay_s=3600)
    try:
        await _fill(store, "b", {f"d{i:03d}/k{j}": "{}" for i in range(50) for j in range(4)})
        CountingKV.read = 0
        with store.scanner(["b"]) as scan:
            page = await list_page(scan, DELIMITER_MASTER, {"delimiter": "/"}, max_skip_run=8)
        assert len(page["CommonPrefixes"]) == 50
        assert CountingKV.read <= 50 + 1, "a jump reads the folder's first key only (no chunk read ahead)"
        with store.scanner(["b"]) as scan:
            assert len(list(scan({"limit": 3}))) == 3
            assert list(scan({"limit": 0})) == []
    finally:
        await store.close()


async def test_a_closed_store_fails_an_open_scan(tmp_path) -> None:
    store = MetaStore(RocksKV(str(tmp_path)), metadata_path=str(tmp_path), repair_delay_s=3600)
    await _fill(store, "b", {f"k{i}": "{}" for i in range(10)})
    with store.scanner(["b"]) as scan:
        it = scan({})
        next(it)
        await store.close()
        with pytest.raises(Exception) as err:
            list(it)
    assert "closed" in str(err.value)


# ---------------------------------------------------------------- XML entries from templates

def _writer_content(key: str, md: ObjectMD, with_owner: bool) -> str:
    """The entry as the element-by-element writer wrote it before the templates."""
    w = XmlWriter("R")
    w.open("Contents")
    w.leaf("Key", key)
    w.safe_leaf("LastModified", md.last_modified)
    w.safe_leaf("ETag", f'"{md.etag}"')
    w.safe_leaf("Size", md.size)
    if with_owner:
        w.open("Owner")
        w.leaf("ID", md.owner_id)
        w.leaf("DisplayName", md.owner_display_name)
        w.close("Owner")
    w.leaf("StorageClass", md.storage_class)
    if md.checksum:
        w.leaf("ChecksumAlgorithm", md.checksum.get("checksumAlgorithm"))
    w.close("Contents")
    return w.to_bytes().decode().split("<R xmlns", 1)[1].split(">", 1)[1][:-len("</R>")]


MDS = [ObjectMD(json.loads(_doc())), ObjectMD(json.loads(_doc(**{"owner-id": "other", "owner-display-name": "B&b"}))),
       ObjectMD(json.loads(_doc(**{"owner-id": "79a5" * 16, "owner-display-name": "Renamed"}))),
       ObjectMD({"content-length": "7", "x-amz-storage-class": "GLACIER<", "checksum": {"checksumAlgorithm": "CRC32"}}),
       ObjectMD({"owner-id": None, "checksum": {"checksumType": "COMPOSITE"}}), ObjectMD({}),
       ObjectMD({"owner-id": ["not", "text"], "owner-display-name": {"a": 1}, "x-amz-storage-class": ["X"]})]


@pytest.mark.parametrize("with_owner", [True, False])
def test_content_template_writes_what_the_writer_wrote(with_owner: bool) -> None:
    frags = _Fragments()   # shared by the page: each entry keeps its own owner and storage class
    for i, md in enumerate(MDS):
        key = f"k{i}&<\x01\r"
        assert _content_xml(key, md, lambda s: s, with_owner, frags) == _writer_content(key, md, with_owner)


def test_version_template_keeps_each_owner() -> None:
    frags = _Fragments()
    out = [_version_xml("k", md, i == 0, lambda s: s, frags) for i, md in enumerate(MDS[:3])]
    assert "<DisplayName>Bart</DisplayName>" in out[0]
    assert "<ID>other</ID><DisplayName>B&amp;b</DisplayName>" in out[1]
    assert f"<ID>{'79a5' * 16}</ID><DisplayName>Renamed</DisplayName>" in out[2]
    assert "<ETag>&quot;5d41402abc4b2a76b9719d911017c592&quot;</ETag>" in out[0]
    assert out[0].startswith("<Version><Key>k</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>")
