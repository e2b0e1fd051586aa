"""llama-cpp-python behind a few calls: tokenize, embed a group of token lists, describe the model.

We drive llama.cpp's batch API ourselves rather than `Llama.embed` because that re-tokenises inside the
inference loop, cuts groups by its own batch size, and returns Python float lists; here tokenising happens
before grouping and vectors come back as one float32 array.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaModel
from llama_cpp._logger import set_verbose

from modelstore.catalogue import Pooling

_POOLING = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}


@dataclass(frozen=True)
class EngineConfig:
    """How a worker loads its model into llama.cpp: the file, pooling, token limits, threads and CPU options."""

    model_path: str
    pooling: Pooling
    max_tokens: int
    threads: int
    token_budget: int
    flash_attention: bool = False
    # llama.cpp's "extra buffer types": weights repacked at load for the CPU's fastest kernels (AVX-512, AMX).
    # Off is llama-server's --no-repack; on AMX CPUs the repacked quantized kernels segfault (see canary.py).
    weight_repack: bool = True
    # Test only (TEST_ENGINE_CRASH, see canary.crash_requested): a real segfault at the first embed, as the AMX
    # kernel gives, so the canary, the fallback and the supervisor's backoff are proven on any CPU.
    crash_on_embed: bool = False
    # llama.cpp's context (KV cells) when it should differ from one call's tokens (0: the call's). Benchmarks
    # sweep it (benchmarks/throughput.py); the worker leaves it at 0.
    context_tokens: int = 0


class Engine:
    """One loaded model. Not thread-safe: the worker's compute thread owns it."""

    def __init__(self, config: EngineConfig) -> None:
        self.max_tokens = config.max_tokens
        self._crash_on_embed = config.crash_on_embed
        # One llama.cpp call must hold the longest single input whole: non-causal models need a
        # sequence in one micro-batch.
        self.batch_tokens = max(config.token_budget, config.max_tokens)
        # The model and context are made from llama-cpp-python's internals rather than `Llama`, which sets no
        # `use_extra_bufts` (weight repacking) and allocates sampling state an embedder never uses.
        llama_cpp.llama_backend_init()
        set_verbose(False)  # llama.cpp's load and context logs to errors only, as Llama(verbose=False) does
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        model_params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        model_params.use_extra_bufts = config.weight_repack
        self._model = LlamaModel(path_model=config.model_path, params=model_params, verbose=False)
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_batch = context_params.n_ubatch = self.batch_tokens
        context_params.n_ctx = max(config.context_tokens, self.batch_tokens)
        # n_threads and n_threads_batch both set: left at defaults, two workers ran 40x slower than one.
        context_params.n_threads = context_params.n_threads_batch = config.threads
        context_params.embeddings = True
        context_params.pooling_type = _POOLING[config.pooling]
        context_params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attention
                                          else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        # As `Llama(embedding=True)`: one sequence per text of a call, in one unified KV buffer.
        context_params.n_seq_max = min(self.batch_tokens, llama_cpp.llama_max_parallel_sequences())
        context_params.kv_unified = True
        try:
            self._context = LlamaContext(model=self._model, params=context_params, verbose=False)
        except Exception:
            self._model.close()
            raise
        self.dimensions = self._model.n_embd()
        self.max_sequences = int(context_params.n_seq_max)
        self._batch = LlamaBatch(n_tokens=self.batch_tokens, embd=0, n_seq_max=self.max_sequences, verbose=False)
        self._adds_eos = bool(llama_cpp.llama_vocab_get_add_eos(self._model.vocab))
        self._eos = int(self._model.token_eos())
        self._bos = int(self._model.token_bos())
        self.vocab_size = int(self._model.n_vocab())
        # What tokenize() puts around a text's own tokens ([CLS] ... [SEP] for BERT, nothing for SmolLM2),
        # learnt from the tokenizer itself rather than from flags whose meaning varies by architecture.
        content = self._model.tokenize(b"a", add_bos=False, special=False)
        framed = self._model.tokenize(b"a", add_bos=True, special=False)
        start = next(i for i in range(len(framed)) if framed[i:i + len(content)] == content)
        self._prefix, self._suffix = framed[:start], framed[start + len(content):]
        self.special_tokens = len(self._prefix) + len(self._suffix)

    def tokenize(self, text: str) -> list[int]:
        """Token ids, truncated to max_tokens. A model that ends every input with a separator keeps it."""
        tokens = self._model.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if not tokens:
            # A decoder without BOS gives nothing for "": embed the BOS token so that "" still has a vector.
            tokens = [self._bos if self._bos >= 0 else self._eos]
        if len(tokens) > self.max_tokens:
            tokens = tokens[: self.max_tokens - 1] + [tokens[-1]] if self._adds_eos else tokens[: self.max_tokens]
        return tokens

    def token_ids(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """The text's tokens as the model's tokenizer gives them, untruncated (POST /tokenize): with the special
        tokens the model adds when it embeds ([CLS], [SEP] for BERT) or without, as token-id inputs take them."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=False))

    def frame_token_ids(self, ids: list[int]) -> list[int]:
        """A client's token ids (a text's tokens without special tokens) framed as tokenize() frames a text.

        Raises ValueError for an id outside the vocabulary (llama.cpp would read out of bounds) or for more
        ids than fit in max_tokens with the special tokens.
        """
        for id_ in ids:
            if not 0 <= id_ < self.vocab_size:
                raise ValueError(f"token id {id_} is outside the vocabulary of {self.vocab_size}")
        if len(ids) > self.max_tokens - self.special_tokens:
            raise ValueError(f"{len(ids)} token ids; at most {self.max_tokens - self.special_tokens} fit")
        tokens = [*self._prefix, *ids, *self._suffix]
        return tokens or [self._bos if self._bos >= 0 else self._eos]

    def embed(self, sequences: list[list[int]]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per sequence, in one llama.cpp call."""
        if self._crash_on_embed:
            ctypes.string_at(0)  # reads address 0: a real SIGSEGV in native code
        context = self._context
        self._batch.reset()
        for seq_id, tokens in enumerate(sequences):
            self._batch.add_sequence(tokens, seq_id, True)
        context.kv_cache_clear()
        context.decode(self._batch)
        out = np.empty((len(sequences), self.dimensions), dtype=np.float32)
        for seq_id in range(len(sequences)):
            pointer = llama_cpp.llama_get_embeddings_seq(context.ctx, seq_id)
            out[seq_id] = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (self.dimensions,))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def close(self) -> None:
        """Free the batch, the context and the model; the engine cannot be used afterwards."""
        self._batch.close()
        self._context.close()
        self._model.close()
