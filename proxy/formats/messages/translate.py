"""A Messages request made into the canonical chat-completions body, as pure functions.

`system` becomes the first (system) message; text and image blocks become content parts;
an assistant's `tool_use` blocks become its `tool_calls` and each `tool_result` a `tool`
message (before the rest of its turn, as chat wants them right after the calls); `tools`
become function tools and `tool_choice` auto / any / tool / none the chat choices auto /
required / a function / none. `max_tokens`, `stop_sequences` (as `stop`), `temperature` and
`top_p` are kept; `top_k`, `thinking`, `metadata`, `cache_control` and every other field have
no chat equivalent and are left out. Thinking blocks of earlier answers are left out too;
anything else a chat upstream cannot take is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from proxy.errors import InvalidRequestError
from proxy.formats.messages.blocks import Turn, kind_of, system_text
from proxy.formats.messages.wire import (
    Block,
    ImageBlock,
    ImageSource,
    MessagesHead,
    OtherBlock,
    TextBlock,
    ToolChoiceParam,
    ToolParam,
    ToolResultBlock,
    ToolUseBlock,
)

_encode = msgspec.json.Encoder().encode
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
ERROR_PREFIX = "Error: "  # how a tool_result with is_error reads in a chat tool message


def chat_fields(head: MessagesHead, turns: list[Turn]) -> dict[str, Any]:
    """Every field of the chat body but `model` and the stream options."""
    messages: list[dict[str, Any]] = []
    system = system_text(head.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if turn.role == "user":
            messages.extend(user_messages(turn, i))
        else:
            messages.append(assistant_message(turn, i))
    fields: dict[str, Any] = {"messages": messages, "max_tokens": head.max_tokens}
    if head.stop_sequences:
        fields["stop"] = head.stop_sequences
    if head.temperature is not None:
        fields["temperature"] = head.temperature
    if head.top_p is not None:
        fields["top_p"] = head.top_p
    if head.tools:
        fields["tools"] = [function_tool(tool, i) for i, tool in enumerate(head.tools)]
        fields.update(tool_choice(head.tool_choice))
    return fields


def chat_body(
    fields: dict[str, Any], model: str, *, stream: bool, drop: Iterable[str] = ()
) -> bytes:
    """The chat body for one route (a stream asks for its usage chunk)."""
    body = {"model": model, **fields}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for name in drop:
        if name != "model":
            body.pop(name, None)
    return _encode(body)


# -- turns ----------------------------------------------------------------------------------------


def user_messages(turn: Turn, i: int) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages, then the rest as one user message."""
    if isinstance(turn.content, str):
        return [{"role": "user", "content": turn.content}]
    path = f"messages[{i}].content"
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, item in enumerate(turn.content):
        if isinstance(item, ToolResultBlock):
            out.append(tool_message(item, f"{path}[{j}]"))
            continue
        part = content_part(item, f"{path}[{j}]")
        if part is not None:
            parts.append(part)
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def assistant_message(turn: Turn, i: int) -> dict[str, Any]:
    if isinstance(turn.content, str):
        return {"role": "assistant", "content": turn.content}
    path = f"messages[{i}].content"
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, item in enumerate(turn.content):
        if isinstance(item, TextBlock):
            texts.append(item.text)
        elif isinstance(item, ToolUseBlock):
            arguments = _encode(item.input).decode()
            function = {"name": item.name, "arguments": arguments}
            calls.append({"id": item.id, "type": "function", "function": function})
        elif not (isinstance(item, OtherBlock) and item.type in _DROPPED_BLOCKS):
            raise _untranslatable(item, f"{path}[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def tool_message(result: ToolResultBlock, path: str) -> dict[str, Any]:
    content = result.content
    if not isinstance(content, str):
        for k, item in enumerate(content):
            if not isinstance(item, TextBlock):
                raise _untranslatable(item, f"{path}.content[{k}]")
        content = "\n".join(item.text for item in content if isinstance(item, TextBlock))
    if result.is_error and not content.startswith(ERROR_PREFIX):
        content = ERROR_PREFIX + content
    return {"role": "tool", "tool_call_id": result.tool_use_id, "content": content}


def content_part(item: Block, path: str) -> dict[str, Any] | None:
    if isinstance(item, TextBlock):
        return {"type": "text", "text": item.text}
    if isinstance(item, ImageBlock):
        return {"type": "image_url", "image_url": {"url": image_url(item.source, path)}}
    if isinstance(item, OtherBlock) and item.type in _DROPPED_BLOCKS:
        return None
    raise _untranslatable(item, path)


def image_url(source: ImageSource, path: str) -> str:
    """base64 data as a data: URL, a url source as it is."""
    if source.type == "base64" and source.media_type and source.data is not None:
        return f"data:{source.media_type};base64,{source.data}"
    if source.type == "url" and source.url:
        return source.url
    raise InvalidRequestError(
        f"This model's route takes images as base64 data or a URL, not '{source.type}'.",
        param=f"{path}.source",
    )


def _untranslatable(item: Block, path: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"This model's route has no equivalent of a '{kind_of(item)}' block here.",
        param=f"{path}.type",
    )


# -- tools ----------------------------------------------------------------------------------------


def function_tool(tool: ToolParam, i: int) -> dict[str, Any]:
    if tool.type not in (None, "custom"):
        raise InvalidRequestError(
            f"This model's route cannot run the server tool '{tool.type}'.",
            param=f"tools[{i}].type",
        )
    if tool.input_schema is None:
        raise InvalidRequestError(
            "A tool needs its input_schema.", param=f"tools[{i}].input_schema"
        )
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description is not None:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def tool_choice(choice: ToolChoiceParam | None) -> dict[str, Any]:
    """`tool_choice` (and `parallel_tool_calls`) of the chat body."""
    if choice is None:
        return {}
    out: dict[str, Any] = {}
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequestError(
                "A tool choice of type tool names it.", param="tool_choice.name"
            )
        out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        out["tool_choice"] = _CHOICES[choice.type]
    if choice.disable_parallel_tool_use and choice.type != "none":
        out["parallel_tool_calls"] = False
    return out
