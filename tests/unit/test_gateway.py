"""The in-process API: the gateway without HTTP, against the fake upstream on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import openai_upstream as fake
from fakes.openai_upstream import FakeOpenAI

from proxy import Gateway
from proxy.errors import (
    AuthenticationError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
    UpstreamNotConfiguredError,
    UpstreamRejectedError,
)
from proxy.wire import ChatCompletion, ChatCompletionChunk


def policy(base_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "primary": {"type": "openai", "base_url": base_url, "api_key": "sk-upstream-1234"},
            "backup": {"type": "openai", "base_url": base_url, "api_key": "sk-upstream-1234"},
            "missing": {"type": "openai", "api_key": "${LLM_PROXY_TEST_UNSET_KEY}"},
        },
        "models": {
            "chat": {"routes": [{"upstream": "primary", "model": "upstream-model-id"}]},
            "failover": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "primary", "model": "first"},
                    {"upstream": "backup", "model": "second"},
                ],
            },
            "dark": {"routes": [{"upstream": "missing", "model": "x"}]},
        },
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        **extra,
    }


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI) -> AsyncIterator[Gateway]:
    async with Gateway.from_dict(policy(fake_openai.base_url), env={}) as gw:
        yield gw


async def test_chat_with_a_string_message_returns_a_typed_completion(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "Hello from the fake"
    reply = await gateway.chat(model="chat", messages="Hi there")
    assert isinstance(reply, ChatCompletion)
    assert reply.model == "chat"
    assert reply.choices[0].message.content == "Hello from the fake"
    sent = fake_openai.last_request.json
    assert sent["model"] == "upstream-model-id"
    assert sent["messages"] == [{"role": "user", "content": "Hi there"}]


async def test_stream_yields_typed_chunks_and_usage_is_counted(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = "one two three"
    chunks = await gateway.chat(model="chat", messages="count", stream=True)
    assert not isinstance(chunks, ChatCompletion)
    received = [chunk async for chunk in chunks]
    assert all(isinstance(c, ChatCompletionChunk) and c.model == "chat" for c in received)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == "one two three"
    assert all(c.usage is None for c in received)  # the proxy asked for usage, then removed it
    tokens = {s["labels"]["kind"]: s["value"] for s in gateway.stats()["llm_proxy_tokens_total"]}
    assert tokens["completion"] > 0 and tokens["prompt"] > 0


async def test_failover_to_the_next_route_before_any_byte(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fake.status(500))
    reply = await gateway.chat(model="failover", messages="x")
    assert isinstance(reply, ChatCompletion)
    assert [r.json["model"] for r in fake_openai.chat_requests] == ["first", "second"]


async def test_errors_are_the_same_classes_the_http_layer_renders(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(ModelNotFoundError):
        await gateway.chat(model="nope", messages="x")
    with pytest.raises(UpstreamNotConfiguredError, match="LLM_PROXY_TEST_UNSET_KEY"):
        await gateway.chat(model="dark", messages="x")
    fake_openai.script(fake.context_length_exceeded())
    with pytest.raises(UpstreamRejectedError) as rejected:
        await gateway.chat(model="chat", messages="x")
    assert rejected.value.code == "context_length_exceeded"
    fake_openai.script(fake.garbage())
    with pytest.raises(UpstreamError):
        await gateway.chat(model="chat", messages="x")
    fake_openai.script(fake.rate_limited(retry_after=7))
    with pytest.raises(RateLimitError) as limited:
        await gateway.chat(model="chat", messages="x")
    assert limited.value.retry_after == 7
    calls = len(fake_openai.chat_requests)
    with pytest.raises(RateLimitError) as still:  # parked: answered without a call
        await gateway.chat(model="chat", messages="x")
    assert still.value.retry_after is not None and 6 < still.value.retry_after <= 7
    assert len(fake_openai.chat_requests) == calls


async def test_keys_apply_in_process(fake_openai: FakeOpenAI) -> None:
    data = policy(fake_openai.base_url, keys=[{"name": "a", "key": "sk-a", "models": ["chat"]}])
    async with Gateway.from_dict(data, env={}) as gateway:
        with pytest.raises(AuthenticationError):
            await gateway.chat(model="chat", messages="x")
        with pytest.raises(PermissionDeniedError):
            await gateway.chat(model="failover", messages="x", api_key="sk-a")
        reply = await gateway.chat(model="chat", messages="x", api_key="sk-a")
        assert isinstance(reply, ChatCompletion)


async def test_health_and_stats_report_state(gateway: Gateway) -> None:
    await gateway.chat(model="chat", messages="x")
    health = await gateway.health()
    assert health["ready"] is True
    assert health["upstreams"]["missing"] == {
        "type": "openai",
        "configured": False,
        "missing_env": "LLM_PROXY_TEST_UNSET_KEY",
    }
    requests = gateway.stats()["llm_proxy_requests_total"]
    labels = {"model": "chat", "route": "primary/upstream-model-id", "status": "200", "api": "chat"}
    assert {"labels": labels, "value": 1.0} in requests


async def test_a_cached_answer_streams_as_typed_chunks(fake_openai: FakeOpenAI) -> None:
    cache = {"backend": "memory"}
    async with Gateway.from_dict(policy(fake_openai.base_url, cache=cache), env={}) as gw:
        fake_openai.reply = "Cached once, replayed in chunks"
        first = await gw.chat(model="chat", messages="same question", temperature=0)
        assert isinstance(first, ChatCompletion)
        replay = await gw.chat(model="chat", messages="same question", temperature=0, stream=True)
        assert not isinstance(replay, ChatCompletion)
        chunks = [chunk async for chunk in replay]
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Cached once, replayed in chunks"
    assert len(fake_openai.chat_requests) == 1
