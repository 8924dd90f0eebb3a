"""Version ids: format and ordering, external encodings with their test vectors (docs/versioning.md)."""
from __future__ import annotations

import threading

import pytest

from shared import versionid
from shared.versionid import decode, encode, generate, get_inf_vid

VID = "98299999999999999999RG001  "   # ts 1700000000000, seq 0, RG001 (docs/versioning.md#external-encoding)


def test_base62_test_vector():
    assert encode(VID) == "aJfG35aUKYOz00000000001I4j3QKItW"
    assert decode("aJfG35aUKYOz00000000001I4j3QKItW") == VID


def test_hex_test_vector_of_27_char_id():
    assert versionid.hex_encode(VID) == "393832393939393939393939393939393939393952473030312020"
    assert decode("393832393939393939393939393939393939393952473030312020") == VID


def test_id_with_dmd_suffix_encodes_as_hex():
    assert encode(VID + "0") == "39383239393939393939393939393939393939395247303031202030"
    assert decode("39383239393939393939393939393939393939395247303031202030") == VID + "0"


def test_inf_vid_vector_and_length():
    assert get_inf_vid("RG001") == "99999999999999999999RG001  "
    assert len(get_inf_vid("RG001")) == 27
    assert encode(get_inf_vid("RG001")) == "aUKYOzaUKYOz00000000001I4j3QKItW"


def test_null_passes_through_unencoded():
    assert encode(versionid.EXTERNAL_NULL) == "null"
    assert decode("null") == "null"


def test_constants():
    assert versionid.SEPARATOR == "\x00"
    assert versionid.EXTERNAL_NULL == "null"


@pytest.mark.parametrize("info", ["", "0", "12345"])
def test_generated_ids_round_trip_through_encode_decode(info):
    vid = generate("RG001", info)
    assert len(vid) == 27 + len(info)
    encoded = encode(vid)
    assert len(encoded) == (32 if not info else 2 * len(vid))
    assert decode(encoded) == vid


def test_replication_group_is_padded_or_truncated_to_7():
    assert generate("PARIS")[20:27] == "PARIS  "
    assert generate("LONGREGION")[20:27] == "LONGREG"
    assert get_inf_vid("X").endswith("X      ")


def test_generated_ids_sort_newest_first_and_never_repeat():
    ids = [generate("RG001", "") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids, reverse=True)          # each new id is smaller: newest first
    assert all(i < get_inf_vid("RG001") for i in ids)  # the inf vid is older than every real id


def test_generation_is_unique_across_threads():
    results: list[list[str]] = [[] for _ in range(4)]

    def worker(out: list[str]) -> None:
        out.extend(generate() for _ in range(5_000))
    threads = [threading.Thread(target=worker, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for r in results for i in r]
    assert len(set(flat)) == len(flat)


def test_clock_stepping_back_still_yields_decreasing_ids(monkeypatch):
    monkeypatch.setattr(versionid, "_GENERATOR", versionid._Generator())
    now = [1_700_000_000_000 * 1_000_000]
    monkeypatch.setattr(versionid.time, "time_ns", lambda: now[0])
    first = [generate() for _ in range(2)]   # the first call's wait for a new ms gives up on a frozen clock
    now[0] += 5_000_000
    a = generate()
    now[0] -= 3_000_000                     # wall clock steps back 3 ms
    b = generate()
    assert first[0] > first[1] > a > b


def test_million_ids_in_one_ms_borrow_the_next_ms(monkeypatch):
    gen = versionid._Generator()
    monkeypatch.setattr(versionid, "_GENERATOR", gen)
    frozen = 1_700_000_000_000
    gen._last_ts, gen._seq = frozen, versionid.MAX_SEQ - 1
    monkeypatch.setattr(versionid.time, "time_ns", lambda: frozen * 1_000_000)
    ids = [generate() for _ in range(3)]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
    assert ids[0][14:20] == "000000"          # seq MAX_SEQ
    assert ids[1][:14] == f"{versionid.MAX_TS - frozen - 1:014d}"


@pytest.mark.parametrize("bad", [
    "", "abc", "x" * 31,                                 # too short for either encoding
    "aJfG35aUKYOz00000000001I4j3QKIt!",                  # 32 chars, not base62
    "zzzzzzaUKYOz00000000001I4j3QKItW",                  # part1 overflows 10 digits
    "aJfG35aUKYOz0000000000000000000z",                  # decodes to a wrong length
    "3938323939393939393939393939393939393939524730303120202",   # odd-length hex
    "zz3832393939393939393939393939393939393952473030312020",    # not hex
    "ff" * 17,                                          # hex of bytes that are not UTF-8
])
def test_decode_rejects_malformed_ids_with_value_error(bad):
    with pytest.raises(ValueError):
        decode(bad)


def test_decode_rejects_non_string():
    with pytest.raises(ValueError):
        decode(123)  # type: ignore[arg-type]
