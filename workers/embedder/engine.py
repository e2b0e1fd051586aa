"""llama-cpp-python behind three calls: tokenize, embed a group of token lists, describe the model.

We drive llama.cpp's batch API ourselves rather than `Llama.embed` because that re-tokenises inside the
inference loop, cuts groups by its own batch size, and returns Python float lists; here tokenising happens
before grouping and vectors come back as one float32 array.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaBatch

from modelstore.catalogue import Pooling

_POOLING = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    pooling: Pooling
    max_tokens: int
    threads: int
    token_budget: int
    flash_attention: bool = False


class Engine:
    """One loaded model. Not thread-safe: the worker's compute thread owns it."""

    def __init__(self, config: EngineConfig) -> None:
        self.max_tokens = config.max_tokens
        # One llama.cpp call must hold the longest single input whole: non-causal models need a
        # sequence in one micro-batch.
        self.batch_tokens = max(config.token_budget, config.max_tokens)
        # n_threads and n_threads_batch both set: left at defaults, two workers ran 40x slower than one.
        self._llm = llama_cpp.Llama(
            model_path=config.model_path,
            embedding=True,
            n_ctx=self.batch_tokens,
            n_batch=self.batch_tokens,
            n_ubatch=self.batch_tokens,
            n_threads=config.threads,
            n_threads_batch=config.threads,
            pooling_type=_POOLING[config.pooling],
            use_mmap=True,
            flash_attn=config.flash_attention,
            verbose=False,
        )
        self.dimensions = self._llm.n_embd()
        self.max_sequences = int(self._llm.context_params.n_seq_max)
        self._batch = LlamaBatch(n_tokens=self.batch_tokens, embd=0, n_seq_max=self.max_sequences, verbose=False)
        self._adds_eos = bool(llama_cpp.llama_vocab_get_add_eos(self._llm._model.vocab))
        self._eos = int(self._llm.token_eos())
        self._bos = int(self._llm.token_bos())
        self.vocab_size = int(self._llm.n_vocab())
        # What tokenize() puts around a text's own tokens ([CLS] ... [SEP] for BERT, nothing for SmolLM2),
        # learnt from the tokenizer itself rather than from flags whose meaning varies by architecture.
        content = self._llm.tokenize(b"a", add_bos=False, special=False)
        framed = self._llm.tokenize(b"a", add_bos=True, special=False)
        start = next(i for i in range(len(framed)) if framed[i:i + len(content)] == content)
        self._prefix, self._suffix = framed[:start], framed[start + len(content):]
        self.special_tokens = len(self._prefix) + len(self._suffix)

    def tokenize(self, text: str) -> list[int]:
        """Token ids, truncated to max_tokens. A model that ends every input with a separator keeps it."""
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        if not tokens:
            # A decoder without BOS gives nothing for "": embed the BOS token so that "" still has a vector.
            tokens = [self._bos if self._bos >= 0 else self._eos]
        if len(tokens) > self.max_tokens:
            tokens = tokens[: self.max_tokens - 1] + [tokens[-1]] if self._adds_eos else tokens[: self.max_tokens]
        return tokens

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
        context = self._llm._ctx
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
        self._batch.close()
        self._llm.close()
