"""Text → sentences, with pysbd's rules (abbreviations such as "e.g." and "U.S.", decimals, initials).

Text extracted from a PDF is cut into lines at the page width, so a single line break is never a sentence
boundary: lines are joined (a word hyphenated across a line break is rejoined) and only blank lines separate
paragraphs.

pysbd costs about 7 µs per character (a 100-page PDF: 3 s of the gateway's CPU, as long as the workers
took to embed it on this machine), so it is asked only where a boundary is in doubt. Most sentence ends are
plain: a word that is no abbreviation in pysbd's lists, a full stop (or ! or ?), a space, a capital. pysbd
splits there too, so a paragraph is first cut at those; a piece with no other terminal mark inside is a
sentence as it stands, and only the pieces that hold one (an abbreviation, an initial, a quotation) go
through pysbd. One difference remains: pysbd also cuts enumerations such as "(a) ... (b) ..." inside a
sentence into pieces, which this does only inside pieces that pysbd sees.

pysbd's time grows faster than the length of its input (8 µs/char at 1 KB, 50 µs/char at 20 KB), so a long
piece is fed to it in windows of about WINDOW_CHARS, and the last sentence of each window, which the
window's end may have cut, is carried into the next. pysbd is run through its Processor rather than
`Segmenter.segment`, which then searches the text once per sentence with a regex made from that sentence to
report character offsets that we do not use (a third of its time); the sentences are the same.
"""

from __future__ import annotations

import re
from typing import Iterator

from pysbd.languages import Language
from pysbd.processor import Processor

WINDOW_CHARS = 2000
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_HYPHENATED_LINE_BREAK = re.compile(r"(?<=[^\W\d_])-[^\S\n]*\n\s*(?=[a-z])")
_WHITESPACE = re.compile(r"\s+")
# A terminal mark after a word or a closing bracket, then space and a capital: where a plain sentence ends.
_PLAIN_END = re.compile(r"(?:(?<=\s)|^)[(\"']?(?P<word>[A-Za-z][a-z]+|[^\s()]*\))[.!?](?=\s+[\"'(]?[A-ZÀ-Þ])")
# A terminal mark anywhere but at the very end: a boundary pysbd has to judge.
_INNER_MARK = re.compile(r"[.!?…][\"')\]]*(?:\s|$)(?!$)")


def paragraphs(text: str) -> Iterator[str]:
    """Paragraphs (separated by blank lines) with their line breaks joined and whitespace collapsed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    for block in _PARAGRAPH_BREAK.split(text):
        joined = _WHITESPACE.sub(" ", _HYPHENATED_LINE_BREAK.sub("", block)).strip()
        if joined:
            yield joined


class SentenceSplitter:
    """Splits a document's text into the sentences to embed; shorter ones than `minimum_length` are dropped."""

    def __init__(self, minimum_length: int) -> None:
        self.minimum_length = minimum_length
        self._language = Language.get_language_code("en")
        rules = self._language.Abbreviation
        self._abbreviations = {abbreviation.strip().lower() for abbreviation in
                               (*rules.ABBREVIATIONS, *rules.PREPOSITIVE_ABBREVIATIONS, *rules.NUMBER_ABBREVIATIONS)}

    def split(self, text: str) -> list[str]:
        """The sentences of `text` that have at least `minimum_length` characters, in document order."""
        return [
            sentence
            for paragraph in paragraphs(text)
            for piece in self._plain_pieces(paragraph)
            for sentence in (self._with_pysbd(piece) if self._in_doubt(piece) else (piece,))
            if len(sentence) >= self.minimum_length
        ]

    @staticmethod
    def _in_doubt(piece: str) -> bool:
        """A terminal mark inside, or too long to be one sentence: pysbd decides (and windows cut it)."""
        return len(piece) > WINDOW_CHARS or _INNER_MARK.search(piece) is not None

    def _plain_pieces(self, paragraph: str) -> Iterator[str]:
        """The paragraph cut after every plain sentence end."""
        start = 0
        for match in _PLAIN_END.finditer(paragraph):
            if match.group("word").lower() in self._abbreviations:
                continue
            yield paragraph[start:match.end()].strip()
            start = match.end()
        if rest := paragraph[start:].strip():
            yield rest

    def _with_pysbd(self, piece: str) -> Iterator[str]:
        carried = ""
        start = 0
        while True:
            end = _window_end(piece, start)
            window = f"{carried} {piece[start:end].lstrip()}".strip()
            sentences = [sentence.strip() for sentence in Processor(window, self._language, char_span=False).process()
                         if sentence.strip()]
            if end >= len(piece):
                yield from sentences
                return
            *complete, carried = sentences or [""]
            yield from complete
            if len(carried) >= WINDOW_CHARS:
                # No boundary in a whole window (a table, a list without punctuation): emit it rather than let
                # the carried text, and with it pysbd's time, grow without end.
                yield carried
                carried = ""
            start = end


def _window_end(text: str, start: int) -> int:
    """The end of the window starting at `start`: WINDOW_CHARS further, moved back to a space."""
    end = start + WINDOW_CHARS
    if end >= len(text):
        return len(text)
    space = text.rfind(" ", start + 1, end)
    return space if space > start else end
