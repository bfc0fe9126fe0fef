"""One renderer for every error: ours, Litestar's and the unexpected, in the envelope of the
front door the request came by (OpenAI's, or Anthropic's under /v1/messages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from loguru import logger

from proxy.api.request_id import AnyRequest, request_id_of
from proxy.errors import (
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    ProxyError,
    RequestTooLargeError,
)
from proxy.formats.base import FrontDoor
from proxy.formats.chat import CHAT
from proxy.formats.messages import MESSAGES


def render(request: AnyRequest, error: ProxyError) -> Response[bytes]:
    """The error in the envelope of the front door the request came in by (OpenAI's for
    everything but Anthropic's Messages API)."""
    door: FrontDoor = request.scope.get("state", {}).get("door") or door_of_path(request.scope)
    headers = error.response_headers()
    headers.update(door.id_headers(request_id_of(request)))
    return Response(
        door.error_body(error),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )


def door_of_path(scope: Mapping[str, Any]) -> FrontDoor:
    """For an error before any handler ran (unknown path, wrong method, the header guard):
    the door whose paths it was sent to."""
    path = scope.get("path", "")
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return MESSAGES
    return CHAT


def proxy_error(request: AnyRequest, exc: ProxyError) -> Response[bytes]:
    return render(request, exc)


def http_error(request: AnyRequest, exc: HTTPException) -> Response[bytes]:
    error = _translate(request, exc)
    if isinstance(exc, MethodNotAllowedException) and exc.headers:
        error.headers.update(exc.headers)  # Allow: the methods this path takes (RFC 9110)
    return render(request, error)


def unexpected_error(request: AnyRequest, exc: Exception) -> Response[bytes]:
    logger.opt(exception=exc).error(
        "unhandled error on {} {} request_id={}",
        request.method,
        request.url.path[:200],  # client text: bounded in the log
        request_id_of(request),
    )
    return render(request, InternalError("The proxy failed to handle the request."))


def _translate(request: AnyRequest, exc: HTTPException) -> ProxyError:
    if isinstance(exc, NotFoundException):
        return NotFoundError(f"Unknown path: {request.method} {request.url.path}")
    if isinstance(exc, MethodNotAllowedException):
        method, path = request.method, request.url.path
        return MethodNotAllowedError(f"Method {method} is not allowed on {path}.")
    if exc.status_code == 413:
        return RequestTooLargeError("The request body is too large.")
    if isinstance(exc, ValidationException) or exc.status_code in (400, 422):
        return InvalidRequestError(str(exc.detail))
    error = ProxyError(str(exc.detail))
    error.status = exc.status_code
    error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error
