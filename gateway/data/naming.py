"""How a cloud location (aws_s3, azure) names the blobs it writes: its `dataLayout`.

- "named" (the default, as the reference describes): an object's bytes are stored under the
  object's own name in the remote bucket/container, `<key>` with `bucketMatch: true`,
  `<bucket>/<key>` with `bucketMatch: false`, so the data is usable from the cloud directly.
  An overwrite replaces the remote object. The data key recorded in the object's metadata is
  `n1:<discriminator>:<remote name>`: the remote version id (aws_s3, whose bucket must keep
  versions) or the blob's ETag (azure). Reads and deletes address exactly that version (an
  aws_s3 `versionId`, an azure `If-Match`), so freeing the bytes a newer write replaced never
  touches the newer bytes, and a read of stale metadata never returns another version's bytes.
  Parts of multipart uploads: aws_s3 stores them under opaque keys (the object lists them);
  azure stages them as uncommitted blocks of the object's blob (`b1:` keys) and Complete
  commits one block list, so the object is one blob and no byte is copied; each piece of the
  completed object is then `p1:<offset>:<length>:<ETag>:<name>` (those bytes of that blob).
- "opaque": every put gets a fresh key of 40 random hex digits, whatever the object's name
  (the layout before issue 16; keys never collide, even between deployments sharing a remote
  bucket, and nothing needs remote versioning). Keep it for remotes that are only storage.
"""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import quote, unquote

from gateway.data.base import ObjectName, is_valid_key

LAYOUTS = ("named", "opaque")
DEFAULT_LAYOUT = "named"
_PREFIX = "n1:"
_STAGED = "b1:"
_PIECE = "p1:"


def layout_of(kind: str, details: Mapping[str, Any]) -> str:
    """The `dataLayout` of a location's details; ValueError for anything but LAYOUTS."""
    layout = details.get("dataLayout", DEFAULT_LAYOUT)
    if layout not in LAYOUTS:
        raise ValueError(f"{kind} location: 'details.dataLayout' must be one of {list(LAYOUTS)}")
    return layout


def remote_name(name: ObjectName, bucket_match: bool) -> str:
    """The remote object/blob name of an S3 object: its key (bucketMatch) or `<bucket>/<key>`."""
    return name.key if bucket_match else f"{name.bucket}/{name.key}"


def named_key(remote: str, discriminator: str) -> str:
    """The data key of the bytes one put wrote under `remote` (`discriminator`: version id or ETag)."""
    return f"{_PREFIX}{quote(discriminator, safe='')}:{remote}"


def parse_named_key(key: str) -> tuple[str, str] | None:
    """(remote name, discriminator) of a named key, None for anything else."""
    if not isinstance(key, str) or not key.startswith(_PREFIX):
        return None
    discriminator, sep, remote = key[len(_PREFIX):].partition(":")
    if not sep or not remote or not discriminator:
        return None
    return remote, unquote(discriminator)


def staged_key(nonce: str, blocks: int, size: int, remote: str) -> str:
    """The data key of a part staged as `blocks` uncommitted blocks (`size` bytes) of blob `remote`."""
    return f"{_STAGED}{nonce}:{blocks}:{size}:{remote}"


def parse_staged_key(key: str) -> tuple[str, int, int, str] | None:
    """(nonce, block count, byte count, remote name) of a staged key, None for anything else."""
    if not isinstance(key, str) or not key.startswith(_STAGED):
        return None
    fields = key[len(_STAGED):].split(":", 3)
    if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit() or not fields[3]:
        return None
    return fields[0], int(fields[1]), int(fields[2]), fields[3]


def piece_key(offset: int, length: int, discriminator: str, remote: str) -> str:
    """The data key of `length` bytes at `offset` of the blob `remote` as it is at `discriminator` (ETag)."""
    return f"{_PIECE}{offset}:{length}:{quote(discriminator, safe='')}:{remote}"


def parse_piece_key(key: str) -> tuple[int, int, str, str] | None:
    """(offset, length, discriminator, remote name) of a piece key, None for anything else."""
    if not isinstance(key, str) or not key.startswith(_PIECE):
        return None
    fields = key[len(_PIECE):].split(":", 3)
    if len(fields) != 4 or not fields[0].isdigit() or not fields[1].isdigit() or not fields[2] or not fields[3]:
        return None
    return int(fields[0]), int(fields[1]), unquote(fields[2]), fields[3]


def is_cloud_key(key: str) -> bool:
    """A key a cloud location may have produced: opaque hex, named, staged or a piece."""
    return (is_valid_key(key) or parse_named_key(key) is not None or parse_staged_key(key) is not None
            or parse_piece_key(key) is not None)
