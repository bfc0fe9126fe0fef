"""Caller limits and budgets (docs/semantics.md: 429 rate_limit_exceeded with retry-after and
retry-after-ms; 429 insufficient_quota with x-should-retry: false; x-ratelimit-* headers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, slow_stream
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .conftest import USER_MESSAGES, assert_openai_error

MODEL = "limited-model"


def limits_policy(base_url: str) -> dict[str, Any]:
    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"fake": {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}},
        "models": {MODEL: {"routes": [{"upstream": "fake", "model": "lim-up"}]}},
        "keys": [
            {"name": "two-a-minute", "key": "sk-two", "limits": {"requests": "2/minute"}},
            {"name": "one-at-a-time", "key": "sk-one", "limits": {"concurrency": 1}},
            {"name": "one-dollar", "key": "sk-dollar", "budget": {"usd": 1, "period": "day"}},
            {"name": "cut-short", "key": "sk-cut", "budget": {"usd": 1, "period": "day"}},
        ],
        # $1 per token: the first answer (12 tokens) spends the whole budget
        "prices": {"lim-up": {"input": 1_000_000, "output": 1_000_000}},
    }


@pytest.fixture(scope="module")
def limits_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    running = proxy_launcher.start(limits_policy(fake_openai_server.base_url))
    yield running
    running.stop()


def sdk(proxy: RunningProxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=20)


def test_request_limit(limits_proxy: RunningProxy, fake_openai: FakeOpenAI) -> None:
    with sdk(limits_proxy, "sk-two") as c:
        first = c.chat.completions.with_raw_response.create(model=MODEL, messages=USER_MESSAGES)
        assert first.headers["x-ratelimit-limit-requests"] == "2"
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    error = assert_openai_error(exc.value.response.json())
    assert error["code"] == "rate_limit_exceeded"
    headers = exc.value.response.headers
    assert float(headers["retry-after"]) >= 1
    assert float(headers["retry-after-ms"]) > 0
    assert len(fake_openai.chat_requests) == 2


def test_concurrency_limit_is_a_429_at_once(
    limits_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = " ".join(f"w{i}" for i in range(100))
    fake_openai.script(slow_stream(0.1))
    with sdk(limits_proxy, "sk-one") as c:
        stream = c.chat.completions.create(model=MODEL, messages=USER_MESSAGES, stream=True)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        stream.close()
    assert assert_openai_error(exc.value.response.json())["code"] == "rate_limit_exceeded"
    assert len(fake_openai.chat_requests) == 1


def test_budget_spent_is_insufficient_quota(
    limits_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    with sdk(limits_proxy, "sk-dollar") as c:
        c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    error = assert_openai_error(exc.value.response.json())
    assert "insufficient_quota" in {error["type"], error["code"]}
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert len(fake_openai.chat_requests) == 1


def test_stream_cut_by_a_disconnect_is_still_charged(
    limits_proxy: RunningProxy, fake_openai: FakeOpenAI
) -> None:
    """Charged the prompt estimate plus the text relayed: $1 a token spends the budget."""
    fake_openai.reply = " ".join(f"w{i}" for i in range(100))
    fake_openai.script(slow_stream(0.05))
    request_id = f"cut-{uuid.uuid4()}"
    with sdk(limits_proxy, "sk-cut") as c:
        stream = c.chat.completions.create(
            model=MODEL,
            messages=USER_MESSAGES,
            stream=True,
            extra_headers={"x-request-id": request_id},
        )
        chunks = [next(stream), next(stream), next(stream)]
        stream.close()
        assert chunks[1].choices[0].delta.content == "w0"
        # the request's log line is written when it has been accounted for
        limits_proxy.wait_for_log(request_id)
        with pytest.raises(openai.RateLimitError) as exc:
            c.chat.completions.create(model=MODEL, messages=USER_MESSAGES)
    error = assert_openai_error(exc.value.response.json())
    assert "insufficient_quota" in {error["type"], error["code"]}
