"""Budget periods (calendar, UTC) and what a request cost."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta

from proxy.config import PriceConfig

TTL_MARGIN = 86400


def period_start(period: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: str, now: datetime | None = None) -> datetime:
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def spend_key(key_name: str, period: str, now: datetime | None = None) -> str:
    if now is None:
        return f"{key_name}:{period}:{_period_of_today(period)[0]}"
    return f"{key_name}:{period}:{period_start(period, now):%Y-%m-%d}"


def spend_ttl(period: str, now: datetime | None = None) -> int:
    if now is None:
        return int(_period_of_today(period)[1] - time.time()) + TTL_MARGIN
    return int((period_end(period, now) - now).total_seconds()) + TTL_MARGIN


@functools.lru_cache(maxsize=8)
def _period_for_day(period: str, day: int) -> tuple[str, float]:
    """(the period's first day, when it ends in epoch seconds) for a UTC day number."""
    noon = datetime.fromtimestamp(day * 86400 + 43200, UTC)
    return f"{period_start(period, noon):%Y-%m-%d}", period_end(period, noon).timestamp()


def _period_of_today(period: str) -> tuple[str, float]:
    """The same, cached per UTC day: on every request this is two dict lookups, not dates."""
    return _period_for_day(period, int(time.time() // 86400))


def cost_usd(price: PriceConfig | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
