"""The listing algorithms of shared/listing (docs/listing.md) over an in-test sorted source.

The source below is test input: a sorted list served as an async generator that honours
gt/gte/lt/lte in UTF-8 byte order (compared as bytes, independently of the code under test) and
counts what it yields. Property tests compare paginated listings with simple reference models.
"""
from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.listing import (MPU, Delimiter, DelimiterMaster, DelimiterVersions, ListingStats, inc, list_entries,
                             overview_key)
from shared.listing.driver import range_is_empty
from shared.metastore import MemoryKV, MetaStore
from shared.metastore.errors import MetadataError

SEP = "\0"


class SortedSource:
    """An ordered store of {key: value} served as levelup-style read streams; counts reads."""

    def __init__(self, items: dict[str, str]) -> None:
        self.items = items
        self.keys = sorted(items, key=lambda k: k.encode())
        self._encoded = [k.encode() for k in self.keys]
        self.entries_read = 0
        self.options_seen: list[dict[str, str]] = []
        self.generators: list[Any] = []
        self.fail_after: int | None = None

    def __call__(self, options: dict[str, str]) -> AsyncIterator[dict[str, str]]:
        self.options_seen.append(dict(options))
        gen = self._stream(options)
        self.generators.append(gen)
        return gen

    async def _stream(self, options: dict[str, str]) -> AsyncIterator[dict[str, str]]:
        enc = {name: value.encode() for name, value in options.items()}
        start = 0
        if "gte" in enc:
            start = bisect_left(self._encoded, enc["gte"])
        if "gt" in enc:
            start = max(start, bisect_left(self._encoded, enc["gt"]))
        for i in range(start, len(self.keys)):
            raw = self._encoded[i]
            if ("gt" in enc and raw <= enc["gt"]) or ("gte" in enc and raw < enc["gte"]):
                continue
            if ("lt" in enc and raw >= enc["lt"]) or ("lte" in enc and raw > enc["lte"]):
                return
            if self.fail_after is not None and self.entries_read >= self.fail_after:
                raise MetadataError("InternalError", 500, "stream timeout")
            self.entries_read += 1
            yield {"key": self.keys[i], "value": self.items[self.keys[i]]}

    def all_closed(self) -> bool:
        return all(gen.ag_frame is None for gen in self.generators)


async def run(source: SortedSource, algorithm: Any) -> dict[str, Any]:
    result = await list_entries(source, algorithm)
    assert source.all_closed(), "every stream must be closed when the listing returns"
    return result


def b(s: str) -> bytes:
    return s.encode()


# ---------------------------------------------------------------- versioned layouts (docs/metadata-keys.md, docs/versioning.md)

@dataclass
class Obj:
    """One object of a v0 versioned bucket. versions: (vid, is_delete_marker), newest (smallest vid) first.

    kind: "plain" (master only, no versionId), "versioned" (master = newest version),
    "suspended" (master is a null version with its own newer vid, no version key), "phd" (PHD master).
    """
    kind: str
    versions: list[tuple[str, bool]] = field(default_factory=list)
    master_vid: str | None = None
    master_dm: bool = False


def version_value(key: str, vid: str, dm: bool) -> str:
    value: dict[str, Any] = {"key": key, "content-length": len(vid), "versionId": vid}
    if dm:
        value["isDeleteMarker"] = True
    return json.dumps(value)


def layout(objects: dict[str, Obj]) -> dict[str, str]:
    items: dict[str, str] = {}
    for key, obj in objects.items():
        for vid, dm in obj.versions:
            items[key + SEP + vid] = version_value(key, vid, dm)
        if obj.kind == "plain":
            items[key] = json.dumps({"key": key, "content-length": 1})
        elif obj.kind == "versioned":
            vid, dm = obj.versions[0]
            items[key] = version_value(key, vid, dm)
        elif obj.kind == "suspended":
            assert obj.master_vid is not None
            value = json.loads(version_value(key, obj.master_vid, obj.master_dm))
            value["isNull"] = True
            items[key] = json.dumps(value)
        elif obj.kind == "phd":
            items[key] = '{ "isPHD": true, "versionId": "00000000000000000000RG001  0" }'
    return items


def expected_current(objects: dict[str, Obj]) -> dict[str, str]:
    """key -> value of the current version, for objects whose current version is not a delete marker."""
    items = layout(objects)
    current: dict[str, str] = {}
    for key, obj in objects.items():
        if obj.kind == "phd":
            if obj.versions and not obj.versions[0][1]:
                current[key] = items[key + SEP + obj.versions[0][0]]
        elif obj.kind == "versioned":
            if not obj.versions[0][1]:
                current[key] = items[key]
        elif obj.kind == "suspended":
            if not obj.master_dm:
                current[key] = items[key]
        else:
            current[key] = items[key]
    return current


def expected_versions(objects: dict[str, Obj]) -> list[tuple[str, str, str]]:
    """(key, versionId, value) in listing order: byte order of key, then master, then version ids."""
    items = layout(objects)
    out: list[tuple[str, str, str]] = []
    for key in sorted(objects, key=b):
        obj = objects[key]
        master_vid = None
        if obj.kind != "phd":
            master_vid = json.loads(items[key]).get("versionId", "null")
            out.append((key, master_vid, items[key]))
        for vid, _ in obj.versions:
            if vid != master_vid:
                out.append((key, vid, items[key + SEP + vid]))
    return out


