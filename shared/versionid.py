"""Version ids: generation, ordering and the external (API) encodings.

This module owns the internal version-id format (docs/versioning.md#version-ids) and
the two external encodings (docs/versioning.md#external-encoding: legacy hex, 2021+
base62 "tiny ids"):

    <14 digits 99999999999999-now_ms> <6 digits 999999-seq> <7 chars RG> <info>

The digits are inverted so that ids sort ascending from newest to oldest (byte
order), which makes a forward scan over `key\\0<vid>` yield the newest version
first. Generation state (last millisecond, sequence in that millisecond) is
process-global, as in Arsenal's `versioning/VersionID.js`.
"""
from __future__ import annotations

import threading
import time

SEPARATOR = "\x00"          # between an object key and its version id (VersionId.Separator)
# key + VERSIONS_END bounds "the master and every version key of key" (the character after SEPARATOR).
VERSIONS_END = chr(ord(SEPARATOR) + 1)
EXTERNAL_NULL = "null"      # ExternalNullVersionId: the null version, never encoded

LENGTH_TS = 14              # inverted epoch in ms ("good until 5138")
LENGTH_SEQ = 6              # inverted position inside the millisecond
LENGTH_RG = 7               # replication group id, right-padded with spaces / truncated
MAX_TS = 10**LENGTH_TS - 1
MAX_SEQ = 10**LENGTH_SEQ - 1
DEFAULT_REPLICATION_GROUP_ID = "RG001"

# An id without the `info` suffix: what encode() turns into base62.
BASE_ID_LENGTH = LENGTH_TS + LENGTH_SEQ + LENGTH_RG   # 27

BASE62_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BASE62_INDEX = {c: i for i, c in enumerate(BASE62_ALPHABET)}
_B62_DIGITS_HALF = (LENGTH_TS + LENGTH_SEQ) // 2      # 10 decimal digits per integer part
_B62_INT_WIDTH = 6                                    # ceil(10 * log(10)/log(62))
BASE62_ENCODED_LENGTH = 32
_B62_STRING_WIDTH = BASE62_ENCODED_LENGTH - 2 * _B62_INT_WIDTH   # 20


def _pad_rg(replication_group_id: str) -> str:
    return (replication_group_id + " " * LENGTH_RG)[:LENGTH_RG]


def get_inf_vid(replication_group_id: str = DEFAULT_REPLICATION_GROUP_ID) -> str:
    """The max-epoch id used for versions written before versioning; sorts after (older than) every real id."""
    return f"{MAX_TS:0{LENGTH_TS}d}{MAX_SEQ:0{LENGTH_SEQ}d}{_pad_rg(replication_group_id)}"


class _Generator:
    """Process-global (last ms, seq) state; thread-safe because the engine may generate from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ts = 0
        self._seq = 0

    def next_slot(self) -> tuple[int, int]:
        with self._lock:
            if self._last_ts == 0:
                # As Arsenal: wait for the current millisecond to end once per process, so ids
                # of a process restarted within the same millisecond cannot collide.
                start = time.time_ns() // 1_000_000
                deadline = time.monotonic_ns() + 2_000_000   # never spin forever on a stuck clock
                while time.time_ns() // 1_000_000 == start and time.monotonic_ns() < deadline:
                    pass
            now = time.time_ns() // 1_000_000
            if now > self._last_ts:
                self._last_ts, self._seq = now, 0
            else:
                # Same millisecond, or the wall clock stepped back: stay on the last ms and keep
                # counting so ids remain unique and strictly ordered.
                self._seq += 1
                if self._seq > MAX_SEQ:
                    # A million ids in one ms: borrow the next millisecond rather than wrap.
                    self._last_ts, self._seq = self._last_ts + 1, 0
            return self._last_ts, self._seq


_GENERATOR = _Generator()


def generate(replication_group_id: str = DEFAULT_REPLICATION_GROUP_ID, info: str = "") -> str:
    """A fresh version id, newer (smaller in byte order) than every id generated before in this process."""
    ts, seq = _GENERATOR.next_slot()
    return f"{MAX_TS - ts:0{LENGTH_TS}d}{MAX_SEQ - seq:0{LENGTH_SEQ}d}{_pad_rg(replication_group_id)}{info}"


# --- external encodings -------------------------------------------------------------------------

def _b62_int_encode(n: int) -> str:
    out = []
    while True:
        n, r = divmod(n, 62)
        out.append(BASE62_ALPHABET[r])
        if n == 0:
            return "".join(reversed(out))


def _b62_int_decode(s: str) -> int:
    n = 0
    for c in s:
        n = n * 62 + _BASE62_INDEX[c]
    return n


def _b62_bytes_encode(data: bytes) -> str:
    """base-x encoding: the bytes as a big-endian integer, each leading zero byte as one '0'."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    rest = data[zeros:]
    body = _b62_int_encode(int.from_bytes(rest, "big")) if rest else ""
    return "0" * zeros + body


