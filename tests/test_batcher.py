"""Which queued texts go into the next llama.cpp call (workers/embedder/batcher.py)."""

from __future__ import annotations

from workers.embedder.batcher import Item, TextQueue


def keys(*request_ids: int) -> set[tuple[int, int]]:
    """The compute loop's keys of requests sent over gateway link 0."""
    return {(0, request_id) for request_id in request_ids}


def ids(items: list[Item]) -> list[int]:
    return [item.request[1] for item in items]


def _queue(budget: int = 10, max_sequences: int = 8, *lengths: int) -> TextQueue:
    queue = TextQueue(budget, max_sequences)
    queue.extend(Item(request=(0, i), index=0, tokens=[0] * n) for i, n in enumerate(lengths))
    return queue


def test_a_group_takes_the_oldest_texts_that_fit_the_token_budget() -> None:
    queue = _queue(10, 8, 4, 4, 4, 1)
    assert ids(queue.next_group(keys(*range(4)))) == [0, 1]
    assert ids(queue.next_group(keys(*range(4)))) == [2, 3]
    assert len(queue) == 0


def test_a_later_short_text_does_not_overtake_an_older_one() -> None:
    queue = _queue(10, 8, 8, 8, 1)
    assert ids(queue.next_group(keys(*range(3)))) == [0]
    assert ids(queue.next_group(keys(*range(3)))) == [1, 2]


def test_a_group_holds_at_most_max_sequences() -> None:
    queue = _queue(100, 2, 1, 1, 1)
    assert len(queue.next_group(keys(*range(3)))) == 2


def test_a_text_longer_than_the_budget_goes_alone() -> None:
    queue = _queue(10, 8, 100, 3)
    assert [len(item.tokens) for item in queue.next_group(keys(*range(2)))] == [100]
    assert [len(item.tokens) for item in queue.next_group(keys(*range(2)))] == [3]


def test_texts_of_requests_no_longer_live_are_dropped() -> None:
    queue = _queue(100, 8, 1, 1, 1)
    assert ids(queue.next_group(keys(0, 2))) == [0, 2]
    assert len(queue) == 0


def test_every_text_is_taken_exactly_once() -> None:
    queue = TextQueue(40, 4)
    items = [Item(request=(0, i // 3), index=i % 3, tokens=[0] * (5 + i)) for i in range(12)]
    queue.extend(items)
    taken: list[Item] = []
    while group := queue.next_group(keys(*range(4))):
        assert len(group) <= 4 and (sum(len(it.tokens) for it in group) <= 40 or len(group) == 1)
        taken += group
    assert taken == items
