"""Chat-completion chunks (a translated route's stream) as Responses API events.

Text opens a message item (and an output_text part; a refusal its own part); each tool call
opens a function_call item (the message before it is done then). At the end every open item
is done and the terminal event carries the whole response, which is also what the request
keeps (cache, stored state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.errors import ProxyError, UpstreamError
from proxy.formats.chat import count_usage
from proxy.formats.responses.events import TERMINAL, EventWriter, empty_part
from proxy.formats.responses.reply import (
    INCOMPLETE,
    finished,
    function_call_item,
    message_item,
    usage_of,
)
from proxy.formats.responses.wire import item_id

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    error: Any = None


_chunk = msgspec.json.Decoder(_Chunk)
_chunks = msgspec.json.Decoder(list[_Chunk])


@dataclass
class _Part:
    kind: str  # output_text | refusal
    pieces: list[str] = field(default_factory=list)

    def value(self) -> dict[str, Any]:
        text = "".join(self.pieces)
        return {**empty_part(self.kind), _KEY[self.kind]: text}


_KEY = {"output_text": "text", "refusal": "refusal"}


@dataclass
class _Message:
    ident: str
    index: int
    parts: list[_Part] = field(default_factory=list)
    status: str | None = None  # set when done

    def item(self, status: str) -> dict[str, Any]:
        return message_item(self.ident, [part.value() for part in self.parts], status)


@dataclass
class _Call:
    ident: str
    index: int
    call_id: str
    name: str
    pieces: list[str] = field(default_factory=list)
    status: str | None = None

    def item(self, status: str) -> dict[str, Any]:
        arguments = "".join(self.pieces)
        return function_call_item(self.ident, self.call_id, self.name, arguments, status)


class StreamEncoder:
    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base  # the response shell: id, model, echoed settings
        self.writer = EventWriter()
        self.items: list[_Message | _Call] = []
        self.message: _Message | None = None
        self.calls: dict[int, _Call] = {}
        self.finish: str | None = None
        self.chat_usage: dict[str, Any] | None = None
        self._final: dict[str, Any] | None = None
        self._closing: list[bytes] = []  # events made with the whole response, sent at close

    def start(self) -> list[bytes]:
        return [
            self.writer.lifecycle("response.created", self.base),
            self.writer.lifecycle("response.in_progress", self.base),
        ]

    def add(self, payloads: list[bytes]) -> list[bytes]:
        """Events for a batch of chat chunks (JSON the chat relay has checked)."""
        frames: list[bytes] = []
        for payload in payloads:
            try:
                chunk = _chunk.decode(payload)
            except msgspec.ValidationError:
                continue  # a shape of chunk that carries nothing we translate
            self.chunk_events(chunk, frames)
        return frames

    def chunk_events(self, chunk: _Chunk, frames: list[bytes]) -> None:
        if chunk.usage:
            self.chat_usage = chunk.usage
        for choice in chunk.choices or ():
            self.finish = choice.finish_reason or self.finish
            if choice.delta is not None:
                self._delta(choice.delta, frames)

    def _delta(self, delta: _Delta, frames: list[bytes]) -> None:
        if delta.content:
            self._text("output_text", delta.content, frames)
        if delta.refusal:
            self._text("refusal", delta.refusal, frames)
        for call in delta.tool_calls or ():
            self._tool(call, frames)

    def _text(self, kind: str, text: str, frames: list[bytes]) -> None:
        message = self._open(kind, frames)
        message.parts[-1].pieces.append(text)
        content = len(message.parts) - 1
        frames.append(self.writer.text_delta(message.ident, message.index, content, kind, text))

    def _open(self, kind: str, frames: list[bytes]) -> _Message:
        """The message item and content part of this kind that text goes to (opened now
        when there is none)."""
        message = self.message
        if message is None:
            message = self.message = _Message(item_id("msg"), len(self.items))
            self.items.append(message)
            frames.append(self.writer.item_added(message.index, message.item("in_progress")))
        if not message.parts or message.parts[-1].kind != kind:
            if message.parts:
                self._close_part(message, frames)
            message.parts.append(_Part(kind))
            content, part = len(message.parts) - 1, empty_part(kind)
            frames.append(self.writer.part_added(message.ident, message.index, content, part))
        return message

    def _tool(self, delta: _ToolDelta, frames: list[bytes]) -> None:
        call = self.calls.get(delta.index)
        function = delta.function or _Function()
        if call is None:
            if self.message is not None:
                self._close_message(self.message, "completed", frames)
            call_id = delta.id or item_id("call")
            call = _Call(item_id("fc"), len(self.items), call_id, function.name or "")
            self.calls[delta.index] = call
            self.items.append(call)
            frames.append(self.writer.item_added(call.index, call.item("in_progress")))
        if function.arguments:
            call.pieces.append(function.arguments)
            frames.append(self.writer.arguments_delta(call.ident, call.index, function.arguments))

    def _close_part(self, message: _Message, frames: list[bytes]) -> None:
        content = len(message.parts) - 1
        part = message.parts[-1].value()
        text = part[_KEY[message.parts[-1].kind]]
        writer = self.writer
        frames.append(writer.text_done(message.ident, message.index, content, part["type"], text))
        frames.append(writer.part_done(message.ident, message.index, content, part))

    def _close_message(self, message: _Message, status: str, frames: list[bytes]) -> None:
        if message.parts:
            self._close_part(message, frames)
        message.status = status
        frames.append(self.writer.item_done(message.index, message.item(status)))
        self.message = None

    def response(self, record: RequestRecord) -> dict[str, Any]:
        """The whole response once the chat stream has ended properly (kept once made)."""
        if self._final is None:
            if not self.items:  # an answer without any text is still one (empty) message
                self._open("output_text", self._closing)
            status = "incomplete" if self.finish in INCOMPLETE else "completed"
            output = [item.item(item.status or status) for item in self.items]
            usage = usage_of(record.prompt_tokens, record.completion_tokens, self.chat_usage)
            self._final = finished(self.base, output, self.finish, usage)
        return self._final

    def close(self, record: RequestRecord) -> list[bytes]:
        """The events that end a stream that finished properly."""
        final = self.response(record)
        status = final["status"]
        frames = self._closing
        if self.message is not None:
            self._close_message(self.message, status, frames)
        for call in self.calls.values():
            if call.status is None:
                call.status = status
                arguments = "".join(call.pieces)
                frames.append(self.writer.arguments_done(call.ident, call.index, arguments))
                frames.append(self.writer.item_done(call.index, call.item(status)))
        frames.append(self.writer.lifecycle(TERMINAL[status], final))
        return frames

    def failed(self, error: ProxyError) -> list[bytes]:
        output = [item.item(item.status or "incomplete") for item in self.items]
        return [self.writer.failed({**self.base, "output": output}, error)]


class ChatChunksAsEvents:
    """The relay's rewriter on a translated route: each chat chunk is read once, for what the
    relay notes (finish reasons, usage, text relayed, an error mid-stream) and for the events
    it becomes."""

    __slots__ = ("encoder", "finished", "record", "upstream")

    def __init__(self, encoder: StreamEncoder, record: RequestRecord, upstream: str) -> None:
        self.encoder = encoder
        self.record = record
        self.upstream = upstream
        self.finished: set[int] = set()

    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        """Events for a network read's chunks: read in one decoder call when every one is in
        the usual form, else one by one (so the chunks before a bad one still count)."""
        try:
            chunks = _chunks.decode(b"[" + b",".join(events) + b"]")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._one_by_one(events)
        if len(chunks) != len(events):  # an event that is not one JSON value
            return self._one_by_one(events)
        frames: list[bytes] = []
        for chunk in chunks:
            if chunk.error:
                return frames, UpstreamError(
                    f"The upstream '{self.upstream}' failed during the stream."
                )
            self._note(chunk)
            self.encoder.chunk_events(chunk, frames)
        return frames, None

    def _one_by_one(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        frames: list[bytes] = []
        for payload in events:
            try:
                chunk = _chunk.decode(payload)
            except msgspec.DecodeError:
                return frames, UpstreamError(
                    f"The upstream '{self.upstream}' sent a chunk that is not JSON."
                )
            except msgspec.ValidationError:
                continue  # a shape of chunk that carries nothing we translate
            if chunk.error:
                return frames, UpstreamError(
                    f"The upstream '{self.upstream}' failed during the stream."
                )
            self._note(chunk)
            self.encoder.chunk_events(chunk, frames)
        return frames, None

    def _note(self, chunk: _Chunk) -> None:
        record = self.record
        if chunk.model is not None:
            record.upstream_model = chunk.model
        for choice in chunk.choices or ():
            if choice.finish_reason:
                self.finished.add(choice.index)
                record.finish_reasons.append(choice.finish_reason)
            delta = choice.delta
            if delta is not None and delta.content:
                record.relayed_bytes += len(delta.content)
        if chunk.usage:
            count_usage(record, chunk.usage)

    @property
    def complete(self) -> bool:
        return bool(self.finished)
