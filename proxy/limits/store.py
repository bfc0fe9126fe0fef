"""One scope's limits applied against storage: concurrency, the token bucket, request
windows (hit now) and token windows (admitted on the prompt estimate, charged real usage at
the end). Storage faults follow `on_storage_error`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import limits
import limits.aio.storage
import limits.aio.strategies
import redis.asyncio as aioredis
from loguru import logger
from redis.exceptions import RedisError

from proxy.config import LimitsConfig, LimitSpec
from proxy.errors import ServiceUnavailableError
from proxy.limits.counters import Counters, MemoryCounters, RedisCounters
from proxy.limits.headers import WindowState
from proxy.observability.metrics import Metrics

T = TypeVar("T")
STORAGE_TIMEOUT = 0.25  # seconds: a slow Redis is a failed Redis
_STORAGE_ERRORS = (RedisError, OSError, TimeoutError, limits.errors.StorageError)
CONCURRENCY_RETRY_AFTER = 1.0
STORAGE_PAUSE = 1.0  # after a storage fault, seconds before the store is tried again


@dataclass(frozen=True, slots=True)
class Limits:
    scope: str  # key | model | upstream | route
    requests: tuple[limits.RateLimitItem, ...] = ()
    bucket: tuple[float, int] | None = None  # (seconds per request, capacity)
    tokens: tuple[limits.RateLimitItem, ...] = ()
    concurrency: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.requests or self.bucket or self.tokens or self.concurrency)


def compile_limits(scope: str, spec: LimitSpec | None) -> Limits | None:
    if spec is None:
        return None
    requests = tuple(limits.parse_many(spec.requests)) if spec.requests else ()
    bucket = None
    if spec.burst is not None and requests:
        first, requests = requests[0], requests[1:]
        bucket = (first.get_expiry() / first.amount, spec.burst)
    tokens = tuple(limits.parse_many(spec.tokens)) if spec.tokens else ()
    compiled = Limits(scope, requests, bucket, tokens, spec.concurrency)
    return None if compiled.empty else compiled


class Refused(Exception):
    def __init__(self, scope: str, kind: str, retry_after: float | None) -> None:
        super().__init__(f"{scope} {kind} limit")
        self.scope = scope
        self.kind = kind
        self.retry_after = retry_after


@dataclass(slots=True)
class Hold:
    """What one admitted scope holds until the request ends."""

    limits: Limits
    ident: str
    entered: bool = False
    states: list[WindowState] = field(default_factory=list)


class LimitStore:
    def __init__(self, config: LimitsConfig, metrics: Metrics, spend_dir: Path) -> None:
        self.config = config
        self.metrics = metrics
        self._down_until = 0.0
        self.counters: Counters
        if config.storage.startswith("memory://"):
            self._storage: limits.aio.storage.Storage = limits.aio.storage.MemoryStorage()
            self.counters = MemoryCounters(spend_dir / "spend.json")
        else:
            self._storage = limits.aio.storage.RedisStorage(
                "async+" + config.storage,
                implementation="redispy",
                key_prefix="llm-proxy",
                socket_timeout=STORAGE_TIMEOUT,
                socket_connect_timeout=STORAGE_TIMEOUT,
            )
            client = aioredis.Redis.from_url(
                config.storage,
                socket_timeout=STORAGE_TIMEOUT,
                socket_connect_timeout=STORAGE_TIMEOUT,
            )
            self.counters = RedisCounters(client)
        window = (
            limits.aio.strategies.FixedWindowRateLimiter
            if config.strategy == "fixed-window"
            else limits.aio.strategies.SlidingWindowCounterRateLimiter
        )
        self._tokens = window(self._storage)
        self._requests = (
            limits.aio.strategies.MovingWindowRateLimiter(self._storage)
            if config.strategy == "moving-window"
            else self._tokens
        )

    async def check(self, lim: Limits, ident: str, estimate: int, tokens: bool = True) -> None:
        """Raise Refused when a request window is full or the token windows have no room
        for the prompt estimate; uses nothing (admission tests every scope first)."""
        key = f"{lim.scope}:{ident}"
        for item in lim.requests:
            if not await self._guard(self._requests.test(item, key), True):
                raise Refused(lim.scope, "requests", await self._reset(item, key))
        for item in lim.tokens if tokens else ():
            cost = max(min(estimate, item.amount), 1)
            if not await self._guard(self._tokens.test(item, key, cost=cost), True):
                raise Refused(lim.scope, "tokens", await self._reset(item, key))

    async def acquire(self, lim: Limits, ident: str, estimate: int, states: bool) -> Hold:
        """Take this scope's share (concurrency, the bucket, the request windows) or raise
        Refused, holding nothing then. Run `check` on every scope first."""
        hold = Hold(lim, f"{lim.scope}:{ident}")
        try:
            await self._enter(hold)
            await self._take_bucket(hold, states)
            await self._hit_requests(hold, states)
            if states:
                hold.states += [await self._state("tokens", i, hold.ident) for i in lim.tokens]
        except Refused:
            await self.release(hold)
            raise
        return hold

    async def _enter(self, hold: Hold) -> None:
        cap = hold.limits.concurrency
        if cap is None:
            return
        result = await self._guard(self.counters.enter(hold.ident, cap), (True, 0))
        if not result[0]:
            raise Refused(hold.limits.scope, "concurrency", CONCURRENCY_RETRY_AFTER)
        hold.entered = True

    async def _take_bucket(self, hold: Hold, states: bool) -> None:
        if hold.limits.bucket is None:
            return
        interval, capacity = hold.limits.bucket
        allowed, wait, left = await self._guard(
            self.counters.take(hold.ident, interval, capacity), (True, 0.0, capacity)
        )
        if not allowed:
            raise Refused(hold.limits.scope, "requests", wait)
        if states:
            hold.states.append(
                WindowState("requests", capacity, left, (capacity - left) * interval)
            )

    async def _hit_requests(self, hold: Hold, states: bool) -> None:
        for item in hold.limits.requests:
            if not await self._guard(self._requests.hit(item, hold.ident), True):
                reset = await self._reset(item, hold.ident)
                raise Refused(hold.limits.scope, "requests", reset)
            if states:
                hold.states.append(await self._state("requests", item, hold.ident))

    async def charge(self, hold: Hold, tokens: int) -> None:
        """Charge real usage; a charge larger than what is left fills the window, so the
        request in flight may overshoot and the next one gets the 429."""
        if tokens <= 0:
            return
        for item in hold.limits.tokens:
            if await self._guard(self._tokens.hit(item, hold.ident, cost=tokens), True):
                continue
            stats = await self._guard(self._tokens.get_window_stats(item, hold.ident), None)
            if stats is not None and stats.remaining > 0:
                await self._guard(self._tokens.hit(item, hold.ident, cost=stats.remaining), True)

    async def release(self, hold: Hold) -> None:
        if hold.entered:
            hold.entered = False
            await self._guard(self.counters.leave(hold.ident), None)

    async def states(self, lim: Limits, ident: str) -> list[WindowState]:
        """The current state of each window and the bucket, using none of it (for /keys/me
        and the headers of a 429)."""
        key = f"{lim.scope}:{ident}"
        found = []
        if lim.bucket is not None:
            interval, capacity = lim.bucket
            left, reset = await self._guard(
                self.counters.peek(key, interval, capacity), (capacity, 0.0)
            )
            found.append(WindowState("requests", capacity, left, reset))
        found += [await self._state("requests", item, key) for item in lim.requests]
        found += [await self._state("tokens", item, key) for item in lim.tokens]
        return found

    async def spend(self, key: str) -> float:
        return await self._guard(self.counters.spend(key), 0.0)

    async def add_spend(self, key: str, usd: float, ttl: int) -> None:
        await self._guard(self.counters.add_spend(key, usd, ttl), 0.0)

    async def in_flight(self, lim: Limits, ident: str) -> int:
        return await self._guard(self.counters.in_flight(f"{lim.scope}:{ident}"), 0)

    async def _state(self, kind: str, item: limits.RateLimitItem, ident: str) -> WindowState:
        strategy = self._tokens if kind == "tokens" else self._requests
        stats = await self._guard(strategy.get_window_stats(item, ident), None)
        if stats is None:
            return WindowState(kind, item.amount, item.amount, 0.0)
        return WindowState(
            kind, item.amount, stats.remaining, max(stats.reset_time - time.time(), 0)
        )

    async def _reset(self, item: limits.RateLimitItem, ident: str) -> float:
        stats = await self._guard(self._tokens.get_window_stats(item, ident), None)
        if stats is None:
            return float(item.get_expiry())
        return max(stats.reset_time - time.time(), 0.0)

    async def _guard(self, operation: Awaitable[T], fallback: T) -> T:
        """A storage fault is counted, then allowed through or refused (503) per policy.
        After a fault the store is left alone for STORAGE_PAUSE: a slow Redis costs one
        timeout per pause, not one per call."""
        if time.monotonic() < self._down_until:
            if isinstance(operation, Coroutine):
                operation.close()
            return self._fallback(fallback)
        try:
            return await operation
        except _STORAGE_ERRORS as exc:
            self._down_until = time.monotonic() + STORAGE_PAUSE
            logger.warning("limits storage failed ({}): {}", type(exc).__name__, exc)
            return self._fallback(fallback)

    def _fallback(self, fallback: T) -> T:
        """A storage operation that failed or was skipped: counted, then allowed or denied."""
        self.metrics.child(self.metrics.storage_errors, "limits").inc()
        if self.config.on_storage_error == "deny":
            message = "Rate limiting is unavailable; the request is refused (policy: deny)."
            raise ServiceUnavailableError(message, retry_after=1.0)
        return fallback

    async def reachable(self) -> dict[str, Any]:
        if isinstance(self.counters, MemoryCounters):
            return {"backend": "memory", "ok": True}
        try:
            await self.counters.ping()
        except _STORAGE_ERRORS as exc:
            return {"backend": "redis", "ok": False, "error": type(exc).__name__}
        return {"backend": "redis", "ok": True}

    async def close(self) -> None:
        await self.counters.close()
