"""The request path's metric tallies: what /metrics shows after a flush is exactly what the
prometheus children would show had each value gone to them directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram

from proxy.observability.metrics import LATENCY_BUCKETS, HistogramTally, Metrics, Tally

VALUES = [0.0, 0.05, 0.0500001, 0.3, 1, 2.5, 5, 5.0000001, 299.9, 600, 601, 1e9, float("inf")]


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(name) and not sample.name.endswith("_created"):
                out[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return out  # type: ignore[return-value]


def test_a_histogram_tally_counts_each_value_in_the_bucket_observe_would() -> None:
    metrics = Metrics()
    direct_registry = CollectorRegistry()
    direct = Histogram("llm_proxy_request_duration_seconds", "same", ["model", "route", "api"],
                       buckets=LATENCY_BUCKETS, registry=direct_registry)  # fmt: skip
    series = metrics.request("chat", "m", "up/m", 200)
    assert isinstance(series.duration, HistogramTally)
    for value in VALUES:
        series.duration.observe(value)
        direct.labels("m", "up/m", "chat").observe(value)
    name = "llm_proxy_request_duration_seconds"
    metrics.flush()
    assert _samples(metrics.registry, name) == _samples(direct_registry, name)
    metrics.flush()  # a second flush adds nothing
    assert _samples(metrics.registry, name) == _samples(direct_registry, name)


def test_counts_reach_metrics_when_it_is_read_and_not_before() -> None:
    metrics = Metrics()
    series = metrics.request("chat", "m", "up/m", 200)
    assert isinstance(series.requests, Tally)
    series.requests.inc()
    series.requests.inc()
    metrics.count_tokens(series, 7, 3)
    metrics.in_flight.inc()
    metrics.in_flight.inc()
    metrics.in_flight.dec()
    value = metrics.registry.get_sample_value
    labels = {"model": "m", "route": "up/m", "status": "200", "api": "chat"}
    assert value("llm_proxy_requests_total", labels) == 0  # pending until read
    text = metrics.exposition().decode()
    assert 'llm_proxy_requests_total{api="chat",model="m",route="up/m",status="200"} 2.0' in text
    assert 'llm_proxy_tokens_total{kind="prompt",model="m",route="up/m"} 7.0' in text
    assert "llm_proxy_inflight_requests 1.0" in text
    series.requests.inc()
    stats = metrics.snapshot()["llm_proxy_requests_total"]
    assert [sample["value"] for sample in stats if sample["labels"] == labels] == [3.0]


def test_with_several_processes_the_request_path_writes_the_shared_values_directly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = Metrics()
    series = metrics.request("chat", "m", "up/m", 200)
    assert not isinstance(series.requests, Tally)
    assert not isinstance(series.duration, HistogramTally)
    assert metrics.in_flight is metrics.inflight
