"""Live reload of the policy file (docs/semantics.md, "Reload"; proxy.reference.yaml
`server.reload`, on by default): edits, an invalid file, SIGHUP, a Kubernetes ConfigMap
symlink swap, breaker state across a reload, and a stream in flight during one.

Each test starts its own proxy on a policy file it then rewrites. New requests must reach the
new policy within RELOAD_WITHIN seconds of the write; the tests poll rather than sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from fakes.openai_upstream import FakeOpenAI, slow_stream, status
from fakes.proxy_harness import (
    PROXY_ENV_OVERRIDES,
    REPO_ROOT,
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
)
from prometheus_client.parser import text_string_to_metric_families

from .conftest import USER_MESSAGES

RELOAD_WITHIN = 2.0
StartProxy = Callable[..., RunningProxy]


def reload_policy(
    base_url: str,
    model_id: str = "v1-id",
    *,
    upstream: str = "fake",
    extra_models: dict[str, Any] | None = None,
    breaker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Model `m` served by `<upstream>/<model_id>`; `keep` has two routes, in priority order."""
    return {
        "server": {"drain_timeout": 0},
        "upstreams": {upstream: {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}},
        "models": {
            "m": {"routes": [{"upstream": upstream, "model": model_id}]},
            "keep": {
                "routes": [
                    {"upstream": upstream, "model": "keep-a"},
                    {"upstream": upstream, "model": "keep-b"},
                ],
                "strategy": "priority",
            },
            **(extra_models or {}),
        },
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": breaker or {"failures": 100},
    }


def write_policy(path: Path, policy: dict[str, Any]) -> None:
    """Rewrite the file in place, as an editor or `kubectl cp` would (follows a symlink)."""
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def sdk(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="no-keys", max_retries=0, timeout=20)


def route_of(client: openai.OpenAI, model: str = "m") -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER_MESSAGES)
    assert raw.parse().model == model
    return str(raw.headers["x-llm-proxy-route"])


def wait_for_route(
    client: openai.OpenAI, route: str, since: float, model: str = "m", within: float = RELOAD_WITHIN
) -> float:
    """Send requests until one is served by `route`; the seconds since `since` (the write).
    Every request meanwhile must succeed (a reload never fails a request)."""
    while True:
        served = route_of(client, model)
        elapsed = time.monotonic() - since
        if served == route:
            return elapsed
        assert elapsed < within, f"still served by {served} {elapsed:.2f}s after the change"
        time.sleep(0.05)


def wait_for_model(proxy: RunningProxy, model: str, since: float) -> float:
    """Poll GET /v1/models until `model` is listed; the seconds since `since`."""
    while True:
        listed = {m["id"] for m in httpx.get(f"{proxy.base_url}/models", timeout=5).json()["data"]}
        elapsed = time.monotonic() - since
        if model in listed:
            return elapsed
        assert elapsed < RELOAD_WITHIN, f"{model} not listed {elapsed:.2f}s after the change"
        time.sleep(0.05)


def health(proxy: RunningProxy) -> dict[str, Any]:
    resp = httpx.get(f"{proxy.url}/health", timeout=5)
    assert resp.status_code == 200
    return dict(resp.json())


def last_reload(proxy: RunningProxy) -> dict[str, Any] | None:
    return health(proxy)["policy"].get("last_reload")


def wait_for_reload(proxy: RunningProxy, result: str, after: float, within: float = 3.0) -> dict:
    """Poll /health until `policy.last_reload` shows a reload with `result` newer than the
    wall-clock time `after`."""
    deadline = time.monotonic() + within
    while True:
        last = last_reload(proxy)
        if last and last.get("result") == result and float(last.get("at", 0)) >= after:
            return last
        assert time.monotonic() < deadline, f"no {result!r} reload within {within}s: {last}"
        time.sleep(0.05)


