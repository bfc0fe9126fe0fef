"""The load of the chaos run and the check of every answer.

Requests go through the official `openai` SDK (AsyncOpenAI) and through a raw HTTP client
(httpx, reading the SSE bytes itself, so that a stream without `[DONE]` is seen). Each one
asks the fake upstream to echo a text unique to it, so an answer is checked for being the
answer to this request. Outcomes:

- ok: a completion, or a stream whose every choice finished, with the echoed text
- error: an OpenAI error envelope with a status (before any byte of an answer)
- inband: a stream ended by an in-band `{"error": ...}` event (then `[DONE]`)
- cancelled: the client itself hung up mid-stream, on purpose
- lost: no answer within the client timeout, a dropped connection, a malformed answer, the
  wrong text, or a stream that ended without a finish or an error event
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from bench.chaos_policy import FALLBACKS

CLIENT_TIMEOUT = 30.0  # seconds a client waits for a whole answer
CACHED_BODIES = 6  # distinct bodies for the cached model, so that some requests hit


@dataclass
class Spec:
    """One request to make."""

    rid: int
    model: str
    key_name: str
    stream: bool
    client: str  # sdk | raw
    words: list[str]
    usage: bool = False
    temperature: float | None = None
    hang_up: bool = False  # the client leaves after two chunks
    replica: int | None = None  # which proxy it went to (round-robin when not set)

    @property
    def expected(self) -> str:
        return " ".join(self.words)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "echo: " + self.expected}],
        }
        if self.stream:
            body["stream"] = True
            if self.usage:
                body["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body


@dataclass
class Result:
    spec: Spec
    outcome: str  # ok | error | inband | cancelled | lost
    status: int | None = None
    attempts: int | None = None
    cache: str | None = None
    seconds: float = 0.0
    ttft: float | None = None
    detail: str = ""
    started: float = 0.0
    error: str | None = None  # the envelope's code (or type)


@dataclass
class Mix:
    """What the load is made of."""

    rng: random.Random
    models: list[str] = field(
        default_factory=lambda: ["chat-weighted", "chat-priority", "chat-cached", "chat-backup"]
    )
    stream_share: float = 0.5
    raw_share: float = 0.3
    tight_share: float = 0.1
    hang_up_share: float = 0.03
    next_id: int = 0

    def spec(self, model: str | None = None) -> Spec:
        rng = self.rng
        self.next_id += 1
        model = model or rng.choice(self.models)
        stream = rng.random() < self.stream_share
        key = "tight" if rng.random() < self.tight_share else rng.choice(["svc", "svc", "batch"])
        if model == "chat-cached":
            words = [f"cached-{rng.randrange(CACHED_BODIES)}"]
        else:
            words = [f"r{self.next_id}"] + [f"w{i}" for i in range(rng.randint(0, 10))]
        return Spec(
            rid=self.next_id,
            model=model,
            key_name=key,
            stream=stream,
            client="raw" if rng.random() < self.raw_share else "sdk",
            words=words,
            usage=stream and rng.random() < 0.5,
            temperature=0 if model == "chat-cached" else None,
            hang_up=stream and rng.random() < self.hang_up_share,
        )


class Malformed(Exception):
    pass


def check_envelope(body: Any) -> str:
    """The code (else the type) of an OpenAI error envelope, or Malformed."""
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        raise Malformed(f"not an error envelope: {str(body)[:200]}")
    error = body["error"]
    if not {"message", "type", "param", "code"} <= set(error) or not error["message"]:
        raise Malformed(f"incomplete error envelope: {str(body)[:200]}")
    return str(error["code"] or error["type"])


def check_answer(spec: Spec, model: str | None, text: str, finished: bool) -> None:
    if model not in FALLBACKS.get(spec.model, (spec.model,)):
        raise Malformed(f"answered as model {model!r} for {spec.model!r}")
    if text != spec.expected:
        raise Malformed(f"text {text[:80]!r} is not the echo {spec.expected[:80]!r}")
    if not finished:
        raise Malformed("no finish_reason")


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


# ---- the SDK -----------------------------------------------------------------------------------


async def sdk_request(client: openai.AsyncOpenAI, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    raw = None
    try:
        raw = await client.chat.completions.with_raw_response.create(**spec.body())
        result.status = raw.status_code
        result.attempts = _int(raw.headers.get("x-llm-proxy-attempts"))
        result.cache = raw.headers.get("x-llm-proxy-cache")
        parsed = raw.parse()
        if inspect.isawaitable(parsed):  # AsyncAPIResponse.parse is a coroutine in some SDKs
            parsed = await parsed
        if spec.stream:
            await _sdk_stream(parsed, spec, result, started)
        else:
            choice = parsed.choices[0]
            content = choice.message.content or ""
            check_answer(spec, parsed.model, content, bool(choice.finish_reason))
            result.outcome = "ok"
    except openai.APIStatusError as exc:
        result.status = exc.status_code
        try:
            result.error = check_envelope(exc.response.json())
            result.outcome = "error"
        except (ValueError, Malformed) as bad:
            result.detail = f"malformed error: {bad}"
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


async def raw_request(client: httpx.AsyncClient, key: str, spec: Spec) -> Result:
    started = time.monotonic()
    result = Result(spec, "lost", started=started)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", json=spec.body(), headers=headers
        ) as resp:
            result.status = resp.status_code
            result.attempts = _int(resp.headers.get("x-llm-proxy-attempts"))
            result.cache = resp.headers.get("x-llm-proxy-cache")
            if resp.status_code != 200:
                result.error = check_envelope(json.loads(await resp.aread()))
                result.outcome = "error"
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
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        raise Malformed(f"a stream answered as {resp.headers.get('content-type')}")
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


# ---- the workers -------------------------------------------------------------------------------


class Load:
    """`workers` coroutines sending requests until `stop` is set; every result kept.

    With several base URLs (replicas of the proxy), request i goes to replica i mod n."""

    def __init__(
        self, base_urls: Sequence[str], keys: dict[str, str], mix: Mix, workers: int
    ) -> None:
        self.mix = mix
        self.workers = workers
        self.results: list[Result] = []
        self.inflight = 0
        self.stop = asyncio.Event()
        self.replicas = len(base_urls)
        self._turn = itertools.count()
        # idle connections dropped before the server's 5 s keep-alive closes them: no race
        limits = httpx.Limits(max_connections=workers * 2 + 8, keepalive_expiry=2.0)
        timeout = httpx.Timeout(CLIENT_TIMEOUT, connect=5.0)
        self.sdk = {
            (replica, name): openai.AsyncOpenAI(
                base_url=base_url + "/v1",
                api_key=key,
                max_retries=0,
                timeout=timeout,
                http_client=httpx.AsyncClient(limits=limits, timeout=timeout),
            )
            for replica, base_url in enumerate(base_urls)
            for name, key in keys.items()
        }
        self.raw = [
            httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)
            for base_url in base_urls
        ]
        self.keys = keys

    async def one(self, spec: Spec) -> Result:
        self.inflight += 1
        if spec.replica is None:
            spec.replica = next(self._turn) % self.replicas
        try:
            if spec.client == "sdk":
                call = sdk_request(self.sdk[spec.replica, spec.key_name], spec)
            else:
                call = raw_request(self.raw[spec.replica], self.keys[spec.key_name], spec)
            try:
                result = await asyncio.wait_for(call, CLIENT_TIMEOUT + 5)
            except TimeoutError:
                result = Result(spec, "lost", detail="no answer: the client gave up")
            self.results.append(result)
            return result
        finally:
            self.inflight -= 1

    async def worker(self) -> None:
        while not self.stop.is_set():
            await self.one(self.mix.spec())

    async def run(self) -> None:
        await asyncio.gather(*(self.worker() for _ in range(self.workers)))

    async def close(self) -> None:
        for client in self.sdk.values():
            await client.close()
        for raw in self.raw:
            await raw.aclose()
