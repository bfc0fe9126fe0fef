"""The counters the `limits` library does not keep: a GCRA token bucket for `burst`,
concurrency, and spend. Memory for one process; Redis (one script or command each) for
replicas, with Redis' own clock so replicas agree."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

Bucket = tuple[bool, float, int]  # (allowed, seconds until a slot frees, slots left)
SPEND_FLUSH = 5.0  # memory storage writes spend to its file at most this often


class Counters(Protocol):
    async def take(self, key: str, interval: float, capacity: int) -> Bucket: ...
    async def peek(self, key: str, interval: float, capacity: int) -> tuple[int, float]: ...
    async def enter(self, key: str, cap: int, lease: str) -> tuple[bool, int]: ...
    async def leave(self, key: str, lease: str) -> None: ...
    async def add_spend(self, key: str, usd: float, ttl: int) -> float: ...
    async def spend(self, key: str) -> float: ...
    async def in_flight(self, key: str) -> int: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def bucket_state(tat: float, now: float, interval: float, capacity: int) -> tuple[int, float]:
    """(slots left, seconds until the bucket is full again) without taking a slot."""
    backlog = max(tat - now, 0.0)
    return max(int((capacity * interval - backlog) / interval), 0), backlog


def gcra(tat: float, now: float, interval: float, capacity: int) -> tuple[Bucket, float]:
    """Generic cell rate: one theoretical arrival time per key. Returns the decision and
    the new arrival time (unchanged when refused)."""
    new_tat = max(tat, now) + interval
    allowance = capacity * interval
    if new_tat - now > allowance:
        return (False, new_tat - now - allowance, 0), tat
    left = int((allowance - (new_tat - now)) / interval)
    return (True, 0.0, left), new_tat


class MemoryCounters:
    def __init__(self, spend_file: Path | None = None) -> None:
        self._tat: dict[str, float] = {}
        self._inflight: dict[str, int] = {}
        self._spend: dict[str, tuple[float, float]] = {}  # key -> (usd, expires at)
        self._spend_file = spend_file
        self._dirty = False
        self._flushed = time.monotonic()
        self._load()

    async def take(self, key: str, interval: float, capacity: int) -> Bucket:
        decision, self._tat[key] = gcra(self._tat.get(key, 0.0), time.time(), interval, capacity)
        return decision

    async def peek(self, key: str, interval: float, capacity: int) -> tuple[int, float]:
        return bucket_state(self._tat.get(key, 0.0), time.time(), interval, capacity)

    async def enter(self, key: str, cap: int, lease: str) -> tuple[bool, int]:
        current = self._inflight.get(key, 0)
        if current >= cap:
            return False, current
        self._inflight[key] = current + 1
        return True, current + 1

    async def leave(self, key: str, lease: str) -> None:
        current = self._inflight.get(key, 0)
        if current <= 1:
            self._inflight.pop(key, None)
        else:
            self._inflight[key] = current - 1

    async def in_flight(self, key: str) -> int:
        return self._inflight.get(key, 0)

    async def ping(self) -> None:
        return None

    async def add_spend(self, key: str, usd: float, ttl: int) -> float:
        total = await self.spend(key) + usd
        self._spend[key] = (total, time.time() + ttl)
        self._dirty = True
        if time.monotonic() - self._flushed > SPEND_FLUSH:  # a crash loses at most that
            self.flush()
        return total

    async def spend(self, key: str) -> float:
        usd, expires = self._spend.get(key, (0.0, 0.0))
        return usd if expires > time.time() else 0.0

    def flush(self) -> None:
        """Persist spend (memory storage keeps budgets across restarts this way)."""
        if self._spend_file is None or not self._dirty:
            return
        self._spend_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._spend_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._spend))
        tmp.replace(self._spend_file)
        self._dirty = False
        self._flushed = time.monotonic()

    def _load(self) -> None:
        if self._spend_file is None or not self._spend_file.exists():
            return
        try:
            saved: dict[str, Any] = json.loads(self._spend_file.read_text())
        except (OSError, ValueError):
            return
        now = time.time()
        self._spend = {k: (float(v[0]), float(v[1])) for k, v in saved.items() if v[1] > now}

    async def close(self) -> None:
        self.flush()


# The token bucket and concurrency leases in Lua, shared by the scripts below and by the one
# that admits a whole request (proxy/limits/scripted.py): test first, then take.
BUCKET_LUA = """
local function bucket_test(key, now, interval, capacity)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local new_tat = tat + interval
  local allowance = capacity * interval
  if new_tat - now > allowance then return new_tat, new_tat - now - allowance, 0 end
  return new_tat, 0, math.floor((allowance - (new_tat - now)) / interval)
