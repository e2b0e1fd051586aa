"""Inputs given as token ids (OpenAI's `input` as a list of ints): their cache key and their limits.

The ids are a text's tokens as the model's tokenizer gives them without special tokens (what
`tokenizer.encode(text, add_special_tokens=False)` returns); the worker adds the model's own ([CLS], [SEP])
as it does for a text, so the ids of a text embed to that text's vector.
"""

from __future__ import annotations

import hashlib

from gateway.errors import BadRequest
from shared.protocol import Ready

# Text hashes are bare hex digests, so no text can take a key with this prefix.
KEY_PREFIX = "token-ids:"
# The client that sends foreign ids in practice, and its fix: both error messages name them.
LANGCHAIN_HINT = "LangChain's OpenAIEmbeddings sends tiktoken ids unless check_embedding_ctx_length=False"
REFUSED = ("input holds token ids, and this service does not take them (ACCEPT_TOKEN_IDS=false): ids from another "
           "tokenizer would embed as some other text without any error. Send the texts instead; " + LANGCHAIN_HINT +
           ". POST /tokenize gives a text's ids in the model's own tokenizer, to count or truncate before sending.")


def token_ids_key(ids: list[int]) -> str:
    """The cache key of a token-id list: a digest of the ids, under a prefix no text hash can have."""
    return KEY_PREFIX + hashlib.sha3_256(",".join(map(str, ids)).encode("ascii")).hexdigest()


def check_token_ids(model: str, token_lists: list[list[int]], limits: Ready | None) -> None:
    """Raise BadRequest for ids a worker of `model` cannot embed.

    `limits` is the model's last READY; before any worker has registered the worker checks them instead
    (llama.cpp would read out of bounds on an id outside the vocabulary).
    """
    if limits is None:
        return
    if limits.vocab_size == 0:
        raise BadRequest(f"the workers of model {model!r} do not take token ids (an older version); send text")
    most = limits.max_tokens - limits.special_tokens
    for position, ids in enumerate(token_lists):
        if len(ids) > most:
            raise BadRequest(f"input[{position}] has {len(ids)} token ids; model {model!r} takes at most {most} "
                             f"({limits.max_tokens} tokens less the {limits.special_tokens} special tokens it adds)")
        if ids and (min(ids) < 0 or max(ids) >= limits.vocab_size):
            bad = next(i for i in ids if not 0 <= i < limits.vocab_size)
            raise BadRequest(f"input[{position}] holds token id {bad}, outside the vocabulary of {model!r} "
                             f"(0-{limits.vocab_size - 1}); token ids must come from this model's tokenizer "
                             f"(POST /tokenize gives them). {LANGCHAIN_HINT}")
