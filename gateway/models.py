"""Stored metadata documents: BucketMD, ObjectMD, users..bucket entries (docs/metadata-keys.md#stored-documents).

Field names are the original's, so a metadata directory written by either
implementation reads back in the other.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

BUCKET_MODEL_VERSION = 16
OBJECT_MODEL_VERSION = 6
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
USER_META_PREFIX = "x-amz-meta-"
_USER_META_PREFIX_LEN = len(USER_META_PREFIX)
# Representation headers an ObjectMD stores under their HTTP names (Content-Type apart).
STORED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")


def now_iso() -> str:
    dt = datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read",
               "bucket-owner-read", "bucket-owner-full-control", "log-delivery-write")


def canned_acl(canned: str = "private", *, bucket: bool) -> dict[str, Any]:
    """The stored ACL of a canned ACL name (a bucket's has a WRITE grant list, an object's has none)."""
    acl: dict[str, Any] = {"Canned": canned, "FULL_CONTROL": [], "WRITE_ACP": [], "READ": [], "READ_ACP": []}
    if bucket:
        acl["WRITE"] = []
    return acl


@dataclass
class BucketMD:
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

    @property
    def location(self) -> str:
        """Where the bucket's objects are stored (its LocationConstraint, us-east-1 when none)."""
        return self.location_constraint or "us-east-1"

    @property
    def deleted(self) -> bool:
        """Marked deleted: a bucket being removed, answered as missing."""
        return bool(self.raw.get("deleted"))

    @property
    def object_lock_enabled(self) -> bool:
        return bool(self.raw.get("objectLockEnabled"))

    @property
    def acl(self) -> dict[str, Any]:
        return self.raw.get("acl") or canned_acl(bucket=True)

    @acl.setter
    def acl(self, value: dict[str, Any]) -> None:
        self.raw["acl"] = value

    @property
    def policy(self) -> dict[str, Any] | None:
        """The bucket policy as the original stores it (`bucketPolicy`: the parsed JSON document)."""
        return self.raw.get("bucketPolicy") or None

    @property
    def policy_id(self) -> str | None:
        """Ours: an id set with each PutBucketPolicy, the key of the parsed-policy cache (gateway/authz.py)."""
        return self.raw.get("bucketPolicyId") or None

    def set_policy(self, doc: dict[str, Any] | None, policy_id: str | None) -> None:
        self.raw["bucketPolicy"] = doc
        self.raw["bucketPolicyId"] = policy_id

    @property
    def public_access_block(self) -> dict[str, bool] | None:
        """{BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets} or None."""
        return self.raw.get("publicAccessBlockConfiguration") or None

    @public_access_block.setter
    def public_access_block(self, value: dict[str, bool] | None) -> None:
        self.raw["publicAccessBlockConfiguration"] = value

    @property
    def object_ownership(self) -> str | None:
        """BucketOwnerEnforced, BucketOwnerPreferred, ObjectWriter, or None (no OwnershipControls:
        ObjectWriter's behaviour)."""
        rules = (self.raw.get("ownershipControls") or {}).get("Rules") or []
        return rules[0].get("ObjectOwnership") if rules else None

    @object_ownership.setter
    def object_ownership(self, value: str | None) -> None:
        self.raw["ownershipControls"] = {"Rules": [{"ObjectOwnership": value}]} if value else None

    @property
    def server_side_encryption(self) -> dict[str, Any] | None:
        """The bucket's default encryption, the original's `serverSideEncryption` ({cryptoScheme,
        algorithm, masterKeyId, configuredMasterKeyId?, mandatory}); gateway/sse.py reads it."""
        return self.raw.get("serverSideEncryption") or None

    @server_side_encryption.setter
    def server_side_encryption(self, value: dict[str, Any] | None) -> None:
        self.raw["serverSideEncryption"] = value

    @property
    def tags(self) -> list[dict[str, str]]:
        """The bucket's tag set, [{"Key", "Value"}] in the order it was put (the original's shape)."""
        return self.raw.get("tags") or []

    @tags.setter
    def tags(self, value: list[dict[str, str]]) -> None:
        self.raw["tags"] = value

    @property
    def cors(self) -> list[dict[str, Any]] | None:
        """The CORS rules as the original stores them (gateway/cors.py): [{allowedMethods,
        allowedOrigins, allowedHeaders?, exposeHeaders?, maxAgeSeconds?, id?}], or None."""
        return self.raw.get("cors") or None

    @cors.setter
    def cors(self, value: list[dict[str, Any]] | None) -> None:
        self.raw["cors"] = value

    @property
    def website(self) -> dict[str, Any] | None:
        """The website configuration as the original stores it (gateway/websiteconfig.py):
        {indexDocument, errorDocument, redirectAllRequestsTo, routingRules}, or None."""
        return self.raw.get("websiteConfiguration") or None

    @website.setter
    def website(self, value: dict[str, Any] | None) -> None:
        self.raw["websiteConfiguration"] = value

    def serialize(self) -> str:
        doc = {
            "acl": canned_acl(bucket=True), "transient": False, "deleted": False,
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
    def from_doc(cls, doc: dict[str, Any]) -> "BucketMD":
        """From the parsed `__metastore` value (BucketMD.serialize() of either implementation)."""
        return cls(name=doc["name"], owner=doc["owner"], owner_display_name=doc.get("ownerDisplayName", ""),
                   creation_date=doc["creationDate"], location_constraint=doc.get("locationConstraint"),
                   versioning=doc.get("versioningConfiguration"), raw=doc)


def checksum_record(algorithm: str, value: str, checksum_type: str = "FULL_OBJECT") -> dict[str, str]:
    """An object's stored checksum (ObjectMD `checksum`): algorithm (CRC32, SHA256, ...), base64 value
    (composite values end in -<parts>), and FULL_OBJECT or COMPOSITE."""
    return {"checksumAlgorithm": algorithm, "checksumValue": value, "checksumType": checksum_type}


def stored_content_encoding(value: str) -> str:
    """Content-Encoding without aws-chunked, which describes the upload, not the object."""
    return ",".join(e.strip() for e in value.split(",") if e.strip() and e.strip().lower() != "aws-chunked")


def new_object_md(key: str, owner_id: str, owner_name: str, *, size: int, md5: str,
                  location: list[dict[str, Any]] | None, data_store_name: str,
                  headers: dict[str, str], user_meta: dict[str, str]) -> "ObjectMD":
    """The metadata of a new object version (field names of md-model-version 6)."""
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
        "acl": canned_acl(bucket=False),
        "key": key, "location": location, "isNull": None, "nullVersionId": None,
        "isDeleteMarker": None, "versionId": None, "tags": {},
        "replicationInfo": {"status": "", "backends": [], "content": [], "destination": "",
                            "storageClass": "", "role": "", "storageType": "", "dataStoreVersionId": "",
                            "isNFS": None},
        "dataStoreName": data_store_name, "originOp": "s3:ObjectCreated:Put",
        "deleted": False, "isPHD": False, "md-model-version": OBJECT_MODEL_VERSION,
    }
    md.update(user_meta)
    return ObjectMD({k: v for k, v in md.items() if v is not None})


