"""Stored metadata documents: BucketInfo (§7.1), ObjectMD (§7.2), users..bucket entries.

Field names are the original's, so a metadata directory written by either
implementation reads back in the other.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

METASTORE = "__metastore"
USERS_BUCKET = "users..bucket"
SPLITTER = "..|.."
MPU_SHADOW_PREFIX = "mpuShadowBucket"
BUCKET_MODEL_VERSION = 16
OBJECT_MODEL_VERSION = 6
MAX_KEY_BYTES = 1024   # AWS's object key length limit
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
ADMIN_OWNER = "admin"


def now_iso() -> str:
    dt = datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def default_bucket_acl() -> dict[str, Any]:
    return {"Canned": "private", "FULL_CONTROL": [], "WRITE": [], "WRITE_ACP": [], "READ": [], "READ_ACP": []}


@dataclass
class BucketInfo:
    name: str
    owner: str
    owner_display_name: str
    creation_date: str
    location_constraint: str | None = None
    versioning: dict[str, str] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def versioning_status(self) -> str | None:
        """None (never configured), "Enabled" or "Suspended"."""
        return (self.versioning or {}).get("Status")

    def serialize(self) -> str:
        doc = {
            "acl": default_bucket_acl(), "transient": False, "deleted": False,
            "serverSideEncryption": None, "mdBucketModelVersion": BUCKET_MODEL_VERSION,
            "websiteConfiguration": None, "cors": None, "replicationConfiguration": None,
            "lifecycleConfiguration": None, "bucketPolicy": None, "uid": str(uuid.uuid4()),
            "readLocationConstraint": None, "isNFS": None, "ingestion": None, "azureInfo": None,
            "objectLockEnabled": False, "objectLockConfiguration": None,
            "notificationConfiguration": None, "tags": [], "quotaMax": 0,
        }
        doc.update(self.raw)
        doc.update({"name": self.name, "owner": self.owner, "ownerDisplayName": self.owner_display_name,
                    "creationDate": self.creation_date, "locationConstraint": self.location_constraint,
                    "versioningConfiguration": self.versioning})
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "BucketInfo":
        """From the parsed `__metastore` value (BucketInfo.serialize() of either implementation)."""
        return cls(name=doc["name"], owner=doc["owner"], owner_display_name=doc.get("ownerDisplayName", ""),
                   creation_date=doc["creationDate"], location_constraint=doc.get("locationConstraint"),
                   versioning=doc.get("versioningConfiguration"), raw=doc)


def users_bucket_key(canonical_id: str, bucket: str) -> str:
    return f"{canonical_id}{SPLITTER}{bucket}"


def users_bucket_value(creation_date: str) -> str:
    return json.dumps({"creationDate": creation_date, "ingestion": None})


def stored_content_encoding(value: str) -> str:
    """Content-Encoding without aws-chunked, which describes the upload, not the object."""
    return ",".join(e.strip() for e in value.split(",") if e.strip() and e.strip().lower() != "aws-chunked")


def new_object_md(key: str, owner_id: str, owner_name: str, *, size: int, md5: str,
                  location: list[dict[str, Any]] | None, data_store_name: str,
                  headers: dict[str, str], user_meta: dict[str, str]) -> dict[str, Any]:
    """An ObjectMD document for a new object version (field names of md-model-version 6)."""
    ts = now_iso()
    md: dict[str, Any] = {
        "owner-display-name": owner_name, "owner-id": owner_id,
        "cache-control": headers.get("cache-control", ""),
        "content-disposition": headers.get("content-disposition", ""),
        "content-encoding": stored_content_encoding(headers.get("content-encoding", "")),
        "content-language": headers.get("content-language", ""),
        "expires": headers.get("expires", ""),
        "content-length": size, "content-type": headers.get("content-type", ""),
        "content-md5": md5, "creation-time": ts, "last-modified": ts,
        "x-amz-version-id": "null", "x-amz-server-version-id": "",
        "x-amz-storage-class": headers.get("x-amz-storage-class", "STANDARD") or "STANDARD",
        "x-amz-server-side-encryption": "", "x-amz-server-side-encryption-aws-kms-key-id": "",
        "x-amz-server-side-encryption-customer-algorithm": "",
        "x-amz-website-redirect-location": headers.get("x-amz-website-redirect-location", ""),
        "acl": {"Canned": "private", "FULL_CONTROL": [], "WRITE_ACP": [], "READ": [], "READ_ACP": []},
        "key": key, "location": location, "isNull": None, "nullVersionId": None,
        "isDeleteMarker": None, "versionId": None, "tags": {},
        "replicationInfo": {"status": "", "backends": [], "content": [], "destination": "",
                            "storageClass": "", "role": "", "storageType": "", "dataStoreVersionId": "",
                            "isNFS": None},
        "dataStoreName": data_store_name, "originOp": "s3:ObjectCreated:Put",
        "deleted": False, "isPHD": False, "md-model-version": OBJECT_MODEL_VERSION,
    }
    md.update(user_meta)
    return {k: v for k, v in md.items() if v is not None}
