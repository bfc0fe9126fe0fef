"""`spawn:` supervision edge cases, through the real proxy and a real spawned worker on the tiny
random model: a port another process holds, an upstream removed by a reload, and a spawned
upstream whose settings a reload changed."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI
from fakes.proxy_harness import (
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    free_port,
    without_unimplemented_tuning,
)
from worker.tiny import build_tiny_model, require_torch

require_torch()

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello to the test suite"}]
IMPOSTOR_REPLY = "served by the impostor"


def spawn_policy(tiny: Path, port: int, fake_url: str, **spawn: Any) -> dict[str, Any]:
    fake = {"type": "openai", "base_url": fake_url, "api_key": UPSTREAM_KEY}
    local = {"type": "local", "spawn": {"model": str(tiny), "device": "cpu", "port": port, **spawn}}
    return without_unimplemented_tuning(
        {
            "server": {"drain_timeout": 1},
            "upstreams": {"local": local, "fake": fake},
            "models": {
                "tiny": {"routes": [{"upstream": "local", "model": "tiny"}]},
                "other": {"routes": [{"upstream": "fake", "model": "other"}]},
            },
            "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
            "circuit_breaker": {"failures": 1000},
            "cache": {"backend": "none"},
        }
    )


def without_local(policy: dict[str, Any]) -> dict[str, Any]:
    upstreams = {k: v for k, v in policy["upstreams"].items() if k != "local"}
    models = {k: v for k, v in policy["models"].items() if k != "tiny"}
    return {**policy, "upstreams": upstreams, "models": models}


class Impostor(BaseHTTPRequestHandler):
    """Another program on the worker's port: healthy on every path, and it answers chat."""

    posts: list[str] = []

    def do_GET(self) -> None:
        self._send({"status": "ready"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        Impostor.posts.append(self.path)
        message = {"role": "assistant", "content": IMPOSTOR_REPLY}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        self._send({"id": "x", "object": "chat.completion", "created": 0, "model": "impostor",
                    "choices": [choice]})  # fmt: skip

    def _send(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    Impostor.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ProxyLauncher]:
    launcher = ProxyLauncher(tmp_path)
    yield launcher
    launcher.close()


def sdk(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="none", max_retries=0, timeout=60)


def worker_pid(url: str, not_pid: int | None = None, timeout: float = 45.0) -> int:
    """The pid of the worker ready at `url` (other than `not_pid`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/readiness", timeout=2).status_code == 200:
                pid = int(httpx.get(f"{url}/health", timeout=2).json()["pid"])
                if pid != not_pid:
                    return pid
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no worker (other than pid {not_pid}) ready at {url} in {timeout}s")


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def rewrite(proxy: RunningProxy, policy: dict[str, Any]) -> None:
    proxy.config_path.write_text(yaml.safe_dump(policy, sort_keys=False))


@pytest.mark.timeout(90)
def test_a_port_held_by_another_process_is_never_taken_for_the_worker(
    launcher: ProxyLauncher, fake_openai: FakeOpenAI, tiny: Path, impostor: int
) -> None:
    proxy = launcher.start(spawn_policy(tiny, impostor, fake_openai.base_url))
    log = proxy.wait_for_log(f"port {impostor} is in use", timeout=45)
    assert "local worker 'local' is ready" not in log
    with sdk(proxy) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3)
    assert raised.value.status_code == 503
    assert Impostor.posts == []  # nothing reached the other program
    assert "local worker 'local' is ready" not in proxy.log()


@pytest.mark.timeout(120)
def test_a_removed_spawned_worker_stops_once_its_requests_end(
    launcher: ProxyLauncher, fake_openai: FakeOpenAI, tiny: Path
) -> None:
    port = free_port()
    policy = spawn_policy(tiny, port, fake_openai.base_url)
    proxy = launcher.start(policy)
    url = f"http://127.0.0.1:{port}"
    pid = worker_pid(url)
    proxy.wait_for_log("local worker 'local' is ready", timeout=10)
    with sdk(proxy) as client:
        stream = client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=1500, temperature=0, stream=True
        )
        chunks = iter(stream)
        first = next(chunks)
        rewrite(proxy, without_local(policy))
        log = proxy.wait_for_log("upstream local: removed", timeout=5)
        assert "upstream local: settings changed" not in log
        assert httpx.get(f"{url}/health/liveness", timeout=2).status_code == 200  # still serving
        rest = list(chunks)
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].choices[0].finish_reason == "length"  # the request in flight finished
        reply = client.chat.completions.create(model="other", messages=MESSAGES)
        assert reply.choices[0].message.content == DEFAULT_REPLY
    assert gone(pid, timeout=15), "the removed upstream's worker is still running"
    proxy.wait_for_log("local worker 'local' stopped", timeout=5)


@pytest.mark.timeout(150)
def test_a_spawned_worker_whose_settings_changed_is_replaced_once_idle(
    launcher: ProxyLauncher, fake_openai: FakeOpenAI, tiny: Path
) -> None:
    port = free_port()
    policy = spawn_policy(tiny, port, fake_openai.base_url, max_batch_size=8)
    proxy = launcher.start(policy)
    url = f"http://127.0.0.1:{port}"
    old = worker_pid(url)
    rewrite(proxy, spawn_policy(tiny, port, fake_openai.base_url, max_batch_size=4))
    proxy.wait_for_log("upstream local: settings changed", timeout=5)
    assert gone(old, timeout=15), "the replaced worker is still running"
    new = worker_pid(url, not_pid=old, timeout=60)
    assert httpx.get(f"{url}/health", timeout=2).json()["max_batch_size"] == 4
    deadline = time.monotonic() + 20
    with sdk(proxy) as client:
        while True:  # the new worker serves once its supervisor has seen it ready
            try:
                reply = client.chat.completions.create(
                    model="tiny", messages=MESSAGES, max_tokens=3
                )
                break
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and time.monotonic() < deadline, exc
                time.sleep(0.2)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert httpx.get(f"{url}/health", timeout=2).json()["pid"] == new
