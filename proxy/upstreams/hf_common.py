"""Pure pieces every HuggingFace mode shares: ids, request decoding, stop strings, finish
reasons, chunk bytes, and the interfaces of one request's translation.

A request a route cannot honour is refused with UpstreamRejectedError (an
InvalidRequestError: 400, `param` naming the field), raised before anything is sent: like
the upstream's own 400/422 it is the client's fault, so the router neither retries it nor
counts it against the route's breaker.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from proxy.errors import ProxyError, UpstreamRejectedError

encode = msgspec.json.Encoder().encode
decode = msgspec.json.Decoder().decode

# HF/TGI finish reasons (and vLLM's) in OpenAI's vocabulary; anything else is "stop".
FINISH_REASONS = {
    "stop": "stop",
    "eos_token": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "function_call",
}


def finish_reason(value: object) -> str:
    return FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def new_completion_id() -> str:
    return f"chatcmpl-{os.urandom(12).hex()}"


def estimate_tokens(text: str) -> int:
    """The proxy's usual estimate (UTF-8 bytes / 4) when the upstream gives no count."""
    return (len(text.encode()) + 3) // 4


def header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Translation(Protocol):
    """One request translated: the upstream payload, and how its replies come back."""

    payload: bytes
    ignored: Sequence[str]  # request fields this mode does not use (logged at debug level)

    def completion(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        """The upstream's 200 reply as an OpenAI chat.completion."""
        ...

    def stream(self) -> StreamTranslator: ...


class StreamTranslator(Protocol):
    done: bool  # the upstream finished: stop reading
    failure: ProxyError | None  # raise it once the chunks of the same read are out

    def feed(self, events: list[bytes]) -> list[bytes]:
        """chat.completion.chunk payloads for the upstream events of one network read."""
        ...

    def replay(self, body: bytes, headers: Mapping[str, str]) -> list[bytes]:
        """Every chunk for a backend that answered a stream request with plain JSON."""
        ...

    def end(self) -> list[bytes]:
        """The upstream closed the stream: the last chunks, or an UpstreamError."""
        ...


# -- request decoding ------------------------------------------------------------------------

_S = TypeVar("_S")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def convert_request(data: Mapping[str, Any], kind: type[_S]) -> _S:
    """A typed view of the request; a field of the wrong type is a 400 naming it."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        at = _AT_PATH.search(str(exc))
        reason = _AT_PATH.sub("", str(exc))
        raise UpstreamRejectedError(
            f"Invalid request: {reason}", param=at.group(1) if at else None
        ) from None


def stop_list(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """OpenAI's `stop` (a string or up to 4 strings) as the list HF wants, empties left out."""
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)


# -- stop strings ----------------------------------------------------------------------------


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """OpenAI never returns the stop sequence; HF keeps it (and may run past it inside the
    last token). The text before the first stop string, and whether one was found."""
    if not stops:
        return text, False
    at = first_stop(text, stops)
    return (text, False) if at is None else (text[:at], True)


class StopTrimmer:
    """Streamed text with the stop strings cut off: text that might be the start of a stop
    string is held back until the next piece shows it is not."""

    __slots__ = ("_held", "stopped", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of the text so far that is safe to send now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        text = self._held + text
        at = first_stop(text, self.stops)
        if at is not None:
            self.stopped = True
            self._held = ""
            return text[:at]
        keep = _partial_stop(text, self.stops)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """At the end: what was held back was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that some stop string starts with."""
    longest = min(len(text), max(len(s) for s in stops) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in stops):
            return size
    return 0


# -- chunk bytes -----------------------------------------------------------------------------

_OPEN_CHOICE = b',"logprobs":null,"finish_reason":null}]}'


class ChunkWriter:
    """chat.completion.chunk bytes for one single-choice stream: the same id and created in
    every chunk, the constant parts encoded once."""

    __slots__ = ("_head", "created", "id", "model")

    def __init__(self, model: str) -> None:
        self.id = new_completion_id()
        self.created = int(time.time())
        self.model = model
        self._head = b"".join(
            [
                b'{"id":',
                encode(self.id),
                b',"object":"chat.completion.chunk","created":',
                str(self.created).encode(),
                b',"model":',
                encode(model),
                b',"choices":[{"index":0,"delta":',
            ]
        )

    def role(self, content: str = "") -> bytes:
        return (
            self._head + b'{"role":"assistant","content":' + encode(content) + b"}" + _OPEN_CHOICE
        )

    def content(self, text: str) -> bytes:
        return self._head + b'{"content":' + encode(text) + b"}" + _OPEN_CHOICE

    def finish(self, reason: str) -> bytes:
        return self._head + b'{},"logprobs":null,"finish_reason":' + encode(reason) + b"}]}"

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return encode(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(prompt_tokens, completion_tokens),
            }
        )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
