"""What a search may return: every stored string of the model, or those of a collection and/or a document.

A scope is resolved to the rows it holds once per search (one indexed query on `memberships`); the FAISS
search then takes only those ids and the tail only those hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, select

from shared.schema import COLLECTION, DOCUMENT, embeddings, memberships


@dataclass(frozen=True)
class Scope:
    """A collection name, a document's file hash, both (the strings in both) or neither (everything)."""

    collection: str | None = None
    document: str | None = None

    def __bool__(self) -> bool:
        return self.collection is not None or self.document is not None

    def conditions(self, model: str) -> list[ColumnElement[bool]]:
        """WHERE terms on `embeddings` keeping the rows of `model` in this scope."""
        parts = [(COLLECTION, self.collection), (DOCUMENT, self.document)]
        return [embeddings.c.text_hash.in_(select(memberships.c.text_hash).where(
                    memberships.c.kind == kind, memberships.c.name == name, memberships.c.model_name == model))
                for kind, name in parts if name is not None]


@dataclass(frozen=True)
class Members:
    """The committed rows of a scope: their ids (for FAISS) and text hashes (for the tail)."""

    ids: np.ndarray  # int64
    hashes: frozenset[str]
