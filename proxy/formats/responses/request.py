"""One Responses API request through the pipeline: the client's body for routes that speak the
Responses API, its chat-completions translation for every other route, and the answer (JSON
or events) as a response object either way; kept in the store when `store` is on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from proxy.config import ParamBounds
from proxy.errors import ProxyError
from proxy.formats.base import FrontRequest
from proxy.formats.chat import count_usage
from proxy.formats.params import apply_params
from proxy.formats.responses.encoder import ChatChunksAsEvents, StreamEncoder
from proxy.formats.responses.inputs import estimate_tokens, listed
from proxy.formats.responses.native import NativeEvents, native_answer
from proxy.formats.responses.replay import replay_events
from proxy.formats.responses.reply import (
    INCOMPLETE,
    completion_choice,
    finished,
    output_items,
    shell,
    usage_of,
)
from proxy.formats.responses.store import Conversation, ResponseStore, StoredResponse
from proxy.formats.responses.streams import StreamCodec, encoded
from proxy.formats.responses.translate import NotTranslatable, chat_body
from proxy.formats.responses.wire import ResponsesHead, decode_head, item_id, response_id
from proxy.upstreams.base import Api, UpstreamCall
from proxy.wire import upstream_object

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.policy import Route
    from proxy.relay import StreamContext

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
# a model's params are named as chat fields: their names here (None: no such field)
PARAM_NAMES = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_logprobs": "top_logprobs",
}
KEEPABLE = frozenset({("completed", None), ("incomplete", "max_output_tokens")})


class _Status(msgspec.Struct):
    id: str
    status: str | None = None
    incomplete_details: dict[str, Any] | None = None


_status = msgspec.json.Decoder(_Status)


class ResponsesRequest(FrontRequest):
    api: Api = "responses"

    def __init__(
        self,
        body: bytes,
        fields: dict[str, msgspec.Raw],
        head: ResponsesHead,
        items: list[dict[str, Any]],
        conversation: Conversation,
        store: ResponseStore | None,
        owner: str,
    ) -> None:
        self.key_body = body
        self.fields = fields
        self.items = items  # this request's input items (checked)
        self.conversation = conversation  # what it continues (previous_response_id)
        self.store = store
        self.owner = owner
        self.response_id = response_id()
        self.created_at = int(time.time())
        self.native_upstream: str | None = None  # the upstream that answered natively
        self.codec: StreamCodec | None = None  # the stream being relayed, when one is
        self._kept = False
        self._read(head)

    def _read(self, head: ResponsesHead) -> None:
        self.head = head
        self.model = head.model
        self.stream = bool(head.stream)
        self.tools = bool(head.tools)
        self.deterministic = head.temperature == 0
        self.cacheable = head.previous_response_id is None
        self.preferred_upstream = self.conversation.upstream
        history = self.conversation.items
        self._estimate = estimate_tokens(head.instructions, [*history, *self.items])
        self.chat: dict[str, Any] | None = None
        self.untranslatable: NotTranslatable | None = None
        try:
            self.chat = chat_body(head, history, self.items)
        except NotTranslatable as exc:
            self.untranslatable = exc

    @property
    def estimate(self) -> int:
        return self._estimate

    def apply_params(self, params: Mapping[str, ParamBounds]) -> None:
        names = {name: PARAM_NAMES.get(name) for name in params}
        if apply_params(self.fields, params, names):
            self.key_body = _encode(self.fields)
            self._read(decode_head(self.key_body))

    def serves(self, formats: frozenset[str]) -> bool:
        return self.api in formats or ("chat" in formats and self.untranslatable is None)

    def unsupported(self, model: str) -> ProxyError:
        if self.untranslatable is not None:
            return self.untranslatable.error()
        return super().unsupported(model)

    # -- the call ---------------------------------------------------------------------------

    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        drop = route.drop_params
        if self.api in route.serves:
            body = self._native_body(route.upstream, upstream_model, drop)
            return UpstreamCall(body, upstream_model, route.timeouts, request_id, drop, "responses")
        if self.chat is None:
            raise self.unsupported(self.model)
        chat = {**self.chat, "model": upstream_model}
        if self.stream:
            chat.update(stream=True, stream_options={"include_usage": True})
        for name in drop:
            chat.pop(name, None)
        return UpstreamCall(_encode(chat), upstream_model, route.timeouts, request_id, drop)

    def _native_body(self, upstream: str, model: str, drop: frozenset[str]) -> bytes:
        """The client's body, `model` rewritten; a conversation the upstream did not make
        itself is sent whole instead of by its id."""
        out = {**self.fields, "model": msgspec.Raw(_encode(model))}
        if self.head.previous_response_id is not None and upstream != self.conversation.upstream:
            del out["previous_response_id"]
            history = [_as_input(item) for item in self.conversation.items]
            out["input"] = msgspec.Raw(_encode([*history, *self.items]))
        for name in drop:
            out.pop(name, None)
        return _encode(out)

    # -- the answer -------------------------------------------------------------------------

    def _shell(self, public: str) -> dict[str, Any]:
        return shell(self.head, self.response_id, self.created_at, public)

    def answer(
        self, reply: bytes, call: UpstreamCall, public: str, upstream: str, record: RequestRecord
    ) -> bytes:
        if call.api == "responses":
            self.native_upstream = upstream
            return native_answer(reply, public, upstream, record)
        completion = upstream_object(reply, upstream)
        message, finish = completion_choice(completion, upstream)
        model, usage = completion.get("model"), completion.get("usage")
        record.upstream_model = model if isinstance(model, str) else None
        finish = finish if isinstance(finish, str) else None
        record.finish_reasons = [finish] if finish else []
        count_usage(record, usage)
        status = "incomplete" if finish in INCOMPLETE else "completed"
        counted = usage_of(record.prompt_tokens, record.completion_tokens, usage)
        output = output_items(message, status)
        return _encode(finished(self._shell(public), output, finish, counted))

    def relay(
        self,
        first: list[bytes],
        events: AsyncIterator[list[bytes]],
        context: StreamContext,
        call: UpstreamCall,
    ) -> AsyncIterator[list[bytes]]:
        from proxy.formats.responses.streams import NativeCodec, TranslatedCodec
        from proxy.relay import open_relay

        codec: StreamCodec
        if call.api == "responses":
            native = NativeEvents(context)
            inner = open_relay(first, events, context, native)
            self.native_upstream = context.upstream
            codec = NativeCodec(native)
        else:
            encoder = StreamEncoder(self._shell(context.public_model))
            opening = encoder.start()  # numbered before the first batch's events
            reader = ChatChunksAsEvents(encoder, context.record, context.upstream)
            inner = open_relay(first, events, context, reader)
            codec = TranslatedCodec(encoder, context.record, opening)
        self.codec = codec
        return encoded(inner, codec, self._keep_streamed)

    def whole(self, collected: list[bytes], record: RequestRecord) -> bytes | None:
        return self.codec.whole() if self.codec is not None else None

    async def _keep_streamed(self) -> None:
        """Before the client sees a stream's last event: a stored response can be
        continued as soon as the client knows its id."""
        if self.store is None or self._kept:
            return  # nothing to keep (the whole response is made only if asked for)
        answer = self.codec.whole() if self.codec is not None else None
        if answer is not None:
            await self.finish(answer)

    # -- the cache and the store -----------------------------------------------------------

    def keepable(self, answer: bytes) -> bool:
        view = _status.decode(answer)
        reason = (view.incomplete_details or {}).get("reason")
        return (view.status, reason) in KEEPABLE

    def from_cache(self, answer: bytes) -> bytes:
        """A cached response as a new one: fresh ids and time, this request's own settings
        where they do not change the answer."""
        response = _decode(answer)
        response.update(id=self.response_id, created_at=self.created_at)
        shell = self._shell(str(response.get("model")))
        for name in ("store", "metadata", "user", "previous_response_id"):
            response[name] = shell[name]
        for item in response.get("output") or ():
            prefix = str(item.get("id", "item")).partition("_")[0]
            item["id"] = item_id(prefix)
        return _encode(response)

    def replay(self, answer: bytes) -> list[bytes]:
        return replay_events(_decode(answer))

    @property
    def keeps_answer(self) -> bool:
        return self.store is not None

    async def finish(self, answer: bytes) -> None:
        if self._kept or self.store is None:
            return
        self._kept = True
        stored = StoredResponse(
            owner=self.owner,
            response=msgspec.Raw(answer),
            input=listed(self.items),
            previous=self.head.previous_response_id,
            upstream=self.native_upstream,
        )
        # shielded: a client that leaves now must not cost the conversation its last turn
        await asyncio.shield(self.store.save(_status.decode(answer).id, stored))


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item sent back as input: the ids the proxy gave the caller's own messages
    mean nothing upstream."""
    if item.get("type") == "message" and item.get("role") != "assistant":
        return {key: value for key, value in item.items() if key != "id"}
    return item
