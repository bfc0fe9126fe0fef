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

    def take(
        self, item: RateLimitItem, key: tuple[str, ...], kind: str, cost: int = 1
    ) -> tuple[bool, WindowState]:
        """A hit (when it fits) and the window's state after it, in one pass."""
        window, weight, current_left = self._counts(item, key, self._clock())
        allowed = (
            cost <= item.amount and floor(window[2] * weight + window[1]) + cost <= item.amount
        )
        if allowed:
            window[1] += cost
        return allowed, self._state_of(item, window, weight, current_left, kind)

    def give_back(self, item: RateLimitItem, key: tuple[str, ...], cost: int = 1) -> None:
        """Undo a hit of this request (a later scope refused it)."""
        window = self._window(item, key)
        window[1] = max(window[1] - cost, 0)

    def state(self, item: RateLimitItem, key: tuple[str, ...], kind: str) -> WindowState:
        window, weight, current_left = self._counts(item, key, self._clock())
        return self._state_of(item, window, weight, current_left, kind)

    @staticmethod
    def _state_of(
        item: RateLimitItem, window: list[float], weight: float, current_left: float, kind: str
    ) -> WindowState:
        """Remaining and reset as the library's get_window_stats says them."""
        previous, current = window[2], window[1]
        remaining = max(0, item.amount - floor(previous * weight + current))
        expiry = window[3]
        reset = inf
        if previous:
            reset = (weight * expiry) % (expiry / previous)
        if current:
            reset = min(reset, current_left % expiry)
        return WindowState(kind, item.amount, int(remaining), 0.0 if reset == inf else reset)

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
    without a single await: each request window hit in turn (its state read in the same
    pass), and every hit given back when a later window refuses, so a refusal takes
    nothing; token windows are tested against the estimate (charged at the end)."""
    holds: list[Hold] = []
    taken: list[tuple[RateLimitItem, tuple[str, ...]]] = []
    try:
        for scope in scopes:
            lim = scope.limits
            hold = Hold(lim, f"{lim.scope}:{scope.ident}")
            key: tuple[str, ...] = (hold.ident,)
            if scope.tokens and lim.tokens:
                _test_tokens(windows, lim, key, estimate)
            for item in lim.requests:
                allowed, state = windows.take(item, key, "requests")
                if not allowed:
                    raise Refused(lim.scope, "requests", state.reset)
                taken.append((item, key))
                if scope.states:
                    hold.states.append(state)
            if scope.states:
                hold.states += [windows.state(item, key, "tokens") for item in lim.tokens]
            holds.append(hold)
    except Refused:
        for item, key in taken:
            windows.give_back(item, key)
        raise
    return holds


def _test_tokens(windows: MemoryWindows, lim: Limits, key: tuple[str, ...], estimate: int) -> None:
    for item in lim.tokens:
        if not windows.test_now(item, key, max(min(estimate, item.amount), 1)):
            raise Refused(lim.scope, "tokens", windows.state(item, key, "tokens").reset)
