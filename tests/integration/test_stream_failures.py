"""Failures once a stream has started: an in-band `data: {"error": ...}` event, never a silent
truncation; and a client that goes away cancels the upstream request."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from fakes.openai_upstream import (
    FakeOpenAI,
    drop_after,
    end_after,
    error_event_after,
    hang,
    slow_stream,
    stall_after,
)
from fakes.proxy_harness import CLIENT_KEY_B, RunningProxy

from .conftest import USER_MESSAGES, assert_openai_error


def consume_until_error(stream: openai.Stream) -> tuple[str, openai.APIError]:
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    # Exactly APIError: the SDK raises it for an in-band error event. A truncated stream would
    # raise APIConnectionError (a subclass) or nothing at all.
    assert type(exc.value) is openai.APIError, repr(exc.value)
    return text, exc.value


def test_connection_dropped_mid_stream_ends_with_error_event(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(drop_after(3))  # role chunk, "Hello", " from", then the TCP abort
    stream = client.chat.completions.create(
        model="err-stream-drop", messages=USER_MESSAGES, stream=True
    )
    text, error = consume_until_error(stream)
    assert text == "Hello from"  # what arrived was relayed before the error
    assert isinstance(error.body, dict) and error.message
    assert len(fake_openai.chat_requests) == 1  # no failover once bytes reached the client


def test_error_event_framing_ends_with_done(http: httpx.Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(drop_after(3))
    body = {"model": "err-stream-drop", "messages": USER_MESSAGES, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    data = [
        e.removeprefix("data:").strip()
        for e in raw.replace("\r\n", "\n").split("\n\n")
        if e.startswith("data:")
    ]
    assert data[-1] == "[DONE]"
    assert_openai_error(json.loads(data[-2]))
    assert all("error" not in json.loads(d) for d in data[:-2])


def test_upstream_error_event_is_relayed_as_error(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(error_event_after(2))
    stream = client.chat.completions.create(
        model="err-stream-event", messages=USER_MESSAGES, stream=True
    )
    text, _ = consume_until_error(stream)
    assert text == "Hello"


def test_upstream_stream_ending_early_without_done_is_an_error(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """A clean close with no finish chunk and no [DONE] is still a truncated answer."""
    fake_openai.script(end_after(3))
    stream = client.chat.completions.create(
        model="err-stream-drop", messages=USER_MESSAGES, stream=True
    )
    text, _ = consume_until_error(stream)
    assert text == "Hello from"


def test_error_as_the_first_upstream_event_is_an_error(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    """Nothing relayed yet: an HTTP error or an in-band one, but never a 200 with no answer."""
    fake_openai.script(error_event_after(0))
    with pytest.raises(openai.APIError) as exc:
        list(
            client.chat.completions.create(
                model="err-stream-event", messages=USER_MESSAGES, stream=True
            )
        )
    assert not isinstance(exc.value, openai.APIConnectionError)


def test_idle_timeout_mid_stream_ends_with_error_event(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(stall_after(3, 10))  # three chunks, then silence past idle (1 s)
    started = time.monotonic()
    stream = client.chat.completions.create(model="slow-idle", messages=USER_MESSAGES, stream=True)
    text, _ = consume_until_error(stream)
    assert text == "Hello from"
    assert time.monotonic() - started < 5
    rec = fake_openai.last_request
    assert rec.wait_done(2) and rec.outcome == "cancelled", "stalled upstream left open"


def test_first_token_timeout_is_504_before_streaming(
    client: openai.OpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(hang(10))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="slow-first", messages=USER_MESSAGES, stream=True)
    assert exc.value.status_code == 504
    assert_openai_error(exc.value.response.json())
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("sdk", ["sync", "async"])
async def test_client_disconnect_cancels_upstream(
    proxy: RunningProxy, fake_openai: FakeOpenAI, sdk: str
) -> None:
    fake_openai.reply = " ".join(f"word{i}" for i in range(100))  # ~10 s at 0.1 s a chunk
    fake_openai.script(slow_stream(0.1))
    kwargs = {"model": "gpt-4o-mini", "messages": USER_MESSAGES, "stream": True}
    if sdk == "sync":
        with openai.OpenAI(base_url=proxy.base_url, api_key=CLIENT_KEY_B, max_retries=0) as c:
            stream = c.chat.completions.create(**kwargs)
            chunks = [next(stream), next(stream), next(stream)]
            stream.close()
            closed_at = time.monotonic()
    else:
        async with openai.AsyncOpenAI(
            base_url=proxy.base_url, api_key=CLIENT_KEY_B, max_retries=0
        ) as c:
            astream = await c.chat.completions.create(**kwargs)
            chunks = [await astream.__anext__() for _ in range(3)]
            await astream.close()
            closed_at = time.monotonic()
    assert chunks[1].choices[0].delta.content == "word0"
    rec = fake_openai.last_request
    assert rec.wait_done(1.5), "the upstream request is still open after the client left"
    assert rec.finished_at is not None and rec.finished_at - closed_at < 1.5
    assert rec.outcome in ("cancelled", "disconnected")
    assert len(rec.sent_events) < 50
