"""The Dockerfile: hadolint, the runtime contract, the build context, and the image's own
commands (HEALTHCHECK, default policy) run against a proxy started as the image starts it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from deploy_support import (
    CHART,
    CONTAINER_POLICY,
    DOCKERFILE,
    DOCKERIGNORE,
    PIP_TOOLS,
    ROOT,
    Stage,
    dockerignore_patterns,
    dockerignored,
    exec_form,
    free_port,
    image_like_proxy,
    load_compose,
    parse_dockerfile,
    proxy_check,
    render_templates,
    require_tool,
    run,
)

ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}
RUNTIME_STAGES = ("runtime-base", "worker", "proxy")
CACHE_DIR = "/var/cache/llm-proxy"


def env_of(*stages: str) -> dict[str, str]:
    """ENV key=value pairs set in these stages (in order)."""
    env: dict[str, str] = {}
    for name in stages:
        for instruction in BY_NAME[name].all("ENV"):
            for pair in instruction.value.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


# ---- hadolint ---------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint", PIP_TOOLS)
    result = run([hadolint, "--failure-threshold", "info", "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_fail_a_careless_dockerfile(tmp_path: Path) -> None:
    """The check above can fail: hadolint rejects a latest base, root and unpinned pip."""
    hadolint = require_tool("hadolint", PIP_TOOLS)
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python -m proxy\n")
    result = run([hadolint, "--failure-threshold", "warning", "--no-color", str(bad)])
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):
        assert rule in result.stdout


# ---- structure --------------------------------------------------------------------------


def test_stages_and_default_target() -> None:
    assert [s.name for s in STAGES] == ["build", "worker-build", *RUNTIME_STAGES]
    assert STAGES[-1].name == "proxy", "`docker build .` must give the proxy image"
    base = ARGS["PYTHON_IMAGE"]
    assert base.startswith("python:3.11-slim"), base
    for stage in STAGES:
        assert stage.base in ("${PYTHON_IMAGE}", "build", "runtime-base"), stage.base


def test_compiler_only_in_the_build_stage() -> None:
    installs = " ".join(i.value for i in BY_NAME["build"].all("RUN"))
    assert "build-essential" in installs
    for name in RUNTIME_STAGES:
        for instruction in BY_NAME[name].all("RUN"):
            for word in ("apt-get", "apk ", "gcc", "build-essential", "pip install"):
                assert word not in instruction.value, f"{name}:{instruction.line}: {word}"


def runtime_copies(stage: Stage) -> list[str]:
    return [i.value for i in stage.all("COPY")]


def test_runtime_images_copy_a_built_venv() -> None:
    assert "--from=build /opt/venv /opt/venv" in runtime_copies(BY_NAME["proxy"])
    assert "--from=worker-build /opt/venv /opt/venv" in runtime_copies(BY_NAME["worker"])
    assert env_of("runtime-base")["PATH"].startswith("/opt/venv/bin:")


@pytest.mark.parametrize("name", ["proxy", "worker"])
def test_numeric_non_root_user(name: str) -> None:
    users = BY_NAME[name].all("USER")
    assert users, f"{name}: no USER"
    user, _, group = users[-1].value.partition(":")
    assert user.isdigit() and int(user) > 0, "Kubernetes' runAsNonRoot needs a numeric UID"
    assert group.isdigit() and int(group) > 0
    assert int(user) == 10001, "values.yaml's podSecurityContext runs as 10001"
    created = " ".join(i.value for i in BY_NAME["runtime-base"].all("RUN"))
    assert f"--uid {user}" in created and f"chown {user}:{group} {CACHE_DIR}" in created


def test_proxy_runtime_contract() -> None:
    proxy = BY_NAME["proxy"]
    assert exec_form(proxy.all("CMD")[-1].value) == ["python", "-m", "proxy"]
    assert not proxy.all("ENTRYPOINT")
    assert [i.value for i in proxy.all("EXPOSE")] == ["8080"]
    env = env_of("runtime-base", "proxy")
    assert env["LLM_PROXY_CONFIG"] == "/etc/llm-proxy/proxy.yaml"
    assert env["XDG_CACHE_HOME"] == CACHE_DIR and env["HOME"] == CACHE_DIR
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert proxy.all("WORKDIR")[-1].value == CACHE_DIR, "relative cache paths must be writable"
    assert exec_form(proxy.all("VOLUME")[-1].value) == [CACHE_DIR]
    assert "deploy/config/proxy.yaml /etc/llm-proxy/proxy.yaml" in runtime_copies(proxy)


def healthcheck_code(stage: str) -> tuple[list[str], str]:
    instruction = BY_NAME[stage].all("HEALTHCHECK")[-1].value
    options, _, command = instruction.partition(" CMD ")
    argv = exec_form(command.strip())
    assert argv is not None, "HEALTHCHECK must use the exec form (no shell needed)"
    assert argv[:2] == ["python", "-c"], "slim images have no curl: python's urllib"
    for option in ("--interval=", "--timeout=", "--retries="):
        assert option in options
    return argv, argv[2]


def test_healthchecks_probe_liveness() -> None:
    _, proxy_code = healthcheck_code("proxy")
    assert "http://127.0.0.1:8080/health/liveness" in proxy_code
    _, worker_code = healthcheck_code("worker")
    assert "http://127.0.0.1:9000/health/liveness" in worker_code


def test_worker_image_torch_cpu_by_default() -> None:
    worker_build = BY_NAME["worker-build"]
    args = dict(i.value.partition("=")[::2] for i in worker_build.all("ARG"))
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_VERSION"] == "2.13.0"
    installs = " ".join(i.value for i in worker_build.all("RUN"))
    assert '"torch==${TORCH_VERSION}"' in installs and '"${TORCH_INDEX_URL}"' in installs
    worker = BY_NAME["worker"]
    entry = exec_form(worker.all("ENTRYPOINT")[-1].value)
    assert entry == ["llm-proxy", "worker", "--host", "0.0.0.0", "--port", "9000"]
    assert [i.value for i in worker.all("EXPOSE")] == ["9000"]


def test_requirement_snippets_read_pyproject(tmp_path: Path) -> None:
    """The build's `python -c` one-liners print pyproject's dependency lists."""
    import tomllib

    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = {
        "build": project["dependencies"],
        "worker-build": project["optional-dependencies"]["local"],
    }
    for stage, wanted in expected.items():
        command = next(i.value for i in BY_NAME[stage].all("RUN") if "tomllib" in i.value)
        code = command.split('python -c "', 1)[1].split('" >', 1)[0]
        result = run([sys.executable, "-c", code], cwd=str(tmp_path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:-1] == wanted


# ---- the build context -----------------------------------------------------------------


def copy_sources() -> list[str]:
    sources = []
    for stage in STAGES:
        for instruction in stage.all("COPY"):
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            if any(w.startswith("--from=") for w in instruction.value.split()):
                continue
            sources.extend(words[:-1])
    return sources


def test_copied_files_exist_and_reach_the_context() -> None:
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    sources = copy_sources()
    assert {"pyproject.toml", "README.md", "proxy/", "deploy/config/proxy.yaml"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: missing"
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        assert files, f"COPY {source}: empty"
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignored(relative, patterns), f".dockerignore drops {relative}"


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        "deploy/.env",
        "deploy/.env.local",
        ".git/config",
        ".venv/bin/python",
        "proxy/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
        "charts/llm-proxy/values.yaml",
        "secrets/server.pem",
    ],
)
def test_secrets_and_local_state_stay_out_of_the_context(path: str) -> None:
    assert dockerignored(path, dockerignore_patterns(DOCKERIGNORE.read_text()))


# ---- the image's commands, run for real --------------------------------------------------


def test_image_policy_is_valid() -> None:
    result = proxy_check(CONTAINER_POLICY)
    assert result.returncode == 0, result.stdout + result.stderr
    policy = yaml.safe_load(CONTAINER_POLICY.read_text())
    assert policy["server"]["host"] == "0.0.0.0" and policy["server"]["port"] == 8080
    cache = policy.get("cache") or {}
    path = str(cache.get("path", ".cache/llm-proxy"))
    assert not path.startswith("/") or path.startswith(CACHE_DIR), "cache outside the volume"


def probe(code: str, port: int) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", code.replace(":8080/", f":{port}/")], timeout=15)


def test_image_commands_against_a_running_proxy(tmp_path: Path) -> None:
    """The proxy serves the image's policy from a working directory standing for the cache
    volume; the image's HEALTHCHECK, compose's healthcheck and the chart's `helm test`
    script all pass against it, and fail against a port where nothing listens."""
    port = free_port()
    workdir = tmp_path / "var-cache-llm-proxy"
    workdir.mkdir()
    # the policy as the image holds it, its cache volume moved to the stand-in folder
    policy = tmp_path / "etc-llm-proxy" / "proxy.yaml"
    policy.parent.mkdir()
    policy.write_text(CONTAINER_POLICY.read_text().replace(CACHE_DIR, str(workdir)))
    _, image_probe = healthcheck_code("proxy")
    compose_probe = load_compose()["services"]["llm-proxy"]["healthcheck"]["test"][-1]
    assert "/health/readiness" in compose_probe
    with image_like_proxy(workdir, policy, port) as process:
        for code in (image_probe, compose_probe):
            result = probe(code, port)
            assert result.returncode == 0, result.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            assert reply.status == 200
        script = find_chart_test_script()
        if script is not None:
            env = {"LLM_PROXY_URL": f"http://127.0.0.1:{port}", "PATH": "/usr/bin:/bin"}
            result = run([sys.executable, "-c", script], env=env, timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
        process.terminate()
        assert process.wait(timeout=45) == 0, "SIGTERM must drain and exit 0"
    closed = free_port()
    assert probe(image_probe, closed).returncode != 0
    assert probe(compose_probe, closed).returncode != 0


def find_chart_test_script() -> str | None:
    """The `helm test` pod's python script, rendered from the chart (None without Helm)."""
    try:
        rendered = render_templates({})
    except pytest.skip.Exception:
        return None
    pod = yaml.safe_load(rendered["llm-proxy/templates/tests/test-readiness.yaml"])
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    return str(command[2])


