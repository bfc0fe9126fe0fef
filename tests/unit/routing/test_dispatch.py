"""Retries, parking, failover and fallbacks, with scripted upstreams and a fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from proxy.accounting import RequestRecord
from proxy.config import BreakerConfig, RetryConfig, Timeouts
from proxy.errors import (
    ProxyError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
)
from proxy.observability.metrics import Metrics
from proxy.policy import ModelPolicy, ResolvedModel, Route
from proxy.routing.dispatch import Attempt, Dispatcher, Plan
from proxy.routing.health import HealthBoard
from proxy.upstreams.base import UpstreamCall

OK = b"ok"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Scripted:
    """An upstream answering from a script: exceptions are raised, bytes returned."""

    def __init__(self, name: str, *outcomes: bytes | ProxyError) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.calls = 0

    async def complete(self, call: UpstreamCall) -> bytes:
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else OK
        if isinstance(outcome, ProxyError):
            raise outcome
        return outcome


def transient(status: int = 500) -> UpstreamError:
    return UpstreamError("boom", cause=str(status))


def setup(clock: Clock, **retry: Any) -> tuple[Dispatcher, HealthBoard, Callable[..., Plan]]:
    settings = {"attempts": 3, "initial_delay": 1.0, "max_delay": 8.0, "deadline": 60, **retry}
    board = HealthBoard(BreakerConfig(failures=100), clock)
    dispatcher = Dispatcher(
        RetryConfig(**settings), board, Metrics(), random.Random(1), clock.sleep, clock
    )

    def plan(*upstreams: Scripted, name: str = "public") -> Plan:
        routes = tuple(Route(u.name, "m", 1, f"{u.name}/m", Timeouts()) for u in upstreams)
        resolved = ResolvedModel(name, ModelPolicy(name, routes, "priority", False))
        by_name = {u.name: u for u in upstreams}

        def make(route: Route) -> Attempt:
            call = UpstreamCall(b"{}", "m", Timeouts(), "r")
            return Attempt(route, by_name[route.upstream], resolved, lambda: call)  # type: ignore[arg-type]

        return dispatcher.plan(resolved, make)

    return dispatcher, board, plan


async def complete(attempt: Attempt) -> bytes:
    return await attempt.upstream.complete(attempt.call)


def record() -> RequestRecord:
    return RequestRecord("r", 0.0)


async def test_transient_failures_retry_with_capped_full_jitter_backoff() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, attempts=4, initial_delay=1.0, max_delay=2.5)
    up = Scripted("a", transient(), transient(503), transient(502))
    rec = record()
    result, _ = await dispatcher.run([plan(up)], complete, rec)
    assert result == OK and up.calls == 4 and rec.attempts == 4
    assert len(clock.sleeps) == 3
    for number, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= min(2.5, 1.0 * 2**number)
    assert rec.waited == pytest.approx(sum(clock.sleeps))


async def test_retry_on_decides_what_is_retried() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, on=[502, "timeout"])
    up = Scripted("a", transient(500))
    with pytest.raises(UpstreamError):
        await dispatcher.run([plan(up)], complete, record())
    assert up.calls == 1


async def test_retry_after_parks_and_the_next_route_is_tried_at_once() -> None:
    clock = Clock()
    dispatcher, board, plan = setup(clock)
    first, second = Scripted("a", RateLimitError("slow", retry_after=30)), Scripted("b")
    await dispatcher.run([plan(first, second)], complete, record())
    assert (first.calls, second.calls, clock.sleeps) == (1, 1, [])
    assert board["a/m"].state() == "parked"
    await dispatcher.run([plan(first, second)], complete, record())
    assert (first.calls, second.calls) == (1, 2)  # a stays parked


async def test_a_short_wait_for_the_earliest_parked_route_is_taken() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, max_delay=5)
    up = Scripted("a", RateLimitError("slow", retry_after=2))
    result, _ = await dispatcher.run([plan(up)], complete, record())
    assert result == OK and clock.sleeps == [pytest.approx(2)] and up.calls == 2


async def test_a_long_wait_is_a_429_with_the_earliest_retry_after() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, max_delay=5)
    first = Scripted("a", RateLimitError("slow", retry_after=30))
    second = Scripted("b", RateLimitError("slow", retry_after=20))
    with pytest.raises(RateLimitError) as caught:
        await dispatcher.run([plan(first, second)], complete, record())
    assert caught.value.retry_after == 20 and clock.sleeps == []


async def test_routes_parked_by_a_503_give_a_503_with_retry_after() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, max_delay=1)
    up = Scripted("a", UpstreamError("loading", retry_after=20, cause="503"))
    with pytest.raises(ServiceUnavailableError) as caught:
        await dispatcher.run([plan(up)], complete, record())
    assert caught.value.retry_after == 20


async def test_refused_credentials_eject_the_route_without_retry() -> None:
    clock = Clock()
    dispatcher, board, plan = setup(clock)
    first, second = Scripted("a", UpstreamAuthError("no")), Scripted("b")
    await dispatcher.run([plan(first, second)], complete, record())
    assert first.calls == 1 and board["a/m"].state() == "open"


async def test_every_route_open_still_tries_the_one_closest_to_recovery() -> None:
    clock = Clock()
    dispatcher, board, plan = setup(clock)
    first, second = Scripted("a"), Scripted("b")
    board["a/m"].open_until = clock.now + 50
    board["b/m"].open_until = clock.now + 10
    await dispatcher.run([plan(first, second)], complete, record())
    assert (first.calls, second.calls) == (0, 1)


async def test_client_errors_end_everything_at_once() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock)
    first, second = Scripted("a", UpstreamRejectedError("bad temperature")), Scripted("b")
    with pytest.raises(UpstreamRejectedError):
        await dispatcher.run([plan(first, second), plan(second, name="fb")], complete, record())
    assert second.calls == 0


async def test_context_length_exceeded_goes_to_the_fallbacks() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock)
    short = Scripted("a", UpstreamRejectedError("too long", code="context_length_exceeded"))
    other_route, long = Scripted("b"), Scripted("c")
    _, attempt = await dispatcher.run(
        [plan(short, other_route), plan(long, name="long")], complete, record()
    )
    assert attempt.model.public == "long" and other_route.calls == 0


async def test_upstream_404_fails_over_without_retry() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock)
    first = Scripted("a", UpstreamError("no model", code="upstream_model_not_found", cause="404"))
    second = Scripted("b")
    await dispatcher.run([plan(first, second)], complete, record())
    assert (first.calls, second.calls) == (1, 1)


async def test_the_deadline_stops_further_retries() -> None:
    clock = Clock()
    dispatcher, _, plan = setup(clock, attempts=10, initial_delay=4, max_delay=4, deadline=5)
    up = Scripted("a", *[transient() for _ in range(10)])
    with pytest.raises(UpstreamError):
        await dispatcher.run([plan(up)], complete, record())
    assert sum(clock.sleeps) < 5 and up.calls < 10
