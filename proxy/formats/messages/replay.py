"""A whole message and its stream, both ways: a native stream's events folded into the message
they describe (for the cache), and a cached message replayed as the events Anthropic would
have sent (text as one `text_delta`, a tool's input as one `input_json_delta`, thinking as
`thinking_delta` + `signature_delta`, any other block whole in its `content_block_start`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from proxy.formats.messages.events import frame_raw, payload_of

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
Data = dict[str, Any]


# -- events -> message ----------------------------------------------------------------------------


class _Folder:
    """Folds one stream's events into its message; `broken` when one could not be folded."""

    def __init__(self) -> None:
        self.message: Data | None = None
        self.inputs: dict[int, str] = {}  # tool input JSON by block index
        self.stopped = False
        self.broken = False
        self._handlers: dict[str, Callable[[Data], None]] = {
            "message_start": self._start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._stop,
        }

    def add(self, event: Data) -> None:
        handler = self._handlers.get(str(event.get("type")))
        if handler is not None:  # ping, and events that carry nothing of the answer
            handler(event)

    def _start(self, event: Data) -> None:
        message = event.get("message")
        self.message = {**message, "content": []} if isinstance(message, dict) else None
        self.broken = self.message is None

    def _block(self, event: Data) -> Data | None:
        index = event.get("index")
        content = self.message.get("content") if self.message is not None else None
        if not isinstance(content, list) or not isinstance(index, int) or index >= len(content):
            self.broken = True
            return None
        block: Data = content[index]
        return block

    def _block_start(self, event: Data) -> None:
        block = event.get("content_block")
        if self.message is None or not isinstance(block, dict):
            self.broken = True
            return
        self.message["content"].append(dict(block))

    def _block_delta(self, event: Data) -> None:
        block, delta = self._block(event), event.get("delta")
        if block is None or not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = str(block.get("text", "")) + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            index = int(event["index"])
            self.inputs[index] = self.inputs.get(index, "") + str(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = str(block.get("thinking", "")) + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))
        else:
            self.broken = True  # a delta this proxy cannot fold: do not keep a wrong answer

    def _block_stop(self, event: Data) -> None:
        block = self._block(event)
        text = self.inputs.pop(int(event["index"]), None) if block is not None else None
        if block is None or text is None or not text.strip():
            return
        try:
            block["input"] = _decode(text)
        except msgspec.DecodeError:
            self.broken = True

    def _message_delta(self, event: Data) -> None:
        delta, usage = event.get("delta"), event.get("usage")
        if self.message is None:
            self.broken = True
            return
        if isinstance(delta, dict):
            self.message.update(delta)
        if isinstance(usage, dict):
            known = self.message.get("usage")
            self.message["usage"] = {**(known if isinstance(known, dict) else {}), **usage}

    def _stop(self, event: Data) -> None:
        self.stopped = True


def assemble_native(frames: list[bytes]) -> bytes | None:
    """A native stream's frames as one message (None: it did not end properly)."""
    folder = _Folder()
    for framed in frames:
        try:
            event = _decode(payload_of(framed))
        except (msgspec.DecodeError, ValueError):
            return None
        if isinstance(event, dict):
            folder.add(event)
        if folder.broken:
            return None
    if folder.message is None or not folder.stopped:
        return None
    return _encode(folder.message)


# -- message -> events ----------------------------------------------------------------------------


def _event(name: str, data: Data) -> bytes:
    framed = frame_raw(name.encode(), _encode({"type": name, **data}))
    assert framed is not None
    return framed


def _block_events(index: int, block: Data) -> list[bytes]:
    kind = block.get("type")
    deltas: list[Data] = []
    start = block
    if kind == "text":
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind == "tool_use":
        start = {**block, "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": _encode(block.get("input", {})).decode()}
        ]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            {"type": "signature_delta", "signature": block.get("signature", "")},
        ]
    events = [_event("content_block_start", {"index": index, "content_block": start})]
    events += [_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    events.append(_event("content_block_stop", {"index": index}))
    return events


def replay(answer: bytes) -> list[bytes]:
    """A whole message as its stream's frames."""
    message: Data = _decode(answer)
    known = message.get("usage")
    usage: Data = known if isinstance(known, dict) else {}
    shell = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    frames = [_event("message_start", {"message": shell})]
    for index, block in enumerate(message.get("content") or ()):
        if isinstance(block, dict):
            frames += _block_events(index, block)
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    frames.append(_event("message_delta", {"delta": delta, "usage": usage}))
    frames.append(_event("message_stop", {}))
    return frames
