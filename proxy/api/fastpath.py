"""The front doors' hot path as a plain ASGI app.

Every request to a front door (chat completions, responses, messages, embeddings) is served
here without Litestar: headers read once from the raw scope, the key checked before the body
is read, the body read from `receive`, the gateway called, and the answer written as ASGI
messages. Litestar's routing, request object, dependency injection, response classes and the
task group it runs beside each stream cost more per request than the proxy's own work, and
these few POST routes need none of them; every other path goes on to the Litestar app.

A stream must stop when its client leaves. Our uvicorn protocol (proxy/api/protocol.py) calls
the hook a request leaves in its scope when the connection is lost, and the hook cancels the
stream's task; under another server a small task waits for `http.disconnect` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from loguru import logger

from proxy.api.protocol import DISCONNECT_HOOK, ON_DISCONNECT
from proxy.errors import InternalError, InvalidRequestError, ProxyError, RequestTooLargeError
from proxy.formats.base import FrontDoor, door_credential
from proxy.gateway import Gateway
from proxy.ids import new_request_id, request_id_from

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = (b"content-type", b"application/json")
EVENT_STREAM = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
CACHE_CONTROL = b"cache-control"


class FrontDoors:
    def __init__(
        self,
        app: ASGIApp,
        gateway: Gateway,
        doors: Mapping[str, FrontDoor],
        wrap: Callable[[Any], Any] | None = None,  # e.g. the tracing middleware
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.doors = dict(doors)
        self.serve: ASGIApp = wrap(self._serve) if wrap is not None else self._serve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.doors:
            await self.serve(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        door = self.doors[scope["path"]]
        await _Exchange(self.gateway, door, scope, receive, send).run()


class _Exchange:
    """One request through a front door, from its scope to the last byte of the answer."""

    __slots__ = ("declared", "door", "gateway", "receive", "request_id", "scope", "send")

    def __init__(
        self, gateway: Gateway, door: FrontDoor, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.gateway = gateway
        self.door = door
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = ""
        self.declared = 0  # the Content-Length the client announced

    async def run(self) -> None:
        """The exchange; a client that leaves cancels it wherever it is (an upstream call
        included), and that ends here quietly."""
        task = asyncio.current_task()
        assert task is not None
        left: list[bool] = []

        def client_left() -> None:
            left.append(True)
            task.cancel()

        if self.scope.get(DISCONNECT_HOOK):
            self.scope[ON_DISCONNECT] = client_left
        try:
            await self._exchange(client_left)
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise  # not ours: a shutdown, or the server's own cancellation
        finally:
            self.scope.pop(ON_DISCONNECT, None)

    async def _exchange(self, client_left: Callable[[], None]) -> None:
        try:
            authorization, headers = self._headers()
            result = await self.gateway.serve(
                self.door, authorization, self.request_id, headers, self._body
            )
        except ProxyError as exc:
            await self._error(exc)
            return
        except Exception:
            logger.exception("unhandled error on {} request_id={}", self.door.api, self.request_id)
            await self._error(InternalError("The proxy failed to handle the request."))
            return
        extra = [(name.encode(), value.encode("latin-1")) for name, value in result.headers.items()]
        extra += [
            (n.encode(), v.encode()) for n, v in self.door.id_headers(self.request_id).items()
        ]
        if result.stream is not None:
            await self._stream(self.door.frames(result.stream), extra, client_left)
        elif result.whole_stream is not None:
            await self._whole(self.door.whole_frames(result.whole_stream), EVENT_STREAM + extra)
        else:
            assert result.body is not None
            await self._whole(result.body, [JSON, *extra])

    def _headers(self) -> tuple[str | None, dict[str, str]]:
        """(Authorization, the headers the pipeline reads); the request id is set on the way.
        Two Authorization headers are a 400: which one is the caller's would be a guess."""
        wanted = self.gateway.policy.rule_headers | self.door.headers
        authorization = sent = None
        found: dict[str, str] = {}
        for name, value in self.scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    self.request_id = new_request_id()
                    raise InvalidRequestError("The request has more than one Authorization header.")
                authorization = value.decode("latin-1")
            elif name == b"x-request-id":
                sent = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                self.declared = int(value)
            elif name == CACHE_CONTROL or name in wanted:
                found[name.decode("latin-1")] = value.decode("latin-1")
        self.request_id = request_id_from(sent)
        return door_credential(self.door, authorization, found), found

    async def _body(self) -> bytes:
        """The request body; more than the policy allows is a 413 as soon as it shows."""
        limit = self.gateway.policy.max_body_bytes
        if self.declared > limit:  # said so up front: not a byte of it is read
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequestError("The client went away before the body was read.")
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
            parts.append(part)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _error(self, error: ProxyError) -> None:
        request_id = self.request_id or new_request_id()
        headers = error.response_headers()
        headers.setdefault("x-llm-proxy-attempts", "0")
        headers.update(self.door.id_headers(request_id))
        extra = [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
        await self._whole(self.door.error_body(error), [JSON, *extra], error.status)

    async def _whole(
        self, body: bytes, headers: list[tuple[bytes, bytes]], status: int = 200
    ) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def _stream(
        self, frames: Any, headers: list[tuple[bytes, bytes]], client_left: Callable[[], None]
    ) -> None:
        send = self.send
        watcher = None if self.scope.get(DISCONNECT_HOOK) else self._watch(client_left)
        try:
            start = {
                "type": "http.response.start",
                "status": 200,
                "headers": EVENT_STREAM + headers,
            }
            await send(start)
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()

    def _watch(self, client_left: Callable[[], None]) -> asyncio.Task[None]:
        """Under a server that does not call the scope's hook: a task that waits for the
        disconnect message (only while a stream is relayed: the body has been read)."""
        receive = self.receive

        async def watch() -> None:
            with contextlib.suppress(Exception):
                while (await receive())["type"] != "http.disconnect":
                    pass
                client_left()

        return asyncio.get_running_loop().create_task(watch())
