"""Where stored responses live: forgotten after `responses.ttl` (memory), kept on disk across a
restart (the default), and shared through Redis by two replicas (the default when the limits
are kept in Redis)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from fakes.openai_upstream import DEFAULT_REPLY, FakeOpenAI
from fakes.proxy_harness import UPSTREAM_KEY, RunningProxy
from fakes.redis_server import RedisServer, redis_available


def state_policy(base_url: str, **extra: Any) -> dict[str, Any]:
    upstream = {"type": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY}
    return {
        "upstreams": {"fake": upstream},
        "models": {"m": {"routes": [{"upstream": "fake", "model": "up"}]}},
        "retry": {"attempts": 1},
        "cache": {"backend": "none"},
        **extra,
    }


def sdk(proxy: RunningProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0)


def test_a_response_is_forgotten_after_its_ttl(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI
) -> None:
    policy = state_policy(fake_openai.base_url, responses={"storage": "memory", "ttl": "1s"})
    with sdk(start_proxy(policy)) as client:
        made = client.responses.create(model="m", input="Hi")
        assert client.responses.retrieve(made.id).id == made.id
        time.sleep(1.3)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made.id)
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="m", input="And?", previous_response_id=made.id)
        assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_the_disk_keeps_responses_across_a_restart(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    policy = state_policy(fake_openai.base_url)  # no responses section: disk
    first = start_proxy(policy)
    with sdk(first) as client:
        made = client.responses.create(model="m", input="Remember me")
    first.stop()
    assert list(tmp_path.glob(".cache/llm-proxy/responses/*.sqlite3"))
    with sdk(start_proxy(policy)) as client:
        assert client.responses.retrieve(made.id).output_text == DEFAULT_REPLY
        client.responses.create(model="m", input="Who?", previous_response_id=made.id)
    assert [m["content"] for m in fake_openai.last_request.json["messages"]] == [
        "Remember me",
        DEFAULT_REPLY,
        "Who?",
    ]


@pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")
def test_two_replicas_share_responses_through_redis(
    start_proxy: Callable[..., RunningProxy], fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        policy = state_policy(fake_openai.base_url, limits={"storage": redis.url})
        one, two = start_proxy(policy), start_proxy(policy)
        with sdk(one) as a, sdk(two) as b:
            made = a.responses.create(model="m", input="Hello from one")
            assert b.responses.retrieve(made.id).output_text == made.output_text
            b.responses.create(model="m", input="Hi two", previous_response_id=made.id)
            assert len(fake_openai.last_request.json["messages"]) == 3
            b.responses.delete(made.id)
            with pytest.raises(openai.NotFoundError):
                a.responses.retrieve(made.id)
