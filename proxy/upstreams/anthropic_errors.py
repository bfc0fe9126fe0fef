"""Anthropic's error replies as the proxy's errors, in one place.

Anthropic answers `{"type": "error", "error": {"type", "message"}}`, with the same envelope in
an `error` event when a 200 stream fails. Its 529 `overloaded_error` is a transient failure
like a 503: it is given the cause "503" so `retry.on` retries it and the route fails over
(the message still names 529). A prompt longer than the model's context is marked
context_length_exceeded, so the gateway tries the model's fallbacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec
from loguru import logger

from proxy.errors import ProxyError, UpstreamError, UpstreamRejectedError
from proxy.upstreams.anthropic_wire import ErrorDetail, ErrorReply
from proxy.upstreams.http import error_from_status, retry_after

OVERLOADED = 529
# The status Anthropic sends each error type with (an `error` event carries only the type).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": OVERLOADED,
}
# "prompt is too long: 208310 tokens > 200000 maximum", and the older wording.
_PROMPT_TOO_LONG = re.compile(
    r"prompt is too long|input length and `max_tokens` exceed context limit", re.IGNORECASE
)
_MAX_MESSAGE = 2000
_error_decoder = msgspec.json.Decoder(ErrorReply)


def anthropic_error(
    upstream: str, status: int, body: bytes, headers: Mapping[str, str]
) -> ProxyError:
    """The error for a non-200 reply."""
    if status in (400, 413, 422):
        return rejected(
            error_message(body) or f"The upstream rejected the request (HTTP {status})."
        )
    if status == OVERLOADED:
        return UpstreamError(
            f"The upstream '{upstream}' is overloaded (HTTP 529); try again later.",
            retry_after=retry_after(headers),
            cause="503",
        )
    return error_from_status(upstream, status, body, headers)


def stream_error(upstream: str, error: ErrorDetail | None) -> ProxyError:
    """The error for an `error` event inside a 200 stream."""
    kind = (error.type if error is not None else None) or "api_error"
    message = (error.message if error is not None else None) or "The upstream reported an error."
    status = ERROR_STATUS.get(kind, 500)
    if status < 500 and status != 429:
        body = msgspec.json.encode({"type": "error", "error": {"type": kind, "message": message}})
        return anthropic_error(upstream, status, body, {})
    logger.warning("upstream {} failed during the stream: {}", upstream, message[:_MAX_MESSAGE])
    if status == 429:
        return anthropic_error(upstream, status, b"", {})
    cause = "503" if status == OVERLOADED else str(status)
    return UpstreamError(
        f"The upstream '{upstream}' failed during generation ({kind}).", cause=cause
    )


def rejected(message: str) -> UpstreamRejectedError:
    if _PROMPT_TOO_LONG.search(message):
        return UpstreamRejectedError(message, param="messages", code="context_length_exceeded")
    return UpstreamRejectedError(message)


def error_message(body: bytes) -> str | None:
    """The envelope's message, or the start of a body that is not the envelope."""
    try:
        detail = _error_decoder.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body.decode("utf-8", "replace").strip()
        return text[:_MAX_MESSAGE] or None
    message = detail.message if detail is not None else None
    return message[:_MAX_MESSAGE] if message else None
