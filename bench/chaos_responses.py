"""The Responses API door of the chaos load (`POST /v1/responses`), through the `openai` SDK and
raw HTTP. A request may continue a stored response (`previous_response_id`). An answer is ok
when it is a completed response carrying this request's echo; a stream must number its events
from 0 without a gap and end with `response.completed` (checked like a JSON answer),
`response.incomplete` or `response.failed` (in-band, with its error), nothing after it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import openai

from bench.chaos_chat import parsed, raw_openai_error, sdk_status_error
from bench.chaos_spec import (
    Malformed,
    Result,
    Spec,
    check_answer,
    check_event_stream,
    note_headers,
    sse_events,
)

if TYPE_CHECKING:
    from bench.chaos_load import Clients

ENDINGS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_body(spec: Spec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "stream": spec.stream}
    if spec.rid % 2:
        body["input"] = spec.prompt
    else:
        part = {"type": "input_text", "text": spec.prompt}
        body["input"] = [{"type": "message", "role": "user", "content": [part]}]
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    if spec.previous is not None:
        body["previous_response_id"] = spec.previous
    return body


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text") or ""
        for item in response.get("output") or ()
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    )


def check_response(spec: Spec, response: dict[str, Any], result: Result) -> None:
    """A whole response object: completed, this request's echo, an id to continue by."""
    if response.get("object") != "response" or not isinstance(response.get("id"), str):
        raise Malformed(f"not a response object: {str(response)[:200]}")
    if response.get("status") != "completed":
        details = response.get("incomplete_details")
        raise Malformed(f"response {response.get('status')} ({details}) without a limit asked")
    check_answer(spec, response.get("model"), output_text(response), True)
    result.response_id = response["id"]
    result.outcome = "ok"


@dataclass
class _Events:
    """What a Responses event stream said so far."""

    spec: Spec
    count: int = 0
    deltas: list[str] = field(default_factory=list)
    ending: dict[str, Any] | None = None

    def feed(self, name: str | None, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.ending is not None:
            raise Malformed(f"event after {self.ending['type']}: {kind}")
        if name is not None and name != kind:
            raise Malformed(f"event named {name!r} carries {kind!r}")
        if event.get("sequence_number") != self.count:
            raise Malformed(f"{kind} numbered {event.get('sequence_number')}, not {self.count}")
        if self.count == 0 and kind != "response.created":
            raise Malformed(f"the stream began with {kind}")
        self.count += 1
        if kind == "response.output_text.delta":
            self.deltas.append(str(event.get("delta")))
        elif kind in ENDINGS:
            self.ending = event

    def conclude(self, result: Result) -> None:
        if self.ending is None:
            raise Malformed(f"the stream ended after {self.count} events without an ending")
        response = self.ending.get("response") or {}
        if self.ending["type"] == "response.failed":
            error = response.get("error") or {}
            if not error.get("message") or not error.get("code"):
                raise Malformed(f"response.failed without an error: {str(response)[:200]}")
            result.error, result.outcome = str(error["code"]), "inband"
            return
        if "".join(self.deltas) != output_text(response):
            raise Malformed("the deltas do not add up to the response's text")
        check_response(self.spec, response, result)


# ---- the SDK -----------------------------------------------------------------------------------


async def sdk_responses(clients: Clients, spec: Spec) -> Result:
    client = clients.openai(spec)
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    raw = None
    try:
        raw = await client.responses.with_raw_response.create(**responses_body(spec))
        result.status = raw.status_code
        note_headers(result, raw.headers)
        answer = await parsed(raw)
        if spec.stream:
            await _sdk_stream(answer, spec, result, started)
        else:
            check_response(spec, answer.model_dump(), result)
    except openai.APIStatusError as exc:
        sdk_status_error(result, exc)
    except openai.APIConnectionError as exc:
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
    except (openai.APIError, httpx.TransportError, httpx.StreamError) as exc:
        raise Malformed(f"stream cut: {type(exc).__name__}: {exc}") from None
    events.conclude(result)


# ---- raw HTTP ----------------------------------------------------------------------------------


async def raw_responses(clients: Clients, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    try:
        async with clients.raw(spec).stream(
            "POST", "/v1/responses", json=responses_body(spec), headers=clients.bearer(spec)
        ) as resp:
            result.status = resp.status_code
            note_headers(result, resp.headers)
            if resp.status_code != 200:
                await raw_openai_error(resp, result)
            elif spec.stream:
                await _raw_stream(resp, spec, result, started)
            else:
                check_response(spec, json.loads(await resp.aread()), result)
    except httpx.TransportError as exc:
        result.detail = f"no answer: {type(exc).__name__}"
    except (Malformed, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        result.detail = f"malformed: {type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result


async def _raw_stream(resp: httpx.Response, spec: Spec, result: Result, started: float) -> None:
    check_event_stream(resp)
    events = _Events(spec)
    async for name, event in sse_events(resp):
        if result.ttft is None:
            result.ttft = time.monotonic() - started
        events.feed(name, event)
        if spec.hang_up and events.count >= 2:
            result.outcome = "cancelled"
            return
    events.conclude(result)
