"""Access control lists: the stored form, canned ACLs, grant headers, the AccessControlPolicy
XML document, and whether an ACL grants a permission (docs/authorization.md).

Stored form (the original CloudServer's, on buckets and objects alike, docs/metadata-keys.md):
`{"Canned": "private", "FULL_CONTROL": [], "WRITE": [], "WRITE_ACP": [], "READ": [], "READ_ACP": []}`
(objects have no WRITE list). A canned ACL is stored by name with empty lists; explicit grants
(x-amz-grant-* headers or an XML body) are stored with `Canned: ""` and lists of canonical ids or
group URIs (an email grantee is resolved to its account's canonical id when the ACL is put).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from lxml import etree

from gateway.models import CANNED_ACLS, canned_acl
from gateway.xml import XSI_NS, children, parse, root, sub
from shared.config import Config
from shared.errors import S3Error

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
LOG_DELIVERY = "http://acs.amazonaws.com/groups/s3/LogDelivery"
GROUPS = (ALL_USERS, AUTH_USERS, LOG_DELIVERY)
PUBLIC_GROUPS = frozenset((ALL_USERS, AUTH_USERS))
# The canonical id an anonymous requester writes objects under (the original's `publicId`).
PUBLIC_ID = ALL_USERS

PERMISSIONS = ("FULL_CONTROL", "WRITE", "WRITE_ACP", "READ", "READ_ACP")
OBJECT_PERMISSIONS = ("FULL_CONTROL", "WRITE_ACP", "READ", "READ_ACP")
PUBLIC_CANNED = frozenset(("public-read", "public-read-write", "authenticated-read"))
GRANT_HEADERS = {"x-amz-grant-full-control": "FULL_CONTROL", "x-amz-grant-write": "WRITE",
                 "x-amz-grant-write-acp": "WRITE_ACP", "x-amz-grant-read": "READ",
                 "x-amz-grant-read-acp": "READ_ACP"}
BUCKET_OWNER_FULL_CONTROL = "bucket-owner-full-control"

# Placeholders of canned expansions: the resource's owner, the bucket's owner.
_OWNER, _BUCKET_OWNER = "\0owner", "\0bucket-owner"
_CANNED_GRANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "private": (),
    "public-read": ((ALL_USERS, "READ"),),
    "public-read-write": ((ALL_USERS, "READ"), (ALL_USERS, "WRITE")),
    "authenticated-read": ((AUTH_USERS, "READ"),),
    "bucket-owner-read": ((_BUCKET_OWNER, "READ"),),
    "bucket-owner-full-control": ((_BUCKET_OWNER, "FULL_CONTROL"),),
    "log-delivery-write": ((LOG_DELIVERY, "WRITE"), (LOG_DELIVERY, "READ_ACP")),
}


def requester_ids(canonical_id: str | None) -> frozenset[str]:
    """Every grantee a requester is: itself and the groups it belongs to (anonymous: AllUsers)."""
    if canonical_id is None or canonical_id == PUBLIC_ID:
        return frozenset((ALL_USERS,))
    return frozenset((canonical_id, ALL_USERS, AUTH_USERS))


def grants(acl: Mapping[str, Any], owner: str, bucket_owner: str, *, bucket: bool) -> list[tuple[str, str]]:
    """The (grantee, permission) pairs an ACL gives, owner's implicit FULL_CONTROL first for a canned
    ACL (as GetBucketAcl shows it); duplicates dropped, request order kept."""
    out: list[tuple[str, str]] = []
    canned = acl.get("Canned") or ""
    if canned:
        out.append((owner, "FULL_CONTROL"))
        for grantee, perm in _CANNED_GRANTS.get(canned, ()):
            if grantee == _BUCKET_OWNER:
                if bucket:
                    continue   # bucket-owner-* on a bucket: the owner already has everything
                grantee = bucket_owner
            out.append((grantee, perm))
    for perm in PERMISSIONS:
        for grantee in acl.get(perm) or ():
            out.append((grantee, perm))
    seen: set[tuple[str, str]] = set()
    unique = []
    for pair in out:
        if pair not in seen:
            seen.add(pair)
            unique.append(pair)
    return unique


def allows(acl: Mapping[str, Any], perm: str, ids: frozenset[str], bucket_owner: str,
           ignore_public: bool = False) -> bool:
    """Does `acl` grant `perm` (or FULL_CONTROL) to one of `ids`? The resource owner's implicit
    rights are the caller's; `ignore_public` drops grants to AllUsers/AuthenticatedUsers
    (Block Public Access IgnorePublicAcls)."""
    canned = acl.get("Canned") or ""
    if canned:
        for grantee, granted in _CANNED_GRANTS.get(canned, ()):
            if granted != perm and granted != "FULL_CONTROL":
                continue
            if grantee == _BUCKET_OWNER:
                grantee = bucket_owner
            if ignore_public and grantee in PUBLIC_GROUPS:
                continue
            if grantee in ids:
                return True
    for granted in (perm, "FULL_CONTROL"):
        for grantee in acl.get(granted) or ():
            if ignore_public and grantee in PUBLIC_GROUPS:
                continue
            if grantee in ids:
                return True
    return False


def is_public(acl: Mapping[str, Any]) -> bool:
    """Grants anything to AllUsers or AuthenticatedUsers (Block Public Access's definition)."""
    if (acl.get("Canned") or "") in PUBLIC_CANNED:
        return True
    return any(g in PUBLIC_GROUPS for perm in PERMISSIONS for g in (acl.get(perm) or ()))


def is_bucket_owner_full_control(acl: Mapping[str, Any], owner: str) -> bool:
    """The only ACLs a BucketOwnerEnforced bucket accepts: bucket-owner-full-control, private, or
    grants of FULL_CONTROL to the owner alone."""
    canned = acl.get("Canned") or ""
    if canned:
        return canned in (BUCKET_OWNER_FULL_CONTROL, "private")
    listed = [(g, p) for p in PERMISSIONS for g in (acl.get(p) or ())]
    return all(g == owner and p == "FULL_CONTROL" for g, p in listed)


# ---------------------------------------------------------------- from a request

def _empty(bucket: bool) -> dict[str, Any]:
    acl = canned_acl("private", bucket=bucket)
    acl["Canned"] = ""
    return acl


def _grantee_id(kind: str, value: str, config: Config, raw: str) -> str:
    """A grantee of a header or a document -> what the stored ACL lists."""
    if kind == "id":
        if config.account_by_canonical_id(value) is None:
            raise S3Error("InvalidArgument", "Invalid id", ArgumentName="CanonicalUser/ID", ArgumentValue=value)
        return value
    if kind == "emailaddress":
        account = config.account_by_email(value)
        if account is None:
            raise S3Error("UnresolvableGrantByEmailAddress", EmailAddress=value)
        return account.canonical_id
    if kind == "uri":
        if value not in GROUPS:
            raise S3Error("InvalidArgument", "Invalid group uri", ArgumentName="Group/URI", ArgumentValue=value)
        return value
    raise S3Error("InvalidArgument", "Argument format not recognized", ArgumentName="x-amz-grant", ArgumentValue=raw)


def _parse_grant_header(value: str, config: Config) -> list[str]:
    """`id="...", emailAddress="...", uri="..."` -> grantee ids."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        kind, eq, grantee = item.partition("=")
        grantee = grantee.strip().strip('"').strip()
        if not eq or not grantee:
            raise S3Error("InvalidArgument", "Argument format not recognized", ArgumentName="x-amz-grant",
                          ArgumentValue=value)
        out.append(_grantee_id(kind.strip().lower(), grantee, config, value))
    return out


def acl_from_headers(headers: Mapping[str, str], config: Config, *, bucket: bool,
                     canned_name: str = "x-amz-acl") -> dict[str, Any] | None:
    """The ACL a request's x-amz-acl or x-amz-grant-* headers set, None when it has neither.
    Both at once -> InvalidRequest; an unknown canned name -> InvalidArgument."""
    canned = headers.get(canned_name)
    granted = [h for h in GRANT_HEADERS if h in headers]
    if canned is not None and granted:
        raise S3Error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None:
        if canned not in CANNED_ACLS:
            raise S3Error("InvalidArgument", ArgumentName=canned_name, ArgumentValue=canned)
        return canned_acl(canned, bucket=bucket)
    if not granted:
        return None
    acl = _empty(bucket)
    for header in granted:
        perm = GRANT_HEADERS[header]
        if perm == "WRITE" and not bucket:
            continue   # objects have no WRITE permission; AWS ignores the header on them
        for grantee in _parse_grant_header(headers[header], config):
            if grantee not in acl[perm]:
                acl[perm].append(grantee)
    return acl


def acl_from_xml(body: bytes, config: Config, owner: str, *, bucket: bool) -> dict[str, Any]:
    """An AccessControlPolicy document -> the stored ACL. MalformedACLError for a document that does
    not follow the schema; AccessDenied when it names another owner."""
    doc = parse(body, "MalformedACLError", root_tag="AccessControlPolicy")
    owners = children(doc, "Owner")
    if len(owners) != 1:
        raise S3Error("MalformedACLError")
    owner_ids = children(owners[0], "ID")
    if len(owner_ids) != 1:
        raise S3Error("MalformedACLError")
    if (owner_ids[0].text or "").strip() != owner:
        raise S3Error("AccessDenied")
    lists = children(doc, "AccessControlList")
    if len(lists) > 1:
        raise S3Error("MalformedACLError")
    acl = _empty(bucket)
    allowed = PERMISSIONS if bucket else OBJECT_PERMISSIONS
    for grant in (children(lists[0], "Grant") if lists else []):
        grantees, perms = children(grant, "Grantee"), children(grant, "Permission")
        if len(grantees) != 1 or len(perms) != 1:
            raise S3Error("MalformedACLError")
        perm = (perms[0].text or "").strip()
        if perm not in allowed:
            raise S3Error("MalformedACLError")
        grantee = grantees[0]
        kind = grantee.get(f"{{{XSI_NS}}}type")
        field = {"CanonicalUser": ("ID", "id"), "AmazonCustomerByEmail": ("EmailAddress", "emailaddress"),
                 "Group": ("URI", "uri")}.get(kind or "")
        if field is None:
            raise S3Error("MalformedACLError")
        values = children(grantee, field[0])
        if len(values) != 1 or not (values[0].text or "").strip():
            raise S3Error("MalformedACLError")
        value = _grantee_id(field[1], values[0].text.strip(), config, values[0].text)
        if value not in acl[perm]:
            acl[perm].append(value)
    return acl


# ---------------------------------------------------------------- to a response

def _grantee_element(grant: etree._Element, grantee: str, config: Config) -> None:
    el = etree.SubElement(grant, "Grantee", nsmap={"xsi": XSI_NS})
    if grantee in GROUPS:
        el.set(f"{{{XSI_NS}}}type", "Group")
        sub(el, "URI", grantee)
        return
    el.set(f"{{{XSI_NS}}}type", "CanonicalUser")
    sub(el, "ID", grantee)
    account = config.account_by_canonical_id(grantee)
    if account is not None:
        sub(el, "DisplayName", account.name)


def acl_document(pairs: Iterable[tuple[str, str]], owner: str, owner_name: str, config: Config) -> etree._Element:
    """The AccessControlPolicy document of GetBucketAcl / GetObjectAcl."""
    doc = root("AccessControlPolicy")
    owner_el = sub(doc, "Owner")
    sub(owner_el, "ID", owner)
    if owner_name:
        sub(owner_el, "DisplayName", owner_name)
    acl_el = sub(doc, "AccessControlList")
    for grantee, perm in pairs:
        grant = sub(acl_el, "Grant")
        _grantee_element(grant, grantee, config)
        sub(grant, "Permission", perm)
    return doc
