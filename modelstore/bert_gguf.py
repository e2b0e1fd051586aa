"""Convert a BERT-family sentence-transformers folder into a GGUF embedding model.

Why our own converter instead of llama.cpp's ``convert_hf_to_gguf.py``: that
script needs torch + transformers and a llama.cpp checkout, and it ignores the
sentence-transformers layer (pooling mode, max_seq_length, extra modules).  We
need a small, dependency-light, deterministic step that refuses folders whose
embeddings llama.cpp could not reproduce (Dense heads, max pooling, non-BERT
encoders) instead of producing a model that loads but embeds differently.

Layout decisions follow llama.cpp's BERT loader: weight matrices in f16; 1-D
tensors (norms, biases) plus position/token-type embeddings in f32 like the
upstream converter; pooler/MLM heads dropped because llama.cpp pools itself.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from modelstore.wordpiece_vocab import load_wordpiece_vocab, write_wordpiece_vocab
from shared.file_integrity import atomic_replace


class ConversionError(ValueError):
    """The folder is not something we can turn into a faithful llama.cpp BERT model."""


@dataclass(frozen=True)
class ConversionReport:
    """What convert_sentence_transformer() wrote, and the facts of the model it read from the folder."""

    out_path: Path
    architecture: str
    dimensions: int
    max_tokens: int
    pooling: str
    tensor_count: int


_SUPPORTED_ARCHS = frozenset({"BertModel", "BertForMaskedLM", "BertForPreTraining"})
# Modules llama.cpp reproduces; anything else (Dense, LayerNorm heads...) would
# silently change the vectors, so we refuse rather than convert.
_ALLOWED_MODULES = frozenset({"Transformer", "Pooling", "Normalize"})
_POOLING = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS}
_DROPPED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
_ST_DTYPES: dict[str, type[np.generic]] = {"F64": np.float64, "F32": np.float32, "F16": np.float16}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConversionError(f"{path} is not a JSON object")
    return data


def _load_config(source_dir: Path) -> dict[str, Any]:
    if not (source_dir / "config.json").is_file():
        raise ConversionError(f"{source_dir} has no config.json; not a Hugging Face model folder")
    config = _read_json(source_dir / "config.json")
    archs = config.get("architectures") or []
    if config.get("model_type") != "bert" or (archs and archs[0] not in _SUPPORTED_ARCHS):
        found = archs[0] if archs else config.get("model_type")
        raise ConversionError(f"unsupported architecture {found!r}: only BERT (model_type 'bert') is supported")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError("only absolute position embeddings are supported by llama.cpp's BERT graph")
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"hidden_act {config.get('hidden_act')!r} unsupported; llama.cpp BERT uses GELU")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings")
    missing = [key for key in required if not isinstance(config.get(key), int)]
    if missing:
        raise ConversionError(f"config.json lacks integer field(s): {', '.join(missing)}")
    return config


def _pooling_mode(source_dir: Path) -> str:
    pooling_dir = source_dir / "1_Pooling"
    if (source_dir / "modules.json").is_file():
        try:
            modules = json.loads((source_dir / "modules.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConversionError(f"cannot read modules.json: {exc}") from exc
        for module in modules if isinstance(modules, list) else []:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _ALLOWED_MODULES:
                raise ConversionError(f"sentence-transformers module {kind!r} cannot be reproduced by llama.cpp")
            if kind == "Pooling":
                pooling_dir = source_dir / module.get("path", "1_Pooling")
    if not (pooling_dir / "config.json").is_file():
        return "mean"  # sentence-transformers' default when wrapping a bare HF model
    cfg = _read_json(pooling_dir / "config.json")
    modes = sorted(key[len("pooling_mode_"):] for key, on in cfg.items() if key.startswith("pooling_mode_") and on)
    modes = ["cls" if m == "cls_token" else "mean" if m == "mean_tokens" else m for m in modes]
    if len(modes) != 1 or modes[0] not in _POOLING:
        raise ConversionError(f"pooling {modes or 'none'} unsupported; llama.cpp BERT pools by mean or cls only")
    return modes[0]


def _max_tokens(source_dir: Path, max_positions: int) -> int:
    st_config = source_dir / "sentence_bert_config.json"
    declared = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    return min(declared, max_positions) if isinstance(declared, int) and declared > 0 else max_positions


def _weight_files(source_dir: Path) -> list[Path]:
    index = source_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [source_dir / shard for shard in shards]
    if (source_dir / "model.safetensors").is_file():
        return [source_dir / "model.safetensors"]
    raise ConversionError(f"{source_dir} has no model.safetensors (pytorch .bin weights are not supported)")


def _iter_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    # Parsed by hand so bf16 checkpoints work without torch (numpy has no bf16),
    # and tensors are memory-mapped one at a time instead of loaded at once.
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(header_len))
    blob = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name in sorted(key for key in header if key != "__metadata__"):
        if name.removeprefix("bert.").startswith(_DROPPED_PREFIXES):
            continue
        info = header[name]
        start, end = info["data_offsets"]
        raw = blob[start:end]
        if info["dtype"] == "BF16":
            array = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] in _ST_DTYPES:
            array = raw.view(_ST_DTYPES[info["dtype"]])
        else:
            raise ConversionError(f"tensor {name} has unsupported dtype {info['dtype']}")
        yield name, array.reshape(info["shape"])


def _gguf_tensors(files: list[Path], n_layers: int) -> Iterator[tuple[str, np.ndarray]]:
    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.BERT, n_layers)
    for path in files:
        for hf_name, array in _iter_safetensors(path):
            # BertForMaskedLM prefixes "bert."; TF-era checkpoints say gamma/beta.
            name = hf_name.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight")
            name = name.replace("LayerNorm.beta", "LayerNorm.bias")
            gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ConversionError(f"unexpected tensor {hf_name!r}; not a plain BERT encoder")
            keep_f32 = array.ndim == 1 or gguf_name.startswith(("position_embd.", "token_types."))
            yield gguf_name, np.ascontiguousarray(array, dtype=np.float32 if keep_f32 else np.float16)


def _required_tensors(n_layers: int) -> set[str]:
    per_layer = ("attn_q", "attn_k", "attn_v", "attn_output", "attn_output_norm", "ffn_up", "ffn_down",
                 "layer_output_norm")
    names = {"token_embd.weight", "position_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias"}
    names |= {f"blk.{i}.{part}.weight" for i in range(n_layers) for part in per_layer}
    return names


def convert_sentence_transformer(source_dir: Path, out_path: Path, *, model_name: str | None = None) -> ConversionReport:
    """Write ``out_path`` (GGUF, f16) from a BERT sentence-transformers folder; atomic."""
    source_dir, out_path = Path(source_dir), Path(out_path)
    if not source_dir.is_dir():
        raise ConversionError(f"{source_dir} is not a directory")
    config = _load_config(source_dir)
    if not (source_dir / "vocab.txt").is_file():
        raise ConversionError(f"{source_dir} has no vocab.txt; only WordPiece BERT tokenizers are supported")
    pooling = _pooling_mode(source_dir)
    files = _weight_files(source_dir)
    n_layers, hidden = config["num_hidden_layers"], config["hidden_size"]
    max_positions = config["max_position_embeddings"]

    tensors = dict(_gguf_tensors(files, n_layers))
    missing = _required_tensors(n_layers) - tensors.keys()
    if missing:
        raise ConversionError(f"weights lack {len(missing)} BERT tensors, e.g. {sorted(missing)[0]}")
    try:
        vocab = load_wordpiece_vocab(source_dir, n_vocab=tensors["token_embd.weight"].shape[0])
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc

    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(staging: Path) -> None:
        writer = gguf.GGUFWriter(staging, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
        writer.add_name(model_name or source_dir.name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        # context_length sizes llama.cpp's position table, so it must equal the
        # checkpoint's rows; the shorter trained max_seq_length goes in the report.
        writer.add_context_length(max_positions)
        writer.add_embedding_length(hidden)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(config["num_attention_heads"])
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        writer.add_pooling_type(_POOLING[pooling])
        writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
        write_wordpiece_vocab(writer, vocab)
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    # Durability before visibility: a crash must leave either the old file or the complete new one, never a
    # truncated model that fails at load time.
    atomic_replace(out_path, write)
    return ConversionReport(
        out_path=out_path,
        architecture="bert",
        dimensions=hidden,
        max_tokens=_max_tokens(source_dir, max_positions),
        pooling=pooling,
        tensor_count=len(tensors),
    )
