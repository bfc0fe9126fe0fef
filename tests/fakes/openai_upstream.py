"""A fake OpenAI chat-completions upstream that speaks the real wire format and fails on demand.

The server is aiohttp on 127.0.0.1 (a free port), running in a background thread with its own
event loop (`FakeServer`, fakes/server.py), so synchronous and asynchronous tests can script it
directly:

    fake = FakeOpenAI().start()
    fake.script(status(500), hang(5))   # consumed one per request, then `fake.default`
    ... drive something against fake.base_url ...
    fake.requests[-1].json["model"]      # what was forwarded
    fake.stop()

The reply of choice 0 is `fake.reply`, unless the last message's text starts with "echo:", then
it is the rest of that text (so concurrent requests get distinguishable answers); choice i > 0
gets " #i" appended. Usage counts are words: prompt_tokens = words of every message's text,
completion_tokens = words of every choice's content (or tool-call arguments), the same streamed
or not.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.embeddings_api import embeddings_handler
from fakes.scripted import RecordedRequest, ScriptedFake

DEFAULT_REPLY = "Hello from the fake upstream model"
TOOL_ARGUMENTS = {"city": "Paris", "unit": "celsius", "days": 3}
UPSTREAM_REQUEST_ID_PREFIX = "req_fake_"


# --------------------------------------------------------------------------------------------
# Behaviours: what the fake does with one request


@dataclass(frozen=True)
class Behaviour:
    """One scripted reaction. Build it with the helper functions below."""

    kind: str
    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    chunks: int = 0
    text: str | None = None
    echo_key: bool = False
    odd_framing: bool = False


def ok(text: str | None = None) -> Behaviour:
    """Answer normally (JSON or SSE); `text` overrides the reply of choice 0."""
    return Behaviour("ok", text=text)


def odd_sse_framing(text: str | None = None) -> Behaviour:
    """A valid stream framed the other ways SSE allows: CRLF line ends, `data:` with no
    space, `: keep-alive` comment events, and every event split across two writes."""
    return Behaviour("ok", text=text, odd_framing=True)


def error_envelope(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: Any = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_DEFAULT_ERRORS = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("Country, region, or territory not supported", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Please try again in 30s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: (
        "The engine is currently overloaded, please try again later",
        "service_unavailable_error",
        "server_is_overloaded",
    ),
}


def status(
    code: int,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    *,
    message: str | None = None,
    error_type: str | None = None,
    error_code: Any = None,
    param: str | None = None,
) -> Behaviour:
    """Answer `code` with `body` (default: an OpenAI error envelope fitting the status)."""
    if body is None:
        d_message, d_type, d_code = _DEFAULT_ERRORS.get(code, ("Error.", "server_error", None))
        body = error_envelope(
            message or d_message, error_type or d_type, param, error_code or d_code
        )
    return Behaviour("status", status=code, body=body, headers=dict(headers or {}))


def rate_limited(retry_after: int = 30, message: str | None = None) -> Behaviour:
    return status(429, headers={"retry-after": str(retry_after)}, message=message)


CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 16385 tokens. However, your messages resulted in "
    "17000 tokens. Please reduce the length of the messages."
)


def context_length_exceeded(message: str = CONTEXT_LENGTH_MESSAGE) -> Behaviour:
    return status(400, message=message, param="messages", error_code="context_length_exceeded")


def invalid_api_key() -> Behaviour:
    """401 like OpenAI's: the message echoes the key the caller sent (the proxy must hide it)."""
    return Behaviour("status", status=401, echo_key=True)


def hang(seconds: float) -> Behaviour:
    """Say nothing for `seconds`, then answer normally."""
    return Behaviour("hang", seconds=seconds)


def slow_stream(delay: float, text: str | None = None) -> Behaviour:
    """Stream normally, sleeping `delay` between events (none before the first)."""
    return Behaviour("slow_stream", seconds=delay, text=text)


def stall_after(n_chunks: int, seconds: float) -> Behaviour:
    """Stream `n_chunks` events at once, then stay silent for `seconds`, then finish normally."""
    return Behaviour("stall_after", chunks=n_chunks, seconds=seconds)


def drop_after(n_chunks: int) -> Behaviour:
    """Stream `n_chunks` events, then abort the TCP connection (no finish chunk, no [DONE]).
    For a JSON request the connection is aborted before any answer."""
    return Behaviour("drop_after", chunks=n_chunks)


def end_after(n_chunks: int) -> Behaviour:
    """Stream `n_chunks` events, then end the response cleanly: no finish chunk, no [DONE]."""
    return Behaviour("end_after", chunks=n_chunks)


def drop_before_response() -> Behaviour:
    """Abort the connection without answering anything."""
    return Behaviour("drop_before_response")


UPSTREAM_STREAM_ERROR = error_envelope(
    "The server had an error while processing your request.", "server_error"
)


