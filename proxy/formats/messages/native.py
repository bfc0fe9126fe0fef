"""A native stream: an Anthropic route's events passed on as they came, each framed under its
own name, with the public model name in `message_start`. Usage and the stop reason are noted
on the request's record as they pass; the stream is complete at `message_stop`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from proxy.errors import ProxyError, UpstreamError
from proxy.formats.messages.events import frame_raw
from proxy.formats.messages.reply import NativeUsage, note_native_usage

if TYPE_CHECKING:
    from proxy.relay import StreamContext

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class _Delta(msgspec.Struct):
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Start(msgspec.Struct):
    model: str | None = None
    usage: NativeUsage | None = None


class _Event(msgspec.Struct):
    type: str
    message: _Start | None = None
    delta: _Delta | None = None
    usage: NativeUsage | None = None


_event_view = msgspec.json.Decoder(_Event)


class NativeRewriter:
    """The relay's rewriter for Anthropic events: frames out, failures raised."""

    def __init__(self, context: StreamContext) -> None:
        self.context = context
        self.done = False
        self.usage = NativeUsage()

    def batch(self, events: list[bytes]) -> tuple[list[bytes], ProxyError | None]:
        out: list[bytes] = []
        for raw in events:
            try:
                framed = self._one(raw)
            except ProxyError as exc:
                return out, exc
            if framed is not None:
                out.append(framed)
        return out, None

    @property
    def complete(self) -> bool:
        return self.done

    def _one(self, raw: bytes) -> bytes | None:
        upstream = self.context.upstream
        try:
            event = _event_view.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise UpstreamError(
                f"The upstream '{upstream}' sent an event that is not JSON."
            ) from None
        kind = event.type
        if kind == "message_start":
            raw = self._relabel(raw, event)
        elif kind == "content_block_delta" and event.delta is not None:
            piece = event.delta.text or event.delta.partial_json or ""
            self.context.record.relayed_bytes += len(piece)
        elif kind == "message_delta":
            self._finish(event)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise UpstreamError(f"The upstream '{upstream}' failed during the stream.")
        return frame_raw(kind.encode(), raw)

    def _relabel(self, raw: bytes, event: _Event) -> bytes:
        record = self.context.record
        start = event.message
        if start is not None:
            record.upstream_model = start.model
            self._note(start.usage)
        data: Any = _decode(raw)
        message = data.get("message")
        if isinstance(message, dict):
            message["model"] = self.context.public_model
        return _encode(data)

    def _finish(self, event: _Event) -> None:
        if event.delta is not None and event.delta.stop_reason:
            self.context.record.finish_reasons.append(event.delta.stop_reason)
        self._note(event.usage)

    def _note(self, usage: NativeUsage | None) -> None:
        """message_delta's counts are cumulative and win where given."""
        if usage is None:
            return
        merged = {
            name: value
            for name in NativeUsage.__struct_fields__
            if (value := getattr(usage, name)) is not None
        }
        self.usage = msgspec.structs.replace(self.usage, **merged)
        note_native_usage(self.context.record, self.usage)
