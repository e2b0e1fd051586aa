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
            raise BadRequest(f"input[{position}] has token id {bad}, outside the vocabulary of model {model!r} "
                             f"(0 to {limits.vocab_size - 1})")
