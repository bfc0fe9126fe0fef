"""The chat-completions door: the canonical format, so nothing is translated. The body goes to
every route with only `model` rewritten; replies come back with the public model name, usage
read for accounting, and streams relayed chunk by chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from proxy.config import ParamBounds
from proxy.errors import InternalError, InvalidRequestError, ProxyError, UpstreamError
from proxy.formats.base import DecodeContext, FrontRequest
from proxy.formats.params import apply_params
from proxy.upstreams.base import Api, UpstreamCall
from proxy.wire import (
    ChatRequestHead,
    decode_chat_head,
    top_level,
    upstream_body,
    upstream_object,
)

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.policy import Route
    from proxy.relay import StreamContext

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"
PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4


def estimate_prompt_tokens(head: ChatRequestHead) -> int:
    """The proxy's cheap estimate: UTF-8 bytes of message text / 4, + 4 per message."""
    size = 0
    for message in head.messages:
        content = message.content
        if isinstance(content, str):
            size += len(content.encode())
        elif content:
            for part in content:
                text = part.get("text")
                if isinstance(text, str):
                    size += len(text.encode())
    return size // BYTES_PER_TOKEN + PER_MESSAGE_TOKENS * len(head.messages)


class ChatRequest(FrontRequest):
    api: Api = "chat"

    def __init__(self, body: bytes, fields: dict[str, msgspec.Raw], head: ChatRequestHead) -> None:
        self.key_body = body
        self.fields = fields
        self._estimate: int | None = None
        self._read(head)

    def _read(self, head: ChatRequestHead) -> None:
        self.head = head
        self.model = head.model
        self.stream = bool(head.stream)
        self.tools = bool(head.tools)
        self.wants_usage = bool(head.stream_options and head.stream_options.include_usage)
        self.deterministic = head.temperature == 0 or head.seed is not None

    @property
    def estimate(self) -> int:
        if self._estimate is None:
            self._estimate = estimate_prompt_tokens(self.head)
        return self._estimate

    def apply_params(self, params: Mapping[str, ParamBounds]) -> None:
        if apply_params(self.fields, params):
            self.key_body = _encode(self.fields)
            self._read(decode_chat_head(self.key_body))

    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        body = upstream_body(
            self.fields, self.head, upstream_model, route.drop_params, self.key_body
        )
        return UpstreamCall(body, upstream_model, route.timeouts, request_id, route.drop_params)

    def answer(
        self, reply: bytes, call: UpstreamCall, public: str, upstream: str, record: RequestRecord
    ) -> bytes:
        body, usage = rewrite_completion(reply, public, upstream, record)
        count_usage(record, usage)
        return body

    def relay(
        self,
        first: list[bytes],
        events: AsyncIterator[list[bytes]],
        context: StreamContext,
        call: UpstreamCall,
    ) -> AsyncIterator[list[bytes]]:
        from proxy.relay import open_relay

        rewriter = ChunkRewriter(context, self.wants_usage, self.head.n or 1)
        return open_relay(first, events, context, rewriter)

    def whole(self, collected: list[bytes], record: RequestRecord) -> bytes | None:
        return assemble(collected, record)

    def keepable(self, answer: bytes) -> bool:
        from proxy.cache.replay import cacheable

        return cacheable(_decode(answer))

    def replay(self, answer: bytes) -> list[bytes]:
        from proxy.cache.replay import replay

        return replay(_decode(answer), self.wants_usage)


def assemble(chunks: list[bytes], record: RequestRecord) -> bytes | None:
    """Relayed chunks as one chat.completion (None: not every choice finished normally)."""
    from proxy.cache.replay import StreamAssembler

    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(_decode(chunk))
    completion = assembler.completion()
    if completion is None:
        return None
    if not completion.get("usage"):  # the client did not ask for the usage chunk
        prompt, answered = record.prompt_tokens, record.completion_tokens
        completion["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": answered,
            "total_tokens": prompt + answered,
        }
    return _encode(completion)


class ChatDoor:
    api: Api = "chat"
    headers: frozenset[bytes] = frozenset()

    async def decode(self, body: bytes, context: DecodeContext) -> ChatRequest:
        fields = top_level(body)
        head = decode_chat_head(body)
        limit = context.policy.config.server.max_messages
        if len(head.messages) > limit:
            raise InvalidRequestError(f"Too many messages (at most {limit}).", param="messages")
        return ChatRequest(body, fields, head)

    def error_body(self, error: ProxyError) -> bytes:
        return error.body()

    def id_headers(self, request_id: str) -> dict[str, str]:
        return {"x-request-id": request_id}

    async def frames(self, batches: AsyncIterator[list[bytes]]) -> AsyncIterator[bytes]:
        """One write per batch: events that arrived together leave together. A failure after
        the first byte can no longer change the status: it is sent in-band as
        `data: {"error": {...}}`, then `data: [DONE]`."""
        try:
            async for batch in batches:
                yield b"".join([b"data: " + payload + b"\n\n" for payload in batch])
        except ProxyError as exc:
            yield b"data: " + exc.body() + b"\n\n"
        except Exception:
            logger.exception("stream failed")
            yield b"data: " + InternalError("The stream failed inside the proxy.").body() + b"\n\n"
        yield DONE

    def whole_frames(self, payloads: list[bytes]) -> bytes:
        return b"".join([b"data: " + payload + b"\n\n" for payload in payloads]) + DONE


CHAT = ChatDoor()


