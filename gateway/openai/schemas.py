"""Request and response bodies of the OpenAI-compatible API, in OpenAI's field names and shapes."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from gateway.schemas import COLLECTION_DESCRIPTION, CollectionName

# Strict types: in lax mode pydantic would read "1" as a token id or true as 1.
EmbeddingInput = Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]


class OpenAIEmbeddingRequest(BaseModel):
    """The body of POST /v1/embeddings, as OpenAI's embeddings API takes it; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    input: EmbeddingInput = Field(..., description=(
        "A text, a list of texts, a list of token ids or a list of token-id lists. Token ids are a text's tokens "
        "from the model's tokenizer without special tokens (the model adds its own); texts longer than the "
        "model's max_tokens are truncated, token-id lists longer than that are rejected."),
        examples=["Hello world", ["Hello", "world"]])
    model: str = Field(..., description="A model id from GET /v1/models.", examples=["all-minilm-l6-v2"])
    encoding_format: Literal["float", "base64"] | None = Field(
        "float", description="float: a list of numbers; base64: the little-endian float32 bytes, base64-encoded.")
    dimensions: int | None = Field(None, ge=1, description=(
        "Keep the first N components and L2-normalise again (meaningful for Matryoshka-trained models; for "
        "others a plain projection). At most the model's dimensions."))
    user: str | None = Field(None, description="Accepted and ignored.")
    collection: CollectionName | None = Field(None, description=(
        "Not OpenAI's: " + COLLECTION_DESCRIPTION + " Text inputs only (token ids are not stored); OpenAI's "
        "clients send it as an extra body field (`extra_body={\"collection\": ...}` in the openai package)."))


class OpenAIEmbedding(BaseModel):
    """One input's vector in the answer of POST /v1/embeddings, at that input's `index`."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(..., description="L2-normalised vector, or its base64 float32 bytes.")


class OpenAIUsage(BaseModel):
    """The token counts of a POST /v1/embeddings answer (prompt and total are the same: nothing is generated)."""

    prompt_tokens: int = Field(..., description=(
        "Tokens of the inputs as the model counted them when it embedded them (with special tokens, after "
        "truncation). A vector read from SQLite that this gateway did not compute has no stored count and adds 0."))
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    """The answer of POST /v1/embeddings: one embedding per input, and the tokens they took."""

    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    """One served model as GET /v1/models lists it."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(..., description="Unknown here: always 0.")
    owned_by: str


class OpenAIModelList(BaseModel):
    """The answer of GET /v1/models: every model this gateway serves."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class OpenAIErrorDetail(BaseModel):
    """What went wrong, in the fields of OpenAI's errors."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    """The body of every error answer of the OpenAI-compatible routes."""

    error: OpenAIErrorDetail


class TokenizeRequest(BaseModel):
    """The body of POST /tokenize (as llama-server's and TEI's): texts to split into the model's own token ids."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field(..., description="A model id from GET /v1/models.", examples=["all-minilm-l6-v2"])
    input: Union[StrictStr, list[StrictStr]] = Field(..., description="A text or a list of texts.",
                                                     examples=["Hello world"])
    add_special_tokens: bool = Field(True, description=(
        "With the special tokens the model adds when it embeds ([CLS] and [SEP] for BERT, BOS for Llama). "
        "Token-id inputs of /v1/embeddings take the ids without them."))


class TokenizedText(BaseModel):
    """One text's tokens as POST /tokenize answers them, at that text's `index`."""

    index: int
    tokens: list[int] = Field(..., description="The token ids, untruncated.")
    count: int = Field(..., description="How many: more than max_tokens means /v1/embeddings truncates the text.")


class TokenizeResponse(BaseModel):
    """The answer of POST /tokenize: each text's token ids in the model's tokenizer, and how many the model takes."""

    object: Literal["list"] = "list"
    data: list[TokenizedText]
    model: str
    max_tokens: int = Field(..., description="The most tokens the model embeds of one text, special tokens included.")
