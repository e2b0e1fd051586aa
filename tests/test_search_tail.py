"""The gateway's tail: rows not in the loaded index generation, searched exactly."""

from __future__ import annotations

import numpy as np

from gateway.search.tail import Tail


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_search_returns_the_k_rows_with_the_largest_inner_product() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "east", unit(1, 0))
    tail.add("b", "north", unit(0, 1))
    tail.add("c", "north-east", unit(1, 1))
    hits = dict(tail.view().search(unit(1, 0.1), k=2))
    assert set(hits) == {"east", "north-east"}
    assert abs(hits["east"] - float(unit(1, 0.1) @ unit(1, 0))) < 1e-6


def test_k_larger_than_the_tail_returns_every_row() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "one", unit(1, 0))
    tail.add("b", "two", unit(0, 1))
    assert len(tail.view().search(unit(1, 1), k=50)) == 2


def test_a_view_is_not_changed_by_rows_added_after_it() -> None:
    tail = Tail(capacity=100)
    tail.add("a", "first", unit(1, 0))
    view = tail.view()
    for number in range(40):  # forces the matrix to grow into a new array
        tail.add(f"h{number}", f"row {number}", unit(1, number))
    assert [text for text, _ in view.search(unit(1, 0), k=10)] == ["first"]


def test_rows_an_index_generation_covers_are_dropped_and_the_others_kept() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "committed early", unit(1, 0))
    tail.add("b", "committed late", unit(0, 1))
    tail.add("c", "not committed", unit(1, 1))
    tail.drop_covered({"a": 5, "b": 9}, rows_covered=7)
    assert sorted(text for text, _ in tail.view().search(unit(1, 0), k=10)) == ["committed late", "not committed"]
    assert tail.hashes_without_id() == ["c"]


def test_a_full_tail_refuses_rows_and_says_so() -> None:
    tail = Tail(capacity=2)
    for number in range(3):
        tail.add(str(number), f"row {number}", unit(1, number))
    assert len(tail) == 2 and tail.overflowed


def test_the_same_text_is_held_once() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "twice", unit(1, 0))
    tail.add("a", "twice", unit(1, 0))
    assert len(tail) == 1


def test_a_removed_row_is_no_longer_found_and_the_others_are() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "east", unit(1, 0))
    tail.add("b", "north", unit(0, 1))
    tail.remove({"a"})
    assert "a" not in tail and len(tail) == 1
    assert [text for text, _ in tail.view().search(unit(1, 0), k=5)] == ["north"]


def test_a_scoped_search_considers_only_the_rows_of_the_given_hashes() -> None:
    tail = Tail(capacity=10)
    tail.add("a", "east", unit(1, 0))
    tail.add("b", "north", unit(0, 1))
    tail.add("c", "north-east", unit(1, 1))
    assert [text for text, _ in tail.view().search(unit(1, 0), k=1, only=frozenset({"b"}))] == ["north"]
    assert tail.view().search(unit(1, 0), k=1, only=frozenset()) == []
