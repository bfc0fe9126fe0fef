"""Cached answers are stored as one chat.completion. A streamed answer is assembled into one;
a hit for a streaming request is replayed as a proper stream (role chunk, content in
several chunks, tool-call deltas, finish chunk, usage chunk when asked)."""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
PIECE = 24  # characters per replayed content chunk
CACHEABLE_FINISH = frozenset({"stop", "length", "tool_calls"})


class StreamAssembler:
    """Folds chunk objects into the chat.completion they describe."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            self._fold(choice)

    def _fold(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        state = self.choices.setdefault(
            index, {"content": [], "tools": {}, "finish_reason": None, "refusal": []}
        )
        delta = choice.get("delta") or {}
        if delta.get("content"):
            state["content"].append(delta["content"])
        if delta.get("refusal"):
            state["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            tool = state["tools"].setdefault(
                call.get("index", 0), {"id": None, "type": "function", "name": "", "arguments": []}
            )
            tool["id"] = call.get("id") or tool["id"]
            function = call.get("function") or {}
            tool["name"] += function.get("name") or ""
            tool["arguments"].append(function.get("arguments") or "")
        if choice.get("finish_reason"):
            state["finish_reason"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any] | None:
        """The assembled completion, or None when it must not be cached (unfinished, or
        finished for a reason other than stop/length/tool_calls)."""
        if not self.choices:
            return None
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            if state["finish_reason"] not in CACHEABLE_FINISH:
                return None
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(state["content"]) or None,
                "refusal": "".join(state["refusal"]) or None,
            }
            if state["tools"]:
                message["tool_calls"] = [
                    {
                        "id": tool["id"],
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": "".join(tool["arguments"])},
                    }
                    for _, tool in sorted(state["tools"].items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": state["finish_reason"],
                }
            )
        return {**self.head, "object": "chat.completion", "choices": choices, "usage": self.usage}


def cacheable(completion: dict[str, Any]) -> bool:
    choices = completion.get("choices")
    if not isinstance(choices, list):
        return False
    return bool(choices) and all(
        isinstance(c, dict) and c.get("finish_reason") in CACHEABLE_FINISH for c in choices
    )


def replay(completion: dict[str, Any], include_usage: bool) -> list[bytes]:
    """The completion as stream chunk payloads, in OpenAI's order."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    chunks: list[bytes] = []
    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}

        def emit(delta: dict[str, Any], finish: str | None = None, at: int = index) -> None:
            chunks.append(
                _encode(
                    {
                        **base,
                        "choices": [
                            {"index": at, "delta": delta, "logprobs": None, "finish_reason": finish}
                        ],
                    }
                )
            )

        emit({"role": "assistant", "content": ""})
        content = message.get("content") or ""
        for start in range(0, len(content), PIECE):
            emit({"content": content[start : start + PIECE]})
        for number, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            opening = {
                "index": number,
                "id": call.get("id"),
                "type": "function",
                "function": {"name": function.get("name"), "arguments": ""},
            }
            emit({"tool_calls": [opening]})
            arguments = function.get("arguments") or ""
            for start in range(0, len(arguments), PIECE):
                piece = arguments[start : start + PIECE]
                emit({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})
        emit({}, choice.get("finish_reason"))
    if include_usage and completion.get("usage"):
        chunks.append(_encode({**base, "choices": [], "usage": completion["usage"]}))
    return chunks
