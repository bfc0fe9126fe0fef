"""`type: anthropic` upstreams through the running proxy, driven by the official OpenAI SDK,
against a fake Anthropic Messages API on loopback (tests/fakes/anthropic_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from fakes import anthropic_upstream as fake
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import DEFAULT_REPLY as OPENAI_REPLY
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import (
    REPO_ROOT,
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    without_unimplemented_tuning,
)
from openai.lib.streaming.chat import ChatCompletionStreamState

from .conftest import WEATHER_TOOL, assert_openai_error

ANTHROPIC_KEY = "sk-ant-integration-SECRET0123"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


def anthropic_policy(anthropic_url: str, openai_url: str) -> dict[str, Any]:
    claude = {"type": "anthropic", "base_url": anthropic_url, "api_key": "${ANTHROPIC_API_KEY}"}
    openai_first = {"upstream": "openai", "model": "upstream-model-id"}

    def failing_over(model: str) -> dict[str, Any]:
        return {
            "strategy": "priority",
            "routes": [{"upstream": "claude", "model": model}, openai_first],
        }

    # Every failure test has a route of its own: parking or ejection never leaks across tests.
    policy = {
        "server": {"drain_timeout": 1},
        "upstreams": {
            "claude": claude,
            "openai": {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY},
        },
        "models": {
            "claude-test": {"routes": [{"upstream": "claude", "model": "claude-sonnet-4-5"}]},
            "claude-*": {"routes": [{"upstream": "claude", "model": "claude-*"}]},
            "claude-busy": failing_over("claude-busy"),
            "claude-busy-stream": failing_over("claude-busy-stream"),
            "claude-parked": failing_over("claude-parked"),
            "claude-limited": {"routes": [{"upstream": "claude", "model": "claude-limited"}]},
            "claude-auth": {"routes": [{"upstream": "claude", "model": "claude-auth"}]},
            "claude-long": {
                "routes": [{"upstream": "claude", "model": "claude-long"}],
                "fallbacks": ["long-context"],
            },
            "long-context": {"routes": [openai_first]},
        },
        # two calls per route: a 529 is retried once before the next route
        "retry": {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }
    return without_unimplemented_tuning(policy)


@pytest.fixture(scope="session")
def fake_anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as running:
        yield running


@pytest.fixture
def fake_claude(fake_anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_anthropic_server.reset()
    yield fake_anthropic_server
    fake_anthropic_server.reset()


@pytest.fixture(scope="module")
def claude_proxy(
    proxy_launcher: ProxyLauncher,
    fake_anthropic_server: FakeAnthropic,
    fake_openai_server: FakeOpenAI,
) -> RunningProxy:
    policy = anthropic_policy(fake_anthropic_server.url, fake_openai_server.base_url)
    return proxy_launcher.start(policy, env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})


@pytest.fixture
def client(claude_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=claude_proxy.base_url, api_key="sk-any", max_retries=0, timeout=20
    ) as c:
        yield c


def final_of(chunks: list[Any]) -> Any:
    state: ChatCompletionStreamState = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    return state.get_final_completion()


# ---- chat, JSON and streams ----------------------------------------------------------------------


def test_chat_is_translated_to_messages_and_back(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude-test", messages=MESSAGES, max_tokens=50, temperature=0.3, user="u-1"
    )
    reply = raw.parse()
    assert reply.model == "claude-test"
    assert reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.content == fake.DEFAULT_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 6)
    assert raw.headers["x-llm-proxy-route"] == "claude/claude-sonnet-4-5"
    sent = fake_claude.last_request
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
        "system": "Be brief.",
        "temperature": 0.3,
        "metadata": {"user_id": "u-1"},
    }


def test_a_claude_pattern_sends_the_name_as_asked(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude-opus-4-1", messages=MESSAGES
    )
    assert raw.parse().model == "claude-opus-4-1"
    assert fake_claude.last_request.json["model"] == "claude-opus-4-1"
    assert fake_claude.last_request.json["max_tokens"] == 4096  # the default cap
    assert raw.headers["x-llm-proxy-route"] == "claude/claude-opus-4-1"


def test_a_stream_with_usage(client: openai.OpenAI, fake_claude: FakeAnthropic) -> None:
    fake_claude.script(fake.ok(thinking=True, cache_read=3))
    chunks = list(
        client.chat.completions.create(
            model="claude-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert fake_claude.last_request.json["stream"] is True
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {"claude-test"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake.DEFAULT_REPLY  # the thinking block left out
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 4 + 3  # cached input counts
    assert chunks[-1].usage.completion_tokens == 6


def test_a_stream_without_usage_gets_none(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    chunks = list(
        client.chat.completions.create(model="claude-test", messages=MESSAGES, stream=True)
    )
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake.DEFAULT_REPLY


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_tool_results_round_trip(
    client: openai.OpenAI, fake_claude: FakeAnthropic, stream: bool
) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    tools: Any = [WEATHER_TOOL]
    if stream:
        first = final_of(
            list(
                client.chat.completions.create(
                    model="claude-test", messages=ask, tools=tools, stream=True
                )
            )
        )
    else:
        first = client.chat.completions.create(model="claude-test", messages=ask, tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == fake.TOOL_INPUT
    assert fake_claude.last_request.json["tools"][0]["input_schema"]["required"] == ["city"]

    history: Any = [
        *ask,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 C and sunny"},
    ]
    second = client.chat.completions.create(model="claude-test", messages=history, tools=tools)
    assert second.choices[0].message.content == fake.DEFAULT_REPLY  # the fake took the pairing
    turns = fake_claude.last_request.json["messages"]
    assert turns[-1]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "21 C and sunny"}
    ]
    assert turns[-2]["content"][-1]["type"] == "tool_use"


def test_tool_choice_and_parallel_tool_calls(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    client.chat.completions.create(
        model="claude-test",
        messages=MESSAGES,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert fake_claude.last_request.json["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


def test_images_are_sent_as_base64_and_url_sources(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    content: Any = [
        {"type": "text", "text": "Describe both"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    client.chat.completions.create(
        model="claude-test", messages=[{"role": "user", "content": content}]
    )
    blocks = fake_claude.last_request.json["messages"][0]["content"]
    assert [b["source"] for b in blocks[1:]] == [
        {"type": "base64", "media_type": "image/png", "data": PNG},
        {"type": "url", "url": "https://example.com/cat.jpg"},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences(client: openai.OpenAI, fake_claude: FakeAnthropic, stream: bool) -> None:
    args: Any = {"model": "claude-test", "messages": MESSAGES, "stop": ["fake"]}
    if stream:
        chunks = list(client.chat.completions.create(**args, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        choice = client.chat.completions.create(**args).choices[0]
        text, finish = choice.message.content or "", choice.finish_reason
    assert fake_claude.last_request.json["stop_sequences"] == ["fake"]
    assert (text, finish) == ("Hello from the ", "stop")


@pytest.mark.parametrize("stream", [False, True])
def test_a_max_tokens_stop_is_length(
    client: openai.OpenAI, fake_claude: FakeAnthropic, stream: bool
) -> None:
    args: Any = {"model": "claude-test", "messages": MESSAGES, "max_completion_tokens": 2}
    if stream:
        chunks = list(client.chat.completions.create(**args, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        choice = client.chat.completions.create(**args).choices[0]
        text, finish = choice.message.content or "", choice.finish_reason
    assert fake_claude.last_request.json["max_tokens"] == 2
    assert (text, finish) == ("Hello from", "length")


def test_a_refusal_is_a_content_filter_finish(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.ok("I can't help with that.", stop_reason="refusal"))
    reply = client.chat.completions.create(model="claude-test", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "content_filter"


# ---- what the Messages API cannot honour -------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {}},
                }
            },
            "response_format",
        ),
        ({"n": 2}, "n"),
    ],
)
def test_what_messages_cannot_honour_is_a_400_before_any_call(
    client: openai.OpenAI, fake_claude: FakeAnthropic, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-test", messages=MESSAGES, **fields)
    assert caught.value.param == param
    assert param in caught.value.message
    assert fake_claude.message_requests == []


# ---- upstream failures ---------------------------------------------------------------------------


def test_refused_credentials_are_a_502_without_the_upstream_text(
    client: openai.OpenAI, fake_claude: FakeAnthropic, claude_proxy: RunningProxy
) -> None:
    fake_claude.script(fake.invalid_api_key())
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="claude-auth", messages=MESSAGES)
    assert caught.value.status_code == 502
    error = assert_openai_error(caught.value.response.json())
    assert error["type"] == "upstream_auth_error"
    assert "x-api-key" not in error["message"] and ANTHROPIC_KEY not in error["message"]
    assert ANTHROPIC_KEY not in claude_proxy.log()


def test_529_is_retried_then_fails_over(
    client: openai.OpenAI, fake_claude: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_claude.script(fake.overloaded(), fake.overloaded())
    raw = client.chat.completions.with_raw_response.create(model="claude-busy", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == OPENAI_REPLY
    assert raw.headers["x-llm-proxy-attempts"] == "3"
    assert raw.headers["x-llm-proxy-route"] == "openai/upstream-model-id"
    assert len(fake_claude.message_requests) == 2


def test_an_overloaded_stream_before_any_content_fails_over(
    client: openai.OpenAI, fake_claude: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_claude.script(fake.error_event_after(2), fake.error_event_after(2))
    chunks = list(
        client.chat.completions.create(model="claude-busy-stream", messages=MESSAGES, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == OPENAI_REPLY
    assert len(fake_claude.message_requests) == 2 and len(fake_openai.chat_requests) == 1


def test_an_error_event_mid_stream_ends_the_stream_in_band(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.error_event_after(6, "api_error", "Internal server error"))
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="claude-test", messages=MESSAGES, stream=True
        ):
            seen.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(seen) == "Hello from the"  # the three deltas before the error


def test_429_parks_the_route_and_the_next_serves(
    client: openai.OpenAI, fake_claude: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_claude.script(fake.rate_limited(30))
    for _ in range(2):
        reply = client.chat.completions.create(model="claude-parked", messages=MESSAGES)
        assert reply.choices[0].message.content == OPENAI_REPLY
    assert len(fake_claude.message_requests) == 1  # parked: the second went elsewhere at once


def test_429_with_no_other_route_is_a_429_with_retry_after(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    fake_claude.script(fake.rate_limited(30))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="claude-limited", messages=MESSAGES)
    assert 29 <= int(caught.value.response.headers["retry-after"]) <= 30


def test_a_400_is_the_client_s_error_with_anthropic_s_message(
    client: openai.OpenAI, fake_claude: FakeAnthropic
) -> None:
    message = "temperature: range: 0..1"
    fake_claude.script(fake.status(400, message))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-test", messages=MESSAGES, temperature=1.5)
    assert message in caught.value.message
    assert len(fake_claude.message_requests) == 1  # never retried


def test_a_prompt_too_long_goes_to_the_fallbacks(
    client: openai.OpenAI, fake_claude: FakeAnthropic, fake_openai: FakeOpenAI
) -> None:
    fake_claude.script(fake.prompt_too_long())
    raw = client.chat.completions.with_raw_response.create(model="claude-long", messages=MESSAGES)
    assert raw.parse().model == "long-context"
    assert raw.headers["x-llm-proxy-route"] == "openai/upstream-model-id"


# ---- the fake itself, and the default policy -----------------------------------------------------


def test_the_fake_speaks_what_the_anthropic_sdk_reads(fake_claude: FakeAnthropic) -> None:
    """The official SDK's stream accumulator takes the fake's events: the wire format is real."""
    with anthropic.Anthropic(base_url=fake_claude.url, api_key="k", max_retries=0) as sdk:
        tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
        with sdk.messages.stream(
            model="claude-x",
            max_tokens=100,
            tools=tools,
            messages=[{"role": "user", "content": "hi"}],
        ) as stream:
            message = stream.get_final_message()
        count = sdk.messages.count_tokens(
            model="claude-x", messages=[{"role": "user", "content": "one two"}]
        )
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == fake.TOOL_INPUT  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert count.input_tokens == 2


def test_the_default_policy_starts_without_anthropic_api_key(start_proxy: Any) -> None:
    """The shipped proxy.yaml: Claude models answer 503 naming the variable to set."""
    policy = yaml.safe_load((REPO_ROOT / "proxy.yaml").read_text())
    proxy = start_proxy(policy)
    for model in ("claude-sonnet-4-5", "claude-opus-4-1"):
        resp = httpx.post(
            f"{proxy.base_url}/chat/completions",
            json={"model": model, "messages": MESSAGES},
            timeout=10,
        )
        assert resp.status_code == 503
        error = assert_openai_error(resp.json())
        assert error["code"] == "upstream_not_configured"
        assert "ANTHROPIC_API_KEY" in error["message"]
