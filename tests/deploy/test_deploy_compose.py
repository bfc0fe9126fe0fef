"""deploy/compose.yaml: the compose spec's JSON Schema (check-jsonschema's vendored copy),
then what the schema cannot know: services, ports, mounts, healthchecks, wiring."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    COMPOSE,
    CONTAINER_POLICY,
    DASHBOARD,
    DOCKERFILE,
    PIP_TOOLS,
    ROOT,
    compose_vars,
    interpolate,
    load_compose,
    parse_dockerfile,
    parse_mount,
    proxy_check,
    require_tool,
    run,
)

DEPLOY = COMPOSE.parent
SERVICES = load_compose()["services"]


def service(name: str) -> dict[str, Any]:
    return dict(SERVICES[name])


def check_compose_schema(path: Path) -> tuple[int, str]:
    tool = require_tool("check-jsonschema", PIP_TOOLS)
    result = run([tool, "--builtin-schema", "vendor.compose-spec", str(path)])
    return result.returncode, result.stdout + result.stderr


def test_compose_spec_schema(tmp_path: Path) -> None:
    code, output = check_compose_schema(COMPOSE)
    assert code == 0, output
    # and once more with ${VAR:-default} replaced by the defaults, as compose would
    interpolated = tmp_path / "compose.yaml"
    interpolated.write_text(interpolate(COMPOSE.read_text()))
    code, output = check_compose_schema(interpolated)
    assert code == 0, output


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    broken = load_compose()
    broken["services"]["llm-proxy"]["healthcheck"]["intervall"] = "10s"
    broken["services"]["redis"]["depends_on"] = {"llm-proxy": {"condition": "service_up"}}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    code, output = check_compose_schema(path)
    assert code != 0 and "intervall" in output


def test_services() -> None:
    assert set(SERVICES) == {"llm-proxy", "redis", "prometheus", "grafana", "worker"}
    assert "version" not in load_compose(), "the top-level `version` is obsolete"
    assert service("worker")["profiles"] == ["worker"], "the worker is optional"
    for name, spec in SERVICES.items():
        if name != "worker":
            assert "profiles" not in spec, f"{name} must start by default"


def test_images_are_pinned_or_built_from_the_dockerfile() -> None:
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    stage_names = {stage.name for stage in stages}
    for name, spec in SERVICES.items():
        build = spec.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            assert build["target"] in stage_names, f"{name}: no stage {build['target']}"
        else:
            image = spec["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: pin {image}"


def test_every_service_has_a_healthcheck_and_dependencies_wait_for_it() -> None:
    for name, spec in SERVICES.items():
        check = spec.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert dependency in SERVICES
            assert condition["condition"] == "service_healthy"
            assert SERVICES[dependency].get("healthcheck")


def test_probe_tools_exist_in_their_images() -> None:
    """Each healthcheck uses a program its image ships (slim Python has no curl)."""
    expected = {
        "llm-proxy": "python",
        "worker": "python",
        "redis": "redis-cli",
        "prometheus": "wget",
        "grafana": "wget",
    }
    for name, program in expected.items():
        test = service(name)["healthcheck"]["test"]
        first = test[1].split()[0] if test[0] == "CMD-SHELL" else test[1]
        assert first == program, f"{name}: {first}"
    proxy_probe = service("llm-proxy")["healthcheck"]["test"][-1]
    assert "http://127.0.0.1:8080/health/readiness" in proxy_probe
    worker_probe = service("worker")["healthcheck"]["test"][-1]
    assert "http://127.0.0.1:9000/health/readiness" in worker_probe


def test_ports() -> None:
    published = {
        name: [interpolate(p) for p in spec.get("ports", [])] for name, spec in SERVICES.items()
    }
    assert published["llm-proxy"] == ["8080:8080"]
    assert published["prometheus"] == ["9090:9090"]
    assert published["grafana"] == ["3000:3000"]
    assert published["redis"] == [] and published["worker"] == [], "kept off the host"


def bind_mounts(name: str) -> list[tuple[str, str, bool]]:
    mounts = [parse_mount(v) for v in service(name).get("volumes", [])]
    return [m for m in mounts if m[0].startswith(".")]


def test_bind_mount_sources_exist() -> None:
    optional = {"./models"}  # the worker's model folder: the user's own
    for name in SERVICES:
        for source, target, read_only in bind_mounts(name):
            if source in optional:
                continue
            assert (DEPLOY / source).exists(), f"{name}: {source} -> {target} missing"
            assert read_only, f"{name}: mount {source} read-only"


def test_proxy_mounts_the_policy_directory_and_a_writable_cache() -> None:
    proxy = service("llm-proxy")
    mounts = {target: (source, ro) for source, target, ro in map(parse_mount, proxy["volumes"])}
    source, read_only = mounts["/etc/llm-proxy"]
    assert (DEPLOY / source).is_dir(), "mount the directory: a single-file bind mount goes stale"
    assert (DEPLOY / source / "proxy.yaml").resolve() == CONTAINER_POLICY
    assert read_only
    assert proxy["environment"]["LLM_PROXY_CONFIG"] == "/etc/llm-proxy/proxy.yaml"
    cache_source, cache_ro = mounts["/var/cache/llm-proxy"]
    assert not cache_source.startswith(".") and not cache_ro, "a named volume, writable"
    assert proxy["read_only"] is True and "/tmp" in proxy["tmpfs"]
    assert proxy["cap_drop"] == ["ALL"]


def test_proxy_stops_gracefully() -> None:
    grace = service("llm-proxy")["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", grace).group(1))  # type: ignore[union-attr]
    drain = yaml.safe_load(CONTAINER_POLICY.read_text())["server"]["drain_timeout"]
    assert seconds >= drain + 10


def test_redis_is_shared_through_redis_url() -> None:
    url = service("llm-proxy")["environment"]["REDIS_URL"]
    host_port = re.match(r"redis://([^/:]+):(\d+)/\d+$", url)
    assert host_port and host_port.group(1) == "redis" and host_port.group(2) == "6379"
    assert "redis" in service("llm-proxy")["depends_on"]


def test_worker_wiring() -> None:
    url = service("llm-proxy")["environment"]["LLM_PROXY_WORKER_URL"]
    assert url == "http://worker:9000"
    command = [interpolate(c) for c in service("worker")["command"]]
    assert command[:2] == ["--model", "/models/model"]
    assert "--device" in command and "--max-batch-size" in command
    policy = yaml.safe_load(CONTAINER_POLICY.read_text())
    local = policy["upstreams"]["local"]
    assert local["type"] == "local" and "LLM_PROXY_WORKER_URL" in local["url"]
    assert local["api_key"] == "${WORKER_API_KEY}"


def test_policy_passes_check_with_the_compose_environment() -> None:
    env = {
        "REDIS_URL": service("llm-proxy")["environment"]["REDIS_URL"],
        "LLM_PROXY_WORKER_URL": service("llm-proxy")["environment"]["LLM_PROXY_WORKER_URL"],
        "OPENAI_API_KEY": "sk-test",
        "WORKER_API_KEY": "worker-test",
    }
    result = proxy_check(CONTAINER_POLICY, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local-chat" in result.stdout


def test_prometheus_wiring() -> None:
    prometheus = service("prometheus")
    config_flag = next(c for c in prometheus["command"] if c.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    mounts = {target: source for source, target, _ in bind_mounts("prometheus")}
    config_dir = str(Path(config_path).parent)
    assert config_dir in mounts, "the config file's directory is mounted"
    config = yaml.safe_load((DEPLOY / mounts[config_dir] / Path(config_path).name).read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["llm-proxy:8080"]
    assert config["scrape_configs"][0].get("metrics_path", "/metrics") == "/metrics"
    # relative rule paths are resolved from the config file's directory
    resolved = posixpath.normpath(posixpath.join(config_dir, config["rule_files"][0]))
    resolved = posixpath.dirname(resolved)
    assert resolved in mounts, f"rule_files point at {resolved}, not a mount"
    assert (DEPLOY / mounts[resolved]).resolve() == (ROOT / "config" / "prometheus")


def test_grafana_wiring() -> None:
    grafana = service("grafana")
    mounts = {target: source for source, target, _ in bind_mounts("grafana")}
    provisioning = DEPLOY / mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    source = datasource["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "llm-proxy.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert path in mounts, "the provider reads the mounted dashboards"
    assert (DEPLOY / mounts[path] / DASHBOARD.name).resolve() == DASHBOARD
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")


def test_env_example_documents_every_variable() -> None:
    example = DEPLOY / ".env.example"
    names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(compose_vars(COMPOSE.read_text()))
    assert used <= names, f"undocumented in .env.example: {sorted(used - names)}"
    assert {"OPENAI_API_KEY", "HUGGINGFACE_API_KEY", "WORKER_API_KEY"} <= names
    gitignore = (DEPLOY / ".gitignore").read_text().split()
    assert ".env" in gitignore, "deploy/.env holds keys: never committed"


@pytest.mark.parametrize("name", ["llm-proxy", "worker"])
def test_env_file_is_optional(name: str) -> None:
    assert service(name)["env_file"] == [{"path": ".env", "required": False}]
