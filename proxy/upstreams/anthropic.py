"""The Anthropic Messages API (`type: anthropic`).

Chat bodies are translated to a Messages request and the reply back (anthropic_request,
anthropic_reply: pure functions); Messages bodies from the /v1/messages front door pass through
as sent, with the client's own anthropic-version and anthropic-beta winning over the
configured version. This module only sends, reads and hands on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import msgspec
from loguru import logger

from proxy.config import AnthropicUpstreamConfig
from proxy.errors import ProxyError, UpstreamError
from proxy.upstreams.anthropic_errors import anthropic_error, stream_error
from proxy.upstreams.anthropic_reply import ChatStream, chat_completion
from proxy.upstreams.anthropic_request import PreparedRequest, messages_request
from proxy.upstreams.anthropic_wire import ErrorDetail, ErrorReply, EventType
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.http import client_timeout, new_session, read_events, translated_errors

# client headers a Messages body is passed on with (they choose the API's behaviour)
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


class _Events(Protocol):
    done: bool
    failure: ProxyError | None

    def feed(self, events: list[bytes]) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...


class AnthropicUpstream:
    native_apis = frozenset({"messages"})
    generates = True

    def __init__(
        self,
        name: str,
        config: AnthropicUpstreamConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._session = session or new_session(config.max_connections)
        base = config.base_url.rstrip("/")
        self._messages_url = f"{base}/v1/messages"
        self._count_tokens_url = f"{base}/v1/messages/count_tokens"
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": config.version,
            **config.headers,
        }
        if config.api_key:
            self._headers["x-api-key"] = config.api_key

    async def start(self) -> None:
        return None

    async def complete(self, call: UpstreamCall) -> bytes:
        if call.api == "messages":
            return await self._send(self._messages_url, call.body, call)
        payload = self._chat_payload(call, stream=False).payload
        return chat_completion(await self._send(self._messages_url, payload, call), self.name)

    async def count_tokens(self, call: UpstreamCall) -> bytes:
        """`{"input_tokens": N}` for a count_tokens body, as Anthropic counted it."""
        return await self._send(self._count_tokens_url, call.body, call)

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        events: _Events
        if call.api == "messages":
            payload, events = call.body, NativeStream(self.name)
        else:
            prepared = self._chat_payload(call, stream=True)
            payload, events = prepared.payload, ChatStream(self.name, prepared.include_usage)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with translated_errors(self.name):
            async with asyncio.timeout_at(started + call.timeouts.first_token):
                response = await self._post(self._messages_url, payload, call)
            try:
                await self._check_stream(response, started, call)
                batches = _translated(read_events(response, call.timeouts, started), events)
                async with contextlib.aclosing(batches) as chunks:
                    async for batch in chunks:
                        yield batch
            finally:
                response.close()

    async def embed(self, call: UpstreamCall) -> bytes:
        raise UpstreamError(f"The upstream '{self.name}' cannot embed.")

    async def close(self) -> None:
        await self._session.close()

    def _chat_payload(self, call: UpstreamCall, *, stream: bool) -> PreparedRequest:
        if call.api != "chat":
            raise UpstreamError(f"The upstream '{self.name}' does not take {call.api} requests.")
        prepared = messages_request(call.body, call.model, stream=stream)
        if prepared.ignored:
            logger.debug(
                "upstream {}: fields the Messages API does not use: {}",
                self.name,
                ", ".join(prepared.ignored),
            )
        return prepared

    async def _send(self, url: str, payload: bytes, call: UpstreamCall) -> bytes:
        loop = asyncio.get_running_loop()
        with translated_errors(self.name):
            async with asyncio.timeout_at(loop.time() + call.timeouts.total):
                async with self._post(url, payload, call) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise anthropic_error(self.name, response.status, body, response.headers)
                    return body

    async def _check_stream(
        self, response: aiohttp.ClientResponse, started: float, call: UpstreamCall
    ) -> None:
        if response.status == 200 and response.content_type.startswith("text/event-stream"):
            return
        deadline = started + min(call.timeouts.first_token, call.timeouts.total)
        async with asyncio.timeout_at(deadline):
            body = await response.read()
        if response.status != 200:
            raise anthropic_error(self.name, response.status, body, response.headers)
        raise UpstreamError(f"The upstream '{self.name}' did not answer with an event stream.")

    def _post(
        self, url: str, payload: bytes, call: UpstreamCall
    ) -> aiohttp.client._RequestContextManager:
        headers = (
            {**self._headers, **_passed(call.headers)} if call.api != "chat" else self._headers
        )
        if call.request_id:
            headers = {**headers, "X-Request-Id": call.request_id}
        return self._session.post(
            url, data=payload, headers=headers, timeout=client_timeout(call.timeouts)
        )


def _passed(headers: Mapping[str, str]) -> dict[str, str]:
    lowered = {name.lower(): value for name, value in headers.items()}
    return {name: lowered[name] for name in PASSED_HEADERS if lowered.get(name)}


class NativeStream:
    """A Messages stream passed through: each event's payload as it came. Events before the
    first content (message_start, ping, a block's start) are held back until some follows, so
    a failure right at the start still lets the gateway try another route; an `error` event is
    raised after the events before it."""

    _OPENING = frozenset({"message_start", "ping", "content_block_start"})
    _decoder = msgspec.json.Decoder(EventType)

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.done = False
        self.failure: ProxyError | None = None
        self._held: list[bytes] = []
        self._opened = False

    def feed(self, events: list[bytes]) -> list[bytes]:
        out = self._held
        for raw in events:
            kind = self._type(raw)
            if kind == "error":
                self.failure = stream_error(self.upstream, _error_detail(raw))
                break
            out.append(raw)
            self._opened = self._opened or kind not in self._OPENING
            if kind == "message_stop":
                self.done = True
                break
        if self.failure is not None and not self._opened:
            return []  # nothing reached the client yet: the gateway may try another route
        if self._opened or self.done or self.failure is not None:
            self._held = []
            return out
        self._held = out
        return []

    def end(self) -> list[bytes]:
        if not self.done:
            raise UpstreamError(f"The upstream '{self.upstream}' ended the stream early.")
        return []

    def _type(self, raw: bytes) -> str:
        try:
            return self._decoder.decode(raw).type
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ""


def _error_detail(raw: bytes) -> ErrorDetail | None:
    try:
        return msgspec.json.decode(raw, type=ErrorReply).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


async def _translated(
    reads: AsyncIterator[list[bytes]], events: _Events
) -> AsyncGenerator[list[bytes], None]:
    """Payloads per network read; an upstream failure is raised after what came before it."""
    try:
        async for batch in reads:
            out = events.feed(batch)
            if out:
                yield out
            if events.failure is not None:
                raise events.failure
            if events.done:
                break
    finally:
        await reads.aclose()  # type: ignore[attr-defined]
    tail = events.end()
    if tail:
        yield tail
