"""The worker's own HTTP helpers: the request id, errors in OpenAI's envelope, SSE framing.

The worker is a process of its own and imports none of the proxy's gateway or HTTP shell;
these few helpers mirror what the proxy's shell does, for one model and no policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from loguru import logger

from proxy.errors import (
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ProxyError,
    RequestTooLargeError,
)
from proxy.ids import request_id_from

AnyRequest = Request[Any, Any, Any]
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def request_id_of(request: AnyRequest) -> str:
    state = request.scope.setdefault("state", {})
    request_id: str | None = state.get("request_id")
    if request_id is None:
        request_id = state["request_id"] = request_id_from(request.headers.get("x-request-id"))
    return request_id


def render(request: AnyRequest, error: ProxyError) -> Response[bytes]:
    headers = error.response_headers()
    headers["x-request-id"] = request_id_of(request)
    return Response(
        error.body(), status_code=error.status, media_type="application/json", headers=headers
    )


def proxy_error(request: AnyRequest, exc: ProxyError) -> Response[bytes]:
    return render(request, exc)


def http_error(request: AnyRequest, exc: HTTPException) -> Response[bytes]:
    method, path = request.method, request.url.path
    error: ProxyError
    if isinstance(exc, NotFoundException):
        error = NotFoundError(f"Unknown path: {method} {path}")
    elif isinstance(exc, MethodNotAllowedException):
        error = MethodNotAllowedError(f"Method {method} is not allowed on {path}.")
    elif exc.status_code == 413:
        error = RequestTooLargeError("The request body is too large.")
    elif exc.status_code in (400, 422):
        error = InvalidRequestError(str(exc.detail))
    else:
        error = ProxyError(str(exc.detail))
        error.status = exc.status_code
        error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return render(request, error)


def unexpected_error(request: AnyRequest, exc: Exception) -> Response[bytes]:
    logger.opt(exception=exc).error(
        "unhandled error on {} {} request_id={}",
        request.method,
        request.url.path,
        request_id_of(request),
    )
    return render(request, InternalError("The worker failed to handle the request."))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ProxyError: proxy_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}


async def sse_frames(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
    """One write per batch of events; a failure after the first byte is sent in-band, then
    [DONE], since the status can no longer change."""
    try:
        async for batch in batches:
            yield b"".join([b"data: " + payload + b"\n\n" for payload in batch])
    except ProxyError as exc:
        yield b"data: " + exc.body() + b"\n\n"
    except Exception:
        logger.exception("stream failed")
        yield b"data: " + InternalError("The stream failed inside the worker.").body() + b"\n\n"
    yield DONE
