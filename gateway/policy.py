"""Bucket policies: validated and compiled once per PutBucketPolicy, evaluated per request.

This module is pure (no I/O, no store): `BucketPolicy.parse` checks a policy
document the way AWS does on PutBucketPolicy (raising `S3Error("MalformedPolicy",
<reason>)` with AWS's reason strings) and compiles every wildcard, CIDR, date
and number once; `BucketPolicy.evaluate` answers "Deny" / "Allow" / "Default"
for one request; `BucketPolicy.is_public` is AWS's "meaning of public"
(GetBucketPolicyStatus, BlockPublicPolicy, RestrictPublicBuckets).

Semantics (AWS "IAM JSON policy elements", "Policy evaluation logic",
"Condition operators", "Conditions with multiple context keys or values"):
- a statement applies when its Principal/NotPrincipal, Action/NotAction,
  Resource/NotResource and every Condition match; any applicable Deny wins,
  else any applicable Allow, else "Default" (the caller falls back to ACLs);
- actions match case-insensitively, resources case-sensitively, `*` and `?`
  wildcards in both; principals are accounts: "*" / {"AWS": "*"} match every
  requester including anonymous, an account id or its root ARN matches that
  account, {"CanonicalUser": id} matches that canonical id;
- condition operators: several operators or keys = AND; several policy
  values for a key = OR (NOR for negated operators); a key absent from the
  request makes a positive operator false and a negated one true, except
  `...IfExists` (true), `Null` (tests presence), `ForAllValues:` (true) and
  `ForAnyValue:` (false);
- policy variables (`${aws:username}`, `${s3:prefix}`, `${*}`, `${?}`, `${$}`,
  `${key, 'default'}`) are substituted in Resource and String*/Arn* condition
  values of a "2012-10-17" policy from the request context; a variable with no
  value and no default makes that value not match. A "2008-10-17" policy takes
  them literally, as AWS does.

Context keys are lower-cased names ("aws:sourceip", "s3:prefix",
"s3:existingobjecttag/project"); a key absent from the mapping is absent from
the request.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Callable, Literal, Mapping, Sequence

from shared.errors import S3Error

# --- AWS constants -------------------------------------------------------------------------------

MAX_POLICY_BYTES = 20 * 1024          # "Bucket policies are limited to 20 KB" (whitespace not counted)
_MAX_RAW_BYTES = 1024 * 1024          # refuse to even parse past this
VERSION_2012 = "2012-10-17"
VERSION_2008 = "2008-10-17"           # the default when Version is absent
S3_ARN_PREFIX = "arn:aws:s3:::"

# Reasons AWS gives with MalformedPolicy (observed on PutBucketPolicy).
R_FIRST_BYTE = "Policies must be valid JSON and the first byte must be '{'"
R_INVALID_JSON = "This policy contains invalid Json"
R_TOO_LARGE = "Policy exceeds the maximum allowed document size."
R_MISSING_STATEMENT = "Missing required field Statement"
R_EMPTY_STATEMENT = "Could not parse the policy: Statement is empty!"
R_VERSION = "The policy must contain a valid version string"
R_INVALID_PRINCIPAL = "Invalid principal in policy"
R_INVALID_ACTION = "Policy has invalid action"
R_INVALID_RESOURCE = "Policy has invalid resource"
R_RESOURCE_MISMATCH = "Action does not apply to any resource(s) in statement"
R_INVALID_CONDITION_KEY = "Policy has an invalid condition key"
R_INVALID_IP = "Invalid IP address in Conditions"
R_SYNTAX = "Invalid policy syntax."

# S3's IAM actions ("Actions defined by Amazon S3"), by the resource type they apply to.
OBJECT_ACTIONS = frozenset("s3:" + a for a in (
    "AbortMultipartUpload BypassGovernanceRetention DeleteObject DeleteObjectTagging "
    "DeleteObjectVersion DeleteObjectVersionTagging GetObject GetObjectAcl GetObjectAttributes "
    "GetObjectLegalHold GetObjectRetention GetObjectTagging GetObjectTorrent GetObjectVersion "
    "GetObjectVersionAcl GetObjectVersionAttributes GetObjectVersionForReplication "
    "GetObjectVersionTagging GetObjectVersionTorrent InitiateReplication ListMultipartUploadParts "
    "ObjectOwnerOverrideToBucketOwner PutObject PutObjectAcl PutObjectLegalHold PutObjectRetention "
    "PutObjectTagging PutObjectVersionAcl PutObjectVersionTagging ReplicateDelete ReplicateObject "
    "ReplicateTags RestoreObject").split())
BUCKET_ACTIONS = frozenset("s3:" + a for a in (
    "CreateBucket DeleteBucket DeleteBucketOwnershipControls DeleteBucketPolicy DeleteBucketWebsite "
    "GetAccelerateConfiguration GetAnalyticsConfiguration GetBucketAcl GetBucketCORS "
    "GetBucketLocation GetBucketLogging GetBucketNotification GetBucketObjectLockConfiguration "
    "GetBucketOwnershipControls GetBucketPolicy GetBucketPolicyStatus GetBucketPublicAccessBlock "
    "GetBucketRequestPayment GetBucketTagging GetBucketVersioning GetBucketWebsite "
    "GetEncryptionConfiguration GetIntelligentTieringConfiguration GetInventoryConfiguration "
    "GetLifecycleConfiguration GetMetricsConfiguration GetReplicationConfiguration "
    "ListBucket ListBucketMultipartUploads ListBucketVersions PutAccelerateConfiguration "
    "PutAnalyticsConfiguration PutBucketAcl PutBucketCORS PutBucketLogging PutBucketNotification "
    "PutBucketObjectLockConfiguration PutBucketOwnershipControls PutBucketPolicy "
    "PutBucketPublicAccessBlock PutBucketRequestPayment PutBucketTagging PutBucketVersioning "
    "PutBucketWebsite PutEncryptionConfiguration PutIntelligentTieringConfiguration "
    "PutInventoryConfiguration PutLifecycleConfiguration PutMetricsConfiguration "
    "PutReplicationConfiguration").split())
# Valid action names whose resource is neither a bucket nor an object: a bucket policy naming
# one of them alone is refused with R_RESOURCE_MISMATCH.
ACCOUNT_ACTIONS = frozenset("s3:" + a for a in (
    "CreateJob DescribeJob GetAccountPublicAccessBlock ListAccessPoints ListAllMyBuckets ListJobs "
    "PutAccountPublicAccessBlock UpdateJobPriority UpdateJobStatus").split())
_ALL_ACTIONS_LOWER = {a.lower(): a for a in OBJECT_ACTIONS | BUCKET_ACTIONS | ACCOUNT_ACTIONS}
_OBJECT_LOWER = frozenset(a.lower() for a in OBJECT_ACTIONS)
_BUCKET_LOWER = frozenset(a.lower() for a in BUCKET_ACTIONS)

# Condition keys a bucket policy may name (lower-cased); "<prefix>/" entries take any tag key.
CONDITION_KEYS = frozenset((
    "aws:calledvia aws:calledviafirst aws:calledvialast aws:currenttime aws:epochtime "
    "aws:federatedprovider aws:multifactorauthage aws:multifactorauthpresent aws:principalaccount "
    "aws:principalarn aws:principalisawsservice aws:principalorgid aws:principalorgpaths "
    "aws:principalservicename aws:principalservicenameslist aws:principaltype aws:referer "
    "aws:requestedregion aws:resourceaccount aws:resourceorgid aws:resourceorgpaths "
    "aws:securetransport aws:sourceaccount aws:sourcearn aws:sourceidentity aws:sourceip "
    "aws:sourceorgid aws:sourceorgpaths aws:sourceowner aws:sourcevpc aws:sourcevpce aws:tagkeys "
    "aws:tokenissuetime aws:useragent aws:userid aws:username aws:viaawsservice aws:vpcsourceip "
    "aws:ec2instancesourceip aws:ec2instancesourcevpc "
    "s3:accesspointnetworkorigin s3:authtype s3:dataaccesspointaccount s3:dataaccesspointarn "
    "s3:delimiter s3:locationconstraint s3:max-keys s3:object-lock-legal-hold s3:object-lock-mode "
    "s3:object-lock-remaining-retention-days s3:object-lock-retain-until-date s3:objectcreationoperation "
    "s3:prefix s3:requestobjecttagkeys s3:resourceaccount s3:signatureage s3:signatureversion "
    "s3:tlsversion s3:versionid s3:x-amz-acl s3:x-amz-content-sha256 s3:x-amz-copy-source "
    "s3:x-amz-grant-full-control s3:x-amz-grant-read s3:x-amz-grant-read-acp s3:x-amz-grant-write "
    "s3:x-amz-grant-write-acp s3:x-amz-metadata-directive s3:x-amz-object-ownership "
    "s3:x-amz-server-side-encryption s3:x-amz-server-side-encryption-aws-kms-key-id "
    "s3:x-amz-server-side-encryption-customer-algorithm s3:x-amz-storage-class "
    "s3:x-amz-website-redirect-location s3:if-match s3:if-none-match").split())
CONDITION_KEY_PREFIXES = ("aws:principaltag/", "aws:requesttag/", "aws:resourcetag/",
                          "s3:existingobjecttag/", "s3:requestobjecttag/")

# "The meaning of public": a public grant is narrowed by a fixed value of one of these keys.
_NON_PUBLIC_KEYS = frozenset((
    "aws:sourceip aws:sourcearn aws:sourcevpc aws:sourcevpce aws:sourceowner aws:sourceaccount "
    "aws:userid aws:principalaccount aws:principalarn aws:principalorgid aws:sourceorgid "
    "s3:dataaccesspointarn s3:dataaccesspointaccount "
    "s3:x-amz-server-side-encryption-aws-kms-key-id").split())
# aws:SourceIp ranges broader than these prefixes still count as public (0.0.0.0/0, ::/0, ...).
_PUBLIC_CIDR_MIN_PREFIX = {4: 8, 6: 32}

Decision = Literal["Deny", "Allow", "Default"]


# --- request side ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Principal:
    """Who is asking (an account); `PolicyRequest.principal = None` is anonymous."""
    canonical_id: str
    account_id: str          # 12-digit shortid, e.g. "123456789012"
    arn: str                 # e.g. "arn:aws:iam::123456789012:root"


@dataclass(frozen=True)
class PolicyRequest:
    principal: Principal | None
    action: str              # "s3:GetObject" (matched case-insensitively)
    resource: str            # "arn:aws:s3:::bucket" or "arn:aws:s3:::bucket/key"
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def bucket_arn(bucket: str) -> str:
    return S3_ARN_PREFIX + bucket


def object_arn(bucket: str, key: str) -> str:
    return f"{S3_ARN_PREFIX}{bucket}/{key}"


# --- patterns -------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'([^']*)'\s*$")
_LITERAL_VARIABLES = {"*": "*", "?": "?", "$": "$"}


def _wildcard_regex(text: str) -> str:
    """IAM wildcards: `*` any run of characters (`/` and newlines included), `?` one character.
    Only used for patterns with at most one `*`: several `.*` backtrack polynomially."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)


