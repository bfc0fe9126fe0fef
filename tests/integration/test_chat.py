"""Chat completions through the real proxy, driven by the official SDK: what the client gets
and what the upstream was sent."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    TOOL_ARGUMENTS,
    FakeOpenAI,
    odd_sse_framing,
    slow_stream,
)
from fakes.proxy_harness import CLIENT_KEY_B, UPSTREAM_KEY, RunningProxy

from .conftest import USER_MESSAGES, WEATHER_TOOL

PUBLIC = "gpt-4o-mini"
UPSTREAM_MODEL = "upstream-model-id"


def assert_forwarded_to_upstream(fake: FakeOpenAI, model: str = UPSTREAM_MODEL) -> dict:
    rec = fake.last_request
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.json["model"] == model
    assert rec.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY_B not in str(rec.headers)
    return rec.json


# ---- JSON


def test_json_completion(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model=PUBLIC, messages=USER_MESSAGES)

    rec = fake_openai.last_request
    assert completion.object == "chat.completion"
    assert completion.model == PUBLIC  # the public name, never the upstream id
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == rec.usage
    assert_forwarded_to_upstream(fake_openai)
    assert len(fake_openai.chat_requests) == 1


async def test_async_json_completion(
    async_client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    completion = await async_client.chat.completions.create(model=PUBLIC, messages=USER_MESSAGES)
    assert completion.model == PUBLIC
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == fake_openai.last_request.usage
    assert_forwarded_to_upstream(fake_openai)


def test_body_forwarded_untouched_but_model(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    body = {
        "model": PUBLIC,
        "messages": USER_MESSAGES,
        "temperature": 0.3,
        "some_future_field": {"a": 1, "nested": [1, "two", None, {"x": True}]},
        "logit_bias": {"50256": -100},
        "metadata": {"k": "v"},
    }
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    forwarded = assert_forwarded_to_upstream(fake_openai)
    assert forwarded == {**body, "model": UPSTREAM_MODEL}


def test_unknown_field_via_sdk_extra_body(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.chat.completions.create(
        model=PUBLIC, messages=USER_MESSAGES, extra_body={"some_future_field": {"a": 1}}
    )
    forwarded = assert_forwarded_to_upstream(fake_openai)
    assert forwarded["some_future_field"] == {"a": 1}
    assert forwarded["messages"] == USER_MESSAGES


def test_pattern_model_reaches_upstream_as_the_matched_part(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="openai/foo", messages=USER_MESSAGES
    )
    completion = raw.parse()
    assert_forwarded_to_upstream(fake_openai, model="foo")
    assert completion.model == "openai/foo"
    assert raw.headers["x-llm-proxy-route"] == "fake/foo"


def test_pattern_star_matches_slashes(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    client.chat.completions.create(model="openai/org/model-x", messages=USER_MESSAGES)
    assert_forwarded_to_upstream(fake_openai, model="org/model-x")


# ---- streams


def test_stream_with_usage(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC,
            messages=USER_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    rec = fake_openai.last_request
    assert all(c.model == PUBLIC for c in chunks)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert [c.choices[0].delta.role for c in chunks if c.choices].count("assistant") == 1
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump(exclude_none=True) == rec.usage
    assert rec.json["stream"] is True
    assert_forwarded_to_upstream(fake_openai)


def test_stream_without_include_usage_has_no_usage_chunk(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    chunks = list(client.chat.completions.create(model=PUBLIC, messages=USER_MESSAGES, stream=True))
    assert chunks, "no chunks"
    assert all(c.choices for c in chunks), "a usage chunk the client did not ask for"
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the proxy asks for usage anyway (for accounting) and strips it on the way back
    assert fake_openai.last_request.json["stream_options"]["include_usage"] is True


async def test_async_stream_with_usage(
    async_client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    stream = await async_client.chat.completions.create(
        model=PUBLIC, messages=USER_MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == fake_openai.last_request.usage
    assert all(c.model == PUBLIC for c in chunks)


def test_stream_sse_framing(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    """Raw bytes: text/event-stream, `data: {...}` events, ends with `data: [DONE]`."""
    body = {"model": PUBLIC, "messages": USER_MESSAGES, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    events = [e for e in raw.replace("\r\n", "\n").split("\n\n") if e.strip()]
    data = [e.removeprefix("data:").strip() for e in events if e.startswith("data:")]
    assert data[-1] == "[DONE]"
    parsed = [json.loads(d) for d in data[:-1]]
    assert all(p["model"] == PUBLIC for p in parsed)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in parsed) == DEFAULT_REPLY


# ---- tools


def test_tool_call_json(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(
        model=PUBLIC, messages=USER_MESSAGES, tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    upstream_call = fake_openai.last_request.response_json["choices"][0]["message"]["tool_calls"][0]
    assert calls[0].id == upstream_call["id"]
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == upstream_call["function"]["arguments"]
    assert json.loads(calls[0].function.arguments) == TOOL_ARGUMENTS
    assert fake_openai.last_request.json["tools"] == [WEATHER_TOOL]


def test_tool_call_stream_helper_accumulates_arguments(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    with client.chat.completions.stream(
        model=PUBLIC, messages=USER_MESSAGES, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"  # not "get_weatherget_weather"
    assert calls[0].id.startswith("call_fake") and calls[0].id.count("call_") == 1
    assert json.loads(calls[0].function.arguments) == TOOL_ARGUMENTS
    assert choice.message.role == "assistant"
    assert final.model == PUBLIC


async def test_tool_call_async_stream_helper(async_client: openai.AsyncOpenAI) -> None:
    async with async_client.chat.completions.stream(
        model=PUBLIC, messages=USER_MESSAGES, tools=[WEATHER_TOOL]
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert json.loads(calls[0].function.arguments) == TOOL_ARGUMENTS


# ---- n > 1


def test_n2_json(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model=PUBLIC, messages=USER_MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == [DEFAULT_REPLY, f"{DEFAULT_REPLY} #1"]
    assert completion.usage is not None
    assert completion.usage.model_dump(exclude_none=True) == fake_openai.last_request.usage
    assert fake_openai.last_request.json["n"] == 2


def test_n2_stream(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC,
            messages=USER_MESSAGES,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [c for c in chunks if c.choices]
    assert all(len(c.choices) == 1 for c in with_choices)
    for i, expected in ((0, DEFAULT_REPLY), (1, f"{DEFAULT_REPLY} #1")):
        mine = [c.choices[0] for c in with_choices if c.choices[0].index == i]
        assert "".join(ch.delta.content or "" for ch in mine) == expected
        assert [ch.delta.role for ch in mine].count("assistant") == 1
        assert [ch.finish_reason for ch in mine if ch.finish_reason] == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == fake_openai.last_request.usage


def test_n2_stream_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=PUBLIC, messages=USER_MESSAGES, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == [DEFAULT_REPLY, f"{DEFAULT_REPLY} #1"]
    assert [c.finish_reason for c in final.choices] == ["stop", "stop"]


# ---- headers


def test_request_id_echoed_and_logged(client: openai.OpenAI, proxy: RunningProxy) -> None:
    request_id = f"test-{uuid.uuid4()}"
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC, messages=USER_MESSAGES, extra_headers={"x-request-id": request_id}
    )
    assert raw.headers["x-request-id"] == request_id
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY
    proxy.wait_for_log(request_id)


def test_request_id_generated_when_absent(client: openai.OpenAI, proxy: RunningProxy) -> None:
    first = client.chat.completions.with_raw_response.create(model=PUBLIC, messages=USER_MESSAGES)
    second = client.chat.completions.with_raw_response.create(model=PUBLIC, messages=USER_MESSAGES)
    ids = [first.headers.get("x-request-id"), second.headers.get("x-request-id")]
    assert all(ids) and ids[0] != ids[1]
    proxy.wait_for_log(ids[1])


def test_stream_headers(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=PUBLIC,
        messages=USER_MESSAGES,
        stream=True,
        extra_headers={"x-request-id": "stream-req-1"},
    ) as resp:
        assert resp.headers["x-request-id"] == "stream-req-1"
        assert resp.headers["x-llm-proxy-route"] == f"fake/{UPSTREAM_MODEL}"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == DEFAULT_REPLY


def test_route_and_attempts_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=PUBLIC, messages=USER_MESSAGES)
    assert raw.headers["x-llm-proxy-route"] == f"fake/{UPSTREAM_MODEL}"
    assert raw.headers["x-llm-proxy-attempts"] == "1"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER_MESSAGES)
    assert raw.headers["x-llm-proxy-route"] == "fake/upstream-gpt-4o"
    assert raw.parse().model == "gpt-4o"


def test_upstream_rate_limit_headers_not_forwarded(client: openai.OpenAI) -> None:
    """The fake sends x-ratelimit-*; they describe the proxy's upstream account, not the
    caller, and this caller has no proxy limit: no x-ratelimit-* at all."""
    raw = client.chat.completions.with_raw_response.create(model=PUBLIC, messages=USER_MESSAGES)
    assert not [h for h in raw.headers if h.lower().startswith("x-ratelimit-")]


async def test_concurrent_requests_do_not_mix(
    async_client: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    """Interleaved streams and JSON answers each reach their own caller."""
    fake_openai.default = slow_stream(0.01)

    async def streamed(i: int) -> str:
        stream = await async_client.chat.completions.create(
            model=PUBLIC,
            stream=True,
            messages=[{"role": "user", "content": f"echo: stream number {i} says hi"}],
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async def plain(i: int) -> str:
        completion = await async_client.chat.completions.create(
            model=PUBLIC, messages=[{"role": "user", "content": f"echo: json number {i}"}]
        )
        return completion.choices[0].message.content or ""

    results = await asyncio.gather(*(streamed(i) for i in range(8)), *(plain(i) for i in range(8)))
    assert results == [f"stream number {i} says hi" for i in range(8)] + [
        f"json number {i}" for i in range(8)
    ]
    assert len(fake_openai.chat_requests) == 16


def test_stream_include_usage_false_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC,
            messages=USER_MESSAGES,
            stream=True,
            stream_options={"include_usage": False},
        )
    )
    assert all(c.choices and c.usage is None for c in chunks)


def test_long_multibyte_stream_relayed_intact(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """Thousands of events with multi-byte text: nothing lost, split or re-encoded wrongly."""
    fake_openai.reply = " ".join(f"héllo-{i}-wörld-你好-🎉" for i in range(2000))
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC,
            messages=USER_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake_openai.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2000


def test_upstream_sse_framing_variants(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    """CRLF, `data:` without a space, comment lines, events split across TCP writes."""
    fake_openai.script(odd_sse_framing())
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC,
            messages=USER_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_REPLY
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == fake_openai.last_request.usage
    assert all(c.model == PUBLIC for c in chunks)
