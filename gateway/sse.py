"""Server-side encryption as S3 requests ask for it: which encryption a new object (or part)
gets, the SSE-C key a read must present, the stored fields and the response headers.

A write is encrypted when it asks (`x-amz-server-side-encryption: AES256 | aws:kms`, with
`-aws-kms-key-id` and `-context`; or SSE-C's `x-amz-server-side-encryption-customer-*`), else
when its bucket has a default encryption (`serverSideEncryption` of the bucket record,
`mandatory: true`: PutBucketEncryption, or `x-amz-scal-server-side-encryption` on
CreateBucket). The bytes are sealed by gateway/objectdata.py with a `KeySource` from here
(gateway/encryption.py has the format, gateway/kms.py the master keys).

Stored on the object (and on a multipart upload's overview, for its parts and the object
Complete makes): the original's `x-amz-server-side-encryption`,
`x-amz-server-side-encryption-aws-kms-key-id` and
`x-amz-server-side-encryption-customer-algorithm`, and ours: `sseCustomerKeyHmac` (a salted
HMAC-SHA256 of the customer's key, to refuse a wrong key with AccessDenied; the key itself is
never stored nor logged), `sseContext`, `sseBucketKeyEnabled`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from gateway.encryption import CustomerKeys, KeySource, KmsKeys
from gateway.kms import key_not_found, kms_for, plain_key_id
from shared.errors import S3Error

if TYPE_CHECKING:
    from gateway.context import RequestContext, Services
    from gateway.models import BucketMD

SSE = "x-amz-server-side-encryption"
SSE_KMS_KEY_ID = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_CONTEXT = "x-amz-server-side-encryption-context"
SSE_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
SSEC_PREFIX = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_SSEC_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"
SCAL_SSE = "x-amz-scal-server-side-encryption"                   # CreateBucket, the reference's
SCAL_SSE_KMS_KEY_ID = "x-amz-scal-server-side-encryption-aws-kms-key-id"
AES256, AWS_KMS = "AES256", "aws:kms"
ALGORITHMS = (AES256, AWS_KMS)

# Stored fields (see the module docstring).
MD_ALGORITHM = "x-amz-server-side-encryption"
MD_KMS_KEY_ID = "x-amz-server-side-encryption-aws-kms-key-id"
MD_CUSTOMER_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
MD_CUSTOMER_HMAC = "sseCustomerKeyHmac"
MD_CONTEXT = "sseContext"
MD_BUCKET_KEY = "sseBucketKeyEnabled"
STORED_FIELDS = (MD_ALGORITHM, MD_KMS_KEY_ID, MD_CUSTOMER_ALGORITHM, MD_CUSTOMER_HMAC, MD_CONTEXT, MD_BUCKET_KEY)

_NOT_APPLICABLE = "The encryption parameters are not applicable to this object."
_NEEDS_KEY = ("The object was stored using a form of Server Side Encryption. The correct parameters must be "
              "provided to retrieve the object.")


def _invalid(message: str, name: str, value: str = "") -> S3Error:
    return S3Error("InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


# ---------------------------------------------------------------- SSE-C keys

@dataclass(frozen=True)
class CustomerKey:
    """A customer-provided key of a request (SSE-C). `repr` never shows the key."""
    key: bytes
    md5: str   # base64, as the request gave it (echoed in responses)

    def __repr__(self) -> str:
        return "CustomerKey(<redacted>)"

    def hmac_record(self) -> str:
        salt = os.urandom(16)
        mac = hmac.new(salt, self.key, hashlib.sha256).digest()
        return f"{base64.b64encode(salt).decode()}:{base64.b64encode(mac).decode()}"

    def matches(self, record: str) -> bool:
        salt_b64, _, mac_b64 = str(record).partition(":")
        try:
            salt, mac = base64.b64decode(salt_b64), base64.b64decode(mac_b64)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hmac.new(salt, self.key, hashlib.sha256).digest(), mac)

    def response_headers(self) -> dict[str, str]:
        return {f"{SSEC_PREFIX}algorithm": AES256, f"{SSEC_PREFIX}key-MD5": self.md5}


def customer_key(ctx: "RequestContext", prefix: str = SSEC_PREFIX,
                 headers: Mapping[str, str] | None = None) -> CustomerKey | None:
    """The SSE-C key of a request (`prefix`: the object's headers, or the copy source's), checked
    as AWS checks it; None without SSE-C headers."""
    headers = ctx.headers if headers is None else headers
    algorithm = headers.get(f"{prefix}algorithm")
    key_b64 = headers.get(f"{prefix}key")
    md5_b64 = headers.get(f"{prefix}key-md5")
    if algorithm is None and key_b64 is None and md5_b64 is None:
        return None
    if ctx.request.url.scheme != "https" and not ctx.config.sse_customer_keys_over_http:
        raise S3Error("InvalidRequest", "Requests specifying Server Side Encryption with Customer provided keys "
                      "must be made over a secure connection.")
    if algorithm is None:
        raise _invalid("Requests specifying Server Side Encryption with Customer provided keys must provide a "
                       "valid encryption algorithm.", f"{prefix}algorithm")
    if algorithm != AES256:
        raise S3Error("InvalidEncryptionAlgorithmError", ArgumentName=f"{prefix}algorithm", ArgumentValue=algorithm)
    if not key_b64:
        raise _invalid("Requests specifying Server Side Encryption with Customer provided keys must provide an "
                       "appropriate secret key.", f"{prefix}key")
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise _invalid("The secret key was invalid for the specified algorithm.", f"{prefix}key")   # never echoed
    if not md5_b64:
        raise _invalid("Requests specifying Server Side Encryption with Customer provided keys must provide the "
                       "client calculated MD5 of the secret key.", f"{prefix}key-MD5")
    if base64.b64encode(hashlib.md5(key).digest()).decode() != md5_b64.strip():
        raise _invalid("The calculated MD5 hash of the key did not match the hash that was provided.",
                       f"{prefix}key-MD5")
    return CustomerKey(key, md5_b64.strip())


# ---------------------------------------------------------------- writes

@dataclass
class Encryption:
    """The encryption of a new object or part: SSE-S3 / SSE-KMS (`algorithm`), or SSE-C (`customer`)."""
    algorithm: str | None = None
    kms_key_id: str | None = None
    context: str | None = None       # base64 JSON, as sent
    bucket_key: bool = False
    customer: CustomerKey | None = None

    def keys(self, services: "Services") -> KeySource:
        if self.customer is not None:
            return CustomerKeys(self.customer.key)
        kms = kms_for(services.config)
        key_id = self.kms_key_id or kms.default_key_id()
        return KmsKeys(kms, key_id, base64.b64decode(self.context) if self.context else b"",
                       etag_of_stored_bytes=self.algorithm == AWS_KMS)

    def stored_fields(self) -> dict[str, Any]:
        if self.customer is not None:
            return {MD_CUSTOMER_ALGORITHM: AES256, MD_CUSTOMER_HMAC: self.customer.hmac_record()}
        fields: dict[str, Any] = {MD_ALGORITHM: self.algorithm or AES256}
        if self.algorithm == AWS_KMS:
            fields[MD_KMS_KEY_ID] = self.kms_key_id or ""
        if self.context:
            fields[MD_CONTEXT] = self.context
        if self.bucket_key:
            fields[MD_BUCKET_KEY] = True
        return fields

    def response_headers(self) -> dict[str, str]:
        if self.customer is not None:
            return self.customer.response_headers()
        headers = {SSE: self.algorithm or AES256}
        if self.algorithm == AWS_KMS and self.kms_key_id:
            headers[SSE_KMS_KEY_ID] = self.kms_key_id
        if self.bucket_key:
            headers[SSE_BUCKET_KEY] = "true"
        return headers


def _checked_context(value: str) -> str:
    try:
        doc = json.loads(base64.b64decode(value, validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        doc = None
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise _invalid("The encryption context must be a base64-encoded UTF-8 JSON object of string pairs.",
                       SSE_CONTEXT, value)
    return value


def kms_key(ctx: "RequestContext", value: str) -> str:
    """The KMS key a request names, which must exist (KMS.NotFoundException)."""
    key_id = plain_key_id(value)
    if not kms_for(ctx.config).has_key(key_id):
        raise key_not_found(value)
    return key_id


def bucket_default(ctx: "RequestContext", bucket: "BucketMD") -> Encryption | None:
    config = bucket.server_side_encryption
    if not config or not config.get("mandatory"):
        return None
    algorithm = config.get("algorithm")
    if algorithm not in ALGORITHMS:
        return None
    configured = config.get("configuredMasterKeyId") if algorithm == AWS_KMS else None
    key_id = plain_key_id(configured) if configured else kms_for(ctx.config).default_key_id()
    return Encryption(algorithm, key_id if algorithm == AWS_KMS else None,
                      bucket_key=bool(config.get("bucketKeyEnabled")))


def for_write(ctx: "RequestContext", bucket: "BucketMD",
              headers: Mapping[str, str] | None = None) -> Encryption | None:
    """The encryption a write asks for (its `headers`, the request's by default; POST object
    gives its form fields), else its bucket's default; None for none. Refused before any data moves."""
    headers = ctx.headers if headers is None else headers
    algorithm = headers.get(SSE)
    key_id = headers.get(SSE_KMS_KEY_ID)
    context = headers.get(SSE_CONTEXT)
    customer = customer_key(ctx, headers=headers)
    if customer is not None:
        if algorithm is not None or key_id is not None:
            raise _invalid("Server Side Encryption with Customer provided key is incompatible with the encryption "
                           "method specified", SSE, algorithm or "")
        return Encryption(customer=customer)
    if algorithm is None:
        if key_id is not None or context is not None:
            raise _invalid("Server Side Encryption with AWS KMS managed key requires HTTP header "
                           "x-amz-server-side-encryption : aws:kms", SSE_KMS_KEY_ID if key_id else SSE_CONTEXT)
        return bucket_default(ctx, bucket)
    if algorithm not in ALGORITHMS:
        raise _invalid("The encryption method specified is not supported", SSE, algorithm)
    if algorithm != AWS_KMS and (key_id is not None or context is not None):
        raise _invalid("Server Side Encryption with AWS KMS managed key requires HTTP header "
                       "x-amz-server-side-encryption : aws:kms", SSE_KMS_KEY_ID if key_id else SSE_CONTEXT)
    bucket_key = headers.get(SSE_BUCKET_KEY, "").strip().lower() == "true"
    if algorithm == AWS_KMS:
        resolved = kms_key(ctx, key_id) if key_id else kms_for(ctx.config).default_key_id()
        return Encryption(AWS_KMS, resolved, _checked_context(context) if context else None, bucket_key)
    return Encryption(AES256, bucket_key=bucket_key)


