"""OpenAI chat-completions wire types.

`ChatRequestHead` decodes only what the proxy acts on; the body itself is forwarded as
received (OpenAI adds fields every month). The full response types serve the in-process
API and translating adapters.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from proxy.errors import InvalidRequestError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


# a model name: not empty, no control characters (it reaches response headers and upstream
# URLs; lone surrogates never decode). \uNNNN escapes read the same in Python and ECMA regex.
ModelName = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\u0000-\u001f\u007f-\u009f]+$")]


class ChatRequestHead(msgspec.Struct):
    model: ModelName
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class ChatMessage(msgspec.Struct):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class Choice(msgspec.Struct):
    index: int
    message: ChatMessage
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    object: str = "chat.completion"
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


class FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str = "llm-proxy"
    object: str = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


# Lax, as pydantic-based OpenAI-compatible servers are: 54.0 is an integer, "0.5" a number.
_head_decoder = msgspec.json.Decoder(ChatRequestHead, strict=False)
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_chat_head(body: bytes) -> ChatRequestHead:
    """Validate a chat request; every failure is a 400 whose `param` names the field."""
    try:
        head = _head_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(_describe(str(exc)), param=_param_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("The request body is not valid JSON (encoding).") from None
    if head.stream_options is not None and not head.stream:
        raise InvalidRequestError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return head


_generic_decoder = msgspec.json.Decoder()


_encode = msgspec.json.Encoder().encode


def decode_body(body: bytes) -> dict[str, Any]:
    """The whole body as plain data (rewriting, cache keys); values msgspec cannot hold
    (1e999, a 5000-digit integer, invalid UTF-8) are the client's 400, not our 500."""
    try:
        data = _generic_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("The request body holds values out of range.") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return data


def _param_of(message: str) -> str | None:
    at = _AT_PATH.search(message)
    path = at.group(1) if at else ""
    missing = _MISSING_FIELD.search(message)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or None


def _describe(message: str) -> str:
    param = _param_of(message)
    reason = _AT_PATH.sub("", message)
    return f"Invalid request: {reason}" + (f" (at '{param}')" if param else "")


def upstream_body(
    body: bytes, head: ChatRequestHead, upstream_model: str, drop: frozenset[str] = frozenset()
) -> bytes:
    """The client's body with only `model` rewritten (usage asked for on streams, and the
    fields the route is configured to drop removed)."""
    wants_usage = bool(head.stream_options and head.stream_options.include_usage)
    add_usage = bool(head.stream) and not wants_usage
    if head.model == upstream_model and not add_usage and not drop:
        return body
    data = decode_body(body)
    data["model"] = upstream_model
    for name in drop:
        data.pop(name, None)
    if add_usage:
        options = data.get("stream_options") or {}
        data["stream_options"] = {**options, "include_usage": True}
    return _encode(data)
