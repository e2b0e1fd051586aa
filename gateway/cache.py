"""The gateway's memory of recent vectors: a bounded LRU of (vector, token count) by (model, text hash).

Looked at before the database (gateway/database.py), and it also holds vectors the writer has not committed
yet, so a repeat within the flush window is a hit. The token count rides with the vector so OpenAI's `usage`
can be answered for a hit; a vector read back from the database has none (the table kept from the original
service has no token column), so its count is None.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

CacheKey = tuple[str, str]  # (model_name, text_hash)


@dataclass(frozen=True, slots=True)
class CachedVector:
    """A vector in the cache, with its token count as the worker gave it (None when read back from the store)."""

    vector: np.ndarray
    tokens: int | None  # as the worker counted them; None when unknown


class MemoryCache:
    """Least recently used entries leave first once `capacity` is passed."""

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[CacheKey, CachedVector] = OrderedDict()
        self._capacity = capacity

    def get(self, key: CacheKey) -> CachedVector | None:
        """The entry for `key`, now the most recently used; None on a miss."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: CachedVector) -> None:
        """Store `entry` as the most recently used, dropping the least recently used ones past `capacity`."""
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def discard(self, key: CacheKey) -> None:
        """Forget `key` (its row was deleted); nothing when it is not held."""
        self._entries.pop(key, None)