class _Glob:
    """A wildcard pattern matched without backtracking: the fixed-length pieces between `*`s
    are placed leftmost one after the other (correct for `*`-only globs), so a hostile pattern
    such as `a*a*a*a*...b` costs O(len(pattern) * len(value)), never exponential time."""
    __slots__ = ("pieces", "min_len")

    def __init__(self, parts: Sequence[tuple[bool, str]]):
        """`parts`: (literal, text) spans; wildcards are interpreted only where not literal."""
        sources: list[list[str]] = [[]]
        lengths = [0]
        for literal, text in parts:
            if literal:
                sources[-1].append(re.escape(text))
                lengths[-1] += len(text)
                continue
            for c in text:
                if c == "*":
                    sources.append([])
                    lengths.append(0)
                else:
                    sources[-1].append("." if c == "?" else re.escape(c))
                    lengths[-1] += 1
        self.pieces = [(re.compile("".join(src), re.DOTALL), n) for src, n in zip(sources, lengths)]
        self.min_len = sum(lengths)

    def match(self, value: str) -> bool:
        pieces = self.pieces
        if len(pieces) == 1:                               # no `*`: one fixed-length piece
            rx, n = pieces[0]
            return len(value) == n and rx.fullmatch(value) is not None
        if len(value) < self.min_len:
            return False
        head, head_len = pieces[0]
        if head_len and head.match(value) is None:
            return False
        tail, tail_len = pieces[-1]
        end = len(value) - tail_len
        if tail_len and tail.fullmatch(value, end) is None:
            return False
        pos = head_len
        for rx, n in pieces[1:-1]:
            if n:
                m = rx.search(value, pos, end)
                if m is None:
                    return False
                pos = m.end()
        return True