def test_chart_runs_the_image_as_built() -> None:
    """The chart's securityContext matches the image's user; nothing else writes."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


# ---- what the build installs ------------------------------------------------------------


def test_context_builds_a_wheel_with_the_whole_package(tmp_path: Path) -> None:
    """`pip install --no-deps .` on exactly the files the Dockerfile copies: the wheel holds
    every module of proxy/ and the `llm-proxy` console script."""
    import zipfile

    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    context = tmp_path / "src"
    context.mkdir()
    for source in ("pyproject.toml", "README.md", "proxy"):
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, context / source)
    out = tmp_path / "dist"
    result = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(out), str(context)],
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("llm_proxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (ROOT / "proxy").rglob("*"):
        if module.is_file() and "__pycache__" not in module.parts:
            relative = module.relative_to(ROOT).as_posix()
            assert relative in names, f"{relative} is not in the wheel the image installs"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llm-proxy = proxy.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _requirement_names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement

    return {_normalize(Requirement(r).name) for r in requirements}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(names: set[str]) -> set[str]:
    """Installed distributions these require, transitively (what pip brings along)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_normalize(requirement.name))
    return seen


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in proxy/ (lazy imports included) -> files."""
    import ast

    found: dict[str, set[str]] = {}
    for path in (ROOT / "proxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "proxy":
                    found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_the_image_installs_every_module_the_proxy_imports() -> None:
    """The build installs pyproject's `dependencies` (and the worker image the `[local]`
    extra) and nothing else: every third-party import of proxy/ must come with them, or
    the image fails at start while the developers' venvs, which hold more, do not."""
    import tomllib
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _closure(_requirement_names(project["dependencies"]))
    local = core | _closure(_requirement_names(project["optional-dependencies"]["local"]))
    providers = metadata.packages_distributions()
    missing = []
    for module, files in sorted(_third_party_imports().items()):
        worker_only = all(f.startswith("proxy/worker/") for f in files)
        allowed = local if worker_only else core
        dists = {_normalize(d) for d in providers.get(module, [module])}
        if not dists & allowed:
            image = "worker image ([local])" if worker_only else "proxy image (dependencies)"
            missing.append(f"{module} (imported by {', '.join(sorted(files))}; {image})")
    assert not missing, "not installed by pyproject.toml: " + "; ".join(missing)
