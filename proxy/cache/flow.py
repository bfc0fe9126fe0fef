"""One request's way through the cache: decide, look up (or follow the leader of a single
flight), and afterwards store the answer and release the followers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.cache.cache import Entry, ResponseCache
from proxy.cache.keys import CacheDecision, decide
from proxy.config import CacheConfig, ModelCacheConfig

if TYPE_CHECKING:
    from proxy.formats.base import FrontRequest


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
        request: FrontRequest,
        namespace: str,
        model: str,
        cache_control: str | None,
    ) -> Lookup:
        if not self.cache.enabled:
            return Lookup(None)
        decision = decide(self.config, model_cache, request, namespace, model, cache_control)
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

    def store(self, lookup: Lookup, answer: bytes | None, route: str, target: str) -> None:
        """Keep a finished answer (None: nothing to keep) and release the followers."""
        if lookup.decision is None:
            return
        entry = None
        if answer is not None:
            entry = self.cache.fill(lookup.decision.key, answer, route, lookup.decision.ttl, target)
        self.land(lookup, entry)

    def land(self, lookup: Lookup, entry: Entry | None) -> None:
        """Release the single flight's followers (None: they go to the upstream themselves)."""
        if lookup.leader and not lookup.landed and lookup.decision is not None:
            lookup.landed = True
            self.cache.land(lookup.decision.key, entry)
