"""The response object: the request's echoed settings (the shell), and a chat.completion's
answer as output items (a message with output_text, one function_call per tool call), its
status and usage in the Responses API's terms."""

from __future__ import annotations

from typing import Any

from proxy.errors import UpstreamError
from proxy.formats.responses.wire import ResponsesHead, item_id

# chat finish reasons that leave a response incomplete, and the reason the API gives
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def shell(head: ResponsesHead, response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """The response object before any output: what the request asked for, echoed as the
    API echoes it (its defaults filled in)."""
    text_format = head.text.format if head.text is not None else None
    reasoning = head.reasoning or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": head.instructions,
        "max_output_tokens": head.max_output_tokens,
        "max_tool_calls": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": head.parallel_tool_calls is not False,
        "previous_response_id": head.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": "default",
        "store": head.store is not False,
        "temperature": 1.0 if head.temperature is None else head.temperature,
        "text": {"format": text_format or {"type": "text"}},
        "tool_choice": "auto" if head.tool_choice is None else head.tool_choice,
        "tools": head.tools or [],
        "top_p": 1.0 if head.top_p is None else head.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": head.user,
        "metadata": head.metadata or {},
    }


def finished(
    base: dict[str, Any], output: list[dict[str, Any]], finish: str | None, usage: dict[str, Any]
) -> dict[str, Any]:
    """The whole response: its output items, status (from the chat finish reason) and usage."""
    reason = INCOMPLETE.get(finish or "")
    return {
        **base,
        "status": "incomplete" if reason else "completed",
        "incomplete_details": {"reason": reason} if reason else None,
        "output": output,
        "usage": usage,
    }


def usage_of(prompt: int, completion: int, chat_usage: Any = None) -> dict[str, Any]:
    """Usage as the Responses API counts it (the details the SDKs expect included)."""
    cached = reasoning = 0
    if isinstance(chat_usage, dict):
        cached = _detail(chat_usage.get("prompt_tokens_details"), "cached_tokens")
        reasoning = _detail(chat_usage.get("completion_tokens_details"), "reasoning_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _detail(details: Any, name: str) -> int:
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) else 0


def completion_choice(completion: dict[str, Any], upstream: str) -> tuple[dict[str, Any], Any]:
    """The first choice's message and finish reason of a chat.completion."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise UpstreamError(f"The upstream '{upstream}' sent a reply without a message.")
    return message, choice.get("finish_reason") if isinstance(choice, dict) else None


def output_items(message: dict[str, Any], status: str) -> list[dict[str, Any]]:
    """A chat message as output items: its text (and refusal) as one message item, then a
    function_call item per tool call."""
    parts = []
    text = _text_of(message.get("content"))
    if text:
        parts.append(text_part(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    items = []
    if parts or not calls:
        items.append(message_item(item_id("msg"), parts or [text_part("")], status))
    for call in calls:
        function = call.get("function") or {}
        items.append(
            function_call_item(
                item_id("fc"),
                str(call.get("id") or item_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                status,
            )
        )
    return items


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with parts
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(ident: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": ident,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    ident: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": ident,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }
