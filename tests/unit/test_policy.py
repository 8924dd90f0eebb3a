"""Bucket-policy engine (gateway/policy.py): AWS's documented example policies, one test per
condition-operator family, the Not* elements, PutBucketPolicy validation reasons and
GetBucketPolicyStatus' "meaning of public"."""
from __future__ import annotations

import json

import pytest

from gateway.policy import (BucketPolicy, Principal, PolicyRequest, bucket_arn, object_arn)
from shared.errors import S3Error

BUCKET = "amzn-s3-demo-bucket"
ALICE = Principal(canonical_id="a" * 64, account_id="111122223333",
                  arn="arn:aws:iam::111122223333:root")
BOB = Principal(canonical_id="b" * 64, account_id="444455556666",
                arn="arn:aws:iam::444455556666:root")
OBJ = object_arn(BUCKET, "photos/cat.jpg")
BKT = bucket_arn(BUCKET)


def policy(*statements: dict, version: str | None = "2012-10-17") -> BucketPolicy:
    doc: dict = {"Statement": list(statements)}
    if version is not None:
        doc["Version"] = version
    return BucketPolicy.parse(json.dumps(doc), BUCKET)


def stmt(effect: str = "Allow", principal: object = "*", action: object = "s3:GetObject",
         resource: object = f"arn:aws:s3:::{BUCKET}/*", condition: dict | None = None,
         **extra: object) -> dict:
    s: dict = {"Effect": effect, "Principal": principal, "Action": action, "Resource": resource}
    if condition is not None:
        s["Condition"] = condition
    s.update(extra)
    return s


def decide(p: BucketPolicy, action: str = "s3:GetObject", resource: str = OBJ,
           who: Principal | None = None) -> str:
    return p.evaluate(PolicyRequest(who, action, resource, {}))


def ctx_decide(p: BucketPolicy, context: dict, action: str = "s3:GetObject", resource: str = OBJ,
               who: Principal | None = None) -> str:
    return p.evaluate(PolicyRequest(who, action, resource, context))


def malformed(doc: object, bucket: str = BUCKET) -> str:
    text = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    with pytest.raises(S3Error) as exc:
        BucketPolicy.parse(text, bucket)
    assert exc.value.code == "MalformedPolicy" and exc.value.status == 400
    return exc.value.message


# --- AWS "Bucket policy examples" -----------------------------------------------------------------

def test_public_read_example_allows_anonymous_get_only():
    p = policy(stmt(Sid="PublicRead", action=["s3:GetObject", "s3:GetObjectVersion"]))
    assert decide(p) == "Allow"
    assert decide(p, who=ALICE) == "Allow"
    assert decide(p, "s3:GetObjectVersion") == "Allow"
    assert decide(p, "s3:PutObject") == "Default"
    assert decide(p, "s3:ListBucket", BKT) == "Default"
    assert p.is_public()


def test_ip_restriction_example_denies_outside_the_range():
    p = policy(stmt("Deny", action="s3:*", resource=[f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
                    condition={"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}))
    assert ctx_decide(p, {"aws:sourceip": "192.0.2.77"}) == "Default"
    assert ctx_decide(p, {"aws:sourceip": "203.0.113.1"}) == "Deny"
    assert ctx_decide(p, {"aws:sourceip": "203.0.113.1"}, "s3:ListBucket", BKT) == "Deny"


def test_ip_example_mixing_ipv4_and_ipv6():
    p = policy(stmt(action="s3:*", condition={
        "IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:DB8:1234:5678::/64"]},
        "NotIpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:DB8:1234:5678:ABCD::/80"]}}))
    assert ctx_decide(p, {"aws:sourceip": "192.0.2.1"}) == "Allow"
    assert ctx_decide(p, {"aws:sourceip": "2001:db8:1234:5678::1"}) == "Allow"
    assert ctx_decide(p, {"aws:sourceip": "2001:db8:1234:5678:abcd::1"}) == "Default"
    assert ctx_decide(p, {"aws:sourceip": "198.51.100.1"}) == "Default"
    assert ctx_decide(p, {}) == "Default"          # IpAddress on an absent key is false


def test_https_only_example_denies_plain_http():
    p = policy(stmt(action="s3:GetObject"),
               stmt("Deny", action="s3:*", condition={"Bool": {"aws:SecureTransport": "false"}}))
    assert ctx_decide(p, {"aws:securetransport": "false"}) == "Deny"
    assert ctx_decide(p, {"aws:securetransport": "true"}) == "Allow"
    assert ctx_decide(p, {}) == "Allow"             # Bool on an absent key is false: no Deny


def test_prefix_listing_restriction_example():
    p = policy(stmt(principal={"AWS": "111122223333"}, action="s3:ListBucket",
                    resource=f"arn:aws:s3:::{BUCKET}",
                    condition={"StringEquals": {"s3:prefix": ["", "home/"], "s3:delimiter": "/"}}))
    root = {"s3:prefix": "", "s3:delimiter": "/"}
    assert ctx_decide(p, root, "s3:ListBucket", BKT, ALICE) == "Allow"
    assert ctx_decide(p, {**root, "s3:prefix": "home/"}, "s3:ListBucket", BKT, ALICE) == "Allow"
    assert ctx_decide(p, {**root, "s3:prefix": "private/"}, "s3:ListBucket", BKT, ALICE) == "Default"
    assert ctx_decide(p, {"s3:prefix": "home/"}, "s3:ListBucket", BKT, ALICE) == "Default"   # AND
    assert ctx_decide(p, root, "s3:ListBucket", BKT, BOB) == "Default"


