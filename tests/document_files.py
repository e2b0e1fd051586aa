"""Documents made on the spot for the tests and the benchmark: PDFs from two producers (fpdf2, and
Ghostscript's ps2pdf from PostScript), text in several encodings, and files the service must refuse."""

from __future__ import annotations

import io
import random
import subprocess
import textwrap

from fpdf import FPDF
from PIL import Image, ImageDraw

LINES_PER_PAGE = 60


def fpdf_pdf(pages: list[str], *, user_password: str | None = None) -> bytes:
    """A PDF made by fpdf2: each string starts a page; fpdf2 wraps the lines at the page width."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, page)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner-" + user_password, user_password=user_password)
    return bytes(pdf.output())


def aes_encrypted_pdf(pages: list[str], algorithm: str, user_password: str = "") -> bytes:
    """An fpdf2 PDF encrypted by pypdf with AES: "AES-128" (revision 4), "AES-256-R5" or "AES-256" (revision 6).
    With the empty user password it opens for anyone; the owner password only guards permissions."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(fpdf_pdf(pages))))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def ghostscript_pdf(pages: list[str], width: int = 85) -> bytes:
    """A PDF made by Ghostscript's pdfwrite from PostScript that shows each page's text wrapped at `width`
    characters (ASCII only: the standard encoding of the PostScript Helvetica)."""
    program = ["%!PS", "/Helvetica findfont 11 scalefont setfont"]
    for page in pages:
        lines = [line for paragraph in page.split("\n") for line in (textwrap.wrap(paragraph, width) or [""])]
        for start in range(0, len(lines), LINES_PER_PAGE):
            for row, line in enumerate(lines[start:start + LINES_PER_PAGE]):
                escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                program.append(f"40 {800 - 13 * row} moveto ({escaped}) show")
            program.append("showpage")
    result = subprocess.run(
        ["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", "-sOutputFile=%stdout", "-"],
        input="\n".join(program).encode("ascii"), capture_output=True, check=True, timeout=120,
    )
    return result.stdout


def picture_of_text() -> Image.Image:
    image = Image.new("L", (600, 200), color=255)
    ImageDraw.Draw(image).text((20, 80), "A scanned page: these words are pixels, not text.", fill=0)
    return image


def image_only_pdf() -> bytes:
    """What a scanner makes: a page holding a picture of text and no text layer."""
    pdf = FPDF()
    pdf.add_page()
    pdf.image(picture_of_text(), x=10, y=10, w=180)
    return bytes(pdf.output())


def png_image() -> bytes:
    buffer = io.BytesIO()
    picture_of_text().save(buffer, format="PNG")
    return buffer.getvalue()


_SUBJECTS = ["The committee", "A small team", "Our neighbour", "The old library", "Every engineer", "The river",
             "A quiet village", "The orchestra", "This company", "The weather station", "My grandmother", "The museum"]
_VERBS = ["measured", "painted", "repaired", "described", "collected", "studied", "announced", "questioned",
          "carried", "celebrated", "rebuilt", "compared"]
_OBJECTS = ["the northern bridge", "seventeen wooden boxes", "a forgotten recipe", "the annual report",
            "three rare orchids", "the broken clock", "an ancient map", "the harvest figures", "a silver kettle",
            "the winter schedule", "two hundred letters", "the coastal path"]
_TAILS = ["before the storm arrived", "with remarkable patience", "during the long summer", "for the first time",
          "after a heated debate", "in the early morning", "without any help", "despite the rising costs",
          "under a clear sky", "as the town watched", "at a modest price", "while the bells rang"]


def prose(sentence_count: int, seed: int = 0) -> list[str]:
    """Distinct English-like sentences of 8 to 30 words (numbered, so no two are equal)."""
    rng = random.Random(seed)
    sentences = []
    for number in range(sentence_count):
        words = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        extra = " and ".join(f"{rng.choice(_VERBS)} {rng.choice(_OBJECTS)}" for _ in range(rng.randint(0, 3)))
        sentences.append(f"{words}{', then ' + extra if extra else ''} (note {seed}-{number}).")
    return sentences
