"""Sliding-window counters in this process: the `limits` library's sliding-window-counter
strategy (the same windows, weighting and stats) without its memory storage's layers of
coroutines, locks and expiry tasks, which cost a request more than the rest of its limits.

A window is aligned on a multiple of its length; a request's count is the current window's
plus the previous window's weighted by the share of it still inside the sliding window.
`hit`, `test` and `get_window_stats` answer as the library's strategy does, so the store uses
either behind one interface (the library's is kept for the other strategies and for Redis);
`admit_windows` admits scopes that have only windows without awaiting anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from math import floor, inf

from limits import RateLimitItem
from limits.util import WindowStats

from proxy.limits.headers import WindowState
from proxy.limits.scopes import Hold, Limits, Refused, Scope

SWEEP_AT = 10_000  # windows kept before the stale ones are dropped


class MemoryWindows:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # (limit, identity) -> [window index, its count, the previous window's count, window
        # seconds]; equal limits share counts, so a reloaded policy's limits carry on
        self._windows: dict[tuple[RateLimitItem, str], list[float]] = {}
        # the same lists found by the limit object's identity: hashing a limit by value is a
        # Python call, an id is not (the limit is kept, so its id is not reused meanwhile)
        self._by_identity: dict[tuple[int, str], tuple[RateLimitItem, list[float]]] = {}

    def now(self) -> float:
        return self._clock()

    def _window(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> list[float]:
        ident = identifiers[0] if len(identifiers) == 1 else ":".join(identifiers)
        found = self._by_identity.get((id(item), ident))
        if found is not None and found[0] is item:
            return found[1]
        window = self._windows.get((item, ident))
        if window is None:
            if len(self._windows) >= SWEEP_AT:
                self._sweep(self._clock())
            window = self._windows[(item, ident)] = [0, 0, 0, item.get_expiry()]
        if len(self._by_identity) >= SWEEP_AT:
            self._by_identity.clear()
        self._by_identity[(id(item), ident)] = (item, window)
        return window

    def _counts(
        self, item: RateLimitItem, identifiers: tuple[str, ...], now: float
    ) -> tuple[list[float], float, float]:
        """The window (moved on to now), the previous count's weight and the seconds left
        of the current window."""
        window = self._window(item, identifiers)
        expiry = window[3]
        index = int(now / expiry)
        if window[0] != index:
            previous = window[1] if window[0] == index - 1 else 0
            window[0], window[1], window[2] = index, 0, previous
        into = now % expiry
        weight = (expiry - into) / expiry if window[2] else 0.0
        return window, weight, 2 * expiry - into

    def _sweep(self, now: float) -> None:
        stale = [key for key, w in self._windows.items() if w[0] < int(now / w[3]) - 1]
        for key in stale:
            del self._windows[key]
        self._by_identity.clear()

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self.hit_now(item, identifiers, cost)

    async def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self.test_now(item, identifiers, cost)

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self.stats_now(item, identifiers)

    def hit_now(self, item: RateLimitItem, identifiers: tuple[str, ...], cost: int = 1) -> bool:
        if cost > item.amount:
            return False
        window, weight, _ = self._counts(item, identifiers, self._clock())
        if floor(window[2] * weight + window[1]) + cost > item.amount:
            return False
        window[1] += cost
        return True

    def test_now(self, item: RateLimitItem, identifiers: tuple[str, ...], cost: int = 1) -> bool:
        window, weight, _ = self._counts(item, identifiers, self._clock())
        return window[2] * weight + window[1] < item.amount - cost + 1

    def stats_now(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> WindowStats:
        now = self._clock()
        window, weight, current_left = self._counts(item, identifiers, now)
        previous, current = window[2], window[1]
        remaining = max(0, item.amount - floor(previous * weight + current))
        if not (previous or current):
            return WindowStats(now, remaining)
        expiry = item.get_expiry()
        previous_reset, current_reset = inf, inf
        if previous:
            previous_reset = (weight * expiry) % (expiry / previous)
        if current:
            current_reset = current_left % expiry
        return WindowStats(now + min(previous_reset, current_reset), remaining)


def admit_windows(windows: MemoryWindows, scopes: Sequence[Scope], estimate: int) -> list[Hold]:
    """Admission on scopes that have only windows (no bucket, no concurrency), in process and
    without a single await: every scope tested, then every scope's request windows hit."""
    for number, scope in enumerate(scopes):
        lim, ident = scope.limits, f"{scope.limits.scope}:{scope.ident}"
        if number or len(lim.requests) > 1 or (scope.tokens and lim.tokens):
            _test(windows, lim, ident, estimate if scope.tokens else 0)
    holds = []
    for scope in scopes:
        lim = scope.limits
        hold = Hold(lim, f"{lim.scope}:{scope.ident}")
        key = (hold.ident,)
        for item in lim.requests:
            if not windows.hit_now(item, key):
                raise Refused(lim.scope, "requests", _reset(windows, item, key))
            if scope.states:
                hold.states.append(_state(windows, "requests", item, key))
        if scope.states:
            hold.states += [_state(windows, "tokens", item, key) for item in lim.tokens]
        holds.append(hold)
    return holds


def _test(windows: MemoryWindows, lim: Limits, ident: str, estimate: int) -> None:
    key = (ident,)
    for item in lim.requests:
        if not windows.test_now(item, key):
            raise Refused(lim.scope, "requests", _reset(windows, item, key))
    for item in lim.tokens if estimate else ():
        if not windows.test_now(item, key, max(min(estimate, item.amount), 1)):
            raise Refused(lim.scope, "tokens", _reset(windows, item, key))


def _state(
    windows: MemoryWindows, kind: str, item: RateLimitItem, key: tuple[str, ...]
) -> WindowState:
    stats = windows.stats_now(item, key)
    reset = max(stats.reset_time - windows.now(), 0.0)
    return WindowState(kind, item.amount, stats.remaining, reset)


def _reset(windows: MemoryWindows, item: RateLimitItem, key: tuple[str, ...]) -> float:
    return max(windows.stats_now(item, key).reset_time - windows.now(), 0.0)
