"""Route order for one request: the first route is tried first, the rest are failover."""

from __future__ import annotations

import random
from collections.abc import Callable

from proxy.policy import ModelPolicy, Route
from proxy.routing.health import HealthBoard

Strategy = Callable[[tuple[Route, ...], HealthBoard, random.Random], list[Route]]


def weighted(routes: tuple[Route, ...], board: HealthBoard, rng: random.Random) -> list[Route]:
    """A random order in which each route leads with probability proportional to its weight."""
    if len(routes) == 1:
        return [routes[0]]
    return sorted(routes, key=lambda r: rng.random() ** (1.0 / r.weight), reverse=True)


def priority(routes: tuple[Route, ...], board: HealthBoard, rng: random.Random) -> list[Route]:
    return list(routes)


def least_busy(routes: tuple[Route, ...], board: HealthBoard, rng: random.Random) -> list[Route]:
    """Fewest requests in flight first; ties broken at random."""
    return sorted(routes, key=lambda r: (board[r.label].inflight, rng.random()))


def latency(routes: tuple[Route, ...], board: HealthBoard, rng: random.Random) -> list[Route]:
    """Power of two choices over the EWMA of time to first byte: of two random routes the
    faster leads (an unmeasured route counts as fastest, so it gets measured); the rest
    follow fastest first."""
    if len(routes) == 1:
        return [routes[0]]

    def speed(route: Route) -> float:
        measured = board[route.label].latency
        return 0.0 if measured is None else measured

    first, second = rng.sample(routes, 2)
    lead = first if speed(first) <= speed(second) else second
    return [lead, *sorted((r for r in routes if r is not lead), key=speed)]


STRATEGIES: dict[str, Strategy] = {
    "weighted": weighted,
    "priority": priority,
    "least-busy": least_busy,
    "latency": latency,
}


def order_routes(model: ModelPolicy, board: HealthBoard, rng: random.Random) -> list[Route]:
    return STRATEGIES[model.strategy](model.routes, board, rng)
