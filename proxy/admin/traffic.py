"""Recent traffic for the overview: request and error rates and latency percentiles over the
last minutes, from one-second buckets in a fixed ring, fed by the settlement listener.

Constant memory whatever the request rate: a bucket holds counts and a latency histogram
with geometric edges (each 25 % wider than the last), so a percentile is known to within
about 12 %. Nothing here touches a database.
"""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RING_SECONDS = 600  # how far back the overview can look
SMALLEST = 0.0005  # seconds: the first latency edge
GROWTH = 1.25
EDGES = tuple(SMALLEST * GROWTH**n for n in range(64))  # up to ~800 s


@dataclass(slots=True)
class _Second:
    second: int
    requests: int = 0
    errors: int = 0  # 5xx: the proxy or its upstreams failed
    rejected: int = 0  # 4xx: refused (auth, limits, bad requests)
    latency: array[int] = field(default_factory=lambda: array("I", bytes(4 * (len(EDGES) + 1))))


class RecentTraffic:
    def __init__(self, seconds: int = RING_SECONDS, clock: Callable[[], float] = time.time):
        self.seconds = seconds
        self.clock = clock
        self._ring: list[_Second | None] = [None] * seconds

    def record(self, status: int, duration: float) -> None:
        second = int(self.clock())
        slot = second % self.seconds
        bucket = self._ring[slot]
        if bucket is None or bucket.second != second:
            bucket = self._ring[slot] = _Second(second)
        bucket.requests += 1
        if status >= 500:
            bucket.errors += 1
        elif status >= 400:
            bucket.rejected += 1
        bucket.latency[bisect_left(EDGES, duration)] += 1

    def summary(self, window: int) -> dict[str, Any]:
        """Totals, rates and percentiles over the last `window` seconds, and per minute."""
        window = max(1, min(window, self.seconds))
        now = int(self.clock())
        seconds = [b for b in self._ring if b is not None and now - window < b.second <= now]
        requests = sum(b.requests for b in seconds)
        errors = sum(b.errors for b in seconds)
        histogram = [sum(column) for column in zip(*(b.latency for b in seconds), strict=True)]
        return {
            "window_seconds": window,
            "requests": requests,
            "requests_per_second": round(requests / window, 3),
            "errors": errors,
            "rejected": sum(b.rejected for b in seconds),
            "error_rate": round(errors / requests, 4) if requests else None,
            "latency_ms": {
                name: percentile_ms(histogram, q) for name, q in (("p50", 0.5), ("p95", 0.95))
            },
            "per_minute": _per_minute(seconds, now, window),
        }


def percentile_ms(histogram: list[int], quantile: float) -> float | None:
    """The bucket holding that share of the requests, as the geometric middle of its edges."""
    total = sum(histogram)
    if not total:
        return None
    wanted, seen, index = quantile * total, 0, 0
    for index, count in enumerate(histogram):  # noqa: B007 (the bucket found is used below)
        seen += count
        if seen >= wanted:
            break
    upper = EDGES[min(index, len(EDGES) - 1)]
    lower = EDGES[index - 1] if index > 0 else 0.0
    middle = math.sqrt(lower * upper) if lower else upper / 2
    return round(middle * 1000, 3)


def _per_minute(seconds: list[_Second], now: int, window: int) -> list[dict[str, Any]]:
    """Requests and errors per whole minute of the window, oldest first (for a chart)."""
    minutes: dict[int, list[int]] = {}
    for bucket in seconds:
        counts = minutes.setdefault(bucket.second // 60 * 60, [0, 0, 0])
        counts[0] += bucket.requests
        counts[1] += bucket.errors
        counts[2] += bucket.rejected
    first = (now - window + 1) // 60 * 60
    return [
        {"minute": start, "requests": c[0], "errors": c[1], "rejected": c[2]}
        for start in range(first, now + 1, 60)
        for c in [minutes.get(start, [0, 0, 0])]
    ]
