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
_DROPPED_BLOCKS = ["thinking", "redacted_thinking"]  # left out when translated


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _array(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": {"anyOf": list(items)}}


def _content(description: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "anyOf": [{"type": "string"}, _array(*blocks)]}


# What every route takes, translated ones included; other blocks, image sources and tool
# result contents pass through to native routes only, and a translated one answers 400.
_TEXT = _object(["type", "text"], type={"const": "text"}, text={"type": "string"})
_SOURCE = {
    "anyOf": [
        _object(
            ["type", "media_type", "data"],
            type={"const": "base64"},
            media_type={"type": "string", "minLength": 1},
            data={"type": "string"},
        ),
        _object(["type", "url"], type={"const": "url"}, url={"type": "string", "minLength": 1}),
    ]
}
_IMAGE = _object(["type", "source"], type={"const": "image"}, source=_SOURCE)
_DROPPED = _object(["type"], type={"enum": _DROPPED_BLOCKS})
_RESULT = _object(
    ["type", "tool_use_id"],
    type={"const": "tool_result"},
    tool_use_id={"type": "string"},
    content={"anyOf": [{"type": "string"}, _array(_TEXT)]},
    is_error={"type": "boolean"},
)
_USE = _object(
    ["type", "id", "name", "input"],
    type={"const": "tool_use"},
    id={"type": "string"},
    name={"type": "string"},
    input={"type": "object"},
)
_USER = _content("A text, or text, image and tool_result blocks", _TEXT, _IMAGE, _RESULT, _DROPPED)
_ASSISTANT = _content("A text, or text and tool_use blocks", _TEXT, _USE, _DROPPED)
MESSAGE_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _object(["role", "content"], role={"const": "user"}, content=_USER),
        _object(["role", "content"], role={"const": "assistant"}, content=_ASSISTANT),
    ]
}


def messages_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [MessagesHead, AssistantMessage, TokenCount, ErrorEvent], ref_template=REF
    )
    components["MessageParam"] = MESSAGE_SCHEMA
    head = components["MessagesHead"]
    head["additionalProperties"] = True  # Anthropic's other fields pass through
    tool = components["ToolParam"]  # a client tool, which every route takes (server tools:
    tool["properties"]["input_schema"] = {"type": "object"}  # native routes only)
    tool["properties"]["type"] = {"const": "custom"}
    tool["required"] = ["input_schema", "name"]
    choice = components["ToolChoiceParam"]  # {"type": "tool"} names the tool
    choice["if"] = {"properties": {"type": {"const": "tool"}}, "required": ["type"]}
    choice["then"] = {"required": ["name"], "properties": {"name": {"type": "string"}}}
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
