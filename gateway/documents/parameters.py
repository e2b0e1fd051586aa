"""What a document upload asks for besides the file, read one way for the synchronous endpoint and for jobs.

Every choice may come as a query parameter or as a form field of the upload; the query wins. A new choice (a
collection, say) is a field of `DocumentParameters`: it is then read from both places, validated, kept in a
job's state file and listed in the OpenAPI form of both endpoints, with no other change here.
"""

from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field

from gateway.documents.packaging import ORIENTS, parse_orient
from gateway.embedding_service import EmbeddingService
from gateway.schemas import COLLECTION_DESCRIPTION, CollectionName
from gateway.validation import validate

MODEL_SYNONYM = "llm_model_name"  # the original service's name for model_name, accepted as well


class DocumentParameters(BaseModel):
    """The choices of one document upload, checked: the model that embeds it and the orient of the answer's JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model_name: str = Field(..., description="A name from /get_list_of_available_model_names/ (default "
                                             "DEFAULT_MODEL_NAME; llm_model_name is accepted too).")
    json_format: str = Field(..., description=f"A pandas to_json orient: {', '.join(ORIENTS)} (default records).")
    collection: CollectionName | None = Field(default=None, description=COLLECTION_DESCRIPTION)


FORM_FIELDS = (*DocumentParameters.model_fields, MODEL_SYNONYM)


def check_query(query: Mapping[str, str], embeddings: EmbeddingService) -> None:
    """What the query names, checked before the upload is read, so that a bad name costs the client nothing."""
    if "json_format" in query:
        parse_orient(query["json_format"])
    if query.get("model_name") or query.get(MODEL_SYNONYM):
        embeddings.check_model(query.get("model_name") or query[MODEL_SYNONYM])


def read_parameters(query: Mapping[str, str], form: Mapping[str, str], embeddings: EmbeddingService,
                    default_model: str) -> DocumentParameters:
    """The upload's choices from its query and form fields (the query wins); BadRequest (422) for a bad one."""
    chosen = {name: query.get(name) or form.get(name) for name in FORM_FIELDS}
    model = embeddings.check_model(chosen.pop("model_name") or chosen.pop(MODEL_SYNONYM) or default_model)
    chosen.pop(MODEL_SYNONYM, None)
    orient = parse_orient(chosen.pop("json_format"))
    others = {name: value for name, value in chosen.items() if value}
    return validate(DocumentParameters, {**others, "model_name": model, "json_format": orient})