class ObjectMD(dict):
    """One stored object version (ObjectMD, md-model-version 6), with typed accessors.

    The document is the wire form the original CloudServer shares with us, so it
    stays a mapping of its stored field names: a read-modify-write keeps every
    field, ours and the original's (an unknown field is never dropped). Code
    outside this module reads and writes it through the properties below.
    """

    __slots__ = ()

    def to_json(self) -> str:
        return json.dumps(self)

    # -- identity and versioning
    @property
    def key(self) -> str:
        return self.get("key", "")

    @property
    def version_id(self) -> str | None:
        """The internal version id (None for a master written without versioning)."""
        return self.get("versionId") or None

    @version_id.setter
    def version_id(self, value: str | None) -> None:
        self["versionId"] = value

    @property
    def is_null(self) -> bool:
        return bool(self.get("isNull"))

    @is_null.setter
    def is_null(self, value: bool) -> None:
        self["isNull"] = value

    @property
    def is_null_or_unversioned(self) -> bool:
        """The null version: written while versioning was suspended, or before it was ever enabled."""
        return self.is_null or not self.version_id

    @property
    def null_version_id(self) -> str | None:
        return self.get("nullVersionId") or None

    @null_version_id.setter
    def null_version_id(self, value: str | None) -> None:
        self["nullVersionId"] = value

    @property
    def is_delete_marker(self) -> bool:
        return bool(self.get("isDeleteMarker"))

    @property
    def is_phd(self) -> bool:
        return bool(self.get("isPHD"))

    @property
    def upload_id(self) -> str | None:
        return self.get("uploadId") or None

    @upload_id.setter
    def upload_id(self, value: str | None) -> None:
        """The multipart upload a version was completed from (the original records it too)."""
        self["uploadId"] = value

    # -- data
    @property
    def location(self) -> list[dict[str, Any]] | None:
        return self.get("location") or None

    @property
    def data_locations(self) -> list[dict[str, Any]] | None:
        """The data this version holds (a delete marker holds none)."""
        return None if self.is_delete_marker else self.location

    @property
    def size(self) -> int:
        return int(self.get("content-length", 0) or 0)

    @property
    def etag(self) -> str:
        return self.get("content-md5", "")

    @property
    def last_modified(self) -> str:
        return self.get("last-modified", "")

    @property
    def content_type(self) -> str:
        return self.get("content-type", "")

    @property
    def storage_class(self) -> str:
        return self.get("x-amz-storage-class") or "STANDARD"

    @property
    def owner_id(self) -> str:
        return self.get("owner-id", "")

    @property
    def owner_display_name(self) -> str:
        return self.get("owner-display-name", "")

    @property
    def checksum(self) -> dict[str, Any] | None:
        """{"checksumAlgorithm", "checksumValue", "checksumType"} or None."""
        return self.get("checksum") or None

    @checksum.setter
    def checksum(self, value: dict[str, Any] | None) -> None:
        if value is None:
            self.pop("checksum", None)
        else:
            self["checksum"] = value

    @property
    def tags(self) -> dict[str, str]:
        return self.get("tags") or {}

    @tags.setter
    def tags(self, value: dict[str, str]) -> None:
        self["tags"] = value

    @property
    def user_metadata(self) -> dict[str, str]:
        # A slice comparison: cheaper than a startswith call per field (every GET and HEAD asks).
        return {k: v for k, v in self.items() if k[:_USER_META_PREFIX_LEN] == USER_META_PREFIX}

    @property
    def stored_headers(self) -> dict[str, str]:
        """Cache-Control, Content-Disposition, ... as stored (empty ones left out)."""
        return {name: str(self[name]) for name in STORED_HEADERS if self.get(name)}

    @property
    def website_redirect_location(self) -> str:
        return self.get("x-amz-website-redirect-location", "")

    @property
    def acl(self) -> dict[str, Any]:
        return self.get("acl") or canned_acl(bucket=False)

    @acl.setter
    def acl(self, value: dict[str, Any]) -> None:
        self["acl"] = value

    @property
    def origin_op(self) -> str:
        return self.get("originOp", "")

    @origin_op.setter
    def origin_op(self, value: str) -> None:
        self["originOp"] = value

    @location.setter
    def location(self, value: list[dict[str, Any]] | None) -> None:
        self["location"] = value

    @property
    def data_store_name(self) -> str:
        return self.get("dataStoreName", "")

    @classmethod
    def delete_marker(cls, key: str, owner_id: str, owner_name: str) -> "ObjectMD":
        ts = now_iso()
        return cls({"owner-display-name": owner_name, "owner-id": owner_id,
                    "content-length": 0, "content-md5": "", "content-type": "", "creation-time": ts,
                    "last-modified": ts, "key": key, "location": None, "isDeleteMarker": True,
                    "x-amz-storage-class": "STANDARD", "md-model-version": OBJECT_MODEL_VERSION,
                    "dataStoreName": "", "originOp": "s3:ObjectRemoved:DeleteMarkerCreated", "tags": {}})


