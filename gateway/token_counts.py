"""How many tokens each cached input took, remembered beside the vector LRU for the OpenAI `usage` numbers.

Workers count tokens when they embed; a later cache hit has no worker to ask, so the count computed then is
kept here (bounded like the vector LRU). The table kept from the original service has no token column, so
a vector read back from SQLite after a gateway restart has no known count.
"""

from __future__ import annotations

from collections import OrderedDict

from gateway.cache import CacheKey


class TokenCounts:
    def __init__(self, capacity: int) -> None:
        self._counts: OrderedDict[CacheKey, int] = OrderedDict()
        self._capacity = capacity

    def get(self, key: CacheKey) -> int | None:
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
        return count

    def put(self, key: CacheKey, count: int) -> None:
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > self._capacity:
            self._counts.popitem(last=False)
