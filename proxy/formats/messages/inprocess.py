"""The Messages API without HTTP: `Gateway.messages(...)` answers a `MessageResult`, or with
`stream=True` an async iterator of `StreamEvent` in Anthropic's order. A failure after the
stream started (an `error` event on the wire) is raised as the proxy's error of that kind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ProxyError,
    RateLimitError,
    RequestTooLargeError,
    ServiceUnavailableError,
    UpstreamError,
)
from proxy.formats.messages.door import MESSAGES
from proxy.formats.messages.events import payload_of
from proxy.inprocess import once

if TYPE_CHECKING:
    from proxy.inprocess import InProcess


class ContentBlock(msgspec.Struct):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    thinking: str | None = None
    signature: str | None = None


class MessageUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class MessageResult(msgspec.Struct):
    id: str
    model: str
    content: list[ContentBlock]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: MessageUsage | None = None
    type: str = "message"
    role: str = "assistant"


class EventDelta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class ErrorInfo(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class StreamEvent(msgspec.Struct):
    type: str
    index: int | None = None
    message: MessageResult | None = None
    content_block: ContentBlock | None = None
    delta: EventDelta | None = None
    usage: MessageUsage | None = None
    error: ErrorInfo | None = None


_message_decoder = msgspec.json.Decoder(MessageResult)
_event_decoder = msgspec.json.Decoder(StreamEvent)
_ERRORS: dict[str, type[ProxyError]] = {
    "invalid_request_error": InvalidRequestError,
    "authentication_error": AuthenticationError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "request_too_large": RequestTooLargeError,
    "rate_limit_error": RateLimitError,
    "overloaded_error": ServiceUnavailableError,
}


async def send_messages(
    inprocess: InProcess,
    model: str,
    messages: str | list[dict[str, Any]],
    max_tokens: int,
    *,
    stream: bool = False,
    api_key: str | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **params: Any,
) -> MessageResult | AsyncIterator[StreamEvent]:
    """`messages` may be a string (one user turn)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
        **params,
    }
    if stream:
        request["stream"] = True
    result = await inprocess.send(MESSAGES, request, api_key, request_id, headers)
    if result.whole_stream is not None:
        return _typed_events(once(result.whole_stream))
    if result.stream is not None:
        return _typed_events(result.stream)
    assert result.body is not None
    return _message_decoder.decode(result.body)


async def _typed_events(batches: AsyncIterator[list[bytes]]) -> AsyncIterator[StreamEvent]:
    async with aclosing(batches):  # type: ignore[type-var]
        async for batch in batches:
            for framed in batch:
                event = _event_decoder.decode(payload_of(framed))
                if event.type == "error":
                    error = event.error or ErrorInfo()
                    raise _ERRORS.get(error.type, UpstreamError)(error.message)
                yield event
