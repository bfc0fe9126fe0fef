"""/v1/messages on Anthropic routes: the client's body passes through losslessly (only `model`
rewritten, the client's anthropic-version and anthropic-beta forwarded), answers and streams
come back with the public model name, count_tokens asks the upstream. Driven by the official
`anthropic` SDK (and raw HTTP where the bytes matter) against the fake Anthropic API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from fakes import anthropic_upstream as fake
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import DEFAULT_REPLY as OPENAI_REPLY
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import (
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    without_unimplemented_tuning,
)

ANTHROPIC_KEY = "sk-ant-native-SECRET0456"
CLIENT_KEY = "sk-client-native"
MODEL = "claude-native"
UPSTREAM_MODEL = "claude-sonnet-4-5"
BETA = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
WEATHER: Any = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def native_policy(anthropic_url: str, openai_url: str) -> dict[str, Any]:
    claude = {"type": "anthropic", "base_url": anthropic_url, "api_key": "${ANTHROPIC_API_KEY}"}
    policy = {
        "server": {"drain_timeout": 1},
        "upstreams": {
            "claude": claude,
            "openai": {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY},
        },
        "models": {
            MODEL: {"routes": [{"upstream": "claude", "model": UPSTREAM_MODEL}], "cache": False},
            "claude-cached": {"routes": [{"upstream": "claude", "model": "claude-cached-up"}]},
            "claude-or-openai": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "claude", "model": "claude-busy"},
                    {"upstream": "openai", "model": "upstream-model-id"},
                ],
                "cache": False,
            },
        },
        "keys": [{"name": "native", "key": CLIENT_KEY}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory", "ttl": 600},
    }
    return without_unimplemented_tuning(policy)


@pytest.fixture(scope="module")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as running:
        yield running


@pytest.fixture
def fake_claude(fake_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()


@pytest.fixture(scope="module")
def native_proxy(
    proxy_launcher: ProxyLauncher,
    fake_anthropic_server: FakeAnthropic,
    fake_openai_server: FakeOpenAI,
) -> RunningProxy:
    policy = native_policy(fake_anthropic_server.url, fake_openai_server.base_url)
    return proxy_launcher.start(policy, env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})


@pytest.fixture
def claude(native_proxy: RunningProxy) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=native_proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=20
    ) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_the_client_s_body_passes_through_with_only_model_rewritten(
    native_proxy: RunningProxy, fake_claude: FakeAnthropic
) -> None:
    body = (
        b'{"model": "claude-native", "max_tokens": 300,\n'
        b' "system": [{"type": "text", "text": "Be brief.",'
        b' "cache_control": {"type": "ephemeral"}}],\n'
        b' "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi",'
        b' "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],\n'
        b' "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},'
        b' "metadata": {"user_id": "u-1"}, "x_future": {"deep": [1.50E2, "\\u00e9"]}}'
    )
    headers = {
        "x-api-key": CLIENT_KEY,
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETA,
    }
    response = httpx.post(f"{native_proxy.url}/v1/messages", content=body, headers=headers)
    assert response.status_code == 200, response.text
    sent = fake_claude.last_request
    assert sent.json == {**json.loads(body), "model": UPSTREAM_MODEL}
    assert b'"x_future":{"deep": [1.50E2, "\\u00e9"]}' in sent.body  # values as written
    assert sent.headers["anthropic-beta"] == BETA
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    answer = response.json()
    assert answer == {**sent.response_json, "model": MODEL}
    assert response.headers["x-llm-proxy-route"] == f"claude/{UPSTREAM_MODEL}"


def test_the_sdk_s_create_and_stream_on_a_native_route(
    claude: anthropic.Anthropic, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.ok(thinking=True, cache_read=3), fake.ok(thinking=True))
    message = claude.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=user("Hi"),
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": BETA},
    )
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == fake.THINKING  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == 3
    assert fake_claude.last_request.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert fake_claude.last_request.headers["anthropic-beta"] == BETA

    with claude.messages.stream(model=MODEL, max_tokens=300, messages=user("Hi")) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "message_start"]
    assert [e.message.model for e in starts] == [MODEL]
    assert final.content[0].thinking == fake.THINKING  # type: ignore[union-attr]
    assert final.content[1].text == fake.DEFAULT_REPLY  # type: ignore[union-attr]
    assert final.usage.output_tokens == fake_claude.last_request.usage["output_tokens"]  # type: ignore[index]
    assert fake_claude.last_request.json["stream"] is True


def test_tools_round_trip_natively(claude: anthropic.Anthropic, fake_claude: FakeAnthropic) -> None:
    first = claude.messages.create(
        model=MODEL, max_tokens=100, messages=user("Weather in Paris?"), tools=[WEATHER]
    )
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.input == fake.TOOL_INPUT
    history: Any = [
        *user("Weather in Paris?"),
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}],
        },
    ]
    second = claude.messages.create(model=MODEL, max_tokens=100, messages=history, tools=[WEATHER])
    assert second.content[0].text == fake.DEFAULT_REPLY  # type: ignore[union-attr]
    assert fake_claude.last_request.json["messages"] == json.loads(json.dumps(history))


def test_count_tokens_asks_the_upstream(
    native_proxy: RunningProxy, claude: anthropic.Anthropic, fake_claude: FakeAnthropic
) -> None:
    raw = claude.messages.with_raw_response.count_tokens(
        model=MODEL,
        system="Count these words please",
        messages=user("one two three"),
        extra_headers={"anthropic-beta": BETA},
    )
    assert raw.parse().input_tokens == 7  # the fake counts words
    assert raw.headers["x-llm-proxy-route"] == f"claude/{UPSTREAM_MODEL}"
    [counted] = [r for r in fake_claude.requests if r.path == "/v1/messages/count_tokens"]
    assert counted.json["model"] == UPSTREAM_MODEL
    assert counted.headers["anthropic-beta"] == BETA


def test_the_upstream_s_400_is_the_client_s_bad_request(
    claude: anthropic.Anthropic, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.status(400, "messages.0: something Anthropic dislikes"))
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=MODEL, max_tokens=10, messages=user("Hi"))
    assert "something Anthropic dislikes" in str(caught.value)


def test_an_error_event_after_the_start_reaches_the_sdk(
    claude: anthropic.Anthropic, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.error_event_after(5, "api_error", "Internal server error"))
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(model=MODEL, max_tokens=100, messages=user("Hi")) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_an_overloaded_anthropic_route_fails_over_to_a_translated_one(
    claude: anthropic.Anthropic, fake_claude: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_claude.script(fake.overloaded())
    raw = claude.messages.with_raw_response.create(
        model="claude-or-openai", max_tokens=20, messages=user("Hi"), extra_body={"top_k": 3}
    )
    assert raw.headers["x-llm-proxy-route"] == "openai/upstream-model-id"
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    message = raw.parse()
    assert message.content[0].text == OPENAI_REPLY  # type: ignore[union-attr]
    assert "top_k" not in fake_openai.last_request.json


@pytest.mark.parametrize("stream_first", [True, False], ids=["stream-first", "json-first"])
def test_a_native_answer_is_cached_and_replayed_either_way(
    claude: anthropic.Anthropic, fake_claude: FakeAnthropic, stream_first: bool
) -> None:
    fake_claude.default = fake.ok(thinking=True)
    request: Any = {
        "model": "claude-cached",
        "max_tokens": 100,
        "messages": user(f"echo: native cache {int(stream_first)}"),
        "extra_body": {"temperature": 0},
    }

    def streamed() -> Any:
        with claude.messages.stream(**request) as stream:
            return stream.get_final_message()

    def whole() -> Any:
        return claude.messages.create(**request)

    first = streamed() if stream_first else whole()
    second = whole() if stream_first else streamed()
    assert len(fake_claude.message_requests) == 1
    assert [b.model_dump() for b in second.content] == [b.model_dump() for b in first.content]
    assert second.content[1].text == f"native cache {int(stream_first)}"
    assert second.model == "claude-cached" and second.id != first.id
    assert second.usage.output_tokens == first.usage.output_tokens
