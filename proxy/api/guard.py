"""The outermost ASGI layer: request headers larger than `server.max_header_bytes` get a 431,
and a request target longer than MAX_TARGET_BYTES a 414, in the envelope of the path's door
(Anthropic's under /v1/messages, else OpenAI's), before anything else reads them (the HTTP
parser takes them whole; Litestar's router memoizes the last 1,024 paths it saw, whatever their
size)."""

from __future__ import annotations

from typing import Any

from proxy.api.errors import door_of_path
from proxy.errors import ProxyError
from proxy.gateway import Gateway


class HeadersTooLargeError(ProxyError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class URITooLongError(ProxyError):
    status = 414
    type = "invalid_request_error"
    code = "uri_too_long"


MAX_TARGET_BYTES = 4096  # path and query string; every route of the proxy needs far less


class HeaderSizeGuard:
    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            error = self._refusal(scope)
            if error is not None:
                body = door_of_path(scope).error_body(error)
                await send(
                    {
                        "type": "http.response.start",
                        "status": error.status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any) -> ProxyError | None:
        limit = self.gateway.policy.max_header_bytes
        size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > limit:
            return HeadersTooLargeError(f"The request headers are larger than {limit} bytes.")
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_TARGET_BYTES:
            return URITooLongError(f"The request target is longer than {MAX_TARGET_BYTES} bytes.")
        return None
