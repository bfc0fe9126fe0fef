"""Where cached answers live: a bounded in-memory LRU, diskcache (the embedded default,
survives restarts), or Redis (shared by replicas). Values are opaque bytes with a TTL.

diskcache is synchronous SQLite. Its reads stay on the event loop: a WAL-mode read of one
key takes tens of microseconds (bench/cache.py --micro measures it) and never waits for a
writer; its writes, slower and fsync-bound, run in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis

REDIS_TIMEOUT = 0.25
REDIS_PREFIX = "llm-proxy:cache:"


class CacheBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
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

    async def set(self, key: str, value: bytes, ttl: float) -> None:
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
    def __init__(self, path: Path, max_bytes: int) -> None:
        import diskcache

        path.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(path / "responses"),
            size_limit=max_bytes,
            sqlite_synchronous=0,  # a crash may lose the last fills: only cache misses
        )

    async def get(self, key: str) -> bytes | None:
        value = self._cache.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await asyncio.to_thread(self._cache.set, key, value, expire=ttl)

    async def close(self) -> None:
        await asyncio.to_thread(self._cache.close)


class RedisBackend:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(REDIS_PREFIX + key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(REDIS_PREFIX + key, value, px=max(int(ttl * 1000), 1))

    async def close(self) -> None:
        await self._redis.aclose()
