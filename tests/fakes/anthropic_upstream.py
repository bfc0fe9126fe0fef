"""A fake Anthropic Messages API upstream that speaks the real wire format and fails on demand.

Like the fake OpenAI upstream (fakes/openai_upstream.py) it runs on FakeServer (127.0.0.1, a
free port, a thread of its own), so tests script it and read what it saw from any thread:

    fake = FakeAnthropic().start()
    fake.script(overloaded(), rate_limited(30))   # consumed one per request, then `default`
    ... point an upstream with `base_url: fake.url` at it ...
    fake.last_request.json["system"]               # what the proxy sent
    fake.stop()

POST /v1/messages answers JSON, or with `"stream": true` server-sent events in Anthropic's
order (`event:` and `data:` lines): message_start, per block content_block_start / ping /
content_block_delta... / content_block_stop, message_delta, message_stop. The answer is
`fake.reply` (or the rest of the last user text after "echo:"); a request with tools whose
last turn carries no tool_result gets a short text and a tool_use block (stop_reason
tool_use); `stop_sequences` cut the text (stop_sequence) and `max_tokens` counts words
(max_tokens). Usage counts words: input_tokens = words of the system prompt and every text
of the messages, output_tokens = words of the answer's text and tool input JSON.
POST /v1/messages/count_tokens answers {"input_tokens": N} the same way.

Requests are checked as the real API checks them: a key (x-api-key, or a bearer token as
the newer SDKs send it) and anthropic-version present, max_tokens given, roles user/assistant
only, no empty text block, every tool_use answered by a tool_result in the next turn and every
tool_result answering one. Errors use Anthropic's envelope
{"type": "error", "error": {"type", "message"}}.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.openai_upstream import split_fixed, split_words
from fakes.scripted import RecordedRequest, ScriptedFake

DEFAULT_REPLY = "Hello from the fake Claude model"
TOOL_PREAMBLE = "Let me check."
TOOL_INPUT = {"city": "Paris", "unit": "celsius", "days": 3}
THINKING = "The user wants a greeting."
ECHO_PREFIX = "echo:"
REQUEST_ID_PREFIX = "req_fake_"

# -- behaviours: what the fake does with one request ---------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """One scripted reaction; build it with the helpers below."""

    kind: str
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    events: int = 0  # stream events sent before the failure
    text: str | None = None
    thinking: bool = False
    stop_reason: str | None = None  # replaces the one the fake would give
    cache_read: int = 0
    cache_creation: int = 0
    echo_key: bool = False


def ok(
    text: str | None = None,
    *,
    thinking: bool = False,
    stop_reason: str | None = None,
    cache_read: int = 0,
    cache_creation: int = 0,
) -> Behaviour:
    """Answer normally; `thinking` puts a thinking block first; cache_* add cached input."""
    return Behaviour(
        "ok",
        text=text,
        thinking=thinking,
        stop_reason=stop_reason,
        cache_read=cache_read,
        cache_creation=cache_creation,
    )


def error_envelope(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


_DEFAULT_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "model: claude-nope"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def status(
    code: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
) -> Behaviour:
    """Answer `code` with Anthropic's error envelope (or `body`)."""
    if body is None:
        d_type, d_message = _DEFAULT_ERRORS.get(code, ("api_error", "Error."))
        body = error_envelope(error_type or d_type, message or d_message)
    return Behaviour("status", status=code, body=body, headers=dict(headers or {}))


def overloaded() -> Behaviour:
    return status(529)


def rate_limited(retry_after: int = 30) -> Behaviour:
    return status(429, headers={"retry-after": str(retry_after)})


PROMPT_TOO_LONG = "prompt is too long: 208310 tokens > 200000 maximum"


def prompt_too_long() -> Behaviour:
    return status(400, PROMPT_TOO_LONG)


def invalid_api_key() -> Behaviour:
    """401 whose message echoes the key the caller sent (the proxy must never show it)."""
    return Behaviour("status", status=401, echo_key=True)


def hang(seconds: float) -> Behaviour:
    """Say nothing for `seconds`, then answer normally."""
    return Behaviour("hang", seconds=seconds)


def drop_after(events: int) -> Behaviour:
    """Stream `events` events, then abort the connection (JSON: abort before answering)."""
    return Behaviour("drop_after", events=events)


def end_after(events: int) -> Behaviour:
    """Stream `events` events, then end the response cleanly without message_stop."""
    return Behaviour("end_after", events=events)


def error_event_after(
    events: int, error_type: str = "overloaded_error", message: str = "Overloaded"
) -> Behaviour:
    """Stream `events` events, then an `error` event, then close."""
    return Behaviour("error_event_after", events=events, body=error_envelope(error_type, message))


def garbage() -> Behaviour:
    """200 with a body that is not JSON."""
    return Behaviour("garbage", body=b"<html>upstream connect error</html>")


# -- answers ---------------------------------------------------------------------------------------


