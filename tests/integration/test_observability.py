"""Logs without secrets, and /health following breaker and storage state while readiness
stays up (readiness checks local faults only)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, invalid_api_key, status
from fakes.proxy_harness import free_port

UPSTREAM_KEY = "sk-upstream-Observe-0123456789"
ENV_SECRET = "sk-env-secret-9876543210abcdef"
CLIENT_KEY = "sk-client-observe-5555"


def policy(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "up": {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY},
            "env": {"type": "openai", "base_url": base_url, "api_key": "${OBSERVE_KEY}"},
        },
        "models": {
            "chat": {"routes": [{"upstream": "up", "model": "m"}]},
            "other": {"routes": [{"upstream": "env", "model": "m2"}]},
        },
        "keys": [{"name": "observer", "key": CLIENT_KEY}],
        "retry": {"attempts": 1},
        "circuit_breaker": {"failures": 1, "cooldown": 30},
        "cache": {"backend": "none"},
        **extra,
    }


def json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_json_logs_have_the_fields_and_never_a_secret(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    proxy = start_proxy(
        policy(fake_openai.base_url, logging={"json": True}), env={"OBSERVE_KEY": ENV_SECRET}
    )
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "tell me a secret"}]
        )
        fake_openai.script(invalid_api_key())  # the upstream echoes the key it was sent
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="other", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=proxy.base_url, api_key="sk-wrong-key-123456", max_retries=0
            ).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    time.sleep(0.3)
    log = proxy.log()
    for secret in (UPSTREAM_KEY, ENV_SECRET, CLIENT_KEY, "sk-wrong-key-123456"):
        assert secret not in log
    assert "tell me a secret" not in log  # no message content without log_bodies
    requests = [line for line in json_lines(log) if line.get("message", "").startswith("chat ")]
    ok = next(line for line in requests if line["status"] == 200)
    for field in (
        "request_id", "key", "model", "route", "status", "attempts", "cache",
        "duration_ms", "ttft_ms", "prompt_tokens", "completion_tokens",
    ):  # fmt: skip
        assert field in ok, field
    assert (ok["key"], ok["model"], ok["route"], ok["cache"]) == (
        "observer",
        "chat",
        "up/m",
        "bypass",
    )
    assert {line["status"] for line in requests} >= {200, 502, 401}


def test_log_bodies_puts_redacted_content_in_the_log(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    proxy = start_proxy(policy(fake_openai.base_url, logging={"log_bodies": True}),
                        env={"OBSERVE_KEY": ENV_SECRET})  # fmt: skip
    with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": f"hello {ENV_SECRET}"}]
        )
    log = proxy.wait_for_log("hello ***")
    assert ENV_SECRET not in log


def test_health_follows_breaker_and_storage_while_readiness_stays_up(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    proxy = start_proxy(
        policy(fake_openai.base_url, limits={"storage": dead_redis}),
        env={"OBSERVE_KEY": ENV_SECRET},
    )
    fake_openai.script(status(500))
    with (
        openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY, max_retries=0) as client,
        pytest.raises(openai.InternalServerError),
    ):
        client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    health = httpx.get(f"{proxy.url}/health", timeout=5).json()
    route = health["routes"]["up/m"]
    assert route["state"] == "open"
    assert route["error_rate_1m"] == 1.0 and route["calls_1m"] == 1
    assert health["storage"]["limits"] == {
        "backend": "redis",
        "ok": False,
        "error": "ConnectionError",
    }
    assert health["storage"]["cache"]["ok"] is True
    assert httpx.get(f"{proxy.url}/health/readiness", timeout=5).status_code == 200
    assert httpx.get(f"{proxy.url}/health/liveness", timeout=5).status_code == 200
