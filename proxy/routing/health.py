"""Passive health per route: the circuit breaker, parking after Retry-After, and the load
and latency figures the strategies read. Time comes from an injected clock.

closed --failures within window--> open --cooldown--> half-open (one trial)
half-open --trial ok--> closed;  --trial failed--> open, cooldown doubled up to max_cooldown
An upstream 401/403 opens the breaker for auth_cooldown; a 429 parks without counting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from loguru import logger

from proxy.config import BreakerConfig

Clock = Callable[[], float]
Listener = Callable[["RouteHealth", str], None]
EWMA_WEIGHT = 0.3
RECENT = 60.0  # seconds of outcomes behind the error rate /health shows


class RouteHealth:
    __slots__ = (
        "_failures",
        "_recent",
        "auth_ejected",
        "clock",
        "config",
        "inflight",
        "label",
        "latency",
        "listener",
        "open_until",
        "opened_at",
        "opens",
        "park_rate_limited",
        "parked_until",
        "trial",
        "watcher",
    )  # fmt: skip

    def __init__(self, label: str, config: BreakerConfig, clock: Clock) -> None:
        self.label = label
        self.config = config
        self.clock = clock
        self._failures: deque[float] = deque()
        self.open_until = 0.0  # > 0: the breaker is open (until then) or half-open (after)
        self.opened_at = 0.0  # epoch seconds of the last opening (shared state compares it)
        self.listener: Listener | None = None  # told of openings, parkings and closings
        self.watcher: Listener | None = None  # the same, for metrics
        self.opens = 0  # consecutive openings, for the growing cooldown
        self.trial = False  # a half-open trial request is in flight
        self.auth_ejected = False
        self.parked_until = 0.0
        self.park_rate_limited = False  # parked by an upstream 429 (else a 503 Retry-After)
        self.inflight = 0
        self.latency: float | None = None  # EWMA of time to first byte, seconds
        self._recent: deque[tuple[float, bool]] = deque()  # (when, failed), for /health

    # -- reading ---------------------------------------------------------------------------

    def state(self) -> str:
        now = self.clock()
        if self.open_until and now < self.open_until:
            return "open"
        if self.open_until:
            return "half-open"
        if now < self.parked_until:
            return "parked"
        return "closed"

    def available(self) -> bool:
        """May a request be sent now (a half-open route admits one trial at a time)?"""
        now = self.clock()
        if now < self.parked_until:
            return False
        if self.open_until:
            return now >= self.open_until and not self.trial
        return True

    def error_rate(self) -> tuple[float | None, int]:
        """Share of failed calls in the last RECENT seconds, and how many calls that was."""
        self._trim(self.clock())
        calls = len(self._recent)
        if not calls:
            return None, 0
        return sum(failed for _, failed in self._recent) / calls, calls

    def _note(self, failed: bool) -> None:
        now = self.clock()
        self._recent.append((now, failed))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and (self._recent[0][0] < now - RECENT or len(self._recent) > 1000):
            self._recent.popleft()

    def recovery_at(self) -> float:
        return max(self.open_until, self.parked_until)

    # -- an attempt's life -----------------------------------------------------------------

    def begin(self) -> None:
        self.inflight += 1
        if self.open_until and self.clock() >= self.open_until:
            self.trial = True

    def stream_ended(self) -> None:
        self.inflight -= 1

    def succeeded(self, first_byte: float) -> None:
        self.inflight -= 1
        self._note(False)
        self.latency = (
            first_byte
            if self.latency is None
            else EWMA_WEIGHT * first_byte + (1 - EWMA_WEIGHT) * self.latency
        )
        if self.open_until and (self.trial or self.clock() >= self.open_until):
            logger.info("route {} recovered: breaker closed", self.label)
            self.adopt_close()
            self._tell("close")
            self._failures.clear()  # a fresh start after a good trial; otherwise failures
            # within the window keep counting, successes in between or not

    def failed(self) -> None:
        """A transient failure: counts towards opening the breaker."""
        self.inflight -= 1
        self._note(True)
        now = self.clock()
        if self.trial or (self.open_until and now >= self.open_until):
            self._open(now, f"trial request failed (opening #{self.opens + 1})")
            return
        self._failures.append(now)
        while self._failures and self._failures[0] <= now - self.config.window:
            self._failures.popleft()
        if not self.open_until and len(self._failures) >= self.config.failures:
            self._open(now, f"{len(self._failures)} failures within {self.config.window:g}s")

    def released(self) -> None:
        """An outcome that says nothing about the route's health (e.g. the client's 400)."""
        self.inflight -= 1
        self.trial = False

    def park(self, seconds: float, rate_limited: bool) -> None:
        self.inflight -= 1
        self.trial = False
        self.parked_until = max(self.parked_until, self.clock() + seconds)
        self.park_rate_limited = rate_limited
        self._tell("park")

    def eject(self) -> None:
        """The upstream refused our credentials: out for auth_cooldown."""
        self.inflight -= 1
        self.trial = False
        self.auth_ejected = True
        self.open_until = self.clock() + self.config.auth_cooldown
        self.opened_at = time.time()
        self._tell("open")
        logger.error(
            "route {} ejected for {:g}s: the upstream refused the proxy's credentials",
            self.label,
            self.config.auth_cooldown,
        )

    def _open(self, now: float, why: str) -> None:
        cooldown = min(self.config.cooldown * 2**self.opens, self.config.max_cooldown)
        self.opens += 1
        self.trial = False
        self.open_until = now + cooldown
        self.opened_at = time.time()
        self._failures.clear()
        self._tell("open")
        logger.warning("route {} breaker opened for {:g}s: {}", self.label, cooldown, why)

    # -- state another replica reported (shared.py) ------------------------------------------

    def adopt_open(self, until: float, opens: int) -> None:
        self.open_until = until
        self.opens = max(self.opens, opens)
        self.opened_at = time.time()
        self.trial = False
        if self.watcher is not None:
            self.watcher(self, "open")

    def adopt_close(self) -> None:
        self.open_until = 0.0
        self.opens = 0
        self.trial = False
        self.auth_ejected = False
        if self.watcher is not None:
            self.watcher(self, "close")

    def _tell(self, event: str) -> None:
        if self.listener is not None:
            self.listener(self, event)
        if self.watcher is not None:
            self.watcher(self, event)


class HealthBoard:
    """Every route's health, keyed by route label; survives policy reloads."""

    def __init__(self, config: BreakerConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._routes: dict[str, RouteHealth] = {}
        self._listener: Listener | None = None
        self.watcher: Listener | None = None  # set once, before routes are created

    @property
    def listener(self) -> Listener | None:
        return self._listener

    @listener.setter
    def listener(self, listener: Listener | None) -> None:
        self._listener = listener
        for health in self._routes.values():
            health.listener = listener

    def __getitem__(self, label: str) -> RouteHealth:
        health = self._routes.get(label)
        if health is None:
            health = self._routes[label] = RouteHealth(label, self.config, self.clock)
            health.listener = self.listener
            health.watcher = self.watcher
        return health

    def items(self) -> Iterable[tuple[str, RouteHealth]]:
        return self._routes.items()

    def reconfigure(self, config: BreakerConfig, labels: set[str]) -> None:
        """After a reload: keep the state of routes that still exist, forget the others,
        and give routes ejected for their credentials a fresh chance."""
        self.config = config
        self._routes = {k: v for k, v in self._routes.items() if k in labels}
        for health in self._routes.values():
            health.config = config
            if health.auth_ejected:
                health.auth_ejected = False
                health.open_until = 0.0
