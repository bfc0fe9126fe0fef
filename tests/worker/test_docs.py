"""The random-model commands the docs show leave the checkout clean: they write outside it,
and a `models/` folder at the root (where older docs put models) is ignored by git."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RANDMODEL = re.compile(r"python -m proxy\.worker\.randmodel (\S+)")


@pytest.mark.parametrize("source", ["docs/worker.md", "proxy/worker/randmodel.py"])
def test_documented_random_models_are_written_outside_the_checkout(source: str) -> None:
    folders = RANDMODEL.findall((ROOT / source).read_text())
    assert folders, f"{source} shows no randmodel command"
    for folder in folders:
        path = Path(folder)
        assert path.is_absolute() and not path.resolve().is_relative_to(ROOT), folder


def test_a_models_folder_at_the_root_is_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        ["git", "check-ignore", "-q", "models/tiny/config.json"], cwd=ROOT, check=False
    )
    assert done.returncode == 0, "models/ is not in .gitignore"
