"""`Gateway.responses`: the Responses door without HTTP, typed results, against the fake
upstream on loopback (chat completions on one route, its native Responses API on another)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI

from proxy import Gateway
from proxy.errors import InvalidRequestError, UnsupportedEndpointError
from proxy.formats.responses.wire import ResponseEvent, ResponseObject
from proxy.loader import load_dict


def policy(base_url: str) -> dict[str, Any]:
    chat = {"type": "openai", "base_url": base_url, "api_key": "sk-upstream-1"}
    return {
        "upstreams": {
            "chat": chat,
            "native": {**chat, "responses": "native"},
            "embed": {"type": "huggingface", "api": "tei", "base_url": base_url},
        },
        "models": {
            "m": {"routes": [{"upstream": "chat", "model": "up"}], "cache": {"ttl": 60}},
            "n": {"routes": [{"upstream": "native", "model": "up-native"}]},
            "e": {"routes": [{"upstream": "embed", "model": "tei"}]},
        },
        "retry": {"attempts": 1},
        "cache": {"backend": "memory"},
        "responses": {"storage": "memory"},
    }


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI) -> AsyncIterator[Gateway]:
    async with Gateway.from_dict(policy(fake_openai.base_url), env={}) as gw:
        yield gw


async def test_a_typed_response(gateway: Gateway) -> None:
    response = await gateway.responses("m", "Hi", instructions="Short.")
    assert isinstance(response, ResponseObject)
    assert response.output_text == DEFAULT_REPLY and response.model == "m"
    assert response.usage is not None and response.usage.total_tokens > 0
    assert response.instructions == "Short."


async def test_typed_events_and_a_continuation(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    first = await gateway.responses("m", "One")
    assert isinstance(first, ResponseObject)
    events = await gateway.responses("m", "Two", stream=True, previous_response_id=first.id)
    assert not isinstance(events, ResponseObject)
    seen = [event async for event in events]
    assert all(isinstance(event, ResponseEvent) for event in seen)
    assert seen[-1].type == "response.completed" and seen[-1].response is not None
    assert seen[-1].response.previous_response_id == first.id
    assert len(fake_openai.last_request.json["messages"]) == 3


async def test_a_cached_answer_replays_as_typed_events(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    await gateway.responses("m", "Same", temperature=0)
    events = await gateway.responses("m", "Same", temperature=0, stream=True)
    assert not isinstance(events, ResponseObject)
    kinds = [event.type async for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert len(fake_openai.chat_requests) == 1


async def test_native_routes_and_what_no_route_can_take(gateway: Gateway) -> None:
    native = await gateway.responses("n", "Hi", tools=[{"type": "web_search"}])
    assert isinstance(native, ResponseObject) and native.model == "n"
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.responses("m", "Hi", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0].type"
    with pytest.raises(UnsupportedEndpointError):
        await gateway.responses("e", "Hi")  # an embedding-only model


async def test_a_reload_keeps_the_store_unless_its_settings_change(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    kept = await gateway.responses("m", "Keep me")
    assert isinstance(kept, ResponseObject)
    store = gateway.door_services["responses"]
    same = policy(fake_openai.base_url)
    same["models"]["other"] = same["models"]["m"]
    await gateway.apply(load_dict(same, env={}))
    assert gateway.door_services["responses"] is store
    await gateway.responses("m", "Go on", previous_response_id=kept.id)
    changed = {**same, "responses": {"storage": "memory", "ttl": "1h"}}
    await gateway.apply(load_dict(changed, env={}))
    assert gateway.door_services["responses"] is not store
    assert gateway.door_services["responses"].ttl == 3600
