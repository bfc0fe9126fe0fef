"""Responses API wire types: the request fields the proxy reads (the body itself is kept as
the client wrote it), the ids it makes, and the typed results of the in-process API."""

from __future__ import annotations

import re
import secrets
from random import getrandbits
from typing import Any

import msgspec

from proxy.errors import InvalidRequestError
from proxy.wire import ModelName

_encode = msgspec.json.Encoder().encode


class TextConfig(msgspec.Struct):
    format: dict[str, Any] | None = None


class ResponsesHead(msgspec.Struct):
    """What the proxy acts on; every other field passes through to native upstreams."""

    model: ModelName
    input: str | list[Any]
    instructions: str | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    text: TextConfig | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None


_head_decoder = msgspec.json.Decoder(ResponsesHead, strict=False)
_MISSING = re.compile(r"missing required field `([^`]+)`")
_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_head(body: bytes) -> ResponsesHead:
    """Validate a Responses request; a failure is a 400 whose `param` names the field."""
    try:
        return _head_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT.search(message)
        param = at.group(1) if at else ""
        missing = _MISSING.search(message)
        if missing:
            param = f"{param}.{missing.group(1)}" if param else missing.group(1)
        reason = _AT.sub("", message)
        raise InvalidRequestError(f"Invalid request: {reason}", param=param or None) from None
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError("The request body is not valid JSON.") from None


def response_id() -> str:
    """A stored response's id is what lets a caller read it back: unguessable."""
    return f"resp_{secrets.token_hex(24)}"


def item_id(prefix: str) -> str:
    return f"{prefix}_{getrandbits(160):040x}"


def frame(event: dict[str, Any]) -> bytes:
    """One server-sent event as the Responses API frames it: its type named twice."""
    return sse(str(event["type"]), _encode(event))


def sse(kind: str, payload: bytes) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


# -- the in-process API's typed results -----------------------------------------------------


class ResponseUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: dict[str, Any] | None = None
    output_tokens_details: dict[str, Any] | None = None


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    created_at: float
    model: str
    status: str | None = None
    output: list[dict[str, Any]] = []
    usage: ResponseUsage | None = None
    object: str = "response"
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: Any = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] = []
    metadata: dict[str, Any] | None = None

    @property
    def output_text(self) -> str:
        """The text of every output_text part, joined (as the SDKs' helper does)."""
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content") or ()
            if isinstance(part, dict) and part.get("type") == "output_text"
        )


class ResponseEvent(msgspec.Struct, kw_only=True):
    """One stream event; the fields an event type does not carry stay None."""

    type: str
    sequence_number: int
    response: ResponseObject | None = None
    item: dict[str, Any] | None = None
    part: dict[str, Any] | None = None
    output_index: int | None = None
    content_index: int | None = None
    item_id: str | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None
    message: str | None = None
    code: str | None = None