def vid(n: int) -> str:
    """An internal-looking version id; smaller n = newer = sorts first."""
    return f"{n:020d}RG001  0"


# ---------------------------------------------------------------- reference models

def common_prefix_ref(key: str, prefix: str, delimiter: str | None) -> str | None:
    if not delimiter:
        return None
    i = key.find(delimiter, len(prefix))
    return None if i < 0 else key[:i + len(delimiter)]


def grouped(keys_in_order: list[str], prefix: str, delimiter: str | None) -> list[tuple[str, str]]:
    """[("cp", prefix) | ("key", key)] for keys starting with prefix, folders collapsed."""
    out: list[tuple[str, str]] = []
    for key in keys_in_order:
        if not key.startswith(prefix):
            continue
        cp = common_prefix_ref(key, prefix, delimiter)
        if cp is None:
            out.append(("key", key))
        elif not out or out[-1] != ("cp", cp):
            out.append(("cp", cp))
    return out


def page_items(result: dict[str, Any], contents: str = "Contents") -> list[tuple[str, str]]:
    items = [("cp", cp) for cp in result["CommonPrefixes"]] + [("key", c["key"]) for c in result[contents]]
    return sorted(items, key=lambda item: b(item[1]))


# ---------------------------------------------------------------- inc()

def test_inc_increments_last_character():
    assert inc("abc") == "abd"
    assert inc("a/") == "a0"


def test_inc_drops_trailing_max_code_points():
    assert inc("a\U0010ffff\U0010ffff") == "b"


def test_inc_of_unboundable_strings_is_none():
    assert inc("") is None
    assert inc("\U0010ffff") is None


def test_inc_steps_over_the_surrogate_range():
    assert inc("x\ud7ff") == "x\ue000"


def test_inc_above_bmp_compares_in_utf8_bytes():
    # In UTF-16 "\U0001f600" < "\uffff"; in UTF-8 bytes it is greater, and inc must respect that.
    s = "a\uffff"
    assert b(inc(s)) > b(s + "\U0001f600")


text_no_surrogates = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)


@given(s=text_no_surrogates, u=text_no_surrogates)
def test_inc_is_least_upper_bound_of_prefixed_strings(s: str, u: str):
    upper = inc(s)
    if u.startswith(s):
        assert upper is None or b(u) < b(upper)
    elif upper is not None and b(s) <= b(u) < b(upper):
        pytest.fail(f"{u!r} sorts inside the range of prefix {s!r} without having it")


def test_range_is_empty_detects_crossed_bounds():
    assert range_is_empty({"gte": "b", "lt": "b"})
    assert range_is_empty({"gt": "b", "lte": "b"})
    assert not range_is_empty({"gte": "b", "lte": "b"})
    assert not range_is_empty({"gt": "a", "lt": "b"})


# ---------------------------------------------------------------- Delimiter: ranges (docs/listing.md#delimiter)

def test_delimiter_range_with_prefix_is_prefix_to_inc_prefix():
    assert Delimiter(prefix="photos/").gen_params() == {"gte": "photos/", "lt": "photos0"}


def test_delimiter_range_skips_the_folder_holding_the_marker():
    assert Delimiter(delimiter="/", marker="a/b/c").gen_params() == {"gte": "a0"}


def test_delimiter_range_starts_after_marker_past_the_prefix():
    assert Delimiter(prefix="a", marker="ab").gen_params() == {"gt": "ab", "lt": "b"}


def test_delimiter_range_ignores_marker_before_prefix():
    assert Delimiter(prefix="m", marker="a").gen_params() == {"gte": "m", "lt": "n"}


def test_delimiter_v2_continuation_token_wins_over_start_after():
    assert Delimiter(v2=True, continuation_token="c", start_after="a").gen_params() == {"gt": "c"}
    assert Delimiter(v2=True, start_after="a").gen_params() == {"gt": "a"}


# ---------------------------------------------------------------- Delimiter: filter and result

KEYS = {k: json.dumps({"k": k}) for k in ["a", "b/1", "b/2", "c", "d/x/1", "d/y", "e"]}


async def test_delimiter_folds_keys_into_common_prefixes_counted_once():
    res = await run(SortedSource(KEYS), Delimiter(delimiter="/"))
    assert res["CommonPrefixes"] == ["b/", "d/"]
    assert [c["key"] for c in res["Contents"]] == ["a", "c", "e"]
    assert res["Contents"][0]["value"] == KEYS["a"]
    assert res["IsTruncated"] is False and res["Delimiter"] == "/"
    assert "NextMarker" not in res


async def test_delimiter_common_prefix_is_searched_after_the_prefix():
    res = await run(SortedSource(KEYS), Delimiter(prefix="d/", delimiter="/"))
    assert res["CommonPrefixes"] == ["d/x/"] and [c["key"] for c in res["Contents"]] == ["d/y"]


async def test_delimiter_page_full_with_nothing_after_is_not_truncated():
    res = await run(SortedSource(KEYS), Delimiter(delimiter="/", max_keys=5))
    assert res["IsTruncated"] is False and "NextMarker" not in res


async def test_delimiter_truncated_v1_gives_next_marker_only_with_delimiter():
    res = await run(SortedSource(KEYS), Delimiter(delimiter="/", max_keys=2))
    assert res["IsTruncated"] is True and res["NextMarker"] == "b/"
    res = await run(SortedSource(KEYS), Delimiter(max_keys=2))
    assert res["IsTruncated"] is True and "NextMarker" not in res
    assert [c["key"] for c in res["Contents"]] == ["a", "b/1"]


