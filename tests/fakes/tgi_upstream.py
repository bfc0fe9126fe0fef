"""A fake HuggingFace upstream that speaks TGI's and the classic API's wire formats (as
docs/huggingface.md describes them) and fails on demand, on 127.0.0.1 in a thread with its
own loop:

    POST /generate              TGI: {"generated_text", "details"} + x-prompt-tokens header
    POST /generate_stream       TGI: `data:{...}` token events, a final event with
                                `generated_text` and details (input_length), no [DONE]
    POST /models/{model}        the classic API: a list [{"generated_text", "details"}], or the
                                TGI stream when the body has "stream": true
    POST /v1/chat/completions   TGI's Messages API / the HF router: "id": "", role in every
                                delta, finish on the last token's chunk, "stop_sequence",
                                tool-call id "0" repeated and finish "stop", then [DONE]

Like TGI it refuses (422) a temperature of 0 or a top_p of 1.0 on /generate, and a `stop`
that is not a list or a null `stream` on the chat route. Tokens are words: the reply is
`fake.reply` (or a scripted text) cut into words; prompt tokens are the words of `inputs`
(or of every message). A stop string ends the generation after the token that contains it
(TGI keeps it in the text); max_new_tokens cuts with finish "length"; else an EOS token.

    fake = FakeTGI().start()
    fake.script(loading(12.5), validation("..."))    # consumed one per request, then ok()
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.server import FakeServer

DEFAULT_REPLY = "Hello from the fake TGI model"
TOOL_ARGUMENTS = '{"city": "Paris"}'
_DESERIALIZE = "Failed to deserialize the JSON body into the target type"


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    after: int = 0
    seconds: float = 0.0


def ok(text: str | None = None) -> Behaviour:
    return Behaviour("ok", text=text)


def status(code: int, body: Any, headers: dict[str, str] | None = None) -> Behaviour:
    return Behaviour("status", status=code, body=body, headers=headers or {})


def loading(estimated_time: float = 20.0) -> Behaviour:
    body = {"error": "Model acme/model is currently loading", "estimated_time": estimated_time}
    return status(503, body)


def overloaded(retry_after: int | None = None) -> Behaviour:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return status(429, {"error": "Model is overloaded", "error_type": "overloaded"}, headers)


def validation(message: str = "Input validation error: `max_new_tokens` must be > 0") -> Behaviour:
    return status(422, {"error": message, "error_type": "validation"})


def unauthorized() -> Behaviour:
    """401 whose body echoes the token, as some gateways do: the proxy must not relay it."""
    return Behaviour("unauthorized", status=401)


def error_event_after(tokens: int, message: str, error_type: str = "generation") -> Behaviour:
    """A 200 stream: `tokens` token events, then `data:{"error": ..., "error_type": ...}`."""
    return Behaviour("error_event", body={"error": message, "error_type": error_type}, after=tokens)


def end_after(tokens: int) -> Behaviour:
    """A 200 stream that stops after `tokens` token events without its final event."""
    return Behaviour("end_after", after=tokens)


def hang(seconds: float) -> Behaviour:
    """Say nothing for `seconds`, then answer normally."""
    return Behaviour("hang", seconds=seconds)


def plain_json(text: str | None = None) -> Behaviour:
    """A backend that cannot stream: JSON even when a stream was asked for."""
    return Behaviour("plain_json", text=text)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any


@dataclass
class Outcome:
    """What the fake generates for one request."""

    tokens: list[str]
    finish: str
    prompt_tokens: int
    stopped: bool

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def generate(reply: str, prompt: str, parameters: dict[str, Any]) -> Outcome:
    words = reply.split(" ")
    tokens = [words[0]] + [" " + w for w in words[1:]]
    stops = parameters.get("stop") or []
    limit = parameters.get("max_new_tokens")
    out: list[str] = []
    for token in tokens:
        if limit is not None and len(out) >= limit:
            return Outcome(out, "length", len(prompt.split()), False)
        out.append(token)
        if any(s in "".join(out) for s in stops):
            return Outcome(out, "stop_sequence", len(prompt.split()), True)
    return Outcome(out, "eos_token", len(prompt.split()), False)


def tgi_refusal(parameters: dict[str, Any]) -> str | None:
    """TGI's own validation of /generate parameters (validation.rs)."""
    temperature, top_p = parameters.get("temperature"), parameters.get("top_p")
    if temperature is not None and temperature <= 0:
        return "Input validation error: `temperature` must be strictly positive"
    if top_p is not None and not 0 < top_p < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    if parameters.get("max_new_tokens") == 0:
        return "Input validation error: `max_new_tokens` must be strictly positive"
    return None


