"""The Responses API's stream events, numbered as they are written (`sequence_number` from 0,
one more per event), each one complete SSE frame. Shared by the stream encoder, the replay
of a whole response and the failure event."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.errors import ProxyError, RateLimitError
from proxy.formats.responses.wire import frame

_encode = msgspec.json.Encoder().encode

TERMINAL = {"completed": "response.completed", "incomplete": "response.incomplete"}
_DELTA = {"output_text": "response.output_text.delta", "refusal": "response.refusal.delta"}
_DONE = {"output_text": "response.output_text.done", "refusal": "response.refusal.done"}
_VALUE = {"output_text": "text", "refusal": "refusal"}


class EventWriter:
    def __init__(self, sequence: int = 0) -> None:
        self.sequence = sequence
        self._part: tuple[str, int, int, str] | None = None  # where the last delta went
        self._delta_head = self._delta_tail = b""

    def emit(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return frame(event)

    def lifecycle(self, kind: str, response: dict[str, Any]) -> bytes:
        return self.emit(kind, response=response)

    def item_added(self, index: int, item: dict[str, Any]) -> bytes:
        return self.emit("response.output_item.added", output_index=index, item=item)

    def item_done(self, index: int, item: dict[str, Any]) -> bytes:
        return self.emit("response.output_item.done", output_index=index, item=item)

    def part_added(self, ident: str, index: int, content: int, part: dict[str, Any]) -> bytes:
        return self.emit(
            "response.content_part.added",
            item_id=ident,
            output_index=index,
            content_index=content,
            part=part,
        )

    def part_done(self, ident: str, index: int, content: int, part: dict[str, Any]) -> bytes:
        return self.emit(
            "response.content_part.done",
            item_id=ident,
            output_index=index,
            content_index=content,
            part=part,
        )

    def text_delta(self, ident: str, index: int, content: int, kind: str, delta: str) -> bytes:
        """The most frequent event, made from bytes kept per part (the same JSON `emit`
        would write, without a dict and an encode per token)."""
        where = (ident, index, content, kind)
        if self._part != where:
            self._part = where
            event = {"type": _DELTA[kind], "item_id": ident, "output_index": index,
                     "content_index": content}  # fmt: skip
            head = frame(event)
            self._delta_head = head[: head.rindex(b"}")] + b',"delta":'
            self._delta_tail = b',"logprobs":[]' if kind == "output_text" else b""
        sequence = self.sequence
        self.sequence += 1
        return b"".join(
            (
                self._delta_head,
                _encode(delta),
                self._delta_tail,
                b',"sequence_number":',
                str(sequence).encode(),
                b"}\n\n",
            )
        )

    def text_done(self, ident: str, index: int, content: int, kind: str, value: str) -> bytes:
        extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        fields = {_VALUE[kind]: value, **extra}
        return self.emit(
            _DONE[kind], item_id=ident, output_index=index, content_index=content, **fields
        )

    def arguments_delta(self, ident: str, index: int, delta: str) -> bytes:
        return self.emit(
            "response.function_call_arguments.delta", item_id=ident, output_index=index, delta=delta
        )

    def arguments_done(self, ident: str, index: int, arguments: str) -> bytes:
        return self.emit(
            "response.function_call_arguments.done",
            item_id=ident,
            output_index=index,
            arguments=arguments,
        )

    def failed(self, response: dict[str, Any], error: ProxyError) -> bytes:
        """`response.failed`: the response as far as it got, with the error that ended it."""
        code = "rate_limit_exceeded" if isinstance(error, RateLimitError) else "server_error"
        failure = {"code": code, "message": error.message}
        return self.lifecycle("response.failed", {**response, "status": "failed", "error": failure})


def empty_part(kind: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": ""}
    return {"type": "output_text", "text": "", "annotations": [], "logprobs": []}


def part_value(part: dict[str, Any]) -> tuple[str, str]:
    """(kind, text) of a message content part (kinds other than refusal count as text)."""
    if part.get("type") == "refusal":
        return "refusal", str(part.get("refusal") or "")
    return "output_text", str(part.get("text") or "")
