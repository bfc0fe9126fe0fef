"""A Messages body decoded and its turns made into typed content blocks, and the proxy's
token estimate of them.

Every malformed field is a 400 naming it, as Anthropic would answer. Text, image, tool_use
and tool_result blocks are typed and checked; any other block type is kept by name only: a
native route gets the client's body as written, and a translated route refuses what it has
no equivalent for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from proxy.errors import InvalidRequestError
from proxy.formats.messages.wire import (
    Block,
    ImageBlock,
    MessagesHead,
    OtherBlock,
    SystemText,
    TextBlock,
    ToolResultBlock,
    ToolResultParam,
    ToolUseBlock,
)

PER_MESSAGE_TOKENS = 4
BYTES_PER_TOKEN = 4
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_S = TypeVar("_S")
_TYPED: dict[str, type[TextBlock | ImageBlock | ToolUseBlock]] = {
    "text": TextBlock,
    "image": ImageBlock,
    "tool_use": ToolUseBlock,
}
_KINDS: dict[type, str] = {kind: name for name, kind in _TYPED.items()}
_KINDS[ToolResultBlock] = "tool_result"


@dataclass(slots=True)
class Turn:
    role: str  # user | assistant
    content: str | list[Block]


def read_turns(head: MessagesHead) -> list[Turn]:
    """Every message's content as typed blocks (a string stays a string)."""
    turns: list[Turn] = []
    for i, message in enumerate(head.messages):
        content = message.content
        if isinstance(content, str):
            turns.append(Turn(message.role, content))
            continue
        path = f"messages[{i}].content"
        turns.append(
            Turn(message.role, [block(raw, f"{path}[{j}]") for j, raw in enumerate(content)])
        )
    return turns


def block(raw: dict[str, Any], path: str) -> Block:
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise InvalidRequestError("A content block needs a string `type`.", param=f"{path}.type")
    if kind == "tool_result":
        return _tool_result(_typed(raw, ToolResultParam, path), path)
    typed = _TYPED.get(kind)
    return _typed(raw, typed, path) if typed is not None else OtherBlock(kind)


def kind_of(item: Block) -> str:
    """A block's `type` as the client wrote it."""
    return item.type if isinstance(item, OtherBlock) else _KINDS[type(item)]


def _tool_result(param: ToolResultParam, path: str) -> ToolResultBlock:
    content = param.content
    if isinstance(content, list):
        inner = [block(raw, f"{path}.content[{k}]") for k, raw in enumerate(content)]
        typed = [b for b in inner if isinstance(b, TextBlock | ImageBlock | OtherBlock)]
        if len(typed) != len(inner):
            raise InvalidRequestError(
                "A tool_result cannot hold tool_use or tool_result blocks.",
                param=f"{path}.content",
            )
        return ToolResultBlock(param.tool_use_id, typed, bool(param.is_error))
    return ToolResultBlock(param.tool_use_id, content or "", bool(param.is_error))


def _typed(raw: dict[str, Any], kind: type[_S], path: str) -> _S:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise invalid(exc, path) from None


def decode_typed(decoder: msgspec.json.Decoder[_S], body: bytes) -> _S:
    """A body decoded as `decoder` types it; every failure is a 400 naming the field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid(exc, "") from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("The request body is not valid JSON.") from None


def invalid(exc: msgspec.ValidationError, path: str) -> InvalidRequestError:
    """msgspec's complaint as a 400 whose `param` is the field's path below `path`."""
    message = str(exc)
    found = _AT_PATH.search(message)
    where = found.group(1) if found else ""
    missing = _MISSING.search(message)
    if missing:
        where = f"{where}.{missing.group(1)}" if where else missing.group(1)
    param = ".".join(p for p in (path, where) if p) or None
    reason = _AT_PATH.sub("", message)
    return InvalidRequestError(
        f"Invalid request: {reason}" + (f" (at '{param}')" if param else ""), param=param
    )


def system_text(system: str | Sequence[SystemText] | None) -> str:
    """The system prompt as one text (its text blocks joined by newlines)."""
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(part.text for part in system if part.text)


# -- the estimate -------------------------------------------------------------------------------


def estimate_tokens(head: MessagesHead, turns: list[Turn]) -> int:
    """UTF-8 bytes of text / 4, + 4 per message of the chat form the request translates to
    (the system prompt, one per turn, one more per tool result): the chat door's estimate
    of the same conversation."""
    size = len(system_text(head.system).encode())
    messages = 1 if size else 0
    for turn in turns:
        turn_size, turn_messages = _turn_size(turn)
        size += turn_size
        messages += turn_messages
    return size // BYTES_PER_TOKEN + PER_MESSAGE_TOKENS * messages


def _turn_size(turn: Turn) -> tuple[int, int]:
    """(bytes of text, chat messages) of one turn."""
    if isinstance(turn.content, str):
        return len(turn.content.encode()), 1
    size = 0
    results = 0
    for item in turn.content:
        if isinstance(item, ToolResultBlock):
            results += 1
            size += _text_size(item.content)
        elif isinstance(item, TextBlock):
            size += len(item.text.encode())
    others = len(turn.content) > results or turn.role == "assistant"
    return size, results + (1 if others else 0)


def _text_size(content: str | Sequence[Block]) -> int:
    if isinstance(content, str):
        return len(content.encode())
    return sum(len(b.text.encode()) for b in content if isinstance(b, TextBlock))