async def test_delimiter_v2_truncated_gives_continuation_token_even_without_delimiter():
    res = await run(SortedSource(KEYS), Delimiter(v2=True, max_keys=3))
    assert res["NextContinuationToken"] == "b/2" and "NextMarker" not in res


async def test_delimiter_next_marker_that_is_a_common_prefix_resumes_after_the_folder():
    res = await run(SortedSource(KEYS), Delimiter(delimiter="/", marker="b/"))
    assert res["CommonPrefixes"] == ["d/"] and [c["key"] for c in res["Contents"]] == ["c", "e"]


async def test_max_keys_zero_gives_empty_untruncated_page_without_reading():
    source = SortedSource(KEYS)
    res = await run(source, Delimiter(max_keys=0))
    assert res["Contents"] == [] and res["IsTruncated"] is False
    assert source.entries_read == 0 and source.generators == []


async def test_max_keys_defaults_to_1000():
    items = {f"k{i:05d}": "{}" for i in range(1001)}
    res = await run(SortedSource(items), Delimiter())
    assert len(res["Contents"]) == 1000 and res["IsTruncated"] is True


async def test_listing_reads_only_the_page_plus_one_look_ahead():
    source = SortedSource({f"k{i:05d}": "{}" for i in range(5000)})
    stats = ListingStats()
    res = await list_entries(source, Delimiter(max_keys=10), stats)
    assert len(res["Contents"]) == 10 and res["IsTruncated"]
    assert source.entries_read == stats.entries_read == 11
    assert source.all_closed()


async def test_root_delimiter_listing_of_20000_keys_in_10_folders_reads_tens_of_entries():
    items = {f"folder{f}/obj{i:05d}": "{}" for f in range(10) for i in range(2000)}
    source = SortedSource(items)
    stats = ListingStats()
    res = await list_entries(source, Delimiter(delimiter="/"), stats)
    assert res["CommonPrefixes"] == [f"folder{f}/" for f in range(10)]
    assert source.entries_read <= 20
    assert stats.streams_opened <= 11
    assert source.all_closed()


async def test_master_root_listing_of_20000_versioned_keys_in_10_folders_reads_tens_of_entries():
    objects = {f"folder{f}/obj{i:04d}": Obj("versioned", [(vid(1), False)]) for f in range(10) for i in range(1000)}
    source = SortedSource(layout(objects))
    res = await run(source, DelimiterMaster(delimiter="/"))
    assert len(res["CommonPrefixes"]) == 10 and source.entries_read <= 20


async def test_stream_error_propagates_and_stream_is_closed():
    source = SortedSource(KEYS)
    source.fail_after = 2
    with pytest.raises(MetadataError):
        await list_entries(source, Delimiter())
    assert source.all_closed()


async def test_open_stream_returning_an_awaitable_is_supported():
    source = SortedSource(KEYS)

    async def opener(options: dict[str, str]) -> AsyncIterator[dict[str, str]]:
        return source(options)

    res = await list_entries(opener, Delimiter(delimiter="/"))
    assert res["CommonPrefixes"] == ["b/", "d/"]
    assert source.all_closed()


async def test_delimiter_of_max_code_point_ends_listing_after_folder():
    items = {"a": "{}", "\U0010ffff": "{}", "\U0010ffff/x": "{}", "\U0010ffff\U0010ffff": "{}"}
    res = await run(SortedSource(items), Delimiter(delimiter="\U0010ffff"))
    assert res["CommonPrefixes"] == ["\U0010ffff"] and [c["key"] for c in res["Contents"]] == ["a"]
    assert res["IsTruncated"] is False


async def test_keys_above_bmp_are_listed_in_utf8_byte_order():
    items = {"\uffff": "{}", "\U0001f600": "{}", "\ue000": "{}"}
    res = await run(SortedSource(items), Delimiter())
    assert [c["key"] for c in res["Contents"]] == ["\ue000", "\uffff", "\U0001f600"]


# ---------------------------------------------------------------- DelimiterMaster (docs/listing.md#delimitermaster)

async def test_master_lists_current_versions_only():
    objects = {"a": Obj("versioned", [(vid(1), False), (vid(2), False)]), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterMaster())
    assert [(c["key"], json.loads(c["value"]).get("versionId")) for c in res["Contents"]] == [("a", vid(1)), ("b", None)]


async def test_master_hides_delete_marker_masters():
    objects = {"a": Obj("versioned", [(vid(1), True), (vid(2), False)]), "b": Obj("plain"),
               "c": Obj("suspended", [(vid(5), False)], master_vid=vid(3), master_dm=True)}
    res = await run(SortedSource(layout(objects)), DelimiterMaster())
    assert [c["key"] for c in res["Contents"]] == ["b"]


async def test_master_resolves_phd_to_the_next_version():
    objects = {"a": Obj("phd", [(vid(4), False), (vid(7), False)])}
    res = await run(SortedSource(layout(objects)), DelimiterMaster())
    assert [(c["key"], json.loads(c["value"])["versionId"]) for c in res["Contents"]] == [("a", vid(4))]


