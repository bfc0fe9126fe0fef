"""One request's way through the cache: decide, look up (or follow the leader of a single
flight), and afterwards store the answer and release the followers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from proxy.cache.cache import Entry, ResponseCache
from proxy.cache.keys import CacheDecision, decide
from proxy.cache.replay import StreamAssembler, cacheable
from proxy.config import CacheConfig, ModelCacheConfig
from proxy.wire import ChatRequestHead

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class Lookup:
    decision: CacheDecision | None
    entry: Entry | None = None
    leader: bool = False
    landed: bool = False

    @property
    def result(self) -> str:
        if self.decision is None:
            return "bypass"
        return "hit" if self.entry is not None else "miss"


class CacheFlow:
    def __init__(self, cache: ResponseCache, config: CacheConfig) -> None:
        self.cache = cache
        self.config = config

    async def lookup(
        self,
        model_cache: ModelCacheConfig | bool | None,
        head: ChatRequestHead,
        body: bytes,
        namespace: str,
        model: str,
        cache_control: str | None,
    ) -> Lookup:
        if not self.cache.enabled:
            return Lookup(None)
        decision = decide(self.config, model_cache, head, body, namespace, model, cache_control)
        lookup = Lookup(decision)
        if decision is None or not decision.read:
            return lookup
        lookup.entry = await self.cache.get(decision.key, decision.max_age)
        if lookup.entry is not None:
            return lookup
        flight = self.cache.lead(decision.key)
        if flight is None:
            lookup.leader = True
        else:
            lookup.entry = await self.cache.follow(flight)
        return lookup

    def store_completion(self, lookup: Lookup, body: bytes, route: str) -> None:
        """A JSON answer: cached when every choice finished normally."""
        if lookup.decision is None:
            return
        entry = None
        if cacheable(_decode(body)):
            self.cache.fill(lookup.decision.key, body, route, lookup.decision.ttl)
            entry = Entry(0.0, body, route)
        self.land(lookup, entry)

    def store_stream(
        self, lookup: Lookup, chunks: list[bytes], route: str, usage: dict[str, int]
    ) -> None:
        """A completed stream, assembled into one completion."""
        if lookup.decision is None:
            return
        assembler = StreamAssembler()
        for chunk in chunks:
            assembler.add(_decode(chunk))
        completion = assembler.completion()
        entry = None
        if completion is not None:
            if not completion.get("usage"):
                completion["usage"] = usage
            body = _encode(completion)
            self.cache.fill(lookup.decision.key, body, route, lookup.decision.ttl)
            entry = Entry(0.0, body, route)
        self.land(lookup, entry)

    def land(self, lookup: Lookup, entry: Entry | None) -> None:
        """Release the single flight's followers (None: they go to the upstream themselves)."""
        if lookup.leader and not lookup.landed and lookup.decision is not None:
            lookup.landed = True
            self.cache.land(lookup.decision.key, entry)


def usage_of(record: Any) -> dict[str, int]:
    prompt, completion = record.prompt_tokens, record.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
