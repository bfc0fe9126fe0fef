"""What every door of the chaos load shares: one request to make (`Spec`), what came of it
(`Result`), the checks of an answer's model and text, the two error envelopes (OpenAI's and
Anthropic's), and a reader of server-sent events as they come off the wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.chaos_policy import FALLBACKS

CLIENT_TIMEOUT = 30.0  # seconds a client waits for a whole answer
MAX_TOKENS = 256  # what a Messages request asks for (the API requires it)
DOORS = ("chat", "responses", "messages", "count_tokens", "embeddings")


@dataclass
class Spec:
    """One request to make."""

    rid: int
    model: str
    key_name: str
    stream: bool
    client: str  # sdk | raw
    words: list[str]
    door: str = "chat"  # one of DOORS
    usage: bool = False
    temperature: float | None = None
    hang_up: bool = False  # the client leaves after two chunks
    replica: int | None = None  # which proxy it went to (round-robin when not set)
    inputs: list[str] = field(default_factory=list)  # embeddings
    dimensions: int | None = None  # embeddings
    encoding: str | None = None  # embeddings: float | base64 (raw client)
    previous: str | None = None  # responses: the stored response this one continues
    storage_epoch: int = 0  # responses: the epoch of Redis when the request was made
    depth: int = 1  # responses: turns in the stored conversation, this one included

    @property
    def expected(self) -> str:
        return " ".join(self.words)

    @property
    def prompt(self) -> str:
        return "echo: " + self.expected


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
    param: str | None = None  # the OpenAI envelope's param
    response_id: str | None = None  # responses: the id a stored response can be continued by
    excused: str | None = None  # an error the run explains (a stored response lost with Redis)


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


def check_anthropic_envelope(body: Any) -> str:
    """The type of Anthropic's `{"type": "error", "error": {"type", "message"}}`, or Malformed."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or body.get("type") != "error":
        raise Malformed(f"not an Anthropic error envelope: {str(body)[:200]}")
    if not isinstance(error.get("type"), str) or not error.get("message"):
        raise Malformed(f"incomplete Anthropic error envelope: {str(body)[:200]}")
    return str(error["type"])


def check_model(spec: Spec, model: str | None) -> None:
    if model not in FALLBACKS.get(spec.model, (spec.model,)):
        raise Malformed(f"answered as model {model!r} for {spec.model!r}")


def check_answer(spec: Spec, model: str | None, text: str, finished: bool) -> None:
    check_model(spec, model)
    if text != spec.expected:
        raise Malformed(f"text {text[:80]!r} is not the echo {spec.expected[:80]!r}")
    if not finished:
        raise Malformed("no finish_reason")


def header_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def note_headers(result: Result, headers: httpx.Headers | Any) -> None:
    result.attempts = header_int(headers.get("x-llm-proxy-attempts"))
    result.cache = headers.get("x-llm-proxy-cache")


def check_event_stream(resp: httpx.Response) -> None:
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        raise Malformed(f"a stream answered as {resp.headers.get('content-type')}")


async def sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    """(event name, parsed data) per server-sent event, as the bytes arrive."""
    name: str | None = None
    data: list[str] = []
    async for line in resp.aiter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = None, []
    if data:  # an event the stream did not finish with a blank line
        raise Malformed(f"the stream ended inside an event: {data[-1][:100]}")
