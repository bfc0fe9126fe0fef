"""One scope's limits applied against storage: concurrency, the token bucket, request
windows (hit now) and token windows (admitted on the prompt estimate, charged real usage at
the end). Storage faults follow `on_storage_error`."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import limits
import limits.aio.storage
import limits.aio.strategies
import redis.asyncio as aioredis
from limits.util import WindowStats
from loguru import logger
from redis.exceptions import RedisError

from proxy.config import LimitsConfig
from proxy.errors import ServiceUnavailableError
from proxy.limits.counters import CONCURRENCY_TTL, Counters, MemoryCounters, RedisCounters
from proxy.limits.headers import WindowState
from proxy.limits.resp import ScriptClient
from proxy.limits.scopes import Hold, Limits, OverBudget, Refused, Scope
from proxy.limits.scripted import BudgetSpent, Refusal, ScopeWindows, ScriptedLimits
from proxy.limits.windows import MemoryWindows, admit_windows
from proxy.observability.metrics import Metrics

T = TypeVar("T")
STORAGE_TIMEOUT = 0.25  # seconds: a slow Redis is a failed Redis
_STORAGE_ERRORS = (RedisError, OSError, TimeoutError, limits.errors.StorageError)
CONCURRENCY_RETRY_AFTER = 1.0
STORAGE_PAUSE = 1.0  # after a storage fault, seconds before the store is tried again
PREFIX = "llm-proxy"  # every key this store writes in Redis starts with it
WINDOW_KEYS_KEPT = 10_000  # Redis key names remembered per (limits, identity)
UNDO_TRIES = 30  # a failed admission's leases are given back, tried once a pause this often


class WindowStrategy(Protocol):
    """What the store asks of a window strategy (the library's, or MemoryWindows)."""

    async def hit(self, item: limits.RateLimitItem, *identifiers: str, cost: int = 1) -> bool: ...
    async def test(self, item: limits.RateLimitItem, *identifiers: str, cost: int = 1) -> bool: ...
    async def get_window_stats(
        self, item: limits.RateLimitItem, *identifiers: str
    ) -> WindowStats: ...


def _check_first(scope: Scope) -> bool:
    """Whether a scope must be checked before it is taken, when nothing was taken before it:
    only when taking it could stop half-way (two things to take, or token windows to test),
    since a refused take leaves it as it was."""
    lim = scope.limits
    takes = len(lim.requests) + (lim.bucket is not None)
    return takes > 1 or bool(scope.tokens and lim.tokens)


class LimitStore:
    def __init__(self, config: LimitsConfig, metrics: Metrics, spend_dir: Path) -> None:
        self.config = config
        self.metrics = metrics
        self._down_until = 0.0
        self._scripted: ScriptedLimits | None = None
        self._leases = itertools.count()
        self._replica = os.urandom(6).hex()
        self._undo: set[asyncio.Task[None]] = set()
        self._window_keys: dict[tuple[Limits, str], ScopeWindows] = {}
        self.counters: Counters
        self._memory = config.storage.startswith("memory://")
        if self._memory:
            self._storage: limits.aio.storage.Storage = limits.aio.storage.MemoryStorage()
            self.counters = MemoryCounters(spend_dir / "spend.json")
        else:
            client = aioredis.Redis.from_url(
                config.storage,
                # no socket_timeout: redis-py would run every command's write in a task of
                # its own (asyncio.wait_for); _guarded bounds each whole operation instead
                socket_connect_timeout=STORAGE_TIMEOUT,
            )
            self._storage = limits.aio.storage.RedisStorage(  # one connection pool for both
                "async+" + config.storage,
                implementation="redispy",
                key_prefix=PREFIX,
                connection_pool=client.connection_pool,  # type: ignore[arg-type]
            )
            self.counters = RedisCounters(client, PREFIX)
            if config.strategy == "sliding-window-counter":
                scripts = ScriptClient(config.storage, STORAGE_TIMEOUT)
                self._scripted = ScriptedLimits(scripts, CONCURRENCY_TTL)
        window = (
            limits.aio.strategies.FixedWindowRateLimiter
            if config.strategy == "fixed-window"
            else limits.aio.strategies.SlidingWindowCounterRateLimiter
        )
        self._tokens: WindowStrategy = window(self._storage)
        self._in_process: MemoryWindows | None = None
        if self._memory and config.strategy == "sliding-window-counter":
            self._tokens = self._in_process = MemoryWindows()  # without the storage's layers
        self._requests: WindowStrategy = (
            limits.aio.strategies.MovingWindowRateLimiter(self._storage)
            if config.strategy == "moving-window"
            else self._tokens
        )

    async def admit(
        self, scopes: Sequence[Scope], estimate: int, budget: tuple[str, float] | None = None
    ) -> list[Hold]:
        """Admit a request on every scope or on none: Refused or OverBudget (`budget` as
        (spend key, USD)) hold nothing. In Redis with sliding windows this is one script;
        otherwise the budget and every scope are checked, then the scopes taken."""
        if not scopes and budget is None:
            return []
        if self._scripted is not None:
            return await self._admit_scripted(self._scripted, scopes, estimate, budget)
        in_process = self._in_process
        if in_process is not None and budget is None and all(s.limits.windows_only for s in scopes):
            return admit_windows(in_process, scopes, estimate)
        return await self._admit_checked(scopes, estimate, budget)

    async def _admit_checked(
        self, scopes: Sequence[Scope], estimate: int, budget: tuple[str, float] | None
    ) -> list[Hold]:
        """The budget and every scope checked, then the scopes taken one by one."""
        if budget is not None:
            spent = await self.spend(budget[0])
            if spent >= budget[1]:
                raise OverBudget(spent)
        for i, scope in enumerate(scopes):
            if i or _check_first(scope):  # the first scope is taken first: see _check_first
                await self.check(scope.limits, scope.ident, estimate, scope.tokens)
        holds: list[Hold] = []
        lease = self._new_lease()
        try:
            for scope in scopes:
                holds.append(
                    await self.acquire(scope.limits, scope.ident, estimate, scope.states, lease)
                )
        except Refused:
            for hold in holds:
                await self.release(hold)
            raise
        return holds

    async def _admit_scripted(
        self,
        scripted: ScriptedLimits,
        scopes: Sequence[Scope],
        estimate: int,
        budget: tuple[str, float] | None,
    ) -> list[Hold]:
        windows = [self._windows(scope.limits, scope.ident) for scope in scopes]
        asked = [(w, scope.tokens, scope.states) for w, scope in zip(windows, scopes, strict=True)]
        lease = self._new_lease()
        if budget is not None:
            budget = (f"{PREFIX}:spend:{budget[0]}", budget[1])
        try:
            result = await self._guard(scripted.admit(asked, estimate, lease, budget), None)
        except ServiceUnavailableError:
            self._undo_later(scopes, lease)
            raise
        if isinstance(result, BudgetSpent):
            raise OverBudget(result.spent)
        if isinstance(result, Refusal):
            raise Refused(scopes[result.scope].limits.scope, result.kind, result.retry_after)
        if result is None:
            self._undo_later(scopes, lease)
            return [Hold(scope.limits, f"{scope.limits.scope}:{scope.ident}") for scope in scopes]
        return [
            Hold(
                scope.limits,
                f"{scope.limits.scope}:{scope.ident}",
                entered=scope.limits.concurrency is not None,
                states=result[i],
                windows=windows[i],
                lease=lease,
            )
            for i, scope in enumerate(scopes)
        ]

    def _new_lease(self) -> str:
        return f"{self._replica}:{next(self._leases)}"

    def _undo_later(self, scopes: Sequence[Scope], lease: str) -> None:
        """An admission that failed in storage may still run there (a timeout is not a
        refusal): give its leases back once the store is tried again."""
        idents = [f"{s.limits.scope}:{s.ident}" for s in scopes if s.limits.concurrency]
        if idents:
            task = asyncio.get_running_loop().create_task(self._undo_leases(idents, lease))
            self._undo.add(task)
            task.add_done_callback(self._undo.discard)

    async def _undo_leases(self, idents: list[str], lease: str) -> None:
        for _ in range(UNDO_TRIES):
            await asyncio.sleep(STORAGE_PAUSE)
            try:
                for ident in idents:
                    await self.counters.leave(ident, lease)
                return
            except _STORAGE_ERRORS:
                continue

    def _windows(self, lim: Limits, ident: str) -> ScopeWindows:
        """The Redis keys of a scope's counters: the library's names for its windows."""
        found = self._window_keys.get((lim, ident))
        if found is not None:
            return found
        key = f"{lim.scope}:{ident}"
        windows = tuple(
            (f"{current}/-1", current, item.amount, item.get_expiry() * 1000, kind)
            for kind, items in (("requests", lim.requests), ("tokens", lim.tokens))
            for item in items
            for current in (f"{PREFIX}:{{{item.key_for(key)}}}",)
        )
        found = ScopeWindows(
            f"{PREFIX}:leases:{key}" if lim.concurrency is not None else None,
            lim.concurrency or 0,
            f"{PREFIX}:gcra:{key}" if lim.bucket is not None else None,
            lim.bucket,
            windows,
        )
        if len(self._window_keys) >= WINDOW_KEYS_KEPT:
            self._window_keys.clear()
        self._window_keys[(lim, ident)] = found
        return found

    async def settle(
        self,
        holds: Sequence[tuple[Hold, bool]],
        tokens: int,
        spend: tuple[str, float, int] | None = None,
    ) -> None:
        """The end of a request: charge real usage to the token windows of the holds marked
        (hold, True), release every hold's concurrency slot and add `spend` (spend key, USD,
        seconds the key lives); in Redis one script, or no call when there is nothing."""
        if self._scripted is None:
            for hold, charge in holds:
                if charge:
                    await self.charge(hold, tokens)
                await self.release(hold)
            if spend is not None:
                await self.add_spend(*spend)
            return
        entries = []
        for hold, charge in holds:
            charge = charge and tokens > 0 and bool(hold.limits.tokens)
            if (hold.entered or charge) and hold.windows is not None:
                entries.append((hold.windows, hold.lease if hold.entered else "", charge))
            hold.entered = False
        if spend is not None:
            spend = (f"{PREFIX}:spend:{spend[0]}", spend[1], spend[2])
        if entries or spend is not None:
            await self._guard(self._scripted.settle(entries, tokens, spend), None)

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

    async def acquire(
        self, lim: Limits, ident: str, estimate: int, states: bool, lease: str
    ) -> Hold:
        """Take this scope's share (concurrency under `lease`, the bucket, the request
        windows) or raise Refused, holding nothing then. Run `check` on every scope first."""
        hold = Hold(lim, f"{lim.scope}:{ident}", lease=lease)
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
        result = await self._guard(self.counters.enter(hold.ident, cap, hold.lease), (True, 0))
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
            await self._guard(self.counters.leave(hold.ident, hold.lease), None)

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

    def _guard(self, operation: Awaitable[T], fallback: T) -> Awaitable[T]:
        """The operation, guarded against storage faults where storage can fail (memory
        cannot: there it is the operation itself, without a coroutine more per call)."""
        if self._memory:
            return operation
        return self._guarded(operation, fallback)

    async def _guarded(self, operation: Awaitable[T], fallback: T) -> T:
        """A storage fault is counted, then allowed through or refused (503) per policy.
        After a fault the store is left alone for STORAGE_PAUSE: a slow Redis costs one
        timeout per pause, not one per call."""
        if time.monotonic() < self._down_until:
            if isinstance(operation, Coroutine):
                operation.close()
            return self._fallback(fallback)
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT):
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
        if self._scripted is not None:
            await self._scripted.close()
