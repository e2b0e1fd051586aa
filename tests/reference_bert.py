"""Float64 numpy BERT forward pass: the ground truth our GGUF conversion is checked against.

Why not sentence-transformers/torch: they are heavy test dependencies and run in
float32.  This re-implements the post-LN BERT encoder from the raw safetensors
weights in float64 (exact erf GELU, masked attention, mean pooling over real
tokens, L2 normalisation), so any disagreement with llama.cpp comes from the
conversion or llama.cpp's f16 arithmetic, not from the reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

_BATCH = 8
_erf = np.frompyfunc(math.erf, 1, 1)


def _max_seq_length(model_dir: Path, config: dict[str, Any]) -> int:
    st_path = model_dir / "sentence_bert_config.json"
    if st_path.is_file():
        declared = json.loads(st_path.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(declared, int):
            return declared
    return int(config["max_position_embeddings"])


def reference_token_ids(model_dir: Path, texts: list[str]) -> list[list[int]]:
    """Token ids exactly as sentence-transformers feeds them (incl. [CLS]/[SEP])."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json may ship with fixed padding/truncation (MiniLM: 128); the
    # sentence-transformers wrapper overrides both, so must we.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=_max_seq_length(model_dir, config))
    return [enc.ids for enc in tokenizer.encode_batch(texts)]


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.asarray(_erf(x / math.sqrt(2.0))).astype(np.float64))


def _encode(w: dict[str, np.ndarray], config: dict[str, Any], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    eps = float(config.get("layer_norm_eps", 1e-12))
    n_heads = int(config["num_attention_heads"])
    batch, seq = ids.shape
    hidden = w["embeddings.word_embeddings.weight"].shape[1]
    head_dim = hidden // n_heads

    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    # Padding keys get -inf-like scores so padded positions never leak into real tokens.
    key_bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)

    def split_heads(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, seq, n_heads, head_dim).transpose(0, 2, 1, 3)

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def dense(t: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = split_heads(dense(x, "attention.self.query"))
        k = split_heads(dense(x, "attention.self.key"))
        v = split_heads(dense(x, "attention.self.value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + key_bias
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = _layer_norm(dense(context, "attention.output.dense") + x,
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        ffn = dense(_gelu(dense(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(ffn + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)

    pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def reference_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalised float64 embeddings, shape (len(texts), hidden)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    weights = {name.removeprefix("bert."): array.astype(np.float64)
               for name, array in load_file(str(model_dir / "model.safetensors")).items()}
    all_ids = reference_token_ids(model_dir, texts)
    out = np.zeros((len(texts), weights["embeddings.word_embeddings.weight"].shape[1]))
    # Group similar lengths so the padded batches (which exercise the mask) stay cheap.
    order = sorted(range(len(texts)), key=lambda j: len(all_ids[j]))
    for start in range(0, len(order), _BATCH):
        chunk = order[start:start + _BATCH]
        seq = max(len(all_ids[j]) for j in chunk)
        ids = np.zeros((len(chunk), seq), dtype=np.int64)
        mask = np.zeros((len(chunk), seq))
        for row, j in enumerate(chunk):
            ids[row, :len(all_ids[j])] = all_ids[j]
            mask[row, :len(all_ids[j])] = 1.0
        out[chunk] = _encode(weights, config, ids, mask)
    return out