class RequestError(Exception):
    """What the real API would refuse: a 400 (or 401) in Anthropic's envelope."""

    def __init__(self, message: str, status: int = 400, error_type: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


def words(text: str) -> int:
    return len(text.split())


def _texts(content: Any) -> list[str]:
    """Every text of a message's content, tool results' texts included."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            out.extend(_texts(block.get("content")))
    return out


def input_tokens(body: Mapping[str, Any]) -> int:
    total = sum(words(t) for t in _texts(body.get("system")))
    for message in body.get("messages") or []:
        total += sum(words(t) for t in _texts(message.get("content")))
    return total


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def api_key(headers: Mapping[str, str]) -> str:
    """The caller's key: x-api-key, or a bearer token (what the newer SDKs send)."""
    bearer = headers.get("authorization", "").removeprefix("Bearer ")
    return headers.get("x-api-key") or bearer


def check_request(headers: Mapping[str, str], body: Any, *, counting: bool = False) -> None:
    """Raise RequestError for what api.anthropic.com refuses."""
    if not api_key(headers):
        raise RequestError("x-api-key header is required", 401, "authentication_error")
    if not headers.get("anthropic-version"):
        raise RequestError("anthropic-version: header is required")
    if not isinstance(body, dict):
        raise RequestError("The request body is not valid JSON.")
    if not counting and not isinstance(body.get("max_tokens"), int):
        raise RequestError("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages: Field required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            role = message.get("role") if isinstance(message, dict) else None
            raise RequestError(f'messages.{i}: Unexpected role "{role}"')
        for block in _blocks(message):
            if block.get("type") == "text" and not block.get("text"):
                raise RequestError(f"messages.{i}: text content blocks must be non-empty")
    _check_tool_pairs(messages)


def _check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        results = {b.get("tool_use_id") for b in _blocks(message) if b.get("type") == "tool_result"}
        previous = messages[i - 1] if i else {}
        uses = {b.get("id") for b in _blocks(previous) if b.get("type") == "tool_use"}
        if results - uses:
            raise RequestError(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{sorted(results - uses)[0]}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )
        if uses - results:
            raise RequestError(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {sorted(uses - results)[0]}"
            )


def _wants_tool(body: Mapping[str, Any]) -> str | None:
    """The tool to call: with tools, unless the choice is none or a tool result came last."""
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    if not tools or choice.get("type") == "none":
        return None
    last = (body.get("messages") or [{}])[-1]
    if any(b.get("type") == "tool_result" for b in _blocks(last)):
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name"))
    return str(tools[0].get("name"))


def _echoed(body: Mapping[str, Any]) -> str | None:
    last = (body.get("messages") or [{}])[-1]
    text = " ".join(_texts(last.get("content")))
    return text[len(ECHO_PREFIX) :].strip() if text.startswith(ECHO_PREFIX) else None


def _cut(text: str, body: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """The text after stop sequences and max_tokens, the stop reason and the stop sequence."""
    found = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s in text]
    if found:
        at, sequence = min(found)
        return text[:at], "stop_sequence", sequence
    limit = int(body.get("max_tokens") or 0)
    if words(text) > limit:
        return " ".join(text.split()[:limit]), "max_tokens", None
    return text, "end_turn", None


@dataclass
class Answer:
    """One request's answer, shared by the JSON and the event-stream renderings."""

    id: str
    model: str
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, Any]

    def message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage,
        }


def make_answer(body: Mapping[str, Any], reply: str, seq: int, b: Behaviour) -> Answer:
    tool = _wants_tool(body)
    blocks: list[dict[str, Any]] = []
    if b.thinking:
        blocks.append({"type": "thinking", "thinking": THINKING, "signature": "c2lnbmF0dXJl"})
    if tool is not None:
        blocks.append({"type": "text", "text": TOOL_PREAMBLE})
        blocks.append(
            {"type": "tool_use", "id": f"toolu_fake{seq:04d}", "name": tool, "input": TOOL_INPUT}
        )
        stop_reason, sequence = "tool_use", None
    else:
        text, stop_reason, sequence = _cut(b.text or _echoed(body) or reply, body)
        blocks.append({"type": "text", "text": text})
    output = sum(words(x.get("text", "")) for x in blocks if x["type"] == "text")
    output += words(json.dumps(TOOL_INPUT)) if tool else 0
    usage = {
        "input_tokens": input_tokens(body),
        "cache_creation_input_tokens": b.cache_creation,
        "cache_read_input_tokens": b.cache_read,
        "output_tokens": output,
        "service_tier": "standard",
    }
    return Answer(
        f"msg_fake{seq:06d}",
        str(body.get("model")),
        blocks,
        b.stop_reason or stop_reason,
        sequence,
        usage,
    )


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    kind = block["type"]
    if kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in split_words(block["text"]) if p]
    elif kind == "tool_use":
        start = {**block, "input": {}}
        pieces = split_fixed(json.dumps(block["input"]), 7)
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    events = [("content_block_start", {"index": index, "content_block": start})]
    if index == 0:
        events.append(("ping", {}))
    events += [("content_block_delta", {"index": index, "delta": d}) for d in deltas]
    events.append(("content_block_stop", {"index": index}))
    return events