def stored_encryption(record: Mapping[str, Any], customer: CustomerKey | None = None) -> Encryption | None:
    """The encryption recorded on an upload's overview (or an object), for its parts and the
    object Complete makes; SSE-C needs the request's `customer` key (checked by `check_customer`)."""
    if record.get(MD_CUSTOMER_ALGORITHM):
        return Encryption(customer=customer)
    algorithm = record.get(MD_ALGORITHM)
    if algorithm not in ALGORITHMS:
        return None
    return Encryption(algorithm, record.get(MD_KMS_KEY_ID) or None, record.get(MD_CONTEXT) or None,
                      bool(record.get(MD_BUCKET_KEY)))


def check_customer(ctx: "RequestContext", record: Mapping[str, Any], prefix: str = SSEC_PREFIX,
                   *, upload: bool = False) -> CustomerKey | None:
    """The request's SSE-C key for an SSE-C object (or upload, `upload=True`) `record`: required
    (InvalidRequest without), the one it was written with (AccessDenied otherwise). A key given
    for what is not SSE-C is InvalidRequest. None for what is not SSE-C."""
    customer = customer_key(ctx, prefix)
    stored_hmac = record.get(MD_CUSTOMER_HMAC)
    if not record.get(MD_CUSTOMER_ALGORITHM):
        if customer is not None:
            raise S3Error("InvalidRequest", "The multipart upload initiate requested encryption. Subsequent part "
                          "requests must include the appropriate encryption parameters." if upload else _NOT_APPLICABLE)
        return None
    if customer is None:
        raise S3Error("InvalidRequest", "The multipart upload initiate requested encryption. Subsequent part "
                      "requests must include the appropriate encryption parameters." if upload else _NEEDS_KEY)
    if not stored_hmac or not customer.matches(str(stored_hmac)):
        if upload:
            raise S3Error("InvalidRequest", "The provided encryption parameters did not match the ones used "
                          "originally.")
        raise S3Error("AccessDenied")
    return customer