async def test_master_phd_whose_next_version_is_a_delete_marker_is_hidden():
    objects = {"a": Obj("phd", [(vid(4), True), (vid(7), False)]), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterMaster())
    assert [c["key"] for c in res["Contents"]] == ["b"]


async def test_master_phd_without_versions_is_hidden():
    objects = {"a": Obj("phd"), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterMaster())
    assert [c["key"] for c in res["Contents"]] == ["b"]


async def test_master_trailing_delete_markers_do_not_make_the_page_truncated():
    objects = {"a": Obj("plain"), "b": Obj("versioned", [(vid(1), True)]), "c": Obj("versioned", [(vid(1), True)])}
    res = await run(SortedSource(layout(objects)), DelimiterMaster(max_keys=1))
    assert [c["key"] for c in res["Contents"]] == ["a"] and res["IsTruncated"] is False


async def test_master_marker_skips_the_markers_versions():
    objects = {"a": Obj("versioned", [(vid(1), False), (vid(2), False)]), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterMaster(marker="a"))
    assert [c["key"] for c in res["Contents"]] == ["b"]


async def test_master_never_lists_orphan_version_keys():
    items = layout({"b": Obj("plain")})
    items["a" + SEP + vid(1)] = version_value("a", vid(1), False)
    res = await run(SortedSource(items), DelimiterMaster())
    assert [c["key"] for c in res["Contents"]] == ["b"]


async def test_master_skips_long_version_runs_by_reopening_the_stream():
    objects = {"a": Obj("versioned", [(vid(i), False) for i in range(1, 3001)]), "b": Obj("plain")}
    source = SortedSource(layout(objects))
    res = await run(source, DelimiterMaster())
    assert [c["key"] for c in res["Contents"]] == ["a", "b"]
    assert source.entries_read < 300


async def test_master_folder_with_only_deleted_objects_is_not_a_common_prefix():
    objects = {"d/x": Obj("versioned", [(vid(1), True)]), "e/x": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterMaster(delimiter="/"))
    assert res["CommonPrefixes"] == ["e/"]


# ---------------------------------------------------------------- DelimiterVersions (docs/listing.md#delimiterversions)

def test_versions_range_with_key_marker_only_starts_after_all_its_versions():
    assert DelimiterVersions(key_marker="k").gen_params() == {"gte": "k\x01"}


def test_versions_range_with_version_id_marker_starts_at_that_version():
    assert DelimiterVersions(key_marker="k", version_id_marker="v").gen_params() == {"gte": "k\0v"}


async def test_versions_lists_master_then_versions_without_duplicate():
    objects = {"a": Obj("versioned", [(vid(1), False), (vid(2), True)]), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterVersions())
    assert [(v["key"], v["versionId"]) for v in res["Versions"]] == [("a", vid(1)), ("a", vid(2)), ("b", "null")]
    assert res["IsTruncated"] is False and "NextKeyMarker" not in res and "Delimiter" not in res


async def test_versions_ignores_phd_masters():
    objects = {"a": Obj("phd", [(vid(3), False)])}
    res = await run(SortedSource(layout(objects)), DelimiterVersions())
    assert [(v["key"], v["versionId"]) for v in res["Versions"]] == [("a", vid(3))]


async def test_versions_duplicate_after_full_page_does_not_truncate():
    objects = {"a": Obj("versioned", [(vid(1), False)])}
    res = await run(SortedSource(layout(objects)), DelimiterVersions(max_keys=1))
    assert len(res["Versions"]) == 1 and res["IsTruncated"] is False


async def test_versions_truncated_page_gives_key_and_version_markers():
    objects = {"a": Obj("versioned", [(vid(1), False), (vid(2), False), (vid(3), False)])}
    source = SortedSource(layout(objects))
    res = await run(source, DelimiterVersions(max_keys=2))
    assert res["IsTruncated"] and res["NextKeyMarker"] == "a" and res["NextVersionIdMarker"] == vid(2)
    res2 = await run(source, DelimiterVersions(key_marker="a", version_id_marker=vid(2)))
    assert [v["versionId"] for v in res2["Versions"]] == [vid(3)]


async def test_versions_common_prefix_marker_has_no_version_id_marker():
    objects = {"a/1": Obj("plain"), "a/2": Obj("plain"), "b": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterVersions(delimiter="/", max_keys=1))
    assert res["CommonPrefixes"] == ["a/"] and res["NextKeyMarker"] == "a/" and "NextVersionIdMarker" not in res
    assert res["Delimiter"] == "/"


async def test_versions_key_marker_does_not_hide_key_ending_in_0x01():
    objects = {"a": Obj("plain"), "a\x01": Obj("plain")}
    res = await run(SortedSource(layout(objects)), DelimiterVersions(key_marker="a"))
    assert [v["key"] for v in res["Versions"]] == ["a\x01"]


# ---------------------------------------------------------------- MPU (docs/listing.md#mpu)

def upload_value(key: str, upload_id: str) -> str:
    return json.dumps({"key": key, "uploadId": upload_id, "initiator": {"ID": "c", "DisplayName": "d"},
                       "owner-id": "c", "owner-display-name": "d", "x-amz-storage-class": "STANDARD",
                       "initiated": "2024-01-01T00:00:00.000Z"})


def shadow_bucket(uploads: list[tuple[str, str]]) -> dict[str, str]:
    items = {overview_key(k, u): upload_value(k, u) for k, u in uploads}
    for _, upload_id in uploads:  # part keys live in the same sublevel and must not be listed
        items[f"{upload_id}..|..00001"] = "{}"
    return items