def _b62_bytes_decode(s: str) -> bytes:
    zeros = len(s) - len(s.lstrip("0"))
    rest = s[zeros:]
    if not rest:
        return b"\x00" * zeros
    n = _b62_int_decode(rest)
    return b"\x00" * zeros + n.to_bytes((n.bit_length() + 7) // 8, "big")


def base62_encode(vid: str) -> str:
    part1 = int(vid[:_B62_DIGITS_HALF])
    part2 = int(vid[_B62_DIGITS_HALF:2 * _B62_DIGITS_HALF])
    part3 = vid[2 * _B62_DIGITS_HALF:].encode("utf-8")
    enc1 = _b62_int_encode(part1).rjust(_B62_INT_WIDTH, "0")[-_B62_INT_WIDTH:]
    enc2 = _b62_int_encode(part2).rjust(_B62_INT_WIDTH, "0")[-_B62_INT_WIDTH:]
    enc3 = _b62_bytes_encode(part3).rjust(_B62_STRING_WIDTH, "0")[-_B62_STRING_WIDTH:]
    return enc1 + enc2 + enc3


def base62_decode(encoded: str) -> str:
    if len(encoded) != BASE62_ENCODED_LENGTH or any(c not in _BASE62_INDEX for c in encoded):
        raise ValueError("invalid base62 version id")
    part1 = _b62_int_decode(encoded[:_B62_INT_WIDTH])
    part2 = _b62_int_decode(encoded[_B62_INT_WIDTH:2 * _B62_INT_WIDTH])
    # Leading '0's of the string part are padding, not null bytes (as Arsenal strips them).
    part3 = _b62_bytes_decode(encoded[2 * _B62_INT_WIDTH:].lstrip("0"))
    try:
        tail = part3.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("invalid base62 version id") from exc
    return f"{part1:0{_B62_DIGITS_HALF}d}{part2:0{_B62_DIGITS_HALF}d}{tail}"


def hex_encode(vid: str) -> str:
    return vid.encode("utf-8").hex()


def hex_decode(encoded: str) -> str:
    try:
        result = bytes.fromhex(encoded).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid hex version id") from exc
    if not result:
        raise ValueError("invalid hex version id: empty")
    return result


def encode(vid: str) -> str:
    """External form of an internal id: base62 for a suffix-less 27-char id, hex otherwise; 'null' unchanged."""
    if vid == EXTERNAL_NULL:
        return vid
    if len(vid) == BASE_ID_LENGTH:
        return base62_encode(vid)
    return hex_encode(vid)


def decode(encoded: str) -> str:
    """Internal id of an external one. Raises ValueError (the gateway answers InvalidArgument)."""
    if not isinstance(encoded, str):
        raise ValueError("version id must be a string")  # noqa: TRY004 - callers map ValueError to InvalidArgument
    if encoded == EXTERNAL_NULL:
        return encoded
    if len(encoded) == BASE62_ENCODED_LENGTH:
        decoded = base62_decode(encoded)
        if len(decoded) != BASE_ID_LENGTH:
            raise ValueError("invalid base62 version id: wrong decoded length")
        return decoded
    if len(encoded) > BASE62_ENCODED_LENGTH:
        return hex_decode(encoded)
    raise ValueError(f"cannot decode version id of length {len(encoded)}")
