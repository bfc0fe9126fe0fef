"""`serve` says it is listening only once it is, and names the address when it cannot."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import PROXY_ENV_OVERRIDES, REPO_ROOT, RunningProxy, base_policy


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def serve(config: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra]
    return subprocess.run(
        command,
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_named_and_nothing_claims_to_listen(
    tmp_path: Path, fake_openai_server: FakeOpenAI, held_port: int, workers: str
) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(base_policy(fake_openai_server.base_url)))
    done = serve(config, held_port, "--workers", workers)
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert f"cannot listen on 127.0.0.1:{held_port}: address already in use" in output
    assert "listening on" not in output
    assert "Traceback" not in output


def test_listening_is_logged_once_the_proxy_answers(
    start_proxy: Callable[..., RunningProxy], fake_openai_server: FakeOpenAI
) -> None:
    proxy = start_proxy(base_policy(fake_openai_server.base_url))
    log = proxy.wait_for_log("listening on")
    line = next(line for line in log.splitlines() if "listening on" in line)
    assert f"http://127.0.0.1:{proxy.port}" in line
    assert str(proxy.config_path) in line
    # logged after the app's start-up, not before the socket existed
    assert log.index("Application startup complete") < log.index("listening on")
    assert httpx.get(f"{proxy.url}/health/liveness", timeout=5).status_code == 200
