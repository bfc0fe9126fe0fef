"""Route order for one request: the first route is tried first, the rest are failover."""

from __future__ import annotations

import random
from collections.abc import Callable

from proxy.policy import ModelPolicy, Route


def weighted(routes: tuple[Route, ...], rng: random.Random) -> list[Route]:
    """A random order in which each route leads with probability proportional to its weight."""
    if len(routes) == 1:
        return [routes[0]]
    return sorted(routes, key=lambda r: rng.random() ** (1.0 / r.weight), reverse=True)


def priority(routes: tuple[Route, ...], rng: random.Random) -> list[Route]:
    return list(routes)


STRATEGIES: dict[str, Callable[[tuple[Route, ...], random.Random], list[Route]]] = {
    "weighted": weighted,
    "priority": priority,
}


def order_routes(model: ModelPolicy, rng: random.Random) -> list[Route]:
    return STRATEGIES[model.strategy](model.routes, rng)