def metric(proxy: RunningProxy, name: str, **labels: str) -> float:
    """A sample of /metrics; 0 when absent (a counter never incremented)."""
    text = httpx.get(f"{proxy.url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def reloads(proxy: RunningProxy, result: str) -> float:
    return metric(proxy, "llm_proxy_config_reloads_total", result=result)


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_OVERRIDES}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check", str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def own_launcher(tmp_path: Path) -> Iterator[Callable[[Path], ProxyLauncher]]:
    """Launchers on directories the test lays out first (symlinked policy files)."""
    launchers: list[ProxyLauncher] = []

    def make(workdir: Path) -> ProxyLauncher:
        launcher = ProxyLauncher(workdir)
        launchers.append(launcher)
        return launcher

    yield make
    for launcher in launchers:
        launcher.close()


# ---------------------------------------------------------------------------------------------


def test_edit_reroutes_new_requests_within_two_seconds(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    running = start_proxy(reload_policy(fake_openai.base_url, "v1-id"))
    with sdk(running) as client:
        assert route_of(client) == "fake/v1-id"
        ok_before = reloads(running, "ok")
        written = time.monotonic()
        write_policy(running.config_path, reload_policy(fake_openai.base_url, "v2-id"))
        wait_for_route(client, "fake/v2-id", since=written)
        assert route_of(client) == "fake/v2-id"  # and it stays there
    assert reloads(running, "ok") >= ok_before + 1
    assert last_reload(running)["result"] == "ok"  # type: ignore[index]
    models = [r.json["model"] for r in fake_openai.chat_requests]
    assert models[0] == "v1-id" and models[-1] == "v2-id"
    assert set(models) == {"v1-id", "v2-id"}


def test_invalid_file_keeps_the_old_policy_and_is_reported(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    running = start_proxy(reload_policy(fake_openai.base_url, "v1-id"))
    path = running.config_path
    errors_before = reloads(running, "error")
    # The new route id would show if anything of this file were applied.
    bad = reload_policy(fake_openai.base_url, "v2-id")
    bad["models"]["keep"]["strategy"] = "fastest-please"
    started = time.time()
    write_policy(path, bad)
    last = wait_for_reload(running, "error", after=started)
    assert any("models.keep.strategy" in line for line in last["errors"]), last
    assert reloads(running, "error") >= errors_before + 1
    with sdk(running) as client:
        for _ in range(3):
            assert route_of(client) == "fake/v1-id"
    assert health(running)["routes"].keys() >= {"fake/v1-id"}

    check = run_check(path)
    assert check.returncode == 1, check
    assert "models.keep.strategy" in check.stderr + check.stdout, check

    # Fixing the file recovers: the new policy is served and the reload is ok again.
    written, started = time.monotonic(), time.time()
    write_policy(path, reload_policy(fake_openai.base_url, "v3-id"))
    with sdk(running) as client:
        wait_for_route(client, "fake/v3-id", since=written)
    wait_for_reload(running, "ok", after=started)
    assert run_check(path).returncode == 0


def test_sighup_reloads_a_change_the_watcher_cannot_see(
    tmp_path: Path, own_launcher: Callable[[Path], ProxyLauncher], fake_openai: FakeOpenAI
) -> None:
    """The policy file is a symlink to a file in another directory: editing that file makes
    no event in the watched directory. SIGHUP makes the proxy read it anyway."""
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    target = elsewhere / "policy.yaml"
    target.write_text("")
    (watched / "proxy-0.yaml").symlink_to(target)  # the launcher's first policy file name
    running = own_launcher(watched).start(reload_policy(fake_openai.base_url, "v1-id"))
    assert running.config_path.is_symlink() and "v1-id" in target.read_text()
    with sdk(running) as client:
        assert route_of(client) == "fake/v1-id"
        ok_before = reloads(running, "ok")
        write_policy(target, reload_policy(fake_openai.base_url, "v2-id"))
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGHUP)
        wait_for_route(client, "fake/v2-id", since=signalled)
    assert running.process.poll() is None  # SIGHUP did not end the process
    assert reloads(running, "ok") >= ok_before + 1


def test_configmap_symlink_swap_is_detected(
    tmp_path: Path, own_launcher: Callable[[Path], ProxyLauncher], fake_openai: FakeOpenAI
) -> None:
    """The layout kubelet gives a ConfigMap volume: proxy.yaml -> ..data/proxy.yaml, ..data ->
    ..v1; an update writes ..v2, points ..data_tmp at it and renames it onto ..data."""
    mount = tmp_path / "configmap"
    (mount / "..v1").mkdir(parents=True)
    (mount / "..data").symlink_to("..v1")
    # The launcher writes its first policy to proxy-0.yaml: through the symlinks into ..v1.
    (mount / "proxy-0.yaml").symlink_to("..data/proxy-0.yaml")
    running = own_launcher(mount).start(reload_policy(fake_openai.base_url, "v1-id"))
    assert running.config_path.is_symlink()
    assert "v1-id" in (mount / "..v1" / "proxy-0.yaml").read_text()
    with sdk(running) as client:
        assert route_of(client) == "fake/v1-id"
        (mount / "..v2").mkdir()
        write_policy(mount / "..v2" / "proxy-0.yaml", reload_policy(fake_openai.base_url, "v2-id"))
        (mount / "..data_tmp").symlink_to("..v2")
        swapped = time.monotonic()
        os.replace(mount / "..data_tmp", mount / "..data")
        shutil.rmtree(mount / "..v1")  # kubelet removes the old version after the swap
        wait_for_route(client, "fake/v2-id", since=swapped)


def test_breaker_state_survives_an_unrelated_reload(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    breaker = {"failures": 1, "window": 10, "cooldown": 30, "max_cooldown": 60}
    running = start_proxy(reload_policy(fake_openai.base_url, breaker=breaker))
    with sdk(running) as client:
        fake_openai.script(status(500))
        assert route_of(client, "keep") == "fake/keep-b"  # keep-a failed and opened
        assert health(running)["routes"]["fake/keep-a"]["state"] == "open"
        assert metric(running, "llm_proxy_route_up", route="fake/keep-a") == 0

        extra = {"other": {"routes": [{"upstream": "fake", "model": "other-id"}]}}
        written = time.monotonic()
        write_policy(
            running.config_path,
            reload_policy(fake_openai.base_url, breaker=breaker, extra_models=extra),
        )
        wait_for_model(running, "other", since=written)
        assert route_of(client, "other") == "fake/other-id"

        assert health(running)["routes"]["fake/keep-a"]["state"] == "open"
        assert metric(running, "llm_proxy_route_up", route="fake/keep-a") == 0
        fake_openai.reset()
        raw = client.chat.completions.with_raw_response.create(model="keep", messages=USER_MESSAGES)
        assert raw.headers["x-llm-proxy-route"] == "fake/keep-b"
        assert raw.headers["x-llm-proxy-attempts"] == "1"
    assert [r.json["model"] for r in fake_openai.chat_requests] == ["keep-b"]


def test_stream_in_flight_finishes_on_the_old_policy(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    """A slow stream starts on `fake/v1-id`; the reload renames the upstream and moves the
    model elsewhere while it runs; the stream still completes normally."""
    words = " ".join(f"w{i}" for i in range(30))  # about 3 s at 0.1 s a chunk
    running = start_proxy(reload_policy(fake_openai.base_url, "v1-id"))
    fake_openai.script(slow_stream(0.1, text=words))
    with sdk(running) as client:
        stream = client.chat.completions.create(model="m", messages=USER_MESSAGES, stream=True)
        chunks = iter(stream)
        received = [next(chunks)]
        streaming = fake_openai.chat_requests[0]

        written = time.monotonic()
        write_policy(
            running.config_path, reload_policy(fake_openai.base_url, "v2-id", upstream="fake2")
        )
        wait_for_route(client, "fake2/v2-id", since=written)
        assert not streaming.done.is_set(), "the stream ended before the reload: nothing tested"

        received.extend(chunks)  # no exception: the stream was not cut
    assert streaming.wait_done(1) and streaming.outcome == "completed"
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == words
    assert [c.choices[0].finish_reason for c in received if c.choices][-1] == "stop"
    assert {c.model for c in received} == {"m"}
    assert streaming.json["model"] == "v1-id"
