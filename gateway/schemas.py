"""Request and response bodies of the original service's endpoints (field names kept for its clients)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelChoice(BaseModel):
    """`model_name`, or the later spelling `llm_model_name`; the default model when neither is given."""

    model_config = ConfigDict(extra="ignore")
    model_name: str | None = Field(None, description="A name from /get_list_of_available_model_names/.")
    llm_model_name: str | None = Field(None, description="Accepted as a synonym of model_name.")

    def chosen_model(self, default: str) -> str:
        return self.model_name or self.llm_model_name or default


class EmbeddingRequest(ModelChoice):
    text: str = Field(..., description="The text to embed.", examples=["Hello world"])


class EmbeddingResponse(BaseModel):
    embedding: list[float] = Field(..., description="L2-normalised embedding vector.")
    model: str
    dimensions: int
    cached: bool = Field(..., description="True when the vector came from the cache.")


class EmbeddingsRequest(ModelChoice):
    texts: list[str] = Field(..., description="Texts to embed, in order.", examples=[["Hello", "world"]])


class EmbeddingsResponse(BaseModel):
    embeddings: list[list[float]] = Field(..., description="One L2-normalised vector per text, in input order.")
    model: str
    dimensions: int
    cached: list[bool]


class ModelNamesResponse(BaseModel):
    model_names: list[str]


class StoredStringsResponse(BaseModel):
    strings: list[str]


class StoredDocumentsResponse(BaseModel):
    documents: list[str] = Field(..., description="File names of the stored documents, in the order first stored.")


class ErrorResponse(BaseModel):
    detail: str | list[object]
