"""The response cache service: lookups (honouring max-age), fills after the answer is sent,
single flight per process, and fault tolerance (a failing backend means uncached, counted).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger
from redis.exceptions import RedisError

from proxy.cache.backends import CacheBackend, DiskBackend, MemoryBackend, RedisBackend
from proxy.config import CacheConfig, parse_size
from proxy.observability.metrics import Metrics

FOLLOWER_WAIT = 60.0  # longest a follower waits for the leader of a single flight
_BACKEND_ERRORS = (RedisError, OSError, TimeoutError)


class Entry(msgspec.Struct, array_like=True):
    stored_at: float  # epoch seconds
    body: bytes  # the whole answer as the client received it (a chat.completion for chat)
    route: str  # the route's label: <upstream>/<configured model or pattern>
    target: str | None = None  # <upstream>/<model id> that answered (x-llm-proxy-route)


_encode_entry = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode


def build_backend(config: CacheConfig, metrics: Metrics) -> CacheBackend | None:
    size = parse_size(config.max_size)
    if config.backend == "disk":
        failed = metrics.child(metrics.storage_errors, "cache")
        return DiskBackend(Path(config.path), size, on_error=lambda _: failed.inc())
    if config.backend == "memory":
        return MemoryBackend(size)
    if config.backend == "redis":
        return RedisBackend(config.url)
    return None


class ResponseCache:
    def __init__(self, config: CacheConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.backend = build_backend(config, metrics)
        self._flights: dict[str, asyncio.Future[Entry | None]] = {}
        self._fills: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    async def get(self, key: str, max_age: float | None) -> Entry | None:
        if self.backend is None:
            return None
        raw = await self._guard(self.backend.get(key), None)
        if raw is None:
            return None
        try:
            entry = _decode_entry(raw)
        except msgspec.DecodeError:
            return None
        if max_age is not None and time.time() - entry.stored_at > max_age:
            return None
        return entry

    async def get_many(self, keys: list[str], max_age: float | None) -> list[Entry | None]:
        """`get` for several keys at once (one Redis round trip), in the order of `keys`."""
        if self.backend is None or not keys:
            return [None] * len(keys)
        raws = await self._guard(self.backend.get_many(keys), None)
        if raws is None:
            return [None] * len(keys)
        oldest = time.time() - max_age if max_age is not None else None
        entries: list[Entry | None] = []
        for raw in raws:
            try:
                entry = _decode_entry(raw) if raw is not None else None
            except msgspec.DecodeError:
                entry = None
            fresh = entry is not None and (oldest is None or entry.stored_at >= oldest)
            entries.append(entry if fresh else None)
        return entries

    def fill(
        self, key: str, body: bytes, route: str, ttl: float, target: str | None = None
    ) -> Entry | None:
        """Store an answer without delaying the response it belongs to."""
        if self.backend is None:
            return None
        entry = Entry(time.time(), body, route, target)
        encoded = _encode_entry(entry)
        later = self.backend.put(key, encoded, ttl)
        if later is not None:
            self._spawn(self._guard(later, None))
        return entry

    async def reachable(self) -> dict[str, Any]:
        if self.backend is None:
            return {"backend": "none", "ok": True}
        try:
            await self.backend.get("llm-proxy-health")
        except _BACKEND_ERRORS as exc:
            return {"backend": self.config.backend, "ok": False, "error": type(exc).__name__}
        return {"backend": self.config.backend, "ok": True}

    # -- single flight ---------------------------------------------------------------------

    def lead(self, key: str) -> asyncio.Future[Entry | None] | None:
        """None: this request leads (others will wait for it); else the leader's future."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight
        self._flights[key] = asyncio.get_running_loop().create_future()
        return None

    def land(self, key: str, entry: Entry | None) -> None:
        """The leader is done: followers get its answer (None: they go on their own)."""
        flight = self._flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(entry)

    async def follow(self, flight: asyncio.Future[Entry | None]) -> Entry | None:
        try:
            return await asyncio.wait_for(asyncio.shield(flight), FOLLOWER_WAIT)
        except TimeoutError:
            return None

    # -- plumbing ---------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _guard(self, operation: Any, fallback: Any) -> Any:
        try:
            return await operation
        except _BACKEND_ERRORS as exc:
            self.metrics.child(self.metrics.storage_errors, "cache").inc()
            logger.warning("cache backend failed ({}): serving uncached", type(exc).__name__)
            return fallback

    async def close(self) -> None:
        if self._fills:
            await asyncio.gather(*self._fills, return_exceptions=True)
        for flight in self._flights.values():
            if not flight.done():
                flight.set_result(None)
        if self.backend is not None:
            await self.backend.close()
