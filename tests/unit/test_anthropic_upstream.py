"""The AnthropicUpstream adapter itself (proxy/upstreams/anthropic.py) against the fake
Anthropic API on loopback: what it sends, the chat translation end to end, Messages bodies
passed through (the /v1/messages front door's calls), count_tokens, and failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fakes import anthropic_upstream as fake
from fakes.anthropic_upstream import FakeAnthropic

from proxy.config import AnthropicUpstreamConfig, Timeouts
from proxy.errors import (
    ProxyError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from proxy.upstreams.anthropic import AnthropicUpstream
from proxy.upstreams.base import UpstreamCall

KEY = "sk-ant-unit-SECRET"
USER = [{"role": "user", "content": "Say hi"}]
NATIVE = {"model": "claude-x", "max_tokens": 50, "messages": USER, "top_k": 5}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as running:
        yield running


@pytest.fixture
def anthropic(server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
async def upstream(anthropic: FakeAnthropic) -> AsyncIterator[AnthropicUpstream]:
    config = AnthropicUpstreamConfig(
        base_url=anthropic.url + "/", api_key=KEY, headers={"x-team": "blue"}
    )
    adapter = AnthropicUpstream("claude", config)
    yield adapter
    await adapter.close()


def call(body: dict[str, Any], api: str = "chat", **extra: Any) -> UpstreamCall:
    timeouts = extra.pop("timeouts", Timeouts(connect=2, first_token=2, idle=2, total=5))
    return UpstreamCall(json.dumps(body).encode(), "claude-x", timeouts, "req-1", api=api, **extra)


def chat(**fields: Any) -> UpstreamCall:
    return call({"model": "claude-x", "messages": USER, **fields})


async def collect(upstream: AnthropicUpstream, c: UpstreamCall) -> list[list[bytes]]:
    return [batch async for batch in upstream.stream(c)]


async def test_a_chat_request_is_sent_with_the_key_version_and_headers(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    reply = json.loads(await upstream.complete(chat(max_tokens=20)))
    assert reply["choices"][0]["message"]["content"] == fake.DEFAULT_REPLY
    sent = anthropic.last_request
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["x-team"] == "blue"
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-x",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
    }


async def test_a_chat_stream_ends_with_the_usage_chunk_it_asked_for(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    body = {"stream": True, "stream_options": {"include_usage": True}}
    batches = await collect(upstream, chat(**body))
    chunks = [json.loads(c) for batch in batches for c in batch]
    assert anthropic.last_request.json["stream"] is True
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake.DEFAULT_REPLY
    assert chunks[-1]["usage"]["completion_tokens"] == len(fake.DEFAULT_REPLY.split())
    assert all(batch for batch in batches)  # never an empty read handed on


async def test_a_refused_request_is_never_sent(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    with pytest.raises(UpstreamRejectedError) as caught:
        await upstream.complete(chat(response_format=schema))
    assert caught.value.param == "response_format"
    with pytest.raises(UpstreamRejectedError):
        await collect(upstream, chat(stream=True, n=3))
    assert anthropic.requests == []


async def test_a_messages_body_passes_through_with_the_client_s_version_and_beta(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    headers = {"Anthropic-Version": "2026-10-21", "anthropic-beta": "context-1m", "x-other": "no"}
    reply = await upstream.complete(call(NATIVE, api="messages", headers=headers))
    sent = anthropic.last_request
    assert sent.body == json.dumps(NATIVE).encode()  # byte for byte, top_k included
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert sent.headers["anthropic-beta"] == "context-1m"
    assert "x-other" not in sent.headers
    assert json.loads(reply) == sent.response_json  # Anthropic's own JSON


async def test_a_messages_stream_yields_the_event_payloads_as_sent(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    batches = await collect(upstream, call({**NATIVE, "stream": True}, api="messages"))
    events = [json.loads(e) for batch in batches for e in batch]
    sent = anthropic.last_request
    # the fake notes each event after writing it: read them once its answer is done
    assert sent.wait_done(), "the fake never finished its answer"
    assert events == sent.sent_events
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    assert anthropic.last_request.headers["anthropic-version"] == "2023-06-01"


async def test_a_messages_stream_failing_before_content_yields_nothing(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    """So the gateway may still try another route."""
    anthropic.script(fake.error_event_after(1))  # after message_start
    events = upstream.stream(call({**NATIVE, "stream": True}, api="messages"))
    with pytest.raises(UpstreamError) as caught:
        await anext(events)
    assert caught.value.cause == "503"


async def test_a_messages_stream_failing_mid_way_yields_what_came_first(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    anthropic.script(fake.error_event_after(5, "api_error", "Internal server error"))
    seen: list[bytes] = []
    with pytest.raises(UpstreamError):
        async for batch in upstream.stream(call({**NATIVE, "stream": True}, api="messages")):
            seen += batch
    assert [json.loads(e)["type"] for e in seen][-1] == "content_block_delta"


async def test_a_messages_stream_cut_short_is_an_error(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    anthropic.script(fake.end_after(6))
    with pytest.raises(UpstreamError, match="ended the stream early"):
        await collect(upstream, call({**NATIVE, "stream": True}, api="messages"))


async def test_count_tokens_answers_anthropic_s_count(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    body = {"model": "claude-x", "messages": [{"role": "user", "content": "one two three"}]}
    reply = await upstream.count_tokens(call(body, api="messages"))
    assert json.loads(reply) == {"input_tokens": 3}
    assert anthropic.requests[-1].path == "/v1/messages/count_tokens"


async def test_it_cannot_embed(upstream: AnthropicUpstream) -> None:
    with pytest.raises(UpstreamError, match="cannot embed"):
        await upstream.embed(call({"input": "x"}, api="embeddings"))
    assert upstream.native_apis == frozenset({"messages"}) and upstream.generates


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (fake.invalid_api_key(), UpstreamAuthError),
        (fake.overloaded(), UpstreamError),
        (fake.garbage(), UpstreamError),
        (fake.drop_after(0), UpstreamError),
    ],
)
async def test_failures_of_a_json_call(
    upstream: AnthropicUpstream,
    anthropic: FakeAnthropic,
    behaviour: fake.Behaviour,
    expected: type[ProxyError],
) -> None:
    anthropic.script(behaviour)
    with pytest.raises(expected) as caught:
        await upstream.complete(chat())
    assert KEY not in caught.value.message


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (fake.prompt_too_long(), UpstreamRejectedError),
        (fake.rate_limited(7), ProxyError),
        (fake.drop_after(4), UpstreamError),
        (fake.garbage(), UpstreamError),
    ],
)
async def test_failures_of_a_chat_stream(
    upstream: AnthropicUpstream,
    anthropic: FakeAnthropic,
    behaviour: fake.Behaviour,
    expected: type[ProxyError],
) -> None:
    anthropic.script(behaviour)
    with pytest.raises(expected):
        await collect(upstream, chat(stream=True))


async def test_a_hung_upstream_times_out(
    upstream: AnthropicUpstream, anthropic: FakeAnthropic
) -> None:
    anthropic.script(fake.hang(2), fake.hang(2))
    quick = Timeouts(connect=1, first_token=0.3, idle=0.3, total=0.5)
    with pytest.raises(UpstreamTimeoutError):
        await upstream.complete(call({"model": "m", "messages": USER}, timeouts=quick))
    with pytest.raises(UpstreamTimeoutError):
        await collect(
            upstream, call({"model": "m", "messages": USER, "stream": True}, timeouts=quick)
        )
