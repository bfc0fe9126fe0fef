"""Route order per strategy."""

from __future__ import annotations

import random
from collections import Counter

from proxy.config import BreakerConfig, Timeouts
from proxy.policy import ModelPolicy, Route
from proxy.routing.health import HealthBoard
from proxy.routing.strategies import order_routes


def routes(*weights: float) -> tuple[Route, ...]:
    return tuple(Route("up", f"m{i}", w, f"up/m{i}", Timeouts()) for i, w in enumerate(weights))


def model(strategy: str, *weights: float) -> ModelPolicy:
    return ModelPolicy("public", routes(*weights), strategy, False)


def test_weighted_leads_in_proportion_to_weight() -> None:
    rng, board = random.Random(7), HealthBoard(BreakerConfig())
    leads = Counter(order_routes(model("weighted", 3, 1), board, rng)[0].label for _ in range(4000))
    assert 0.72 < leads["up/m0"] / 4000 < 0.78


def test_weighted_order_contains_every_route_once() -> None:
    order = order_routes(model("weighted", 1, 2, 3), HealthBoard(BreakerConfig()), random.Random())
    assert sorted(r.label for r in order) == ["up/m0", "up/m1", "up/m2"]


def test_priority_keeps_the_configured_order() -> None:
    order = order_routes(model("priority", 1, 1, 1), HealthBoard(BreakerConfig()), random.Random())
    assert [r.label for r in order] == ["up/m0", "up/m1", "up/m2"]


def test_least_busy_leads_with_the_fewest_in_flight() -> None:
    board = HealthBoard(BreakerConfig())
    board["up/m0"].inflight = 4
    board["up/m1"].inflight = 1
    board["up/m2"].inflight = 2
    order = order_routes(model("least-busy", 1, 1, 1), board, random.Random())
    assert [r.label for r in order] == ["up/m1", "up/m2", "up/m0"]


def test_latency_picks_the_faster_of_two_and_explores_unmeasured_routes() -> None:
    board = HealthBoard(BreakerConfig())
    board["up/m0"].latency = 0.5
    board["up/m1"].latency = 0.1
    leads = Counter(
        order_routes(model("latency", 1, 1), board, random.Random(i))[0].label for i in range(50)
    )
    assert leads == {"up/m1": 50}
    board["up/m2"].latency = None
    three = Counter(
        order_routes(model("latency", 1, 1, 1), board, random.Random(i))[0].label
        for i in range(300)
    )
    assert three["up/m0"] == 0 and three["up/m2"] > 100  # unmeasured m2 gets traffic