UPLOADS = [("a", "u1"), ("a", "u2"), ("d/x", "u3"), ("d/y", "u4"), ("z", "u5")]


async def test_mpu_lists_uploads_and_ignores_part_keys():
    res = await run(SortedSource(shadow_bucket(UPLOADS)), MPU())
    assert [(u["key"], u["uploadId"]) for u in res["Uploads"]] == UPLOADS
    assert json.loads(res["Uploads"][0]["value"])["uploadId"] == "u1"
    assert res["IsTruncated"] is False and res["MaxKeys"] == 1000


async def test_mpu_prefix_and_delimiter_fold_uploads():
    res = await run(SortedSource(shadow_bucket(UPLOADS)), MPU(delimiter="/"))
    assert res["CommonPrefixes"] == ["d/"] and [u["key"] for u in res["Uploads"]] == ["a", "a", "z"]
    res = await run(SortedSource(shadow_bucket(UPLOADS)), MPU(prefix="d/"))
    assert [u["uploadId"] for u in res["Uploads"]] == ["u3", "u4"]


async def test_mpu_markers_continue_after_upload_or_after_all_uploads_of_key():
    source = SortedSource(shadow_bucket(UPLOADS))
    res = await run(source, MPU(max_keys=1))
    assert res["IsTruncated"] and (res["NextKeyMarker"], res["NextUploadIdMarker"]) == ("a", "u1")
    res = await run(source, MPU(key_marker="a", upload_id_marker="u1"))
    assert [u["uploadId"] for u in res["Uploads"]] == ["u2", "u3", "u4", "u5"]
    res = await run(source, MPU(key_marker="a"))
    assert [u["uploadId"] for u in res["Uploads"]] == ["u3", "u4", "u5"]


async def test_mpu_common_prefix_key_marker_skips_the_folder():
    res = await run(SortedSource(shadow_bucket(UPLOADS)), MPU(delimiter="/", key_marker="d/"))
    assert res["CommonPrefixes"] == [] and [u["key"] for u in res["Uploads"]] == ["z"]


def test_mpu_max_keys_is_capped_at_1000():
    assert MPU(max_keys=5000).max_keys == 1000


# ---------------------------------------------------------------- property tests against reference models

key_alphabet = st.sampled_from(["a", "b", "/", "-", ".", "|", "\x01", "\x7f", "é", "\uffff", "\U0001f600",
                                "\U0010ffff", "ab", "a/"])
keys_strategy = st.lists(st.lists(key_alphabet, min_size=1, max_size=5).map("".join), max_size=25, unique=True)
delimiters = st.sampled_from([None, "/", "a", "ab", "\U0001f600", "|", "\U0010ffff"])
prefixes = st.sampled_from(["", "a", "a/", "b", "\x7f", "\U0001f600"])
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def paginate_objects(source: SortedSource, make: Any, v2: bool, first_marker: str | None,
                           page_size: int, expected: list[tuple[str, str]]) -> None:
    """Pages until not truncated, checking each page is the next slice of `expected` (items > marker)."""
    marker = first_marker
    remaining = [item for item in expected if marker is None or b(item[1]) > b(marker)]
    for _ in range(len(remaining) + 2):
        if v2:
            res = await run(source, make(max_keys=page_size, continuation_token=marker, v2=True))
        else:
            res = await run(source, make(max_keys=page_size, marker=marker))
        got = page_items(res)
        assert got == remaining[:page_size]
        assert res["IsTruncated"] == (len(remaining) > page_size)
        if not res["IsTruncated"]:
            return
        if v2:
            marker = res["NextContinuationToken"]
        elif "NextMarker" in res:
            marker = res["NextMarker"]
        else:
            marker = res["Contents"][-1]["key"]
        assert marker == got[-1][1]
        remaining = remaining[page_size:]
    pytest.fail("pagination did not end")


@PROPERTY_SETTINGS
@given(keys=keys_strategy, prefix=prefixes, delimiter=delimiters, page_size=st.integers(1, 6),
       v2=st.booleans(), marker=st.one_of(st.none(), st.lists(key_alphabet, max_size=4).map("".join)))
async def test_delimiter_pages_match_reference_model(keys: list[str], prefix: str, delimiter: str | None,
                                                     page_size: int, v2: bool, marker: str | None):
    source = SortedSource({k: json.dumps(k) for k in keys})
    expected = grouped(sorted(keys, key=b), prefix, delimiter)

    def make(**kw: Any) -> Delimiter:
        return Delimiter(prefix=prefix, delimiter=delimiter, **kw)
    await paginate_objects(source, make, v2, marker, page_size, expected)


@st.composite
def versioned_objects(draw: st.DrawFn) -> dict[str, Obj]:
    objects: dict[str, Obj] = {}
    for key in draw(keys_strategy):
        kind = draw(st.sampled_from(["plain", "versioned", "suspended", "phd"]))
        count = draw(st.integers(0 if kind in ("phd", "suspended") else 1, 4))
        if kind == "plain":
            count = 0
        vids = sorted(draw(st.lists(st.integers(10, 99), min_size=count, max_size=count, unique=True)))
        versions = [(vid(n), draw(st.booleans())) for n in vids]
        objects[key] = Obj(kind, versions, master_vid=vid(draw(st.integers(1, 9))), master_dm=draw(st.booleans()))
    return objects


