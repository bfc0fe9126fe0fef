"""Start-up and shutdown behaviour that needs a proxy of its own: open mode, secrets from the
environment, refusing bad policies, SIGTERM draining."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI, slow_stream
from fakes.proxy_harness import MISSING_ENV_VAR

from .conftest import USER_MESSAGES, assert_openai_error


def open_policy(fake: FakeOpenAI, api_key: str) -> dict[str, Any]:
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"fake": {"type": "openai", "base_url": fake.base_url, "api_key": api_key}},
        "models": {"gpt-4o-mini": {"routes": [{"upstream": "fake", "model": "m"}]}},
    }


def test_without_keys_every_caller_is_served(start_proxy: Any, fake_openai: FakeOpenAI) -> None:
    proxy = start_proxy(open_policy(fake_openai, "sk-upstream-open"))
    for key in ("sk-anything", "another-key"):
        with openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0) as c:
            assert (
                c.chat.completions.create(model="gpt-4o-mini", messages=USER_MESSAGES).model
                == "gpt-4o-mini"
            )
            assert [m.id for m in c.models.list()] == ["gpt-4o-mini"]
    resp = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": USER_MESSAGES},
    )
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert {r.headers["authorization"] for r in fake_openai.chat_requests} == {
        "Bearer sk-upstream-open"
    }


def test_upstream_key_from_the_environment(start_proxy: Any, fake_openai: FakeOpenAI) -> None:
    policy = open_policy(fake_openai, "${OPENAI_API_KEY}")
    policy["upstreams"]["other"] = {
        "type": "openai",
        "base_url": fake_openai.base_url,
        "api_key": "${" + MISSING_ENV_VAR + ":-sk-from-default}",
    }
    policy["models"]["other-model"] = {"routes": [{"upstream": "other", "model": "o"}]}
    proxy = start_proxy(policy, env={"OPENAI_API_KEY": "sk-from-env"})
    with openai.OpenAI(base_url=proxy.base_url, api_key="x", max_retries=0) as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=USER_MESSAGES)
        c.chat.completions.create(model="other-model", messages=USER_MESSAGES)
    assert [r.headers["authorization"] for r in fake_openai.chat_requests] == [
        "Bearer sk-from-env",
        "Bearer sk-from-default",
    ]
    assert "sk-from-env" not in proxy.log()


def test_openai_api_key_unset_leaves_the_upstream_not_configured(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    """The harness drops OPENAI_API_KEY from the environment: the default policy's situation."""
    proxy = start_proxy(open_policy(fake_openai, "${OPENAI_API_KEY}"))
    resp = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": USER_MESSAGES},
    )
    assert resp.status_code == 503
    error = assert_openai_error(resp.json())
    assert error["code"] == "upstream_not_configured"
    assert "OPENAI_API_KEY" in error["message"]
    assert fake_openai.chat_requests == []


def test_auth_required_without_keys_refuses_to_start(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(RuntimeError, match="exited") as exc:
        start_proxy({**open_policy(fake_openai, "k"), "auth": "required"})
    assert "auth" in str(exc.value).split("before it was ready", 1)[1]


def test_unset_variable_outside_upstream_credentials_refuses_to_start(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    policy = open_policy(fake_openai, "k")
    policy["keys"] = [{"name": "team", "key": "${" + MISSING_ENV_VAR + "}"}]
    with pytest.raises(RuntimeError, match="exited") as exc:
        start_proxy(policy)
    assert MISSING_ENV_VAR in str(exc.value).split("before it was ready", 1)[1]


def test_sigterm_turns_readiness_503_before_refusing_connections(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    policy = open_policy(fake_openai, "k")
    policy["server"]["drain_timeout"] = 1  # a grace of 1 s between the 503s and the refusals
    proxy = start_proxy(policy)
    proxy.process.send_signal(signal.SIGTERM)
    assert poll_readiness_until_not_ready(proxy.url) == 503
    assert proxy.process.wait(10) is not None


def test_sigterm_ends_streams_still_open_after_drain_timeout_in_band(
    start_proxy: Any, fake_openai: FakeOpenAI
) -> None:
    policy = open_policy(fake_openai, "k")
    policy["server"]["drain_timeout"] = 1
    proxy = start_proxy(policy)
    fake_openai.reply = " ".join(f"w{i}" for i in range(200))
    fake_openai.script(slow_stream(0.1))  # 20 s of stream
    body = {"model": "gpt-4o-mini", "messages": USER_MESSAGES, "stream": True}
    data: list[str] = []
    truncated = None
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", f"{proxy.base_url}/chat/completions", json=body) as resp,
    ):
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        proxy.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            data = [
                line.removeprefix("data:").strip() for line in lines if line.startswith("data:")
            ]
        except httpx.TransportError as exc:
            truncated = exc
    assert truncated is None, f"stream cut without an error event: {truncated!r}"
    assert time.monotonic() - signalled < 6
    assert data[-1] == "[DONE]"
    assert_openai_error(json.loads(data[-2]))
    assert proxy.process.wait(10) is not None


def poll_readiness_until_not_ready(url: str, timeout: float = 3.0) -> int | str:
    """The first answer that is not 200 (or the transport error that replaced it)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as http:
        while time.monotonic() < deadline:
            try:
                # a fresh connection each time: a keep-alive one closed at shutdown is no answer
                code = http.get(
                    f"{url}/health/readiness", headers={"connection": "close"}
                ).status_code
            except httpx.TransportError as exc:
                return type(exc).__name__
            if code != 200:
                return code
            time.sleep(0.02)
    return "still ready"
