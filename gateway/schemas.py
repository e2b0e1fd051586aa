"""Request and response bodies of the original service's endpoints (field names kept for its clients)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Any printable name without "/" (it is a path segment in DELETE /collections/{name}); the limit keeps a
# name an identifier rather than a payload.
CollectionName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f/]+$")]
COLLECTION_DESCRIPTION = ("Also add the texts to this collection (a name of your choice, 1-200 printable "
                          "characters, no \"/\"), which search can be scoped to. A text may be in several collections; "
                          "its vector is computed once.")


class ModelChoice(BaseModel):
    """`model_name`, or the later spelling `llm_model_name`; the default model when neither is given."""

    model_config = ConfigDict(extra="ignore")
    model_name: str | None = Field(None, description="A name from /get_list_of_available_model_names/.")
    llm_model_name: str | None = Field(None, description="Accepted as a synonym of model_name.")

    def chosen_model(self, default: str) -> str:
        """The model the request names, under either spelling, else `default`."""
        return self.model_name or self.llm_model_name or default


class CollectionChoice(ModelChoice):
    """A request that embeds, with the optional collection its texts are added to."""

    collection: CollectionName | None = Field(None, description=COLLECTION_DESCRIPTION)


class EmbeddingRequest(CollectionChoice):
    """The body of POST /get_embedding_vector/: one text, and optionally the model to embed it with."""

    text: str = Field(..., description="The text to embed.", examples=["Hello world"])


class EmbeddingResponse(BaseModel):
    """The answer of POST /get_embedding_vector/: the text's vector, and whether it came from the cache."""

    embedding: list[float] = Field(..., description="L2-normalised embedding vector.")
    model: str
    dimensions: int
    cached: bool = Field(..., description="True when the vector came from the cache.")


class EmbeddingsRequest(CollectionChoice):
    """The body of POST /get_embedding_vectors/: at most MAX_BATCH_TEXTS texts to embed with one model."""

    texts: list[str] = Field(..., description="Texts to embed, in order.", examples=[["Hello", "world"]])


class EmbeddingsResponse(BaseModel):
    """The answer of POST /get_embedding_vectors/: one vector per text in input order, each flagged if cached."""

    embeddings: list[list[float]] = Field(..., description="One L2-normalised vector per text, in input order.")
    model: str
    dimensions: int
    cached: list[bool]


class ModelNamesResponse(BaseModel):
    """The answer of GET /get_list_of_available_model_names/: the models that requests accept."""

    model_names: list[str]


class StoredStringsResponse(BaseModel):
    """The answer of GET /get_all_stored_strings/: a page of the distinct texts stored, of every model."""

    strings: list[str]


class StoredDocumentsResponse(BaseModel):
    """The answer of GET /get_all_stored_documents_with_embeddings/: a page of the stored documents' file names."""

    documents: list[str] = Field(..., description="File names of the stored documents, in the order first stored.")


class DeleteStringRequest(BaseModel):
    """The body of DELETE /stored_strings/: the text whose stored vectors go, of one model or of every model."""

    model_config = ConfigDict(extra="forbid")  # a misspelt model_name must not widen a delete to every model
    text: str = Field(..., description="The stored text, exactly as it was embedded.")
    model_name: str | None = Field(None, description="Only this model's vector of it; every model's when absent.")


class DeletedResponse(BaseModel):
    """The answer of the DELETE endpoints: how many stored rows (one per text and model) went."""

    deleted_rows: int = Field(..., description=(
        "Rows removed from the store, the search indexes and the caches. A collection or document takes only "
        "the texts it leaves in no other collection or document."))
    models: list[str] = Field(..., description="The models whose rows went.")


class ErrorResponse(BaseModel):
    """The body of every error answer of the original endpoints: what went wrong, in `detail`."""

    detail: str | list[object]
