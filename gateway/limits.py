"""AWS's S3 limits, each named once (Amazon S3 User Guide, "Amazon S3 multipart upload limits",
"Object key naming", "Working with object metadata"; API reference of each action)."""
from __future__ import annotations

from shared.errors import S3Error

MAX_KEY_BYTES = 1024                    # an object key, in UTF-8
MAX_SINGLE_UPLOAD_BYTES = 5 * 1024 ** 3  # one PutObject, POST object, CopyObject, UploadPart(Copy) body
MAX_PAGE = 1000                         # listings, ListParts, DeleteObjects: the cap and default of a page
MAX_USER_METADATA_BYTES = 2048          # x-amz-meta-* names (without the prefix) and values together


def check_object_key(key: str) -> None:
    """KeyTooLongError past 1024 UTF-8 bytes; a NUL is refused because it separates a key from
    its version id in the metadata key space (docs/metadata-keys.md)."""
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "Object key names may not contain a NUL character")
