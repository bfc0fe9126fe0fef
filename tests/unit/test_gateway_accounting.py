"""Through the whole pipeline: a request whose upstream call cannot be built for a route (its
door's `call` refuses, e.g. a field that route cannot express) is the client's 400, and it
leaves the route as it found it: nothing in flight, a half-open breaker's trial still to be
sent, no attempt counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes.openai_upstream import FakeOpenAI

from proxy import Gateway
from proxy.errors import InvalidRequestError
from proxy.formats.base import DecodeContext
from proxy.formats.chat import ChatDoor, ChatRequest
from proxy.policy import Route
from proxy.upstreams.base import UpstreamCall
from proxy.wire import decode_chat_head, top_level

LABEL = "primary/upstream-model-id"
BODY = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode()


class UnbuildableRequest(ChatRequest):
    def call(self, route: Route, upstream_model: str, request_id: str) -> UpstreamCall:
        raise InvalidRequestError("This route cannot take `tools[0].type`.", param="tools[0].type")


class UnbuildableDoor(ChatDoor):
    async def decode(self, body: bytes, context: DecodeContext) -> ChatRequest:
        return UnbuildableRequest(body, top_level(body), decode_chat_head(body))


def policy(base_url: str) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": "sk-upstream-1234"}
    return {
        "upstreams": {"primary": upstream},
        "models": {"chat": {"routes": [{"upstream": "primary", "model": "upstream-model-id"}]}},
        "retry": {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.05},
        "circuit_breaker": {"failures": 1, "cooldown": 0.05},
        "cache": {"backend": "none"},
    }


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI) -> AsyncIterator[Gateway]:
    async with Gateway.from_dict(policy(fake_openai.base_url), env={}) as gw:
        yield gw


async def test_a_call_the_route_cannot_take_is_a_400_that_holds_nothing(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.handle(UnbuildableDoor(), BODY, None, "req-1")
    error = caught.value
    assert error.status == 400 and error.param == "tools[0].type"
    assert error.headers["x-llm-proxy-attempts"] == "0"
    assert "x-llm-proxy-route" not in error.headers
    health = await gateway.health()
    assert health["routes"][LABEL]["inflight"] == 0
    assert fake_openai.chat_requests == []


async def test_a_half_open_route_keeps_its_trial_for_a_request_it_can_take(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    route = gateway.board[LABEL]
    route.begin()
    route.failed()  # one failure opens it (failures: 1)
    route.open_until = gateway.board.clock()  # the cooldown is over: half-open
    assert route.state() == "half-open"
    with pytest.raises(InvalidRequestError):
        await gateway.handle(UnbuildableDoor(), BODY, None, "req-1")
    assert route.available() and route.inflight == 0
    reply = await gateway.handle_chat(BODY, None, "req-2")
    assert reply.body is not None and reply.headers["x-llm-proxy-route"] == LABEL
    assert route.state() == "closed"