@PROPERTY_SETTINGS
@given(objects=versioned_objects(), prefix=prefixes, delimiter=delimiters, page_size=st.integers(1, 6),
       v2=st.booleans(), marker=st.one_of(st.none(), st.lists(key_alphabet, max_size=4).map("".join)))
async def test_master_pages_match_reference_model(objects: dict[str, Obj], prefix: str, delimiter: str | None,
                                                  page_size: int, v2: bool, marker: str | None):
    source = SortedSource(layout(objects))
    current = expected_current(objects)
    expected = grouped(sorted(current, key=b), prefix, delimiter)

    def make(**kw: Any) -> DelimiterMaster:
        return DelimiterMaster(prefix=prefix, delimiter=delimiter, **kw)
    await paginate_objects(source, make, v2, marker, page_size, expected)
    res = await run(source, make(max_keys=1000))
    for content in res["Contents"]:
        assert content["value"] == current[content["key"]]


VersionItem = tuple[str, str, "str | None"]  # ("cp", prefix, None) | ("v", key, versionId)


def group_versions(versions: list[tuple[str, str]], prefix: str, delimiter: str | None) -> list[VersionItem]:
    """(key, versionId) in listing order -> items with the keys under `prefix`, folders collapsed."""
    out: list[VersionItem] = []
    for key, version_id in versions:
        if not key.startswith(prefix):
            continue
        cp = common_prefix_ref(key, prefix, delimiter)
        if cp is None:
            out.append(("v", key, version_id))
        elif not out or out[-1] != ("cp", cp, None):
            out.append(("cp", cp, None))
    return out


def after_version_marker(item: VersionItem, key_marker: str | None, vid_marker: str | None,
                         objects: dict[str, Obj]) -> bool:
    """Is the item after (key_marker, vid_marker)? Within the marker's key, the range starts at the
    version key `key\\0vid_marker`, so only version keys newer-numbered than the marker follow it."""
    if key_marker is None:
        return True
    kind, key, version_id = item
    if b(key) > b(key_marker):
        return True
    if kind != "v" or key != key_marker or vid_marker is None or version_id is None:
        return False
    version_keys = {v for v, _ in objects[key].versions}
    return version_id in version_keys and version_id > vid_marker


@PROPERTY_SETTINGS
@given(objects=versioned_objects(), prefix=prefixes, delimiter=delimiters, page_size=st.integers(1, 6),
       data=st.data())
async def test_versions_pages_match_reference_model(objects: dict[str, Obj], prefix: str, delimiter: str | None,
                                                    page_size: int, data: st.DataObject):
    source = SortedSource(layout(objects))
    all_items = group_versions([(k, v) for k, v, _ in expected_versions(objects)], prefix, delimiter)
    key_marker = data.draw(st.one_of(st.none(), st.sampled_from(sorted(objects) or ["a"]),
                                     st.lists(key_alphabet, max_size=4).map("".join)))
    vid_marker = data.draw(st.one_of(st.none(), st.integers(1, 99).map(vid))) if key_marker else None
    remaining = [item for item in all_items if after_version_marker(item, key_marker, vid_marker, objects)]
    values = {(k, v): value for k, v, value in expected_versions(objects)}
    pages = await version_pages(source, prefix, delimiter, page_size, key_marker, vid_marker)
    for res, got in pages:
        assert got == remaining[:page_size]
        for v in res["Versions"]:
            assert v["value"] == values[(v["key"], v["versionId"])]
        assert res["IsTruncated"] == (len(remaining) > page_size)
        if res["IsTruncated"]:
            last = remaining[page_size - 1]
            assert (res["NextKeyMarker"], res.get("NextVersionIdMarker")) == (last[1], last[2])
        remaining = remaining[page_size:]


async def version_pages(source: Any, prefix: str, delimiter: str | None, page_size: int, key_marker: str | None,
                        vid_marker: str | None) -> list[tuple[dict[str, Any], list[VersionItem]]]:
    """ListObjectVersions pages until not truncated, resuming from the returned markers."""
    pages: list[tuple[dict[str, Any], list[VersionItem]]] = []
    for _ in range(200):
        res = await run(source, DelimiterVersions(prefix=prefix, delimiter=delimiter, max_keys=page_size,
                                                  key_marker=key_marker, version_id_marker=vid_marker))
        page: list[VersionItem] = [("cp", cp, None) for cp in res["CommonPrefixes"]]
        page += [("v", v["key"], v["versionId"]) for v in res["Versions"]]
        assert len(page) <= page_size
        pages.append((res, sorted(page, key=lambda item: (b(item[1]), item[2] or ""))))
        if not res["IsTruncated"]:
            return pages
        key_marker, vid_marker = res["NextKeyMarker"], res.get("NextVersionIdMarker")
    pytest.fail("pagination did not end")


mpu_key_alphabet = st.sampled_from(["a", "/", ".", "..|..", "|", "\x7f", "\U0001f600", "\U0010ffff"])


@PROPERTY_SETTINGS
@given(uploads=st.lists(st.tuples(st.lists(mpu_key_alphabet, min_size=1, max_size=4).map("".join),
                                  st.sampled_from(["u1", "u2", "u3"])), unique=True, max_size=15),
       prefix=st.sampled_from(["", "a", "/", "\U0001f600"]), delimiter=st.sampled_from([None, "/", ".", "|"]),
       page_size=st.integers(1, 5))
