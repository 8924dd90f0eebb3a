"""S3 XML: building responses with lxml and a hardened parser for request bodies.

The parser refuses DTDs and entities, never touches the network and caps the
document size, so a hostile body costs at most `MAX_XML_BYTES` of memory.
"""
from __future__ import annotations

import re
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
        el.text = _lxml_text(text)
    for child in children:
        el.append(child)
    return el


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso8601(value)
    return str(value)


def text_of(value: Any) -> str:
    """The text a leaf shows for `value` (booleans as true/false, datetimes in AWS's format), unescaped."""
    return _text(value)


# Characters XML 1.0 cannot carry (S3 keys may hold them; S3 writes them as character
# references). lxml refuses them, so element text carries a stand-in from a private-use
# plane, swapped for the reference when the document is serialised.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_STAND_IN_BASE = 0xF0000
_STAND_INS = {0xFFFE: 0x20, 0xFFFF: 0x21}
_STAND_INS_BACK = {v: k for k, v in _STAND_INS.items()}
_STAND_IN_BYTES = re.compile(b"\xf3\xb0\x80[\x80-\xa1]")   # UTF-8 of U+F0000..U+F0021


def _stand_in(m: re.Match[str]) -> str:
    code = ord(m.group())
    return chr(_STAND_IN_BASE + _STAND_INS.get(code, code))


def _restore(m: re.Match[bytes]) -> bytes:
    n = m.group()[3] - 0x80
    code = _STAND_INS_BACK.get(n, n)
    return b"&#x%x;" % code


def _lxml_text(value: Any) -> str:
    text = _text(value)
    return _NOT_XML.sub(_stand_in, text) if _NOT_XML.search(text) else text


def sub(parent: etree._Element, tag: str, text: Any = None) -> etree._Element:
    el = etree.SubElement(parent, tag)
    if text is not None:
        el.text = _lxml_text(text)
    return el


def root(tag: str, namespaced: bool = True) -> etree._Element:
    return etree.Element(tag, nsmap={None: S3_NS}) if namespaced else etree.Element(tag)


def to_bytes(el: etree._Element) -> bytes:
    body = etree.tostring(el, encoding="UTF-8")
    if b"\xf3\xb0\x80" in body:
        body = _STAND_IN_BYTES.sub(_restore, body)
    return _DECLARATION + body


def iso8601(dt: datetime) -> str:
    """AWS's timestamp format in XML: 2009-10-12T17:50:30.000Z."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse(body: bytes, error_code: str = "MalformedXML", root_tag: str | None = None) -> etree._Element:
    """Parse a request body; any malformation, or a root element other than `root_tag` (when given),
    is the S3 error `error_code`."""
    if len(body) > MAX_XML_BYTES:
        raise S3Error(error_code, "The XML you provided was too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error(error_code)
    try:
        doc = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise S3Error(error_code) from exc
    if doc is None or (root_tag is not None and local(doc.tag) != root_tag):
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


_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
_NEEDS_ESCAPE = re.compile('[&<>"\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]')


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    # Characters XML 1.0 cannot carry at all are written as character references, as S3 does.
    return _ESCAPES.get(ch) or f"&#x{ord(ch):x};"


def escape(text: str) -> str:
    return _NEEDS_ESCAPE.sub(_escape_char, text) if _NEEDS_ESCAPE.search(text) else text


class XmlWriter:
    """Append-only XML text for large, flat documents (listings of 1000 entries):
    several times cheaper than building an lxml tree element by element."""

    def __init__(self, root_tag: str, namespaced: bool = True):
        self._root = root_tag
        ns = f' xmlns="{S3_NS}"' if namespaced else ""
        self._parts: list[str] = [f"<{root_tag}{ns}>"]

    def leaf(self, tag: str, text: Any) -> None:
        self._parts.append(f"<{tag}>{escape(_text(text))}</{tag}>")

    def safe_leaf(self, tag: str, text: Any) -> None:
        """A leaf whose text cannot need escaping (numbers, dates, hex ETags, enum values)."""
        self._parts.append(f"<{tag}>{_text(text)}</{tag}>")

    def open(self, tag: str) -> None:
        self._parts.append(f"<{tag}>")

    def raw(self, xml: str) -> None:
        """Markup built (and escaped) by the caller: a listing's entries from a template."""
        self._parts.append(xml)

    def close(self, tag: str) -> None:
        self._parts.append(f"</{tag}>")

    def to_bytes(self) -> bytes:
        return _DECLARATION + ("".join(self._parts) + f"</{self._root}>").encode()