def test_mfa_example_with_null_and_numeric_age():
    p = policy(stmt(action="s3:GetObject"),
               stmt("Deny", action="s3:*", resource=f"arn:aws:s3:::{BUCKET}/taxdocuments/*",
                    condition={"Null": {"aws:MultiFactorAuthAge": True}}),
               stmt("Deny", action="s3:*", resource=f"arn:aws:s3:::{BUCKET}/taxdocuments/*",
                    condition={"NumericGreaterThan": {"aws:MultiFactorAuthAge": "3600"}}))
    tax = object_arn(BUCKET, "taxdocuments/2024.pdf")
    assert ctx_decide(p, {}, resource=tax) == "Deny"
    assert ctx_decide(p, {"aws:multifactorauthage": "120"}, resource=tax) == "Allow"
    assert ctx_decide(p, {"aws:multifactorauthage": "7200"}, resource=tax) == "Deny"
    assert ctx_decide(p, {}) == "Allow"


def test_existing_and_request_object_tag_examples():
    p = policy(stmt(principal={"AWS": "arn:aws:iam::111122223333:root"}, action="s3:GetObject",
                    condition={"StringEquals": {"s3:ExistingObjectTag/environment": "production"}}),
               stmt(principal={"AWS": "arn:aws:iam::111122223333:root"}, action="s3:PutObject",
                    condition={"ForAllValues:StringLike": {"s3:RequestObjectTagKeys": ["Owner", "Creation*"]},
                               "StringEquals": {"s3:RequestObjectTag/Owner": "alice"}}))
    assert ctx_decide(p, {"s3:existingobjecttag/environment": "production"}, who=ALICE) == "Allow"
    assert ctx_decide(p, {"s3:existingobjecttag/environment": "staging"}, who=ALICE) == "Default"
    tags = {"s3:requestobjecttagkeys": ["Owner", "CreationDate"], "s3:requestobjecttag/owner": "alice"}
    assert ctx_decide(p, tags, "s3:PutObject", who=ALICE) == "Allow"
    extra = {**tags, "s3:requestobjecttagkeys": ["Owner", "Secret"]}
    assert ctx_decide(p, extra, "s3:PutObject", who=ALICE) == "Default"


def test_x_amz_acl_bucket_owner_full_control_example():
    p = policy(stmt(principal={"AWS": ["111122223333"]}, action="s3:PutObject",
                    condition={"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control"}}))
    ok = {"s3:x-amz-acl": "bucket-owner-full-control"}
    assert ctx_decide(p, ok, "s3:PutObject", who=ALICE) == "Allow"
    assert ctx_decide(p, {"s3:x-amz-acl": "public-read"}, "s3:PutObject", who=ALICE) == "Default"
    assert ctx_decide(p, {}, "s3:PutObject", who=ALICE) == "Default"
    assert ctx_decide(p, ok, "s3:PutObject", who=BOB) == "Default"
    assert not p.is_public()


def test_cross_account_grant_by_arn_account_id_and_canonical_user():
    for principal in ({"AWS": "arn:aws:iam::111122223333:root"}, {"AWS": "111122223333"},
                      {"CanonicalUser": "a" * 64}, {"AWS": ["444455556666", "111122223333"]}):
        p = policy(stmt(principal=principal, action=["s3:ListBucket", "s3:GetObject"],
                        resource=[f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]))
        assert decide(p, who=ALICE) == "Allow", principal
        assert decide(p, "s3:ListBucket", BKT, who=ALICE) == "Allow", principal
        assert decide(p, who=None) == "Default", principal
        assert decide(p, "s3:PutObject", who=ALICE) == "Default", principal
    only_bob = policy(stmt(principal={"AWS": "444455556666"}))
    assert decide(only_bob, who=ALICE) == "Default"


def test_aws_star_principal_includes_anonymous():
    p = policy(stmt(principal={"AWS": "*"}))
    assert decide(p) == "Allow" and decide(p, who=BOB) == "Allow"


def test_deny_wins_over_allow_in_any_order():
    allow, deny = stmt(action="s3:*"), stmt("Deny", action="s3:GetObject")
    for order in ((allow, deny), (deny, allow)):
        p = policy(*order)
        assert decide(p) == "Deny"
        assert decide(p, "s3:PutObject") == "Allow"


# --- Action / Resource / Principal and their Not* forms -------------------------------------------

def test_action_wildcards_match_case_insensitively():
    p = policy(stmt(action=["s3:Get*", "s3:*Tagging"], resource=["arn:aws:s3:::amzn-s3-demo-bucket/*",
                                                                 "arn:aws:s3:::amzn-s3-demo-bucket"]))
    assert decide(p, "s3:GetObject") == "Allow"
    assert decide(p, "S3:GETOBJECTACL") == "Allow"
    assert decide(p, "s3:GetBucketAcl", BKT) == "Allow"
    assert decide(p, "s3:PutObjectTagging") == "Allow"
    assert decide(p, "s3:PutObject") == "Default"
    q = policy(stmt(action="s3:*Object"))
    assert decide(q, "s3:DeleteObject") == "Allow" and decide(q, "s3:GetObjectAcl") == "Default"


