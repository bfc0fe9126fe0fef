"""OpenAI and every OpenAI-compatible server (vLLM, TGI's /v1, the HF router...).

The request body passes through as the gateway prepared it; replies are relayed as bytes.
Chat bodies go to /chat/completions, embeddings to /embeddings, and with `responses: native`
Responses API bodies to /responses (their streams end when the server closes them, with or
without a [DONE]).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from proxy.config import OpenAIUpstreamConfig
from proxy.errors import UpstreamError
from proxy.upstreams.base import UpstreamCall
from proxy.upstreams.http import (
    client_timeout,
    error_from_status,
    new_session,
    read_events,
    translated_errors,
)


class OpenAIUpstream:
    generates = True

    def __init__(
        self,
        name: str,
        config: OpenAIUpstreamConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._session = session or new_session(config.max_connections, config.timeout.connect)
        base = config.base_url.rstrip("/")
        self._urls = {  # parsed once, not on every call
            "chat": URL(f"{base}/chat/completions"),
            "responses": URL(f"{base}/responses"),
            "embeddings": URL(f"{base}/embeddings"),
        }
        self.native_apis = frozenset(
            {"embeddings", "responses"} if config.responses == "native" else {"embeddings"}
        )
        self._headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    async def start(self) -> None:
        return None

    async def complete(self, call: UpstreamCall) -> bytes:
        loop = asyncio.get_running_loop()
        with translated_errors(self.name):
            async with asyncio.timeout_at(loop.time() + call.timeouts.total):
                async with self._post(call) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise error_from_status(self.name, response.status, body, response.headers)
                    return body

    async def stream(self, call: UpstreamCall) -> AsyncIterator[list[bytes]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with translated_errors(self.name):
            async with asyncio.timeout_at(started + call.timeouts.first_token):
                response = await self._post(call)
            try:
                if response.status != 200:
                    body = await response.read()
                    raise error_from_status(self.name, response.status, body, response.headers)
                if not response.content_type.startswith("text/event-stream"):
                    message = f"The upstream '{self.name}' did not answer with an event stream."
                    raise UpstreamError(message)
                async for events in read_events(response, call.timeouts, started):
                    if events[-1] == b"[DONE]":
                        if len(events) > 1:
                            yield events[:-1]
                        break
                    if b"[DONE]" in events:
                        yield events[: events.index(b"[DONE]")]
                        break
                    yield events
            finally:
                response.close()

    def _post(self, call: UpstreamCall) -> aiohttp.client._RequestContextManager:
        headers = self._headers
        if call.request_id:
            headers = {**headers, "X-Request-Id": call.request_id}
        if call.timeouts.connect == self.config.timeout.connect:  # the session's own
            return self._session.post(self._urls[call.api], data=call.body, headers=headers)
        return self._session.post(
            self._urls[call.api],
            data=call.body,
            headers=headers,
            timeout=client_timeout(call.timeouts),
        )

    async def embed(self, call: UpstreamCall) -> bytes:
        return await self.complete(call)

    async def close(self) -> None:
        await self._session.close()
