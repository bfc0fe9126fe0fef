"""The Responses API's paths in the proxy's OpenAPI document: the request as the door checks it
(every other field passes through to native upstreams), the response object, the stored
responses' endpoints."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.formats.responses.inputs import MESSAGE_ROLES
from proxy.formats.responses.wire import ResponseObject, ResponsesHead

REF = "#/components/schemas/{name}"
ERROR_STATUSES = ("400", "401", "403", "404", "413", "429", "502", "503", "504")
Security = list[dict[str, list[str]]]

_STRING = {"type": "string"}
_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"enum": ["input_text", "output_text"]}, "text": _STRING},
    "required": ["type", "text"],
}
_ITEMS: dict[str, Any] = {
    "description": "A message (role and content) or a function call",
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "type": {"const": "message"},
                "role": {"enum": sorted(MESSAGE_ROLES)},
                "content": {"anyOf": [_STRING, {"type": "array", "items": _TEXT_PART}]},
            },
            "required": ["role", "content"],
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "function_call"},
                "call_id": _STRING,
                "name": _STRING,
                "arguments": _STRING,
            },
            "required": ["type", "call_id", "name", "arguments"],
        },
    ],
}
_TOOL = {
    "type": "object",
    "properties": {"type": {"const": "function"}, "name": {"type": "string", "minLength": 1}},
    "required": ["type", "name"],
}
_TOOL_CHOICE = {
    "anyOf": [
        {"enum": ["auto", "none", "required"]},
        {
            "type": "object",
            "properties": {"type": {"const": "function"}, "name": _STRING},
            "required": ["type", "name"],
        },
    ]
}
_FORMAT = {
    "anyOf": [
        {"type": "null"},
        {
            "type": "object",
            "properties": {"type": {"enum": ["text", "json_object"]}},
            "required": ["type"],
        },
        {
            "type": "object",
            "properties": {"type": {"const": "json_schema"}, "name": _STRING},
            "required": ["type", "name"],
        },
    ]
}
# what only a route that speaks the Responses API takes (the document describes what every
# route takes): left to pass through
NATIVE_ONLY = ("previous_response_id", "conversation", "prompt")


def responses_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ResponsesHead, ResponseObject], ref_template=REF
    )
    head = components["ResponsesHead"]
    properties = head["properties"]
    properties["input"] = {"anyOf": [_STRING, {"type": "array", "items": _ITEMS}]}
    properties["tools"] = {"type": "array", "items": _TOOL}
    properties["tool_choice"] = _TOOL_CHOICE
    properties["text"] = {"type": "object", "properties": {"format": _FORMAT}}
    properties["background"] = {"enum": [False, None]}
    for name in NATIVE_ONLY:
        properties.pop(name)
    head["additionalProperties"] = True  # Responses API fields pass through
    components.pop("TextConfig", None)
    return dict(components)


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(name=name)}}}


def _response_id() -> dict[str, Any]:
    return {"name": "response_id", "in": "path", "required": True, "schema": _STRING}


def responses_paths(bearer: Security, errors: dict[str, Any]) -> dict[str, Any]:
    """The path items; `errors` are the document's error responses by status."""
    streamed = {"text/event-stream": {"schema": _STRING}}
    answer = {
        "description": "A response object, or with stream: true its events",
        "content": {**_json("ResponseObject"), **streamed},
    }
    stored = {"description": "The stored response", "content": _json("ResponseObject")}
    deleted = {
        "description": "Deleted",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    listed = {
        "description": "Its input items",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    known = {status: errors[status] for status in ("400", "401", "404")}
    read = {"security": bearer, "parameters": [_response_id()]}
    return {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "security": bearer,
                "requestBody": {"required": True, "content": _json("ResponsesHead")},
                "responses": {"200": answer, **{s: errors[s] for s in ERROR_STATUSES}},
            }
        },
        "/v1/responses/{response_id}": {
            "get": {"operationId": "getResponse", **read, "responses": {"200": stored, **known}},
            "delete": {
                "operationId": "deleteResponse",
                **read,
                "responses": {"200": deleted, **known},
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {"operationId": "listInputItems", **read, "responses": {"200": listed, **known}},
        },
    }
