"""Request headers the handlers need, read in one pass over the raw ASGI headers (Litestar's
`request.headers` parses them all), and the request id: the client's `x-request-id` when
sent (bounded, safe characters), else a new one."""

from __future__ import annotations

from typing import Any

from litestar import Request

from proxy.errors import InvalidRequestError
from proxy.ids import request_id_from

AnyRequest = Request[Any, Any, Any]


def read_headers(
    request: AnyRequest, wanted: frozenset[bytes] = frozenset()
) -> tuple[str | None, str, dict[str, str]]:
    """(Authorization, request id, the `wanted` headers) for this request. Two
    Authorization headers are a 400: which one is the caller's would be a guess."""
    authorization = None
    sent = None
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            if authorization is not None:
                raise InvalidRequestError("The request has more than one Authorization header.")
            authorization = value.decode("latin-1")
        elif name == b"x-request-id":
            sent = value.decode("latin-1")
        elif name in wanted:
            found[name.decode("latin-1")] = value.decode("latin-1")
    request_id = request_id_from(sent)
    request.scope.setdefault("state", {})["request_id"] = request_id
    return authorization, request_id, found


def request_id_of(request: AnyRequest) -> str:
    """The request's id, for an answer made before or without the handler (an error)."""
    state = request.scope.setdefault("state", {})
    request_id: str | None = state.get("request_id")
    if request_id is None:
        sent = [v for n, v in request.scope["headers"] if n == b"x-request-id"]
        text = sent[-1].decode("latin-1") if sent else ""
        request_id = state["request_id"] = request_id_from(text)
    return request_id