def error_event_after(n_chunks: int, error: Mapping[str, Any] | None = None) -> Behaviour:
    """Stream `n_chunks` events, then an in-band `data: {"error": ...}` event, then close."""
    body = dict(error or UPSTREAM_STREAM_ERROR)
    return Behaviour("error_event_after", chunks=n_chunks, body=body)


def garbage(body: bytes = b"<html><body>502 Bad Gateway</body></html> not json") -> Behaviour:
    """200 with a body that is not JSON (content-type claims JSON)."""
    return Behaviour("garbage", body=body)


# --------------------------------------------------------------------------------------------
# Building answers (what the fake saw is fakes.scripted.RecordedRequest)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens(body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(count_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def split_words(text: str) -> list[str]:
    """'a b c' -> ['a', ' b', ' c'] (how the fake cuts content into stream chunks)."""
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def split_fixed(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


ECHO_PREFIX = "echo:"


def echoed(body: Mapping[str, Any]) -> str | None:
    messages = body.get("messages") or []
    last = messages[-1] if messages else None
    text = _text_of(last.get("content")) if isinstance(last, dict) else ""
    return text[len(ECHO_PREFIX) :].strip() if text.startswith(ECHO_PREFIX) else None


def reply_text(base: str, index: int) -> str:
    return base if index == 0 else f"{base} #{index}"


def _tool_name(body: Mapping[str, Any]) -> str:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name"))
    tool = body["tools"][0]
    return str((tool.get("function") or tool.get("custom") or {}).get("name", "tool"))


@dataclass
class _Plan:
    """The answer the fake will give one request, shared by the JSON and SSE renderings."""

    id: str
    created: int
    model: str
    n: int
    texts: list[str]  # content per choice ("" for tool calls)
    tool: tuple[str, str] | None  # (name, arguments JSON) when the request had tools
    tool_ids: list[str]
    usage: dict[str, int]
    include_usage: bool


def make_plan(body: Mapping[str, Any], reply: str, seq: int) -> _Plan:
    n = int(body.get("n") or 1)
    tool = None
    if body.get("tools"):
        tool = (_tool_name(body), json.dumps(TOOL_ARGUMENTS))
    texts = [reply_text(reply, i) for i in range(n)]
    completion = sum(count_words(tool[1] if tool else t) for t in texts)
    prompt = prompt_tokens(body)
    options = body.get("stream_options") or {}
    return _Plan(
        id=f"chatcmpl-fake{seq:06d}",
        created=int(time.time()),
        model=str(body.get("model")),
        n=n,
        texts=texts,
        tool=tool,
        tool_ids=[f"call_fake{seq:04d}x{i}" for i in range(n)],
        usage={
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def completion_json(plan: _Plan) -> dict[str, Any]:
    choices = []
    for i in range(plan.n):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.texts[i],
            "refusal": None,
            "annotations": [],
        }
        finish = "stop"
        if plan.tool:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": plan.tool_ids[i],
                    "type": "function",
                    "function": {"name": plan.tool[0], "arguments": plan.tool[1]},
                }
            ]
            finish = "tool_calls"
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "choices": choices,
        "usage": dict(plan.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _choice_deltas(plan: _Plan, i: int) -> list[tuple[dict[str, Any], str | None]]:
    """(delta, finish_reason) for one choice: role chunk, content pieces, finish chunk."""
    if plan.tool:
        name, arguments = plan.tool
        first = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": plan.tool_ids[i],
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ],
        }
        pieces = [
            {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
            for part in split_fixed(arguments, 7)
        ]
        return [(first, None)] + [(p, None) for p in pieces] + [({}, "tool_calls")]
    first = {"role": "assistant", "content": "", "refusal": None}
    pieces = [{"content": part} for part in split_words(plan.texts[i])]
    return [(first, None)] + [(p, None) for p in pieces] + [({}, "stop")]


def stream_events(plan: _Plan) -> list[dict[str, Any]]:
    """Every chunk of the stream, choices interleaved by index, usage chunk last if asked."""
    per_choice = [_choice_deltas(plan, i) for i in range(plan.n)]
    events = []
    for step in itertools.zip_longest(*per_choice):
        for i, item in enumerate(step):
            if item is None:
                continue
            delta, finish = item
            chunk: dict[str, Any] = {
                "id": plan.id,
                "object": "chat.completion.chunk",
                "created": plan.created,
                "model": plan.model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if plan.include_usage:
                chunk["usage"] = None
            events.append(chunk)
    if plan.include_usage:
        events.append(
            {
                "id": plan.id,
                "object": "chat.completion.chunk",
                "created": plan.created,
                "model": plan.model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": dict(plan.usage),
            }
        )
    return events


def sse(data: Any, odd: bool = False) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    if odd:
        return f": keep-alive\r\n\r\ndata:{text}\r\n\r\n".encode()
    return f"data: {text}\n\n".encode()


# --------------------------------------------------------------------------------------------
# The server


class FakeOpenAI(ScriptedFake["Behaviour"]):
    """The fake upstream. Thread-safe: script it and read what it saw from any thread."""

    thread_name = "fake-openai"
    default_reply = DEFAULT_REPLY

    def __init__(self, models: list[str] | None = None) -> None:
        super().__init__()
        self.models = models or ["upstream-model-id", "gpt-4o-mini"]

    def fresh_default(self) -> Behaviour:
        return ok()

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def last_request(self) -> RecordedRequest:
        requests = self.chat_requests
        assert requests, "the fake upstream received no chat request"
        return requests[-1]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` chat requests arrived; return them."""

        def enough() -> bool:
            return sum(r.path.endswith("/chat/completions") for r in self._requests) >= count

        with self._changed:
            if not self._changed.wait_for(enough, timeout):
                raise TimeoutError(f"expected {count} upstream requests, got {len(self._requests)}")
        return self.chat_requests

    # ---- routes (start, stop and url: FakeServer)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", embeddings_handler(self))  # fakes/embeddings_api
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{id:.+}", self._model)
        from fakes.responses_api import mount_responses  # imports this module: imported here

        mount_responses(app, self)
        return app

    # ---- handlers (fake's loop)

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        return web.json_response(
            {"object": "list", "data": [self._model_obj(m) for m in self.models]}
        )

    async def _model(self, request: web.Request) -> web.Response:
        self._record(request, b"")
        return web.json_response(self._model_obj(request.match_info["id"]))

    @staticmethod
    def _model_obj(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "fake"}

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = self._record(request, body)
        behaviour, reply, seq = self._next_behaviour()
        rec.behaviour = behaviour
        try:
            response = await self._answer(request, rec, behaviour, reply, seq)
            if rec.outcome is None:
                rec.outcome = "completed"
            return response
        except asyncio.CancelledError:
            rec.outcome = "cancelled"
            raise
        except ConnectionError:
            rec.outcome = "disconnected"
            raise
        except BaseException:
            rec.outcome = "error"
            raise
        finally:
            rec.finished_at = time.monotonic()
            rec.done.set()

    async def _answer(
        self, request: web.Request, rec: RecordedRequest, b: Behaviour, reply: str, seq: int
    ) -> web.StreamResponse:
        headers = {
            "x-request-id": f"{UPSTREAM_REQUEST_ID_PREFIX}{seq}",
            "openai-processing-ms": "1",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
        }
        if b.kind == "status":
            return self._status(request, b, headers)
        if b.kind == "drop_before_response":
            return self._abort(request, rec)
        if b.kind == "garbage":
            return web.Response(
                status=200, body=b.body, headers=headers, content_type="application/json"
            )
        if b.kind == "hang":
            await asyncio.sleep(b.seconds)
        if not isinstance(rec.json, dict) or not isinstance(rec.json.get("messages"), list):
            return web.json_response(
                error_envelope("'messages' is a required property", param="messages"),
                status=400,
                headers=headers,
            )
        plan = make_plan(rec.json, b.text or echoed(rec.json) or reply, seq)
        rec.usage = dict(plan.usage)
        if not rec.json.get("stream"):
            if b.kind == "drop_after":
                return self._abort(request, rec)
            rec.response_json = completion_json(plan)
            return web.json_response(rec.response_json, headers=headers)
        return await self._stream(request, rec, b, plan, headers)

    def _status(self, request: web.Request, b: Behaviour, headers: dict[str, str]) -> web.Response:
        body = b.body
        if b.echo_key:
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            body = error_envelope(
                f"Incorrect API key provided: {key}. You can find your API "
                "key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return web.json_response(body, status=b.status, headers={**headers, **b.headers})

    @staticmethod
    def _abort(request: web.Request, rec: RecordedRequest) -> web.Response:
        rec.outcome = "aborted"
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the wire

    async def _stream(
        self,
        request: web.Request,
        rec: RecordedRequest,
        b: Behaviour,
        plan: _Plan,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for i, event in enumerate(stream_events(plan)):
            if b.chunks == i and b.kind in ("drop_after", "error_event_after", "end_after"):
                if b.kind == "drop_after":
                    return self._abort(request, rec)
                if b.kind == "error_event_after":
                    await resp.write(sse(b.body))
                await resp.write_eof()
                return resp
            pause = (b.kind == "stall_after" and i == b.chunks) or (
                b.kind == "slow_stream" and i > 0
            )
            if pause:
                await asyncio.sleep(b.seconds)
            await self._write_event(resp, sse(event, b.odd_framing), b.odd_framing)
            rec.sent_events.append(event)
        await resp.write(sse("[DONE]", b.odd_framing))
        await resp.write_eof()
        return resp

    @staticmethod
    async def _write_event(resp: web.StreamResponse, data: bytes, split: bool) -> None:
        if not split:
            await resp.write(data)
            return
        middle = len(data) // 2
        await resp.write(data[:middle])
        await asyncio.sleep(0.001)  # let the first half leave as its own TCP segment
        await resp.write(data[middle:])
