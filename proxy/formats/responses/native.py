"""Answers from an upstream that speaks the Responses API itself: its response object with
the public model name swapped in, usage and status noted; its stream events framed for the
client, relabelled the same way, a failure event turned into the relay's failure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from proxy.errors import ProxyError, UpstreamError
from proxy.formats.responses.events import EventWriter
from proxy.formats.responses.wire import sse
from proxy.wire import upstream_object

if TYPE_CHECKING:
    from proxy.accounting import RequestRecord
    from proxy.relay import StreamContext

_encode = msgspec.json.Encoder().encode
LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
    }
)
FINAL = frozenset({"response.completed", "response.incomplete"})
FAILURES = frozenset({"error", "response.failed"})


def relabel(response: dict[str, Any], public: str, record: RequestRecord) -> None:
    """The public model name in place of the upstream's; what it says noted on `record`."""
    model = response.get("model")
    if isinstance(model, str):
        record.upstream_model = model
    response["model"] = public
    usage = response.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
        record.prompt_tokens = prompt if isinstance(prompt, int) else 0
        record.completion_tokens = completion if isinstance(completion, int) else 0
    status = response.get("status")
    if isinstance(status, str) and status != "in_progress":
        record.finish_reasons = [status]


def native_answer(reply: bytes, public: str, upstream: str, record: RequestRecord) -> bytes:
    response = upstream_object(reply, upstream)
    if not isinstance(response.get("id"), str) or not isinstance(response.get("output"), list):
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not a response.")
    relabel(response, public, record)
    return _encode(response)


class _EventView(msgspec.Struct):
    type: str
    sequence_number: int | None = None
    delta: Any = None


_view = msgspec.json.Decoder(_EventView)


class NativeEvents:
    """The relay's rewriter for a native stream: each event as one SSE frame."""

    def __init__(self, context: StreamContext) -> None:
        self.context = context
        self.snapshot: dict[str, Any] = {}  # the response as the last lifecycle event had it
        self.final: dict[str, Any] | None = None
        self.next_sequence = 0

    def __call__(self, payload: bytes) -> bytes:
        upstream = self.context.upstream
        try:
            view = _view.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            message = f"The upstream '{upstream}' sent an event that is not one."
            raise UpstreamError(message) from None
        if view.type in FAILURES:
            raise UpstreamError(f"The upstream '{upstream}' failed during the stream.")
        if view.sequence_number is not None:
            self.next_sequence = view.sequence_number + 1
        if isinstance(view.delta, str):
            self.context.record.relayed_bytes += len(view.delta)
        if view.type in LIFECYCLE:
            payload = self._lifecycle(view.type, payload)
        return sse(view.type, payload)

    def _lifecycle(self, kind: str, payload: bytes) -> bytes:
        event = upstream_object(payload, self.context.upstream)
        response = event.get("response")
        if not isinstance(response, dict):
            return payload
        relabel(response, self.context.public_model, self.context.record)
        self.snapshot = response
        if kind in FINAL:
            self.final = response
        return _encode(event)

    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        out: list[bytes] = []
        for event in events:
            try:
                out.append(self(event))
            except ProxyError as exc:
                return out, exc
        return out, None

    @property
    def complete(self) -> bool:
        return self.final is not None

    def failed(self, error: ProxyError) -> list[bytes]:
        return [EventWriter(self.next_sequence).failed(self.snapshot, error)]
