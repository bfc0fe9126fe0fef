"""Server-sent events as Anthropic frames them (every frame names its event: the SDKs skip a
frame without an `event:` line), and errors in Anthropic's envelope.

The proxy's statuses keep their meaning; the error `type` is the one Anthropic gives that
status, so the SDKs raise their usual exception classes.
"""

from __future__ import annotations

import re

import msgspec

from proxy.errors import ProxyError
from proxy.formats.messages.wire import ErrorDetail, ErrorEvent, Event

_encode = msgspec.json.Encoder().encode
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_EVENT_NAME = re.compile(rb"[a-z_]{1,64}")
_DATA = b"\ndata: "


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(error: ProxyError) -> bytes:
    """`{"type": "error", "error": {"type", "message"}}`."""
    return _encode(_error_event(error))


def _error_event(error: ProxyError) -> ErrorEvent:
    """The envelope has no `param`: the message names the field, as Anthropic's do."""
    message = error.message
    if error.param and error.param not in message:
        message = f"{error.param}: {message}"
    return ErrorEvent(ErrorDetail(error_type(error.status), message))


def frame(event: Event) -> bytes:
    name = event.__struct_config__.tag
    assert isinstance(name, str)
    return b"event: " + name.encode() + _DATA + _encode(event) + b"\n\n"


def frame_raw(name: bytes, payload: bytes) -> bytes | None:
    """An upstream's event as it came, framed under its own name (None: a name that cannot
    be an event's)."""
    if not _EVENT_NAME.fullmatch(name):
        return None
    return b"event: " + name + _DATA + payload + b"\n\n"


def payload_of(framed: bytes) -> bytes:
    """The JSON of one frame made by this module."""
    return framed[framed.index(_DATA) + len(_DATA) : -2]


def error_frame(error: ProxyError) -> bytes:
    """A failure after the stream started, as the `error` event Anthropic sends."""
    return frame(_error_event(error))
