"""charts/llm-proxy, the operators' backend: the admin key and the PostgreSQL URL reach the pods
from a Secret (an existing one, or one the chart makes from the values), one replica without
PostgreSQL keeps its SQLite file on a claim, and the guards refuse what cannot work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import Release, helm, install_dry_run, pod_env, proxy_check

SQLITE_URL = "sqlite:////var/lib/llm-proxy/admin.db"


def proxy_container(rel: Release) -> dict[str, Any]:
    deployment = next(
        d
        for d in rel.kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy"
    )
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def proxy_spec(rel: Release) -> dict[str, Any]:
    deployment = next(d for d in rel.kind("Deployment") if d["metadata"]["name"] == "llm-proxy")
    spec: dict[str, Any] = deployment["spec"]
    return spec


def test_admin_is_off_by_default_and_the_policy_says_how_to_turn_it_on() -> None:
    rel = install_dry_run({})
    env = pod_env(proxy_container(rel))
    assert "LLM_PROXY_ADMIN_KEY" not in env and "LLM_PROXY_ADMIN_STORE" not in env
    policy = yaml.safe_load(rel.values["policy"])
    assert policy["admin"]["key"] == "${LLM_PROXY_ADMIN_KEY}"
    assert not rel.kind("PersistentVolumeClaim")


def test_key_and_url_from_the_values_become_a_secret(tmp_path: Path) -> None:
    url = "postgresql://proxy:s3cret@db.example.svc:5432/llm_proxy"
    rel = install_dry_run(
        {"admin": {"enabled": True, "key": "admin-trial-key", "postgresql": {"url": url}}}
    )
    secret = rel.one("Secret", "llm-proxy-admin")
    assert secret["stringData"] == {
        "LLM_PROXY_ADMIN_KEY": "admin-trial-key",
        "LLM_PROXY_ADMIN_STORE": url,
    }
    env = pod_env(proxy_container(rel))
    assert env["LLM_PROXY_ADMIN_KEY"] == {
        "secretKeyRef": {"name": "llm-proxy-admin", "key": "LLM_PROXY_ADMIN_KEY"}
    }
    assert env["LLM_PROXY_ADMIN_STORE"] == {
        "secretKeyRef": {"name": "llm-proxy-admin", "key": "LLM_PROXY_ADMIN_STORE"}
    }
    annotations = proxy_spec(rel)["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations, "a changed admin key rolls the pods"
    assert "admin-trial-key" not in str(rel.kind("Deployment")) and "s3cret" not in rel.notes
    path = tmp_path / "proxy.yaml"
    path.write_text(rel.values["policy"])
    result = proxy_check(path, dict(secret["stringData"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_existing_secrets_for_both() -> None:
    rel = install_dry_run(
        {
            "admin": {
                "enabled": True,
                "existingSecret": "ops-admin",
                "existingSecretKey": "token",
                "postgresql": {"existingSecret": "ops-db", "existingSecretKey": "dsn"},
            },
            "networkPolicy": {"enabled": True, "allowExternalEgress": False},
        }
    )
    assert not rel.kind("Secret")
    env = pod_env(proxy_container(rel))
    assert env["LLM_PROXY_ADMIN_KEY"] == {"secretKeyRef": {"name": "ops-admin", "key": "token"}}
    assert env["LLM_PROXY_ADMIN_STORE"] == {"secretKeyRef": {"name": "ops-db", "key": "dsn"}}
    policy = next(p for p in rel.kind("NetworkPolicy") if p["metadata"]["name"] == "llm-proxy")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert 5432 in ports
    assert "ops-admin" in rel.notes and "PostgreSQL" in rel.notes


def test_one_replica_keeps_sqlite_on_a_claim() -> None:
    rel = install_dry_run(
        {"replicaCount": 1, "admin": {"enabled": True, "existingSecret": "ops-admin"}}
    )
    container = proxy_container(rel)
    assert pod_env(container)["LLM_PROXY_ADMIN_STORE"] == SQLITE_URL
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["admin-data"] == "/var/lib/llm-proxy"
    volumes = {v["name"]: v for v in proxy_spec(rel)["template"]["spec"]["volumes"]}
    claim = rel.one("PersistentVolumeClaim", "llm-proxy-admin")
    assert volumes["admin-data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert proxy_spec(rel)["strategy"] == {"type": "Recreate"}, "one writer of the file at a time"
    ephemeral = install_dry_run(
        {
            "replicaCount": 1,
            "admin": {"enabled": True, "key": "k", "sqlite": {"persistence": {"enabled": False}}},
        }
    )
    volumes = {v["name"]: v for v in proxy_spec(ephemeral)["template"]["spec"]["volumes"]}
    assert volumes["admin-data"] == {"name": "admin-data", "emptyDir": {}}
    assert "lost with the pod" in ephemeral.notes


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"admin": {"enabled": True}}, "set admin.existingSecret"),
        ({"admin": {"enabled": True, "key": "a", "existingSecret": "b"}}, "only one of admin.key"),
        (
            {
                "admin": {
                    "enabled": True,
                    "key": "a",
                    "postgresql": {"url": "postgresql://x/y", "existingSecret": "s"},
                }
            },
            "only one of url and existingSecret",
        ),
        ({"admin": {"enabled": True, "key": "a"}}, "more than one replica"),
        (
            {"replicaCount": 1, "admin": {"enabled": True, "key": "a"}, "policy": "models: {}\n"},
            "${LLM_PROXY_ADMIN_KEY}",
        ),
        ({"admin": {"enabled": True, "key": "a", "postgresql": {"url": "mysql://x/y"}}}, "url"),
    ],
)
def test_admin_guards_fail_at_install(values: dict[str, Any], message: str) -> None:
    helm_python = helm()
    with pytest.raises(helm_python.HelmError) as failure:
        install_dry_run(values)
    assert message in str(failure.value)
