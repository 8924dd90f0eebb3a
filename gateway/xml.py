"""S3 XML: building responses with lxml and a hardened parser for request bodies.

The parser refuses DTDs and entities, never touches the network and caps the
document size, so a hostile body costs at most `MAX_XML_BYTES` of memory.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from lxml import etree

from shared.errors import S3Error

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_XML_BYTES = 2 * 1024 * 1024
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, dtd_validation=False,
                          load_dtd=False, huge_tree=False, remove_comments=True)


def element(tag: str, text: Any = None, children: Iterable[etree._Element] = ()) -> etree._Element:
    el = etree.Element(tag)
    if text is not None:
        el.text = _text(text)
    for child in children:
        el.append(child)
    return el


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso8601(value)
    return str(value)


def sub(parent: etree._Element, tag: str, text: Any = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = _text(text)
    return el


def root(tag: str, namespaced: bool = True) -> etree._Element:
    return etree.Element(tag, nsmap={None: S3_NS}) if namespaced else etree.Element(tag)


def to_bytes(el: etree._Element) -> bytes:
    return _DECLARATION + etree.tostring(el, encoding="UTF-8")


def iso8601(dt: datetime) -> str:
    """AWS's timestamp format in XML: 2009-10-12T17:50:30.000Z."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse(body: bytes, error_code: str = "MalformedXML") -> etree._Element:
    """Parse a request body; any malformation is the S3 error `error_code`."""
    if len(body) > MAX_XML_BYTES:
        raise S3Error(error_code, "The XML you provided was too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error(error_code)
    try:
        doc = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise S3Error(error_code) from exc
    if doc is None:
        raise S3Error(error_code)
    return doc


def local(tag: Any) -> str:
    """The tag name without its namespace ('{ns}Key' -> 'Key')."""
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if local(c.tag) == name]


def child_text(el: etree._Element, name: str) -> str | None:
    for c in el:
        if local(c.tag) == name:
            return c.text or ""
    return None
