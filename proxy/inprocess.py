"""The in-process API: the HTTP pipeline without HTTP, with typed results. `Gateway.chat`
answers a ChatCompletion, or an async iterator of ChatCompletionChunk."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.formats.chat import CHAT
from proxy.ids import new_request_id
from proxy.wire import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from proxy.exchange import Result
    from proxy.formats.base import FrontDoor
    from proxy.gateway import Gateway

_encode = msgspec.json.Encoder().encode
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)


class InProcess:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def send(
        self,
        door: FrontDoor,
        request: dict[str, Any],
        api_key: str | None,
        request_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> Result:
        """One request through the gateway's pipeline, as its HTTP front door would send it."""
        authorization = f"Bearer {api_key}" if api_key else None
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        return await self.gateway.handle(
            door, _encode(request), authorization, request_id or new_request_id(), lowered
        )

    async def chat(
        self,
        model: str,
        messages: str | list[dict[str, Any]],
        *,
        stream: bool = False,
        api_key: str | None = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **params: Any,
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Chat without HTTP. `messages` may be a string (one user message)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        request: dict[str, Any] = {"model": model, "messages": messages, **params}
        if stream:
            request["stream"] = True
        result = await self.send(CHAT, request, api_key, request_id, headers)
        if result.whole_stream is not None:
            return _typed_chunks(once(result.whole_stream))
        if result.stream is not None:
            return _typed_chunks(result.stream)
        assert result.body is not None
        return _completion_decoder.decode(result.body)


async def _typed_chunks(
    batches: AsyncIterator[list[bytes]],
) -> AsyncIterator[ChatCompletionChunk]:
    async for batch in batches:
        for payload in batch:
            yield _chunk_decoder.decode(payload)


async def once(batch: list[bytes]) -> AsyncIterator[list[bytes]]:
    yield batch
