"""Splitting a document's text into sentences (gateway/documents/sentences.py)."""

from __future__ import annotations

from gateway.documents import sentences
from gateway.documents.sentences import SentenceSplitter, paragraphs
from tests.document_files import prose

split = SentenceSplitter(minimum_length=1).split


def test_abbreviations_do_not_end_a_sentence() -> None:
    text = "Dr. Smith moved to the U.S. in 2019 with Mr. Jones, Ph.D., e.g. for work. They stayed."
    assert split(text) == ["Dr. Smith moved to the U.S. in 2019 with Mr. Jones, Ph.D., e.g. for work.", "They stayed."]


def test_decimals_do_not_end_a_sentence() -> None:
    assert split("Coffee costs $3.50 today. Pi is about 3.14159 here.") == ["Coffee costs $3.50 today.",
                                                                         "Pi is about 3.14159 here."]


def test_questions_and_exclamations_end_sentences() -> None:
    assert split("Is it true? Yes! It is.") == ["Is it true?", "Yes!", "It is."]


def test_a_line_break_inside_a_sentence_does_not_end_it() -> None:
    wrapped = "This sentence was wrapped\nat the width of a PDF page and\ncontinues here. A second one follows."
    assert split(wrapped) == ["This sentence was wrapped at the width of a PDF page and continues here.",
                              "A second one follows."]


def test_a_word_hyphenated_across_lines_is_rejoined() -> None:
    assert split("The embed-\nding of every sentence is stored.") == ["The embedding of every sentence is stored."]


def test_a_blank_line_ends_a_paragraph_without_punctuation() -> None:
    assert split("A heading without a full stop\n\nThe first paragraph starts here.") == [
        "A heading without a full stop", "The first paragraph starts here."]


def test_windows_and_crlf_line_ends_are_handled_like_line_feeds() -> None:
    assert list(paragraphs("one\r\ntwo\r\n\r\nthree")) == ["one two", "three"]


def test_sentences_shorter_than_the_minimum_are_skipped() -> None:
    splitter = SentenceSplitter(minimum_length=15)
    assert splitter.split("Too short. This one is long enough to keep. Ok.") == ["This one is long enough to keep."]


def test_a_paragraph_longer_than_a_window_splits_as_if_whole() -> None:
    many = prose(120, seed=7)
    paragraph = " ".join(many)
    assert len(paragraph) > 5 * sentences.WINDOW_CHARS
    assert split(paragraph) == many


def test_an_abbreviation_at_a_window_edge_still_joins_its_sentence() -> None:
    filler = "word " * ((sentences.WINDOW_CHARS - 30) // 5)
    text = f"{filler}ends here. Then Dr. Smith arrived at noon and stayed. Next one."
    result = split(text)
    assert "Then Dr. Smith arrived at noon and stayed." in result


def test_text_without_any_boundary_is_cut_into_bounded_pieces() -> None:
    runaway = "word " * 3000  # 15 000 characters without punctuation
    pieces = split(runaway)
    assert len(pieces) > 1 and max(len(piece) for piece in pieces) <= 2 * sentences.WINDOW_CHARS
    assert " ".join(pieces).split() == runaway.split()


def test_prose_splits_exactly_as_pysbd_alone_splits_it() -> None:
    splitter = SentenceSplitter(minimum_length=1)
    text = " ".join(prose(300, seed=11)) + (
        " Dr. Smith moved to the U.S. in 2019. The U.S. Congress met. J. R. R. Tolkien wrote books."
        ' "Stop!" he said. (This is in parens.) What... really? See No. 5 in the list. Cost is approx. Ten dollars.')
    assert splitter.split(text) == list(splitter._with_pysbd(text))


def test_an_enumeration_inside_a_sentence_stays_in_it() -> None:
    text = "The licence ends (a) when you stop, or (b) when you breach it. Nothing else ends it."
    assert split(text) == ["The licence ends (a) when you stop, or (b) when you breach it.", "Nothing else ends it."]
