"""Translate a BERT WordPiece ``vocab.txt`` into llama.cpp's "bert" tokenizer metadata.

llama.cpp does not store WordPiece the way Hugging Face does.  Its WPM tokenizer
prefixes every word with U+2581 ("phantom space") and then does greedy
longest-match against the vocabulary, so word-initial pieces must carry that
prefix and continuation pieces must lose their ``##``.  Special tokens keep their
literal text and are typed CONTROL so they are never produced from user text.
Getting any of this wrong does not fail loudly: the model still loads and
silently emits different token ids, hence this small, separately tested module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

PHANTOM_SPACE = "\u2581"

# [unusedN] slots are never produced by the HF tokenizer from text either; typing
# them CONTROL keeps llama.cpp from matching them as ordinary words.
_BRACKET_SPECIAL = re.compile(r"^\[(?:PAD|UNK|CLS|SEP|MASK|unused\d+)\]$")

_ROLE_DEFAULTS: dict[str, str] = {
    "cls": "[CLS]",
    "sep": "[SEP]",
    "unk": "[UNK]",
    "pad": "[PAD]",
    "mask": "[MASK]",
}


@dataclass(frozen=True)
class WordPieceVocab:
    """A WordPiece vocabulary in llama.cpp's form: pieces, their token types, special-token ids, normaliser flags."""

    tokens: list[str]
    token_types: list[int]
    special_ids: dict[str, int]
    lowercase: bool
    strip_accents: bool


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores special tokens either as plain strings or as
    # AddedToken dicts, depending on the transformers version that saved it.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _normalizer_flags(tok_json: dict[str, Any], tok_cfg: dict[str, Any]) -> tuple[bool, bool]:
    # tokenizer.json is what sentence-transformers actually runs (fast tokenizer),
    # so it wins over tokenizer_config.json.  Note sentence_bert_config.json's
    # do_lower_case is an unrelated extra lowercasing step and is ignored here.
    norm = tok_json.get("normalizer") or {}
    if norm.get("type") == "BertNormalizer":
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
    else:
        lowercase = bool(tok_cfg.get("do_lower_case", True))
        strip = tok_cfg.get("strip_accents")
    # HF semantics: strip_accents=None means "follow lowercase".
    return lowercase, lowercase if strip is None else bool(strip)


def load_wordpiece_vocab(source_dir: Path, n_vocab: int) -> WordPieceVocab:
    """Read vocab.txt (+ optional tokenizer configs); pad to the embedding row count."""
    # readlines() + rstrip("\n") mirrors transformers' load_vocab; str.splitlines
    # would also split on U+2028/U+0085, which appear inside some BERT vocabs.
    with (source_dir / "vocab.txt").open(encoding="utf-8") as fh:
        raw = [line.rstrip("\n") for line in fh.readlines()]
    if not raw:
        raise ValueError("vocab.txt is empty")
    if len(raw) > n_vocab:
        raise ValueError(f"vocab.txt has {len(raw)} entries but the embedding matrix has {n_vocab} rows")

    tok_json = _read_json(source_dir / "tokenizer.json")
    tok_cfg = _read_json(source_dir / "tokenizer_config.json")
    special_map = _read_json(source_dir / "special_tokens_map.json")

    role_text = {
        role: _token_text(tok_cfg.get(f"{role}_token")) or _token_text(special_map.get(f"{role}_token")) or default
        for role, default in _ROLE_DEFAULTS.items()
    }
    declared_special = set(role_text.values()) | {
        t["content"] for t in tok_json.get("added_tokens", []) if t.get("special") and "content" in t
    }

    tokens: list[str] = []
    types: list[int] = []
    for piece in raw:
        if piece in declared_special or _BRACKET_SPECIAL.match(piece):
            tokens.append(piece)
            types.append(gguf.TokenType.CONTROL)
        elif piece.startswith("##") and len(piece) > 2:
            tokens.append(piece[2:])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(PHANTOM_SPACE + piece)
            types.append(gguf.TokenType.NORMAL)

    # Checkpoints may round the embedding matrix up; llama.cpp requires exactly
    # one token per row, and these filler rows must never match text.
    for i in range(len(raw), n_vocab):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)

    index = {piece: i for i, piece in enumerate(raw)}
    special_ids: dict[str, int] = {}
    for role, text in role_text.items():
        if text not in index:
            raise ValueError(f"special token {text!r} ({role}) is missing from vocab.txt")
        special_ids[role] = index[text]

    lowercase, strip_accents = _normalizer_flags(tok_json, tok_cfg)
    return WordPieceVocab(tokens, types, special_ids, lowercase, strip_accents)


def write_wordpiece_vocab(writer: gguf.GGUFWriter, vocab: WordPieceVocab) -> None:
    """Write `vocab` as llama.cpp's "bert" tokenizer metadata: [CLS] as BOS, [SEP] as SEP and EOS."""
    writer.add_tokenizer_model("bert")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    ids = vocab.special_ids
    # llama.cpp's WPM path emits [CLS] as "bos" and [SEP] as "sep"; eos is set to
    # [SEP] too so generic "end of sequence" consumers see the same token.
    writer.add_bos_token_id(ids["cls"])
    writer.add_eos_token_id(ids["sep"])
    writer.add_sep_token_id(ids["sep"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_mask_token_id(ids["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_sep_token(True)
    # gguf-py has no helper for these keys.  The llama.cpp vendored by
    # llama-cpp-python 0.3.36 reads them (default True/True); builds that predate
    # them ignore the keys and always lowercase, so cased models need them.
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", vocab.lowercase)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", vocab.strip_accents)
