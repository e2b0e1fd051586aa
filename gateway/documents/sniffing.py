"""What an upload is, told by its content with libmagic (python-magic), never by its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import magic

from gateway.errors import BadRequest, UnsupportedMediaType

# libmagic calls JSON application/json; it is text all the same.
_TEXT_TYPES = ("application/json",)


@dataclass(frozen=True)
class Sniffed:
    """What an upload's content says it is: text or PDF, its MIME type, and libmagic's guess of its encoding."""

    kind: Literal["text", "pdf"]
    mimetype: str
    encoding: str  # libmagic's guess for text: "utf-8", "utf-16le", "iso-8859-1", "us-ascii", ...


def sniff(content: bytes) -> Sniffed:
    """Plain text or PDF; anything else is refused with 415, an empty file with 422."""
    if not content or content.isspace():
        raise BadRequest("the file is empty")
    mimetype = magic.from_buffer(content, mime=True)
    if mimetype == "application/pdf":
        return Sniffed("pdf", mimetype, "binary")
    if mimetype.startswith("text/") or mimetype in _TEXT_TYPES:
        return Sniffed("text", mimetype, magic.Magic(mime_encoding=True).from_buffer(content))
    raise UnsupportedMediaType(f"unsupported file type {mimetype}; upload plain text or a PDF with a text layer")
