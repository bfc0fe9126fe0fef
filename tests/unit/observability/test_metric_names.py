"""The proxy exports exactly the metrics the README names (the dashboard and alert checks in
tests/deploy test against that same list, so this ties them to the code)."""

from __future__ import annotations

import sys
from pathlib import Path

from proxy.observability.metrics import Metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
from deploy_support import CONTRACT_METRICS

OURS = {"llm_proxy_storage_errors_total"}  # added: shared storage failures


def exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_every_design_metric_is_exported_and_nothing_unlisted() -> None:
    assert exported() == set(CONTRACT_METRICS) | OURS
