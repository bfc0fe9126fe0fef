"""Shared fixtures: the fake OpenAI upstream and the real proxy started as a subprocess."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
# `fakes` is importable whatever rootdir/import mode pytest picks.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from fakes.openai_upstream import FakeOpenAI  # noqa: E402
from fakes.proxy_harness import ProxyLauncher, RunningProxy, base_policy  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ceiling per integration test when pytest-timeout is installed: they script hangs."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if "integration" in item.path.parts and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


# ---------------------------------------------------------------------------------------------
# The fake upstream


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """One fake for the whole run (proxies started once point at it)."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The fake, reset (script, default, reply, recorded requests) before and after each test."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


# ---------------------------------------------------------------------------------------------
# The real proxy


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    """`start_proxy(policy, env=None) -> RunningProxy`; every proxy is stopped at teardown."""
    launcher = ProxyLauncher(tmp_path)
    yield launcher.start
    launcher.close()


@pytest.fixture(scope="session")
def proxy_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyLauncher]:
    launcher = ProxyLauncher(tmp_path_factory.mktemp("proxy"))
    yield launcher
    launcher.close()


@pytest.fixture(scope="session")
def proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    """One proxy on `base_policy`, shared by every test that does not need its own."""
    return proxy_launcher.start(base_policy(fake_openai_server.base_url))
