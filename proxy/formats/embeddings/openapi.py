"""`/v1/embeddings` in the proxy's OpenAPI document: the request as the door validates it
(every other field passes through to the upstream) and the answer's shape."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.formats.embeddings.inputs import MAX_INPUTS, MAX_TOKEN_ID
from proxy.formats.embeddings.wire import EmbeddingList, EmbeddingsHead

REF = "#/components/schemas/{name}"
ERROR_STATUSES = ("400", "401", "403", "404", "413", "429", "502", "503", "504")

_TEXT = {"type": "string", "minLength": 1}
_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}
_TOKENS = {"type": "array", "items": _TOKEN_ID, "minItems": 1}
INPUT_SCHEMA: dict[str, Any] = {
    "description": "A text, a list of texts, an array of token ids, or a list of such arrays",
    "oneOf": [
        _TEXT,
        {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": MAX_INPUTS},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1, "maxItems": MAX_INPUTS},
    ],
}


def embeddings_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [EmbeddingsHead, EmbeddingList], ref_template=REF
    )
    head = components["EmbeddingsHead"]
    head["properties"]["input"] = INPUT_SCHEMA
    head["additionalProperties"] = True  # OpenAI fields pass through
    return dict(components)


def embeddings_path(bearer: list[dict[str, list[str]]], errors: dict[str, Any]) -> dict[str, Any]:
    """The path item; `errors` are the document's error responses by status."""
    answer = {
        "description": "The embeddings, in input order",
        "content": {"application/json": {"schema": {"$ref": REF.format(name="EmbeddingList")}}},
    }
    body = {"application/json": {"schema": {"$ref": REF.format(name="EmbeddingsHead")}}}
    return {
        "post": {
            "operationId": "createEmbedding",
            "security": bearer,
            "requestBody": {"required": True, "content": body},
            "responses": {"200": answer, **errors},
        }
    }
