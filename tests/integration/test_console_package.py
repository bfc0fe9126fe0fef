"""The console ships inside the package: a wheel built from this tree, installed elsewhere,
serves every file of proxy/admin/ui (no build step, nothing fetched at install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from fakes.proxy_harness import REPO_ROOT

UI = REPO_ROOT / "proxy" / "admin" / "ui"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_an_installed_wheel_serves_the_console_files(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building never writes into the working tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT / "proxy", source / "proxy", ignore=ignore)
    wheels = tmp_path / "wheels"
    pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "-q")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), ".", cwd=source)
    (wheel,) = wheels.glob("*.whl")
    site = tmp_path / "site"
    run(*pip, "install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)

    probe = (
        "import proxy.admin.console as c, sys; "
        "print(c.__file__); print('\\n'.join(sorted(c.load_assets())))"
    )
    out = run(sys.executable, "-c", probe, cwd=tmp_path, env={"PYTHONPATH": str(site)})
    where, *names = out.split()
    assert where.startswith(str(site))  # the installed copy, not this tree
    assert names == sorted(path.name for path in UI.iterdir() if path.is_file())
