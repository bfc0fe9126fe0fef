"""Where cached answers live: a bounded in-memory LRU, diskcache (the embedded default,
survives restarts), or Redis (shared by replicas). Values are opaque bytes with a TTL.

diskcache is synchronous SQLite. Its reads stay on the event loop: a WAL-mode read of one
key takes tens of microseconds (bench/cache.py --micro measures it) and never waits for a
writer. Its writes are slower: fills queue for a few milliseconds and are then written on
the loop together, WRITE_BATCH per transaction (under a millisecond each, by the same bench);
until then they are read from the queue. A writer thread was tried: pinned to the proxy's
core, it competed with the loop for the GIL and added more to a miss's latency than this.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from loguru import logger

REDIS_TIMEOUT = 0.25
WRITE_DELAY = 0.005  # seconds a disk fill waits to be written with the others
WRITE_BATCH = 8  # disk fills per transaction: well under a millisecond of the loop's time
REDIS_PREFIX = "llm-proxy:cache:"


Background = Coroutine[Any, Any, None]


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        """Several values at once (one round trip for Redis), in the order of `keys`."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    def put(self, key: str, value: bytes, ttl: float) -> Background | None:
        """Store without waiting: None when stored or queued, else the work to run later."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """LRU bounded by the total size of the values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.put(key, value, ttl)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, time.monotonic() + ttl)
        self._size += len(value)
        while self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._size -= len(value)

    async def close(self) -> None:
        self._entries.clear()


class DiskBackend:
    def __init__(
        self, path: Path, max_bytes: int, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        import diskcache

        path.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(path / "responses"),
            size_limit=max_bytes,
            sqlite_synchronous=0,  # a crash may lose the last fills: only cache misses
        )
        self._on_error = on_error
        self._queued: dict[str, tuple[bytes, float]] = {}  # key -> (value, expires), unwritten
        self._unwritten: list[tuple[str, bytes, float]] = []
        self._flush_at: asyncio.TimerHandle | None = None

    async def get(self, key: str) -> bytes | None:
        queued = self._queued.get(key)
        if queued is not None and queued[1] > time.monotonic():
            return queued[0]
        value = self._cache.get(key)
        return value if isinstance(value, bytes) else None

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await asyncio.to_thread(self._cache.set, key, value, expire=ttl)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._queued[key] = (value, time.monotonic() + ttl)
        self._unwritten.append((key, value, ttl))
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_later(WRITE_DELAY, self._flush)

    def _flush(self) -> None:
        """Write what has queued up, WRITE_BATCH at a time (one transaction each)."""
        self._flush_at = None
        fills, self._unwritten = self._unwritten[:WRITE_BATCH], self._unwritten[WRITE_BATCH:]
        if self._unwritten:
            self._flush_at = asyncio.get_running_loop().call_later(0, self._flush)
        try:
            with self._cache.transact():
                for key, value, ttl in fills:
                    self._cache.set(key, value, expire=ttl)
        except Exception as exc:  # a full disk, a broken file: those fills are lost
            logger.warning("cache writes failed ({}): {}", type(exc).__name__, exc)
            if self._on_error is not None:
                self._on_error(exc)
        for key, value, _ in fills:
            queued = self._queued.get(key)
            if queued is not None and queued[0] is value:
                del self._queued[key]

    async def close(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
        while self._unwritten:
            self._flush()
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._queued.clear()
        await asyncio.to_thread(self._cache.close)


class RedisBackend:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(REDIS_PREFIX + key)
        return value if isinstance(value, bytes) else None

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        values = await self._redis.mget([REDIS_PREFIX + key for key in keys])
        return [value if isinstance(value, bytes) else None for value in values]

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(REDIS_PREFIX + key, value, px=max(int(ttl * 1000), 1))

    def put(self, key: str, value: bytes, ttl: float) -> Background:
        return self.set(key, value, ttl)

    async def close(self) -> None:
        await self._redis.aclose()