# ---------------------------------------------------------------- multipart upload records

PART_MODEL_VERSION = 3   # md-model-version of a part record (docs/metadata-keys.md#mpu-part)
# Request headers CreateMultipartUpload stores in the overview under their HTTP names, for the
# object Complete creates (x-amz-tagging is applied as the object's tags).
UPLOAD_HEADERS = (*STORED_HEADERS, "content-type", "x-amz-website-redirect-location", "x-amz-tagging")
COMPLETE_IN_PROGRESS = "completeInProgress"


class UploadMD(dict):
    """One multipart upload's overview record (docs/metadata-keys.md#mpu-overview), with typed accessors.

    Like ObjectMD, the document stays a mapping of the original CloudServer's field names, so that
    a read-modify-write (Complete marking it `completeInProgress`) keeps every field, ours and the
    original's.
    """

    __slots__ = ()

    @classmethod
    def new(cls, upload_id: str, key: str, bucket: str, *, owner_id: str, owner_name: str, storage_class: str,
            location: str, acl: dict[str, Any], headers: dict[str, str], user_meta: dict[str, str],
            checksum_algorithm: str | None = None, checksum_type: str | None = None) -> "UploadMD":
        """The overview CreateMultipartUpload writes. `headers` are the request's (lower-case names):
        the UPLOAD_HEADERS are stored as sent, "" when absent."""
        md = cls({
            "id": upload_id, "uploadId": upload_id, "key": key, "eventualStorageBucket": bucket,
            "initiated": now_iso(), "owner-id": owner_id, "owner-display-name": owner_name,
            "initiator": {"ID": owner_id, "DisplayName": owner_name}, "x-amz-storage-class": storage_class,
            "controllingLocationConstraint": location, "dataStoreName": location, "acl": acl,
            COMPLETE_IN_PROGRESS: False,
        })
        for name in UPLOAD_HEADERS:
            md[name] = headers.get(name, "")
        md.update(user_meta)
        if checksum_algorithm is not None:
            md["checksumAlgorithm"], md["checksumType"] = checksum_algorithm, checksum_type
        return md

    @property
    def upload_id(self) -> str:
        return self.get("uploadId", "")

    @property
    def key(self) -> str:
        return self.get("key", "")

    @property
    def initiated(self) -> str:
        return self.get("initiated", "")

    @property
    def owner_id(self) -> str:
        return self.get("owner-id", "")

    @property
    def owner_display_name(self) -> str:
        return self.get("owner-display-name", "")

    @property
    def initiator_id(self) -> str:
        """The initiator's canonical id (the owner's when the record names no initiator)."""
        return (self.get("initiator") or {}).get("ID", self.owner_id)

    @property
    def initiator_display_name(self) -> str:
        return (self.get("initiator") or {}).get("DisplayName", self.owner_display_name)

    @property
    def storage_class(self) -> str:
        return self.get("x-amz-storage-class") or "STANDARD"

    @property
    def location(self) -> str:
        """The location constraint the upload's data goes to."""
        return self.get("controllingLocationConstraint") or self.data_store_name

    @property
    def data_store_name(self) -> str:
        return self.get("dataStoreName", "")

    @property
    def acl(self) -> dict[str, Any]:
        return self.get("acl") or canned_acl(bucket=False)

    @property
    def checksum_algorithm(self) -> str | None:
        """The checksum algorithm requested at creation (every part must carry it), or None."""
        return self.get("checksumAlgorithm") or None

    @property
    def checksum_type(self) -> str | None:
        """COMPOSITE or FULL_OBJECT, with an algorithm; None without."""
        return self.get("checksumType") or None

    @property
    def headers(self) -> dict[str, str]:
        """The stored UPLOAD_HEADERS, "" for those not sent."""
        return {name: str(self.get(name) or "") for name in UPLOAD_HEADERS}

    @property
    def tagging(self) -> str | None:
        """The x-amz-tagging header sent at creation (a URL-encoded tag set), None when none."""
        return self.get("x-amz-tagging") or None

    @property
    def user_metadata(self) -> dict[str, str]:
        return {k: v for k, v in self.items() if k.startswith(USER_META_PREFIX)}

    @property
    def complete_in_progress(self) -> bool:
        """Set before Complete commits the object (docs/durability.md#multipart-uploads)."""
        return bool(self.get(COMPLETE_IN_PROGRESS))

    @complete_in_progress.setter
    def complete_in_progress(self, value: bool) -> None:
        self[COMPLETE_IN_PROGRESS] = value


