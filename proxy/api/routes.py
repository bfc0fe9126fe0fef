"""Handlers: decode, call the gateway, respond. Nothing else lives here."""

from __future__ import annotations

from typing import Any

from litestar import Response, get, post, route
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Stream

from proxy.api.openapi import openapi_document
from proxy.api.request_id import AnyRequest, read_headers
from proxy.api.sse import EVENT_STREAM, SSE_HEADERS
from proxy.errors import InvalidRequestError, RequestTooLargeError
from proxy.exchange import route_header
from proxy.formats.base import FrontDoor, door_credential
from proxy.formats.chat import CHAT
from proxy.formats.embeddings import EMBEDDINGS
from proxy.formats.messages import MESSAGES
from proxy.formats.messages.count import count_tokens
from proxy.formats.responses import RESPONSES
from proxy.formats.responses import endpoints as stored_responses
from proxy.gateway import Gateway
from proxy.observability.process_stats import process_stats
from proxy.wire import Model, ModelList

CACHE_CONTROL = frozenset({b"cache-control"})


async def serve(
    door: FrontDoor,
    request: AnyRequest,
    gateway: Gateway,
    authorization_header: bytes = b"authorization",
) -> Response[Any]:
    """One request through a front door: the key is checked before the body is read."""
    request.scope.setdefault("state", {})["door"] = door
    wanted = gateway.policy.rule_headers | CACHE_CONTROL | door.headers
    authorization, request_id, headers = read_headers(request, wanted)
    authorization = door_credential(door, authorization, headers)

    async def read_body() -> bytes:
        try:
            return await request.body()
        except HTTPException as exc:
            if exc.status_code == 413:
                raise RequestTooLargeError("The request body is too large.") from None
            raise InvalidRequestError(str(exc.detail)) from None

    result = await gateway.serve(door, authorization, request_id, headers, read_body)
    headers = {**result.headers, **door.id_headers(request_id)}
    if result.whole_stream is not None:
        headers.update(SSE_HEADERS)
        body = door.whole_frames(result.whole_stream)
        return Response(body, media_type=EVENT_STREAM, headers=headers)
    if result.stream is not None:
        headers.update(SSE_HEADERS)
        return Stream(door.frames(result.stream), media_type=EVENT_STREAM, headers=headers)
    return Response(result.body, media_type="application/json", headers=headers)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[Any]:
    return await serve(CHAT, request, gateway)


@post("/v1/embeddings", status_code=200)
async def embeddings(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[Any]:
    return await serve(EMBEDDINGS, request, gateway)


@post("/v1/messages", status_code=200)
async def messages(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[Any]:
    return await serve(MESSAGES, request, gateway)


@post("/v1/messages/count_tokens", status_code=200)
async def count_message_tokens(
    request: AnyRequest, gateway: NamedDependency[Gateway]
) -> Response[bytes]:
    request.scope.setdefault("state", {})["door"] = MESSAGES
    wanted = gateway.policy.rule_headers | MESSAGES.headers
    authorization, request_id, headers = read_headers(request, wanted)
    authorization = door_credential(MESSAGES, authorization, headers)
    counted = await count_tokens(gateway, authorization, request_id, headers, request.body)
    answer_headers = MESSAGES.id_headers(request_id)
    if counted.target is not None:
        answer_headers["x-llm-proxy-route"] = route_header(counted.target)
    return Response(counted.body, media_type="application/json", headers=answer_headers)


@post("/v1/responses", status_code=200)
async def create_response(request: AnyRequest, gateway: NamedDependency[Gateway]) -> Response[Any]:
    return await serve(RESPONSES, request, gateway)


@route("/v1/responses/{response_id:str}", http_method=["GET", "DELETE"], status_code=200)
async def stored_response(
    request: AnyRequest, gateway: NamedDependency[Gateway], response_id: FromPath[str]
) -> Response[bytes]:
    """GET and DELETE in one handler, so that Allow names both."""
    authorization, request_id, _ = read_headers(request)
    act = stored_responses.delete if request.method == "DELETE" else stored_responses.retrieve
    body = await act(gateway, authorization, response_id)
    return Response(body, media_type="application/json", headers={"x-request-id": request_id})


@get("/v1/responses/{response_id:str}/input_items")
async def list_input_items(
    request: AnyRequest, gateway: NamedDependency[Gateway], response_id: FromPath[str]
) -> Response[bytes]:
    authorization, request_id, _ = read_headers(request)
    query = {name: str(value) for name, value in request.query_params.items()}
    body = await stored_responses.input_items(gateway, authorization, response_id, query)
    return Response(body, media_type="application/json", headers={"x-request-id": request_id})


@get("/v1/models")
async def list_models(request: AnyRequest, gateway: NamedDependency[Gateway]) -> ModelList:
    authorization, _, _ = read_headers(request)
    return gateway.list_models(authorization)


@get("/v1/models/{model_id:path}")
async def get_model(
    request: AnyRequest, gateway: NamedDependency[Gateway], model_id: FromPath[str]
) -> Model:
    authorization, _, _ = read_headers(request)
    return gateway.get_model(authorization, model_id.lstrip("/"))


@get("/v1/proxy/keys/me")
async def my_key(request: AnyRequest, gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    authorization, _, _ = read_headers(request)
    return await gateway.key_usage(authorization)


@get("/health/liveness")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/readiness")
async def readiness(gateway: NamedDependency[Gateway]) -> Response[dict[str, str]]:
    if gateway.ready:
        return Response({"status": "ready"})
    reason = "draining" if gateway.draining else "starting"
    return Response({"status": "not ready", "reason": reason}, status_code=503)


@get("/health")
async def health(gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    return {**await gateway.health(), "process": process_stats()}


@get("/openapi.json", include_in_schema=False)
async def openapi(gateway: NamedDependency[Gateway]) -> dict[str, Any]:
    config = gateway.policy.config
    return openapi_document(config.metrics.path, bool(config.keys))


def metrics_handler(path: str) -> Any:
    @get(path, media_type="text/plain; version=0.0.4")
    async def metrics(gateway: NamedDependency[Gateway]) -> bytes:
        return gateway.metrics.exposition()

    return metrics


# POST paths served by the plain-ASGI hot path (proxy/api/fastpath.py) before Litestar; the
# handlers above stay for what the hot path does not take (CORS, tracing off the hot path)
FRONT_DOORS: dict[str, FrontDoor] = {
    "/v1/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/v1/embeddings": EMBEDDINGS,
    "/v1/messages": MESSAGES,
}

ROUTES = [
    chat_completions,
    embeddings,
    messages,
    count_message_tokens,
    create_response,
    stored_response,
    list_input_items,
    list_models,
    get_model,
    my_key,
    liveness,
    readiness,
    health,
    openapi,
]