def test_not_action_applies_to_every_other_action():
    p = policy({"Effect": "Deny", "Principal": "*", "NotAction": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"arn:aws:s3:::{BUCKET}/*"})
    assert decide(p, "s3:GetObject") == "Default"
    assert decide(p, "s3:PutObject") == "Deny"
    assert decide(p, "s3:DeleteObject") == "Deny"


def test_resource_wildcards_star_crosses_slashes_question_mark_is_one_character():
    p = policy(stmt(resource=[f"arn:aws:s3:::{BUCKET}/photos/*", f"arn:aws:s3:::{BUCKET}/doc?.txt"]))
    assert decide(p, resource=object_arn(BUCKET, "photos/2024/01/cat.jpg")) == "Allow"
    assert decide(p, resource=object_arn(BUCKET, "docs.txt")) == "Allow"
    assert decide(p, resource=object_arn(BUCKET, "doc.txt")) == "Default"
    assert decide(p, resource=object_arn(BUCKET, "Photos/cat.jpg")) == "Default"   # case-sensitive
    assert decide(p, resource=object_arn(BUCKET, "photos")) == "Default"
    assert decide(p, resource=object_arn(BUCKET, "photos/line\nbreak")) == "Allow"
    # the bucket ARN is not matched by bucket/*
    assert decide(p, "s3:GetObject", BKT) == "Default"


