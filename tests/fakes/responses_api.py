"""The fake OpenAI's native Responses API: POST /v1/responses, JSON or an event stream, as
OpenAI answers it (response object, `event:`-named SSE events with sequence numbers, no
[DONE]). It shares the fake's script and recorded requests (fakes/openai_upstream.py):

    fake.script(status(500), drop_after(3), error_event_after(2))   # consumed per request

Its answer is the fake's reply (or "echo:" text of the last user message); with function
tools it calls the first one with TOOL_ARGUMENTS, unless the input ends with a tool's output
(then it answers in text, as a model would). It keeps the responses it made, so a
`previous_response_id` it did not make is its 400, as OpenAI's is; usage counts words.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fakes.openai_upstream import (
    ECHO_PREFIX,
    TOOL_ARGUMENTS,
    Behaviour,
    RecordedRequest,
    count_words,
    error_envelope,
    split_fixed,
    split_words,
)

if TYPE_CHECKING:
    from fakes.openai_upstream import FakeOpenAI

RESPONSES_PATH = "/v1/responses"


def mount_responses(app: web.Application, fake: FakeOpenAI) -> None:
    known: set[str] = set()

    async def create(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = fake._record(request, body)
        behaviour, reply, seq = fake._next_behaviour()
        rec.behaviour = behaviour
        try:
            return await _answer(request, rec, behaviour, reply, seq, known)
        finally:
            rec.outcome = rec.outcome or "completed"
            rec.finished_at = time.monotonic()
            rec.done.set()

    app.router.add_post(RESPONSES_PATH, create)


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts: list[str] = []
    for item in value if isinstance(value, list) else ():
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            texts.append(content)
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def _last_user_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    users = [i for i in value if isinstance(i, dict) and i.get("role") == "user"]
    return " ".join(_texts(users[-1:])) if users else ""


async def _answer(
    request: web.Request,
    rec: RecordedRequest,
    b: Behaviour,
    reply: str,
    seq: int,
    known: set[str],
) -> web.StreamResponse:
    if b.kind == "status":
        return web.json_response(b.body, status=b.status, headers=dict(b.headers))
    if b.kind == "hang":
        await asyncio.sleep(b.seconds)
    data = rec.json if isinstance(rec.json, dict) else {}
    previous = data.get("previous_response_id")
    if previous is not None and previous not in known:
        message = f"Previous response with id '{previous}' not found."
        body = error_envelope(message, param="previous_response_id")
        return web.json_response(body, status=400)
    text = _last_user_text(data.get("input", ""))
    answer = b.text or (text[len(ECHO_PREFIX) :].strip() if text.startswith(ECHO_PREFIX) else reply)
    response = _response(data, answer, seq)
    known.add(response["id"])
    rec.response_json = response
    if not data.get("stream"):
        return web.json_response(response)
    return await _stream(request, rec, b, response)


def _answers_a_call(value: Any) -> bool:
    last = value[-1] if isinstance(value, list) and value else None
    return isinstance(last, dict) and last.get("type") == "function_call_output"


def _response(data: dict[str, Any], answer: str, seq: int) -> dict[str, Any]:
    tools = [t for t in data.get("tools") or () if t.get("type") == "function"]
    if tools and not _answers_a_call(data.get("input")):
        arguments = json.dumps(TOOL_ARGUMENTS)
        output: dict[str, Any] = {
            "id": f"fc_fake{seq:04d}",
            "type": "function_call",
            "status": "completed",
            "call_id": f"call_native{seq:04d}",
            "name": tools[0]["name"],
            "arguments": arguments,
        }
        produced = count_words(arguments)
    else:
        part = {"type": "output_text", "text": answer, "annotations": [], "logprobs": []}
        output = {
            "id": f"msg_fake{seq:04d}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        produced = count_words(answer)
    prompt = sum(count_words(t) for t in _texts(data.get("input", "")))
    return {
        "id": f"resp_fake{seq:06d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": data.get("model"),
        "output": [output],
        "previous_response_id": data.get("previous_response_id"),
        "tools": data.get("tools") or [],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": produced,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + produced,
        },
    }


def stream_events(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The events OpenAI sends for `response`, numbered from 0."""
    item = response["output"][0]
    start = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [_event("response.created", response=start)]
    events.append(_event("response.in_progress", response=start))
    at: dict[str, Any] = {"item_id": item["id"], "output_index": 0}
    if item["type"] == "function_call":
        added = {**item, "arguments": "", "status": "in_progress"}
        events.append(_event("response.output_item.added", output_index=0, item=added))
        for piece in split_fixed(item["arguments"], 7):
            events.append(_event("response.function_call_arguments.delta", **at, delta=piece))
        arguments = item["arguments"]
        events.append(_event("response.function_call_arguments.done", **at, arguments=arguments))
    else:
        part = item["content"][0]
        added = {**item, "content": [], "status": "in_progress"}
        events.append(_event("response.output_item.added", output_index=0, item=added))
        at["content_index"] = 0
        events.append(_event("response.content_part.added", **at, part={**part, "text": ""}))
        for piece in split_words(part["text"]):
            events.append(_event("response.output_text.delta", **at, delta=piece, logprobs=[]))
        text = part["text"]
        events.append(_event("response.output_text.done", **at, text=text, logprobs=[]))
        events.append(_event("response.content_part.done", **at, part=part))
    events.append(_event("response.output_item.done", output_index=0, item=item))
    events.append(_event("response.completed", response=response))
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def _sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def _stream(
    request: web.Request, rec: RecordedRequest, b: Behaviour, response: dict[str, Any]
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, event in enumerate(stream_events(response)):
        if b.chunks == i and b.kind in ("drop_after", "error_event_after", "end_after"):
            if b.kind == "drop_after":
                rec.outcome = "aborted"
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if b.kind == "error_event_after":
                message = "The server had an error while processing your request."
                failed = _event("error", code="server_error", message=message, sequence_number=i)
                await resp.write(_sse(failed))
            await resp.write_eof()
            return resp
        await resp.write(_sse(event))
        rec.sent_events.append(event)
    await resp.write_eof()
    return resp
