"""The pure parts of limits: GCRA, durations, headers, periods, costs, compiling specs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.config import LimitSpec, PriceConfig
from proxy.limits.budgets import cost_usd, period_end, period_start, spend_key
from proxy.limits.counters import MemoryCounters, gcra
from proxy.limits.headers import WindowState, go_duration, rate_limit_headers
from proxy.limits.scopes import compile_limits


def test_gcra_admits_a_burst_then_refills_at_the_rate() -> None:
    tat, now, interval, capacity = 0.0, 100.0, 0.1, 3  # 10/second, burst 3
    decisions = []
    for _ in range(4):
        decision, tat = gcra(tat, now, interval, capacity)
        decisions.append(decision[0])
    assert decisions == [True, True, True, False]
    refused, _ = gcra(tat, now, interval, capacity)
    assert refused[1] == pytest.approx(0.1)  # retry after one interval
    allowed, _ = gcra(tat, now + 0.1, interval, capacity)
    assert allowed[0]


def test_gcra_reports_slots_left() -> None:
    (allowed, wait, left), _ = gcra(0.0, 50.0, 1.0, 5)
    assert (allowed, wait, left) == (True, 0.0, 4)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.012, "12ms"),
        (0, "0ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9, "59.9s"),
        (360, "6m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_headers_describe_the_tightest_window_per_kind() -> None:
    states = [
        WindowState("requests", 10, 9, 1.0),
        WindowState("requests", 100, 5, 60.0),
        WindowState("tokens", 1000, 990, 30.0),
    ]
    assert rate_limit_headers(states) == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "990",
        "x-ratelimit-reset-tokens": "30s",
    }
    assert rate_limit_headers([]) == {}


def test_calendar_periods_in_utc() -> None:
    when = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)  # a Thursday
    assert period_start("day", when) == datetime(2026, 11, 26, tzinfo=UTC)
    assert period_start("week", when) == datetime(2026, 11, 23, tzinfo=UTC)
    assert period_start("month", when) == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_end("month", when) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("month", datetime(2026, 12, 31, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert spend_key("team", "week", when) == "team:week:2026-11-23"


def test_cost_per_million_tokens_and_unpriced_is_free() -> None:
    assert cost_usd(PriceConfig(input=0.15, output=0.60), 1_000_000, 500_000) == pytest.approx(0.45)
    assert cost_usd(None, 10, 10) == 0.0


def test_burst_turns_the_first_request_limit_into_a_bucket() -> None:
    compiled = compile_limits("key", LimitSpec(requests="10/second; 100/minute", burst=20))
    assert compiled is not None
    assert compiled.bucket == (0.1, 20)
    assert [str(item) for item in compiled.requests] == ["100 per 1 minute"]
    assert compile_limits("key", LimitSpec()) is None


async def test_memory_spend_survives_a_restart_through_its_file(tmp_path: Path) -> None:
    first = MemoryCounters(tmp_path / "spend.json")
    await first.add_spend("team:month:2026-11-01", 1.25, ttl=3600)
    await first.add_spend("team:month:2026-11-01", 0.5, ttl=3600)
    await first.close()
    second = MemoryCounters(tmp_path / "spend.json")
    assert await second.spend("team:month:2026-11-01") == pytest.approx(1.75)


async def test_memory_concurrency_never_goes_below_zero() -> None:
    counters = MemoryCounters()
    assert await counters.enter("k", 1, "lease-1") == (True, 1)
    assert await counters.enter("k", 1, "lease-1") == (False, 1)
    await counters.leave("k", "lease-1")
    await counters.leave("k", "lease-1")
    assert await counters.in_flight("k") == 0


def test_todays_spend_key_and_lifetime_match_the_calendar() -> None:
    from proxy.limits.budgets import spend_ttl

    now = datetime.now(UTC)
    for period in ("day", "week", "month"):
        assert spend_key("k", period) == spend_key("k", period, now)
        assert abs(spend_ttl(period) - spend_ttl(period, now)) <= 2
