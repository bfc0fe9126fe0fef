"""A fake text-embeddings-inference (TEI) server that speaks TEI's wire format and fails on
demand, on 127.0.0.1 in a thread with its own loop; it also serves the Inference API's
feature-extraction pipeline (which TEI runs behind the HF router):

    POST /embed                   {"inputs": str | [str] | [ids] | [[ids]], "normalize",
                                  "truncate", ...} -> [[float, ...], ...] (always one list per
                                  input), x-compute-tokens / x-compute-characters headers
    GET  /health                  200 (503 after `fake.healthy = False`)
    POST /models/{model}/pipeline/feature-extraction
                                  {"inputs": str | [str]} -> [float, ...] for a string,
                                  [[float, ...], ...] for a list; with `fake.pooled = False`
                                  one vector per word (a model without pooling)

TEI's own refusals (router/src/http/server.rs): more inputs than `max_batch_size` or an input
longer than `max_input_tokens` is 413 `{"error", "error_type": "validation"}`; an empty input
is 400 (`empty`); token ids on the pipeline route are 422 (`tokenizer`). Vectors are
fakes.embeddings_api.fake_vector (words are tokens), so tests can check the values.

    fake = FakeTEI().start()
    fake.script(overloaded(), backend_error())   # consumed one per request, then ok()
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes.embeddings_api import fake_vector, tokens_of
from fakes.server import FakeServer

DIMENSIONS = 16
MAX_BATCH_SIZE = 32  # TEI's default --max-client-batch-size
MAX_INPUT_TOKENS = 512


@dataclass(frozen=True)
class Behaviour:
    kind: str = "ok"
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def ok() -> Behaviour:
    return Behaviour()


def status(
    code: int, message: str, error_type: str, headers: dict[str, str] | None = None
) -> Behaviour:
    return Behaviour("status", code, {"error": message, "error_type": error_type}, headers or {})


def overloaded() -> Behaviour:
    return status(429, "Model is overloaded", "overloaded")


def backend_error(message: str = "Backend error: inference failed") -> Behaviour:
    return status(424, message, "backend")


def unhealthy() -> Behaviour:
    return status(503, "unhealthy", "unhealthy")


def hang(seconds: float) -> Behaviour:
    return Behaviour("hang", seconds=seconds)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # lower-cased names
    json: Any


class FakeTEI(FakeServer):
    thread_name = "fake-tei"

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        super().__init__()
        self.dimensions = dimensions
        self.healthy = True
        self.pooled = True
        self.max_batch_size = MAX_BATCH_SIZE
        self._lock = threading.Lock()
        self._script: deque[Behaviour] = deque()
        self._requests: list[Recorded] = []

    # ---- scripting and inspection (any thread)

    def script(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()
        self.healthy, self.pooled, self.max_batch_size = True, True, MAX_BATCH_SIZE

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def vector(self, item: str | list[int]) -> list[float]:
        return fake_vector(item, self.dimensions)

    # ---- routes (start, stop and url: FakeServer)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/embed", self._embed)
        app.router.add_get("/health", self._health)
        app.router.add_post("/models/{model:.+}/pipeline/feature-extraction", self._pipeline)
        return app

    # ---- handlers (the fake's loop)

    async def _take(self, request: web.Request) -> tuple[Any, Behaviour]:
        try:
            parsed = json.loads(await request.read())
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            self._requests.append(Recorded(request.path, headers, parsed))
            behaviour = self._script.popleft() if self._script else ok()
        if behaviour.kind == "hang":
            await asyncio.sleep(behaviour.seconds)
        return parsed, behaviour

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def _embed(self, request: web.Request) -> web.Response:
        data, b = await self._take(request)
        if b.kind == "status":
            return web.json_response(b.body, status=b.status, headers=b.headers)
        inputs = _batch(data.get("inputs") if isinstance(data, dict) else None)
        refusal = self._refusal(inputs)
        if refusal is not None:
            return refusal
        assert inputs is not None
        return self._vectors([self.vector(item) for item in inputs], inputs)

    async def _pipeline(self, request: web.Request) -> web.Response:
        data, b = await self._take(request)
        if b.kind == "status":
            return web.json_response(b.body, status=b.status, headers=b.headers)
        raw = data.get("inputs") if isinstance(data, dict) else None
        inputs = _batch(raw)
        if inputs is not None and not all(isinstance(item, str) for item in inputs):
            return _error(422, "Tokenization error: inputs must be strings", "tokenizer")
        refusal = self._refusal(inputs)
        if refusal is not None:
            return refusal
        assert inputs is not None
        vectors: list[Any] = [self._features(item) for item in inputs]  # type: ignore[arg-type]
        if isinstance(raw, str):
            return web.json_response(vectors[0])
        return web.json_response(vectors)

    def _features(self, text: str) -> Any:
        if self.pooled:
            return self.vector(text)
        return [self.vector(word) for word in text.split()]  # one vector per token

    def _refusal(self, inputs: list[str | list[int]] | None) -> web.Response | None:
        if inputs is None:
            return _error(422, "Failed to deserialize the JSON body", "tokenizer")
        if len(inputs) > self.max_batch_size:
            message = f"batch size {len(inputs)} > maximum allowed batch size {self.max_batch_size}"
            return _error(413, message, "validation")
        if any(not item for item in inputs):
            return _error(400, "`inputs` cannot be empty", "empty")
        longest = max(tokens_of(item) for item in inputs)
        if longest > MAX_INPUT_TOKENS:
            message = (
                f"Input validation error: `inputs` must have less than {MAX_INPUT_TOKENS} "
                f"tokens. Given: {longest}"
            )
            return _error(413, message, "validation")
        return None

    def _vectors(self, vectors: list[list[float]], inputs: list[str | list[int]]) -> web.Response:
        tokens = sum(tokens_of(item) for item in inputs)
        characters = sum(len(item) for item in inputs if isinstance(item, str))
        headers = {
            "x-compute-type": "cpu",
            "x-compute-tokens": str(tokens),
            "x-compute-characters": str(characters),
        }
        return web.json_response(vectors, headers=headers)


def _batch(value: Any) -> list[str | list[int]] | None:
    """TEI's `inputs`: a string, token ids, or a batch of either."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        return [value]
    if all(isinstance(v, str | list) for v in value):
        return list(value)
    return None


def _error(code: int, message: str, error_type: str) -> web.Response:
    return web.json_response({"error": message, "error_type": error_type}, status=code)
