"""A request's input items: checked (a 400 names the bad field), kept in the form the API
lists them in (each with an id), and measured for the token estimate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.errors import InvalidRequestError
from proxy.formats.responses.wire import item_id

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
PER_ITEM_TOKENS = 4
BYTES_PER_TOKEN = 4
_REQUIRED = {
    "function_call": (("call_id", str), ("name", str), ("arguments", str)),
    "function_call_output": (("call_id", str), ("output", str | list)),
}
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def input_items(value: str | list[Any]) -> list[dict[str, Any]]:
    """The `input` field as a list of items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequestError("An input item must be an object.", param=f"input[{i}]")
        items.append(_checked(item, f"input[{i}]"))
    return items


def _checked(item: dict[str, Any], path: str) -> dict[str, Any]:
    kind = item.get("type")
    if kind is None and "role" in item:
        item = {"type": "message", **item}  # the short form: a role and its content
        kind = "message"
    if not isinstance(kind, str):
        raise InvalidRequestError("An input item needs a string 'type'.", param=f"{path}.type")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            roles = ", ".join(sorted(MESSAGE_ROLES))
            raise InvalidRequestError(f"A message's role is one of {roles}.", param=f"{path}.role")
        if not isinstance(item.get("content"), str | list):
            raise InvalidRequestError(
                "A message's content is a string or a list of parts.", param=f"{path}.content"
            )
    for name, kind_of in _REQUIRED.get(kind, ()):
        if not isinstance(item.get(name), kind_of):
            raise InvalidRequestError(f"A {kind} item needs '{name}'.", param=f"{path}.{name}")
    return item


def check_call_ids(items: list[dict[str, Any]], history: Iterable[dict[str, Any]]) -> None:
    """Every function_call_output answers a call made earlier: in this input or in the
    stored conversation it continues."""
    known = {
        item["call_id"]
        for item in history
        if item.get("type") == "function_call" and isinstance(item.get("call_id"), str)
    }
    for i, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            known.add(item.get("call_id"))
        elif kind == "function_call_output" and item.get("call_id") not in known:
            raise InvalidRequestError(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                param=f"input[{i}].call_id",
            )


def listed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the API lists them: each with an id and a status, message content as
    parts."""
    out = []
    for item in items:
        kind = item["type"]
        kept = {**item, "id": item.get("id") or item_id(_ID_PREFIX.get(kind, "item"))}
        if kind == "message":
            kept["content"] = _parts(item["role"], item["content"])
        if kind in _ID_PREFIX:
            kept.setdefault("status", "completed")
        out.append(kept)
    return out


def _parts(role: str, content: str | list[Any]) -> list[Any]:
    if isinstance(content, list):
        return content
    if role == "assistant":
        return [{"type": "output_text", "text": content, "annotations": []}]
    return [{"type": "input_text", "text": content}]


def estimate_tokens(instructions: str | None, items: Iterable[dict[str, Any]]) -> int:
    """The proxy's cheap estimate: UTF-8 bytes of text / 4, + 4 per item."""
    size, count = 0, 0
    if instructions:
        size, count = len(instructions.encode()), 1
    for item in items:
        count += 1
        for text in _texts(item):
            size += len(text.encode())
    return size // BYTES_PER_TOKEN + PER_ITEM_TOKENS * count


def _texts(item: dict[str, Any]) -> Iterable[str]:
    for name in ("content", "arguments", "output"):
        value = item.get(name)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for part in value:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    yield text
