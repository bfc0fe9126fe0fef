"""The proxy exports exactly the metrics DESIGN.md names (the dashboard and alert checks in
tests/deploy test against that list, so this ties them to the code)."""

from __future__ import annotations

from proxy.observability.metrics import Metrics

DESIGN_METRICS = {
    "llm_proxy_requests_total",
    "llm_proxy_request_duration_seconds",
    "llm_proxy_time_to_first_token_seconds",
    "llm_proxy_tokens_total",
    "llm_proxy_cache_requests_total",
    "llm_proxy_rate_limited_total",
    "llm_proxy_upstream_errors_total",
    "llm_proxy_route_up",
    "llm_proxy_spend_usd_total",
    "llm_proxy_config_reloads_total",
    "llm_proxy_inflight_requests",
    "llm_proxy_overhead_seconds",
}
OURS = {"llm_proxy_storage_errors_total"}  # added: shared storage failures


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_every_design_metric_is_exported_and_nothing_unlisted() -> None:
    assert exported() == DESIGN_METRICS | OURS


def test_the_deploy_checks_use_the_same_list() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
    from deploy_support import DESIGN_METRICS as deploy_list

    assert set(deploy_list) <= exported()
