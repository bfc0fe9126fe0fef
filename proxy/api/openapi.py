"""The OpenAPI document (GET /openapi.json), generated from the same msgspec Structs the
proxy decodes and encodes with, so it describes the real bodies. The request schema holds
what the proxy itself validates; every other OpenAI field passes through to the upstream."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

import proxy
from proxy.errors import ErrorEnvelope
from proxy.formats.embeddings.openapi import ERROR_STATUSES as EMBEDDINGS_ERRORS
from proxy.formats.embeddings.openapi import embeddings_path, embeddings_schemas
from proxy.formats.messages.openapi import messages_paths, messages_schemas
from proxy.formats.responses.openapi import ERROR_STATUSES as RESPONSES_ERRORS
from proxy.formats.responses.openapi import responses_paths, responses_schemas
from proxy.wire import ChatCompletion, ChatRequestHead, Model, ModelList

REF = "#/components/schemas/{name}"
ERROR_STATUSES = {
    "400": "Invalid request (param names the field)",
    "401": "Missing or unknown client key",
    "403": "The key may not use this model",
    "404": "Unknown model or path",
    "413": "Body too large",
    "429": "A limit was hit (retry-after), or a budget is spent (insufficient_quota)",
    "502": "The upstream failed or refused the proxy's credentials",
    "503": "No usable route, or the upstream is not configured",
    "504": "The upstream timed out",
}


# OpenAPI 3.1 reads the schema of a text/event-stream answer as the schema of one event (3.2
# calls it itemSchema): its fields as a client's SSE parser hands them over, `data` the payload.
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def _events_described(paths: dict[str, Any]) -> dict[str, Any]:
    """Every event stream of every door described as a stream of SSE events."""
    for item in paths.values():
        for operation in item.values():
            for answer in operation.get("responses", {}).values():
                streamed = answer.get("content", {}).get("text/event-stream")
                if streamed is not None:
                    streamed["schema"] = SSE_EVENT
    return paths


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _json(kind: type) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(kind)}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {"description": ERROR_STATUSES[status], "content": _json(ErrorEnvelope)}
        for status in statuses
    }


Security = list[dict[str, list[str]]]


@cache
def openapi_document(metrics_path: str = "/metrics", keys: bool = False) -> dict[str, Any]:
    """With client keys configured, the /v1 routes need a bearer key; without, the proxy
    is open and says so."""
    bearer: Security = [{"bearer": []}] if keys else []
    paths: dict[str, Any] = {
        "/v1/chat/completions": _chat_completions(bearer),
        "/v1/embeddings": embeddings_path(bearer, _errors(*EMBEDDINGS_ERRORS)),
        **messages_paths(bearer),
        **responses_paths(bearer, _errors(*RESPONSES_ERRORS)),
        "/v1/models": _list_models(bearer),
        "/v1/models/{model}": _retrieve_model(bearer),
        "/health/liveness": _health("liveness"),
        "/health/readiness": _health("readiness", {"503": {"description": "Not ready"}}),
        "/health": _health("health"),
        metrics_path: _metrics(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-proxy", "version": proxy.__version__},
        "paths": _events_described(paths),
        "components": {
            "schemas": {
                **_schemas(),
                **embeddings_schemas(),
                **messages_schemas(),
                **responses_schemas(),
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ChatRequestHead, ChatCompletion, ModelList, Model, ErrorEnvelope], ref_template=REF
    )
    head = components["ChatRequestHead"]
    head["additionalProperties"] = True  # OpenAI fields pass through
    head["if"] = {  # as OpenAI: stream_options only with stream: true
        "required": ["stream_options"],
        "properties": {"stream_options": {"type": "object"}},
    }
    head["then"] = {"required": ["stream"], "properties": {"stream": {"const": True}}}
    return components


def _chat_completions(bearer: Security) -> dict[str, Any]:
    streamed = {"text/event-stream": {"schema": {"type": "string"}}}
    answer = {
        "description": "A chat.completion, or with stream: true an event stream",
        "content": {**_json(ChatCompletion), **streamed},
    }
    return {
        "post": {
            "operationId": "createChatCompletion",
            "security": bearer,
            "requestBody": {"required": True, "content": _json(ChatRequestHead)},
            "responses": {
                "200": answer,
                **_errors("400", "401", "403", "404", "413", "429", "502", "503", "504"),
            },
        }
    }


def _list_models(bearer: Security) -> dict[str, Any]:
    return {
        "get": {
            "operationId": "listModels",
            "security": bearer,
            "responses": {
                "200": {"description": "Models", "content": _json(ModelList)},
                **_errors("401"),
            },
        }
    }


def _retrieve_model(bearer: Security) -> dict[str, Any]:
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "get": {
            "operationId": "retrieveModel",
            "security": bearer,
            "parameters": [model],
            "responses": {
                "200": {"description": "A model", "content": _json(Model)},
                **_errors("401", "404"),
            },
        }
    }


def _health(operation_id: str, more: dict[str, Any] | None = None) -> dict[str, Any]:
    ok = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {"get": {"operationId": operation_id, "responses": {"200": ok, **(more or {})}}}


def _metrics() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    answer = {"description": "Prometheus text", "content": text}
    return {"get": {"operationId": "metrics", "responses": {"200": answer}}}
