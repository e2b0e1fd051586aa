"""Reading a multipart/form-data upload into memory, with the size limit enforced while it arrives.

Starlette's form parser spools a file of any size to disk before the handler sees it. Here the file is
held in memory (it is hashed, sniffed, parsed and stored anyway, so it is needed whole) and refused with
413 as soon as it is known to pass MAX_UPLOAD_SIZE_MB: at once when the declared Content-Length says so,
otherwise as soon as the bytes counted so far do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # model_name and json_format are short
MAX_PARTS = 16
ENVELOPE_BYTES = 256 * 1024  # boundaries, part headers and the small fields around the file


@dataclass(frozen=True)
class Upload:
    """An uploaded file, held in memory, and the form's text fields."""

    filename: str  # as the client sent it: data to store and show, never a path
    content: bytes
    fields: dict[str, str] = field(default_factory=dict)


async def read_upload(request: Request, max_file_bytes: int, limit_name: str) -> Upload:
    """The uploaded file (form field `file`) and the form's text fields."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise BadRequest(f"send the document as multipart/form-data with the file in a field named {FILE_FIELD!r}")
    too_large = PayloadTooLarge(f"the file is larger than {limit_name}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_file_bytes + ENVELOPE_BYTES:
        raise too_large
    parts = _Parts(max_file_bytes, too_large)
    parser = MultipartParser(options[b"boundary"], parts.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_file_bytes + ENVELOPE_BYTES:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if parts.file is None:
        raise BadRequest(f"no file in the form field {FILE_FIELD!r}")
    filename, content = parts.file
    return Upload(filename, bytes(content), parts.fields)


class _Parts:
    """python-multipart's callbacks: collects the file part and the text fields."""

    def __init__(self, max_file_bytes: int, too_large: PayloadTooLarge) -> None:
        self._max_file_bytes = max_file_bytes
        self._too_large = too_large
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._count = 0
        self.file: tuple[str, bytearray] | None = None
        self.fields: dict[str, str] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._count += 1
        if self._count > MAX_PARTS:
            raise BadRequest(f"more than {MAX_PARTS} parts in the form")
        self._disposition = b""
        self._data = bytearray()

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self._is_file() and self.file is not None:
            raise BadRequest("upload one file per request")

    def _is_file(self) -> bool:
        return self._name == FILE_FIELD or self._filename is not None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.extend(data[start:end])
        if self._is_file():
            if len(self._data) > self._max_file_bytes:
                raise self._too_large
        elif len(self._data) > MAX_FIELD_BYTES:
            raise BadRequest(f"the form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._is_file():
            self.file = (self._filename or "", self._data)
        else:
            self.fields[self._name] = self._data.decode("utf-8", "replace")
