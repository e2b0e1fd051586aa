"""Telling an upload's type by its content, and getting its text (gateway/documents/sniffing.py,
text_extraction.py)."""

from __future__ import annotations

import codecs
import os
from typing import Callable

import pytest

from gateway.documents.sniffing import sniff
from gateway.documents.text_extraction import decode_text, pdf_text
from gateway.errors import BadRequest, UnsupportedMediaType
from tests.document_files import aes_encrypted_pdf, fpdf_pdf, ghostscript_pdf, image_only_pdf, png_image

ACCENTED = "Zoë's café served crème brûlée; the señor paid 3.50 for it. Straße und Grüße!\n"


@pytest.mark.parametrize("encoded", [
    ACCENTED.encode("utf-8"),
    codecs.BOM_UTF8 + ACCENTED.encode("utf-8"),
    ACCENTED.encode("utf-16"),  # with a byte order mark
    codecs.BOM_UTF16_BE + ACCENTED.encode("utf-16-be"),
    ACCENTED.encode("latin-1"),
], ids=["utf-8", "utf-8 with BOM", "utf-16 LE with BOM", "utf-16 BE with BOM", "latin-1"])
def test_text_decodes_in_each_supported_encoding(encoded: bytes) -> None:
    assert decode_text(encoded, sniff(encoded).encoding) == ACCENTED


def test_windows_1252_quotes_decode_as_quotes() -> None:
    assert decode_text("“Quoted” – text".encode("cp1252")) == "“Quoted” – text"


@pytest.mark.parametrize("encoded", [ACCENTED.encode("utf-8"), ACCENTED.encode("utf-16"), ACCENTED.encode("latin-1")],
                         ids=["utf-8", "utf-16", "latin-1"])
def test_text_is_sniffed_as_text_whatever_its_encoding(encoded: bytes) -> None:
    assert sniff(encoded).kind == "text"


def test_a_pdf_is_sniffed_as_pdf() -> None:
    assert sniff(fpdf_pdf(["Some text on a page."])).kind == "pdf"


def test_an_image_is_refused_with_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="image/png"):
        sniff(png_image())


def test_random_bytes_are_refused_with_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        sniff(os.urandom(4096))


def test_an_empty_file_is_refused_with_422() -> None:
    with pytest.raises(BadRequest, match="empty"):
        sniff(b"")


@pytest.mark.parametrize("make", [fpdf_pdf, ghostscript_pdf], ids=["fpdf2", "ghostscript"])
def test_every_page_of_a_pdf_is_read(make: Callable[[list[str]], bytes]) -> None:
    text = pdf_text(make(["First page text.", "Second page text.", "Third page text."]))
    assert [line.strip() for line in text.splitlines() if line.strip()] == [
        "First page text.", "Second page text.", "Third page text."]


def test_a_password_protected_pdf_is_refused_with_422() -> None:
    with pytest.raises(BadRequest, match="encrypted"):
        pdf_text(fpdf_pdf(["A secret page."], user_password="secret"))


AES_ALGORITHMS = ["AES-128", "AES-256-R5", "AES-256"]  # revisions 4, 5 and 6


@pytest.mark.parametrize("algorithm", AES_ALGORITHMS)
def test_an_aes_encrypted_pdf_with_the_empty_user_password_is_read_like_any_pdf(algorithm: str) -> None:
    text = pdf_text(aes_encrypted_pdf(["Only the owner may print this page."], algorithm))
    assert text.strip() == "Only the owner may print this page."


@pytest.mark.parametrize("algorithm", AES_ALGORITHMS)
def test_an_aes_encrypted_pdf_that_needs_a_user_password_is_refused_with_422(algorithm: str) -> None:
    with pytest.raises(BadRequest, match="encrypted and cannot be opened without its password"):
        pdf_text(aes_encrypted_pdf(["A secret page."], algorithm, user_password="secret"))


def test_a_pdf_whose_page_stream_is_corrupt_is_refused_with_422_naming_the_error() -> None:
    broken = fpdf_pdf(["A page whose content stream will be damaged."]).replace(b"/Filter /FlateDecode", b"/Filter /LZWDecode")
    with pytest.raises(BadRequest, match="cannot be read"):
        pdf_text(broken)


def test_a_pdf_without_a_text_layer_is_refused_saying_ocr_is_not_supported() -> None:
    with pytest.raises(BadRequest, match="no extractable text; OCR is not supported"):
        pdf_text(image_only_pdf())


def test_a_damaged_pdf_is_refused_with_422() -> None:
    with pytest.raises(BadRequest, match="cannot be read"):
        pdf_text(b"%PDF-1.4\n" + os.urandom(2000))