@lru_cache(maxsize=4096)
def _glob(pattern: str) -> _Glob:
    return _Glob(((False, pattern),))


@lru_cache(maxsize=4096)
def _glob_parts(parts: tuple[tuple[bool, str], ...]) -> _Glob:
    return _Glob(parts)


def _has_variables(text: str, version: str) -> bool:
    return version == VERSION_2012 and "${" in text


class _Template:
    """A policy value holding `${...}` variables, resolved against the request context."""
    __slots__ = ("parts",)

    def __init__(self, text: str):
        self.parts: list[tuple[bool, str, str | None]] = []   # (is_variable, text-or-key, default)
        pos = 0
        for m in _VARIABLE.finditer(text):
            if m.start() > pos:
                self.parts.append((False, text[pos:m.start()], None))
            inner = m.group(1).strip()
            if inner in _LITERAL_VARIABLES:
                self.parts.append((False, "\0" + inner, None))   # a literal character, see _values
            else:
                dm = _VARIABLE_DEFAULT.match(inner)
                key, default = (dm.group(1), dm.group(2)) if dm else (inner, None)
                self.parts.append((True, key.lower(), default))
            pos = m.end()
        if pos < len(text):
            self.parts.append((False, text[pos:], None))

    def _values(self, ctx: Mapping[str, object]) -> tuple[tuple[bool, str], ...] | None:
        """(literal, text) spans: substituted values and ${*} ${?} ${$} are literal text."""
        out: list[tuple[bool, str]] = []
        for is_var, text, default in self.parts:
            if not is_var:
                if text.startswith("\0"):
                    out.append((True, text[1:]))
                else:
                    out.append((False, text))
                continue
            value = _single(ctx.get(text))
            if value is None:
                value = default
            if value is None:
                return None
            out.append((True, value))
        return tuple(out)

    def resolve(self, ctx: Mapping[str, object]) -> str | None:
        """The value with variables substituted (for exact comparisons); None = unresolvable."""
        parts = self._values(ctx)
        return None if parts is None else "".join(t for _, t in parts)

    def glob(self, ctx: Mapping[str, object]) -> _Glob | None:
        parts = self._values(ctx)
        return None if parts is None else _glob_parts(parts)


