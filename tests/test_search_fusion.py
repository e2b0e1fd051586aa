"""Reciprocal rank fusion of the semantic and keyword rankings, and how a query becomes keywords."""

from __future__ import annotations

import pytest

from gateway.search.fusion import RRF_K, fuse
from gateway.search.keyword import query_words


def test_a_string_found_by_both_parts_outranks_one_found_by_either_alone() -> None:
    fused = fuse([("a", 0.9), ("b", 0.8)], [("c", 5.0), ("b", 4.0)], k=3)
    assert [r.text for r in fused][0] == "b"
    assert fused[0].score == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 2))


def test_fused_results_carry_each_parts_rank_and_the_similarity_when_known() -> None:
    fused = {r.text: r for r in fuse([("a", 0.9)], [("c", 5.0), ("a", 4.0)], k=5)}
    assert (fused["a"].semantic_rank, fused["a"].keyword_rank, fused["a"].similarity) == (1, 2, 0.9)
    assert (fused["c"].semantic_rank, fused["c"].keyword_rank, fused["c"].similarity) == (None, 1, None)


def test_equal_fused_scores_go_to_the_keyword_match() -> None:
    fused = fuse([("near vector", 0.9)], [("exact word", 3.0)], k=2)
    assert [r.text for r in fused] == ["exact word", "near vector"]


def test_fusion_returns_at_most_k_results() -> None:
    assert len(fuse([(str(i), 1.0) for i in range(20)], [(str(i), 1.0) for i in range(10, 30)], k=7)) == 7


def test_query_words_are_lower_cased_distinct_words_without_punctuation() -> None:
    assert query_words('Part "XK7731B" part* NEAR(x)') == ["part", "xk7731b", "near", "x"]


def test_query_words_leave_out_stopwords_unless_nothing_else_is_left() -> None:
    assert query_words("Where is the XK7731B part") == ["xk7731b", "part"]
    assert query_words("What is it") == ["what", "is", "it"]


def test_a_query_of_punctuation_only_has_no_words() -> None:
    assert query_words("*** ?! --") == []
