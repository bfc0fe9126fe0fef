"""Answers in the Messages format: a chat.completion made into a message (translated routes)
and an Anthropic reply passed on with the public model name (native routes), as pure
functions that also note usage and the stop reason on the request's record.

A chat answer's text becomes one text block and each tool call a `tool_use` block (its id
kept, its arguments parsed into `input`); the finish reason becomes a stop reason: `stop` is
`end_turn`, or `stop_sequence` when the upstream said which of the request's stop sequences
ended it (vLLM's `stop_reason`); `length` is `max_tokens`, `tool_calls` is `tool_use`,
`content_filter` is `refusal`. Prompt tokens the upstream read from its cache are reported
apart, as Anthropic does (`cache_read_input_tokens`).
"""

from __future__ import annotations

from collections.abc import Sequence
from random import getrandbits
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.errors import UpstreamError
from proxy.formats.messages.wire import (
    AssistantMessage,
    ChatChoiceView,
    ChatToolCall,
    ChatUsageView,
    ChatView,
    ContentOut,
    TextOut,
    TokenUsage,
    ToolUseOut,
)

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_chat_view = msgspec.json.Decoder(ChatView)
CACHEABLE_STOPS = frozenset({"end_turn", "stop_sequence", "max_tokens", "tool_use"})
_STOP_REASONS = {
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def new_message_id() -> str:
    return f"msg_{getrandbits(96):024x}"  # unique, not secret


def new_tool_use_id() -> str:
    return f"toolu_{getrandbits(96):024x}"


def stop_reason(
    finish: str | None, called_tools: bool, stopped_by: str | int | None, stops: Sequence[str]
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat finish reason."""
    reason = _STOP_REASONS.get(finish or "")
    if reason is not None:
        return reason, None
    if called_tools:
        return "tool_use", None  # some upstreams say `stop` after tool calls
    if isinstance(stopped_by, str) and stopped_by in stops:
        return "stop_sequence", stopped_by
    return "end_turn", None


def usage_of(usage: ChatUsageView | None) -> TokenUsage:
    """Anthropic counts prompt tokens read from the cache apart from `input_tokens`."""
    if usage is None:
        return TokenUsage(0, 0)
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    if not cached:
        return TokenUsage(usage.prompt_tokens, usage.completion_tokens)
    return TokenUsage(usage.prompt_tokens - cached, usage.completion_tokens, cached)


def tool_input(arguments: str | None, upstream: str) -> Any:
    """A tool call's arguments (JSON text) as the object `input` is."""
    if not arguments or not arguments.strip():
        return {}
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(
            f"The upstream '{upstream}' sent tool call arguments that are not a JSON object."
        )
    return value


def _tool_use(call: ChatToolCall, upstream: str) -> ToolUseOut:
    function = call.function
    name = (function.name if function is not None else None) or ""
    arguments = function.arguments if function is not None else None
    return ToolUseOut(call.id or new_tool_use_id(), name, tool_input(arguments, upstream))


def message_from_chat(
    view: ChatView, message_id: str, model: str, stops: Sequence[str], upstream: str
) -> AssistantMessage:
    """A chat.completion (its first choice) as a message."""
    choice = _first(view.choices, upstream)
    message = choice.message
    text = (message.content or message.refusal or "") if message is not None else ""
    calls = (message.tool_calls or []) if message is not None else []
    content: list[ContentOut] = [TextOut(text)] if text or not calls else []
    content.extend(_tool_use(call, upstream) for call in calls)
    reason, sequence = stop_reason(choice.finish_reason, bool(calls), choice.stop_reason, stops)
    return AssistantMessage(message_id, model, content, reason, sequence, usage_of(view.usage))


def _first(choices: list[ChatChoiceView], upstream: str) -> ChatChoiceView:
    for choice in choices:
        if choice.index == 0:
            return choice
    raise UpstreamError(f"The upstream '{upstream}' sent a reply without choices.")


def decode_chat(body: bytes, upstream: str) -> ChatView:
    try:
        return _chat_view.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(
            f"The upstream '{upstream}' sent a reply that is not a chat completion."
        ) from None


# -- native answers -------------------------------------------------------------------------------


class NativeUsage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


class _NativeView(msgspec.Struct):
    content: list[Any]
    model: str | None = None
    stop_reason: str | None = None
    usage: NativeUsage | None = None


_native_view = msgspec.json.Decoder(_NativeView)


def native_answer(body: bytes, public: str, upstream: str, record: RequestRecord) -> bytes:
    """An Anthropic message as the client receives it: the public model name in `model`."""
    try:
        view = _native_view.decode(body)
        data = _decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(
            f"The upstream '{upstream}' sent a reply that is not a Messages API message."
        ) from None
    record.upstream_model = view.model
    record.finish_reasons = [view.stop_reason] if view.stop_reason else []
    note_native_usage(record, view.usage)
    data["model"] = public
    return _encode(data)


def note_native_usage(record: RequestRecord, usage: NativeUsage | None) -> None:
    """Every input token counts as a prompt token, cached ones included (limits, spend)."""
    if usage is None:
        return
    if usage.input_tokens is not None:
        cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
        record.prompt_tokens = usage.input_tokens + cached
    if usage.output_tokens is not None:
        record.completion_tokens = usage.output_tokens
