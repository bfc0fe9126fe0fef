"""Prometheus metrics, one registry per gateway (no module state); names and labels are listed
in the README (Observability) and docs/semantics.md (metric labels)."""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

# 5 s is a bucket edge: the p95 latency alert compares against it
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 15, 30, 60, 120, 300, 600)
FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Tally:
    """A counter or gauge child's changes on the request path, kept in a plain number and
    added to the child when /metrics (or `snapshot`) is read: `inc` here is an addition,
    where the child's takes a lock and checks its type every call."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def dec(self, amount: float = 1.0) -> None:
        self.pending -= amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class HistogramTally:
    """A histogram child's observations kept as bucket counts and a sum, added to the child's
    own buckets at the next flush (the same buckets `observe` would have counted: the first
    bound at or above the value)."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        total, self.counts, self.total = self.total, [0] * len(counts), 0.0
        self.child._sum.inc(total)
        for bucket, count in zip(self.child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


@dataclass(slots=True)
class RequestSeries:
    """The labelled children a request's end touches (the token and first-token series made
    on first use, so a label set appears in /metrics only once it has counted something)."""

    requests: Any
    duration: Any
    overhead: Any
    model: str
    route: str
    tokens: tuple[Any, Any] | None = None
    first_token: Any = None


class Metrics:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off: the per-request series are not recorded at all
        # With several server processes, prometheus_client's multiprocess mode keeps the
        # values in PROMETHEUS_MULTIPROC_DIR and /metrics adds them up across processes.
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "llm_proxy_requests",
            "Requests answered",
            ["model", "route", "status", "api"],
            registry=r,
        )
        self.duration = Histogram(
            "llm_proxy_request_duration_seconds",
            "Time from request to the end of the answer",
            ["model", "route", "api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "llm_proxy_time_to_first_token_seconds",
            "Time to the first streamed chunk",
            ["model", "route"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llm_proxy_tokens",
            "Tokens reported by upstreams",
            ["model", "route", "kind"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "llm_proxy_upstream_errors", "Failed upstream attempts", ["route", "reason"], registry=r
        )
        self.inflight = Gauge(
            "llm_proxy_inflight_requests",
            "Requests in progress",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.route_up = Gauge(
            "llm_proxy_route_up",
            "1 when the route takes traffic, 0 when its breaker is open",
            ["route"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.overhead = Histogram(
            "llm_proxy_overhead_seconds",
            "Time spent in the proxy itself (total - upstream)",
            ["model"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.cache_requests = Counter(
            "llm_proxy_cache_requests", "Cache lookups by result", ["result"], registry=r
        )
        self.rate_limited = Counter(
            "llm_proxy_rate_limited",
            "Requests refused or routes skipped by a limit",
            ["scope"],
            registry=r,
        )
        self.spend = Counter(
            "llm_proxy_spend_usd", "Spend in USD from priced usage", ["key", "model"], registry=r
        )
        self.storage_errors = Counter(
            "llm_proxy_storage_errors", "Shared storage failures", ["store"], registry=r
        )
        self.reloads = Counter("llm_proxy_config_reloads", "Policy reloads", ["result"], registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._series: dict[tuple[str, str, str, int], RequestSeries] = {}
        # the request path's counts, added to their children when read; with several
        # processes they go straight to the shared files instead, which other processes read
        self._tallies: dict[tuple[Any, ...], Tally | HistogramTally] = {}
        self.in_flight = self.tally(self.inflight)

    def tally(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """The labelled child behind a tally (cached): what the request path counts on."""
        child = self.child(metric, *labels) if labels else metric
        if self.multiprocess:
            return child
        key = (id(metric), *labels)
        tally = self._tallies.get(key)
        if tally is None:
            kind = HistogramTally if isinstance(metric, Histogram) else Tally
            tally = self._tallies[key] = kind(child)
        return tally

    def flush(self) -> None:
        """Every tally into its child: before anything reads the registry."""
        for tally in self._tallies.values():
            tally.flush()

    def set_route_up(self, label: str, up: bool) -> None:
        self.child(self.route_up, label).set(1.0 if up else 0.0)

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """The labelled child, cached: `labels()` takes a lock and builds a dict each call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, api: str, model: str, route: str, status: int) -> RequestSeries:
        """The series one request ends in, found with one look-up (cached per label set)."""
        key = (api, model, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = RequestSeries(
                self.tally(self.requests, model, route, str(status), api),
                self.tally(self.duration, model, route, api),
                self.tally(self.overhead, model),
                model,
                route,
            )
        return series

    def count_tokens(self, series: RequestSeries, prompt: int, completion: int) -> None:
        if series.tokens is None:
            series.tokens = (
                self.tally(self.tokens, series.model, series.route, "prompt"),
                self.tally(self.tokens, series.model, series.route, "completion"),
            )
        series.tokens[0].inc(prompt)
        series.tokens[1].inc(completion)

    def observe_first_token(self, series: RequestSeries, seconds: float) -> None:
        if series.first_token is None:
            series.first_token = self.tally(self.first_token, series.model, series.route)
        series.first_token.observe(seconds)

    def exposition(self) -> bytes:
        self.flush()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every sample as plain data, for `Gateway.stats()`."""
        self.flush()
        out: dict[str, list[dict[str, Any]]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                out.setdefault(sample.name, []).append(
                    {"labels": dict(sample.labels), "value": sample.value}
                )
        return out
