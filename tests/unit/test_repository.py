"""The repository's own rules: it stands alone (nothing cites notes a reader cannot open), the
quality gates run before the tests, the worker process stays free of gateway code, and the
runtime dependencies are the ones the package imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OUTSIDE_CITATION = re.compile(
    r"DESIGN\.md|\.\./shared|\bissues? ?#?\d+\b|\bstop \d+\b", re.IGNORECASE
)


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = {".py", ".md", ".yaml", ".yml", ".toml", ".js", ".css", ".html", ".txt", ".lua", ""}
    files = []
    for name in listed:
        path = ROOT / name
        if name.startswith("tests/node/") or path.suffix not in wanted or not path.is_file():
            continue
        files.append(path)
    return files


def test_nothing_in_the_repository_cites_notes_outside_it() -> None:
    files = tracked_text_files()
    assert len(files) > 100, "git ls-files found too little to be this checkout"
    cited = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_CITATION.search(line):
                cited.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert cited == [], "cites something a reader of the repository cannot open:\n" + "\n".join(
        cited
    )


def test_the_citation_check_can_fail() -> None:
    # spelled in pieces: this file must pass its own check
    notes, shared, issue = "DESIGN" + ".md", ".." + "/shared", "iss" + "ue"
    for line in (f"see {notes}", f"as {shared}/design says", f"fixes {issue} 14", f"{issue} #3"):
        assert OUTSIDE_CITATION.search(line), line
    assert not OUTSIDE_CITATION.search("the design of the cache, see docs/semantics.md")


def test_the_quality_gates_run_before_the_tests() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    gates = [
        "gate python -m ruff check proxy tests bench",
        "gate python -m ruff format --check proxy tests bench",
        "gate python -m mypy",
    ]
    positions = [script.index(gate) for gate in gates]
    assert positions == sorted(positions)
    assert max(positions) < script.index("exec python -m pytest")
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True


def imported_modules(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return names


# what serves the gateway's requests; the worker shares only data modules (config, wire
# shapes, ids, errors, logging) with it
GATEWAY_MODULES = (
    "proxy.gateway", "proxy.api", "proxy.routing", "proxy.relay", "proxy.settle",
    "proxy.exchange", "proxy.planning", "proxy.policy", "proxy.limits", "proxy.cache",
    "proxy.upstreams", "proxy.formats", "proxy.admin", "proxy.keys", "proxy.reload",
)  # fmt: skip


def test_the_worker_imports_no_gateway_code() -> None:
    ours = {
        name for name in imported_modules(ROOT / "proxy" / "worker") if name.startswith("proxy.")
    }
    assert "proxy.wire" in ours, "the worker was expected to import some of the package"
    assert sorted(name for name in ours if name.startswith(GATEWAY_MODULES)) == []


def test_the_worker_process_loads_no_gateway_module() -> None:
    probe = (
        "import sys, proxy.worker.cli, proxy.worker.server\n"
        f"print(sorted(m for m in sys.modules if m.startswith({GATEWAY_MODULES!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_httpx_is_a_test_dependency_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("httpx") for dep in project["dependencies"])
    assert any(dep.startswith("httpx") for dep in project["optional-dependencies"]["dev"])
    assert not any(name.split(".")[0] == "httpx" for name in imported_modules(ROOT / "proxy"))
