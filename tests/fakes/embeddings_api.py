"""The fake OpenAI's `POST /v1/embeddings`, sharing the fake's script, recording and failures
(fakes/openai_upstream.py registers it):

    fake.script(status(500))                     # consumed one per request, chat or embeddings
    embedding_requests(fake)[-1].json["input"]   # what reached the upstream

Vectors are deterministic: `fake_vector(item, n)` derives n values in [-1, 1] from the input
(a text or a token-id array) and normalises them, so a test can check the values the proxy
relays or converts. `dimensions` sets n (default DEFAULT_DIMENSIONS), as OpenAI shortens its
text-embedding-3 vectors; `encoding_format: base64` answers little-endian float32 in base64,
like OpenAI. Usage counts words of each text and one token per id. Like OpenAI, a missing or
empty `input` is a 400.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from fakes.openai_upstream import Behaviour, FakeOpenAI, RecordedRequest

DEFAULT_DIMENSIONS = 16
EMBEDDINGS_PATH = "/v1/embeddings"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fake_vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The fake's vector for one input, as float32 values (what base64 carries exactly)."""
    seed = hashlib.sha256(repr(item).encode()).digest()
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    values = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def to_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def inputs_of(value: Any) -> list[str | list[int]] | None:
    """The request's inputs one by one, or None when OpenAI would refuse them."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) for v in value):
        return [value]
    if all(isinstance(v, str) and v for v in value) or all(
        isinstance(v, list) and v for v in value
    ):
        return list(value)
    return None


def tokens_of(item: str | list[int]) -> int:
    return len(item.split()) if isinstance(item, str) else len(item)


def embedding_list(body: dict[str, Any], inputs: list[str | list[int]]) -> dict[str, Any]:
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = fake_vector(item, dimensions)
        embedding: Any = to_base64(vector) if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(tokens_of(item) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embedding_requests(fake: FakeOpenAI) -> list[RecordedRequest]:
    return [r for r in fake.requests if r.path == EMBEDDINGS_PATH]


def embeddings_handler(fake: FakeOpenAI) -> Handler:
    """The route handler bound to `fake` (its script, default behaviour and records)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = fake._record(request, body)
        behaviour, _, seq = fake._next_behaviour()
        rec.behaviour = behaviour
        try:
            return await _answer(fake, request, rec, behaviour, seq)
        finally:
            rec.outcome = rec.outcome or "completed"
            rec.done.set()

    return handle


async def _answer(
    fake: FakeOpenAI, request: web.Request, rec: RecordedRequest, b: Behaviour, seq: int
) -> web.StreamResponse:
    headers = {"x-request-id": f"req_fake_emb_{seq}", "openai-processing-ms": "1"}
    if b.kind == "status":
        return fake._status(request, b, headers)
    if b.kind in ("drop_before_response", "drop_after"):
        return fake._abort(request, rec)
    if b.kind == "garbage":
        return web.Response(body=b.body, headers=headers, content_type="application/json")
    if b.kind == "hang":
        await asyncio.sleep(b.seconds)
    body = rec.json if isinstance(rec.json, dict) else {}
    inputs = inputs_of(body.get("input"))
    if inputs is None:
        error = {"message": "'$.input' is invalid.", "type": "invalid_request_error",
                 "param": "input", "code": None}  # fmt: skip
        return web.json_response({"error": error}, status=400, headers=headers)
    rec.response_json = embedding_list(body, inputs)
    rec.usage = dict(rec.response_json["usage"])
    return web.json_response(rec.response_json, headers=headers)
