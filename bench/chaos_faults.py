"""Fake upstreams for the chaos run: tests/fakes/openai_upstream.py's FakeOpenAI (chat
completions, its native /v1/responses and /v1/embeddings) and tests/fakes/anthropic_upstream.py's
FakeAnthropic (/v1/messages and count_tokens), real wire formats, each in a thread of its own,
answering every request with a fault drawn from its plan, and counting what it injected."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes import anthropic_upstream as claude
from fakes.anthropic_upstream import FakeAnthropic
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


def anthropic_fault_makers(timeouts: Timeouts) -> dict[str, Callable[[random.Random], Any]]:
    """The same for the fake Anthropic upstream (its 529 is Anthropic's "overloaded")."""
    return {
        "ok": lambda rng: claude.ok(),
        "500": lambda rng: claude.status(500),
        "529 overloaded": lambda rng: claude.overloaded(),
        "429 retry-after": lambda rng: claude.rate_limited(retry_after=rng.randint(1, 3)),
        "hang past timeout": lambda rng: claude.hang(timeouts.total + 1.0),
        "reset after first event": lambda rng: claude.drop_after(1),
        "error event mid-stream": lambda rng: claude.error_event_after(3),
        "garbage": lambda rng: claude.garbage(),
    }


# Fault plans (weights, normalised when drawn): a flaky upstream, a slow one, a healthier backup,
# a native Responses API upstream and an Anthropic one (faults their fakes carry out)
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
    "native": {
        "ok": 0.80,
        "500": 0.05,
        "503": 0.02,
        "429 retry-after": 0.03,
        "hang past timeout": 0.02,
        "reset after first chunk": 0.05,
        "error event mid-stream": 0.03,
    },
    "claude": {
        "ok": 0.80,
        "500": 0.04,
        "529 overloaded": 0.04,
        "429 retry-after": 0.03,
        "hang past timeout": 0.02,
        "reset after first event": 0.04,
        "error event mid-stream": 0.02,
        "garbage": 0.01,
    },
    "long": {"slow stream": 1.0},
    # for the replica checks: answers that depend on the proxy alone, and a breaker that opens
    "steady": {"ok": 1.0},
    "dead": {"500": 1.0},
}


class FaultPlan:
    """Draws one fault per request from a plan's weights and counts them, from any thread."""

    def __init__(
        self, plan: str, makers: dict[str, Callable[[random.Random], Any]], seed: int
    ) -> None:
        weights = PLANS[plan]
        self._names = list(weights)
        self._weights = [weights[n] for n in self._names]
        self._makers = makers
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()

    def draw(self) -> Any:
        with self._lock:
            name = self._rng.choices(self._names, self._weights)[0]
            self.injected[name] += 1
            return self._makers[name](self._rng)

    def faults(self) -> Counter[str]:
        """Faults injected so far (every name but "ok")."""
        with self._lock:
            return Counter({k: v for k, v in self.injected.items() if k != "ok"})


KEEP_REQUESTS = 500  # recorded requests kept, so that a long run does not grow without bound


class FaultyUpstream(FakeOpenAI):
    """A FakeOpenAI whose every request (chat, responses, embeddings) gets a fault drawn from
    `plan` (no script)."""

    keep_requests = KEEP_REQUESTS

    def __init__(
        self, name: str, plan: str, timeouts: Timeouts, seed: int, long_delay: float = 0.2
    ) -> None:
        super().__init__()
        self.name = name
        makers = fault_makers(timeouts)
        if plan == "long":
            makers["slow stream"] = lambda rng: slow_stream(long_delay)
        self.plan = FaultPlan(plan, makers, seed)
        self.draw = self.plan.draw

    def faults(self) -> Counter[str]:
        return self.plan.faults()


class FaultyAnthropic(FakeAnthropic):
    """A FakeAnthropic whose every request gets a fault drawn from `plan`."""

    keep_requests = KEEP_REQUESTS

    def __init__(self, name: str, plan: str, timeouts: Timeouts, seed: int) -> None:
        super().__init__()
        self.name = name
        self.plan = FaultPlan(plan, anthropic_fault_makers(timeouts), seed)
        self.draw = self.plan.draw

    def faults(self) -> Counter[str]:
        return self.plan.faults()

    @property
    def base_url(self) -> str:
        return self.url
