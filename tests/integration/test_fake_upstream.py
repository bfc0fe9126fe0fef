"""The fake upstream speaks the OpenAI wire format: the official SDK, pointed straight at it,
parses everything it sends. If these fail, every proxy test that uses the fake is suspect."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    DEFAULT_REPLY,
    TOOL_ARGUMENTS,
    FakeOpenAI,
    drop_after,
    drop_before_response,
    end_after,
    error_event_after,
    garbage,
    hang,
    invalid_api_key,
    odd_sse_framing,
    rate_limited,
    slow_stream,
    stall_after,
    status,
)

MESSAGES = [{"role": "user", "content": "Say hello to the test suite"}]  # 6 words
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
KEY = "sk-direct-KEY"


@pytest.fixture
def client(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake_openai.base_url, api_key=KEY, max_retries=0) as c:
        yield c


@pytest.fixture
async def async_client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key=KEY, max_retries=0) as c:
        yield c


def test_json_completion(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = client.chat.completions.create(model="some-model", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "some-model"
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 6)
    assert completion.usage.total_tokens == 12
    rec = fake_openai.last_request
    assert rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(rec.body) == rec.json
    assert rec.json["messages"] == MESSAGES


async def test_async_json_completion(async_client: openai.AsyncOpenAI) -> None:
    completion = await async_client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_REPLY


def test_stream_with_usage(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    stream = client.chat.completions.create(
        model="some-model",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(c.object == "chat.completion.chunk" and c.model == "some-model" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(content_chunks) > 1
    assert "".join(content_chunks) == DEFAULT_REPLY
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None and finish.choices[0].delta.role is None
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.model_dump(exclude_none=True) == fake_openai.last_request.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_usage_is_the_same_streamed_or_not(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage == plain.usage


async def test_async_stream(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == DEFAULT_REPLY


def test_tool_call_json(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS


def test_tool_call_stream_shape(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None
    head = first.tool_calls[0]
    assert head.id and head.type == "function" and head.function is not None
    assert head.function.name == "get_weather" and head.function.arguments == ""
    fragments = [c.choices[0].delta.tool_calls for c in chunks[1:-1]]
    assert len(fragments) > 1
    for frag in fragments:
        assert frag is not None and frag[0].index == 0
        assert frag[0].id is None and frag[0].function is not None
        assert frag[0].function.name is None
    arguments = "".join(f[0].function.arguments for f in fragments if f and f[0].function)
    assert json.loads(arguments) == TOOL_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_helper_accumulates_tool_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="m", messages=MESSAGES, tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == TOOL_ARGUMENTS
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_helper_text(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        deltas = [e.delta for e in stream if e.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == DEFAULT_REPLY
    assert final.choices[0].message.content == DEFAULT_REPLY
    assert final.choices[0].message.role == "assistant"


def test_n2_json(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].message.content == DEFAULT_REPLY
    assert completion.choices[1].message.content == f"{DEFAULT_REPLY} #1"


def test_n2_stream_interleaves_one_choice_per_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(len(c.choices) == 1 for c in chunks[:-1])
    indexes = [c.choices[0].index for c in chunks[:-1]]
    assert indexes[:4] == [0, 1, 0, 1]
    for i, expected in ((0, DEFAULT_REPLY), (1, f"{DEFAULT_REPLY} #1")):
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == i]
        assert [ch.delta.role for ch in mine].count("assistant") == 1
        assert "".join(ch.delta.content or "" for ch in mine) == expected
        assert [ch.finish_reason for ch in mine if ch.finish_reason] == ["stop"]
    with client.chat.completions.stream(model="m", messages=MESSAGES, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.message.content for c in final.choices] == [DEFAULT_REPLY, f"{DEFAULT_REPLY} #1"]


def test_models(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    assert [m.id for m in client.models.list()] == fake_openai.models


# ---- failures on demand


def test_script_is_consumed_then_default(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(status(500), status(503))
    with pytest.raises(openai.InternalServerError) as e1:
        client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.InternalServerError) as e2:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert (e1.value.status_code, e2.value.status_code) == (500, 503)
    assert e1.value.type == "server_error"
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert len(fake_openai.chat_requests) == 3


def test_rate_limited_with_retry_after(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(rate_limited(retry_after=7))
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.code == "rate_limit_exceeded"


def test_invalid_api_key_echoes_the_key(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(invalid_api_key())
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert KEY in exc.value.message
    assert exc.value.code == "invalid_api_key"


def test_context_length_exceeded(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    from fakes.openai_upstream import context_length_exceeded

    fake_openai.script(context_length_exceeded())
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert exc.value.code == "context_length_exceeded"
    assert exc.value.param == "messages"


def test_hang_delays_then_answers(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(hang(0.2))
    started = time.monotonic()
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert time.monotonic() - started >= 0.2


def test_hang_sees_the_client_give_up(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(hang(0.3))
    with (
        openai.OpenAI(
            base_url=fake_openai.base_url, api_key=KEY, max_retries=0, timeout=0.1
        ) as quick,
        pytest.raises(openai.APITimeoutError),
    ):
        quick.chat.completions.create(model="m", messages=MESSAGES)
    rec = fake_openai.last_request
    assert rec.wait_done(2)
    assert rec.outcome == "cancelled"  # the client gave up: the fake saw it


def test_drop_before_response(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(drop_before_response())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert fake_openai.last_request.outcome == "aborted"


def test_drop_after_chunks(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(drop_after(3))
    with (
        httpx.Client() as http,
        http.stream(
            "POST",
            f"{fake_openai.base_url}/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        ) as resp,
    ):
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for part in resp.iter_bytes():
                received += part
    events = [e for e in received.decode().split("\n\n") if e]
    assert len(events) == 3
    assert "[DONE]" not in received.decode()


def test_error_event_after(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(error_event_after(2))
    got = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            got.append(chunk)
    assert type(exc.value) is openai.APIError
    assert len(got) == 2
    assert "error while processing" in exc.value.message


def test_garbage(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(garbage())
    resp = httpx.post(
        f"{fake_openai.base_url}/chat/completions", json={"model": "m", "messages": MESSAGES}
    )
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()


def test_stall_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(stall_after(2, 5))
    with openai.OpenAI(
        base_url=fake_openai.base_url, api_key=KEY, max_retries=0, timeout=httpx.Timeout(0.3)
    ) as quick:
        got = []
        with pytest.raises(openai.APITimeoutError):
            for chunk in quick.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                got.append(chunk)
    assert len(got) == 2


def test_client_disconnect_is_observed(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(slow_stream(0.2))
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    rec = fake_openai.last_request
    assert rec.wait_done(1.5), "the fake did not see the client go away"
    assert rec.outcome in ("cancelled", "disconnected")


def test_odd_sse_framing_is_still_valid(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(odd_sse_framing())
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_echo_prefix(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "echo: just this"}]
    )
    assert completion.choices[0].message.content == "just this"


def test_end_after_closes_cleanly_without_done(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(end_after(2))
    with httpx.Client() as http:
        resp = http.post(
            f"{fake_openai.base_url}/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        )
    events = [e for e in resp.text.split("\n\n") if e]
    assert len(events) == 2 and "[DONE]" not in resp.text
