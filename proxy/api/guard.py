"""The outermost ASGI layer: request headers larger than `server.max_header_bytes` get a 431
in OpenAI's envelope before anything else reads them (the HTTP parser takes them whole)."""

from __future__ import annotations

from typing import Any

from proxy.errors import ProxyError
from proxy.gateway import Gateway


class HeadersTooLargeError(ProxyError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class HeaderSizeGuard:
    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            limit = self.gateway.policy.max_header_bytes
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > limit:
                error = HeadersTooLargeError(f"The request headers are larger than {limit} bytes.")
                body = error.body()
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
