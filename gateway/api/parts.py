"""Part numbers: parsing ?partNumber and locating a part inside a stored object.

Shared by the multipart actions and GetObject/HeadObject (?partNumber=N).
"""
from __future__ import annotations

from typing import Any

from shared.errors import S3Error

MIN_PART_NUMBER, MAX_PART_NUMBER = 1, 10_000        # AWS: part numbers 1..10000
PART_NUMBER_DIGITS = 5                              # part keys carry a zero-padded 5-digit number
_PART_NUMBER_MESSAGE = f"Part number must be an integer between {MIN_PART_NUMBER} and {MAX_PART_NUMBER}, inclusive"


def part_number_argument_error(value: str) -> S3Error:
    return S3Error("InvalidArgument", _PART_NUMBER_MESSAGE, ArgumentName="partNumber", ArgumentValue=value)


def parse_part_number(value: str | None) -> int:
    """The partNumber query parameter: an integer 1..10000, else InvalidArgument."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > PART_NUMBER_DIGITS:
        raise part_number_argument_error(value or "")
    number = int(value)
    if not MIN_PART_NUMBER <= number <= MAX_PART_NUMBER:
        raise part_number_argument_error(value)
    return number


def part_range(md: dict[str, Any], part_number: int) -> tuple[int, int, int]:
    """(first, last, parts_count) of part `part_number` of an object, for GetObject/HeadObject ?partNumber=N.

    Parts are the groups of locations sharing the "<partNumber>:" prefix of their dataStoreETag (the
    numbers the parts were uploaded with, as the reference). A non-multipart object is one part: its
    partNumber=1 is the whole object ((0, size - 1, 1); last is -1 for an empty object). Any other
    part number is InvalidPartNumber (416).
    """
    size = int(md.get("content-length", 0))
    if not md.get("uploadId"):
        if part_number == 1:
            return 0, size - 1, 1
        raise invalid_part_number()
    ranges: dict[int, list[int]] = {}
    offset = 0
    for loc in md.get("location") or []:
        loc_size = int(loc.get("size", 0))
        number_text = str(loc.get("dataStoreETag", "")).partition(":")[0]
        number = int(number_text) if number_text.isdigit() else len(ranges) + 1
        span = ranges.setdefault(number, [offset, offset - 1])
        span[1] = offset + loc_size - 1
        offset += loc_size
    if part_number not in ranges:
        raise invalid_part_number()
    first, last = ranges[part_number]
    return first, last, len(ranges)


def invalid_part_number() -> S3Error:
    return S3Error("InvalidPartNumber")