def stream_events(answer: Answer) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) in the order api.anthropic.com sends them."""
    head = {**answer.message(), "content": [], "stop_reason": None, "stop_sequence": None}
    head["usage"] = {**answer.usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"message": head})]
    for index, block in enumerate(answer.blocks):
        events += _block_events(index, block)
    delta = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence}
    usage = {"output_tokens": answer.usage["output_tokens"]}
    events.append(("message_delta", {"delta": delta, "usage": usage}))
    events.append(("message_stop", {}))
    return [(name, {"type": name, **data}) for name, data in events]


def sse(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- the server ------------------------------------------------------------------------------------


class FakeAnthropic(ScriptedFake["Behaviour"]):
    """Thread-safe: script it and read what it saw from any thread."""

    thread_name = "fake-anthropic"
    default_reply = DEFAULT_REPLY

    def fresh_default(self) -> Behaviour:
        return ok()

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.message_requests
        assert requests, "the fake Anthropic upstream received no /v1/messages request"
        return requests[-1]

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    async def _count_tokens(self, request: web.Request) -> web.Response:
        rec = self._record(request, await request.read())
        behaviour, _, seq = self._next_behaviour()
        rec.behaviour = behaviour
        try:
            if behaviour.kind == "status":
                return self._status(request, behaviour, seq)
            check_request(rec.headers, rec.json, counting=True)
            rec.response_json = {"input_tokens": input_tokens(rec.json)}
            return web.json_response(rec.response_json, headers=self._headers(seq))
        except RequestError as exc:
            return self._refused(exc, seq)
        finally:
            rec.outcome = rec.outcome or "completed"
            rec.done.set()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        rec = self._record(request, await request.read())
        behaviour, reply, seq = self._next_behaviour()
        rec.behaviour = behaviour
        try:
            response = await self._answer(request, rec, behaviour, reply, seq)
            rec.outcome = rec.outcome or "completed"
            return response
        except asyncio.CancelledError:
            rec.outcome = "cancelled"
            raise
        except ConnectionError:
            rec.outcome = "disconnected"
            raise
        finally:
            rec.finished_at = time.monotonic()
            rec.done.set()

    async def _answer(
        self, request: web.Request, rec: RecordedRequest, b: Behaviour, reply: str, seq: int
    ) -> web.StreamResponse:
        if b.kind == "status":
            return self._status(request, b, seq)
        if b.kind == "garbage":
            return web.Response(body=b.body, content_type="application/json")
        if b.kind == "hang":
            await asyncio.sleep(b.seconds)
        try:
            check_request(rec.headers, rec.json)
        except RequestError as exc:
            return self._refused(exc, seq)
        answer = make_answer(rec.json, reply, seq, b)
        rec.usage = dict(answer.usage)
        if rec.json.get("stream"):
            return await self._stream(request, rec, b, answer, seq)
        if b.kind == "drop_after":
            return self._abort(request, rec)
        rec.response_json = answer.message()
        return web.json_response(rec.response_json, headers=self._headers(seq))

    @staticmethod
    def _headers(seq: int) -> dict[str, str]:
        return {"request-id": f"{REQUEST_ID_PREFIX}{seq}", "anthropic-organization-id": "org-fake"}

    def _status(self, request: web.Request, b: Behaviour, seq: int) -> web.Response:
        body = b.body
        if b.echo_key:
            key = api_key({k.lower(): v for k, v in request.headers.items()})
            body = error_envelope("authentication_error", f"invalid x-api-key: {key}")
        headers = {**self._headers(seq), **b.headers}
        return web.json_response(body, status=b.status, headers=headers)

    def _refused(self, exc: RequestError, seq: int) -> web.Response:
        body = error_envelope(exc.error_type, str(exc))
        return web.json_response(body, status=exc.status, headers=self._headers(seq))

    @staticmethod
    def _abort(request: web.Request, rec: RecordedRequest) -> web.Response:
        rec.outcome = "aborted"
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the wire

    async def _stream(
        self, request: web.Request, rec: RecordedRequest, b: Behaviour, answer: Answer, seq: int
    ) -> web.StreamResponse:
        headers = {**self._headers(seq), "Content-Type": "text/event-stream; charset=utf-8"}
        resp = web.StreamResponse(headers={**headers, "Cache-Control": "no-cache"})
        await resp.prepare(request)
        failing = b.kind in ("drop_after", "end_after", "error_event_after")
        for i, (name, data) in enumerate(stream_events(answer)):
            if failing and i == b.events:
                if b.kind == "drop_after":
                    return self._abort(request, rec)
                if b.kind == "error_event_after":
                    await resp.write(sse("error", b.body))
                await resp.write_eof()
                return resp
            await resp.write(sse(name, data))
            rec.sent_events.append(data)
        await resp.write_eof()
        return resp
