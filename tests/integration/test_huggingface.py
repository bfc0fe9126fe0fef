"""HuggingFace upstreams through the running proxy, driven by the official SDK, against a fake
TGI / classic-API / HF-router server on loopback (tests/fakes/tgi_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fakes import tgi_upstream as tgi
from fakes.openai_upstream import DEFAULT_REPLY as OPENAI_REPLY
from fakes.openai_upstream import FakeOpenAI
from fakes.proxy_harness import (
    UPSTREAM_KEY,
    ProxyLauncher,
    RunningProxy,
    without_unimplemented_tuning,
)
from fakes.tgi_upstream import DEFAULT_REPLY, FakeTGI

from .conftest import WEATHER_TOOL, assert_openai_error

HF_TOKEN = "hf_integrationSECRET0123456789"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
CHATML_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hi<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def hf_policy(tgi_url: str, openai_url: str) -> dict[str, Any]:
    hf = {"type": "huggingface", "api_key": "${HUGGINGFACE_API_KEY}"}
    classic = {**hf, "api": "text-generation", "base_url": tgi_url, "chat_template": "chatml"}
    tgi_server = {**hf, "api": "tgi", "base_url": tgi_url, "chat_template": "llama3"}
    # Every failure test has a route of its own: parking or ejection never leaks across tests.
    tgi_routes = {
        name: {"routes": [{"upstream": "hf-tgi", "model": f"tgi-{name}"}]}
        for name in ("hf-loading", "hf-busy", "hf-invalid", "hf-stream-error", "hf-auth")
    }
    policy = {
        "server": {"drain_timeout": 1},
        "upstreams": {
            "hf-classic": {**classic, "headers": {"X-HF-Bill-To": "acme-org"}},
            "hf-tgi": {**tgi_server, "wait_for_model": False},
            "hf-router": {**hf, "api": "chat", "base_url": f"{tgi_url}/v1"},
            "hf-slow": {
                **tgi_server,
                "timeout": {"connect": 2, "first_token": 1, "idle": 1, "total": 2},
            },
            "openai": {"type": "openai", "base_url": openai_url, "api_key": UPSTREAM_KEY},
        },
        "models": {
            "hf-textgen": {"routes": [{"upstream": "hf-classic", "model": "acme/model-1"}]},
            "hf-tgi": {"routes": [{"upstream": "hf-tgi", "model": "tgi"}]},
            "hf-chat": {"routes": [{"upstream": "hf-router", "model": "acme/chat:fastest"}]},
            "hf/*": {"routes": [{"upstream": "hf-classic"}]},
            "hf-lenient": {
                "routes": [{"upstream": "hf-tgi", "model": "tgi", "drop_params": ["tools"]}]
            },
            "hf-cold-failover": {
                "strategy": "priority",
                "routes": [
                    {"upstream": "hf-tgi", "model": "tgi-cold"},
                    {"upstream": "openai", "model": "upstream-model-id"},
                ],
            },
            "hf-slow": {"routes": [{"upstream": "hf-slow", "model": "tgi-slow"}]},
            **tgi_routes,
        },
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05, "deadline": 30},
        "circuit_breaker": {"failures": 100},
        "cache": {"backend": "none"},
    }
    return without_unimplemented_tuning(policy)


@pytest.fixture(scope="session")
def fake_tgi_server() -> Iterator[FakeTGI]:
    with FakeTGI() as fake:
        yield fake


@pytest.fixture
def fake_tgi(fake_tgi_server: FakeTGI) -> Iterator[FakeTGI]:
    fake_tgi_server.reset()
    yield fake_tgi_server
    fake_tgi_server.reset()


@pytest.fixture(scope="module")
def hf_proxy(
    proxy_launcher: ProxyLauncher, fake_tgi_server: FakeTGI, fake_openai_server: FakeOpenAI
) -> RunningProxy:
    policy = hf_policy(fake_tgi_server.url, fake_openai_server.base_url)
    return proxy_launcher.start(policy, env={"HUGGINGFACE_API_KEY": HF_TOKEN})


@pytest.fixture
def client(hf_proxy: RunningProxy) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=hf_proxy.base_url, api_key="sk-any", max_retries=0, timeout=20
    ) as c:
        yield c


def collect(stream: openai.Stream[Any]) -> tuple[list[Any], str]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def assert_clean_stream(chunks: list[Any], model: str) -> None:
    """One id and created, role first and once, exactly one finish reason."""
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert all(c.model == model for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert sum(f is not None for f in finishes) == 1


# ---- text generation (classic API) and TGI ---------------------------------------------------


def test_plain_chat_through_the_classic_api(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="hf-textgen", messages=MESSAGES, temperature=0, top_p=1.0, max_tokens=50
    )
    completion = raw.parse()
    assert completion.model == "hf-textgen"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-llm-proxy-route"] == "hf-classic/acme/model-1"
    sent = fake_tgi.last
    assert sent.path == "/models/acme/model-1"
    assert sent.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert sent.headers["x-wait-for-model"] == "true"
    assert sent.headers["x-hf-bill-to"] == "acme-org"
    assert sent.json["inputs"] == CHATML_PROMPT
    parameters = sent.json["parameters"]
    assert parameters["do_sample"] is False and "temperature" not in parameters
    assert "top_p" not in parameters  # TGI would refuse 1.0 (the fake does: 422)
    assert parameters["max_new_tokens"] == 50 and parameters["return_full_text"] is False
    prompt_words = len(CHATML_PROMPT.split())  # the fake's x-prompt-tokens
    words = len(DEFAULT_REPLY.split())
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        prompt_words,
        words,
    )
    assert completion.usage.total_tokens == prompt_words + words


def test_plain_chat_through_a_tgi_server(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    completion = client.chat.completions.create(model="hf-tgi", messages=MESSAGES, seed=3)
    assert completion.choices[0].message.content == DEFAULT_REPLY
    sent = fake_tgi.last
    assert sent.path == "/generate"
    assert sent.json["inputs"].startswith("<|start_header_id|>system<|end_header_id|>")
    assert sent.json["parameters"]["seed"] == 3
    assert "x-wait-for-model" not in sent.headers


def test_stream_without_usage(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    chunks, text = collect(
        client.chat.completions.create(model="hf-tgi", messages=MESSAGES, stream=True)
    )
    assert text == DEFAULT_REPLY
    assert_clean_stream(chunks, "hf-tgi")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert fake_tgi.last.path == "/generate_stream"


def test_stream_with_usage(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    chunks, text = collect(
        client.chat.completions.create(
            model="hf-textgen",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert text == DEFAULT_REPLY
    assert_clean_stream(chunks, "hf-textgen")
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    words = len(DEFAULT_REPLY.split())
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(CHATML_PROMPT.split()), words + 1)
    assert fake_tgi.last.json["stream"] is True  # the classic API picks SSE by this flag


def test_a_backend_that_cannot_stream_is_replayed_as_one_chunk(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    fake_tgi.script(tgi.plain_json("whole answer"))
    chunks, text = collect(
        client.chat.completions.create(model="hf-textgen", messages=MESSAGES, stream=True)
    )
    assert text == "whole answer"
    assert_clean_stream(chunks, "hf-textgen")


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_are_removed(client: openai.OpenAI, fake_tgi: FakeTGI, stream: bool) -> None:
    if stream:
        chunks, text = collect(
            client.chat.completions.create(
                model="hf-tgi", messages=MESSAGES, stop=["TG"], stream=True
            )
        )
        finish = chunks[-1].choices[0].finish_reason
    else:
        completion = client.chat.completions.create(model="hf-tgi", messages=MESSAGES, stop="TG")
        text, finish = (
            completion.choices[0].message.content or "",
            completion.choices[0].finish_reason,
        )
    assert text == "Hello from the fake "  # TGI sent " TGI" (stop inside the token), then stopped
    assert finish == "stop"
    assert fake_tgi.last.json["parameters"]["stop"] == ["TG"]


def test_length_finish_reason_and_usage(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    completion = client.chat.completions.create(model="hf-tgi", messages=MESSAGES, max_tokens=2)
    assert completion.choices[0].message.content == "Hello from"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


def test_a_model_routed_by_pattern(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="hf/org/some-model-7b", messages=MESSAGES
    )
    assert raw.parse().model == "hf/org/some-model-7b"
    assert raw.headers["x-llm-proxy-route"] == "hf-classic/org/some-model-7b"
    assert fake_tgi.last.path == "/models/org/some-model-7b"


def test_what_the_mode_cannot_honour_is_a_400_before_any_upstream_call(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="hf-tgi", messages=MESSAGES, tools=[WEATHER_TOOL])
    error = assert_openai_error(exc.value.response.json())
    assert error["param"] == "tools" and error["type"] == "invalid_request_error"
    assert fake_tgi.requests == []


def test_a_route_may_drop_what_it_cannot_honour(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    completion = client.chat.completions.create(
        model="hf-lenient", messages=MESSAGES, tools=[WEATHER_TOOL]
    )
    assert completion.choices[0].message.content == DEFAULT_REPLY


# ---- errors and waits ------------------------------------------------------------------------


def test_hf_validation_error_is_a_400_with_hfs_message(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    fake_tgi.script(tgi.validation("Input validation error: `inputs` must not be empty"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="hf-invalid", messages=MESSAGES)
    assert "Input validation error: `inputs` must not be empty" in exc.value.message
    assert len(fake_tgi.requests) == 1  # the client's fault: no retry, no failover


def test_a_validation_event_inside_a_200_stream_is_a_400(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    message = "Input validation error: `best_of` != 1 is not allowed for this endpoint"
    fake_tgi.script(tgi.error_event_after(0, message, "validation"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="hf-invalid", messages=MESSAGES, stream=True)
    assert "best_of" in exc.value.message


def test_an_error_mid_stream_ends_it_with_an_error_event(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    fake_tgi.script(tgi.error_event_after(2, "Request failed during generation: OOM"))
    stream = client.chat.completions.create(model="hf-stream-error", messages=MESSAGES, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    assert type(exc.value) is openai.APIError  # in-band, not a dropped connection
    assert text == "Hello from"


def test_a_stream_cut_short_is_an_error(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    fake_tgi.script(tgi.end_after(3))
    stream = client.chat.completions.create(model="hf-stream-error", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)


def test_a_loading_model_hands_over_to_the_next_route(
    client: openai.OpenAI, fake_tgi: FakeTGI, fake_openai: FakeOpenAI
) -> None:
    fake_tgi.script(tgi.loading(7.5))
    raw = client.chat.completions.with_raw_response.create(
        model="hf-cold-failover", messages=MESSAGES
    )
    assert raw.parse().choices[0].message.content == OPENAI_REPLY
    assert raw.headers["x-llm-proxy-route"] == "openai/upstream-model-id"
    assert raw.headers["x-llm-proxy-attempts"] == "2"
    assert fake_tgi.last.path == "/generate"


def test_a_loading_model_with_no_other_route_says_when_to_retry(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    fake_tgi.script(tgi.loading(7.5))
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="hf-loading", messages=MESSAGES)
    assert exc.value.status_code in (502, 503)
    assert exc.value.response.headers["retry-after"] == "8"
    with pytest.raises(openai.APIStatusError) as again:
        client.chat.completions.create(model="hf-loading", messages=MESSAGES)
    assert again.value.status_code == 503  # the route is parked for the estimated time
    assert 0 < int(again.value.response.headers["retry-after"]) <= 8
    assert len(fake_tgi.requests) == 1


def test_hf_overloaded_is_a_rate_limit(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    fake_tgi.script(tgi.overloaded(retry_after=2))
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="hf-busy", messages=MESSAGES)
    assert exc.value.response.headers["retry-after"] == "2"


def test_refused_credentials_are_a_502_without_the_token(
    client: openai.OpenAI, fake_tgi: FakeTGI, hf_proxy: RunningProxy
) -> None:
    fake_tgi.script(tgi.unauthorized())
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="hf-auth", messages=MESSAGES)
    assert exc.value.status_code == 502
    assert "credentials" in exc.value.message
    assert HF_TOKEN not in exc.value.response.text
    assert "Invalid credentials in Authorization header" not in exc.value.response.text
    assert HF_TOKEN not in hf_proxy.log()


@pytest.mark.parametrize("stream", [False, True])
def test_the_routes_timeouts_apply(client: openai.OpenAI, fake_tgi: FakeTGI, stream: bool) -> None:
    fake_tgi.script(tgi.hang(3))
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="hf-slow", messages=MESSAGES, stream=stream)
    assert exc.value.status_code == 504


# ---- api: chat (the HF router, TGI's Messages API) ---------------------------------------------


def test_router_reply_is_normalised(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    completion = client.chat.completions.create(
        model="hf-chat", messages=MESSAGES, stop="TG", top_p=1.0, max_completion_tokens=40
    )
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hello from the fake "
    assert completion.choices[0].finish_reason == "stop"  # TGI said "stop_sequence"
    sent = fake_tgi.last
    assert sent.path == "/v1/chat/completions"
    assert next(iter(sent.json)) == "model" and sent.json["model"] == "acme/chat:fastest"
    assert sent.json["stop"] == ["TG"] and "top_p" not in sent.json
    assert sent.json["max_tokens"] == 40
    assert sent.headers["authorization"] == f"Bearer {HF_TOKEN}"


def test_router_nulls_are_dropped(hf_proxy: RunningProxy, fake_tgi: FakeTGI) -> None:
    body = {"model": "hf-chat", "messages": MESSAGES, "stream": None, "temperature": None}
    response = httpx.post(f"{hf_proxy.base_url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert "stream" not in fake_tgi.last.json and "temperature" not in fake_tgi.last.json


def test_router_stream_helper_gets_a_clean_message(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    with client.chat.completions.stream(model="hf-chat", messages=MESSAGES) as stream:
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    assert final.choices[0].message.role == "assistant"  # not "assistantassistant..."
    assert final.choices[0].message.content == DEFAULT_REPLY
    assert final.choices[0].finish_reason == "stop"
    assert_clean_stream(chunks, "hf-chat")


def test_router_tool_call_stream_gets_a_clean_call(
    client: openai.OpenAI, fake_tgi: FakeTGI
) -> None:
    with client.chat.completions.stream(
        model="hf-chat", messages=MESSAGES, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"  # TGI said "stop"
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_")  # not "000..."
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_router_stream_usage_only_when_asked(client: openai.OpenAI, fake_tgi: FakeTGI) -> None:
    chunks, text = collect(
        client.chat.completions.create(
            model="hf-chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert text == DEFAULT_REPLY
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    chunks, _ = collect(
        client.chat.completions.create(model="hf-chat", messages=MESSAGES, stream=True)
    )
    assert all(c.choices for c in chunks)
