"""A Responses request as the canonical chat-completions body, for every route that does not
speak the Responses API itself. What a chat upstream cannot do (built-in tools, files,
server-side conversations) raises `NotTranslatable`: such a request goes to native routes
only, and is a 400 naming the field when the model has none."""

from __future__ import annotations

from typing import Any

from proxy.errors import InvalidRequestError
from proxy.formats.responses.wire import ResponsesHead

TOOL_CHOICES = frozenset({"auto", "none", "required"})


class NotTranslatable(Exception):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def error(self) -> InvalidRequestError:
        return InvalidRequestError(self.message, param=self.param)


def chat_body(
    head: ResponsesHead, history: list[dict[str, Any]], items: list[dict[str, Any]]
) -> dict[str, Any]:
    """The chat-completions body (without `model`) for a request whose earlier turns are
    `history` (stored items: what cannot be replayed to a chat model is left out)."""
    for name in ("background", "conversation", "prompt"):
        if getattr(head, name):
            raise NotTranslatable(f"'{name}' needs a route that speaks the Responses API.", name)
    messages: list[dict[str, Any]] = []
    if head.instructions:
        messages.append({"role": "system", "content": head.instructions})
    for item in history:
        _add(messages, item, None)
    for i, item in enumerate(items):
        _add(messages, item, f"input[{i}]")
    body: dict[str, Any] = {"messages": messages}
    if head.tools:  # chat servers refuse tool settings without tools
        body["tools"] = [_tool(tool, i) for i, tool in enumerate(head.tools)]
        if head.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = head.parallel_tool_calls
        if head.tool_choice is not None:
            body["tool_choice"] = _tool_choice(head.tool_choice)
    _options(head, body)
    return body


def _options(head: ResponsesHead, body: dict[str, Any]) -> None:
    for name in ("temperature", "top_p", "user", "metadata"):
        value = getattr(head, name)
        if value is not None:
            body[name] = value
    if head.max_output_tokens is not None:
        body["max_tokens"] = head.max_output_tokens
    if head.text is not None and head.text.format is not None:
        body["response_format"] = _response_format(head.text.format)
    effort = (head.reasoning or {}).get("effort")
    if effort is not None:
        body["reasoning_effort"] = effort


def _add(messages: list[dict[str, Any]], item: dict[str, Any], path: str | None) -> None:
    """One item as chat messages; `path` None for stored items (lenient)."""
    kind = item.get("type")
    if kind == "message":
        messages.append(_message(item, path))
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        content = _tool_output(item["output"], f"{path or 'input'}.output")
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": content})
    elif kind != "reasoning" and path is not None:  # reasoning is the model's own: left out
        raise NotTranslatable(
            f"Input items of type '{kind}' need a route that speaks the Responses API.",
            f"{path}.type",
        )


def _message(item: dict[str, Any], path: str | None) -> dict[str, Any]:
    role = item["role"]
    where = f"{path or 'input'}.content"
    content = item["content"]
    if role == "assistant":
        if isinstance(content, list):
            content = "".join(_text(part, f"{where}[{j}]") for j, part in enumerate(content))
        return {"role": "assistant", "content": content}
    if isinstance(content, list):
        parts = [_part(part, f"{where}[{j}]") for j, part in enumerate(content)]
        texts = [part["text"] for part in parts if part["type"] == "text"]
        content = texts[0] if len(parts) == 1 and len(texts) == 1 else parts
    return {"role": "system" if role == "developer" else role, "content": content}


def _text(part: Any, path: str) -> str:
    if isinstance(part, dict):
        kind = part.get("type")
        value = part.get("refusal") if kind == "refusal" else part.get("text")
        if kind in ("output_text", "input_text", "text", "refusal") and isinstance(value, str):
            return value
    raise NotTranslatable("This content part needs a route that speaks the Responses API.", path)


def _part(part: Any, path: str) -> dict[str, Any]:
    if isinstance(part, dict) and part.get("type") == "input_image":
        url = part.get("image_url")
        if isinstance(url, str):
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            return {"type": "image_url", "image_url": image}
        raise NotTranslatable(
            "An image given by file_id needs a route that speaks the Responses API.",
            f"{path}.file_id",
        )
    return {"type": "text", "text": _text(part, f"{path}.type")}


def _tool_output(output: str | list[Any], path: str) -> str:
    if isinstance(output, str):
        return output
    return "".join(_text(part, f"{path}[{j}]") for j, part in enumerate(output))


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise NotTranslatable(
            f"The '{kind}' tool runs only on a route that speaks the Responses API; this "
            "model's routes take function tools only.",
            f"tools[{i}].type",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("A function tool needs a 'name'.", param=f"tools[{i}].name")
    function = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequestError(
                "tool_choice is auto, none, required or an object.", param="tool_choice"
            )
        return choice
    kind = choice.get("type")
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
        return choice["mode"]
    raise NotTranslatable(
        f"A tool_choice of type '{kind}' needs a route that speaks the Responses API.",
        "tool_choice",
    )


def _response_format(text_format: dict[str, Any]) -> dict[str, Any]:
    kind = text_format.get("type")
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        schema = {
            key: text_format[key]
            for key in ("name", "schema", "description", "strict")
            if text_format.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError(
        "text.format is text, json_object or json_schema.", param="text.format.type"
    )