# -- replies ---------------------------------------------------------------------------------


class _FinishView(msgspec.Struct):
    finish_reason: Any = None


class _CompletionView(msgspec.Struct):
    """What the proxy reads of a reply: the rest stays bytes (a choice's message is skipped)."""

    choices: list[_FinishView]
    model: str | None = None
    usage: dict[str, Any] | None = None


_completion_view = msgspec.json.Decoder(_CompletionView)


def rewrite_completion(
    body: bytes, public_model: str, upstream: str, record: RequestRecord | None = None
) -> tuple[bytes, Any]:
    """The client's JSON reply (`model` swapped in place) and the upstream's `usage`."""
    try:
        view = _completion_view.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        upstream_object(body, upstream)  # not JSON, or not an object: say which
        raise UpstreamError(f"The upstream '{upstream}' sent a reply without choices.") from None
    if record is not None:
        record.upstream_model = view.model
        record.finish_reasons = [str(c.finish_reason) for c in view.choices if c.finish_reason]
    if view.model is not None:
        current = b'"model":' + _encode(view.model)
        position = body.find(current)
        if position >= 0:
            replaced = b'"model":' + _encode(public_model)
            return body[:position] + replaced + body[position + len(current) :], view.usage
    data = upstream_object(body, upstream)
    data["model"] = public_model
    return _encode(data), view.usage


def count_usage(record: RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        record.prompt_tokens = prompt if isinstance(prompt, int) else 0
        record.completion_tokens = completion if isinstance(completion, int) else 0


# -- streams ---------------------------------------------------------------------------------


class _DeltaView(msgspec.Struct):
    content: str | None = None


class _ChoiceView(msgspec.Struct):
    index: int = 0
    finish_reason: str | None = None
    delta: _DeltaView | None = None


class _ChunkView(msgspec.Struct):
    """What the proxy reads from a chunk; everything else is left as bytes."""

    model: str | None = None
    choices: list[_ChoiceView] | None = None
    usage: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    error: Any = None


_view_decoder = msgspec.json.Decoder(_ChunkView)
_batch_decoder = msgspec.json.Decoder(list[_ChunkView])


class ChunkRewriter:
    """Chunk bytes for the client: `model` swapped in place (a full decode and encode only
    when the bytes are not in the usual form), finish reasons and usage noted, the usage
    chunk the proxy asked for dropped when the client did not ask for it."""

    __slots__ = ("_public", "_upstream_model", "choices", "context", "finished", "wants_usage")

    def __init__(self, context: StreamContext, wants_usage: bool, choices: int) -> None:
        self.context = context
        self.wants_usage = wants_usage
        self.choices = choices
        self.finished: set[int] = set()
        self._public = b'"model":' + _encode(context.public_model)
        self._upstream_model: tuple[str, bytes] | None = None

    def __call__(self, event: bytes) -> bytes | None:
        context = self.context
        try:
            view = _view_decoder.decode(event)
        except msgspec.DecodeError:
            raise UpstreamError(
                f"The upstream '{context.upstream}' sent a chunk that is not JSON."
            ) from None
        except msgspec.ValidationError:
            return self._slow(event)
        return self._rewrite(event, view)

    def _rewrite(self, event: bytes, view: _ChunkView) -> bytes | None:
        """One chunk for the client, from its bytes and what the proxy read of them."""
        if view.error:
            raise UpstreamError(f"The upstream '{self.context.upstream}' failed during the stream.")
        record = self.context.record
        for choice in view.choices or ():
            if choice.finish_reason:
                self.finished.add(choice.index)
                record.finish_reasons.append(choice.finish_reason)
            if choice.delta is not None and choice.delta.content:
                record.relayed_bytes += len(choice.delta.content)
        if view.usage is not msgspec.UNSET and view.usage:
            count_usage(record, view.usage)
            if not self.wants_usage and not view.choices:
                return None  # the usage chunk the proxy asked for, not the client
        if view.model is None:
            return self._slow(event)
        record.upstream_model = view.model
        return self._swap_model(event, view.model)

    def _swap_model(self, event: bytes, model: str) -> bytes:
        cached = self._upstream_model
        if cached is None or cached[0] != model:
            cached = self._upstream_model = (model, b'"model":' + _encode(model))
        position = event.find(cached[1])
        if position < 0:
            return self._slow(event)
        return event[:position] + self._public + event[position + len(cached[1]) :]

    def _slow(self, event: bytes) -> bytes:
        chunk = upstream_object(event, self.context.upstream)
        chunk["model"] = self.context.public_model
        return _encode(chunk)

    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        """The rewritten chunks, and the failure that stopped the batch (the chunks before
        it still reach the client). A network read's chunks are read in one decoder call;
        when one of them is not in the usual form, each is taken on its own."""
        try:
            views = _batch_decoder.decode(b"[" + b",".join(events) + b"]")
        except (msgspec.DecodeError, msgspec.ValidationError):
            views = None
        if views is not None and len(views) != len(events):  # an event not one JSON value
            views = None
        out: list[bytes] = []
        try:
            if views is not None:
                for event, view in zip(events, views, strict=True):
                    payload = self._rewrite(event, view)
                    if payload is not None:
                        out.append(payload)
            else:
                for event in events:
                    payload = self(event)
                    if payload is not None:
                        out.append(payload)
        except ProxyError as exc:
            return out, exc
        return out, None

    @property
    def complete(self) -> bool:
        return len(self.finished) >= self.choices
