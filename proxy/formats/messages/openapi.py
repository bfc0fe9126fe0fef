"""`/v1/messages` and `/v1/messages/count_tokens` in the proxy's OpenAPI document: the request
as the door validates it (every other field passes through to a native route), the message
and the count it answers, and Anthropic's error envelope.

Clients of the Messages API may send their key in `x-api-key` instead of a bearer token; the
document names the bearer form, which the current Anthropic SDKs send."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.formats.messages.count import TokenCount
from proxy.formats.messages.wire import AssistantMessage, ErrorEvent, MessagesHead

REF = "#/components/schemas/{name}"
ERROR_STATUSES = {
    "400": "Invalid request (invalid_request_error)",
    "401": "Missing or unknown client key (authentication_error)",
    "403": "The key may not use this model (permission_error)",
    "404": "Unknown model (not_found_error)",
    "413": "Body too large (request_too_large)",
    "429": "A limit was hit, retry-after says when (rate_limit_error)",
    "502": "The upstream failed or refused the proxy's credentials (api_error)",
    "503": "No usable route, or the upstream is not configured (overloaded_error)",
    "504": "The upstream timed out (api_error)",
}
_KNOWN_BLOCKS = ["text", "image", "tool_use", "tool_result"]


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _array(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"anyOf": list(items)}}


_TEXT = _object(["type", "text"], type={"const": "text"}, text={"type": "string"})
_SOURCE = _object(
    ["type"],
    type={"type": "string"},
    media_type={"type": "string"},
    data={"type": "string"},
    url={"type": "string"},
)
_IMAGE = _object(["type", "source"], type={"const": "image"}, source=_SOURCE)
_OTHER = _object(["type"], type={"type": "string", "not": {"enum": _KNOWN_BLOCKS}})
_RESULT = _object(
    ["type", "tool_use_id"],
    type={"const": "tool_result"},
    tool_use_id={"type": "string"},
    content={"anyOf": [{"type": "string"}, _array(_TEXT, _IMAGE, _OTHER)]},
    is_error={"type": "boolean"},
)
_USE = _object(
    ["type", "id", "name", "input"],
    type={"const": "tool_use"},
    id={"type": "string"},
    name={"type": "string"},
    input={"type": "object"},
)
CONTENT_SCHEMA: dict[str, Any] = {
    "description": "A text, or content blocks (other block types pass through to native routes)",
    "anyOf": [
        {"type": "string"},
        _array(_TEXT, _IMAGE, _USE, _RESULT, _OTHER),
    ],
}


def messages_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [MessagesHead, AssistantMessage, TokenCount, ErrorEvent], ref_template=REF
    )
    components["MessageParam"]["properties"]["content"] = CONTENT_SCHEMA
    head = components["MessagesHead"]
    head["additionalProperties"] = True  # Anthropic's other fields pass through
    components["MessagesRequest"] = {  # /v1/messages needs max_tokens, count_tokens does not
        **head,
        "properties": {**head["properties"], "max_tokens": {"type": "integer", "minimum": 1}},
        "required": sorted({*head.get("required", []), "max_tokens"}),
    }
    return dict(components)


def messages_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    streamed = {"text/event-stream": {"schema": {"type": "string"}}}
    message = {
        "description": "A message, or with stream: true Anthropic's event stream",
        "content": {**_json("AssistantMessage"), **streamed},
    }
    count = {"description": "The input tokens of the request", "content": _json("TokenCount")}
    return {
        "/v1/messages": _post("createMessage", bearer, "MessagesRequest", message),
        "/v1/messages/count_tokens": _post("countMessageTokens", bearer, "MessagesHead", count),
    }


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(name=name)}}}


def _post(
    operation: str, bearer: list[dict[str, list[str]]], request: str, answer: dict[str, Any]
) -> dict[str, Any]:
    errors = {
        status: {"description": description, "content": _json("ErrorEvent")}
        for status, description in ERROR_STATUSES.items()
    }
    return {
        "post": {
            "operationId": operation,
            "security": bearer,
            "requestBody": {"required": True, "content": _json(request)},
            "responses": {"200": answer, **errors},
        }
    }