def sse(data: Any) -> bytes:
    return b"data:" + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class FakeTGI(FakeServer):
    thread_name = "fake-tgi"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self.reply = DEFAULT_REPLY
        self._requests: list[Recorded] = []

    # ---- scripting and inspection (any thread)

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self.reply = DEFAULT_REPLY

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> Recorded:
        requests = self.requests
        assert requests, "the fake TGI upstream received no request"
        return requests[-1]

    # ---- routes (start, stop and url: FakeServer)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/generate_stream", self._generate_stream)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/models/{model:.+}", self._classic)
        return app

    # ---- handlers (the fake's loop)

    async def _take(self, request: web.Request) -> tuple[Any, Behaviour]:
        body = await request.read()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self._requests.append(Recorded(request.path, headers, parsed))
            behaviour = self._script.popleft() if self._script else ok()
        if behaviour.kind == "hang":
            await asyncio.sleep(behaviour.seconds)
        return parsed, behaviour

    def _failure(self, request: web.Request, b: Behaviour) -> web.Response | None:
        if b.kind == "status":
            return web.json_response(b.body, status=b.status, headers=b.headers)
        if b.kind == "unauthorized":
            token = request.headers.get("Authorization", "")
            body = {"error": f"Invalid credentials in Authorization header: {token}"}
            return web.json_response(body, status=401)
        return None

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        data, b = await self._take(request)
        return self._failure(request, b) or self._generation(data, b, as_list=False)

    async def _classic(self, request: web.Request) -> web.StreamResponse:
        data, b = await self._take(request)
        failed = self._failure(request, b)
        if failed is not None:
            return failed
        if data.get("stream") and b.kind != "plain_json":
            return await self._token_stream(request, data, b)
        return self._generation(data, b, as_list=True)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        data, b = await self._take(request)
        return self._failure(request, b) or await self._token_stream(request, data, b)

    def _generation(self, data: Any, b: Behaviour, as_list: bool) -> web.Response:
        parameters = data.get("parameters") or {}
        refusal = tgi_refusal(parameters)
        if refusal:
            return web.json_response({"error": refusal, "error_type": "validation"}, status=422)
        out = generate(b.text or self.reply, data["inputs"], parameters)
        reply: dict[str, Any] = {"generated_text": out.text}
        if parameters.get("details"):
            reply["details"] = {
                "finish_reason": out.finish,
                "generated_tokens": len(out.tokens),
                "seed": None,
                "prefill": [],
                "tokens": [],
            }
        headers = {"x-prompt-tokens": str(out.prompt_tokens), "x-compute-type": "cpu"}
        return web.json_response([reply] if as_list else reply, headers=headers)

    async def _token_stream(
        self, request: web.Request, data: Any, b: Behaviour
    ) -> web.StreamResponse:
        parameters = data.get("parameters") or {}
        refusal = tgi_refusal(parameters)
        if refusal:
            return web.json_response({"error": refusal, "error_type": "validation"}, status=422)
        out = generate(b.text or self.reply, data["inputs"], parameters)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": keep-alive\n\n")
        for i, token in enumerate(out.tokens):
            if b.kind in ("error_event", "end_after") and i == b.after:
                if b.kind == "error_event":
                    await resp.write(sse(b.body))
                await resp.write_eof()
                return resp
            event = {
                "index": i + 1,
                "token": {"id": i, "text": token, "logprob": -0.1, "special": False},
            }
            await resp.write(sse({**event, "generated_text": None, "details": None}))
        await resp.write(sse(self._final_event(out, data, len(out.tokens))))
        await resp.write_eof()
        return resp

    @staticmethod
    def _final_event(out: Outcome, data: Any, index: int) -> dict[str, Any]:
        eos = out.finish == "eos_token"
        token = {"id": 2, "text": "</s>" if eos else "", "logprob": -0.01, "special": eos}
        details = {
            "finish_reason": out.finish,
            "generated_tokens": len(out.tokens) + (1 if eos else 0),
            "seed": None,
            "input_length": out.prompt_tokens,
        }
        wants_details = (data.get("parameters") or {}).get("details")
        return {
            "index": index + 1,
            "token": token,
            "generated_text": out.text,
            "details": details if wants_details else None,
        }

    # ---- the Messages API / HF router

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        data, b = await self._take(request)
        failed = self._failure(request, b)
        if failed is not None:
            return failed
        refusal = self._chat_refusal(data)
        if refusal:
            return web.Response(status=422, text=refusal)  # axum's plain-text rejection
        messages = data.get("messages") or []
        prompt = " ".join(str(m.get("content") or "") for m in messages)
        out = generate(
            b.text or self.reply,
            prompt,
            {"stop": data.get("stop"), "max_new_tokens": data.get("max_tokens")},
        )
        if data.get("stream"):
            return await self._chat_stream(request, data, out)
        return web.json_response(self._chat_json(data, out))

    @staticmethod
    def _chat_refusal(data: Any) -> str | None:
        if "stop" in data and not isinstance(data["stop"], list):
            return f"{_DESERIALIZE}: stop: invalid type"
        if "stream" in data and data["stream"] is None:
            return f"{_DESERIALIZE}: stream: invalid type: null"
        top_p = data.get("top_p")
        if top_p is not None and not 0 < top_p < 1:
            return "Input validation error: `top_p` must be > 0.0 and < 1.0"
        return None

    @staticmethod
    def _usage(out: Outcome) -> dict[str, int]:
        n = len(out.tokens)
        return {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": out.prompt_tokens + n,
        }

    def _chat_json(self, data: Any, out: Outcome) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": out.text}
        finish = (
            "stop_sequence" if out.stopped else {"eos_token": "stop"}.get(out.finish, out.finish)
        )
        if data.get("tools"):
            name = data["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "0",
                        "type": "function",
                        "function": {
                            "description": None,
                            "name": name,
                            "arguments": TOOL_ARGUMENTS,
                        },
                    }
                ],
            }
            finish = "stop"
        return {
            "object": "chat.completion",
            "id": "",
            "created": 1732000000,
            "model": data.get("model"),
            "system_fingerprint": "3.3.6-native",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": self._usage(out),
        }

    def _chat_events(self, data: Any, out: Outcome) -> list[dict[str, Any]]:
        if data.get("tools"):
            name = data["tools"][0]["function"]["name"]
            pieces = [TOOL_ARGUMENTS[i : i + 6] for i in range(0, len(TOOL_ARGUMENTS), 6)]
            deltas = [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "0",
                            "type": "function",
                            "function": {"name": name if i == 0 else None, "arguments": p},
                        }
                    ],
                }
                for i, p in enumerate(pieces)
            ]
            return [
                {"delta": d, "finish_reason": "stop" if i == len(deltas) - 1 else None}
                for i, d in enumerate(deltas)
            ]
        finish = (
            "stop_sequence" if out.stopped else {"eos_token": "stop"}.get(out.finish, out.finish)
        )
        tokens = out.tokens + ([""] if out.finish == "eos_token" else [])  # EOS: empty content
        return [
            {
                "delta": {"role": "assistant", "content": t},
                "finish_reason": finish if i == len(tokens) - 1 else None,
            }
            for i, t in enumerate(tokens)
        ]

    async def _chat_stream(
        self, request: web.Request, data: Any, out: Outcome
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        options = data.get("stream_options") or {}
        for event in self._chat_events(data, out):
            chunk = {
                "object": "chat.completion.chunk",
                "id": "",
                "created": 1732000000,
                "model": data.get("model"),
                "system_fingerprint": "3.3.6-native",
                "choices": [{"index": 0, "logprobs": None, **event}],
                "usage": None,
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if options.get("include_usage"):
            usage_chunk = {
                "object": "chat.completion.chunk",
                "id": "",
                "created": 1732000000,
                "model": data.get("model"),
                "choices": [],
                "usage": self._usage(out),
            }
            await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
