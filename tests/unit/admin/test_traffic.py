"""Recent traffic for the overview, on a clock the test moves."""

from __future__ import annotations

from proxy.admin.traffic import EDGES, RecentTraffic, percentile_ms


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rates_errors_and_percentiles_over_the_window() -> None:
    clock = Clock()
    traffic = RecentTraffic(seconds=600, clock=clock)
    for _ in range(90):
        traffic.record(200, 0.010)
    for _ in range(8):
        traffic.record(429, 0.001)
    for _ in range(2):
        traffic.record(502, 2.0)
    summary = traffic.summary(60)
    assert summary["requests"] == 100 and summary["errors"] == 2 and summary["rejected"] == 8
    assert summary["error_rate"] == 0.02
    assert summary["requests_per_second"] == round(100 / 60, 3)
    p50, p95 = summary["latency_ms"]["p50"], summary["latency_ms"]["p95"]
    assert 10 / 1.25 <= p50 <= 10 * 1.25
    assert 10 / 1.25 <= p95 <= 10 * 1.25  # 95 % of requests took 10 ms or less
    assert sum(m["requests"] for m in summary["per_minute"]) == 100


def test_old_seconds_leave_the_window_and_the_ring() -> None:
    clock = Clock()
    traffic = RecentTraffic(seconds=120, clock=clock)
    traffic.record(200, 0.5)
    clock.now += 61
    traffic.record(500, 0.5)
    assert traffic.summary(60)["requests"] == 1
    assert traffic.summary(120)["requests"] == 2
    clock.now += 120  # the ring wraps: the same slots hold new seconds
    traffic.record(200, 0.5)
    summary = traffic.summary(120)
    assert summary["requests"] == 1 and summary["errors"] == 0


def test_nothing_yet() -> None:
    summary = RecentTraffic(clock=Clock()).summary(300)
    assert summary["requests"] == 0 and summary["error_rate"] is None
    assert summary["latency_ms"] == {"p50": None, "p95": None}
    assert [m["requests"] for m in summary["per_minute"]] == [0] * len(summary["per_minute"])


def test_percentiles_come_from_geometric_buckets() -> None:
    histogram = [0] * (len(EDGES) + 1)
    histogram[10] = 1
    value = percentile_ms(histogram, 0.5)
    assert value is not None and EDGES[9] * 1000 <= value <= EDGES[10] * 1000
    assert percentile_ms([0, 0], 0.5) is None
