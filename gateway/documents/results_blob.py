"""How a document's results are kept in its `document_embeddings` row (the writer stores what this encodes).

A document's results are stored as the list of its kept sentences, in order, zlib-compressed JSON: with the
sentences' rows in `embeddings` (keyed by text hash and model) that regenerates the answer in any orient, so
a re-upload may ask for a different `json_format` than the first upload did, and nothing is stored twice.
"""

from __future__ import annotations

import json
import zlib

RESULTS_FORMAT = "sentences-v1"  # recorded in the metadata entry of every answer


def encode_results(sentences: list[str]) -> bytes:
    """The blob stored for a document whose kept sentences are `sentences`, in order."""
    return zlib.compress(json.dumps({"format": RESULTS_FORMAT, "sentences": sentences}).encode("utf-8"))


def decode_results(blob: bytes) -> list[str]:
    """The kept sentences of a stored blob; ValueError for a format this version does not know."""
    stored = json.loads(zlib.decompress(blob))
    if stored.get("format") != RESULTS_FORMAT:
        raise ValueError(f"stored results in an unknown format {stored.get('format')!r}")
    return list(stored["sentences"])
