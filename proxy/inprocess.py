"""The in-process API: `Gateway.chat` is the HTTP pipeline without HTTP, with typed
results (a ChatCompletion, or an async iterator of ChatCompletionChunk). A mixin of
`Gateway`, whose `handle_chat` it calls."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from random import getrandbits as _random_bits
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.wire import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from proxy.exchange import ChatResult

_encode = msgspec.json.Encoder().encode
_completion_decoder = msgspec.json.Decoder(ChatCompletion)
_chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)


def new_request_id() -> str:
    return f"req_{_random_bits(128):032x}"  # unique, not secret: no need for os.urandom


class InProcessChat:
    handle_chat: Callable[[bytes, str | None, str, Mapping[str, str]], Awaitable[ChatResult]]

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
        authorization = f"Bearer {api_key}" if api_key else None
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        result = await self.handle_chat(
            _encode(request), authorization, request_id or new_request_id(), lowered
        )
        if result.whole_stream is not None:
            return _typed_chunks(_once(result.whole_stream))
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


async def _once(batch: list[bytes]) -> AsyncIterator[list[bytes]]:
    yield batch