def test_not_resource_applies_outside_the_listed_resources():
    p = policy({"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                "NotResource": f"arn:aws:s3:::{BUCKET}/public/*"})
    assert decide(p, resource=object_arn(BUCKET, "public/a")) == "Default"
    assert decide(p, resource=object_arn(BUCKET, "private/a")) == "Deny"


def test_not_principal_applies_to_everyone_else_including_anonymous():
    p = policy({"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/*"})
    assert decide(p, who=ALICE) == "Default"
    assert decide(p, who=BOB) == "Deny"
    assert decide(p, who=None) == "Deny"


def test_policy_variables_are_substituted_in_2012_and_literal_in_2008():
    s = stmt(principal={"AWS": "111122223333"}, resource=f"arn:aws:s3:::{BUCKET}/home/${{aws:username}}/*")
    p = policy(s)
    mine = object_arn(BUCKET, "home/alice/notes.txt")
    assert ctx_decide(p, {"aws:username": "alice"}, resource=mine, who=ALICE) == "Allow"
    assert ctx_decide(p, {"aws:username": "bob"}, resource=mine, who=ALICE) == "Default"
    assert ctx_decide(p, {}, resource=mine, who=ALICE) == "Default"          # unresolvable
    literal = object_arn(BUCKET, "home/${aws:username}/notes.txt")
    old = policy(s, version="2008-10-17")
    assert ctx_decide(old, {"aws:username": "alice"}, resource=mine, who=ALICE) == "Default"
    assert ctx_decide(old, {"aws:username": "alice"}, resource=literal, who=ALICE) == "Allow"
    cond = policy(stmt(action="s3:ListBucket", resource=BKT,
                       condition={"StringLike": {"s3:prefix": ["home/${aws:username}/*", "${*}"]}}))
    assert ctx_decide(cond, {"aws:username": "al", "s3:prefix": "home/al/x"}, "s3:ListBucket", BKT) == "Allow"
    assert ctx_decide(cond, {"aws:username": "al", "s3:prefix": "home/bo/x"}, "s3:ListBucket", BKT) == "Default"
    assert ctx_decide(cond, {"s3:prefix": "*"}, "s3:ListBucket", BKT) == "Allow"   # ${*} is a literal *


# --- condition operators --------------------------------------------------------------------------

def one(op: str, key: str, values: object) -> BucketPolicy:
    return policy(stmt(action="s3:*", resource=["*"], condition={op: {key: values}}))


@pytest.mark.parametrize("op,value,expected", [
    ("StringEquals", "Mozilla/5.0", "Allow"),
    ("StringEquals", "mozilla/5.0", "Default"),
    ("StringNotEquals", "Mozilla/5.0", "Default"),
    ("StringNotEquals", "curl/8", "Allow"),
    ("StringEqualsIgnoreCase", "mozilla/5.0", "Allow"),
    ("StringNotEqualsIgnoreCase", "MOZILLA/5.0", "Default"),
    ("StringNotEqualsIgnoreCase", "curl", "Allow"),
    ("StringLike", "Mozilla/*", "Allow"),
    ("StringLike", "Mozill?/5.0", "Allow"),
    ("StringLike", "mozilla/*", "Default"),
    ("StringNotLike", "Mozilla/*", "Default"),
    ("StringNotLike", "curl/*", "Allow"),
])
def test_string_operators(op, value, expected):
    assert ctx_decide(one(op, "aws:UserAgent", value), {"aws:useragent": "Mozilla/5.0"}) == expected


def test_negated_operator_with_several_values_is_nor():
    p = one("StringNotEquals", "aws:Referer", ["http://a.example/", "http://b.example/"])
    assert ctx_decide(p, {"aws:referer": "http://a.example/"}) == "Default"
    assert ctx_decide(p, {"aws:referer": "http://b.example/"}) == "Default"
    assert ctx_decide(p, {"aws:referer": "http://c.example/"}) == "Allow"
    positive = one("StringLike", "aws:Referer", ["http://a.example/*", "http://b.example/*"])
    assert ctx_decide(positive, {"aws:referer": "http://b.example/page"}) == "Allow"


def test_absent_key_makes_positive_operators_false_and_negated_true():
    assert ctx_decide(one("StringEquals", "aws:Referer", "x"), {}) == "Default"
    assert ctx_decide(one("StringNotEquals", "aws:Referer", "x"), {}) == "Allow"
    assert ctx_decide(one("StringNotLike", "aws:Referer", "x*"), {}) == "Allow"
    assert ctx_decide(one("NotIpAddress", "aws:SourceIp", "10.0.0.0/8"), {}) == "Allow"
    assert ctx_decide(one("NumericLessThan", "s3:max-keys", "10"), {}) == "Default"


@pytest.mark.parametrize("op,limit,expected", [
    ("NumericEquals", "100", "Allow"), ("NumericEquals", "10", "Default"),
    ("NumericNotEquals", "100", "Default"), ("NumericNotEquals", "10", "Allow"),
    ("NumericLessThan", "101", "Allow"), ("NumericLessThan", "100", "Default"),
    ("NumericLessThanEquals", "100", "Allow"), ("NumericLessThanEquals", "99", "Default"),
    ("NumericGreaterThan", "99", "Allow"), ("NumericGreaterThan", "100", "Default"),
    ("NumericGreaterThanEquals", "100", "Allow"), ("NumericGreaterThanEquals", "100.5", "Default"),
    ("NumericEquals", 100, "Allow"),
])
def test_numeric_operators_on_max_keys(op, limit, expected):
    assert ctx_decide(one(op, "s3:max-keys", limit), {"s3:max-keys": "100"}, "s3:ListBucket", BKT) == expected


def test_numeric_operator_with_non_numeric_request_value_does_not_match():
    assert ctx_decide(one("NumericLessThan", "s3:max-keys", "10"), {"s3:max-keys": "abc"}) == "Default"


@pytest.mark.parametrize("op,value,expected", [
    ("DateLessThan", "2027-01-01T00:00:00Z", "Allow"),
    ("DateLessThan", "2026-06-01T00:00:00Z", "Default"),
    ("DateGreaterThan", "2026-06-01", "Allow"),
    ("DateGreaterThanEquals", "2026-12-06T07:26:43Z", "Allow"),
    ("DateLessThanEquals", "2026-12-06T07:26:43+00:00", "Allow"),
    ("DateEquals", "2026-12-06T08:26:43+01:00", "Allow"),
    ("DateNotEquals", "2026-12-06T07:26:43Z", "Default"),
    ("DateLessThan", "1796549580", "Allow"),                  # epoch seconds (2026-12-06T09:33Z)
    ("DateGreaterThan", 1796549580, "Default"),
])
def test_date_operators_iso8601_and_epoch(op, value, expected):
    context = {"aws:currenttime": "2026-12-06T07:26:43Z"}
    assert ctx_decide(one(op, "aws:CurrentTime", value), context) == expected


def test_date_operator_on_epoch_time_context():
    p = one("DateGreaterThan", "aws:EpochTime", "2020-01-01T00:00:00Z")
    assert ctx_decide(p, {"aws:epochtime": "1796549580"}) == "Allow"
    assert ctx_decide(p, {"aws:epochtime": "1500000000"}) == "Default"


def test_bool_operator_is_case_insensitive_on_values():
    p = one("Bool", "aws:SecureTransport", True)
    assert ctx_decide(p, {"aws:securetransport": "true"}) == "Allow"
    assert ctx_decide(p, {"aws:securetransport": "TRUE"}) == "Allow"
    assert ctx_decide(p, {"aws:securetransport": "false"}) == "Default"


def test_binary_equals_compares_decoded_bytes():
    p = one("BinaryEquals", "s3:x-amz-content-sha256", "QmluYXJ5VmFsdWU=")
    assert ctx_decide(p, {"s3:x-amz-content-sha256": "QmluYXJ5VmFsdWU="}) == "Allow"
    assert ctx_decide(p, {"s3:x-amz-content-sha256": "T3RoZXI="}) == "Default"


def test_ip_address_cidr_and_single_address():
    p = one("IpAddress", "aws:SourceIp", ["10.1.0.0/16", "203.0.113.9", "2001:db8::/32"])
    assert ctx_decide(p, {"aws:sourceip": "10.1.200.3"}) == "Allow"
    assert ctx_decide(p, {"aws:sourceip": "203.0.113.9"}) == "Allow"
    assert ctx_decide(p, {"aws:sourceip": "203.0.113.10"}) == "Default"
    assert ctx_decide(p, {"aws:sourceip": "2001:db8:ffff::1"}) == "Allow"
    assert ctx_decide(p, {"aws:sourceip": "not-an-ip"}) == "Default"


@pytest.mark.parametrize("op,value,expected", [
    ("ArnLike", "arn:aws:cloudtrail:*:111122223333:trail/*", "Allow"),
    ("ArnEquals", "arn:aws:cloudtrail:us-east-1:111122223333:trail/main", "Allow"),
    ("ArnEquals", "arn:aws:cloudtrail:us-east-1:111122223333:trail/other", "Default"),
    ("ArnNotEquals", "arn:aws:cloudtrail:us-east-1:111122223333:trail/other", "Allow"),
    ("ArnNotLike", "arn:aws:cloudtrail:*:111122223333:*", "Default"),
    # a wildcard stays inside its colon-delimited part
    ("ArnLike", "arn:aws:cloudtrail:*:trail/main", "Default"),
])
def test_arn_operators(op, value, expected):
    context = {"aws:sourcearn": "arn:aws:cloudtrail:us-east-1:111122223333:trail/main"}
    assert ctx_decide(one(op, "aws:SourceArn", value), context) == expected


def test_null_operator_tests_presence():
    absent = one("Null", "s3:x-amz-server-side-encryption", "true")
    present = one("Null", "s3:x-amz-server-side-encryption", "false")
    assert ctx_decide(absent, {}) == "Allow"
    assert ctx_decide(absent, {"s3:x-amz-server-side-encryption": "AES256"}) == "Default"
    assert ctx_decide(present, {"s3:x-amz-server-side-encryption": "AES256"}) == "Allow"
    assert ctx_decide(present, {}) == "Default"


def test_if_exists_suffix_passes_on_absent_key_and_checks_present_key():
    p = one("StringEqualsIfExists", "s3:x-amz-server-side-encryption", "AES256")
    assert ctx_decide(p, {}) == "Allow"
    assert ctx_decide(p, {"s3:x-amz-server-side-encryption": "AES256"}) == "Allow"
    assert ctx_decide(p, {"s3:x-amz-server-side-encryption": "aws:kms"}) == "Default"
    neg = one("NumericLessThanIfExists", "s3:max-keys", "50")
    assert ctx_decide(neg, {}) == "Allow" and ctx_decide(neg, {"s3:max-keys": "500"}) == "Default"


def test_for_any_value_and_for_all_values():
    any_ = one("ForAnyValue:StringEquals", "s3:RequestObjectTagKeys", ["Owner", "Project"])
    all_ = one("ForAllValues:StringEquals", "s3:RequestObjectTagKeys", ["Owner", "Project"])
    for keys, any_expected, all_expected in (
            (["Owner"], "Allow", "Allow"),
            (["Owner", "Secret"], "Allow", "Default"),
            (["Secret"], "Default", "Default"),
            (["Owner", "Project"], "Allow", "Allow")):
        context = {"s3:requestobjecttagkeys": keys}
        assert ctx_decide(any_, context) == any_expected, keys
        assert ctx_decide(all_, context) == all_expected, keys
    # absent (or empty) key: ForAnyValue false, ForAllValues true
    assert ctx_decide(any_, {}) == "Default"
    assert ctx_decide(all_, {}) == "Allow"
    assert ctx_decide(all_, {"s3:requestobjecttagkeys": []}) == "Allow"
    # negated with a set qualifier: no request value equals a policy value
    none_ = one("ForAllValues:StringNotEquals", "s3:RequestObjectTagKeys", ["Secret"])
    assert ctx_decide(none_, {"s3:requestobjecttagkeys": ["Owner"]}) == "Allow"
    assert ctx_decide(none_, {"s3:requestobjecttagkeys": ["Owner", "Secret"]}) == "Default"


def test_condition_key_names_are_case_insensitive_values_case_sensitive():
    p = one("StringEquals", "AWS:USERAGENT", "Agent")
    assert ctx_decide(p, {"aws:useragent": "Agent"}) == "Allow"
    assert ctx_decide(p, {"aws:useragent": "agent"}) == "Default"


def test_several_operators_and_keys_are_and():
    p = policy(stmt(action="s3:ListBucket", resource=BKT, condition={
        "StringEquals": {"s3:prefix": "a/", "s3:delimiter": "/"},
        "NumericLessThanEquals": {"s3:max-keys": "10"}}))
    good = {"s3:prefix": "a/", "s3:delimiter": "/", "s3:max-keys": "5"}
    assert ctx_decide(p, good, "s3:ListBucket", BKT) == "Allow"
    assert ctx_decide(p, {**good, "s3:max-keys": "11"}, "s3:ListBucket", BKT) == "Default"
    assert ctx_decide(p, {**good, "s3:delimiter": "|"}, "s3:ListBucket", BKT) == "Default"


def test_request_context_keys_of_the_brief():
    cases = [
        ("StringEquals", "aws:PrincipalAccount", "111122223333", {"aws:principalaccount": "111122223333"}),
        ("StringEquals", "s3:VersionId", "v1", {"s3:versionid": "v1"}),
        ("StringEquals", "s3:signatureversion", "AWS4-HMAC-SHA256", {"s3:signatureversion": "AWS4-HMAC-SHA256"}),
        ("StringEquals", "s3:authType", "REST-HEADER", {"s3:authtype": "REST-HEADER"}),
        ("StringEquals", "s3:x-amz-server-side-encryption", "AES256", {"s3:x-amz-server-side-encryption": "AES256"}),
    ]
    for op, key, value, context in cases:
        p = one(op, key, value)
        assert ctx_decide(p, context) == "Allow", key
        assert ctx_decide(p, {}) == "Default", key


# --- validation -----------------------------------------------------------------------------------

GOOD = stmt()


@pytest.mark.parametrize("doc,reason", [
    (" {}", "Policies must be valid JSON and the first byte must be '{'"),
    ("", "Policies must be valid JSON and the first byte must be '{'"),
    (b"[1]", "Policies must be valid JSON and the first byte must be '{'"),
    ("{not json", "This policy contains invalid Json"),
    (b'{"Statement": "\xff"}', "This policy contains invalid Json"),
    ('{"Version": "2012-10-17", "Statement": [{"Effect": NaN}]}', "This policy contains invalid Json"),
    ({"Version": "2012-10-17"}, "Missing required field Statement"),
    ({"Version": "2012-10-17", "Statement": []}, "Could not parse the policy: Statement is empty!"),
    ({"Version": "2019-01-01", "Statement": [GOOD]}, "The policy must contain a valid version string"),
    ({"Version": "2012-10-17", "Statement": [GOOD], "Extra": 1}, "Unknown field Extra"),
    ({"Statement": [{**GOOD, "Principle": "*"}]}, "Unknown field Principle"),
    ({"Statement": [{k: v for k, v in GOOD.items() if k != "Effect"}]}, "Missing required field Effect"),
    ({"Statement": [{**GOOD, "Effect": "allow"}]}, "Invalid effect: allow"),
    ({"Statement": [{k: v for k, v in GOOD.items() if k != "Principal"}]}, "Missing required field Principal"),
    ({"Statement": [{**GOOD, "NotPrincipal": "*"}]}, "Invalid policy syntax."),
    ({"Statement": [{**GOOD, "Principal": {"AWS": "user"}}]}, "Invalid principal in policy"),
    ({"Statement": [{**GOOD, "Principal": {"AWS": "arn:aws:iam::*:root"}}]}, "Invalid principal in policy"),
    ({"Statement": [{**GOOD, "Principal": {"AWS": []}}]}, "Invalid principal in policy"),
    ({"Statement": [{**GOOD, "Principal": {"Who": "x"}}]}, "Invalid principal in policy"),
    ({"Statement": [{**GOOD, "Principal": {"CanonicalUser": "XYZ"}}]}, "Invalid principal in policy"),
    ({"Statement": [{**GOOD, "Principal": "everyone"}]}, "Invalid principal in policy"),
    ({"Statement": [{k: v for k, v in GOOD.items() if k != "Action"}]}, "Missing required field Action"),
    ({"Statement": [{**GOOD, "NotAction": "s3:PutObject"}]}, "Invalid policy syntax."),
    ({"Statement": [{**GOOD, "Action": "invalid_action"}]}, "Policy has invalid action"),
    ({"Statement": [{**GOOD, "Action": "iam:PassRole"}]}, "Policy has invalid action"),
    ({"Statement": [{**GOOD, "Action": "s3:GetObjectz"}]}, "Policy has invalid action"),
    ({"Statement": [{**GOOD, "Action": "s3:Frobnicate*"}]}, "Policy has invalid action"),
    ({"Statement": [{**GOOD, "Action": []}]}, "Policy has invalid action"),
    ({"Statement": [{k: v for k, v in GOOD.items() if k != "Resource"}]}, "Missing required field Resource"),
    ({"Statement": [{**GOOD, "NotResource": "*"}]}, "Invalid policy syntax."),
    ({"Statement": [{**GOOD, "Resource": "amzn-s3-demo-bucket/*"}]}, "Policy has invalid resource"),
    ({"Statement": [{**GOOD, "Resource": "arn:aws:s3:::other-bucket/*"}]}, "Policy has invalid resource"),
    ({"Statement": [{**GOOD, "Resource": "arn:aws:s3:::/x"}]}, "Policy has invalid resource"),
    ({"Statement": [{**GOOD, "Resource": []}]}, "Policy has invalid resource"),
    ({"Statement": [{**GOOD, "Resource": f"arn:aws:s3:::{BUCKET}"}]},
     "Action does not apply to any resource(s) in statement"),
    ({"Statement": [{**GOOD, "Action": "s3:ListBucket"}]},
     "Action does not apply to any resource(s) in statement"),
    ({"Statement": [{**GOOD, "Action": "s3:ListAllMyBuckets"}]},
     "Action does not apply to any resource(s) in statement"),
    ({"Statement": [{**GOOD, "Condition": {"StringEqualz": {"aws:UserAgent": "x"}}}]},
     "Invalid Condition type : StringEqualz"),
    ({"Statement": [{**GOOD, "Condition": {"NullIfExists": {"aws:UserAgent": "true"}}}]},
     "Invalid Condition type : NullIfExists"),
    ({"Statement": [{**GOOD, "Condition": {"StringEquals": {"s3:bogus": "x"}}}]},
     "Policy has an invalid condition key"),
    ({"Statement": [{**GOOD, "Condition": {"StringEquals": {"s3:ExistingObjectTag/": "x"}}}]},
     "Policy has an invalid condition key"),
    ({"Statement": [{**GOOD, "Condition": {"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}}}]},
     "Invalid IP address in Conditions"),
    ({"Statement": [{**GOOD, "Condition": {"StringEquals": {"aws:UserAgent": {"a": 1}}}}]},
     "Invalid policy syntax."),
    ({"Statement": [{**GOOD, "Condition": "yes"}]}, "Invalid policy syntax."),
    ({"Statement": ["not an object"]}, "Invalid policy syntax."),
])
def test_validation_reasons(doc, reason):
    assert malformed(doc) == reason


def test_policy_over_20_kb_without_whitespace_is_refused_but_whitespace_does_not_count():
    many = [f"arn:aws:s3:::{BUCKET}/prefix-{i:05d}/*" for i in range(700)]
    big = {"Version": "2012-10-17", "Statement": [stmt(resource=many)]}
    assert len(json.dumps(big, separators=(",", ":"))) > 20 * 1024
    assert malformed(big) == "Policy exceeds the maximum allowed document size."
    small = {"Version": "2012-10-17", "Statement": [stmt(resource=many[:300])]}
    padded = json.dumps(small, indent=40)
    assert len(padded) > 20 * 1024
    assert BucketPolicy.parse(padded, BUCKET).evaluate(
        PolicyRequest(None, "s3:GetObject", object_arn(BUCKET, "prefix-00007/x"))) == "Allow"


def test_valid_forms_are_accepted():
    texts = [
        {"Statement": stmt()},                                                    # single object, 2008
        {"Version": "2008-10-17", "Id": "x", "Statement": [stmt(Sid="A1")]},
        {"Statement": [stmt(action="*", resource="*")]},
        {"Statement": [stmt(action="s3:*", resource=f"arn:aws:s3:::{BUCKET}")]},
        {"Statement": [stmt(resource="arn:aws:s3:::amzn-s3-*/*")]},
        {"Statement": [stmt(principal={"AWS": "arn:aws:iam::111122223333:user/alice"})]},
        {"Statement": [stmt(principal={"Service": "logging.s3.amazonaws.com"})]},
        {"Statement": [stmt(condition={"forallvalues:stringlikeifexists": {"aws:TagKeys": "a*"}})]},
        {"Statement": [stmt(condition={"IpAddress": {"aws:SourceIp": "2001:DB8::/32"}})]},
    ]
    for doc in texts:
        p = BucketPolicy.parse(json.dumps(doc), BUCKET)
        assert p.text == json.dumps(doc)


def test_parse_keeps_the_original_text_and_cached_reuses_the_compiled_policy():
    text = '{ "Version":"2012-10-17",\n "Statement":[' + json.dumps(stmt()) + "]}"
    p = BucketPolicy.parse(text.encode(), BUCKET)
    assert p.text == text
    assert BucketPolicy.cached(text, BUCKET) is BucketPolicy.cached(text, BUCKET)


def test_a_service_principal_never_matches_a_requester():
    p = policy(stmt(principal={"Service": "logging.s3.amazonaws.com"}))
    assert decide(p) == "Default" and decide(p, who=ALICE) == "Default"
    assert not p.is_public()


# --- "the meaning of public" ----------------------------------------------------------------------

def public(*statements: dict) -> bool:
    return policy(*statements).is_public()


def test_public_principals():
    assert public(stmt(principal="*"))
    assert public(stmt(principal={"AWS": "*"}))
    assert public(stmt(principal={"AWS": ["111122223333", "*"]}))
    assert public({"Effect": "Allow", "NotPrincipal": {"AWS": "111122223333"},
                   "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"})
    assert not public(stmt(principal={"AWS": "111122223333"}))
    assert not public(stmt(principal={"CanonicalUser": "a" * 64}))
    assert not public(stmt("Deny", principal="*"))


def test_source_vpc_wildcard_is_public_fixed_value_is_not():
    # AWS's own example: StringLike aws:SourceVpc "vpc-*" is public, a fixed VPC id is not
    assert public(stmt(action="s3:PutObject", condition={"StringLike": {"aws:SourceVpc": "vpc-*"}}))
    assert not public(stmt(action="s3:PutObject", condition={"StringEquals": {"aws:SourceVpc": "vpc-91237329"}}))


@pytest.mark.parametrize("condition,is_public", [
    ({"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, False),
    ({"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/48"]}}, False),
    ({"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, True),
    ({"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "0.0.0.0/1"]}}, True),
    ({"IpAddress": {"aws:SourceIp": "::/0"}}, True),
    ({"NotIpAddress": {"aws:SourceIp": "192.0.2.0/24"}}, True),
    ({"IpAddressIfExists": {"aws:SourceIp": "192.0.2.0/24"}}, True),
    ({"StringEquals": {"aws:SourceAccount": "111122223333"}}, False),
    ({"ArnEquals": {"aws:SourceArn": "arn:aws:cloudfront::111122223333:distribution/E1"}}, False),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:cloudfront::111122223333:distribution/*"}}, True),
    ({"StringEquals": {"aws:PrincipalAccount": "111122223333"}}, False),
    ({"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}}, False),
    ({"StringEquals": {"aws:userid": "AIDAEXAMPLE"}}, False),
    ({"StringLike": {"aws:userid": "AROLEID:*"}}, True),
    ({"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}, False),
    ({"StringNotEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}}, True),
    ({"StringEquals": {"aws:SourceVpce": "${aws:username}"}}, True),
    ({"ForAllValues:StringEquals": {"aws:SourceAccount": "111122223333"}}, True),
    ({"Bool": {"aws:SecureTransport": "true"}}, True),
    ({"StringEquals": {"aws:Referer": "https://www.example.com/"}}, True),
    ({"StringEquals": {"aws:SourceVpc": "vpc-1", "aws:Referer": "x"}}, False),
])
def test_public_is_narrowed_only_by_fixed_values_of_the_listed_keys(condition, is_public):
    assert public(stmt(action="s3:GetObject", condition=condition)) == is_public


def test_one_public_statement_makes_the_policy_public():
    assert public(stmt(principal={"AWS": "111122223333"}),
                  stmt(condition={"StringEquals": {"aws:SourceVpc": "vpc-1"}}),
                  stmt(action="s3:GetObjectAcl"))


# --- wildcards without backtracking, hostile input ------------------------------------------------

@pytest.mark.parametrize("pattern,key,matches", [
    ("home/*/docs/*", "home/alice/docs/a.txt", True),
    ("home/*/docs/*", "home/alice/private/a.txt", False),
    ("*.jpg", "photos/cat.jpg", True),
    ("*.jpg", "photos/cat.jpeg", False),
    ("a*b*c", "abc", True),
    ("a*b*c", "axxbyyc", True),
    ("a*b*c", "axxbyy", False),
    ("a*b?d*", "a-bcd-bxd", True),
    ("*x*", "x", True),
    ("*ab*ab*", "ab", False),
    ("*ab*ab*", "abab", True),
    ("*ab*ab*", "abxx", False),             # the second piece may not overlap the first
    ("**", "", True),
    ("a?c*", "ac", False),
])
def test_multi_star_resource_patterns(pattern, key, matches):
    p = policy(stmt(resource=f"arn:aws:s3:::{BUCKET}/{pattern}"))
    assert (decide(p, resource=object_arn(BUCKET, key)) == "Allow") == matches


def test_a_pathological_wildcard_pattern_is_evaluated_without_backtracking():
    # In a child process: a backtracking regex holds the GIL, so only a process can time out.
    import subprocess
    import sys
    script = f"""
import json
from gateway.policy import BucketPolicy, PolicyRequest
pattern = "a*" * 40 + "b"
doc = {{"Version": "2012-10-17", "Statement": [
    {{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::{BUCKET}/" + pattern}},
    {{"Effect": "Allow", "Principal": "*", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::{BUCKET}",
      "Condition": {{"StringLike": {{"s3:prefix": pattern}}}}}}]}}
p = BucketPolicy.parse(json.dumps(doc), "{BUCKET}")
print(p.evaluate(PolicyRequest(None, "s3:GetObject", "arn:aws:s3:::{BUCKET}/" + "a" * 1024)),
      p.evaluate(PolicyRequest(None, "s3:ListBucket", "arn:aws:s3:::{BUCKET}", {{"s3:prefix": "a" * 1024}})),
      p.evaluate(PolicyRequest(None, "s3:GetObject", "arn:aws:s3:::{BUCKET}/" + "a" * 1023 + "b")))
"""
    repo = __file__.rsplit("/tests/", 1)[0]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=repo)
    assert done.stdout.split() == ["Default", "Default", "Allow"], done.stderr


def test_substituted_variable_values_are_literal_not_wildcards():
    p = policy(stmt(principal={"AWS": "111122223333"}, resource=f"arn:aws:s3:::{BUCKET}/home/${{aws:username}}/*"))
    assert ctx_decide(p, {"aws:username": "*"}, resource=object_arn(BUCKET, "home/bob/x"), who=ALICE) == "Default"
    assert ctx_decide(p, {"aws:username": "*"}, resource=object_arn(BUCKET, "home/*/x"), who=ALICE) == "Allow"


def test_non_string_context_values_take_their_iam_string_form():
    p = one("Bool", "aws:SecureTransport", "true")
    assert ctx_decide(p, {"aws:securetransport": True}) == "Allow"
    assert ctx_decide(p, {"aws:securetransport": False}) == "Default"
    s = one("StringEquals", "aws:SecureTransport", "true")
    assert ctx_decide(s, {"aws:securetransport": True}) == "Allow"
    n = one("NumericLessThanEquals", "s3:max-keys", "100")
    assert ctx_decide(n, {"s3:max-keys": 50}) == "Allow"


@pytest.mark.parametrize("text", [
    "{" * 100000,
    '{"Statement": ' + "[" * 50000 + "]" * 50000 + "}",
    b"{" + b"\x00" * 10,
    "{" + " " * (2 * 1024 * 1024) + "}",
])
def test_hostile_documents_are_malformed_policy_not_crashes(text):
    malformed(text)
