"""The text of an uploaded file: plain text decoded by its encoding, or the text layer of a PDF (pypdf)."""

from __future__ import annotations

import codecs
import io
import logging
import time
from typing import TYPE_CHECKING

from gateway.errors import BadRequest

if TYPE_CHECKING:
    from pypdf import PdfReader

log = logging.getLogger(__name__)

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# libmagic's names for encodings that have no byte order mark to tell them by.
_MAGIC_ENCODINGS = {"utf-16le": "utf-16-le", "utf-16be": "utf-16-be"}


def decode_text(content: bytes, magic_encoding: str = "") -> str:
    """Decode by byte order mark, else UTF-8, else libmagic's UTF-16 guess, else Windows-1252, else Latin-1.

    Windows-1252 before Latin-1: the two agree except on 0x80-0x9F, which Windows text uses for quotes and
    dashes and Latin-1 text almost never uses (they are control characters there). Latin-1 decodes anything.
    """
    for mark, encoding in _BYTE_ORDER_MARKS:
        if content.startswith(mark):
            return _decode(content, encoding)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for fallback in (_MAGIC_ENCODINGS.get(magic_encoding), "cp1252"):
        if fallback:
            try:
                return content.decode(fallback)
            except UnicodeDecodeError:
                pass
    return content.decode("latin-1")


def _decode(content: bytes, encoding: str) -> str:
    try:
        return content.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the file starts with a {encoding} byte order mark but is not valid {encoding}: {exc}") from None


def pdf_text(content: bytes) -> str:
    """The text of every page, pages joined by a line break. Raises BadRequest (422) for a PDF we cannot read."""
    # Imported here, by the first PDF: pypdf adds 0.15 s to every gateway start (pandas, in packaging.py, 0.4 s).
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

    started = time.monotonic()
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            _decrypt(reader)
        pages = [page.extract_text() or "" for page in reader.pages]
    except BadRequest:
        raise
    except FileNotDecryptedError:
        raise BadRequest("the PDF is encrypted and cannot be opened without its password") from None
    except DependencyError as exc:
        raise BadRequest(f"the PDF is encrypted with a method this service cannot open: {exc}") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf reports damaged files with its own errors and, deeper in, with plain ones (streams are decoded and
        # decrypted lazily, page by page), so everything it raises while reading names the problem as a 422.
        raise BadRequest(f"the PDF cannot be read: {type(exc).__name__}: {exc}") from None
    text = "\n".join(pages)
    log.info("extracted %d characters from %d PDF pages in %.2fs", len(text), len(pages), time.monotonic() - started)
    if not text.strip():
        raise BadRequest("the PDF has no extractable text; OCR is not supported")
    return text


def _decrypt(reader: PdfReader) -> None:
    # A PDF with only an owner password (printing or copying restricted) opens with the empty user password.
    # AES (revisions 4-6) needs the `cryptography` package, installed through pypdf[crypto].
    try:
        opened = reader.decrypt("")
    except NotImplementedError as exc:
        raise BadRequest(f"the PDF is encrypted with a method this service cannot open: {exc}") from None
    if not opened:
        raise BadRequest("the PDF is encrypted and cannot be opened without its password")
