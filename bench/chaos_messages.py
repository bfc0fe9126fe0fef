"""The Anthropic Messages door of the chaos load (`POST /v1/messages` and `count_tokens`),
through the `anthropic` SDK and raw HTTP, the key in `x-api-key`. Errors must be Anthropic's
envelope. A stream must begin with `message_start` and end with `message_stop` (checked like a
JSON answer) or an `error` event (in-band), nothing after it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anthropic
import httpx
import httpx2

from bench.chaos_chat import parsed
from bench.chaos_spec import (
    MAX_TOKENS,
    Malformed,
    Result,
    Spec,
    check_answer,
    check_anthropic_envelope,
    check_event_stream,
    note_headers,
    sse_events,
)

if TYPE_CHECKING:
    from bench.chaos_load import Clients

ANTHROPIC_VERSION = "2023-06-01"
STOPS = frozenset({"end_turn", "stop_sequence"})
CUT = (anthropic.APIConnectionError, httpx2.TransportError, httpx2.StreamError)


def messages_body(spec: Spec) -> dict[str, Any]:
    content: Any = spec.prompt if spec.rid % 2 else [{"type": "text", "text": spec.prompt}]
    body: dict[str, Any] = {"model": spec.model, "messages": [{"role": "user", "content": content}]}
    if spec.door == "count_tokens":
        return body
    body["max_tokens"] = MAX_TOKENS
    if spec.rid % 3 == 0:
        body["system"] = "Repeat what follows the word echo."
    if spec.stream:
        body["stream"] = True
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    return body


def check_message(spec: Spec, message: dict[str, Any], result: Result) -> None:
    if message.get("type") != "message" or message.get("role") != "assistant":
        raise Malformed(f"not a message: {str(message)[:200]}")
    text = "".join(b.get("text") or "" for b in message.get("content") or () if b["type"] == "text")
    check_answer(spec, message.get("model"), text, message.get("stop_reason") in STOPS)
    result.outcome = "ok"


def check_count(answer: Any, result: Result) -> None:
    tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, int) or tokens < 0:
        raise Malformed(f"not a token count: {str(answer)[:200]}")
    result.outcome = "ok"


@dataclass
class _Events:
    """What a Messages event stream said so far."""

    spec: Spec
    count: int = 0
    text: list[str] = field(default_factory=list)
    model: str | None = None
    stop_reason: str | None = None
    ending: str | None = None

    def feed(self, name: str | None, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.ending is not None:
            raise Malformed(f"event after {self.ending}: {kind}")
        if name is not None and name != kind:
            raise Malformed(f"event named {name!r} carries {kind!r}")
        if self.count == 0 and kind not in ("message_start", "error"):
            raise Malformed(f"the stream began with {kind}")
        self.count += kind != "ping"
        if kind == "message_start":
            self.model = event["message"].get("model")
        elif kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
            self.text.append(event["delta"]["text"])
        elif kind == "message_delta":
            self.stop_reason = event["delta"].get("stop_reason")
        elif kind == "error":
            check_anthropic_envelope(event)
            self.ending = kind
        elif kind == "message_stop":
            self.ending = kind

    def conclude(self, result: Result, error: str | None = None) -> None:
        if error is not None:
            result.error, result.outcome = error, "inband"
            return
        if self.ending is None:
            raise Malformed(f"the stream ended after {self.count} events without message_stop")
        check_answer(self.spec, self.model, "".join(self.text), self.stop_reason in STOPS)
        result.outcome = "ok"


# ---- the SDK -----------------------------------------------------------------------------------


async def sdk_messages(clients: Clients, spec: Spec) -> Result:
    client = clients.anthropic(spec)
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    raw = None
    body = messages_body(spec)
    if "temperature" in body:  # this SDK no longer names it: sent as an extra field
        body["extra_body"] = {"temperature": body.pop("temperature")}
    try:
        if spec.door == "count_tokens":
            raw = await client.messages.with_raw_response.count_tokens(**body)
        else:
            raw = await client.messages.with_raw_response.create(**body)
        result.status = raw.status_code
        note_headers(result, raw.headers)
        answer = await parsed(raw)
        if spec.door == "count_tokens":
            check_count(answer.model_dump(), result)
        elif spec.stream:
            await _sdk_stream(answer, spec, result, started)
        else:
            check_message(spec, answer.model_dump(), result)
    except anthropic.APIStatusError as exc:
        _sdk_status_error(result, exc)
    except anthropic.APIConnectionError as exc:
        result.detail = f"no answer: {type(exc).__name__}: {exc.__cause__!r}"
    except Malformed as exc:
        result.detail = str(exc)
    except Exception as exc:  # the SDK failing to read what it was sent
        result.detail = f"{type(exc).__name__}: {exc}"
    finally:
        if raw is not None:
            await raw.http_response.aclose()
    result.seconds = time.monotonic() - started
    return result


def _sdk_status_error(result: Result, exc: anthropic.APIStatusError) -> None:
    result.status = exc.status_code
    try:
        result.error = check_anthropic_envelope(exc.response.json())
        result.outcome = "error"
    except (ValueError, Malformed) as bad:
        result.detail = f"malformed error: {bad}"


async def _sdk_stream(stream: Any, spec: Spec, result: Result, started: float) -> None:
    events = _Events(spec)
    try:
        async for event in stream:
            if result.ttft is None:
                result.ttft = time.monotonic() - started
            events.feed(None, event.model_dump())
            if spec.hang_up and events.count >= 2:
                await stream.close()
                result.outcome = "cancelled"
                return
    except anthropic.APIStatusError as exc:  # the SDK raises the stream's `error` event
        if events.ending is not None:
            raise Malformed(f"an error event after {events.ending}") from None
        events.conclude(result, check_anthropic_envelope(exc.body))
        return
    except CUT as exc:
        raise Malformed(f"stream cut: {type(exc).__name__}") from None
    events.conclude(result)


# ---- raw HTTP ----------------------------------------------------------------------------------


def _path(spec: Spec) -> str:
    return "/v1/messages/count_tokens" if spec.door == "count_tokens" else "/v1/messages"


async def raw_messages(clients: Clients, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    headers = {"x-api-key": clients.keys[spec.key_name], "anthropic-version": ANTHROPIC_VERSION}
    try:
        async with clients.raw(spec).stream(
            "POST", _path(spec), json=messages_body(spec), headers=headers
        ) as resp:
            result.status = resp.status_code
            note_headers(result, resp.headers)
            if resp.status_code != 200:
                result.error = check_anthropic_envelope(json.loads(await resp.aread()))
                result.outcome = "error"
            elif spec.door == "count_tokens":
                check_count(json.loads(await resp.aread()), result)
            elif spec.stream:
                await _raw_stream(resp, spec, result, started)
            else:
                check_message(spec, json.loads(await resp.aread()), result)
    except httpx.TransportError as exc:
        result.detail = f"no answer: {type(exc).__name__}"
    except (Malformed, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        result.detail = f"malformed: {type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result


async def _raw_stream(resp: httpx.Response, spec: Spec, result: Result, started: float) -> None:
    check_event_stream(resp)
    events = _Events(spec)
    error = None
    async for name, event in sse_events(resp):
        if result.ttft is None:
            result.ttft = time.monotonic() - started
        events.feed(name, event)
        if events.ending == "error":
            error = check_anthropic_envelope(event)
        if spec.hang_up and events.count >= 2:
            result.outcome = "cancelled"
            return
    events.conclude(result, error)
