"""HuggingFace error replies (the classic API, TGI, the router) as the proxy's errors.

Bodies vary: `{"error": "msg", "error_type": "validation"}` (TGI), `{"error": ["a", "b"]}`,
`{"error": "...", "error_description": "..."}`, `{"error": {"message": ...}}` (OpenAI-style
routes), a plain-text body (axum's 422), or only an `X-Error-Message` header; a cold model
answers 503 `{"error": "... is currently loading", "estimated_time": 20.0}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
from loguru import logger

from proxy.errors import ProxyError, UpstreamError, UpstreamRejectedError
from proxy.upstreams.http import error_from_status, retry_after

# The request's fault: TGI's error types for a 422, also when sent inside a 200 stream.
_REJECTED_TYPES = frozenset(
    {"validation", "template_error", "missing_template_variable", "tool_error"}
)
# TGI: "`inputs` tokens + `max_new_tokens` must be <= 4096. Given: ...", and its variants.
_CONTEXT_LENGTH = re.compile(r"tokens.*must be <= \d+", re.IGNORECASE | re.DOTALL)
_MAX_MESSAGE = 2000


def hf_error(upstream: str, status: int, body: bytes, headers: Mapping[str, str]) -> ProxyError:
    """The error for a non-200 reply."""
    data = _json(body)
    if status == 503 and _is_loading(data):
        return _loading(upstream, data, headers)
    if status in (400, 422):
        return rejected(message_of(data, body, headers) or f"HTTP {status}")
    return error_from_status(upstream, status, body, headers)


def stream_error(upstream: str, event: Mapping[str, Any]) -> ProxyError:
    """The error for an `{"error": ...}` event inside a 200 stream: TGI's native
    `{"error": "...", "error_type": "validation"}`, its Messages API's
    `{"error": {"message": "...", "http_status_code": 422}}`, vLLM's
    `{"error": {..., "code": 400}}`."""
    error = event.get("error")
    kind = event.get("error_type")
    status: Any = None
    if isinstance(error, dict):
        kind = error.get("type", kind)
        status = error.get("http_status_code", error.get("code"))
    message = message_of(event, b"", {}) or "The upstream reported an error."
    if kind in _REJECTED_TYPES or status in (400, 422, "400", "422"):
        return rejected(message)
    logger.warning("upstream {} failed during the stream: {}", upstream, message[:_MAX_MESSAGE])
    return UpstreamError(f"The upstream '{upstream}' failed during generation.")


def rejected(message: str) -> UpstreamRejectedError:
    """The upstream's 400/422 with its message; a prompt too long for the model is marked
    so the gateway can send it to the model's fallbacks."""
    if _CONTEXT_LENGTH.search(message):
        return UpstreamRejectedError(message, param="messages", code="context_length_exceeded")
    return UpstreamRejectedError(message)


def message_of(data: Any, body: bytes, headers: Mapping[str, str]) -> str | None:
    """HF's message from whichever shape it came in."""
    text = _message_in(data.get("error", data) if isinstance(data, dict) else data)
    if text and isinstance(data, dict) and isinstance(data.get("error_description"), str):
        text = f"{text}: {data['error_description']}"
    if not text and data is None:
        text = body.decode("utf-8", "replace").strip() or None
    if not text:
        text = headers.get("x-error-message") or None
    return text[:_MAX_MESSAGE] if text else None


def _message_in(error: Any) -> str | None:
    if isinstance(error, str):
        return error or None
    if isinstance(error, list):
        return "; ".join(str(e) for e in error) or None
    if isinstance(error, dict):
        message = error.get("message") or error.get("detail")
        return str(message) if message else None
    return None


def _json(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


def _is_loading(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    error = data.get("error")
    return "estimated_time" in data or (isinstance(error, str) and "loading" in error.lower())


def _loading(upstream: str, data: dict[str, Any], headers: Mapping[str, str]) -> UpstreamError:
    """A cold model: the route is parked for `estimated_time`, like any 503 with Retry-After."""
    wait = data.get("estimated_time")
    seconds = float(wait) if isinstance(wait, int | float) and wait >= 0 else retry_after(headers)
    about = f" (ready in about {seconds:.0f} s)" if seconds is not None else ""
    return UpstreamError(
        f"The model of upstream '{upstream}' is loading{about}; try again later.",
        code="model_loading",
        retry_after=seconds,
        cause="503",  # with retry_after: the router parks the route (docs/semantics.md)
    )
