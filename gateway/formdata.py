"""A streaming multipart/form-data reader (RFC 7578), for browser POST uploads.

Fields are read whole (bounded by the caller); a file part streams through: the
buffer never holds more than one network read plus a delimiter's length of data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import AsyncIterator

from gateway.bytestream import ByteStream
from shared.errors import S3Error

FORM_CONTENT_TYPE = "multipart/form-data"
FILE_FIELD = "file"
# AWS: the fields before the file may total at most 20 KiB.
MAX_PRE_DATA_BYTES = 20 * 1024
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_BOUNDARY_LENGTH = 70              # RFC 2046
_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


def malformed(detail: str | None = None) -> S3Error:
    return S3Error("MalformedPOSTRequest", detail)


@dataclass
class FormPart:
    name: str                    # lower-cased field name
    filename: str | None         # set on file parts
    content_type: str | None


def _header_line_too_long() -> S3Error:
    return malformed("A part header line is too long.")


def _header_truncated() -> S3Error:
    return malformed("The body ended inside a part header.")


class FormReader:
    """Reads multipart/form-data from an async byte stream, one part at a time.

    The buffer never holds more than one network read plus a delimiter's length
    of part data, so a file part of any size streams through.
    """

    def __init__(self, stream: AsyncIterator[bytes], boundary: str):
        # A leading CRLF makes the first delimiter look like every later one.
        self._stream = ByteStream(stream, initial=b"\r\n")
        self._buf = self._stream.buf
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._started = False
        self.finished = False

    async def _fill(self) -> bool:
        return await self._stream.fill()

    async def _readline(self) -> bytes:
        return await self._stream.readline(MAX_PART_HEADER_BYTES, _header_line_too_long, _header_truncated)

    async def data(self) -> AsyncIterator[bytes]:
        """The current part's bytes, up to (and consuming) the next delimiter."""
        keep = len(self._delimiter) - 1
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                if at:
                    yield bytes(self._buf[:at])
                del self._buf[:at + len(self._delimiter)]
                return
            if len(self._buf) > keep:
                piece = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield piece
            if not await self._fill():
                raise malformed("The body ended before the closing boundary.")

    async def read_value(self, limit: int) -> bytes:
        out = bytearray()
        async for piece in self.data():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxPostPreDataLengthExceeded", "Your POST request fields preceding the upload "
                              "file were too large.", status=400)
        return bytes(out)

    async def next_part(self) -> FormPart | None:
        """The next part's headers (its data is then read with `data()`), or None after the last."""
        if self.finished:
            return None
        if not self._started:
            async for _ in self.data():   # the preamble, ignored as RFC 2046 says
                pass
            self._started = True
        after_delimiter = await self._readline()
        if after_delimiter.startswith(b"--"):
            self.finished = True
            return None
        if after_delimiter.strip(b" \t"):
            raise malformed("A boundary is followed by unexpected bytes.")
        headers: dict[str, str] = {}
        size = 0
        while True:
            line = await self._readline()
            if not line:
                break
            size += len(line)
            if size > MAX_PART_HEADER_BYTES:
                raise malformed("The part headers are too large.")
            name, colon, value = line.decode("utf-8", "replace").partition(":")
            if not colon:
                raise malformed("A part header has no ':'.")
            headers[name.strip().lower()] = value.strip()
        return _part_from_headers(headers)


def _part_from_headers(headers: dict[str, str]) -> FormPart:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise malformed("A part has no Content-Disposition header.")
    kind, _, rest = disposition.partition(";")
    if kind.strip().lower() != "form-data":
        raise malformed("A part is not form-data.")
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(";" + rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "").strip()
        params.setdefault(match.group(1).lower(), value)
    if not params.get("name"):
        raise malformed("A part has no field name.")
    return FormPart(params["name"].lower(), params.get("filename"), headers.get("content-type"))


def form_boundary(content_type: str | None) -> str:
    """The boundary of a multipart/form-data Content-Type, or the error AWS gives."""
    if not content_type or content_type.split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold",
                      Condition="Bucket POST must be of the enclosure-type multipart/form-data")
    match = _BOUNDARY_RE.search(content_type)
    boundary = (match.group(1) or match.group(2)) if match else ""
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise malformed("The multipart/form-data boundary is missing or invalid.")
    return boundary


async def read_fields(reader: FormReader) -> tuple[dict[str, str], FormPart | None]:
    """Every field before the file, and the file part (None if the form has none)."""
    fields: dict[str, str] = {}
    total = 0
    while True:
        part = await reader.next_part()
        if part is None:
            return fields, None
        if part.name == FILE_FIELD:
            return fields, part
        raw = await reader.read_value(MAX_PRE_DATA_BYTES - total)
        total += len(raw)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed(f"The value of field {part.name} is not UTF-8.") from None
        if part.name in fields:
            raise S3Error("InvalidArgument", f"The form field {part.name} appears more than once.",
                          ArgumentName=part.name, ArgumentValue=value)
        fields[part.name] = value
