"""Alert rules (promtool, promql-parser), compose's Prometheus config, the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    ALERTS,
    APT_TOOLS,
    CHART,
    COMPOSE,
    DASHBOARD,
    KNOWN_SERIES,
    PIP_TOOLS,
    load_compose,
    materialize,
    parse_mount,
    require_tool,
    run,
)

HERE = Path(__file__).resolve().parent


def promtool() -> str:
    return require_tool("promtool", APT_TOOLS)


def promql() -> Any:
    return pytest.importorskip(
        "promql_parser", reason=f"promql-parser is not installed: {PIP_TOOLS}"
    )


def metric_names(expr: str) -> set[str]:
    parser = promql()
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, parser.VectorSelector) and node.name:
            names.add(node.name)

    parser.walk(parser.parse(expr), visit)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


# ---- alert rules ----------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = run([promtool(), "check", "rules", str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yaml"
    broken.write_text(ALERTS.read_text().replace("> 0.10", "> > 0.10", 1))
    assert run([promtool(), "check", "rules", str(broken)]).returncode != 0


def test_promtool_unit_tests_of_the_alerts() -> None:
    """Thresholds, `for:` durations, labels and annotations (tests/deploy/alerts_test.yaml)."""
    result = run([promtool(), "test", "rules", str(HERE / "alerts_test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_operators_questions() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {
        "LLMProxyHighErrorRate",  # error rate > 10 %
        "LLMProxyRouteDegraded",  # availability < 95 %
        "LLMProxyHighLatencyP95",  # p95 > 5 s
        "LLMProxyRateLimitSpike",
        "LLMProxyAuthFailureSpike",
        "LLMProxyConfigReloadFailed",
        "LLMProxyDown",
    } <= names
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_rules_use_only_metrics_the_proxy_exports() -> None:
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used and used <= KNOWN_SERIES, f"{rule['alert']}: {sorted(used - KNOWN_SERIES)}"


def test_chart_ships_the_same_rules_and_dashboard() -> None:
    """charts/llm-proxy/files/ links to config/: one source for compose and the chart."""
    assert (CHART / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes()
    chart_dashboard = CHART / "files" / "dashboards" / "llm-proxy.json"
    assert chart_dashboard.read_bytes() == DASHBOARD.read_bytes()


# ---- compose's Prometheus -----------------------------------------------------------------


def test_promtool_checks_compose_prometheus_config(tmp_path: Path) -> None:
    """The config as the container sees it: every bind mount copied to its container path."""
    prometheus = load_compose()["services"]["prometheus"]
    mounts = [parse_mount(v)[:2] for v in prometheus["volumes"]]
    materialize([m for m in mounts if m[0].startswith(".")], COMPOSE.parent, tmp_path)
    flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    config = tmp_path / flag.split("=", 1)[1].lstrip("/")
    result = run([promtool(), "check", "config", str(config)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(rules())} rules found" in output, "the rules must load: " + output


# ---- the Grafana dashboard ------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_is_provisionable() -> None:
    board = dashboard()
    assert board["id"] is None, "a fixed id breaks imports"
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"model", "route"} <= set(variables)


def test_every_panel_uses_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]
            metric, label = re.fullmatch(
                r"label_values\((\w+), (\w+)\)", variable["definition"]
            ).groups()  # type: ignore[union-attr]
            assert metric in KNOWN_SERIES and label == variable["name"]


def grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$model", ".*")
        .replace("$route", ".*")
    )


def test_dashboard_queries_parse_and_use_known_metrics() -> None:
    seen: set[str] = set()
    for panel in panels():
        for target in panel["targets"]:
            used = metric_names(grafana_to_promql(target["expr"]))
            assert used <= KNOWN_SERIES, f"{panel['title']}: {sorted(used - KNOWN_SERIES)}"
            seen |= used
    # the panels the observability issue asks for
    for metric in (
        "llm_proxy_requests_total",
        "llm_proxy_request_duration_seconds_bucket",
        "llm_proxy_time_to_first_token_seconds_bucket",
        "llm_proxy_tokens_total",
        "llm_proxy_spend_usd_total",
        "llm_proxy_cache_requests_total",
        "llm_proxy_route_up",
        "llm_proxy_rate_limited_total",
    ):
        assert metric in seen, f"no panel shows {metric}"


def test_promql_check_can_fail() -> None:
    parser = promql()
    with pytest.raises(ValueError):
        parser.parse("sum(rate(llm_proxy_requests_total[5m])")
