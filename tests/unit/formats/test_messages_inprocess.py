"""`Gateway.messages`: the Messages door without HTTP, typed results, against the fake OpenAI
upstream (translated) and the fake Anthropic API (native) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fakes import anthropic_upstream as claude_fake
from fakes import openai_upstream as openai_fake
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import FakeOpenAI

from proxy import Gateway
from proxy.errors import AuthenticationError, UpstreamError
from proxy.formats.messages.inprocess import MessageResult, StreamEvent


@pytest.fixture
def fake_claude() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as running:
        yield running


def policy(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "openai": {"type": "openai", "base_url": openai_url, "api_key": "sk-up-1"},
            "claude": {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant-1"},
        },
        "models": {
            "translated": {"routes": [{"upstream": "openai", "model": "up"}]},
            "native": {"routes": [{"upstream": "claude", "model": "claude-up"}]},
        },
        "keys": [{"name": "k", "key": "sk-client-1"}],
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "cache": {"backend": "none"},
    }


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI, fake_claude: FakeAnthropic) -> AsyncIterator[Gateway]:
    async with Gateway.from_dict(policy(fake_openai.base_url, fake_claude.url), env={}) as gw:
        yield gw


@pytest.mark.parametrize(
    ("model", "reply"),
    [("translated", openai_fake.DEFAULT_REPLY), ("native", claude_fake.DEFAULT_REPLY)],
)
async def test_a_message_and_a_stream_as_typed_results(
    gateway: Gateway, model: str, reply: str
) -> None:
    message = await gateway.messages(model, "Hi", max_tokens=50, api_key="sk-client-1")
    assert isinstance(message, MessageResult)
    assert message.model == model and message.content[0].text == reply
    assert message.stop_reason == "end_turn" and message.usage is not None

    events = await gateway.messages(model, "Hi", max_tokens=50, api_key="sk-client-1", stream=True)
    assert not isinstance(events, MessageResult)
    seen: list[StreamEvent] = [event async for event in events]
    assert seen[0].type == "message_start" and seen[-1].type == "message_stop"
    assert seen[0].message is not None and seen[0].message.model == model
    text = "".join(e.delta.text or "" for e in seen if e.delta is not None)
    assert text == reply


async def test_failures_are_raised_as_the_proxy_s_errors(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(AuthenticationError):
        await gateway.messages("translated", "Hi", max_tokens=5, api_key="sk-wrong")
    fake_openai.script(openai_fake.drop_after(3))
    events = await gateway.messages(
        "translated", "Hi", max_tokens=5, api_key="sk-client-1", stream=True
    )
    assert not isinstance(events, MessageResult)
    seen: list[str] = []
    with pytest.raises(UpstreamError):
        async for event in events:
            seen.append(event.type)
    assert seen[0] == "message_start"
