"""The in-process micro-benchmarks still drive the gateway's current interfaces (a benchmark
that no longer runs reports nothing): each runs a few rounds here and gives a figure."""

from __future__ import annotations

import pytest

from bench import cache, limits, routing


def test_the_routing_micro_benchmark_runs() -> None:
    figures = routing.micro_benchmark(rounds=20)
    assert 0 < figures["min_us"] <= figures["median_us"]


@pytest.mark.parametrize("everything", [False, True])
def test_the_limits_micro_benchmark_runs(everything: bool) -> None:
    figures = limits.micro_benchmark("memory://", everything, rounds=20)
    assert figures and all(value >= 0 for value in figures.values())


def test_the_cache_micro_benchmark_runs() -> None:
    figures = cache.micro_benchmark(rounds=20)
    assert figures and all(value > 0 for value in figures.values())