# ---------------------------------------------------------------- responses and bucket configuration

def object_headers(md: Mapping[str, Any], customer: CustomerKey | None = None) -> dict[str, str]:
    """The encryption headers of an object's GET/HEAD (and of what returns a stored object's)."""
    if md.get(MD_CUSTOMER_ALGORITHM):
        return customer.response_headers() if customer is not None else {f"{SSEC_PREFIX}algorithm": AES256}
    encryption = stored_encryption(md)
    return encryption.response_headers() if encryption is not None else {}


def bucket_config(algorithm: str, configured_key_id: str | None, bucket_key: bool = False) -> dict[str, Any]:
    """A bucket record's `serverSideEncryption` (the original's shape: cryptoScheme, algorithm,
    masterKeyId, configuredMasterKeyId, mandatory)."""
    config: dict[str, Any] = {"cryptoScheme": 1, "algorithm": algorithm, "masterKeyId": configured_key_id or "",
                              "mandatory": True}
    if configured_key_id:
        config["configuredMasterKeyId"] = configured_key_id
    if bucket_key:
        config["bucketKeyEnabled"] = True
    return config


def create_bucket_config(ctx: "RequestContext") -> dict[str, Any] | None:
    """The default encryption CreateBucket gives a bucket: the reference's
    x-amz-scal-server-side-encryption headers, else SSE-S3 when config.json's
    defaultBucketEncryption is on (AWS's behaviour since 2023), else none."""
    algorithm = ctx.headers.get(SCAL_SSE)
    if algorithm is None:
        return bucket_config(AES256, None) if ctx.config.default_bucket_encryption else None
    if algorithm not in ALGORITHMS:
        raise _invalid("The encryption method specified is not supported", SCAL_SSE, algorithm)
    key_id = ctx.headers.get(SCAL_SSE_KMS_KEY_ID)
    if key_id and algorithm != AWS_KMS:
        raise _invalid("a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
                       SCAL_SSE_KMS_KEY_ID, key_id)
    return bucket_config(algorithm, kms_key(ctx, key_id) if key_id else None)
