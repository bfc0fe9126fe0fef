"""The Anthropic Messages API front door through the running proxy, driven by the official
`anthropic` SDK, on routes that are not Anthropic's: the request is translated to chat
completions for the fake OpenAI upstream and the answer (JSON and streams) comes back as
Anthropic's. Errors use Anthropic's envelope so the SDK raises its usual classes."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from fakes import openai_upstream as fake
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import (
    CLIENT_KEY_A,
    CLIENT_KEY_B,
    MISSING_ENV_VAR,
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    sha256_hex,
    without_unimplemented_tuning,
)

MODEL = "claude-translated"
UPSTREAM_MODEL = "upstream-model-id"
MAX_BODY = 64 * 1024
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-a-png").decode()


def messages_policy(openai_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY}

    def on(model: str, **extra: Any) -> dict[str, Any]:
        return {"routes": [{"upstream": "openai", "model": model}], "cache": False, **extra}

    policy = {
        "server": {"drain_timeout": 1, "max_body_bytes": MAX_BODY},
        "upstreams": {
            "openai": upstream,
            "openai-slow": {
                **upstream,
                "timeout": {"connect": 2, "first_token": 1, "idle": 1, "total": 2},
            },
            "unconfigured": {**upstream, "api_key": "${" + MISSING_ENV_VAR + "}"},
        },
        "models": {
            MODEL: on(UPSTREAM_MODEL),
            "gpt-4o-mini": on("up-gpt"),
            "cached": {"routes": [{"upstream": "openai", "model": "up-cached"}]},
            "limited": on("up-limited", limits={"requests": "1/minute"}),
            "slow": {"routes": [{"upstream": "openai-slow", "model": "up-slow"}], "cache": False},
            "dark": {"routes": [{"upstream": "unconfigured", "model": "x"}]},
        },
        "keys": [
            {"name": "team-a", "key": CLIENT_KEY_A, "models": ["gpt-4o*"]},
            {"name": "team-b", "sha256": sha256_hex(CLIENT_KEY_B)},
        ],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "memory", "ttl": 600},
    }
    return without_unimplemented_tuning(policy)


@pytest.fixture(scope="module")
def messages_proxy(proxy_launcher: ProxyLauncher, fake_openai_server: FakeOpenAI) -> RunningProxy:
    return proxy_launcher.start(messages_policy(fake_openai_server.base_url))


@pytest.fixture
def claude(messages_proxy: RunningProxy) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=messages_proxy.url, api_key=CLIENT_KEY_B, max_retries=0, timeout=20
    ) as c:
        yield c


@pytest.fixture
def http(messages_proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=messages_proxy.url, timeout=10) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    assert body["error"]["type"] == kind, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert response.headers["request-id"] == response.headers["x-request-id"]
    return str(body["error"]["message"])


# ---- JSON --------------------------------------------------------------------------------------


def test_a_message_is_translated_to_chat_and_back(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        messages=user("Say hello"),
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 5},  # the SDK has no keywords
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == fake.DEFAULT_REPLY  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    sent = fake_openai.last_request
    assert (message.usage.input_tokens, message.usage.output_tokens) == (
        sent.usage["prompt_tokens"],  # type: ignore[index]
        sent.usage["completion_tokens"],  # type: ignore[index]
    )
    assert raw.headers["x-llm-proxy-route"] == f"openai/{UPSTREAM_MODEL}"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert sent.json == {
        "model": UPSTREAM_MODEL,
        "messages": [
            {"role": "system", "content": "Be brief.\nBe kind."},
            {"role": "user", "content": "Say hello"},
        ],
        "max_tokens": 50,
        "stop": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
    }  # top_k and metadata have no chat equivalent
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_images_as_base64_and_url_become_content_parts(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    content: Any = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    claude.messages.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": content}]
    )
    assert fake_openai.last_request.json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_tools_and_tool_results_round_trip(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    first = claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=user("Weather in Paris?"),
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    sent = fake_openai.last_request.json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        }
    ]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
    assert first.stop_reason == "tool_use"
    [call] = [block for block in first.content if block.type == "tool_use"]
    assert call.id.startswith("call_fake") and call.name == "get_weather"
    assert call.input == fake.TOOL_ARGUMENTS

    history: Any = [
        *user("Weather in Paris?"),
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_other",
                    "content": [{"type": "text", "text": "no such city"}],
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    claude.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=history,
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    sent = fake_openai.last_request.json
    arguments = json.dumps(fake.TOOL_ARGUMENTS, separators=(",", ":"))
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
        {"role": "tool", "tool_call_id": "toolu_other", "content": "Error: no such city"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_what_chat_has_no_equivalent_for_is_a_400_before_any_call(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    document: Any = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(
            model=MODEL,
            max_tokens=20,
            messages=[{"role": "user", "content": [document]}],
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages[0].content[0].type" in str(caught.value)
    assert fake_openai.requests == []


# ---- streams -----------------------------------------------------------------------------------


def test_a_stream_in_anthropic_s_event_order(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    with claude.messages.stream(model=MODEL, max_tokens=50, messages=user("Hi")) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == fake.DEFAULT_REPLY and len(texts) > 3
    assert final.model == MODEL and final.stop_reason == "end_turn"
    assert final.content[0].text == fake.DEFAULT_REPLY  # type: ignore[union-attr]
    usage = fake_openai.last_request.usage
    assert usage is not None
    assert final.usage.output_tokens == usage["completion_tokens"]
    assert final.usage.input_tokens == usage["prompt_tokens"]
    assert fake_openai.last_request.json["stream_options"] == {"include_usage": True}


def test_the_raw_stream_names_every_event(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    body = {"model": MODEL, "max_tokens": 50, "messages": user("Hi"), "stream": True}
    with http.stream(
        "POST", "/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY_B}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    datas = [json.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames]
    assert [d["type"] for d in datas] == names
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert datas[0]["message"]["model"] == MODEL and datas[0]["message"]["content"] == []
    assert datas[-2]["delta"]["stop_reason"] == "end_turn"


def test_a_tool_call_streams_as_input_json_deltas(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    with claude.messages.stream(
        model=MODEL,
        max_tokens=50,
        messages=user("Weather?"),
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e for e in events if e.type == "content_block_delta"]
    assert deltas and all(d.delta.type == "input_json_delta" for d in deltas)
    assert final.stop_reason == "tool_use"
    [call] = final.content
    assert call.type == "tool_use" and call.input == fake.TOOL_ARGUMENTS


def test_a_failure_after_the_start_is_an_error_event(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(fake.drop_after(3))
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(model=MODEL, max_tokens=50, messages=user("Hi")) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts  # what came before the failure reached the client
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


# ---- errors ------------------------------------------------------------------------------------


def test_each_error_is_the_sdk_s_class(
    messages_proxy: RunningProxy, claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    with (
        anthropic.Anthropic(
            base_url=messages_proxy.url, api_key="sk-wrong", max_retries=0
        ) as stranger,
        pytest.raises(anthropic.AuthenticationError),
    ):
        stranger.messages.create(model=MODEL, max_tokens=5, messages=user("Hi"))
    with (
        anthropic.Anthropic(
            base_url=messages_proxy.url, api_key=CLIENT_KEY_A, max_retries=0
        ) as team_a,
        pytest.raises(anthropic.PermissionDeniedError),
    ):
        team_a.messages.create(model=MODEL, max_tokens=5, messages=user("Hi"))
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=user("Hi"))
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(
            model=MODEL,
            max_tokens=5,
            messages=[{"role": "system", "content": "Hi"}],  # type: ignore[list-item]
        )
    with pytest.raises(anthropic.ContentTooLargeError):
        claude.messages.create(model=MODEL, max_tokens=5, messages=user("x" * MAX_BODY))
    fake_openai.script(fake.status(500))
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude.messages.create(model=MODEL, max_tokens=5, messages=user("Hi"))
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.ServiceUnavailableError) as dark:
        claude.messages.create(model="dark", max_tokens=5, messages=user("Hi"))
    assert dark.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    fake_openai.script(fake.hang(3))
    with pytest.raises(anthropic.GatewayTimeoutError):
        claude.messages.create(model="slow", max_tokens=5, messages=user("Hi"))


def test_the_proxy_s_own_limit_is_a_rate_limit_error_with_retry_after(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    claude.messages.create(model="limited", max_tokens=5, messages=user("Hi"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="limited", max_tokens=5, messages=user("Hi"))
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert len(fake_openai.requests) == 1


def test_max_tokens_is_required(http: httpx.Client) -> None:
    body = {"model": MODEL, "messages": user("Hi")}
    response = http.post("/v1/messages", json=body, headers={"x-api-key": CLIENT_KEY_B})
    assert "max_tokens" in assert_anthropic_error(response, 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": CLIENT_KEY_B}, 200),
        ({"authorization": f"Bearer {CLIENT_KEY_B}"}, 200),
        ({"x-api-key": CLIENT_KEY_B, "authorization": "Bearer sk-wrong"}, 200),
        ({"x-api-key": "sk-wrong"}, 401),
        ({}, 401),
    ],
)
def test_the_key_comes_in_x_api_key_or_as_a_bearer_token(
    http: httpx.Client, fake_openai: FakeOpenAI, headers: dict[str, str], status: int
) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": user("Hi")}
    response = http.post("/v1/messages", json=body, headers=headers)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_anthropic_error(response, 401, "authentication_error")


def test_errors_before_any_handler_use_anthropic_s_envelope(http: httpx.Client) -> None:
    assert_anthropic_error(http.get("/v1/messages/nowhere"), 404, "not_found_error")
    response = http.get("/v1/messages", headers={"x-api-key": CLIENT_KEY_B})
    assert_anthropic_error(response, 405, "invalid_request_error")
    assert "POST" in response.headers["allow"]


# ---- count_tokens, cache, metrics --------------------------------------------------------------


def test_count_tokens_is_the_proxy_s_estimate_on_a_translated_route(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    text = "a" * 400  # 100 tokens by the estimate, + 4 for the message, + 4 for the system
    counted = claude.messages.count_tokens(model=MODEL, system="abcd", messages=user(text))
    assert counted.input_tokens == 100 + 1 + 4 + 4
    assert fake_openai.requests == []
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="nope", messages=user("Hi"))


def test_count_tokens_is_not_limited(claude: anthropic.Anthropic) -> None:
    for _ in range(3):
        claude.messages.count_tokens(model="limited", messages=user("Hi"))


@pytest.mark.parametrize("stream_first", [False, True], ids=["json-first", "stream-first"])
def test_a_cache_hit_is_replayed_as_an_anthropic_stream_and_back(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI, stream_first: bool
) -> None:
    asked: Any = user(f"echo: cached answer number {int(stream_first)} in several pieces")
    request: Any = {
        "model": "cached",
        "max_tokens": 50,
        "messages": asked,
        "extra_body": {"temperature": 0},
    }

    def streamed() -> tuple[Any, str]:
        with claude.messages.stream(**request) as stream:
            text = "".join(stream.text_stream)
            return stream.get_final_message(), text

    def whole() -> tuple[Any, str]:
        raw = claude.messages.with_raw_response.create(**request)
        message = raw.parse()
        return message, raw.headers["x-llm-proxy-cache"]

    if stream_first:
        first, text = streamed()
        second, cache = whole()
        assert cache == "hit"
    else:
        first, cache = whole()
        assert cache == "miss"
        second, text = streamed()
    assert len(fake_openai.requests) == 1
    assert text == first.content[0].text == second.content[0].text
    assert first.id != second.id and second.id.startswith("msg_")
    assert second.usage.output_tokens == first.usage.output_tokens
    assert second.stop_reason == first.stop_reason == "end_turn"


def test_metrics_and_the_access_line_name_the_api(
    messages_proxy: RunningProxy, claude: anthropic.Anthropic, http: httpx.Client
) -> None:
    raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=5, messages=user("Hi"))
    request_id = raw.headers["request-id"]
    counted = [
        line
        for line in http.get("/metrics").text.splitlines()
        if line.startswith("llm_proxy_requests_total{") and f'model="{MODEL}"' in line
    ]
    assert counted and all('api="messages"' in line for line in counted), counted
    line = messages_proxy.wait_for_log(request_id)
    assert any(f"messages 200 model={MODEL}" in row for row in line.splitlines())
