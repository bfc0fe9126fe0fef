"""The chat-completions door of the chaos load: the `openai` SDK and raw HTTP (SSE read line by
line, so that a stream without `[DONE]` or with an event after it is seen), every answer checked
for being this request's echo under the model it asked for (or its fallback's)."""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import openai

from bench.chaos_spec import (
    Malformed,
    Result,
    Spec,
    check_answer,
    check_envelope,
    check_event_stream,
    note_headers,
)

if TYPE_CHECKING:
    from bench.chaos_load import Clients


def chat_body(spec: Spec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": spec.prompt}],
    }
    if spec.stream:
        body["stream"] = True
        if spec.usage:
            body["stream_options"] = {"include_usage": True}
    if spec.temperature is not None:
        body["temperature"] = spec.temperature
    return body


async def parsed(raw: Any) -> Any:
    """An SDK raw response parsed (AsyncAPIResponse.parse is a coroutine in some SDKs)."""
    value = raw.parse()
    return await value if inspect.isawaitable(value) else value


# ---- the SDK -----------------------------------------------------------------------------------


async def sdk_chat(clients: Clients, spec: Spec) -> Result:
    client = clients.openai(spec)
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    raw = None
    try:
        raw = await client.chat.completions.with_raw_response.create(**chat_body(spec))
        result.status = raw.status_code
        note_headers(result, raw.headers)
        answer = await parsed(raw)
        if spec.stream:
            await _sdk_stream(answer, spec, result, started)
        else:
            choice = answer.choices[0]
            content = choice.message.content or ""
            check_answer(spec, answer.model, content, bool(choice.finish_reason))
            result.outcome = "ok"
    except openai.APIStatusError as exc:
        sdk_status_error(result, exc)
    except openai.APIConnectionError as exc:  # APITimeoutError included
        result.detail = f"no answer: {type(exc).__name__}: {exc.__cause__!r}"
    except Malformed as exc:
        result.detail = str(exc)
    except Exception as exc:  # the SDK failing to read what it was sent
        result.detail = f"{type(exc).__name__}: {exc}"
    finally:
        if raw is not None:  # give the connection back, whatever happened to the stream
            await raw.http_response.aclose()
    result.seconds = time.monotonic() - started
    return result


def sdk_status_error(result: Result, exc: openai.APIStatusError) -> None:
    """An error status the OpenAI SDK raised: its body must be the OpenAI envelope."""
    result.status = exc.status_code
    try:
        body = exc.response.json()
        result.error = check_envelope(body)
        result.param = body["error"].get("param")
        result.outcome = "error"
    except (ValueError, Malformed) as bad:
        result.detail = f"malformed error: {bad}"


async def _sdk_stream(stream: Any, spec: Spec, result: Result, started: float) -> None:
    text, model, finished, chunks = [], None, False, 0
    try:
        async for chunk in stream:
            chunks += 1
            if result.ttft is None:
                result.ttft = time.monotonic() - started
            model = chunk.model
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                finished = finished or bool(choice.finish_reason)
            if spec.hang_up and chunks >= 2:
                await stream.close()
                result.outcome = "cancelled"
                return
    except openai.APIConnectionError as exc:
        raise Malformed(f"stream cut: {type(exc).__name__}") from None
    except openai.APIError as exc:  # an in-band error event (APIStatusError is not raised here)
        if not isinstance(exc.body, dict) or not exc.body.get("message"):
            raise Malformed(f"in-band error without a message: {exc.body!r}") from None
        result.error = str(exc.body.get("code") or exc.body.get("type"))
        result.outcome = "inband"
        return
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise Malformed(f"stream cut: {type(exc).__name__}") from None
    check_answer(spec, model, "".join(text), finished)
    result.outcome = "ok"


# ---- raw HTTP ----------------------------------------------------------------------------------


async def raw_chat(clients: Clients, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    try:
        async with clients.raw(spec).stream(
            "POST", "/v1/chat/completions", json=chat_body(spec), headers=clients.bearer(spec)
        ) as resp:
            result.status = resp.status_code
            note_headers(result, resp.headers)
            if resp.status_code != 200:
                await raw_openai_error(resp, result)
            elif spec.stream:
                await _raw_stream(resp, spec, result, started)
            else:
                data = json.loads(await resp.aread())
                choice = data["choices"][0]
                check_answer(
                    spec,
                    data.get("model"),
                    choice["message"]["content"] or "",
                    bool(choice.get("finish_reason")),
                )
                result.outcome = "ok"
    except httpx.TransportError as exc:
        result.detail = f"no answer: {type(exc).__name__}"
    except (Malformed, ValueError, KeyError, IndexError, TypeError) as exc:
        result.detail = f"malformed: {type(exc).__name__}: {exc}"
    result.seconds = time.monotonic() - started
    return result


async def raw_openai_error(resp: httpx.Response, result: Result) -> None:
    """A non-200 answer read raw: it must be the OpenAI envelope."""
    body = json.loads(await resp.aread())
    result.error = check_envelope(body)
    result.param = body["error"].get("param")
    result.outcome = "error"


@dataclass
class _Events:
    """What a raw SSE stream said so far."""

    text: list[str] = field(default_factory=list)
    model: str | None = None
    finished: bool = False
    error: str | None = None
    done: bool = False
    chunks: int = 0

    def feed(self, data: str) -> None:
        if self.done or (self.error is not None and data != "[DONE]"):
            raise Malformed(f"event after the end: {data[:100]}")
        if data == "[DONE]":
            self.done = True
            return
        event = json.loads(data)
        if "error" in event:
            self.error = check_envelope(event)
            return
        self.chunks += 1
        self.model = event.get("model")
        for choice in event.get("choices") or ():
            self.text.append((choice.get("delta") or {}).get("content") or "")
            self.finished = self.finished or bool(choice.get("finish_reason"))


async def _raw_stream(resp: httpx.Response, spec: Spec, result: Result, started: float) -> None:
    """The SSE bytes as they are: JSON events, an optional error event, then [DONE]."""
    check_event_stream(resp)
    events = _Events()
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        if result.ttft is None:
            result.ttft = time.monotonic() - started
        events.feed(line[5:].strip())
        if spec.hang_up and events.chunks >= 2:
            result.outcome = "cancelled"
            return  # leaving the `async with` closes the connection mid-stream
    if not events.done:
        raise Malformed("the stream ended without [DONE]")
    if events.error is not None:
        result.error = events.error
        result.outcome = "inband"
        return
    check_answer(spec, events.model, "".join(events.text), events.finished)
    result.outcome = "ok"
