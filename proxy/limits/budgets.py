"""Budget periods (calendar, UTC) and what a request cost."""

from __future__ import annotations

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
    return f"{key_name}:{period}:{period_start(period, now):%Y-%m-%d}"


def spend_ttl(period: str, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    return int((period_end(period, now) - now).total_seconds()) + TTL_MARGIN


def cost_usd(price: PriceConfig | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
