"""Reproducible sentences of varied length for benchmarks (the same seed gives the same texts)."""

from __future__ import annotations

import random

_SUBJECTS = ["The committee", "A small dog", "Our new database", "The weather in Lisbon", "Every student",
             "The quarterly report", "My neighbour's cat", "The spacecraft", "This recipe", "The orchestra",
             "A distributed system", "The river", "Her latest novel", "The city council", "An old lighthouse"]
_VERBS = ["announced", "ignored", "improved", "described", "questioned", "celebrated", "delayed", "measured",
          "explained", "rebuilt", "predicted", "abandoned", "translated", "compared", "protected"]
_OBJECTS = ["the budget for next year", "a surprising result", "the morning traffic", "its own shadow",
            "the final chapter", "three thousand tickets", "the broken bridge", "a quiet afternoon",
            "the migration plan", "an unexpected guest", "the network latency", "the harvest festival",
            "a long-forgotten letter", "the evening news", "the last train home"]
_TAILS = ["", "", "after a long discussion", "despite the heavy rain", "for the third time this week",
          "with remarkable precision", "while everyone was watching", "before anyone noticed",
          "according to several witnesses who were present at the time and later spoke to reporters",
          "in a way that nobody had expected, least of all the people who had planned it for months"]


def sentences(count: int, seed: int = 7) -> list[str]:
    """`count` distinct sentences, 5 to ~45 words, deterministic for a given seed."""
    rng = random.Random(seed)
    result: list[str] = []
    seen: set[str] = set()
    while len(result) < count:
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
        if rng.random() < 0.3:
            parts += ["and", rng.choice(_SUBJECTS).lower(), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        text = " ".join(p for p in parts if p) + f" (#{len(result)})."
        if text not in seen:
            seen.add(text)
            result.append(text)
    return result
