"""Part numbers: parsing ?partNumber and locating a part inside a stored object.

Shared by the multipart actions and GetObject/HeadObject (?partNumber=N).
"""
from __future__ import annotations

from typing import Any, Mapping

from gateway.models import ObjectMD
from gateway.objectdata import part_number_of_location
from shared.errors import S3Error

MIN_PART_NUMBER, MAX_PART_NUMBER = 1, 10_000        # AWS: part numbers 1..10000
_MAX_PART_NUMBER_DIGITS = len(str(MAX_PART_NUMBER))  # longer values are refused before int()
_PART_NUMBER_MESSAGE = f"Part number must be an integer between {MIN_PART_NUMBER} and {MAX_PART_NUMBER}, inclusive"


def part_number_argument_error(value: str) -> S3Error:
    return S3Error("InvalidArgument", _PART_NUMBER_MESSAGE, ArgumentName="partNumber", ArgumentValue=value)


def parse_part_number(value: str | None) -> int:
    """The partNumber query parameter: an integer 1..10000, else InvalidArgument."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > _MAX_PART_NUMBER_DIGITS:
        raise part_number_argument_error(value or "")
    number = int(value)
    if not MIN_PART_NUMBER <= number <= MAX_PART_NUMBER:
        raise part_number_argument_error(value)
    return number


def part_range(md: Mapping[str, Any], part_number: int) -> tuple[int, int, int]:
    """(first, last, parts_count) of part `part_number` of an object, for GetObject/HeadObject ?partNumber=N.

    Parts are the groups of locations sharing the part number of their dataStoreETag (the
    numbers the parts were uploaded with, as the reference). A non-multipart object is one part: its
    partNumber=1 is the whole object ((0, size - 1, 1); last is -1 for an empty object). Any other
    part number is InvalidPartNumber (416).
    """
    obj = md if isinstance(md, ObjectMD) else ObjectMD(md)   # a stored document is read as an ObjectMD
    if not obj.upload_id:
        if part_number == 1:
            return 0, obj.size - 1, 1
        raise invalid_part_number()
    ranges: dict[int, list[int]] = {}
    offset = 0
    for loc in obj.location or []:
        loc_size = int(loc.get("size", 0))
        number = part_number_of_location(loc)
        if number is None:
            number = len(ranges) + 1
        span = ranges.setdefault(number, [offset, offset - 1])
        span[1] = offset + loc_size - 1
        offset += loc_size
    if part_number not in ranges:
        raise invalid_part_number()
    first, last = ranges[part_number]
    return first, last, len(ranges)


def invalid_part_number() -> S3Error:
    return S3Error("InvalidPartNumber")
