"""Fake upstreams for the chaos run: tests/fakes/openai_upstream.py's FakeOpenAI (real wire
format, in a thread of its own), each answering every request with a fault drawn from its
plan, and counting what it injected."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from fakes.openai_upstream import (
    Behaviour,
    FakeOpenAI,
    drop_after,
    drop_before_response,
    error_event_after,
    hang,
    ok,
    rate_limited,
    slow_stream,
    stall_after,
    status,
)


@dataclass(frozen=True)
class Timeouts:
    """The upstream timeouts the chaos policy gives the proxy; faults are sized from them."""

    connect: float = 1.0
    first_token: float = 2.0
    idle: float = 1.5
    total: float = 3.0

    def as_policy(self) -> dict[str, float]:
        return {
            "connect": self.connect,
            "first_token": self.first_token,
            "idle": self.idle,
            "total": self.total,
        }


def fault_makers(timeouts: Timeouts) -> dict[str, Callable[[random.Random], Behaviour]]:
    """Fault name -> a behaviour for one request (random parameters drawn from `rng`)."""
    return {
        "ok": lambda rng: ok(),
        "500": lambda rng: status(500),
        "503": lambda rng: status(503),
        "429 retry-after": lambda rng: rate_limited(retry_after=rng.randint(1, 3)),
        "hang past timeout": lambda rng: hang(timeouts.total + 1.0),
        "reset before response": lambda rng: drop_before_response(),
        "reset after first chunk": lambda rng: drop_after(1),
        "slow stream": lambda rng: slow_stream(rng.uniform(0.05, 0.25)),
        "stall past idle": lambda rng: stall_after(2, timeouts.idle + 1.0),
        "error event mid-stream": lambda rng: error_event_after(2),
    }


# Fault plans (weights, normalised when drawn): a flaky upstream, a slow one, a healthier backup
PLANS: dict[str, dict[str, float]] = {
    "flaky": {
        "ok": 0.66,
        "500": 0.08,
        "503": 0.02,
        "429 retry-after": 0.05,
        "hang past timeout": 0.03,
        "reset before response": 0.05,
        "reset after first chunk": 0.05,
        "slow stream": 0.03,
        "stall past idle": 0.015,
        "error event mid-stream": 0.015,
    },
    "slow": {
        "ok": 0.66,
        "slow stream": 0.20,
        "hang past timeout": 0.04,
        "500": 0.04,
        "reset after first chunk": 0.04,
        "429 retry-after": 0.02,
    },
    "backup": {"ok": 0.92, "500": 0.03, "reset before response": 0.03, "429 retry-after": 0.02},
    "long": {"slow stream": 1.0},
    # for the replica checks: answers that depend on the proxy alone, and a breaker that opens
    "steady": {"ok": 1.0},
    "dead": {"500": 1.0},
}


class FaultyUpstream(FakeOpenAI):
    """A FakeOpenAI whose every chat request gets a fault drawn from `plan` (no script).

    `injected` counts the faults by name. Recorded requests are trimmed so that a long run
    does not grow without bound."""

    KEEP_REQUESTS = 500

    def __init__(
        self, name: str, plan: str, timeouts: Timeouts, seed: int, long_delay: float = 0.2
    ) -> None:
        super().__init__()
        self.name = name
        self.plan = plan
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._makers = fault_makers(timeouts)
        self._makers["slow stream"] = (
            (lambda rng: slow_stream(long_delay)) if plan == "long" else self._makers["slow stream"]
        )
        weights = PLANS[plan]
        self._names = list(weights)
        self._weights = [weights[n] for n in self._names]
        self._draw_lock = threading.Lock()

    def _next_behaviour(self) -> tuple[Behaviour, str, int]:
        _, reply, seq = super()._next_behaviour()  # the script is always empty
        with self._draw_lock:
            name = self._rng.choices(self._names, self._weights)[0]
            self.injected[name] += 1
            return self._makers[name](self._rng), reply, seq

    def _record(self, request, body):  # type: ignore[no-untyped-def]
        rec = super()._record(request, body)
        with self._lock:
            if len(self._requests) > 2 * self.KEEP_REQUESTS:
                del self._requests[: -self.KEEP_REQUESTS]
        return rec

    def faults(self) -> Counter[str]:
        """Faults injected so far (every name but "ok")."""
        with self._draw_lock:
            return Counter({k: v for k, v in self.injected.items() if k != "ok"})
