"""Browser tests: Debian's Chromium (/usr/bin/chromium) driven by the `playwright` package
against a real proxy with the console on. Without the browser or the package they are
skipped, except under CI (`CI` set), where that is a failure: .ci/run installs both."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import ProxyLauncher, RunningProxy

from .console_setup import ADMIN_KEY, CHROMIUM, console_policy, launch


def _missing() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """Playwright's sync driver runs an event loop in this thread while it is open: it is
    stopped when the module's tests end, before any asyncio test of another module runs."""
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def console_upstream() -> Iterator[FakeOpenAI]:
    """A fake upstream of this module's own: its script is never another module's."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def console_proxy(
    proxy_launcher: ProxyLauncher,
    console_upstream: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningProxy]:
    store = f"sqlite:///{tmp_path_factory.mktemp('console') / 'admin.db'}"
    running = proxy_launcher.start(
        console_policy(console_upstream.base_url, store), env={"LLM_PROXY_ADMIN_KEY": ADMIN_KEY}
    )
    yield running
    running.stop()


class Browser:
    """One fresh Chromium profile; every request any of its pages made, in order."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.requests: list[str] = []
        self.csp_violations: list[str] = []
        self.script_errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("console", self._console)
        context.on("weberror", lambda error: self.script_errors.append(str(error.error)))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def page(self) -> Any:
        page = self.context.pages[0] if self.context.pages else self.context.new_page()
        page.set_default_timeout(15_000)
        return page


@pytest.fixture
def browser(playwright: Any, tmp_path: Path) -> Iterator[Browser]:
    context = launch(playwright, tmp_path / "profile")
    try:
        yield Browser(context)
    finally:
        context.close()
