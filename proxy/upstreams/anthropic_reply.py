"""Anthropic Messages replies made into OpenAI chat completions and chunks, as pure functions.

Text blocks become the content, `tool_use` blocks tool calls (arguments: the input as compact
JSON), thinking blocks are left out; `stop_reason` becomes a finish reason and the usage counts
cached input as prompt tokens. A stream is translated event by event: the role goes out with
the first content (so an upstream failure before any content can still fail over), tool calls
are numbered among themselves, and the usage chunk closes the stream when the body asked for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from proxy.errors import ProxyError, UpstreamError
from proxy.upstreams.anthropic_errors import stream_error
from proxy.upstreams.anthropic_wire import MessageReply, ReplyBlock, ReplyUsage, StreamEvent
from proxy.upstreams.hf_common import encode, new_completion_id

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_S = TypeVar("_S")
_reply_decoder = msgspec.json.Decoder(MessageReply)
_event_decoder = msgspec.json.Decoder(StreamEvent)


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def completion_id(message_id: str) -> str:
    """chatcmpl-<the message id without its msg_ prefix>, so logs on both sides match."""
    return f"chatcmpl-{message_id.removeprefix('msg_')}" if message_id else new_completion_id()


def chat_usage(usage: ReplyUsage | None) -> dict[str, Any]:
    """Every input token counts as a prompt token, those read from or written to the prompt
    cache included (Anthropic reports the three apart)."""
    usage = usage or ReplyUsage()
    cached = usage.cache_read_input_tokens or 0
    prompt = (usage.input_tokens or 0) + cached + (usage.cache_creation_input_tokens or 0)
    completion = usage.output_tokens or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def arguments_of(block: ReplyBlock) -> str:
    return msgspec.json.encode(block.input if block.input is not None else {}).decode()


def chat_completion(body: bytes, upstream: str) -> bytes:
    reply = _decoded(_reply_decoder.decode, body, upstream)
    text = "".join(block.text or "" for block in reply.content if block.type == "text")
    calls = [
        {
            "id": block.id or "",
            "type": "function",
            "function": {"name": block.name or "", "arguments": arguments_of(block)},
        }
        for block in reply.content
        if block.type == "tool_use"
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not text else text,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return encode(
        {
            "id": completion_id(reply.id),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(reply.stop_reason),
                }
            ],
            "usage": chat_usage(reply.usage),
        }
    )


def _decoded(decoder: Callable[[bytes], _S], body: bytes, upstream: str) -> _S:
    try:
        return decoder(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise UpstreamError(
            f"The upstream '{upstream}' sent a reply that is not a Messages API reply."
        ) from None


# -- streams --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    index: int  # among the tool calls of the answer, as OpenAI numbers them
    has_arguments: bool = False


class ChatStream:
    """One stream's Messages events in, chat.completion.chunk payloads out."""

    def __init__(self, upstream: str, include_usage: bool) -> None:
        self.upstream = upstream
        self.include_usage = include_usage
        self.done = False  # message_stop: nothing more to read
        self.failure: ProxyError | None = None  # raise it after the chunks of the same read
        self.finished = False  # the finish chunk went out
        self._id = new_completion_id()
        self._created = int(time.time())
        self._model = ""
        self._usage = ReplyUsage()
        self._started = False
        self._tools: dict[int, _ToolCall] = {}  # by content block index
        self._handlers: dict[str, Callable[[StreamEvent, list[bytes]], None]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._error,
        }

    def feed(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for raw in events:
            try:
                event = _event_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.failure = UpstreamError(
                    f"The upstream '{self.upstream}' sent a stream event that is not JSON."
                )
                break
            handler = self._handlers.get(event.type)  # ping and new event types: nothing
            if handler is not None:
                handler(event, out)
            if self.failure is not None or self.done:
                break
        return out

    def end(self) -> list[bytes]:
        """The upstream closed the stream: the usage chunk, unless it ended early."""
        if not self.finished:
            raise UpstreamError(f"The upstream '{self.upstream}' ended the stream early.")
        out: list[bytes] = []
        self._message_stop(StreamEvent("message_stop"), out)
        return out

    # -- events

    def _message_start(self, event: StreamEvent, out: list[bytes]) -> None:
        message = event.message or MessageReply()
        self._id = completion_id(message.id)
        self._model = message.model
        if message.usage is not None:
            self._usage = message.usage

    def _block_start(self, event: StreamEvent, out: list[bytes]) -> None:
        block = event.content_block
        if block is None or event.index is None:
            return
        if block.type == "text" and block.text:
            out.append(self._delta({"content": block.text}))
        elif block.type == "tool_use":
            call = _ToolCall(len(self._tools))
            self._tools[event.index] = call
            first = {
                "index": call.index,
                "id": block.id or "",
                "type": "function",
                "function": {"name": block.name or "", "arguments": ""},
            }
            out.append(self._delta({"tool_calls": [first]}))

    def _block_delta(self, event: StreamEvent, out: list[bytes]) -> None:
        delta = event.delta
        if delta is None:
            return
        if delta.type == "text_delta" and delta.text:
            out.append(self._delta({"content": delta.text}))
        elif delta.type == "input_json_delta" and delta.partial_json:
            call = self._tools.get(event.index if event.index is not None else -1)
            if call is not None:
                call.has_arguments = True
                out.append(self._arguments(call, delta.partial_json))

    def _block_stop(self, event: StreamEvent, out: list[bytes]) -> None:
        call = self._tools.get(event.index if event.index is not None else -1)
        if call is not None and not call.has_arguments:
            call.has_arguments = True
            out.append(self._arguments(call, "{}"))  # a call without input: still JSON

    def _message_delta(self, event: StreamEvent, out: list[bytes]) -> None:
        if event.usage is not None:
            self._usage = _merged(self._usage, event.usage)
        if self.finished:
            return
        if not self._started:
            out.append(self._delta({"content": ""}))
        stop_reason = event.delta.stop_reason if event.delta is not None else None
        out.append(self._chunk({}, finish_reason(stop_reason)))
        self.finished = True

    def _message_stop(self, event: StreamEvent, out: list[bytes]) -> None:
        if self.finished and self.include_usage and not self.done:
            out.append(self._usage_chunk())
        self.done = True

    def _error(self, event: StreamEvent, out: list[bytes]) -> None:
        self.failure = stream_error(self.upstream, event.error)

    # -- chunks

    def _delta(self, delta: dict[str, Any]) -> bytes:
        if not self._started:
            self._started = True
            delta = {"role": "assistant", "content": None, **delta}
        return self._chunk(delta, None)

    def _arguments(self, call: _ToolCall, text: str) -> bytes:
        return self._delta({"tool_calls": [{"index": call.index, "function": {"arguments": text}}]})

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode(self._envelope([choice]))

    def _usage_chunk(self) -> bytes:
        return encode({**self._envelope([]), "usage": chat_usage(self._usage)})

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }


def _merged(start: ReplyUsage, delta: ReplyUsage) -> ReplyUsage:
    """message_delta's counts are cumulative and win where given; message_start's fill in."""
    return ReplyUsage(
        input_tokens=_first(delta.input_tokens, start.input_tokens),
        output_tokens=_first(delta.output_tokens, start.output_tokens),
        cache_read_input_tokens=_first(
            delta.cache_read_input_tokens, start.cache_read_input_tokens
        ),
        cache_creation_input_tokens=_first(
            delta.cache_creation_input_tokens, start.cache_creation_input_tokens
        ),
    )


def _first(value: int | None, fallback: int | None) -> int | None:
    return fallback if value is None else value
