"""OpenAI chat-completions wire types.

`ChatRequestHead` decodes only what the proxy acts on; the body itself is forwarded as
received (OpenAI adds fields every month). The full response types serve the in-process
API and translating adapters.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from proxy.errors import InvalidRequestError, UpstreamError

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


# a model name: 1-256 characters, none of them a control character (it reaches response
# headers, upstream URLs and logs; lone surrogates never decode). `(?![\s\S])` is the end of
# the string in Python's and ECMA's regex alike (`$` would accept a trailing newline), and
# \uNNNN escapes read the same in both.
MAX_MODEL_NAME = 256
ModelName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_MODEL_NAME,
        pattern=r"^[^\u0000-\u001f\u007f-\u009f]+(?![\s\S])",
    ),
]


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


def upstream_object(body: bytes, upstream: str) -> dict[str, Any]:
    """A JSON object from an upstream; anything else is its fault (502)."""
    try:
        data = _generic_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not JSON.") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"The upstream '{upstream}' sent a reply that is not an object.")
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


_fields_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])


def top_level(body: bytes) -> dict[str, msgspec.Raw]:
    """The body's top-level fields, values kept as the raw JSON the client wrote, so the body
    sent upstream is spliced, not re-encoded. The whole body is checked first: a value no
    JSON reader can hold (1e999, a 5000-digit integer, invalid UTF-8), even in a field the
    proxy never reads, is the client's 400 here rather than a failure later. A top-level key
    given twice is a 400: the proxy would act on one value while an upstream might read the
    other."""
    decode_body(body)
    try:
        fields = _fields_decoder.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequestError("The request body must be a JSON object.") from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from None
    duplicate = _duplicate_key(body, fields)
    if duplicate is not None:
        raise InvalidRequestError(
            f"The request body gives the field '{duplicate}' more than once.", param=duplicate
        )
    return fields


_KEY = re.compile(rb'[ \t\n\r]*"((?:[^"\\]|\\.)*)"[ \t\n\r]*:[ \t\n\r]*')
_AFTER_VALUE = re.compile(rb"[ \t\n\r]*([,}])")


def _duplicate_key(body: bytes, fields: dict[str, msgspec.Raw]) -> str | None:
    """Walk the top-level keys in order: each value must be the one the decoder kept for its
    key (it keeps the last), and no key may come back. The body is valid JSON already.

    Most bodies are compact JSON (every SDK sends it): then a body exactly as long as its
    fields written once each, with no space, can hold no second key (a key written twice, a
    space or an escape only ever makes the body longer), and no walk is needed."""
    if len(body) == _compact_length(fields):
        return None
    seen: set[str] = set()
    position = body.index(b"{") + 1
    for _ in range(len(fields) + 1):
        found = _KEY.match(body, position)
        if found is None:
            return None  # the closing brace: every key was seen once
        raw_key = found.group(1)
        key = raw_key.decode() if b"\\" not in raw_key else _decode_string(raw_key)
        position = found.end()
        value = fields[key]
        if key in seen or not body.startswith(value, position):
            return key
        seen.add(key)
        after = _AFTER_VALUE.match(body, position + len(value))
        if after is None or after.group(1) == b"}":
            return None
        position = after.end()
    return None


def _compact_length(fields: dict[str, msgspec.Raw]) -> int:
    """The length of `{"k":v,...}` with each field once, keys as plain UTF-8."""
    size = 1 + len(fields)  # the braces, less one comma
    for key, value in fields.items():
        size += (len(key) if key.isascii() else len(key.encode())) + 3 + len(value)
    return size if fields else 2


def _decode_string(raw: bytes) -> str:
    text: str = msgspec.json.decode(b'"' + raw + b'"')
    return text


def upstream_body(
    fields: dict[str, msgspec.Raw],
    head: ChatRequestHead,
    upstream_model: str,
    drop: frozenset[str] = frozenset(),
    body: bytes | None = None,
) -> bytes:
    """The client's body with only `model` rewritten (usage asked for on streams, and the
    fields the route is configured to drop removed); the other values pass as raw bytes."""
    wants_usage = bool(head.stream_options and head.stream_options.include_usage)
    add_usage = bool(head.stream) and not wants_usage
    if body is not None and head.model == upstream_model and not add_usage and not drop:
        return body
    out = dict(fields)
    out["model"] = msgspec.Raw(_encode(upstream_model))
    for name in drop:
        out.pop(name, None)
    if add_usage:
        options = out.get("stream_options")
        current = _generic_decoder.decode(options) if options is not None else None
        merged = {**current, "include_usage": True} if isinstance(current, dict) else {}
        merged["include_usage"] = True
        out["stream_options"] = msgspec.Raw(_encode(merged))
    return _encode(out)