async def test_mpu_pagination_returns_every_upload_once(uploads: list[tuple[str, str]], prefix: str,
                                                        delimiter: str | None, page_size: int):
    source = SortedSource(shadow_bucket(uploads))
    in_order = sorted((u for u in uploads if u[0].startswith(prefix)), key=lambda u: b(overview_key(*u)))
    expected: list[tuple[str, str]] = []
    for key, upload_id in in_order:
        cp = common_prefix_ref(key, prefix, delimiter)
        if cp is None:
            expected.append(("u", key + "/" + upload_id))
        elif ("cp", cp) not in expected:
            expected.append(("cp", cp))
    got: list[tuple[str, str]] = []
    key_marker = upload_id_marker = None
    for _ in range(len(expected) + 2):
        res = await run(source, MPU(prefix=prefix, delimiter=delimiter, max_keys=page_size,
                                    key_marker=key_marker, upload_id_marker=upload_id_marker))
        page = [("cp", cp) for cp in res["CommonPrefixes"]] + [("u", u["key"] + "/" + u["uploadId"])
                                                              for u in res["Uploads"]]
        assert len(page) <= page_size
        got += page
        if not res["IsTruncated"]:
            break
        key_marker, upload_id_marker = res["NextKeyMarker"], res["NextUploadIdMarker"]
    got_uploads = [item for item in got if item[0] == "u"]
    assert sorted(got_uploads) == sorted(item for item in expected if item[0] == "u")
    got_uploads = [item for item in got if item[0] == "u"]
    assert sorted(got_uploads) == sorted(item for item in expected if item[0] == "u")
    assert set(got) == set(expected)
    if delimiter == "/":
        # Only a delimiter ending in a splitter character lets another key's uploads interleave with a
        # folder (mpu.py docstring); then a folder may be reported again on a later page.
        assert len(got) == len(expected)


async def test_mpu_folder_interleaved_with_a_shorter_key_loses_no_upload():
    # "overview..|..a...|..u1" (folder "a.") < "overview..|..a..|..u1" (key "a") < "overview..|..a.b..|..u2"
    uploads = [("a.", "u1"), ("a", "u1"), ("a.b", "u2")]
    source = SortedSource(shadow_bucket(uploads))
    res = await run(source, MPU(delimiter="."))
    assert res["CommonPrefixes"] == ["a."] and [u["key"] for u in res["Uploads"]] == ["a"]
    res = await run(source, MPU(delimiter=".", max_keys=1))
    assert res["CommonPrefixes"] == ["a."] and res["IsTruncated"]
    assert (res["NextKeyMarker"], res["NextUploadIdMarker"]) == ("a.", "u1")
    res = await run(source, MPU(delimiter=".", key_marker=res["NextKeyMarker"],
                                upload_id_marker=res["NextUploadIdMarker"]))
    assert res["CommonPrefixes"] == [] and [u["key"] for u in res["Uploads"]] == ["a"] and not res["IsTruncated"]


# ---------------------------------------------------------------- over the real metadata engine

class EngineSource:
    """The production stream source shape: MetaStore.read_stream on one bucket sublevel, counted."""

    def __init__(self, store: MetaStore, bucket: str = "bucket") -> None:
        self.store = store
        self.bucket = bucket
        self.entries_read = 0
        self.generators: list[Any] = []

    def __call__(self, options: dict[str, str]) -> AsyncIterator[dict[str, str]]:
        gen = self._stream(options)
        self.generators.append(gen)
        return gen

    async def _stream(self, options: dict[str, str]) -> AsyncIterator[dict[str, str]]:
        inner = self.store.read_stream([self.bucket], options)
        try:
            async for entry in inner:
                self.entries_read += 1
                yield entry
        finally:
            await inner.aclose()

    def all_closed(self) -> bool:
        return all(gen.ag_frame is None for gen in self.generators)

    async def raw_entries(self) -> list[dict[str, str]]:
        return [entry async for entry in self.store.read_stream([self.bucket], {})]


def new_store() -> MetaStore:
    return MetaStore(MemoryKV(), repair_delay_s=3600)


async def test_engine_root_listing_of_20000_keys_in_10_folders_reads_tens_of_entries():
    store = new_store()
    try:
        for f in range(10):
            for i in range(2000):
                await store.put(["bucket"], f"folder{f}/obj{i:05d}", "{}", None)
        source = EngineSource(store)
        res = await run(source, Delimiter(delimiter="/"))
        assert res["CommonPrefixes"] == [f"folder{f}/" for f in range(10)]
        assert source.entries_read <= 20
    finally:
        await store.close()


async def test_engine_master_listing_follows_engine_versioning_operations():
    store = new_store()
    try:
        put = json.loads(await store.put(["bucket"], "a", json.dumps({"n": 1}), {"versioning": True}))
        await store.put(["bucket"], "a", json.dumps({"n": 2}), {"versioning": True})
        await store.put(["bucket"], "b", json.dumps({"isDeleteMarker": True}), {"versioning": True})
        newest = json.loads(await store.put(["bucket"], "c", json.dumps({"n": 3}), {"versioning": True}))
        await store.delete(["bucket"], "c", {"versionId": newest["versionId"]})  # leaves no version: PHD only
        await store.put(["bucket"], "d", json.dumps({"n": 4}), None)
        source = EngineSource(store)
        res = await run(source, DelimiterMaster())
        assert [(c["key"], json.loads(c["value"])["n"]) for c in res["Contents"]] == [("a", 2), ("d", 4)]
        versions = await run(source, DelimiterVersions())
        assert [v["key"] for v in versions["Versions"]] == ["a", "a", "b", "d"]
        assert versions["Versions"][1]["versionId"] == put["versionId"]
        assert versions["Versions"][3]["versionId"] == "null"
    finally:
        await store.close()


