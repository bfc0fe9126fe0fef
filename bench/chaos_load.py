"""The load of the chaos run: what it is made of (`Mix`), the clients it uses (`Clients`) and
the workers that send it (`Load`).

Every request goes through one of the proxy's doors (chat completions, the Responses API, the
Anthropic Messages API and its count_tokens, embeddings), through that format's official SDK
(`openai`, `anthropic`) or raw HTTP (httpx, reading the SSE bytes itself, so that a stream cut
short is seen), and is checked in its own format (bench/chaos_chat.py, chaos_responses.py,
chaos_messages.py, chaos_embeddings.py). Each asks the fake upstream to echo a text unique to
it (embeddings: the fake's vectors are a function of the input), so an answer is checked for
being the answer to this request. Outcomes:

- ok: a completion, a completed response, a message, a token count or the right vectors
- error: the door's error envelope with a status (before any byte of an answer)
- inband: a stream ended by its format's error event (`{"error": ...}` then `[DONE]`,
  `response.failed`, Anthropic's `error` event)
- cancelled: the client itself hung up mid-stream, on purpose
- lost: no answer within the client timeout, a dropped connection, a malformed answer, the
  wrong text, or a stream that ended without its format's ending
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anthropic
import httpx
import httpx2
import openai

from bench.chaos_chat import raw_chat, sdk_chat
from bench.chaos_embeddings import raw_embeddings, sdk_embeddings
from bench.chaos_messages import raw_messages, sdk_messages
from bench.chaos_responses import raw_responses, sdk_responses
from bench.chaos_spec import CLIENT_TIMEOUT, Result, Spec

CACHED_BODIES = 6  # distinct bodies for the cached model, so that some requests hit
SHARED_INPUTS = 12  # embedding inputs drawn from a pool, so that the per-input cache hits
DOOR_SHARES = {
    "chat": 0.50,
    "responses": 0.20,
    "messages": 0.16,
    "count_tokens": 0.02,
    "embeddings": 0.12,
}
CONTINUED_SHARE = 0.3  # responses that continue a stored one, when there is one
MAX_DEPTH = 3  # turns of a stored conversation; one this long is not continued again
KEEP_IDS = 64  # stored response ids remembered per key

Door = Callable[["Clients", Spec], Awaitable[Result]]
DOORS: dict[tuple[str, str], Door] = {
    ("chat", "sdk"): sdk_chat,
    ("chat", "raw"): raw_chat,
    ("responses", "sdk"): sdk_responses,
    ("responses", "raw"): raw_responses,
    ("messages", "sdk"): sdk_messages,
    ("messages", "raw"): raw_messages,
    ("count_tokens", "sdk"): sdk_messages,
    ("count_tokens", "raw"): raw_messages,
    ("embeddings", "sdk"): sdk_embeddings,
    ("embeddings", "raw"): raw_embeddings,
}


@dataclass
class StoredResponses:
    """Ids of stored responses a later request may continue, per key (responses are scoped to
    the key that made them). They live in Redis, which the run restarts empty: `epoch` is even
    while Redis holds what was stored since it last started, odd from the moment it is stopped
    until a grace after it is back; a response is remembered only when its whole request fell
    in one even epoch, and a continuation refused because its response was lost with Redis is
    excused, not counted as unexpected."""

    rng: random.Random
    epoch: int = 0
    ids: dict[str, deque[tuple[str, int]]] = field(default_factory=dict)

    def storage_lost(self) -> None:
        self.epoch += 1 if self.epoch % 2 == 0 else 2
        self.ids.clear()

    def storage_back(self) -> None:
        self.epoch += 1 if self.epoch % 2 else 2

    def pick(self, key: str) -> tuple[str, int] | None:
        ids = self.ids.get(key)
        return self.rng.choice(ids) if ids else None

    def keep(self, result: Result) -> None:
        spec = result.spec
        settled = spec.storage_epoch == self.epoch and self.epoch % 2 == 0
        if result.outcome == "ok" and result.response_id and settled and spec.depth < MAX_DEPTH:
            ids = self.ids.setdefault(spec.key_name, deque(maxlen=KEEP_IDS))
            ids.append((result.response_id, spec.depth))

    def excuse(self, result: Result) -> None:
        spec = result.spec
        lost = result.status == 400 and result.param == "previous_response_id"
        if lost and spec.previous is not None and spec.storage_epoch != self.epoch:
            result.excused = "the stored response was lost with Redis"


@dataclass
class Mix:
    """What the load is made of."""

    rng: random.Random
    models: list[str] = field(
        default_factory=lambda: [
            "chat-weighted",
            "chat-priority",
            "chat-cached",
            "chat-backup",
            "claude-chaos",
        ]
    )
    stream_share: float = 0.5
    raw_share: float = 0.3
    tight_share: float = 0.1
    hang_up_share: float = 0.03
    next_id: int = 0
    stored: StoredResponses = field(init=False)

    def __post_init__(self) -> None:
        self.stored = StoredResponses(self.rng)

    def spec(self, model: str | None = None, door: str = "") -> Spec:
        rng = self.rng
        self.next_id += 1
        door = door or rng.choices(list(DOOR_SHARES), list(DOOR_SHARES.values()))[0]
        model = model or self._model(door)
        stream = door in ("chat", "responses", "messages") and rng.random() < self.stream_share
        key = "tight" if rng.random() < self.tight_share else rng.choice(["svc", "svc", "batch"])
        if model == "chat-cached":
            words = [f"cached-{rng.randrange(CACHED_BODIES)}"]
        else:
            words = [f"r{self.next_id}"] + [f"w{i}" for i in range(rng.randint(0, 10))]
        spec = Spec(
            rid=self.next_id,
            model=model,
            key_name=key,
            stream=stream,
            client="raw" if rng.random() < self.raw_share else "sdk",
            words=words,
            door=door,
            usage=stream and rng.random() < 0.5,
            temperature=0 if model == "chat-cached" else None,
            hang_up=stream and rng.random() < self.hang_up_share,
            storage_epoch=self.stored.epoch,
        )
        if door == "embeddings":
            self._embeddings(spec)
        elif door == "responses" and model != "chat-cached" and rng.random() < CONTINUED_SHARE:
            self._continued(spec)
        return spec

    def _model(self, door: str) -> str:
        if door == "embeddings":
            return "embed-cached"
        if door == "responses" and self.rng.random() < 0.25:
            return "resp-native"
        if door in ("messages", "count_tokens") and self.rng.random() < 0.3:
            return "claude-chaos"
        return self.rng.choice(self.models)

    def _embeddings(self, spec: Spec) -> None:
        rng = self.rng
        spec.inputs = [
            f"doc-{rng.randrange(SHARED_INPUTS)}" if rng.random() < 0.6 else f"r{spec.rid}-{i}"
            for i in range(rng.randint(1, 4))
        ]
        spec.dimensions = 8 if rng.random() < 0.25 else None
        spec.encoding = rng.choice(["float", "base64"])

    def _continued(self, spec: Spec) -> None:
        picked = self.stored.pick(spec.key_name)
        if picked is not None:
            spec.previous, depth = picked
            spec.depth = depth + 1


class Clients:
    """The SDK clients (per replica and key) and the raw clients (per replica) of the load.

    Idle connections are dropped before the server's 5 s keep-alive closes them: no race."""

    def __init__(self, base_urls: Sequence[str], keys: dict[str, str], workers: int) -> None:
        self.keys = keys
        connections = workers * 2 + 8
        limits = httpx.Limits(max_connections=connections, keepalive_expiry=2.0)
        limits2 = httpx2.Limits(max_connections=connections, keepalive_expiry=2.0)
        timeout = httpx.Timeout(CLIENT_TIMEOUT, connect=5.0)
        timeout2 = httpx2.Timeout(CLIENT_TIMEOUT, connect=5.0)
        self._openai = {
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
        self._anthropic = {
            (replica, name): anthropic.AsyncAnthropic(
                base_url=base_url,
                api_key=key,
                max_retries=0,
                timeout=timeout2,
                http_client=httpx2.AsyncClient(limits=limits2, timeout=timeout2),
            )
            for replica, base_url in enumerate(base_urls)
            for name, key in keys.items()
        }
        self._raw = [
            httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)
            for base_url in base_urls
        ]

    def openai(self, spec: Spec) -> openai.AsyncOpenAI:
        return self._openai[spec.replica or 0, spec.key_name]

    def anthropic(self, spec: Spec) -> anthropic.AsyncAnthropic:
        return self._anthropic[spec.replica or 0, spec.key_name]

    def raw(self, spec: Spec) -> httpx.AsyncClient:
        return self._raw[spec.replica or 0]

    def bearer(self, spec: Spec) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[spec.key_name]}"}

    async def close(self) -> None:
        for client in self._openai.values():
            await client.close()
        for other in self._anthropic.values():
            await other.close()
        for raw in self._raw:
            await raw.aclose()


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
        self.clients = Clients(base_urls, keys, workers)

    async def one(self, spec: Spec) -> Result:
        self.inflight += 1
        if spec.replica is None:
            spec.replica = next(self._turn) % self.replicas
        try:
            call = DOORS[spec.door, spec.client](self.clients, spec)
            try:
                result = await asyncio.wait_for(call, CLIENT_TIMEOUT + 5)
            except TimeoutError:
                result = Result(spec, "lost", detail="no answer: the client gave up")
            self.mix.stored.keep(result)
            self.mix.stored.excuse(result)
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
        await self.clients.close()