def _single(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 and isinstance(value[0], str) else None
    return _scalar_str(value)


def _scalar_str(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _WildcardSet:
    """Several wildcard patterns: the simple ones (at most one `*`, the common
    "arn:aws:s3:::bucket/*") joined into one regex, the others as globs, plus the ones
    holding variables, resolved per request."""
    __slots__ = ("regex", "globs", "templates")

    def __init__(self, patterns: Sequence[str], version: str):
        static = [p for p in patterns if not _has_variables(p, version)]
        simple = [p for p in static if p.count("*") <= 1]
        self.globs = [_glob(p) for p in static if p.count("*") > 1]
        self.templates = [_Template(p) for p in patterns if _has_variables(p, version)]
        self.regex = (re.compile("|".join(f"(?:{_wildcard_regex(p)})" for p in simple), re.DOTALL)
                      if simple else None)

    def match(self, value: str, ctx: Mapping[str, object]) -> bool:
        if self.regex is not None and self.regex.fullmatch(value):
            return True
        for g in self.globs:
            if g.match(value):
                return True
        for t in self.templates:
            g = t.glob(ctx)
            if g is not None and g.match(value):
                return True
        return False


# --- principals -----------------------------------------------------------------------------------

_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ROOT_ARN = re.compile(r"^arn:aws:iam::(\d{12}):root$")
_IAM_ARN = re.compile(r"^arn:aws:(?:iam|sts)::\d{12}:(?:user|role|assumed-role|federated-user)/[^*?]+$")
_CANONICAL_ID = re.compile(r"^[0-9a-f]{64}$")
_PRINCIPAL_TYPES = ("AWS", "CanonicalUser", "Service", "Federated")


class _Principals:
    __slots__ = ("everyone", "accounts", "arns", "canonical_ids")

    def __init__(self, value: object):
        self.everyone = False
        self.accounts: set[str] = set()
        self.arns: set[str] = set()
        self.canonical_ids: set[str] = set()
        if value == "*":
            self.everyone = True
            return
        if not isinstance(value, dict) or not value:
            raise _malformed(R_INVALID_PRINCIPAL)
        for kind, ids in value.items():
            if kind not in _PRINCIPAL_TYPES:
                raise _malformed(R_INVALID_PRINCIPAL)
            for ident in _string_list(ids, R_INVALID_PRINCIPAL):
                self._add(kind, ident)

    def _add(self, kind: str, ident: str) -> None:
        if kind == "AWS":
            if ident == "*":
                self.everyone = True
            elif _ACCOUNT_ID.match(ident):
                self.accounts.add(ident)
            elif m := _ROOT_ARN.match(ident):
                self.accounts.add(m.group(1))       # the account's root: the whole account
            elif _IAM_ARN.match(ident):
                self.arns.add(ident)
            else:
                raise _malformed(R_INVALID_PRINCIPAL)
        elif kind == "CanonicalUser":
            if not _CANONICAL_ID.match(ident):
                raise _malformed(R_INVALID_PRINCIPAL)
            self.canonical_ids.add(ident)
        elif "*" in ident:
            raise _malformed(R_INVALID_PRINCIPAL)
        # else a Service / Federated principal: valid, but never a requester of this server.

    def match(self, who: Principal | None) -> bool:
        if self.everyone:
            return True
        if who is None:
            return False
        return (who.account_id in self.accounts or who.canonical_id in self.canonical_ids
                or who.arn in self.arns)


# --- conditions -----------------------------------------------------------------------------------

_ANY, _ALL = "any", "all"


def _parse_number(text: str) -> Decimal | None:
    try:
        n = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return n if n.is_finite() else None


@lru_cache(maxsize=1024)
def _parse_date(text: str) -> datetime | None:
    """ISO 8601 (date or date-time, `Z` or offset) or epoch seconds, as an aware UTC datetime."""
    text = text.strip()
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        try:
            return datetime.fromtimestamp(float(text), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        d = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> tuple[int, int] | None:
    """(IP version, address as an integer): CIDR tests become one mask and compare."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return ip.version, int(ip)


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


_CMP: dict[str, Callable[[object, object], bool]] = {
    "Equals": lambda a, b: a == b, "NotEquals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b, "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b, "GreaterThanEquals": lambda a, b: a >= b,
}


def _string_matcher(op: str, values: list[str], version: str) -> Callable[[str, Mapping], bool]:
    has_vars = any(_has_variables(v, version) for v in values)
    if op in ("StringEquals", "StringNotEquals"):
        if not has_vars:
            fixed = frozenset(values)
            return lambda v, ctx: v in fixed
        templates = [_Template(v) for v in values]
        return lambda v, ctx: any(t.resolve(ctx) == v for t in templates)
    if op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        if not has_vars:
            folded = frozenset(v.casefold() for v in values)
            return lambda v, ctx: v.casefold() in folded
        templates = [_Template(v) for v in values]

        def match_folded(v: str, ctx: Mapping) -> bool:
            fv = v.casefold()
            return any((r := t.resolve(ctx)) is not None and r.casefold() == fv for t in templates)
        return match_folded
    wildcard = _WildcardSet(values, version)                       # StringLike / StringNotLike
    return wildcard.match


def _arn_matcher(values: list[str], version: str) -> Callable[[str, Mapping], bool]:
    """ArnEquals/ArnLike: each of the six colon-delimited parts matched on its own, wildcards allowed."""
    compiled: list[list[_WildcardSet]] = []
    for v in values:
        parts = v.split(":", 5)
        if len(parts) == 6:
            compiled.append([_WildcardSet([p], version) for p in parts])

    def match(v: str, ctx: Mapping) -> bool:
        parts = v.split(":", 5)
        if len(parts) != 6:
            return False
        return any(all(seg.match(p, ctx) for seg, p in zip(segs, parts)) for segs in compiled)
    return match


def _family_matcher(base: str, values: list[str], version: str) -> Callable[[str, Mapping], bool]:
    if base.startswith("String"):
        return _string_matcher(base, values, version)
    if base.startswith("Arn"):
        return _arn_matcher(values, version)
    if base.startswith("Numeric"):
        cmp = _CMP[base[len("Numeric"):]]
        numbers = [n for n in map(_parse_number, values) if n is not None]

        def match_number(v: str, ctx: Mapping) -> bool:
            n = _parse_number(v)
            return n is not None and any(cmp(n, p) for p in numbers)
        return match_number
    if base.startswith("Date"):
        cmp = _CMP[base[len("Date"):]]
        dates = [d for d in map(_parse_date, values) if d is not None]

        def match_date(v: str, ctx: Mapping) -> bool:
            d = _parse_date(v)
            return d is not None and any(cmp(d, p) for p in dates)
        return match_date
    if base == "Bool":
        expected = frozenset(v.lower() for v in values)
        return lambda v, ctx: v.lower() in expected
    if base in ("BinaryEquals", "BinaryNotEquals"):
        blobs = frozenset(b for b in map(_decode_b64, values) if b is not None)
        return lambda v, ctx: _decode_b64(v) in blobs
    if base in ("IpAddress", "NotIpAddress"):
        networks = []                                    # (version, network address, netmask)
        for v in values:
            try:
                n = ipaddress.ip_network(v.strip(), strict=False)
            except ValueError:
                raise _malformed(R_INVALID_IP) from None
            networks.append((n.version, int(n.network_address), int(n.netmask)))

        def match_ip(v: str, ctx: Mapping) -> bool:
            ip = _parse_ip(v)
            if ip is None:
                return False
            version, addr = ip
            return any(version == nv and addr & mask == net for nv, net, mask in networks)
        return match_ip
    raise AssertionError(base)


# Base operators (without IfExists / set qualifiers) -> negated?
_OPERATORS: dict[str, bool] = {
    "StringEquals": False, "StringNotEquals": True, "StringEqualsIgnoreCase": False,
    "StringNotEqualsIgnoreCase": True, "StringLike": False, "StringNotLike": True,
    "NumericEquals": False, "NumericNotEquals": True, "NumericLessThan": False,
    "NumericLessThanEquals": False, "NumericGreaterThan": False, "NumericGreaterThanEquals": False,
    "DateEquals": False, "DateNotEquals": True, "DateLessThan": False, "DateLessThanEquals": False,
    "DateGreaterThan": False, "DateGreaterThanEquals": False,
    "Bool": False, "BinaryEquals": False, "BinaryNotEquals": True,
    "IpAddress": False, "NotIpAddress": True,
    "ArnEquals": False, "ArnLike": False, "ArnNotEquals": True, "ArnNotLike": True,
    "Null": False,
}
_OPERATORS_LOWER = {k.lower(): k for k in _OPERATORS}


def _parse_operator(name: str) -> tuple[str | None, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('any', 'StringLike', True). Operator names are
    matched case-insensitively; an unknown one is AWS's "Invalid Condition type : <name>"."""
    rest, qualifier = name, None
    low = name.lower()
    if low.startswith("foranyvalue:"):
        qualifier, rest = _ANY, name[len("ForAnyValue:"):]
    elif low.startswith("forallvalues:"):
        qualifier, rest = _ALL, name[len("ForAllValues:"):]
    if_exists = rest.lower().endswith("ifexists")
    if if_exists:
        rest = rest[:-len("IfExists")]
    base = _OPERATORS_LOWER.get(rest.lower())
    if base is None or (base == "Null" and (if_exists or qualifier)):
        raise _malformed(f"Invalid Condition type : {name}")
    return qualifier, base, if_exists


def _valid_condition_key(key: str) -> bool:
    if key in CONDITION_KEYS:
        return True
    return any(key.startswith(p) and len(key) > len(p) for p in CONDITION_KEY_PREFIXES)


class _Condition:
    """One (operator, key, values) entry of a Condition block."""
    __slots__ = ("operator", "key", "values", "qualifier", "base", "if_exists", "negated",
                 "null_expected", "matcher")

    def __init__(self, operator: str, key: str, raw_values: object, version: str):
        self.operator = operator
        self.qualifier, self.base, self.if_exists = _parse_operator(operator)
        self.negated = _OPERATORS[self.base]
        self.key = key.lower()
        if not _valid_condition_key(self.key):
            raise _malformed(R_INVALID_CONDITION_KEY)
        self.values = _condition_values(raw_values)
        self.null_expected: bool | None = None
        self.matcher: Callable[[str, Mapping], bool] | None = None
        if self.base == "Null":
            self.null_expected = any(v.lower() == "true" for v in self.values)
        else:
            self.matcher = _family_matcher(self.base, self.values, version)

    def test(self, ctx: Mapping[str, object]) -> bool:
        raw = ctx.get(self.key)
        if raw is not None and not isinstance(raw, (str, list, tuple)):
            raw = _scalar_str(raw)                 # a caller's bool / int: its IAM string form
        if raw is None or (not isinstance(raw, str) and len(raw) == 0):
            if self.base == "Null":
                return bool(self.null_expected)
            if self.if_exists or self.qualifier == _ALL:
                return True
            if self.qualifier == _ANY:
                return False
            return self.negated
        if self.base == "Null":
            return not self.null_expected
        matcher = self.matcher
        if isinstance(raw, str):
            hit = matcher(raw, ctx)                                       # type: ignore[misc]
            return hit != self.negated
        values = [v if isinstance(v, str) else _scalar_str(v) for v in raw]
        hits = [matcher(v, ctx) for v in values]                          # type: ignore[misc]
        if self.qualifier == _ALL:
            return all(h != self.negated for h in hits)
        if self.qualifier == _ANY:
            return any(h != self.negated for h in hits)
        return any(hits) != self.negated

    def narrows_public_access(self) -> bool:
        """A fixed-value restriction on a key of "the meaning of public" (see BucketPolicy.is_public)."""
        if (self.key not in _NON_PUBLIC_KEYS or self.negated or self.if_exists
                or self.qualifier == _ALL or self.base == "Null" or not self.values):
            return False
        if any("${" in v for v in self.values):
            return False
        if self.base in ("StringLike", "ArnLike", "ArnEquals") and any(
                "*" in v or "?" in v for v in self.values):
            return False
        if self.key == "aws:sourceip":
            if self.base != "IpAddress":
                return False
            for v in self.values:
                net = ipaddress.ip_network(v.strip(), strict=False)
                if net.prefixlen < _PUBLIC_CIDR_MIN_PREFIX[net.version]:
                    return False
            return True
        return self.base in ("StringEquals", "StringEqualsIgnoreCase", "StringLike",
                             "ArnEquals", "ArnLike")


def _condition_values(raw: object) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise _malformed(R_SYNTAX)
    out = []
    for v in items:
        if isinstance(v, (dict, list)) or v is None:
            raise _malformed(R_SYNTAX)
        out.append(_scalar_str(v))
    return out


# --- statements -----------------------------------------------------------------------------------

_STATEMENT_FIELDS = ("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                     "Resource", "NotResource", "Condition")
_ACTION_CACHE_MAX = 512


class _Statement:
    __slots__ = ("sid", "effect", "principals", "not_principal", "action_any", "action_exact",
                 "action_globs", "not_action", "resources", "not_resource", "conditions")

    def __init__(self, doc: object, bucket: str, version: str):
        if not isinstance(doc, dict):
            raise _malformed(R_SYNTAX)
        for name in doc:
            if name not in _STATEMENT_FIELDS:
                raise _malformed(f"Unknown field {name}")
        sid = doc.get("Sid")
        if sid is not None and not isinstance(sid, str):
            raise _malformed(R_SYNTAX)
        self.sid = sid
        self._parse_effect(doc)
        self._parse_principal(doc)
        action_patterns = self._parse_action(doc)
        resource_patterns = self._parse_resource(doc, bucket, version)
        self._parse_condition(doc, version)
        if not self.not_action and not self.not_resource:
            _check_actions_apply(action_patterns, resource_patterns, bucket)

    def _parse_effect(self, doc: dict) -> None:
        if "Effect" not in doc:
            raise _malformed("Missing required field Effect")
        effect = doc["Effect"]
        if effect not in ("Allow", "Deny"):
            raise _malformed(f"Invalid effect: {effect}")
        self.effect: str = effect

    def _parse_principal(self, doc: dict) -> None:
        if "Principal" in doc and "NotPrincipal" in doc:
            raise _malformed(R_SYNTAX)
        if "Principal" not in doc and "NotPrincipal" not in doc:
            raise _malformed("Missing required field Principal")
        self.not_principal = "NotPrincipal" in doc
        self.principals = _Principals(doc["NotPrincipal" if self.not_principal else "Principal"])

    def _parse_action(self, doc: dict) -> list[str]:
        if "Action" in doc and "NotAction" in doc:
            raise _malformed(R_SYNTAX)
        if "Action" not in doc and "NotAction" not in doc:
            raise _malformed("Missing required field Action")
        self.not_action = "NotAction" in doc
        self.action_any = False
        patterns = [a.lower() for a in
                    _string_list(doc["NotAction" if self.not_action else "Action"], R_INVALID_ACTION)]
        exact, wild = set(), []
        for p in patterns:
            if p in ("*", "s3:*"):
                self.action_any = True
                continue
            vendor, _, name = p.partition(":")
            if vendor != "s3" or not name or ":" in name:
                raise _malformed(R_INVALID_ACTION)
            if "*" in p or "?" in p:
                if not any(_glob(p).match(a) for a in _ALL_ACTIONS_LOWER):
                    raise _malformed(R_INVALID_ACTION)
                wild.append(_glob(p))
            elif p in _ALL_ACTIONS_LOWER:
                exact.add(p)
            else:
                raise _malformed(R_INVALID_ACTION)
        self.action_exact = frozenset(exact)
        self.action_globs = tuple(wild)
        return patterns

    def _parse_resource(self, doc: dict, bucket: str, version: str) -> list[str]:
        if "Resource" in doc and "NotResource" in doc:
            raise _malformed(R_SYNTAX)
        if "Resource" not in doc and "NotResource" not in doc:
            raise _malformed("Missing required field Resource")
        self.not_resource = "NotResource" in doc
        patterns = _string_list(doc["NotResource" if self.not_resource else "Resource"],
                                R_INVALID_RESOURCE)
        for p in patterns:
            _check_resource(p, bucket)
        self.resources = _WildcardSet(patterns, version)
        return patterns

    def _parse_condition(self, doc: dict, version: str) -> None:
        self.conditions: tuple[_Condition, ...] = ()
        block = doc.get("Condition")
        if block is None:
            return
        if not isinstance(block, dict):
            raise _malformed(R_SYNTAX)
        conditions = []
        for operator, entries in block.items():
            _parse_operator(operator)                 # an unknown operator before any key problem
            if not isinstance(entries, dict) or not entries:
                raise _malformed(R_SYNTAX)
            for key, values in entries.items():
                conditions.append(_Condition(operator, key, values, version))
        self.conditions = tuple(conditions)

    def action_matches(self, action: str) -> bool:
        hit = (self.action_any or action in self.action_exact
               or any(g.match(action) for g in self.action_globs))
        return hit != self.not_action

    def applies(self, req: PolicyRequest) -> bool:
        """Principal, resource and conditions (the action was matched by the caller)."""
        if self.principals.match(req.principal) == self.not_principal:
            return False
        ctx = req.context
        if self.resources.match(req.resource, ctx) == self.not_resource:
            return False
        for cond in self.conditions:
            if not cond.test(ctx):
                return False
        return True

    def is_public(self) -> bool:
        if self.effect != "Allow":
            return False
        if not (self.not_principal or self.principals.everyone):
            return False
        return not any(c.narrows_public_access() for c in self.conditions)


def _check_resource(pattern: str, bucket: str) -> None:
    if pattern == "*":
        return
    if not pattern.startswith(S3_ARN_PREFIX):
        raise _malformed(R_INVALID_RESOURCE)
    rest = pattern[len(S3_ARN_PREFIX):]
    bucket_part = rest.split("/", 1)[0]
    if not bucket_part or not _glob(bucket_part).match(bucket):
        raise _malformed(R_INVALID_RESOURCE)


def _check_actions_apply(actions: list[str], resources: list[str], bucket: str) -> None:
    """AWS refuses a statement whose action applies to none of its resources (s3:PutObject on
    the bucket ARN, s3:ListBucket on bucket/*, s3:ListAllMyBuckets anywhere)."""
    object_ok = any(r == "*" or "/" in r or "*" in r[len(S3_ARN_PREFIX):] for r in resources)
    bucket_arn_text = bucket_arn(bucket)
    bucket_ok = any(r == "*" or _glob(r).match(bucket_arn_text) for r in resources)
    for a in actions:
        if a in ("*", "s3:*"):
            expanded = _ALL_ACTIONS_LOWER.keys()
        elif "*" in a or "?" in a:
            expanded = [x for x in _ALL_ACTIONS_LOWER if _glob(a).match(x)]
        else:
            expanded = [a]
        if not any((object_ok and x in _OBJECT_LOWER) or (bucket_ok and x in _BUCKET_LOWER)
                   for x in expanded):
            raise _malformed(R_RESOURCE_MISMATCH)


def _string_list(value: object, reason: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise _malformed(reason)
    return items                                          # type: ignore[return-value]


def _malformed(reason: str) -> S3Error:
    return S3Error("MalformedPolicy", reason)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


# --- the policy -----------------------------------------------------------------------------------

class BucketPolicy:
    """A validated, compiled bucket policy. Build with `parse` (or `cached`), never by hand."""

    def __init__(self, text: str, version: str, statements: tuple[_Statement, ...]):
        self.text = text
        self.version = version
        self._statements = statements
        self._by_action: dict[str, tuple[_Statement, ...]] = {}

    @classmethod
    def parse(cls, text: str | bytes, bucket: str) -> "BucketPolicy":
        """Validate as AWS does on PutBucketPolicy; S3Error("MalformedPolicy", reason) otherwise."""
        if isinstance(text, (bytes, bytearray)):
            if not text[:1] == b"{":
                raise _malformed(R_FIRST_BYTE)
            if len(text) > _MAX_RAW_BYTES:
                raise _malformed(R_TOO_LARGE)
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed(R_INVALID_JSON) from None
        if not text.startswith("{"):
            raise _malformed(R_FIRST_BYTE)
        if len(text) > _MAX_RAW_BYTES:
            raise _malformed(R_TOO_LARGE)
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise _malformed(R_INVALID_JSON) from None
        if not isinstance(doc, dict):
            raise _malformed(R_INVALID_JSON)
        if len(text) > MAX_POLICY_BYTES:       # AWS counts the policy without its whitespace
            compact = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
            if len(compact.encode("utf-8")) > MAX_POLICY_BYTES:
                raise _malformed(R_TOO_LARGE)
        for name in doc:
            if name not in ("Version", "Id", "Statement"):
                raise _malformed(f"Unknown field {name}")
        version = doc.get("Version", VERSION_2008)
        if version not in (VERSION_2012, VERSION_2008):
            raise _malformed(R_VERSION)
        if "Id" in doc and not isinstance(doc["Id"], str):
            raise _malformed(R_SYNTAX)
        if "Statement" not in doc:
            raise _malformed(R_MISSING_STATEMENT)
        raw = doc["Statement"]
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise _malformed(R_EMPTY_STATEMENT)
        statements = tuple(_Statement(s, bucket, version) for s in items)
        return cls(text, version, statements)

    @staticmethod
    @lru_cache(maxsize=1024)
    def cached(text: str, bucket: str) -> "BucketPolicy":
        """`parse` memoised on (text, bucket): the per-request path gets the compiled policy of
        the stored text without parsing it again."""
        return BucketPolicy.parse(text, bucket)

    def _candidates(self, action: str) -> tuple[_Statement, ...]:
        found = self._by_action.get(action)
        if found is None:
            found = tuple(s for s in self._statements if s.action_matches(action))
            if len(self._by_action) < _ACTION_CACHE_MAX:
                self._by_action[action] = found
        return found

    def evaluate(self, req: PolicyRequest) -> Decision:
        """"Deny" if an applicable Deny statement, else "Allow" if an applicable Allow, else
        "Default" (no statement applies: the caller decides from ACLs / ownership)."""
        allowed = False
        for st in self._candidates(req.action.lower()):
            if (st.effect == "Allow" and allowed) or not st.applies(req):
                continue
            if st.effect == "Deny":
                return "Deny"
            allowed = True
        return "Allow" if allowed else "Default"

    def is_public(self) -> bool:
        """AWS's "meaning of public": an Allow to everyone ("*", {"AWS": "*"}, or a NotPrincipal)
        not narrowed by a fixed value of aws:SourceIp (a CIDR no broader than /8, or /32 for
        IPv6), aws:SourceArn, aws:SourceVpc(e), aws:SourceOwner, aws:SourceAccount, aws:userid,
        aws:PrincipalAccount/Arn/OrgID, s3:DataAccessPointArn/Account or the KMS key id."""
        return any(st.is_public() for st in self._statements)

    @property
    def statement_count(self) -> int:
        return len(self._statements)