@PROPERTY_SETTINGS
@given(keys=keys_strategy, prefix=prefixes, delimiter=delimiters, page_size=st.integers(1, 6), v2=st.booleans(),
       marker=st.one_of(st.none(), st.lists(key_alphabet, max_size=4).map("".join)))
async def test_engine_delimiter_pages_match_reference_model(keys: list[str], prefix: str, delimiter: str | None,
                                                            page_size: int, v2: bool, marker: str | None):
    store = new_store()
    try:
        for key in keys:
            await store.put(["bucket"], key, json.dumps(key), None)
        expected = grouped(sorted(keys, key=b), prefix, delimiter)

        def make(**kw: Any) -> Delimiter:
            return Delimiter(prefix=prefix, delimiter=delimiter, **kw)
        await paginate_objects(EngineSource(store), make, v2, marker, page_size, expected)  # type: ignore[arg-type]
    finally:
        await store.close()


engine_ops = st.lists(st.tuples(st.sampled_from(["vput", "dm", "sput", "sdm", "delv", "plain"]),
                                st.integers(0, 7), st.integers(0, 5)), max_size=30)


async def apply_engine_ops(store: MetaStore, keys: list[str], ops: list[tuple[str, int, int]]) -> None:
    """Runs the gateway's metadata calls (docs/versioning.md#null-versions table) on a few keys; a key is plain-only or versioned."""
    vids: dict[str, list[str]] = {}
    plain_keys = {key for i, key in enumerate(keys) if i % 3 == 2}
    for op, key_index, pick in ops:
        key = keys[key_index % len(keys)]
        if key in plain_keys:
            await store.put(["bucket"], key, json.dumps({"k": key, "plain": pick}), None)
            continue
        value = {"k": key, "n": pick}
        if op in ("dm", "sdm"):
            value["isDeleteMarker"] = True
        if op == "delv":
            if vids.get(key):
                vid_to_delete = vids[key].pop(pick % len(vids[key]))
                await store.delete(["bucket"], key, {"versionId": vid_to_delete})
            continue
        options = {"versioning": True} if op in ("vput", "dm") else {"versionId": ""}
        reply = json.loads(await store.put(["bucket"], key, json.dumps(value), options))
        vids.setdefault(key, []).append(reply["versionId"])


def versions_reference(entries: list[dict[str, str]], prefix: str, delimiter: str | None) -> list[VersionItem]:
    """Master (unless PHD) then its version keys minus the one repeating the master, folded by delimiter."""
    versions: list[tuple[str, str]] = []
    master: tuple[str, str] | None = None
    for entry in entries:
        key, sep, version_id = entry["key"].partition(SEP)
        if '"isPHD"' in entry["value"]:
            continue
        if not sep:
            version_id = json.loads(entry["value"]).get("versionId", "null")
            master = (key, version_id)
        elif master == (key, version_id):
            continue
        versions.append((key, version_id))
    return group_versions(versions, prefix, delimiter)


@PROPERTY_SETTINGS
@given(keys=st.lists(st.lists(key_alphabet, min_size=1, max_size=4).map("".join), min_size=1, max_size=8,
                     unique=True),
       ops=engine_ops, prefix=prefixes, delimiter=delimiters, page_size=st.integers(1, 5))
async def test_engine_master_and_versions_listings_agree_with_engine_reads(
        keys: list[str], ops: list[tuple[str, int, int]], prefix: str, delimiter: str | None, page_size: int):
    store = new_store()
    try:
        await apply_engine_ops(store, keys, ops)
        source = EngineSource(store)
        entries = await source.raw_entries()

        # ListObjectVersions, paginated with the returned markers.
        pages = await version_pages(source, prefix, delimiter, page_size, None, None)
        assert [item for _, page in pages for item in page] == versions_reference(entries, prefix, delimiter)

        # ListObjects: paginate first (reads below may repair PHD masters), then ask the engine.
        master_pages = []
        marker = None
        for _ in range(200):
            res = await run(source, DelimiterMaster(prefix=prefix, delimiter=delimiter, max_keys=page_size,
                                                    marker=marker))
            master_pages.append(res)
            if not res["IsTruncated"]:
                break
            marker = res.get("NextMarker") or res["Contents"][-1]["key"]
        listed = {c["key"]: c["value"] for res in master_pages for c in res["Contents"]}
        listed_prefixes = [cp for res in master_pages for cp in res["CommonPrefixes"]]
        current: dict[str, str] = {}
        for key in keys:
            try:
                value = await store.get(["bucket"], key, None)
            except MetadataError:
                continue
            if not json.loads(value).get("isDeleteMarker"):
                current[key] = value
        expected = grouped(sorted(current, key=b), prefix, delimiter)
        assert [("cp", cp) for cp in listed_prefixes] == [item for item in expected if item[0] == "cp"]
        assert listed == {key: current[key] for kind, key in expected if kind == "key"}
    finally:
        await store.close()