class PartMD(dict):
    """One uploaded part's record (docs/metadata-keys.md#mpu-part, md-model-version 3), with typed
    accessors over the original's field names (unknown fields are kept)."""

    __slots__ = ()

    @classmethod
    def new(cls, size: int, md5_hex: str, locations: list[dict[str, Any]] | None,
            checksum: tuple[str, str] | None) -> "PartMD":
        """The record UploadPart / UploadPartCopy write; `checksum` is (algorithm, base64 value).
        The store adds the record's own key."""
        md = cls({"md-model-version": PART_MODEL_VERSION, "partLocations": locations or [],
                  "last-modified": now_iso(), "content-md5": md5_hex, "content-length": size})
        if checksum is not None:
            md["checksum"] = {"checksumAlgorithm": checksum[0], "checksumValue": checksum[1]}
        return md

    @property
    def model_version(self) -> int | None:
        return self.get("md-model-version")

    @property
    def locations(self) -> list[dict[str, Any]]:
        """The part's data locations ([] for an empty part), each with its `size`. The original's
        UploadPart writes its one location without a size: such a location holds the whole part,
        so its size is the part's own (`content-length`), as Arsenal's processMpuParts reads it."""
        stored = self.get("partLocations") or []
        if isinstance(stored, dict):   # Arsenal accepts a lone location object too
            stored = [stored]
        return [loc if loc.get("size") else {**loc, "size": self.size}
                for loc in stored if isinstance(loc, dict)]

    @property
    def last_modified(self) -> str:
        return self.get("last-modified", "")

    @property
    def etag(self) -> str:
        """The part's hex MD5 (its ETag without quotes)."""
        return self.get("content-md5", "")

    @property
    def size(self) -> int:
        return int(self.get("content-length", 0) or 0)

    @property
    def checksum(self) -> dict[str, Any] | None:
        """{"checksumAlgorithm", "checksumValue"} the part carried, or None."""
        return self.get("checksum") or None

    @property
    def checksum_algorithm(self) -> str | None:
        return (self.checksum or {}).get("checksumAlgorithm") or None

    @property
    def checksum_value(self) -> str | None:
        return (self.checksum or {}).get("checksumValue") or None
