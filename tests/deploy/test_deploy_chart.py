"""charts/llm-proxy: Helm's own library (helm-python-sdk) lints it and installs it with
--dry-run=client (schema, templates, NOTES.txt) for the default values and for
ci/all-on-values.yaml; kubernetes-validate checks every rendered object; then the rules the
deployment depends on: probes, security, the policy mount, grace period, wiring."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import (
    ALERTS,
    APT_TOOLS,
    CHART,
    DASHBOARD,
    PIP_TOOLS,
    Release,
    chart_values,
    find_tool,
    helm,
    install_dry_run,
    pod_env,
    proxy_check,
    run,
)

KUBE_VERSIONS = ("1.30.0", "1.34.0")  # schemas the rendered objects are validated against
# lint renders with these capabilities: 1.27 (the chart's minimum) takes the exec preStop
LINT_KUBE_VERSIONS = ("1.27.0", *KUBE_VERSIONS)
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
CI_FILES = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
DEFAULT_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def variants() -> dict[str, dict[str, Any]]:
    """Value sets installed in these tests: the defaults, each ci/ file, and variants that
    take the branches the all-on file cannot (they exclude each other)."""
    sets: dict[str, dict[str, Any]] = {"default": {}}
    for name in CI_FILES:
        sets[name] = chart_values(name)
    sets["existing-secret+redis-url+one-replica"] = {
        "replicaCount": 1,
        "secrets": {"existingSecret": "llm-proxy-keys"},
        "redis": {"url": "redis://redis.example.svc:6379/0"},
    }
    sets["redis-secret+cpu-worker"] = {
        "redis": {"existingSecret": "redis-url", "existingSecretKey": "url"},
        "worker": {
            "enabled": True,
            "device": "cpu",
            "gpu": {"count": 0},
            "models": [{"name": "tiny", "model": "/models/tiny"}],
        },
        "networkPolicy": {"enabled": True, "allowExternalEgress": False},
        "preStopSleepSeconds": 5,
    }
    return sets


VARIANTS = variants()
_RELEASES: dict[str, Release] = {}


def release(variant: str) -> Release:
    if variant not in _RELEASES:
        _RELEASES[variant] = install_dry_run(VARIANTS[variant])
    return _RELEASES[variant]


def proxy_deployment(rel: Release) -> dict[str, Any]:
    return next(
        d
        for d in rel.kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "proxy"
    )


def proxy_container(rel: Release) -> dict[str, Any]:
    containers = proxy_deployment(rel)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "llm-proxy")


def policy_of(rel: Release) -> dict[str, Any]:
    configmap = next(c for c in rel.kind("ConfigMap") if "proxy.yaml" in c.get("data", {}))
    data: dict[str, Any] = yaml.safe_load(configmap["data"]["proxy.yaml"])
    return data


# ---- lint and install -----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", *CI_FILES])
def test_helm_lint_strict(variant: str) -> None:
    helm_python = helm()
    for kube in LINT_KUBE_VERSIONS:
        report = helm_python.lint(
            str(CHART), VARIANTS[variant], strict=True, kube_version=f"v{kube}"
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def test_helm_lint_can_fail(tmp_path: Path) -> None:
    helm_python = helm()
    report = helm_python.lint(str(CHART), {"replicaCount": "two"}, strict=True)
    assert report["errors"] or [m for m in report["messages"] if m["severity"] >= 3]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_rendered_objects_validate_against_kubernetes_schemas(variant: str) -> None:
    validator = pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate is not installed: {PIP_TOOLS}"
    )
    rel = release(variant)
    assert rel.manifests
    for manifest in rel.manifests:
        if manifest["kind"] in CRD_KINDS:
            continue  # no CRD schemas offline: checked by test_operator_objects
        for kube in KUBE_VERSIONS:
            try:
                validator.validate(manifest, kube, strict=True)
            except validator.ValidationError as exc:
                name = f"{manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{variant}: {name} invalid for Kubernetes {kube}: {exc}")


def test_kubernetes_validation_can_fail() -> None:
    validator = pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate is not installed: {PIP_TOOLS}"
    )
    broken = copy.deepcopy(proxy_deployment(release("default")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, KUBE_VERSIONS[0], strict=True)


def test_all_on_turns_every_option_on() -> None:
    """Every `enabled` switch of values.yaml is true in ci/all-on-values.yaml, and every
    top-level key is set there."""
    all_on = chart_values("all-on-values.yaml")

    def switches(tree: dict[str, Any], path: str = "") -> list[str]:
        found = []
        for key, value in tree.items():
            if key == "enabled":
                found.append(path)
            elif isinstance(value, dict):
                found += switches(value, f"{path}.{key}" if path else key)
        return found

    for path in switches(DEFAULT_VALUES):
        node: Any = all_on
        for part in path.split("."):
            node = node[part]
        assert node["enabled"] is True, f"{path}.enabled is not on in all-on-values.yaml"
    skipped = {"nameOverride", "fullnameOverride"}
    missing = set(DEFAULT_VALUES) - set(all_on) - skipped
    assert not missing, f"all-on-values.yaml leaves out {sorted(missing)}"


def test_all_on_renders_every_template() -> None:
    kinds = {m["kind"] for m in release("all-on-values.yaml").manifests}
    assert kinds == {
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Service",
        "Deployment",
        "PersistentVolumeClaim",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
        "ServiceMonitor",
        "PrometheusRule",
        "Pod",
    }


# ---- values.schema.json ---------------------------------------------------------------------


def test_values_schema_is_draft7_and_accepts_the_shipped_values() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft7Validator(SCHEMA)
    for values in [DEFAULT_VALUES, *(chart_values(n) for n in CI_FILES)]:
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(values)]
        assert not errors, errors


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"image": {"tagg": "1.0"}}, "tagg"),
        ({"policy": {"server": {}}}, "policy"),
        ({"policy": ""}, "policy"),
        ({"service": {"type": "Ingress"}}, "type"),
        ({"worker": {"enabled": True, "models": [{"model": "x"}]}}, "name"),
        ({"worker": {"models": [{"name": "Big_Model", "model": "x"}]}}, "name"),
        ({"secrets": {"env": {"BAD-NAME": "x"}}}, "BAD-NAME"),
        ({"metrics": {"serviceMonitor": {"interval": "thirty"}}}, "interval"),
    ],
)
def test_bad_values_fail_at_install(values: dict[str, Any], message: str) -> None:
    helm_python = helm()
    with pytest.raises(helm_python.HelmError) as failure:
        install_dry_run(values)
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"policy": "server: [unclosed"}, "policy: not valid YAML"),
        ({"policy": "- a list\n"}, "policy: not valid YAML"),
        ({"policy": "server:\n  host: 127.0.0.1\n"}, "use 0.0.0.0"),
        ({"policy": "server:\n  drain_timeout: soon\n"}, "drain_timeout"),
        ({"redis": {"url": "redis://a:6379/0", "enabled": True}}, "only one of"),
        ({"worker": {"enabled": True}}, "worker.models"),
        (
            {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
            "targetCPUUtilizationPercentage or metrics",
        ),
    ],
)
def test_template_guards_fail_at_install(values: dict[str, Any], message: str) -> None:
    helm_python = helm()
    with pytest.raises(helm_python.HelmError) as failure:
        install_dry_run(values)
    assert message in str(failure.value)


# ---- the policy ----------------------------------------------------------------------------


def check_env(rel: Release) -> dict[str, str]:
    """What the pods' environment gives `${VAR}`: the chart Secret's keys (or fakes for an
    existing Secret's), plain env values and the worker URLs."""
    env: dict[str, str] = {"OPENAI_API_KEY": "sk-test", "HUGGINGFACE_API_KEY": "hf_test"}
    for secret in rel.kind("Secret"):
        env.update(secret.get("stringData", {}))
    for name, value in pod_env(proxy_container(rel)).items():
        if isinstance(value, str):
            env[name] = value
    env.pop("LLM_PROXY_CONFIG", None)
    return env


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_configmap_policy_passes_llm_proxy_check(variant: str, tmp_path: Path) -> None:
    rel = release(variant)
    configmap = next(c for c in rel.kind("ConfigMap") if "proxy.yaml" in c.get("data", {}))
    assert configmap["data"]["proxy.yaml"] == rel.values["policy"], "the policy, verbatim"
    path = tmp_path / "proxy.yaml"
    path.write_text(configmap["data"]["proxy.yaml"])
    result = proxy_check(path, check_env(rel))
    assert result.returncode == 0, result.stdout + result.stderr


def test_policy_check_can_fail(tmp_path: Path) -> None:
    policy = DEFAULT_VALUES["policy"].replace("type: openai", "type: openia")
    path = tmp_path / "proxy.yaml"
    path.write_text(policy)
    assert proxy_check(path).returncode == 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_policy_is_mounted_as_a_directory(variant: str) -> None:
    rel = release(variant)
    spec = proxy_deployment(rel)["spec"]["template"]["spec"]
    container = proxy_container(rel)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    policy = mounts["policy"]
    assert policy["mountPath"] == "/etc/llm-proxy" and policy.get("readOnly") is True
    for mount in container["volumeMounts"]:
        assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    volumes = {v["name"]: v for v in spec["volumes"]}
    configmap_name = volumes["policy"]["configMap"]["name"]
    assert "items" not in volumes["policy"]["configMap"]
    assert rel.one("ConfigMap", configmap_name)["data"]["proxy.yaml"]
    assert pod_env(container)["LLM_PROXY_CONFIG"] == "/etc/llm-proxy/proxy.yaml"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checksum_annotation_only_when_hot_reload_is_off(variant: str) -> None:
    rel = release(variant)
    reload = (policy_of(rel).get("server") or {}).get("reload", True)
    annotations = proxy_deployment(rel)["spec"]["template"]["metadata"].get("annotations", {})
    assert ("checksum/config" in annotations) is (not reload)
    assert ("checksum/secret" in annotations) is bool(rel.kind("Secret"))
    assert "checksum/config" not in proxy_deployment(rel)["metadata"].get("annotations", {})


def test_checksum_follows_the_policy() -> None:
    off = "server:\n  reload: false\nmodels: {}\n"
    first = install_dry_run({"policy": off})
    second = install_dry_run({"policy": off + "# edited\n"})
    annotation = "checksum/config"
    a = proxy_deployment(first)["spec"]["template"]["metadata"]["annotations"][annotation]
    b = proxy_deployment(second)["spec"]["template"]["metadata"]["annotations"][annotation]
    assert a != b


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_grace_period_is_prestop_plus_drain_plus_ten(variant: str) -> None:
    rel = release(variant)
    server = policy_of(rel).get("server") or {}
    drain = math.ceil(server.get("drain_timeout", 30))
    sleep = rel.values["preStopSleepSeconds"]
    spec = proxy_deployment(rel)["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] == sleep + drain + 10
    pre_stop = proxy_container(rel)["lifecycle"]["preStop"]
    assert pre_stop.get("sleep", {}).get("seconds") == sleep or pre_stop["exec"]["command"] == [
        "sleep",
        str(sleep),
    ]
    assert str(sleep + drain + 10) in rel.notes


# ---- the proxy's pods -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_probes_and_port(variant: str) -> None:
    rel = release(variant)
    container = proxy_container(rel)
    port = (policy_of(rel).get("server") or {}).get("port", 8080)
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/liveness", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/readiness", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/health/liveness"
    assert container["resources"]["requests"]["cpu"], "CPU autoscaling needs a CPU request"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_restricted_security_and_writable_volumes(variant: str) -> None:
    rel = release(variant)
    for deployment in rel.kind("Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
    container = proxy_container(rel)
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/cache/llm-proxy", "/tmp"} <= mounted
    volumes = {v["name"]: v for v in proxy_deployment(rel)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cache"]["emptyDir"]["sizeLimit"]
    assert pod_env(container)["XDG_CACHE_HOME"] == "/var/cache/llm-proxy"
    # the disk cache must land in the writable volume (relative paths: the image's WORKDIR)
    cache_path = str((policy_of(rel).get("cache") or {}).get("path", ".cache/llm-proxy"))
    assert not cache_path.startswith("/") or cache_path.startswith("/var/cache/llm-proxy")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_services_select_their_pods(variant: str) -> None:
    rel = release(variant)
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in rel.kind("Deployment")]
    for deployment in rel.kind("Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert "app.kubernetes.io/version" not in selector, "selectors are immutable"
    for service in rel.kind("Service"):
        selector = service["spec"]["selector"]
        matched = [labels for labels in pods if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{service['metadata']['name']} selects {len(matched)} pods"
        target = service["spec"]["ports"][0]["targetPort"]
        assert target in ("http", "redis")


def test_secret_env_and_existing_secret() -> None:
    all_on = release("all-on-values.yaml")
    secret = all_on.one("Secret")
    assert set(secret["stringData"]) == set(all_on.values["secrets"]["env"])
    assert proxy_container(all_on)["envFrom"][0] == {
        "secretRef": {"name": secret["metadata"]["name"]}
    }
    existing = release("existing-secret+redis-url+one-replica")
    assert not existing.kind("Secret")
    assert proxy_container(existing)["envFrom"] == [{"secretRef": {"name": "llm-proxy-keys"}}]
    default = release("default")
    assert "envFrom" not in proxy_container(default) and not default.kind("Secret")


def test_redis_url_for_each_source() -> None:
    env = pod_env(proxy_container(release("existing-secret+redis-url+one-replica")))
    assert env["REDIS_URL"] == "redis://redis.example.svc:6379/0"
    env = pod_env(proxy_container(release("redis-secret+cpu-worker")))
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}
    all_on = release("all-on-values.yaml")
    service = all_on.one("Service", "llm-proxy-redis")
    assert pod_env(proxy_container(all_on))["REDIS_URL"] == "redis://llm-proxy-redis:6379/0"
    assert service["spec"]["ports"][0]["port"] == 6379
    assert "REDIS_URL" not in pod_env(proxy_container(release("default")))


def test_replicas_hpa_and_pdb() -> None:
    default = release("default")
    assert proxy_deployment(default)["spec"]["replicas"] == 2
    assert default.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not default.kind("HorizontalPodAutoscaler")
    assert "no Redis" in default.notes
    single = release("existing-secret+redis-url+one-replica")
    assert not single.kind("PodDisruptionBudget"), "one replica: a PDB would block drains"
    all_on = release("all-on-values.yaml")
    assert "replicas" not in proxy_deployment(all_on)["spec"], "the HPA owns replicas"
    hpa = all_on.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == proxy_deployment(all_on)["metadata"]["name"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert all_on.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_operator_objects_carry_the_selector_label() -> None:
    rel = release("all-on-values.yaml")
    monitor = rel.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    service = rel.one("Service", "llm-proxy")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["ai"]
    rule = rel.one("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text()), "the rules, verbatim"


def test_prometheus_rule_spec_passes_promtool(tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    if promtool is None:
        pytest.skip(f"promtool is not installed: {APT_TOOLS}")
    spec = release("all-on-values.yaml").one("PrometheusRule")["spec"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap() -> None:
    rel = release("all-on-values.yaml")
    configmap = rel.one("ConfigMap", "llm-proxy-dashboards")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "llm-proxy"
    assert json.loads(configmap["data"]["llm-proxy.json"]) == json.loads(DASHBOARD.read_text())


def test_network_policies() -> None:
    rel = release("all-on-values.yaml")
    policies = {p["metadata"]["name"]: p["spec"] for p in rel.kind("NetworkPolicy")}
    assert set(policies) == {"llm-proxy", "llm-proxy-redis", "llm-proxy-worker"}
    proxy = policies["llm-proxy"]
    assert proxy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(proxy["ingress"][0]["from"]) == 2
    egress_ports = {p["port"] for rule in proxy["egress"] for p in rule.get("ports", [])}
    assert {53, 6379, 9000, 443} <= egress_ports
    open_egress = release("default")
    assert not open_egress.kind("NetworkPolicy")


# ---- workers ---------------------------------------------------------------------------------


def workers(rel: Release) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["labels"]["llm-proxy.io/worker"]: d
        for d in rel.kind("Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    }


def test_worker_deployments_request_gpus() -> None:
    rel = release("all-on-values.yaml")
    found = workers(rel)
    assert set(found) == {"tiny", "qwen"}
    qwen = found["qwen"]["spec"]
    container = qwen["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"] == ["llm-proxy", "worker"]
    args = container["args"]
    assert args[args.index("--model") + 1] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert args[args.index("--device") + 1] == "cuda"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert qwen["replicas"] == 2 and qwen["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert qwen["template"]["spec"]["runtimeClassName"] == "nvidia"
    tolerations = qwen["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert container["startupProbe"]["httpGet"]["path"] == "/health/readiness"
    env = pod_env(container)
    assert env["WORKER_API_KEY"]["secretKeyRef"]["key"] == "WORKER_API_KEY"
    assert env["HF_HOME"] == "/models/hf" and env["HF_HUB_OFFLINE"] == "1"
    volumes = {v["name"]: v for v in qwen["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "llm-proxy-models"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    tiny = found["tiny"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in tiny["resources"].get("limits", {})


def test_proxy_finds_each_worker_by_its_variable() -> None:
    rel = release("all-on-values.yaml")
    env = pod_env(proxy_container(rel))
    for name, deployment in workers(rel).items():
        service = rel.one("Service", deployment["metadata"]["name"])
        port = service["spec"]["ports"][0]["port"]
        variable = f"LLM_PROXY_WORKER_{name.upper()}_URL"
        assert env[variable] == f"http://{service['metadata']['name']}:{port}"
        assert f"${variable}" in rel.notes
    assert "${LLM_PROXY_WORKER_TINY_URL}" in rel.values["policy"]


def test_cpu_worker_has_no_gpu_and_no_pvc() -> None:
    rel = release("redis-secret+cpu-worker")
    container = workers(rel)["tiny"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert not rel.kind("PersistentVolumeClaim")
    assert "WORKER_API_KEY" not in pod_env(container), "no Secret configured: no key refs"


# ---- NOTES.txt and helm test ------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_notes_give_the_base_url(variant: str) -> None:
    rel = release(variant)
    service = rel.one("Service", proxy_deployment(rel)["metadata"]["name"])
    port = service["spec"]["ports"][0]["port"]
    url = f"http://{service['metadata']['name']}.ai.svc.cluster.local:{port}/v1"
    assert url in rel.notes
    if rel.values["ingress"]["enabled"]:
        assert "https://llm.example.com/v1" in rel.notes


def test_helm_test_pod_targets_the_service() -> None:
    rel = release("default")
    pod = rel.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = pod_env(pod["spec"]["containers"][0])
    service = rel.one("Service", proxy_deployment(rel)["metadata"]["name"])
    assert env["LLM_PROXY_URL"] == (
        f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )
    assert pod["spec"]["containers"][0]["image"] == proxy_container(rel)["image"]
