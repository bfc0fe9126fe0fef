"""The SERVER span of each HTTP request, after OpenTelemetry's HTTP semantic conventions:
named `{method} {route}`, the caller's trace context (traceparent) continued, the status
recorded, and 5xx marked as errors.

Litestar's OTel plugin does this through opentelemetry-instrumentation-asgi, which also
reads every header, builds a dozen attributes and records duration metrics on every request:
in bench/ that cost more than the spans themselves. This middleware makes the same span with
what an operator reads (the route, the status, the client), and nothing per ASGI message
but a look at the response's start."""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

PROPAGATED = frozenset({b"traceparent", b"tracestate", b"baggage"})


def server_spans(app: ASGIApp) -> ASGIApp:
    """Litestar middleware factory: wraps each route's ASGI app."""
    tracer = trace.get_tracer("llm-proxy.server")

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        route = scope.get("path_template") or scope["path"]
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in PROPAGATED
        }
        context = propagate.extract(carrier) if carrier else None
        with tracer.start_as_current_span(
            f"{method} {route}",
            context=context,
            kind=SpanKind.SERVER,
            attributes=_request_attributes(scope, method, route),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:

            async def send_traced(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_attribute("error.type", str(status))
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await app(scope, receive, send_traced)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                raise

    return traced


def _request_attributes(scope: HTTPScope, method: str, route: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    return attributes
