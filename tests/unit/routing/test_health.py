"""The circuit breaker and parking, on a fake clock."""

from __future__ import annotations

import pytest

from proxy.config import BreakerConfig
from proxy.routing.health import HealthBoard, RouteHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def route(clock: Clock, **config: float) -> RouteHealth:
    settings = {"failures": 3, "window": 10, "cooldown": 5, "max_cooldown": 12, **config}
    return RouteHealth("up/model", BreakerConfig(**settings), clock)  # type: ignore[arg-type]


def fail(health: RouteHealth, times: int = 1) -> None:
    for _ in range(times):
        health.begin()
        health.failed()


def test_opens_after_failures_within_the_window(clock: Clock) -> None:
    health = route(clock)
    fail(health, 2)
    assert health.state() == "closed" and health.available()
    fail(health)
    assert health.state() == "open" and not health.available()


def test_failures_outside_the_window_do_not_count(clock: Clock) -> None:
    health = route(clock)
    fail(health, 2)
    clock.now += 11
    fail(health)
    assert health.state() == "closed"


def test_half_open_admits_one_trial_and_a_good_trial_closes(clock: Clock) -> None:
    health = route(clock)
    fail(health, 3)
    clock.now += 4.9
    assert not health.available()
    clock.now += 0.2
    assert health.state() == "half-open" and health.available()
    health.begin()
    assert not health.available()  # the trial is in flight: nobody else
    health.succeeded(0.1)
    assert health.state() == "closed" and health.available() and health.opens == 0


def test_a_failed_trial_reopens_with_a_doubled_capped_cooldown(clock: Clock) -> None:
    health = route(clock)
    fail(health, 3)
    cooldowns = []
    for _ in range(4):
        opened_at = clock.now
        clock.now = health.open_until
        cooldowns.append(health.open_until - opened_at)
        fail(health)  # the trial fails
    assert cooldowns == [5, 10, 12, 12]


def test_park_blocks_until_its_time_without_counting_as_a_failure(clock: Clock) -> None:
    health = route(clock, failures=1)
    health.begin()
    health.park(3, rate_limited=True)
    assert health.state() == "parked" and not health.available()
    clock.now += 3.01
    assert health.state() == "closed" and health.available()
    assert health.inflight == 0


def test_auth_ejection_and_reload_gives_a_fresh_chance(clock: Clock) -> None:
    board = HealthBoard(BreakerConfig(auth_cooldown=300), clock)
    board["a/x"].begin()
    board["a/x"].eject()
    board["b/y"].begin()
    board["b/y"].park(60, rate_limited=False)
    assert board["a/x"].state() == "open"
    board.reconfigure(BreakerConfig(), {"a/x", "b/y"})
    assert board["a/x"].state() == "closed"
    assert board["b/y"].state() == "parked"  # other state carries over
    board.reconfigure(BreakerConfig(), {"a/x"})
    assert board["b/y"].state() == "closed"  # a route that disappeared starts afresh


def test_latency_is_a_moving_average(clock: Clock) -> None:
    health = route(clock)
    for seconds in (1.0, 2.0):
        health.begin()
        health.succeeded(seconds)
    assert health.latency == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)


def test_failures_within_the_window_count_even_with_successes_between(clock: Clock) -> None:
    health = route(clock)  # 3 failures within 10 s open it
    for _ in range(3):
        fail(health)
        health.begin()
        health.succeeded(0.1)
    assert health.state() == "open"
