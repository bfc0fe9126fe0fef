"""One /v1/messages request through the pipeline.

A route whose upstream speaks the Messages API (`type: anthropic`) gets the client's body as
written, only `model` rewritten, with the client's anthropic-version and anthropic-beta; every
other route gets the canonical chat body (translate.py) and its answer comes back as a
message (reply.py, encoder.py). The cache keeps the message as the client received it, and a
hit is replayed as a proper Anthropic stream (replay.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.config import ParamBounds
from proxy.errors import ProxyError
from proxy.formats.base import FrontRequest
from proxy.formats.chat import ChunkRewriter, assemble, count_usage, rewrite_completion
from proxy.formats.messages.blocks import Turn, decode_typed, estimate_tokens, read_turns
from proxy.formats.messages.encoder import StreamEncoder
from proxy.formats.messages.events import error_frame
from proxy.formats.messages.native import NativeRewriter
from proxy.formats.messages.replay import assemble_native, replay
from proxy.formats.messages.reply import (
    CACHEABLE_STOPS,
    decode_chat,
    message_from_chat,
    native_answer,
    new_message_id,
)
from proxy.formats.messages.translate import chat_body, chat_fields
from proxy.formats.messages.wire import MessagesHead
from proxy.formats.params import apply_params
from proxy.upstreams.base import Api, UpstreamCall

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.policy import Route
    from proxy.relay import StreamContext

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_head_decoder = msgspec.json.Decoder(MessagesHead, strict=False)  # 50.0 is an integer, as for chat

# chat names of model params -> the Messages field (None: the Messages API has no such field)
PARAM_NAMES: Mapping[str, str | None] = {
    "max_completion_tokens": "max_tokens",
    "frequency_penalty": None,
    "presence_penalty": None,
    "seed": None,
    "n": None,
    "logprobs": None,
    "top_logprobs": None,
}


class _StopView(msgspec.Struct):
    stop_reason: str | None = None


_stop_view = msgspec.json.Decoder(_StopView)


class MessagesRequest(FrontRequest):
    api: Api = "messages"

    def __init__(
        self,
        body: bytes,
        fields: dict[str, msgspec.Raw],
        head: MessagesHead,
        passed_headers: Mapping[str, str],
    ) -> None:
        self.key_body = body
        self.fields = fields
        self.passed_headers = passed_headers  # anthropic-version / -beta for native routes
        self.message_id = new_message_id()
        self._chat: dict[str, Any] | None = None  # the chat body's fields, once translated
        self._encoder: StreamEncoder | None = None  # a translated stream's
        self._native_stream = False
        self._read(head)

    def _read(self, head: MessagesHead) -> None:
        self.head = head
        self.turns: list[Turn] = read_turns(head)
        self.model = head.model
        self.stream = bool(head.stream)
        self.tools = bool(head.tools)
        self.deterministic = head.temperature == 0
        self._estimate = estimate_tokens(head, self.turns)
        self._chat = None

    @property
    def estimate(self) -> int:
        return self._estimate

    @property
    def stops(self) -> list[str]:
        return self.head.stop_sequences or []

    def apply_params(self, params: Mapping[str, ParamBounds]) -> None:
        if apply_params(self.fields, params, PARAM_NAMES):
            self.key_body = _encode(self.fields)
            self._read(decode_head(self.key_body))

    # -- calls ------------------------------------------------------------------------------

    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        drop = route.drop_params
        if self.api in route.serves:
            body = self.native_body(upstream_model, drop)
            return UpstreamCall(
                body, upstream_model, route.timeouts, request_id, drop, "messages",
                self.passed_headers,
            )  # fmt: skip
        if self._chat is None:
            self._chat = chat_fields(self.head, self.turns)
        body = chat_body(self._chat, upstream_model, stream=self.stream, drop=drop)
        return UpstreamCall(body, upstream_model, route.timeouts, request_id, drop)

    def native_body(self, upstream_model: str, drop: frozenset[str] = frozenset()) -> bytes:
        """The client's body with only `model` rewritten (and a route's dropped fields out);
        every other value passes as the client wrote it."""
        if upstream_model == self.model and not drop:
            return self.key_body
        fields = {name: raw for name, raw in self.fields.items() if name not in drop}
        fields["model"] = msgspec.Raw(_encode(upstream_model))
        return _encode(fields)

    # -- answers ----------------------------------------------------------------------------

    def answer(
        self, reply: bytes, call: UpstreamCall, public: str, upstream: str, record: RequestRecord
    ) -> bytes:
        if call.api == "messages":
            return native_answer(reply, public, upstream, record)
        body, usage = rewrite_completion(reply, public, upstream, record)
        count_usage(record, usage)
        view = decode_chat(body, upstream)
        return _encode(message_from_chat(view, self.message_id, public, self.stops, upstream))

    def relay(
        self,
        first: list[bytes],
        events: AsyncIterator[list[bytes]],
        context: StreamContext,
        call: UpstreamCall,
    ) -> AsyncIterator[list[bytes]]:
        from proxy.relay import open_relay

        if call.api == "messages":
            self._native_stream = True
            return _failures_in_band(open_relay(first, events, context, NativeRewriter(context)))
        encoder = self._encoder = StreamEncoder(
            self.message_id, context.public_model, self.estimate, self.stops, context.upstream
        )
        chunks = open_relay(first, events, context, ChunkRewriter(context, True, 1))
        return _encoded(chunks, encoder)

    def whole(self, collected: list[bytes], record: RequestRecord) -> bytes | None:
        if self._native_stream:
            return assemble_native(collected)
        completion = assemble(collected, record)
        encoder = self._encoder
        if completion is None or encoder is None:
            return None
        view = decode_chat(completion, encoder.upstream)
        upstream = encoder.upstream
        message = message_from_chat(view, self.message_id, encoder.model, self.stops, upstream)
        if encoder.stop is not None:
            message.stop_reason, message.stop_sequence = encoder.stop
        return _encode(message)

    def keepable(self, answer: bytes) -> bool:
        try:
            return _stop_view.decode(answer).stop_reason in CACHEABLE_STOPS
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False

    def from_cache(self, answer: bytes) -> bytes:
        message = _decode(answer)
        message["id"] = self.message_id
        return _encode(message)

    def replay(self, answer: bytes) -> list[bytes]:
        return replay(answer)


def decode_head(body: bytes) -> MessagesHead:
    return decode_typed(_head_decoder, body)


async def _encoded(
    chunks: AsyncIterator[list[bytes]], encoder: StreamEncoder
) -> AsyncIterator[list[bytes]]:
    """A translated stream's events; a failure after the start is an `error` event."""
    async with aclosing(chunks) as relayed:  # type: ignore[type-var]
        try:
            async for batch in relayed:
                frames = encoder.feed(batch)
                if frames:
                    yield frames
            ending = encoder.end()
            if ending:
                yield ending
        except ProxyError as exc:  # counted by the relay already
            yield [error_frame(exc)]


async def _failures_in_band(frames: AsyncIterator[list[bytes]]) -> AsyncIterator[list[bytes]]:
    """A native stream's events; a failure after the start is an `error` event."""
    async with aclosing(frames) as relayed:  # type: ignore[type-var]
        try:
            async for batch in relayed:
                yield batch
        except ProxyError as exc:
            yield [error_frame(exc)]
