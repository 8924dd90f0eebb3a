"""A bucket's website configuration: the WebsiteConfiguration document (validated as AWS and
the original validate it), its stored form, the routing rules and the redirects they make.

Stored in the bucket record as the original stores it (`websiteConfiguration`):
{indexDocument, errorDocument, redirectAllRequestsTo: {hostName, protocol?},
 routingRules: [{condition: {keyPrefixEquals?, httpErrorCodeReturnedEquals?},
                 redirect: {protocol?, hostName?, replaceKeyPrefixWith?, replaceKeyWith?, httpRedirectCode?}}]}
The website endpoint (gateway/website.py) reads it from the bucket on each request.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from gateway.xml import local, parse, root, sub, to_bytes
from shared.errors import S3Error

MAX_ROUTING_RULES = 50
PROTOCOLS = ("http", "https")
_PROTOCOL_MESSAGE = ("Invalid protocol, protocol can be http or https. If not defined, the protocol will be "
                     "selected automatically.")
_REDIRECT_FIELDS = ("Protocol", "HostName", "ReplaceKeyPrefixWith", "ReplaceKeyWith", "HttpRedirectCode")
_CONDITION_FIELDS = ("KeyPrefixEquals", "HttpErrorCodeReturnedEquals")
_TOP_FIELDS = ("IndexDocument", "ErrorDocument", "RedirectAllRequestsTo", "RoutingRules")
# Characters a Location header keeps as they are in a key.
_LOCATION_SAFE = "/~!$&'()*+,;=:@"


def _fields(el: Any, allowed: tuple[str, ...]) -> dict[str, list[Any]]:
    """The child elements of `el` by name; MalformedXML for a name the schema does not have."""
    out: dict[str, list[Any]] = {}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = local(child.tag)
        if name not in allowed:
            raise S3Error("MalformedXML")
        out.setdefault(name, []).append(child)
    return out


def _one(found: dict[str, list[Any]], name: str, what: str) -> Any | None:
    els = found.get(name)
    if not els:
        return None
    if len(els) > 1:
        raise S3Error("MalformedXML", f"{what} is not well-formed")
    return els[0]


def _text(el: Any) -> str:
    return "" if el is None else (el.text or "")


def _int_code(el: Any, message: str) -> int:
    raw = _text(el).strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 6:
        raise S3Error("MalformedXML", message)
    return int(raw)


def parse_configuration(body: bytes) -> dict[str, Any]:
    """A WebsiteConfiguration document -> the stored configuration."""
    doc = parse(body, root_tag="WebsiteConfiguration")
    top = _fields(doc, _TOP_FIELDS)
    for name in _TOP_FIELDS:
        _one(top, name, name)
    config: dict[str, Any] = {}
    if "IndexDocument" not in top and "RedirectAllRequestsTo" not in top:
        raise S3Error("InvalidArgument", "A value for IndexDocument Suffix must be provided if RedirectAllRequestsTo "
                      "is empty", ArgumentName="IndexDocument", ArgumentValue="null")
    if "RedirectAllRequestsTo" in top:
        if "IndexDocument" in top or "ErrorDocument" in top or "RoutingRules" in top:
            raise S3Error("InvalidRequest", "RedirectAllRequestsTo cannot be provided in conjunction with other "
                          "Routing Rules.")
        found = _fields(top["RedirectAllRequestsTo"][0], ("HostName", "Protocol"))
        host = _one(found, "HostName", "RedirectAllRequestsTo")
        if host is None:
            raise S3Error("MalformedXML", "RedirectAllRequestsTo not well-formed")
        if not _text(host).strip():
            raise S3Error("InvalidRequest", "Valid HostName required in RedirectAllRequestsTo")
        redirect_all: dict[str, str] = {"hostName": _text(host).strip()}
        protocol = _one(found, "Protocol", "RedirectAllRequestsTo")
        if protocol is not None:
            if _text(protocol) not in PROTOCOLS:
                raise S3Error("InvalidRequest", _PROTOCOL_MESSAGE)
            redirect_all["protocol"] = _text(protocol)
        config["redirectAllRequestsTo"] = redirect_all
    if "IndexDocument" in top:
        suffix = _one(_fields(top["IndexDocument"][0], ("Suffix",)), "Suffix", "IndexDocument")
        if suffix is None:
            raise S3Error("MalformedXML", "IndexDocument is not well-formed")
        if not _text(suffix) or "/" in _text(suffix):
            raise S3Error("InvalidArgument", "The IndexDocument Suffix is not well formed",
                          ArgumentName="IndexDocument", ArgumentValue=_text(suffix))
        config["indexDocument"] = _text(suffix)
    if "ErrorDocument" in top:
        key = _one(_fields(top["ErrorDocument"][0], ("Key",)), "Key", "ErrorDocument")
        if key is None:
            raise S3Error("MalformedXML", "ErrorDocument is not well-formed")
        if not _text(key):
            raise S3Error("InvalidArgument", "The ErrorDocument Key is not well formed",
                          ArgumentName="ErrorDocument", ArgumentValue="")
        config["errorDocument"] = _text(key)
    if "RoutingRules" in top:
        rules_el = _fields(top["RoutingRules"][0], ("RoutingRule",)).get("RoutingRule") or []
        if not rules_el:
            raise S3Error("MalformedXML", "RoutingRules is not well-formed")
        if len(rules_el) > MAX_ROUTING_RULES:
            raise S3Error("InvalidRequest", f"The number of routing rules must not exceed {MAX_ROUTING_RULES}.")
        config["routingRules"] = [_parse_rule(el) for el in rules_el]
    return config


def _parse_rule(el: Any) -> dict[str, Any]:
    found = _fields(el, ("Condition", "Redirect"))
    redirect_el = _one(found, "Redirect", "RoutingRule")
    if redirect_el is None:
        raise S3Error("MalformedXML", "RoutingRule requires Redirect, which is missing or not well-formed")
    fields = _fields(redirect_el, _REDIRECT_FIELDS)
    if not fields:
        raise S3Error("MalformedXML", "Redirect must contain at least one of following: Protocol, HostName, "
                      "ReplaceKeyPrefixWith, ReplaceKeyWith, or HttpRedirectCode element")
    redirect: dict[str, Any] = {}
    protocol = _one(fields, "Protocol", "Redirect")
    if protocol is not None:
        if _text(protocol) not in PROTOCOLS:
            raise S3Error("InvalidRequest", _PROTOCOL_MESSAGE)
        redirect["protocol"] = _text(protocol)
    code_el = _one(fields, "HttpRedirectCode", "Redirect")
    if code_el is not None:
        code = _int_code(code_el, "The provided HTTP redirect code is not valid. It should be a string containing "
                                  "a number.")
        if not 300 < code < 400:
            raise S3Error("InvalidRequest", f"The provided HTTP redirect code ({code}) is not valid. Valid codes are "
                          "3XX except 300.")
        redirect["httpRedirectCode"] = code
    for name in ("HostName", "ReplaceKeyPrefixWith", "ReplaceKeyWith"):
        value_el = _one(fields, name, "Redirect")
        if value_el is None:
            continue
        value = _text(value_el)
        if not value and name == "HostName":
            raise S3Error("InvalidArgument", f"Redirect {name} is not well-formed", ArgumentName=name, ArgumentValue="")
        redirect[name[0].lower() + name[1:]] = value
    if "replaceKeyPrefixWith" in redirect and "replaceKeyWith" in redirect:
        raise S3Error("InvalidRequest", "You can only define ReplaceKeyPrefix or ReplaceKey but not both.")
    rule: dict[str, Any] = {"redirect": redirect}
    condition_el = _one(found, "Condition", "RoutingRule")
    if condition_el is not None:
        cond_fields = _fields(condition_el, _CONDITION_FIELDS)
        if not cond_fields:
            raise S3Error("InvalidRequest", "Condition cannot be empty. To redirect all requests without a condition, "
                          "the condition element shouldn't be present.")
        condition: dict[str, Any] = {}
        prefix_el = _one(cond_fields, "KeyPrefixEquals", "Condition")
        if prefix_el is not None:
            condition["keyPrefixEquals"] = _text(prefix_el)
        error_el = _one(cond_fields, "HttpErrorCodeReturnedEquals", "Condition")
        if error_el is not None:
            code = _int_code(error_el, "The provided HTTP error code is not valid. It should be a string containing "
                                       "a number.")
            if not 400 <= code < 600:
                raise S3Error("InvalidRequest", f"The provided HTTP error code ({code}) is not valid. Valid codes are "
                              "4XX or 5XX.")
            condition["httpErrorCodeReturnedEquals"] = code
        rule["condition"] = condition
    return rule


def configuration_document(config: dict[str, Any]) -> bytes:
    """The stored configuration as GetBucketWebsite answers it."""
    doc = root("WebsiteConfiguration")
    redirect_all = config.get("redirectAllRequestsTo")
    if redirect_all:
        el = sub(doc, "RedirectAllRequestsTo")
        sub(el, "HostName", redirect_all.get("hostName", ""))
        if redirect_all.get("protocol"):
            sub(el, "Protocol", redirect_all["protocol"])
    if config.get("indexDocument"):
        sub(sub(doc, "IndexDocument"), "Suffix", config["indexDocument"])
    if config.get("errorDocument"):
        sub(sub(doc, "ErrorDocument"), "Key", config["errorDocument"])
    rules = config.get("routingRules")
    if rules:
        rules_el = sub(doc, "RoutingRules")
        for rule in rules:
            rule_el = sub(rules_el, "RoutingRule")
            condition = rule.get("condition")
            if condition:
                cond_el = sub(rule_el, "Condition")
                if condition.get("keyPrefixEquals") is not None:
                    sub(cond_el, "KeyPrefixEquals", condition["keyPrefixEquals"])
                if condition.get("httpErrorCodeReturnedEquals") is not None:
                    sub(cond_el, "HttpErrorCodeReturnedEquals", condition["httpErrorCodeReturnedEquals"])
            redirect = rule.get("redirect") or {}
            red_el = sub(rule_el, "Redirect")
            for name in _REDIRECT_FIELDS:
                value = redirect.get(name[0].lower() + name[1:])
                if value is not None:
                    sub(red_el, name, value)
    return to_bytes(doc)


# ------------------------------------------------------------------ routing rules and redirects

def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def find_routing_rule(config: dict[str, Any], key: str, error_status: int | None = None) -> dict[str, Any] | None:
    """The first routing rule (in order) whose Condition holds for `key` and, once the request
    has failed, for its HTTP status; a rule without Condition applies to every request."""
    for rule in config.get("routingRules") or ():
        condition = rule.get("condition") or {}
        prefix = condition.get("keyPrefixEquals")
        wanted = _code(condition.get("httpErrorCodeReturnedEquals"))
        if prefix is not None and not key.startswith(prefix):
            continue
        if wanted is not None and wanted != error_status:
            continue
        return rule
    return None


def rule_location(rule: dict[str, Any], key: str, scheme: str, host: str) -> tuple[int, str]:
    """(status, Location) of a routing rule's redirect for `key`: ReplaceKeyWith replaces the key,
    ReplaceKeyPrefixWith the KeyPrefixEquals of the condition (prepended without one)."""
    redirect = rule.get("redirect") or {}
    condition = rule.get("condition") or {}
    new_key = key
    if redirect.get("replaceKeyWith") is not None:
        new_key = redirect["replaceKeyWith"]
    elif redirect.get("replaceKeyPrefixWith") is not None:
        prefix = condition.get("keyPrefixEquals") or ""
        new_key = redirect["replaceKeyPrefixWith"] + key[len(prefix):]
    protocol = redirect.get("protocol") or scheme
    hostname = redirect.get("hostName") or host
    status = _code(redirect.get("httpRedirectCode")) or 301
    return status, f"{protocol}://{hostname}/{quote(new_key, safe=_LOCATION_SAFE)}"


def redirect_all_location(redirect_all: dict[str, Any], key: str, scheme: str) -> str:
    protocol = redirect_all.get("protocol") or scheme
    return f"{protocol}://{redirect_all['hostName']}/{quote(key, safe=_LOCATION_SAFE)}"


def check_redirect_location(value: str | None) -> None:
    """x-amz-website-redirect-location on a write: a path of the bucket or an http(s) URL."""
    if value is not None and value != "" and not value.startswith(("/", "http://", "https://")):
        raise S3Error("InvalidRedirectLocation")
