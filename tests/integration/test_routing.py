"""Retries, failover, parking, fallbacks, rules and the response cache (docs/semantics.md),
on a proxy of their own so retries and breakers do not disturb the shared one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    FakeOpenAI,
    context_length_exceeded,
    rate_limited,
    status,
)
from fakes.proxy_harness import UPSTREAM_KEY, ProxyLauncher, RunningProxy

from .conftest import USER_MESSAGES


def routing_policy(base_url: str) -> dict[str, Any]:
    def routes(*models: str) -> list[dict[str, str]]:
        return [{"upstream": "fake", "model": m} for m in models]

    return {
        "server": {"drain_timeout": 1},
        "upstreams": {"fake": {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}},
        "models": {
            "retry-model": {"routes": routes("r1")},
            "exhaust-model": {"routes": routes("x1")},
            "failover-model": {"routes": routes("f1", "f2"), "strategy": "priority"},
            "park-model": {"routes": routes("p1", "p2"), "strategy": "priority"},
            "noretry-model": {"routes": routes("n1", "n2"), "strategy": "priority"},
            "ctx-model": {"routes": routes("c1"), "fallbacks": ["long-model"]},
            "long-model": {"routes": routes("long")},
            "cheap-model": {"routes": routes("cheap")},
            "gpt-4o": {"routes": routes("big")},
            "cached-model": {"routes": routes("cached")},
        },
        "rules": [
            {"when": {"model": "gpt-4*", "header": {"x-tier": "free"}}, "use": "cheap-model"}
        ],
        "retry": {"attempts": 3, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory", "ttl": 600},
    }


@pytest.fixture(scope="module")
def routing_proxy(
    proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI
) -> Iterator[RunningProxy]:
    running = proxy_launcher.start(routing_policy(fake_openai_server.base_url))
    yield running
    running.stop()


@pytest.fixture
def rclient(routing_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=routing_proxy.base_url, api_key="ignored-no-keys", max_retries=0
    ) as c:
        yield c


def upstream_models(fake: FakeOpenAI) -> list[str]:
    return [r.json["model"] for r in fake.chat_requests]


def test_transient_failures_are_retried(rclient: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(500), status(502))
    raw = rclient.chat.completions.with_raw_response.create(
        model="retry-model", messages=USER_MESSAGES
    )
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    assert upstream_models(fake_openai) == ["r1", "r1", "r1"]
    assert raw.headers["x-llm-proxy-attempts"] == "3"


def test_retries_exhausted_is_502(rclient: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.default = status(500)
    with pytest.raises(openai.InternalServerError) as exc:
        rclient.chat.completions.create(model="exhaust-model", messages=USER_MESSAGES)
    assert exc.value.status_code == 502
    assert upstream_models(fake_openai) == ["x1", "x1", "x1"]


def test_failover_to_the_next_route(rclient: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(500), status(500), status(500))
    raw = rclient.chat.completions.with_raw_response.create(
        model="failover-model", messages=USER_MESSAGES
    )
    assert raw.parse().model == "failover-model"
    assert raw.headers["x-llm-proxy-route"] == "fake/f2"
    assert raw.headers["x-llm-proxy-attempts"] == "4"
    assert upstream_models(fake_openai) == ["f1", "f1", "f1", "f2"]


def test_upstream_429_parks_the_route_and_moves_on_at_once(
    rclient: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(retry_after=30))
    started = time.monotonic()
    raw = rclient.chat.completions.with_raw_response.create(
        model="park-model", messages=USER_MESSAGES
    )
    assert time.monotonic() - started < 1
    assert raw.headers["x-llm-proxy-route"] == "fake/p2"
    rclient.chat.completions.create(model="park-model", messages=USER_MESSAGES)
    assert upstream_models(fake_openai) == ["p1", "p2", "p2"]  # p1 stays parked


def test_client_errors_are_neither_retried_nor_failed_over(
    rclient: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(status(400, message="Invalid value for 'temperature'", param="temperature"))
    with pytest.raises(openai.BadRequestError) as exc:
        rclient.chat.completions.create(model="noretry-model", messages=USER_MESSAGES)
    assert "Invalid value for 'temperature'" in exc.value.message
    assert upstream_models(fake_openai) == ["n1"]


def test_context_length_exceeded_goes_to_fallbacks(
    rclient: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(context_length_exceeded())
    raw = rclient.chat.completions.with_raw_response.create(
        model="ctx-model", messages=USER_MESSAGES
    )
    assert raw.parse().model == "long-model"  # the public model that served
    assert raw.headers["x-llm-proxy-route"] == "fake/long"
    assert upstream_models(fake_openai) == ["c1", "long"]


def test_rule_rewrites_the_model(rclient: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    free = rclient.chat.completions.create(
        model="gpt-4o", messages=USER_MESSAGES, extra_headers={"x-tier": "free"}
    )
    paid = rclient.chat.completions.create(model="gpt-4o", messages=USER_MESSAGES)
    assert (free.model, paid.model) == ("cheap-model", "gpt-4o")
    assert upstream_models(fake_openai) == ["cheap", "big"]


def test_cache_hit_json_and_replayed_as_stream(
    rclient: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    messages = [{"role": "user", "content": f"cache me {time.time_ns()}"}]
    first = rclient.chat.completions.with_raw_response.create(
        model="cached-model", messages=messages, temperature=0
    )
    second = rclient.chat.completions.with_raw_response.create(
        model="cached-model", messages=messages, temperature=0
    )
    assert first.headers["x-llm-proxy-cache"] == "miss"
    assert second.headers["x-llm-proxy-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.parse().model == "cached-model"
    chunks = list(
        rclient.chat.completions.create(
            model="cached-model", messages=messages, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert len(fake_openai.chat_requests) == 1


def test_cache_control_no_cache_refreshes(rclient: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    messages = [{"role": "user", "content": f"refresh me {time.time_ns()}"}]
    rclient.chat.completions.create(model="cached-model", messages=messages, temperature=0)
    rclient.chat.completions.create(
        model="cached-model",
        messages=messages,
        temperature=0,
        extra_headers={"cache-control": "no-cache"},
    )
    assert len(fake_openai.chat_requests) == 2


def test_non_deterministic_requests_are_not_cached(
    rclient: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    messages = [{"role": "user", "content": f"random {time.time_ns()}"}]
    for _ in range(2):
        raw = rclient.chat.completions.with_raw_response.create(
            model="cached-model", messages=messages
        )
        assert raw.headers.get("x-llm-proxy-cache") != "hit"
    assert len(fake_openai.chat_requests) == 2
