"""Authentication of browser POST uploads: the form carries its own signature.

The POST policy (base64 JSON: expiration + conditions eq / starts-with /
content-length-range / {field: value}) is signed with Signature V4
(x-amz-algorithm, x-amz-credential, x-amz-date, x-amz-signature = hex
HMAC-SHA256 of the base64 policy with the v4 signing key) or Signature V2
(AWSAccessKeyId, signature = base64 HMAC-SHA1 of it). The request itself has no
Authorization header: the pipeline lets PostObject through anonymous and the
handler authenticates from the form before a single file byte is stored.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gateway.auth import v2, v4
from gateway.auth.request import lookup_secret, signatures_equal
from gateway.formdata import FILE_FIELD
from shared.config import Account
from shared.errors import S3Error

_UNCONDITIONED_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", FILE_FIELD})
_IGNORED_PREFIX = "x-ignore-"
_POLICY_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    op: str                      # "eq" | "starts-with" | "content-length-range"
    field: str                   # lower-case field name without '$' ("" for content-length-range)
    value: str = ""
    low: int = 0
    high: int = 0

    def describe(self) -> str:
        if self.op == "content-length-range":
            return json.dumps([self.op, self.low, self.high])
        return json.dumps([self.op, f"${self.field}", self.value])


@dataclass
class PostPolicy:
    expiration: datetime
    conditions: list[Condition] = field(default_factory=list)


def _invalid_policy(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}")


def _policy_time(value: Any) -> datetime:
    if isinstance(value, str):
        for fmt in _POLICY_TIME_FORMATS:
            try:
                return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
    raise _invalid_policy(f"Invalid 'expiration' value: '{value}'")


def _length_bound(value: Any) -> int:
    if isinstance(value, bool):
        raise _invalid_policy("Invalid content-length-range condition.")
    if isinstance(value, int):
        bound = value
    elif isinstance(value, str) and value.strip().isdigit():
        bound = int(value.strip())
    else:
        raise _invalid_policy("Invalid content-length-range condition.")
    if bound < 0:
        raise _invalid_policy("Invalid content-length-range condition.")
    return bound


def _parse_condition(raw: Any) -> list[Condition]:
    if isinstance(raw, dict):
        if not raw:
            raise _invalid_policy("Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                                  "specified.")
        out = []
        for name, value in raw.items():
            if not isinstance(value, str):
                raise _invalid_policy(f"Invalid Simple-Condition: value of {name} must be a string.")
            out.append(Condition("eq", name.lower().lstrip("$"), value))
        return out
    if isinstance(raw, list) and raw and isinstance(raw[0], str):
        op = raw[0].lower()
        if op == "content-length-range":
            if len(raw) != 3:
                raise _invalid_policy("Invalid content-length-range condition.")
            low, high = _length_bound(raw[1]), _length_bound(raw[2])
            if low > high:
                raise _invalid_policy("Invalid content-length-range condition.")
            return [Condition(op, "", low=low, high=high)]
        if op in ("eq", "starts-with"):
            if len(raw) != 3 or not isinstance(raw[1], str) or not raw[1].startswith("$") \
                    or not isinstance(raw[2], str):
                raise _invalid_policy(f"Invalid {op} condition: {json.dumps(raw)}")
            return [Condition(op, raw[1][1:].lower(), raw[2])]
        raise _invalid_policy(f"Invalid condition operator: {raw[0]}")
    raise _invalid_policy(f"Invalid condition: {json.dumps(raw)}")


def parse_policy(encoded: str) -> PostPolicy:
    """The policy form field (base64 JSON) -> PostPolicy, or InvalidPolicyDocument."""
    try:
        doc = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _invalid_policy("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _invalid_policy("Invalid JSON.")
    if "expiration" not in doc:
        raise _invalid_policy("Policy missing expiration.")
    if "conditions" not in doc:
        raise _invalid_policy("Policy missing conditions.")
    if not isinstance(doc["conditions"], list):
        raise _invalid_policy("Invalid 'conditions' value: must be a list.")
    policy = PostPolicy(_policy_time(doc["expiration"]))
    for raw in doc["conditions"]:
        policy.conditions.extend(_parse_condition(raw))
    return policy


def _denied(detail: str) -> S3Error:
    return S3Error("AccessDenied", f"Invalid according to Policy: {detail}")


def _condition_holds(condition: Condition, value: str) -> bool:
    if condition.op == "eq":
        return value == condition.value
    if condition.field == "content-type":
        # AWS: a Content-Type with several comma-separated values must start with the prefix in each.
        return all(v.strip().startswith(condition.value) for v in value.split(","))
    return value.startswith(condition.value)


def check_policy_fields(policy: PostPolicy, fields: dict[str, str], bucket: str,
                        now: datetime | None = None) -> None:
    """Expiration, every eq / starts-with condition, and no form field without a condition."""
    now = now or datetime.now(timezone.utc)
    if policy.expiration < now:
        raise _denied("Policy expired.")
    values = {**fields, "bucket": bucket}
    for condition in policy.conditions:
        if condition.op != "content-length-range" and \
                not _condition_holds(condition, values.get(condition.field, "")):
            raise _denied(f"Policy Condition failed: {condition.describe()}")
    covered = {c.field for c in policy.conditions}
    extra = [name for name in fields
             if name not in covered and name not in _UNCONDITIONED_FIELDS and not name.startswith(_IGNORED_PREFIX)]
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")


def length_range(policy: PostPolicy | None) -> tuple[int, int | None]:
    """(min, max) file size allowed by every content-length-range condition."""
    low, high = 0, None
    for condition in (policy.conditions if policy else []):
        if condition.op == "content-length-range":
            low = max(low, condition.low)
            high = condition.high if high is None else min(high, condition.high)
    return low, high


def missing_field(name: str) -> S3Error:
    return S3Error("InvalidArgument", f"Bucket POST must contain a field named '{name}'.  If it is specified, "
                   "please check the order of the fields.", ArgumentName=name, ArgumentValue="")


def _authenticate_v4(fields: dict[str, str], config: Any) -> Account:
    for name in ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "policy"):
        if not fields.get(name):
            raise missing_field(name)
    if fields["x-amz-algorithm"] != v4.ALGORITHM:
        raise S3Error("InvalidArgument", "Only AWS4-HMAC-SHA256 is supported for POST form signatures.",
                      ArgumentName="x-amz-algorithm", ArgumentValue=fields["x-amz-algorithm"])
    credential = fields["x-amz-credential"]
    # Private helper of gateway.auth.v4 (lead asked to expose it): access key/date/region/service/terminator.
    parts = v4.split_credential(credential)
    if parts is None or parts[3] != v4.SERVICE or parts[4] != v4.TERMINATOR \
            or parts[1] != fields["x-amz-date"][:8]:
        raise S3Error("InvalidArgument", "The X-Amz-Credential form field is malformed.",
                      ArgumentName="x-amz-credential", ArgumentValue=credential)
    access_key, date, region = parts[0], parts[1], parts[2]
    account, secret = lookup_secret(config, access_key)
    expected = v4.sign(v4.signing_key(secret, date, region), fields["policy"])
    provided = fields["x-amz-signature"]
    if not signatures_equal(expected, provided.lower()):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"],
                      SignatureProvided=provided)
    return account


def _authenticate_v2(fields: dict[str, str], config: Any) -> Account:
    for name in ("awsaccesskeyid", "signature", "policy"):
        if not fields.get(name):
            raise missing_field("AWSAccessKeyId" if name == "awsaccesskeyid" else name)
    access_key = fields["awsaccesskeyid"]
    account, secret = lookup_secret(config, access_key)
    provided = fields["signature"]
    if not signatures_equal(v2.sign(secret, fields["policy"]), provided):
        raise S3Error("SignatureDoesNotMatch", AWSAccessKeyId=access_key, StringToSign=fields["policy"],
                      SignatureProvided=provided)
    return account


def authenticate_form(fields: dict[str, str], config: Any) -> tuple[Account | None, PostPolicy | None]:
    """The account that signed the form's policy, and the policy. A form without a signature is
    anonymous (None, and its policy if it has one): the bucket's ACL or policy decides
    (gateway/authz.py), as on AWS."""
    if "x-amz-signature" in fields:
        account = _authenticate_v4(fields, config)
    elif "signature" in fields or "awsaccesskeyid" in fields:
        account = _authenticate_v2(fields, config)
    else:
        return None, (parse_policy(fields["policy"]) if fields.get("policy") else None)
    return account, parse_policy(fields["policy"])
