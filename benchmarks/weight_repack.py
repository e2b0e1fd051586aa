"""Weight repacking on and off (LLAMA_WEIGHT_REPACK), per default model, on this CPU.

For each model and each loading: the canary's verdict (does it embed here at all?) and, where it does, texts/s
of our engine in-process (the worker's token budget, flash attention as in the catalogue, 1 thread as the default
one-thread workers and 2 threads), on the same distinct sentences. Each measurement runs in a child process, so
a crashing kernel is a verdict, not the end of the benchmark.

Usage: .venv/bin/python -m benchmarks.weight_repack [--texts 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpus import sentences
from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed
from tests.child_object import ChildDied, ChildObject
from tests.harness import PROJECT_ROOT
from workers.embedder.batcher import Item, TextQueue
from workers.embedder.canary import choose_loading, cpu_fingerprint
from workers.embedder.engine import Engine, EngineConfig

MODELS_DIR = PROJECT_ROOT / "data" / "test-models"
MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")


def embed_all(engine: Engine, texts: list[str], token_budget: int) -> float:
    """Texts/s through the engine, grouped by the worker's own batcher under the token budget."""
    queue = TextQueue(token_budget, engine.max_sequences)
    queue.extend(Item(request=(0, index), index=0, tokens=engine.tokenize(text)) for index, text in enumerate(texts))
    live = {(0, index) for index in range(len(texts))}
    engine.embed([engine.tokenize(texts[0])])  # warm up
    started = time.perf_counter()
    while queue:
        group = queue.next_group(live)
        engine.embed([item.tokens for item in group])
    return len(texts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=400)
    args = parser.parse_args(argv)
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    catalogue = load_catalogue(MODELS_DIR)
    ensure_installed(list(MODELS), MODELS_DIR, catalogue)
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    model_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), "?")
    simd = sorted({flag for flag in flags.split() if flag.startswith(("avx", "amx"))})
    print(f"CPU: {model_name}, {os.cpu_count()} cores, {' '.join(simd)} (fingerprint {cpu_fingerprint()})")
    texts = sentences(args.texts, seed=3)
    print(f"{'model':24} {'repacking':9} {'canary':20} {'1 thread':>10} {'2 threads':>10}  texts/s, {len(texts)} texts")
    for name in MODELS:
        entry = catalogue[name]
        base = EngineConfig(str(entry.installed_path(MODELS_DIR)), entry.pooling, entry.max_tokens, threads=1,
                            token_budget=entry.batch_tokens, flash_attention=entry.flash_attention)
        for repack in (True, False):
            config = dataclasses.replace(base, weight_repack=repack)
            with tempfile.TemporaryDirectory() as verdicts:
                verdict = choose_loading(config, "on" if repack else "off", Path(verdicts), name)
            outcome = next(iter(verdict.trials.values()))
            rates = []
            for threads in (1, 2):
                if outcome != "ok":
                    rates.append("-")
                    continue
                engine = ChildObject(Engine, dataclasses.replace(config, threads=threads))
                try:
                    rates.append(f"{engine.apply(embed_all, texts, entry.batch_tokens):.1f}")
                except ChildDied as exc:
                    rates.append(str(exc)[:10])
                finally:
                    engine.close()
            print(f"{name:24} {'on' if repack else 'off':9} {outcome:20} {rates[0]:>10} {rates[1]:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
