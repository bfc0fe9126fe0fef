"""A whole response (a cache hit) replayed as the stream the API would have sent: created,
in_progress, each output item added, its text or arguments in deltas, done, and the
terminal event carrying the response."""

from __future__ import annotations

from typing import Any

from proxy.formats.responses.events import TERMINAL, EventWriter, empty_part, part_value

PIECE = 24  # characters per replayed delta


def replay_events(response: dict[str, Any]) -> list[bytes]:
    writer = EventWriter()
    start = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
    }
    frames = [
        writer.lifecycle("response.created", start),
        writer.lifecycle("response.in_progress", start),
    ]
    for index, item in enumerate(response.get("output") or ()):
        if item.get("type") == "message":
            frames.extend(_message(writer, index, item))
        elif item.get("type") == "function_call":
            frames.extend(_function_call(writer, index, item))
        else:  # an item of a native upstream's own kind: as it is
            frames += [writer.item_added(index, item), writer.item_done(index, item)]
    terminal = TERMINAL.get(str(response.get("status")), "response.completed")
    frames.append(writer.lifecycle(terminal, response))
    return frames


def _message(writer: EventWriter, index: int, item: dict[str, Any]) -> list[bytes]:
    ident = str(item.get("id"))
    frames = [writer.item_added(index, {**item, "status": "in_progress", "content": []})]
    for content, part in enumerate(item.get("content") or ()):
        kind, text = part_value(part)
        frames.append(writer.part_added(ident, index, content, empty_part(kind)))
        for start in range(0, len(text), PIECE):
            delta = text[start : start + PIECE]
            frames.append(writer.text_delta(ident, index, content, kind, delta))
        frames.append(writer.text_done(ident, index, content, kind, text))
        frames.append(writer.part_done(ident, index, content, part))
    frames.append(writer.item_done(index, item))
    return frames


def _function_call(writer: EventWriter, index: int, item: dict[str, Any]) -> list[bytes]:
    ident = str(item.get("id"))
    arguments = str(item.get("arguments") or "")
    frames = [writer.item_added(index, {**item, "status": "in_progress", "arguments": ""})]
    if arguments:
        frames.append(writer.arguments_delta(ident, index, arguments))
    frames.append(writer.arguments_done(ident, index, arguments))
    frames.append(writer.item_done(index, item))
    return frames