end

local function bucket_take(key, new_tat, interval, capacity)
  redis.call('SET', key, tostring(new_tat), 'PX', math.ceil(capacity * interval * 1000) + 1000)
end
"""

LEASES_LUA = """
local function leases_held(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end

local function lease_take(key, now, ttl, lease)
  redis.call('ZADD', key, now + tonumber(ttl), lease)
  redis.call('EXPIRE', key, ttl)
end
"""

NOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

_GCRA_SCRIPT = (
    BUCKET_LUA
    + NOW_LUA
    + """
local interval, capacity = tonumber(ARGV[1]), tonumber(ARGV[2])
local new_tat, wait, left = bucket_test(KEYS[1], now, interval, capacity)
if wait > 0 then return {0, tostring(wait), 0} end
bucket_take(KEYS[1], new_tat, interval, capacity)
return {1, '0', left}
"""
)

# Concurrency in Redis is a set of leases (request tokens scored by when they expire): giving
# one back twice, or one never taken, changes nothing (see proxy/limits/scripted.py).
_ENTER_SCRIPT = (
    LEASES_LUA
    + NOW_LUA
    + """
local current = leases_held(KEYS[1], now)
if current >= tonumber(ARGV[1]) then return {0, current} end
lease_take(KEYS[1], now, ARGV[2], ARGV[3])
return {1, current + 1}
"""
)

_IN_FLIGHT_SCRIPT = (
    NOW_LUA
    + """
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""
)

# a concurrency slot a crashed replica never released frees itself after this long
CONCURRENCY_TTL = 3600


class RedisCounters:
    def __init__(self, client: aioredis.Redis, prefix: str = "llm-proxy") -> None:
        self._redis = client
        self._prefix = prefix
        self._gcra = client.register_script(_GCRA_SCRIPT)
        self._enter = client.register_script(_ENTER_SCRIPT)
        self._in_flight = client.register_script(_IN_FLIGHT_SCRIPT)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}:{kind}:{key}"

    async def take(self, key: str, interval: float, capacity: int) -> Bucket:
        allowed, wait, left = await self._gcra(
            keys=[self._key("gcra", key)], args=[interval, capacity]
        )
        return bool(allowed), float(wait), int(left)

    async def peek(self, key: str, interval: float, capacity: int) -> tuple[int, float]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._key("gcra", key))
            pipe.time()
            tat, (seconds, micros) = await pipe.execute()
        return bucket_state(float(tat or 0.0), seconds + micros / 1e6, interval, capacity)

    async def enter(self, key: str, cap: int, lease: str) -> tuple[bool, int]:
        entered, current = await self._enter(
            keys=[self._key("leases", key)], args=[cap, CONCURRENCY_TTL, lease]
        )
        return bool(entered), int(current)

    async def leave(self, key: str, lease: str) -> None:
        await self._redis.zrem(self._key("leases", key), lease)

    async def in_flight(self, key: str) -> int:
        return int(await self._in_flight(keys=[self._key("leases", key)]))

    async def ping(self) -> None:
        await self._redis.ping()

    async def add_spend(self, key: str, usd: float, ttl: int) -> float:
        name = self._key("spend", key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(name, usd)
            pipe.expire(name, ttl)
            total, _ = await pipe.execute()
        return float(total)

    async def spend(self, key: str) -> float:
        value = await self._redis.get(self._key("spend", key))
        return float(value or 0.0)

    async def close(self) -> None:
        await self._redis.aclose()
