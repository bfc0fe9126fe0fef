"""Where stored responses live: values are opaque bytes kept for a time to live, under an id.

`MemoryBackend` (one process, bounded), `DiskBackend` (SQLite in one file: survives
restarts, shared by the workers of one host) and `RedisBackend` (shared by replicas)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

MEMORY_BYTES = 256 * 2**20  # the memory backend forgets the oldest responses beyond this
REDIS_TIMEOUT = 1.0
REDIS_PREFIX = "llm-proxy:responses:"
DISK_FILE = "stored-responses.sqlite3"
PURGE_EVERY = 256  # disk writes between two removals of expired rows


class StoreBackend(Protocol):
    async def get(self, key: str) -> bytes | None: ...
    async def put(self, key: str, value: bytes, ttl: float) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def close(self) -> None: ...


class MemoryBackend:
    def __init__(self, max_bytes: int = MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            self._drop(key)
            return None
        return entry[0]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, time.monotonic() + ttl)
        self._size += len(value)
        while self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str) -> bool:
        found = await self.get(key) is not None
        if found:
            self._drop(key)
        return found

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._size -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self._size = 0


class DiskBackend:
    """One SQLite file; every call runs in a thread (a write waits for the disk)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._connection: sqlite3.Connection | None = None  # opened on first use
        self._lock = threading.Lock()
        self._writes = 0

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (called under the lock, in a thread)."""
        if self._connection is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.directory / DISK_FILE,
                timeout=5,
                isolation_level=None,
                check_same_thread=False,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses "
                "(id TEXT PRIMARY KEY, expires REAL, body BLOB)"
            )
            self._connection = db
        return self._connection

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM responses WHERE id = ? AND expires > ?", (key, time.time())
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await asyncio.to_thread(self._put, key, value, ttl)

    def _put(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, expires, body) VALUES (?, ?, ?)",
                (key, now + ttl, value),
            )
            self._writes += 1
            if self._writes % PURGE_EVERY == 0:
                self._db.execute("DELETE FROM responses WHERE expires <= ?", (now,))

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND expires > ?", (key, time.time())
            )
        return cursor.rowcount > 0

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class RedisBackend:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            # a pooled connection a restarted Redis closed is dialled again once (not a timeout)
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(REDIS_PREFIX + key)
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._redis.set(REDIS_PREFIX + key, value, px=max(int(ttl * 1000), 1))

    async def delete(self, key: str) -> bool:
        return bool(await self._redis.delete(REDIS_PREFIX + key))

    async def close(self) -> None:
        await self._redis.aclose()
